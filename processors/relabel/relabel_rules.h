/* Prometheus relabel_configs over a label set: the pure logic of the `relabel` processor, with no
 * dependency on batches, so that unit tests drive it directly. */
#ifndef SONDE_RELABEL_RULES_H
#define SONDE_RELABEL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/plugin.h"

typedef enum rl_action {
  RL_REPLACE = 0,
  RL_KEEP,
  RL_DROP,
  RL_KEEPEQUAL,
  RL_DROPEQUAL,
  RL_HASHMOD,
  RL_LABELMAP,
  RL_LABELDROP,
  RL_LABELKEEP,
  RL_LOWERCASE,
  RL_UPPERCASE,
} rl_action;

/* Action names in rl_action order, NULL-terminated (the option table's enum values). */
extern const char *const rl_action_names[];

/* Defaults, as Prometheus's DefaultRelabelConfig. */
#define RL_DEFAULT_SEPARATOR ";"
#define RL_DEFAULT_REGEX "(.*)"
#define RL_DEFAULT_REPLACEMENT "$1"

/* One rule as the option table fills it. */
typedef struct rl_rule_cfg {
  sonde_strlist source_labels;
  char *separator;    /* default ";" */
  char *regex;        /* default "(.*)"; anchored as ^(?:regex)$ */
  int64_t modulus;    /* hashmod */
  char *target_label; /* NULL when unset */
  char *replacement;  /* default "$1" */
  int action;         /* rl_action */
} rl_rule_cfg;

/* Label name rules for replace targets: Prometheus 2's [a-zA-Z_][a-zA-Z0-9_]* ("legacy"), or
 * Prometheus 3's any non-empty UTF-8 ("utf8"). */
typedef enum rl_names { RL_NAMES_LEGACY = 0, RL_NAMES_UTF8 = 1 } rl_names;

/* A label set: names unique, kept sorted by name (Prometheus iterates labels in that order); the
 * strings are malloc'd and owned by the set. A label with an empty value does not exist. */
typedef struct rl_label {
  char *name, *value;
  uint64_t
      seq; /* Builder order: 0 for a starting label no rule set, else when a rule first set it */
} rl_label;

typedef struct rl_labels {
  rl_label *v;
  size_t n, cap;
} rl_labels;

/* Value of name, "" when absent. The pointer is valid until the set changes. */
const char *rl_labels_get(const rl_labels *ls, const char *name);
/* Sets name=value (copied); an empty value deletes, as Prometheus's labels.Builder does. */
int rl_labels_set(rl_labels *ls, const char *name, const char *value);
void rl_labels_del(rl_labels *ls, const char *name);
void rl_labels_free(rl_labels *ls);

typedef struct rl_rules rl_rules;

/* Validates (Prometheus's Config.Validate rules) and compiles n rules; cfgs must outlive *out.
 * On error returns SONDE_ECONFIG (or SONDE_ENOMEM) with a message naming the rule in err. */
int rl_compile(const rl_rule_cfg *cfgs, size_t n, rl_names names, rl_rules **out, char *err,
               size_t errlen);
void rl_free(rl_rules *r);
/* True when some rule could read label `name` (a source label, an equal-action target, or any
 * labelmap), so that expensive discovery labels are only computed when used. */
bool rl_reads(const rl_rules *r, const char *name);

/* Applies every rule in order. *keep is false when a keep/drop/keepequal/dropequal rule dropped
 * the set (the set is then left half-relabelled). Returns 0 or SONDE_ENOMEM. */
int rl_apply(const rl_rules *r, rl_labels *ls, bool *keep);
/* Removes every label whose name starts with "__". */
void rl_drop_internal(rl_labels *ls);

/* Exposed for tests: Go's regexp.Expand of template against the last match; hashmod's value. */
uint64_t rl_hashmod(const char *val, uint64_t modulus);
bool rl_legacy_name(const char *s);

#endif

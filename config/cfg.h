/* The YAML layer: the only code that touches libyaml.
 * Parses otelcol-style YAML into a tree that remembers file, line and column, expands ${env:..},
 * merges several files, applies --set, and binds option tables (sonde_option) to config structs. */
#ifndef SONDE_CFG_H
#define SONDE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/plugin.h"

typedef enum sonde__cfg_kind {
  SONDE__CFG_NULL = 0, /* an empty value (`key:` with nothing after it, or ~ / null) */
  SONDE__CFG_SCALAR,
  SONDE__CFG_MAP,
  SONDE__CFG_SEQ,
} sonde__cfg_kind;

typedef struct sonde__cfg_node sonde__cfg_node;
struct sonde__cfg_node {
  sonde__cfg_kind kind;
  const char *file; /* interned; lives as long as the tree */
  unsigned line, col; /* 1-based position of the value */
  char *scalar;       /* SCALAR: the text, NUL-terminated (after expansion) */
  bool quoted;        /* SCALAR written with quotes */
  size_t n;           /* MAP entries / SEQ items */
  char **keys;        /* MAP: keys, in file order */
  unsigned *key_lines, *key_cols; /* MAP: where each key stands */
  sonde__cfg_node **kids; /* MAP values / SEQ items */
  struct sonde__cfg_files *files; /* root only: the interned file names */
};

/* err gets "file:line:col: message". */
int sonde__cfg_parse_file(const char *path, sonde__cfg_node **out, char *err, size_t errlen);
int sonde__cfg_parse_string(const char *name, const char *yaml, size_t len, sonde__cfg_node **out,
                            char *err, size_t errlen);
void sonde__cfg_free(sonde__cfg_node *root);

/* Deep-merges src into *dst (maps merge key by key, later wins; anything else replaces).
 * src is taken. */
int sonde__cfg_merge(sonde__cfg_node **dst, sonde__cfg_node *src, char *err, size_t errlen);

/* Applies one --set assignment "a::b::c=value" (or "a.b.c=value" when there is no "::"),
 * creating maps as needed. The value is parsed as a YAML flow value ("[a, b]" works). */
int sonde__cfg_set(sonde__cfg_node **root, const char *assignment, char *err, size_t errlen);

/* Expands ${env:VAR}, ${VAR}, ${env:VAR:-default} and $$ in every scalar of the tree (keys too).
 * An unset variable without default expands to "" (otelcol's rule). A malformed ${ is an error
 * with its position. Expanded scalars keep their string form. */
int sonde__cfg_expand(sonde__cfg_node *root, char *err, size_t errlen);

/* MAP lookup; NULL when absent or node is not a map. */
sonde__cfg_node *sonde__cfg_get(const sonde__cfg_node *map, const char *key);
/* Index of key in map, or -1. */
long sonde__cfg_index(const sonde__cfg_node *map, const char *key);

/* Writes the tree as YAML (block style, keys in file order) to out. */
int sonde__cfg_emit(const sonde__cfg_node *root, sonde_buf *out);

/* ---- option tables -------------------------------------------------------------------------- */

/* One option table and the struct it fills. */
typedef struct sonde__opts_target {
  const sonde_option *table;
  void *cfg;
} sonde__opts_target;

/* Fills every target's struct from map node (NULL or NULL-kind: all defaults). Unknown keys are
 * rejected with the valid choices and a "did you mean"; path ("exporters::otlp_grpc/tempo") is
 * used in messages "file:line:col: path::key: message". Strings are heap-allocated; call
 * sonde__opts_free on each target, also after a failure. */
int sonde__opts_bind(const sonde__opts_target *targets, size_t n, const sonde__cfg_node *node,
                     const char *path, char *err, size_t errlen);
void sonde__opts_free(const sonde_option *table, void *cfg);

/* Human documentation of a table for `sonde components`: one line per option
 * "  name (type, default X): doc", nested tables indented. */
int sonde__opts_doc(const sonde_option *table, int indent, sonde_buf *out);

/* Writes the effective values of cfg as YAML at indent (print-config of a bound component);
 * SONDE_OPT_SECRET values are redacted. */
int sonde__opts_emit(const sonde_option *table, const void *cfg, int indent, sonde_buf *out);

/* Strict parsers shared with the rest of the core. "250ms" "1m30s" "1h" "0"; "64MiB" "1KB" "512". */
int sonde__parse_duration(const char *s, int64_t *ns);
int sonde__parse_bytes(const char *s, uint64_t *bytes);
int sonde__parse_bool(const char *s, bool *v);
int sonde__parse_int(const char *s, int64_t *v);
int sonde__parse_double(const char *s, double *v);

/* The closest choice by edit distance when close enough to be a likely typo, else NULL. */
const char *sonde__did_you_mean(const char *word, const char *const *choices, size_t n);

#endif

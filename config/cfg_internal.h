/* Shared between the config/ sources; not part of any public interface. */
#ifndef SONDE_CFG_INTERNAL_H
#define SONDE_CFG_INTERNAL_H

#include <stdarg.h>

#include "cfg.h"

/* Interned file names: a singly linked list owned by a tree's root. Splicing two lists (merge)
 * cannot fail, so moving nodes between trees never needs an allocation for their names. */
struct sonde__cfg_files {
  struct sonde__cfg_files *next;
  char name[];
};

/* Nesting deeper than this is refused by the parser, so every recursive walk is bounded. */
#define SONDE__CFG_MAX_DEPTH 200

/* Returns the interned copy of name in *list, adding it when absent; NULL when out of memory. */
const char *sonde__cfg_intern(struct sonde__cfg_files **list, const char *name);
void sonde__cfg_files_free(struct sonde__cfg_files *list);
/* Appends src to the end of *dst (src is taken). */
void sonde__cfg_files_splice(struct sonde__cfg_files **dst, struct sonde__cfg_files *src);

sonde__cfg_node *sonde__cfg_node_new(sonde__cfg_kind kind, const char *file, unsigned line,
                                     unsigned col);
/* Frees a node and its subtree but not an interned file list (for subtrees). */
void sonde__cfg_node_free(sonde__cfg_node *n);
/* Appends key (taken) -> kid (taken) to a map; on failure neither is taken. */
int sonde__cfg_map_add(sonde__cfg_node *map, char *key, unsigned line, unsigned col,
                       sonde__cfg_node *kid);
/* Appends kid (taken) to a seq; on failure it is not taken. */
int sonde__cfg_seq_add(sonde__cfg_node *seq, sonde__cfg_node *kid);

/* Parses yaml as one document whose top level may be anything (top_map false) or must be a map.
 * col_base is added to the columns of line 1, so a value cut out of a longer string (--set)
 * reports columns in that string. */
int sonde__cfg_parse_ex(const char *name, const char *yaml, size_t len, bool top_map,
                        unsigned col_base, sonde__cfg_node **out, char *err, size_t errlen);

/* snprintf into err when err is not NULL; always returns rc. */
int sonde__cfg_err(int rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The scalar as YAML: plain when that reads back as the same string, double-quoted otherwise
 * (force_quote: always quoted). */
int sonde__cfg_emit_scalar(sonde_buf *out, const char *s, bool force_quote);

/* The key of a block map entry and its ":" (in "? key" form when too long for libyaml). */
int sonde__cfg_emit_key(sonde_buf *out, const char *key, int indent);

/* Formats a duration the way Go's time.Duration.String() does ("1m30s", "250ms", "0s"). */
void sonde__fmt_duration(int64_t ns, char *buf, size_t len);
/* Formats a size exactly, with the largest unit that divides it ("64MiB", "1500", "2KB"). */
void sonde__fmt_bytes(uint64_t b, char *buf, size_t len);

#endif

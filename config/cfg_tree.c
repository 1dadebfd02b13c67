/* YAML text -> sonde__cfg_node tree, from libyaml's parser events (the document API loses the
 * position of an alias and cannot bound alias expansion, so the tree is composed here). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cfg_internal.h"

/* Bounds on what aliases may expand to ("billion laughs"); a real config is far below both. */
#define MAX_ALIAS_NODES 100000
#define MAX_ALIAS_BYTES (16u << 20)

int sonde__cfg_err(int rc, char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

const char *sonde__cfg_intern(struct sonde__cfg_files **list, const char *name) {
  struct sonde__cfg_files **pp = list;
  for (; *pp; pp = &(*pp)->next)
    if (!strcmp((*pp)->name, name)) return (*pp)->name;
  size_t len = strlen(name);
  struct sonde__cfg_files *f = malloc(sizeof *f + len + 1);
  if (!f) return NULL;
  f->next = NULL;
  memcpy(f->name, name, len + 1);
  *pp = f;
  return f->name;
}

void sonde__cfg_files_free(struct sonde__cfg_files *list) {
  while (list) {
    struct sonde__cfg_files *next = list->next;
    free(list);
    list = next;
  }
}

void sonde__cfg_files_splice(struct sonde__cfg_files **dst, struct sonde__cfg_files *src) {
  while (*dst)
    dst = &(*dst)->next;
  *dst = src;
}

sonde__cfg_node *sonde__cfg_node_new(sonde__cfg_kind kind, const char *file, unsigned line,
                                     unsigned col) {
  sonde__cfg_node *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  n->kind = kind;
  n->file = file;
  n->line = line;
  n->col = col;
  return n;
}

void sonde__cfg_node_free(sonde__cfg_node *n) {
  if (!n) return;
  for (size_t i = 0; i < n->n; i++) {
    if (n->keys) free(n->keys[i]);
    sonde__cfg_node_free(n->kids[i]);
  }
  free(n->keys);
  free(n->key_lines);
  free(n->key_cols);
  free(n->kids);
  free(n->scalar);
  free(n);
}

void sonde__cfg_free(sonde__cfg_node *root) {
  if (!root) return;
  struct sonde__cfg_files *files = root->files;
  sonde__cfg_node_free(root);
  sonde__cfg_files_free(files);
}

/* Arrays hold max(4, next power of two >= n) entries, so the capacity needs no field. */
static bool must_grow(size_t n) {
  return n == 0 || (n >= 4 && (n & (n - 1)) == 0);
}

static int grow(void **p, size_t n, size_t elem) {
  size_t cap = n ? n * 2 : 4;
  if (cap > SIZE_MAX / elem) return SONDE_ENOMEM;
  void *q = realloc(*p, cap * elem);
  if (!q) return SONDE_ENOMEM;
  *p = q;
  return 0;
}

int sonde__cfg_map_add(sonde__cfg_node *map, char *key, unsigned line, unsigned col,
                       sonde__cfg_node *kid) {
  size_t n = map->n;
  /* Growing to the same size again after a partial failure is harmless. */
  if (must_grow(n) && (grow((void **)&map->keys, n, sizeof *map->keys) ||
                       grow((void **)&map->key_lines, n, sizeof *map->key_lines) ||
                       grow((void **)&map->key_cols, n, sizeof *map->key_cols) ||
                       grow((void **)&map->kids, n, sizeof *map->kids)))
    return SONDE_ENOMEM;
  map->keys[n] = key;
  map->key_lines[n] = line;
  map->key_cols[n] = col;
  map->kids[n] = kid;
  map->n = n + 1;
  return 0;
}

int sonde__cfg_seq_add(sonde__cfg_node *seq, sonde__cfg_node *kid) {
  size_t n = seq->n;
  if (must_grow(n) && grow((void **)&seq->kids, n, sizeof *seq->kids)) return SONDE_ENOMEM;
  seq->kids[n] = kid;
  seq->n = n + 1;
  return 0;
}

long sonde__cfg_index(const sonde__cfg_node *map, const char *key) {
  if (!map || map->kind != SONDE__CFG_MAP) return -1;
  for (size_t i = 0; i < map->n; i++)
    if (!strcmp(map->keys[i], key)) return (long)i;
  return -1;
}

sonde__cfg_node *sonde__cfg_get(const sonde__cfg_node *map, const char *key) {
  long i = sonde__cfg_index(map, key);
  return i < 0 ? NULL : map->kids[i];
}

/* ---- composer ------------------------------------------------------------------------------- */

typedef struct anchor {
  char *name;
  sonde__cfg_node *node;
  bool done;  /* false while the anchored collection is still being read: an alias is a cycle */
  bool owned; /* a scalar used as a key: not in the tree, freed with the anchor */
} anchor;

typedef struct frame {
  sonde__cfg_node *node;
  char *key; /* map: pending key, waiting for its value */
  unsigned kl, kc;
  bool has_key;
  long anchor_ix; /* -1: none */
} frame;

typedef struct composer {
  const char *file;
  struct sonde__cfg_files *files;
  sonde__cfg_node *root;
  frame *st;
  size_t depth, cap;
  anchor *an;
  size_t nan;
  size_t alias_nodes, alias_bytes;
  unsigned col_base;
  char *err;
  size_t errlen;
} composer;

static unsigned mline(yaml_mark_t m) {
  return (unsigned)m.line + 1;
}

static unsigned mcol(const composer *c, yaml_mark_t m) {
  return (unsigned)m.column + 1 + (m.line == 0 ? c->col_base : 0);
}

static const char *kind_name(sonde__cfg_kind k) {
  switch (k) {
  case SONDE__CFG_NULL:
    return "null";
  case SONDE__CFG_SCALAR:
    return "scalar";
  case SONDE__CFG_MAP:
    return "map";
  case SONDE__CFG_SEQ:
    return "list";
  }
  return "?";
}

static int cerr(composer *c, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int cerr(composer *c, unsigned line, unsigned col, const char *fmt, ...) {
  if (c->err && c->errlen) {
    int k = snprintf(c->err, c->errlen, "%s:%u:%u: ", c->file, line, col);
    if (k >= 0 && (size_t)k < c->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
      va_end(ap);
    }
  }
  return SONDE_ECONFIG;
}

static int nomem(composer *c) {
  return sonde__cfg_err(SONDE_ENOMEM, c->err, c->errlen, "%s: out of memory", c->file);
}

static sonde__cfg_node *copy_node(composer *c, const sonde__cfg_node *src, size_t depth, int *rc) {
  if (depth > SONDE__CFG_MAX_DEPTH) {
    *rc = cerr(c, src->line, src->col, "alias nests deeper than %d levels", SONDE__CFG_MAX_DEPTH);
    return NULL;
  }
  if (++c->alias_nodes > MAX_ALIAS_NODES) {
    *rc = cerr(c, src->line, src->col, "aliases expand to more than %d nodes", MAX_ALIAS_NODES);
    return NULL;
  }
  sonde__cfg_node *n = sonde__cfg_node_new(src->kind, src->file, src->line, src->col);
  if (!n) {
    *rc = nomem(c);
    return NULL;
  }
  n->quoted = src->quoted;
  if (src->scalar) {
    size_t len = strlen(src->scalar);
    if ((c->alias_bytes += len) > MAX_ALIAS_BYTES) {
      *rc = cerr(c, src->line, src->col, "aliases expand to more than %u bytes", MAX_ALIAS_BYTES);
      goto fail;
    }
    if (!(n->scalar = strdup(src->scalar))) {
      *rc = nomem(c);
      goto fail;
    }
  }
  for (size_t i = 0; i < src->n; i++) {
    sonde__cfg_node *kid = copy_node(c, src->kids[i], depth + 1, rc);
    if (!kid) goto fail;
    if (src->kind == SONDE__CFG_MAP) {
      char *k = strdup(src->keys[i]);
      if (!k || sonde__cfg_map_add(n, k, src->key_lines[i], src->key_cols[i], kid)) {
        free(k);
        sonde__cfg_node_free(kid);
        *rc = nomem(c);
        goto fail;
      }
    } else if (sonde__cfg_seq_add(n, kid)) {
      sonde__cfg_node_free(kid);
      *rc = nomem(c);
      goto fail;
    }
  }
  return n;
fail:
  sonde__cfg_node_free(n);
  return NULL;
}

/* Sets the pending key of the map on top of the stack. */
static int set_key(composer *c, const char *text, unsigned line, unsigned col) {
  frame *f = &c->st[c->depth - 1];
  long dup = sonde__cfg_index(f->node, text);
  if (dup >= 0)
    return cerr(c, line, col, "duplicate key \"%s\" (first at %s:%u:%u)", text, c->file,
                f->node->key_lines[dup], f->node->key_cols[dup]);
  if (!(f->key = strdup(text))) return nomem(c);
  f->kl = line;
  f->kc = col;
  f->has_key = true;
  return 0;
}

/* Places a value node (taken, also on failure) where the stack says. */
static int add_value(composer *c, sonde__cfg_node *node) {
  int rc = 0;
  if (c->depth == 0) {
    c->root = node;
    return 0;
  }
  frame *f = &c->st[c->depth - 1];
  if (f->node->kind == SONDE__CFG_SEQ) {
    if ((rc = sonde__cfg_seq_add(f->node, node))) goto fail;
    return 0;
  }
  if (!f->has_key) {
    if (node->kind == SONDE__CFG_MAP || node->kind == SONDE__CFG_SEQ) {
      rc = cerr(c, node->line, node->col, "a map key must be a scalar, not a %s",
                kind_name(node->kind));
      goto fail;
    }
    rc = set_key(c, node->scalar ? node->scalar : "", node->line, node->col);
    sonde__cfg_node_free(node);
    return rc;
  }
  if ((rc = sonde__cfg_map_add(f->node, f->key, f->kl, f->kc, node))) goto fail;
  f->key = NULL;
  f->has_key = false;
  return 0;
fail:
  sonde__cfg_node_free(node);
  return rc == SONDE_ENOMEM ? nomem(c) : rc;
}

static bool in_key_position(const composer *c) {
  if (c->depth == 0) return false;
  const frame *f = &c->st[c->depth - 1];
  return f->node->kind == SONDE__CFG_MAP && !f->has_key;
}

static int add_anchor(composer *c, const char *name, sonde__cfg_node *node, bool done, bool owned,
                      long *ix) {
  if (must_grow(c->nan) && grow((void **)&c->an, c->nan, sizeof *c->an)) return SONDE_ENOMEM;
  char *dup = strdup(name);
  if (!dup) return SONDE_ENOMEM;
  c->an[c->nan] = (anchor){.name = dup, .node = node, .done = done, .owned = owned};
  if (ix) *ix = (long)c->nan;
  c->nan++;
  return 0;
}

static const anchor *find_anchor(const composer *c, const char *name) {
  for (size_t i = c->nan; i-- > 0;) /* a redefined anchor: the latest wins */
    if (!strcmp(c->an[i].name, name)) return &c->an[i];
  return NULL;
}

static bool is_null_word(const char *v, size_t len) {
  return len == 0 || (len == 1 && v[0] == '~') ||
         (len == 4 && (!memcmp(v, "null", 4) || !memcmp(v, "Null", 4) || !memcmp(v, "NULL", 4)));
}

static int on_scalar(composer *c, const yaml_event_t *ev) {
  const char *v = (const char *)ev->data.scalar.value;
  size_t len = ev->data.scalar.length;
  const char *tag = (const char *)ev->data.scalar.tag;
  const char *anc = (const char *)ev->data.scalar.anchor;
  unsigned line = mline(ev->start_mark), col = mcol(c, ev->start_mark);
  if (memchr(v, 0, len)) return cerr(c, line, col, "a NUL character in a scalar is not supported");
  bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  bool quoted = !plain, null = false;
  if (tag && !strcmp(tag, YAML_NULL_TAG))
    null = true;
  else if (tag && (!strcmp(tag, YAML_STR_TAG) || !strcmp(tag, "!")))
    quoted = true; /* explicitly a string: "!!str null" is the text null */
  else if (plain && is_null_word(v, len))
    null = true;
  sonde__cfg_node *n =
      sonde__cfg_node_new(null ? SONDE__CFG_NULL : SONDE__CFG_SCALAR, c->file, line, col);
  if (!n) return nomem(c);
  n->quoted = quoted;
  if (!null && !(n->scalar = strndup(v, len))) {
    sonde__cfg_node_free(n);
    return nomem(c);
  }
  if (in_key_position(c)) {
    int rc = set_key(c, n->scalar ? n->scalar : "", line, col);
    if (!rc && anc) {
      if (add_anchor(c, anc, n, true, true, NULL))
        rc = nomem(c);
      else
        return 0;
    }
    sonde__cfg_node_free(n);
    return rc;
  }
  if (anc && add_anchor(c, anc, n, true, false, NULL)) {
    sonde__cfg_node_free(n);
    return nomem(c);
  }
  return add_value(c, n);
}

static int on_alias(composer *c, const yaml_event_t *ev) {
  const char *name = (const char *)ev->data.alias.anchor;
  unsigned line = mline(ev->start_mark), col = mcol(c, ev->start_mark);
  const anchor *a = find_anchor(c, name);
  if (!a) return cerr(c, line, col, "unknown alias *%s", name);
  if (!a->done) return cerr(c, line, col, "alias *%s refers to a node that contains it", name);
  if (in_key_position(c)) {
    if (a->node->kind == SONDE__CFG_MAP || a->node->kind == SONDE__CFG_SEQ)
      return cerr(c, line, col, "a map key must be a scalar, not a %s", kind_name(a->node->kind));
    return set_key(c, a->node->scalar ? a->node->scalar : "", line, col);
  }
  int rc = 0;
  sonde__cfg_node *n = copy_node(c, a->node, c->depth + 1, &rc);
  if (!n) return rc;
  n->line = line;
  n->col = col;
  return add_value(c, n);
}

static int on_start(composer *c, const yaml_event_t *ev, sonde__cfg_kind kind) {
  unsigned line = mline(ev->start_mark), col = mcol(c, ev->start_mark);
  const char *anc = kind == SONDE__CFG_MAP ? (const char *)ev->data.mapping_start.anchor
                                           : (const char *)ev->data.sequence_start.anchor;
  if (c->depth >= SONDE__CFG_MAX_DEPTH)
    return cerr(c, line, col, "nesting deeper than %d levels", SONDE__CFG_MAX_DEPTH);
  if (c->depth == c->cap) {
    if (grow((void **)&c->st, c->cap, sizeof *c->st)) return nomem(c);
    c->cap = c->cap ? c->cap * 2 : 4;
  }
  sonde__cfg_node *n = sonde__cfg_node_new(kind, c->file, line, col);
  if (!n) return nomem(c);
  int rc = add_value(c, n); /* the parent owns it from now on */
  if (rc) return rc;
  frame *f = &c->st[c->depth++];
  *f = (frame){.node = n, .anchor_ix = -1};
  if (anc && add_anchor(c, anc, n, false, false, &f->anchor_ix)) return nomem(c);
  return 0;
}

static void on_end(composer *c) {
  frame *f = &c->st[--c->depth];
  if (f->anchor_ix >= 0) c->an[f->anchor_ix].done = true;
  free(f->key);
}

static void offset_to_pos(const char *buf, size_t len, size_t off, unsigned *line, unsigned *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && i < len; i++) {
    if (buf[i] == '\n') {
      ++*line;
      *col = 1;
    } else {
      ++*col;
    }
  }
}

static int syntax_error(composer *c, const yaml_parser_t *p, const char *yaml, size_t len) {
  if (p->error == YAML_MEMORY_ERROR) return nomem(c);
  unsigned line, col;
  if (p->error == YAML_READER_ERROR) {
    offset_to_pos(yaml, len, p->problem_offset, &line, &col);
    if (line == 1) col += c->col_base;
    return cerr(c, line, col, "%s", p->problem ? p->problem : "cannot read the input");
  }
  if (p->problem_mark.index >= len) {
    /* libyaml puts the end of the stream on a line of its own even without a final newline */
    offset_to_pos(yaml, len, len, &line, &col);
    if (line == 1) col += c->col_base;
  } else {
    line = mline(p->problem_mark);
    col = mcol(c, p->problem_mark);
  }
  if (p->context)
    return cerr(c, line, col, "%s (%s at line %u column %u)",
                p->problem ? p->problem : "syntax error", p->context, mline(p->context_mark),
                mcol(c, p->context_mark));
  return cerr(c, line, col, "%s", p->problem ? p->problem : "syntax error");
}

int sonde__cfg_parse_ex(const char *name, const char *yaml, size_t len, bool top_map,
                        unsigned col_base, sonde__cfg_node **out, char *err, size_t errlen) {
  composer c = {.col_base = col_base, .err = err, .errlen = errlen};
  *out = NULL;
  if (!(c.file = sonde__cfg_intern(&c.files, name)))
    return sonde__cfg_err(SONDE_ENOMEM, err, errlen, "%s: out of memory", name);
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) {
    sonde__cfg_files_free(c.files);
    return sonde__cfg_err(SONDE_ENOMEM, err, errlen, "%s: out of memory", name);
  }
  yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
  int rc = 0, docs = 0;
  for (bool done = false; !done && !rc;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      rc = syntax_error(&c, &p, yaml, len);
      break;
    }
    switch (ev.type) {
    case YAML_STREAM_END_EVENT:
      done = true;
      break;
    case YAML_DOCUMENT_START_EVENT:
      if (docs++)
        rc = cerr(&c, mline(ev.start_mark), mcol(&c, ev.start_mark),
                  "only one YAML document is allowed");
      break;
    case YAML_ALIAS_EVENT:
      rc = on_alias(&c, &ev);
      break;
    case YAML_SCALAR_EVENT:
      rc = on_scalar(&c, &ev);
      break;
    case YAML_SEQUENCE_START_EVENT:
      rc = on_start(&c, &ev, SONDE__CFG_SEQ);
      break;
    case YAML_MAPPING_START_EVENT:
      rc = on_start(&c, &ev, SONDE__CFG_MAP);
      break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
      on_end(&c);
      break;
    default:
      break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  while (c.depth)
    on_end(&c);
  free(c.st);
  for (size_t i = 0; i < c.nan; i++) {
    free(c.an[i].name);
    if (c.an[i].owned) sonde__cfg_node_free(c.an[i].node);
  }
  free(c.an);

  if (!rc && !c.root && !(c.root = sonde__cfg_node_new(SONDE__CFG_NULL, c.file, 1, 1 + col_base)))
    rc = nomem(&c);
  if (!rc && top_map && c.root->kind == SONDE__CFG_NULL)
    c.root->kind = SONDE__CFG_MAP; /* an empty file is an empty map */
  if (!rc && top_map && c.root->kind != SONDE__CFG_MAP)
    rc = cerr(&c, c.root->line, c.root->col, "the top level must be a map, not a %s",
              kind_name(c.root->kind));
  if (rc) {
    sonde__cfg_node_free(c.root);
    sonde__cfg_files_free(c.files);
    return rc;
  }
  c.root->files = c.files;
  *out = c.root;
  return 0;
}

int sonde__cfg_parse_string(const char *name, const char *yaml, size_t len, sonde__cfg_node **out,
                            char *err, size_t errlen) {
  return sonde__cfg_parse_ex(name, yaml, len, true, 0, out, err, errlen);
}

int sonde__cfg_parse_file(const char *path, sonde__cfg_node **out, char *err, size_t errlen) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return sonde__cfg_err(errno == ENOENT ? SONDE_ENOTFOUND : SONDE_EIO, err, errlen,
                          "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  for (;;) {
    if (cap - len < 4096) {
      size_t ncap = cap ? cap * 2 : 8192;
      char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
      if (!nb) {
        rc = sonde__cfg_err(SONDE_ENOMEM, err, errlen, "%s: out of memory", path);
        break;
      }
      buf = nb;
      cap = ncap;
    }
    size_t k = fread(buf + len, 1, cap - len, f);
    len += k;
    if (k == 0) {
      if (ferror(f))
        rc = sonde__cfg_err(SONDE_EIO, err, errlen, "%s: cannot read: %s", path, strerror(errno));
      break;
    }
  }
  fclose(f);
  if (!rc) rc = sonde__cfg_parse_ex(path, buf ? buf : "", len, true, 0, out, err, errlen);
  free(buf);
  return rc;
}

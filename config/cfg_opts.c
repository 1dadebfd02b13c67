/* Option tables (sonde_option) bound to config structs: validation, defaults, docs, print-config.
 * A struct is only ever written with values that sonde__opts_free can release, so a bind that
 * fails half-way leaves it freeable. Fields must start zeroed (or hold an earlier bind's values,
 * which are released before being replaced). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

#define DUR_HINT "use a number with a unit: ns, us, ms, s, m, h"
#define SIZE_HINT "use a whole number with an optional unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"

typedef struct bind_ctx {
  char *err;
  size_t errlen;
} bind_ctx;

static void vappend(char *err, size_t errlen, const char *fmt, va_list ap) {
  if (!err || !errlen) return;
  size_t at = strnlen(err, errlen);
  if (at + 1 < errlen) vsnprintf(err + at, errlen - at, fmt, ap);
}

static void append(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vappend(err, errlen, fmt, ap);
  va_end(ap);
}

/* "file:line:col: path::key: message"; parts that are unknown are left out. */
static int berr(const bind_ctx *c, const char *file, unsigned line, unsigned col, const char *path,
                const char *key, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int berr(const bind_ctx *c, const char *file, unsigned line, unsigned col, const char *path,
                const char *key, const char *fmt, ...) {
  if (!c->err || !c->errlen) return SONDE_ECONFIG;
  c->err[0] = 0;
  if (file) append(c->err, c->errlen, "%s:%u:%u: ", file, line, col);
  bool p = path && *path;
  if (p || key)
    append(c->err, c->errlen, "%s%s%s: ", p ? path : "", p && key ? "::" : "", key ? key : "");
  va_list ap;
  va_start(ap, fmt);
  vappend(c->err, c->errlen, fmt, ap);
  va_end(ap);
  return SONDE_ECONFIG;
}

static int nomem(const bind_ctx *c) {
  return sonde__cfg_err(SONDE_ENOMEM, c->err, c->errlen, "binding options: out of memory");
}

static const char *kind_name(const sonde__cfg_node *n) {
  switch (n->kind) {
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

static const char *type_name(sonde_opt_type t) {
  switch (t) {
  case SONDE_OPT_STRING:
    return "string";
  case SONDE_OPT_INT:
    return "int";
  case SONDE_OPT_BOOL:
    return "bool";
  case SONDE_OPT_DOUBLE:
    return "double";
  case SONDE_OPT_DURATION:
    return "duration";
  case SONDE_OPT_BYTES:
    return "size";
  case SONDE_OPT_ENUM:
    return "enum";
  case SONDE_OPT_STRLIST:
    return "list of strings";
  case SONDE_OPT_STRMAP:
    return "map of strings";
  case SONDE_OPT_TABLE:
    return "table";
  case SONDE_OPT_TABLE_LIST:
    return "list of tables";
  }
  return "?";
}

static char *join(const char *path, const char *key, long index) {
  size_t len = strlen(path) + strlen(key) + 32;
  char *s = malloc(len);
  if (!s) return NULL;
  const char *sep = *path ? "::" : "";
  if (index >= 0)
    snprintf(s, len, "%s%s%s[%ld]", path, sep, key, index);
  else
    snprintf(s, len, "%s%s%s", path, sep, key);
  return s;
}

static void *field(const sonde_option *o, void *base) {
  return (char *)base + o->offset;
}

static void free_opt(const sonde_option *o, void *base) {
  void *f = field(o, base);
  switch (o->type) {
  case SONDE_OPT_STRING: {
    char **s = f;
    free(*s);
    *s = NULL;
    break;
  }
  case SONDE_OPT_STRLIST: {
    sonde_strlist *l = f;
    for (size_t i = 0; i < l->n; i++)
      free(l->v[i]);
    free(l->v);
    *l = (sonde_strlist){0};
    break;
  }
  case SONDE_OPT_STRMAP: {
    sonde_strmap *m = f;
    for (size_t i = 0; i < m->n; i++) {
      free(m->keys[i]);
      free(m->values[i]);
    }
    free(m->keys);
    free(m->values);
    *m = (sonde_strmap){0};
    break;
  }
  case SONDE_OPT_TABLE:
    sonde__opts_free(o->sub, f);
    break;
  case SONDE_OPT_TABLE_LIST: {
    sonde_tablelist *t = f;
    for (size_t i = 0; i < t->n; i++)
      sonde__opts_free(o->sub, (char *)t->items + i * o->sub_size);
    free(t->items);
    *t = (sonde_tablelist){0};
    break;
  }
  default:
    break;
  }
}

void sonde__opts_free(const sonde_option *table, void *cfg) {
  if (!table || !cfg) return;
  for (const sonde_option *o = table; o->name; o++)
    free_opt(o, cfg);
}

/* ---- bounds --------------------------------------------------------------------------------- */

/* min == max == 0: unbounded. A max below min means "no upper bound" (at least min). */
static bool has_bounds(const sonde_option *o) {
  return o->min != 0 || o->max != 0;
}

static bool has_max(const sonde_option *o) {
  return o->max >= o->min;
}

static void fmt_bound(const sonde_option *o, double v, char *buf, size_t len) {
  switch (o->type) {
  case SONDE_OPT_DURATION:
    sonde__fmt_duration((int64_t)v, buf, len);
    break;
  case SONDE_OPT_BYTES:
    sonde__fmt_bytes(v < 0 ? 0 : (uint64_t)v, buf, len);
    break;
  case SONDE_OPT_INT:
    snprintf(buf, len, "%.0f", v);
    break;
  default:
    snprintf(buf, len, "%g", v);
  }
}

static int check_bounds(const bind_ctx *c, const sonde__cfg_node *v, const char *path,
                        const sonde_option *o, double x) {
  if (!has_bounds(o) || (x >= o->min && (!has_max(o) || x <= o->max))) return 0;
  char lo[48], hi[48];
  fmt_bound(o, o->min, lo, sizeof lo);
  fmt_bound(o, o->max, hi, sizeof hi);
  if (has_max(o))
    return berr(c, v->file, v->line, v->col, path, o->name,
                "%s is out of range (must be between %s and %s)", v->scalar, lo, hi);
  return berr(c, v->file, v->line, v->col, path, o->name,
              "%s is out of range (must be at least %s)", v->scalar, lo);
}

/* ---- binding -------------------------------------------------------------------------------- */

static int bind_targets(const bind_ctx *c, const sonde__opts_target *t, size_t n,
                        const sonde__cfg_node *node, const char *path);

static int enum_error(const bind_ctx *c, const sonde__cfg_node *v, const char *path,
                      const sonde_option *o) {
  size_t nv = 0;
  while (o->enum_values && o->enum_values[nv])
    nv++;
  const char *dym = sonde__did_you_mean(v->scalar, o->enum_values, nv);
  berr(c, v->file, v->line, v->col, path, o->name, "invalid value \"%s\"", v->scalar);
  if (dym) append(c->err, c->errlen, ", did you mean \"%s\"?", dym);
  append(c->err, c->errlen, " (valid values:");
  for (size_t i = 0; i < nv; i++)
    append(c->err, c->errlen, "%s %s", i ? "," : "", o->enum_values[i]);
  append(c->err, c->errlen, ")");
  return SONDE_ECONFIG;
}

/* Binds a present, non-null value. */
static int bind_value(const bind_ctx *c, const sonde_option *o, void *base,
                      const sonde__cfg_node *v, const char *path) {
  void *f = field(o, base);
  const char *want = NULL;
  switch (o->type) {
  case SONDE_OPT_STRLIST:
    want = v->kind == SONDE__CFG_SEQ ? NULL : "a list";
    break;
  case SONDE_OPT_STRMAP:
  case SONDE_OPT_TABLE:
    want = v->kind == SONDE__CFG_MAP ? NULL : "a map";
    break;
  case SONDE_OPT_TABLE_LIST:
    want = v->kind == SONDE__CFG_SEQ ? NULL : "a list of maps";
    break;
  default:
    want = v->kind == SONDE__CFG_SCALAR ? NULL : "a scalar";
  }
  if (want)
    return berr(c, v->file, v->line, v->col, path, o->name, "expected %s (%s), got a %s", want,
                type_name(o->type), kind_name(v));

  int rc;
  switch (o->type) {
  case SONDE_OPT_STRING:
    if (!(*(char **)f = strdup(v->scalar))) return nomem(c);
    return 0;
  case SONDE_OPT_INT: {
    int64_t x;
    rc = sonde__parse_int(v->scalar, &x);
    if (rc == SONDE_ETOOBIG)
      return berr(c, v->file, v->line, v->col, path, o->name, "integer %s is out of range",
                  v->scalar);
    if (rc)
      return berr(c, v->file, v->line, v->col, path, o->name,
                  "invalid integer \"%s\" (expected a whole number)", v->scalar);
    if ((rc = check_bounds(c, v, path, o, (double)x))) return rc;
    *(int64_t *)f = x;
    return 0;
  }
  case SONDE_OPT_BOOL:
    if (sonde__parse_bool(v->scalar, (bool *)f))
      return berr(c, v->file, v->line, v->col, path, o->name,
                  "invalid boolean \"%s\" (use true or false)", v->scalar);
    return 0;
  case SONDE_OPT_DOUBLE: {
    double x;
    rc = sonde__parse_double(v->scalar, &x);
    if (rc == SONDE_ETOOBIG)
      return berr(c, v->file, v->line, v->col, path, o->name, "number %s is out of range",
                  v->scalar);
    if (rc)
      return berr(c, v->file, v->line, v->col, path, o->name, "invalid number \"%s\"", v->scalar);
    if ((rc = check_bounds(c, v, path, o, x))) return rc;
    *(double *)f = x;
    return 0;
  }
  case SONDE_OPT_DURATION: {
    int64_t x;
    rc = sonde__parse_duration(v->scalar, &x);
    if (rc == SONDE_ETOOBIG)
      return berr(c, v->file, v->line, v->col, path, o->name, "duration %s is out of range",
                  v->scalar);
    if (rc)
      return berr(c, v->file, v->line, v->col, path, o->name,
                  "invalid duration \"%s\" (" DUR_HINT ")", v->scalar);
    if ((rc = check_bounds(c, v, path, o, (double)x))) return rc;
    *(int64_t *)f = x;
    return 0;
  }
  case SONDE_OPT_BYTES: {
    uint64_t x;
    rc = sonde__parse_bytes(v->scalar, &x);
    if (rc == SONDE_ETOOBIG)
      return berr(c, v->file, v->line, v->col, path, o->name, "size %s is out of range", v->scalar);
    if (rc)
      return berr(c, v->file, v->line, v->col, path, o->name, "invalid size \"%s\" (" SIZE_HINT ")",
                  v->scalar);
    if ((rc = check_bounds(c, v, path, o, (double)x))) return rc;
    *(uint64_t *)f = x;
    return 0;
  }
  case SONDE_OPT_ENUM:
    for (int i = 0; o->enum_values && o->enum_values[i]; i++) {
      if (!strcmp(o->enum_values[i], v->scalar)) {
        *(int *)f = i;
        return 0;
      }
    }
    return enum_error(c, v, path, o);
  case SONDE_OPT_STRLIST: {
    sonde_strlist *l = f;
    if (!v->n) return 0;
    if (!(l->v = calloc(v->n, sizeof *l->v))) return nomem(c);
    for (size_t i = 0; i < v->n; i++) {
      const sonde__cfg_node *k = v->kids[i];
      if (k->kind != SONDE__CFG_SCALAR) {
        char *p = join(path, o->name, (long)i);
        if (!p) return nomem(c);
        berr(c, k->file, k->line, k->col, p, NULL, "expected a string, got a %s", kind_name(k));
        free(p);
        return SONDE_ECONFIG;
      }
      if (!(l->v[i] = strdup(k->scalar))) return nomem(c);
      l->n++;
    }
    return 0;
  }
  case SONDE_OPT_STRMAP: {
    sonde_strmap *m = f;
    if (!v->n) return 0;
    if (!(m->keys = calloc(v->n, sizeof *m->keys)) ||
        !(m->values = calloc(v->n, sizeof *m->values)))
      return nomem(c);
    for (size_t i = 0; i < v->n; i++) {
      const sonde__cfg_node *k = v->kids[i];
      if (k->kind != SONDE__CFG_SCALAR && k->kind != SONDE__CFG_NULL) {
        char *p = join(path, o->name, -1);
        if (!p) return nomem(c);
        berr(c, k->file, k->line, k->col, p, v->keys[i], "expected a string, got a %s",
             kind_name(k));
        free(p);
        return SONDE_ECONFIG;
      }
      char *key = strdup(v->keys[i]);
      char *val = strdup(k->scalar ? k->scalar : "");
      if (!key || !val) {
        free(key);
        free(val);
        return nomem(c);
      }
      m->keys[i] = key;
      m->values[i] = val;
      m->n++;
    }
    return 0;
  }
  case SONDE_OPT_TABLE: {
    char *p = join(path, o->name, -1);
    if (!p) return nomem(c);
    sonde__opts_target t = {o->sub, f};
    rc = bind_targets(c, &t, 1, v, p);
    free(p);
    return rc;
  }
  case SONDE_OPT_TABLE_LIST: {
    sonde_tablelist *tl = f;
    if (!v->n) return 0;
    if (!o->sub_size || v->n > SIZE_MAX / o->sub_size) return nomem(c);
    if (!(tl->items = calloc(v->n, o->sub_size))) return nomem(c);
    tl->n = v->n; /* zeroed rows are freeable */
    for (size_t i = 0; i < v->n; i++) {
      char *p = join(path, o->name, (long)i);
      if (!p) return nomem(c);
      sonde__opts_target t = {o->sub, (char *)tl->items + i * o->sub_size};
      rc = bind_targets(c, &t, 1, v->kids[i], p);
      free(p);
      if (rc) return rc;
    }
    return 0;
  }
  }
  return berr(c, v->file, v->line, v->col, path, o->name, "unknown option type %d", (int)o->type);
}

static int bind_default(const bind_ctx *c, const sonde_option *o, void *base, const char *path) {
  if (o->type == SONDE_OPT_TABLE) {
    char *p = join(path, o->name, -1);
    if (!p) return nomem(c);
    sonde__opts_target t = {o->sub, field(o, base)};
    int rc = bind_targets(c, &t, 1, NULL, p);
    free(p);
    return rc;
  }
  if (!o->def) return 0;
  int rc;
  if (o->type == SONDE_OPT_STRLIST || o->type == SONDE_OPT_STRMAP ||
      o->type == SONDE_OPT_TABLE_LIST) {
    sonde__cfg_node *tree;
    rc = sonde__cfg_parse_ex("<default>", o->def, strlen(o->def), false, 0, &tree, c->err,
                             c->errlen);
    if (rc) return rc;
    rc = tree->kind == SONDE__CFG_NULL ? 0 : bind_value(c, o, base, tree, path);
    sonde__cfg_free(tree);
  } else {
    /* Scalar defaults are read by the same parsers as user text, with no position. */
    sonde__cfg_node n = {.kind = SONDE__CFG_SCALAR, .scalar = (char *)o->def};
    rc = bind_value(c, o, base, &n, path);
  }
  if (rc == SONDE_ECONFIG) append(c->err, c->errlen, " [in the option table's default]");
  return rc;
}

/* A null value, or an empty unquoted scalar (an unset ${env:..}) for anything but a string. */
static bool absent(const sonde_option *o, const sonde__cfg_node *v) {
  return !v || v->kind == SONDE__CFG_NULL ||
         (o->type != SONDE_OPT_STRING && v->kind == SONDE__CFG_SCALAR && !v->quoted &&
          !v->scalar[0]);
}

static const sonde_option *find_opt(const sonde_option *table, const char *name) {
  for (const sonde_option *o = table; o && o->name; o++)
    if (!strcmp(o->name, name)) return o;
  return NULL;
}

static int unknown_key(const bind_ctx *c, const sonde__opts_target *t, size_t n,
                       const sonde__cfg_node *map, size_t i, const char *path) {
  size_t count = 0;
  for (size_t k = 0; k < n; k++)
    for (const sonde_option *o = t[k].table; o && o->name; o++)
      count++;
  const char **names = malloc((count ? count : 1) * sizeof *names);
  if (!names) return nomem(c);
  size_t m = 0;
  for (size_t k = 0; k < n; k++)
    for (const sonde_option *o = t[k].table; o && o->name; o++) {
      bool seen = false;
      for (size_t j = 0; j < m && !seen; j++)
        seen = !strcmp(names[j], o->name);
      if (!seen) names[m++] = o->name;
    }
  const char *key = map->keys[i];
  const char *dym = sonde__did_you_mean(key, names, m);
  berr(c, map->kids[i]->file, map->key_lines[i], map->key_cols[i], path, key, "unknown option");
  if (dym) append(c->err, c->errlen, ", did you mean \"%s\"?", dym);
  if (m) {
    append(c->err, c->errlen, " (valid options:");
    for (size_t j = 0; j < m; j++)
      append(c->err, c->errlen, "%s %s", j ? "," : "", names[j]);
    append(c->err, c->errlen, ")");
  } else {
    append(c->err, c->errlen, " (this component takes no options)");
  }
  free(names);
  return SONDE_ECONFIG;
}

static int bind_targets(const bind_ctx *c, const sonde__opts_target *t, size_t n,
                        const sonde__cfg_node *node, const char *path) {
  if (node && node->kind == SONDE__CFG_SCALAR && !node->quoted && !node->scalar[0])
    node = NULL; /* an unset ${env:..} where a map goes: defaults */
  if (node && node->kind != SONDE__CFG_MAP && node->kind != SONDE__CFG_NULL)
    return berr(c, node->file, node->line, node->col, path, NULL, "expected a map, got a %s",
                kind_name(node));
  const sonde__cfg_node *map = node && node->kind == SONDE__CFG_MAP ? node : NULL;
  for (size_t i = 0; map && i < map->n; i++) {
    bool known = false;
    for (size_t k = 0; k < n && !known; k++)
      known = find_opt(t[k].table, map->keys[i]) != NULL;
    if (!known) return unknown_key(c, t, n, map, i, path);
  }
  for (size_t k = 0; k < n; k++) {
    for (const sonde_option *o = t[k].table; o && o->name; o++) {
      free_opt(o, t[k].cfg);
      long ix = sonde__cfg_index(map, o->name);
      const sonde__cfg_node *v = ix >= 0 ? map->kids[ix] : NULL;
      int rc;
      if (!absent(o, v)) {
        rc = bind_value(c, o, t[k].cfg, v, path);
      } else if (o->flags & SONDE_OPT_REQUIRED) {
        if (ix >= 0)
          return berr(c, v->file, map->key_lines[ix], map->key_cols[ix], path, o->name,
                      "required option has no value");
        return berr(c, node ? node->file : NULL, node ? node->line : 0, node ? node->col : 0, path,
                    o->name, "required option is missing");
      } else {
        rc = bind_default(c, o, t[k].cfg, path);
      }
      if (rc) return rc;
      if (o->type == SONDE_OPT_TABLE && (o->flags & SONDE_OPT_PRESENCE))
        *(bool *)((char *)t[k].cfg + o->present_offset) = ix >= 0; /* `key:` alone counts */
    }
  }
  return 0;
}

int sonde__opts_bind(const sonde__opts_target *targets, size_t n, const sonde__cfg_node *node,
                     const char *path, char *err, size_t errlen) {
  bind_ctx c = {err, errlen};
  if (err && errlen) err[0] = 0;
  return bind_targets(&c, targets, n, node, path ? path : "");
}

/* ---- documentation -------------------------------------------------------------------------- */

int sonde__opts_doc(const sonde_option *table, int indent, sonde_buf *out) {
  int rc = 0;
  for (const sonde_option *o = table; o && o->name && !rc; o++) {
    rc = sonde_buf_printf(out, "%*s%s (", indent, "", o->name);
    if (!rc && o->type == SONDE_OPT_ENUM) {
      rc = sonde_buf_printf(out, "enum:");
      for (size_t i = 0; !rc && o->enum_values && o->enum_values[i]; i++)
        rc = sonde_buf_printf(out, "%s%s", i ? "|" : " ", o->enum_values[i]);
    } else if (!rc) {
      rc = sonde_buf_printf(out, "%s", type_name(o->type));
    }
    if (!rc && (o->flags & SONDE_OPT_REQUIRED)) rc = sonde_buf_printf(out, ", required");
    if (!rc && (o->flags & SONDE_OPT_SECRET)) rc = sonde_buf_printf(out, ", secret");
    if (!rc && o->def && o->type != SONDE_OPT_TABLE)
      rc = sonde_buf_printf(out, ", default \"%s\"", o->def);
    if (!rc && has_bounds(o)) {
      char b[48];
      fmt_bound(o, o->min, b, sizeof b);
      rc = sonde_buf_printf(out, ", min %s", b);
      if (!rc && has_max(o)) {
        fmt_bound(o, o->max, b, sizeof b);
        rc = sonde_buf_printf(out, ", max %s", b);
      }
    }
    if (!rc) rc = sonde_buf_printf(out, ")%s%s\n", o->doc ? ": " : "", o->doc ? o->doc : "");
    if (!rc && (o->type == SONDE_OPT_TABLE || o->type == SONDE_OPT_TABLE_LIST))
      rc = sonde__opts_doc(o->sub, indent + 2, out);
  }
  return rc;
}

/* ---- print-config --------------------------------------------------------------------------- */

static int emit_double(sonde_buf *out, double d) {
  char b[40];
  for (int prec = 1; prec <= 17; prec++) { /* the shortest text that reads back the same */
    snprintf(b, sizeof b, "%.*g", prec, d);
    if (strtod(b, NULL) == d) break;
  }
  if (!strchr(b, '.') && !strchr(b, 'e') && !strchr(b, 'n') && !strchr(b, 'i')) strcat(b, ".0");
  return sonde_buf_append(out, b, strlen(b));
}

static bool empty_table(const sonde_option *t) {
  return !t || !t->name;
}

int sonde__opts_emit(const sonde_option *table, const void *cfg, int indent, sonde_buf *out) {
  int rc = 0;
  for (const sonde_option *o = table; o && o->name && !rc; o++) {
    const void *f = (const char *)cfg + o->offset;
    bool secret = o->flags & SONDE_OPT_SECRET;
    if (o->type == SONDE_OPT_TABLE && (o->flags & SONDE_OPT_PRESENCE) &&
        !*(const bool *)((const char *)cfg + o->present_offset))
      continue; /* not configured: printing it would configure it */
    if ((rc = sonde_buf_printf(out, "%*s", indent, "")) ||
        (rc = sonde__cfg_emit_key(out, o->name, indent)))
      break;
    char b[64];
    switch (o->type) {
    case SONDE_OPT_STRING: {
      const char *s = *(char *const *)f;
      if (!s)
        rc = sonde_buf_append(out, "\n", 1);
      else if (!(rc = sonde_buf_append(out, " ", 1)) &&
               !(rc = sonde__cfg_emit_scalar(out, secret ? "[REDACTED]" : s, false)))
        rc = sonde_buf_append(out, "\n", 1);
      break;
    }
    case SONDE_OPT_INT:
      rc = sonde_buf_printf(out, " %" PRId64 "\n", *(const int64_t *)f);
      break;
    case SONDE_OPT_BOOL:
      rc = sonde_buf_printf(out, " %s\n", *(const bool *)f ? "true" : "false");
      break;
    case SONDE_OPT_DOUBLE:
      if (!(rc = sonde_buf_append(out, " ", 1)) && !(rc = emit_double(out, *(const double *)f)))
        rc = sonde_buf_append(out, "\n", 1);
      break;
    case SONDE_OPT_DURATION:
      sonde__fmt_duration(*(const int64_t *)f, b, sizeof b);
      rc = sonde_buf_printf(out, " %s\n", b);
      break;
    case SONDE_OPT_BYTES:
      sonde__fmt_bytes(*(const uint64_t *)f, b, sizeof b);
      rc = sonde_buf_printf(out, " %s\n", b);
      break;
    case SONDE_OPT_ENUM: {
      int i = *(const int *)f, nv = 0;
      while (o->enum_values && o->enum_values[nv])
        nv++;
      if (i < 0 || i >= nv)
        rc = sonde_buf_append(out, "\n", 1);
      else if (!(rc = sonde_buf_append(out, " ", 1)) &&
               !(rc = sonde__cfg_emit_scalar(out, o->enum_values[i], false)))
        rc = sonde_buf_append(out, "\n", 1);
      break;
    }
    case SONDE_OPT_STRLIST: {
      const sonde_strlist *l = f;
      rc = sonde_buf_append(out, l->n ? "\n" : " []\n", l->n ? 1 : 4);
      for (size_t i = 0; i < l->n && !rc; i++)
        if (!(rc = sonde_buf_printf(out, "%*s- ", indent + 2, "")) &&
            !(rc = sonde__cfg_emit_scalar(out, secret ? "[REDACTED]" : l->v[i], false)))
          rc = sonde_buf_append(out, "\n", 1);
      break;
    }
    case SONDE_OPT_STRMAP: {
      const sonde_strmap *m = f;
      rc = sonde_buf_append(out, m->n ? "\n" : " {}\n", m->n ? 1 : 4);
      for (size_t i = 0; i < m->n && !rc; i++)
        if (!(rc = sonde_buf_printf(out, "%*s", indent + 2, "")) &&
            !(rc = sonde__cfg_emit_key(out, m->keys[i], indent + 2)) &&
            !(rc = sonde_buf_append(out, " ", 1)) &&
            !(rc = sonde__cfg_emit_scalar(out, secret ? "[REDACTED]" : m->values[i], true)))
          rc = sonde_buf_append(out, "\n", 1);
      break;
    }
    case SONDE_OPT_TABLE:
      if (empty_table(o->sub))
        rc = sonde_buf_append(out, " {}\n", 4);
      else if (!(rc = sonde_buf_append(out, "\n", 1)))
        rc = sonde__opts_emit(o->sub, f, indent + 2, out);
      break;
    case SONDE_OPT_TABLE_LIST: {
      const sonde_tablelist *t = f;
      rc = sonde_buf_append(out, t->n ? "\n" : " []\n", t->n ? 1 : 4);
      for (size_t i = 0; i < t->n && !rc; i++) {
        if (empty_table(o->sub)) {
          rc = sonde_buf_printf(out, "%*s- {}\n", indent + 2, "");
          continue;
        }
        /* "- " then the row's first option on the same line, the others under it */
        sonde_buf row = {0};
        rc = sonde__opts_emit(o->sub, (const char *)t->items + i * o->sub_size, indent + 4, &row);
        if (!rc && !(rc = sonde_buf_printf(out, "%*s- ", indent + 2, "")))
          rc = sonde_buf_append(out, row.data + indent + 4, row.len - (size_t)(indent + 4));
        sonde_buf_free(&row);
      }
      break;
    }
    }
  }
  return rc;
}

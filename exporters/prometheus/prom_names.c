/* OTLP -> Prometheus names and value text; see prom_names.h. */
#include "prom_names.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;

/* ---- unit words (otlptranslator's unitMap / perUnitMap) -------------------------------------- */

static const char *const unit_map[][2] = {
    {"d", "days"},
    {"h", "hours"},
    {"min", "minutes"},
    {"s", "seconds"},
    {"ms", "milliseconds"},
    {"us", "microseconds"},
    {"ns", "nanoseconds"},
    {"By", "bytes"},
    {"KiBy", "kibibytes"},
    {"MiBy", "mebibytes"},
    {"GiBy", "gibibytes"},
    {"TiBy", "tibibytes"},
    {"KBy", "kilobytes"},
    {"MBy", "megabytes"},
    {"GBy", "gigabytes"},
    {"TBy", "terabytes"},
    {"m", "meters"},
    {"V", "volts"},
    {"A", "amperes"},
    {"J", "joules"},
    {"W", "watts"},
    {"g", "grams"},
    {"Cel", "celsius"},
    {"Hz", "hertz"},
    {"1", ""},
    {"%", "percent"},
};

static const char *const per_unit_map[][2] = {
    {"s", "second"}, {"m", "minute"}, {"h", "hour"}, {"d", "day"},
    {"w", "week"},   {"mo", "month"}, {"y", "year"},
};

static const char *lookup(const char *const map[][2], size_t n, const char *k, size_t klen) {
  for (size_t i = 0; i < n; i++)
    if (strlen(map[i][0]) == klen && memcmp(map[i][0], k, klen) == 0) return map[i][1];
  return NULL;
}

static bool metric_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':';
}

static bool is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

/* A UTF-8 continuation byte: Go's rune functions see one rune, so one replacement per rune. */
static bool utf8_cont(unsigned char c) {
  return (c & 0xc0) == 0x80;
}

/* ---- a small token list ---------------------------------------------------------------------- */

typedef struct toks {
  char **v;
  size_t n, cap;
  bool oom;
} toks;

static void tok_push(toks *t, const char *s, size_t len) {
  if (t->oom) return;
  if (t->n == t->cap) {
    size_t nc = t->cap ? t->cap * 2 : 8;
    char **nv = realloc(t->v, nc * sizeof(*nv));
    if (!nv) {
      t->oom = true;
      return;
    }
    t->v = nv;
    t->cap = nc;
  }
  char *d = strndup(s, len);
  if (!d) {
    t->oom = true;
    return;
  }
  t->v[t->n++] = d;
}

static bool tok_has(const toks *t, const char *s) {
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->v[i], s) == 0) return true;
  return false;
}

static void tok_remove(toks *t, const char *s) {
  size_t j = 0;
  for (size_t i = 0; i < t->n; i++) {
    if (strcmp(t->v[i], s) == 0)
      free(t->v[i]);
    else
      t->v[j++] = t->v[i];
  }
  t->n = j;
}

static void tok_free(toks *t) {
  for (size_t i = 0; i < t->n; i++)
    free(t->v[i]);
  free(t->v);
}

/* Splits on runs of characters that are not [a-zA-Z0-9:]; with keep_underscore '_' is kept
 * inside tokens (the no-suffix rule). */
static void tok_split(toks *t, const char *s, bool keep_underscore) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    while (*p && !(metric_char(*p) || (keep_underscore && *p == '_')))
      p++;
    const unsigned char *b = p;
    while (*p && (metric_char(*p) || (keep_underscore && *p == '_')))
      p++;
    if (p > b) tok_push(t, (const char *)b, (size_t)(p - b));
  }
}

/* cleanUpUnit: invalid characters (per rune) to '_', runs of '_' to one, no leading '_'. */
static char *clean_unit(const char *u) {
  size_t l = strlen(u);
  char *o = malloc(l + 1), *w = o;
  if (!o) return NULL;
  for (const unsigned char *p = (const unsigned char *)u; *p; p++) {
    char c;
    if (metric_char(*p))
      c = (char)*p;
    else if (utf8_cont(*p))
      continue;
    else
      c = '_';
    if (c == '_' && (w == o || w[-1] == '_')) continue;
    *w++ = c;
  }
  *w = 0;
  return o;
}

static void trim_space(const char **s, size_t *len) {
  while (*len && ((*s)[0] == ' ' || (*s)[0] == '\t' || (*s)[0] == '\n' || (*s)[0] == '\r')) {
    (*s)++;
    (*len)--;
  }
  while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t' || (*s)[*len - 1] == '\n' ||
                  (*s)[*len - 1] == '\r'))
    (*len)--;
}

static bool has_brace(const char *s, size_t len) {
  return memchr(s, '{', len) || memchr(s, '}', len);
}

/* buildUnitSuffixes + cleanUpUnit: *main ("seconds") and *per ("per_second"), "" when none. */
static int unit_suffixes(const char *unit, char **main_out, char **per_out) {
  *main_out = *per_out = NULL;
  char mainbuf[256] = "", perbuf[256] = "";
  const char *slash = strchr(unit, '/');
  const char *m = unit;
  size_t ml = slash ? (size_t)(slash - unit) : strlen(unit);
  trim_space(&m, &ml);
  if (ml && !has_brace(m, ml)) {
    const char *w = lookup(unit_map, sizeof(unit_map) / sizeof(unit_map[0]), m, ml);
    snprintf(mainbuf, sizeof(mainbuf), "%.*s", w ? (int)strlen(w) : (int)ml, w ? w : m);
  }
  if (slash && slash[1]) {
    const char *p = slash + 1;
    size_t pl = strlen(p);
    trim_space(&p, &pl);
    if (pl && !has_brace(p, pl)) {
      const char *w = lookup(per_unit_map, sizeof(per_unit_map) / sizeof(per_unit_map[0]), p, pl);
      snprintf(perbuf, sizeof(perbuf), "per_%.*s", w ? (int)strlen(w) : (int)pl, w ? w : p);
    }
  }
  *main_out = clean_unit(mainbuf);
  *per_out = clean_unit(perbuf);
  if (!*main_out || !*per_out) {
    free(*main_out);
    free(*per_out);
    *main_out = *per_out = NULL;
    return -1;
  }
  return 0;
}

static char *join(const toks *t, const char *prefix_if_digit) {
  size_t len = 2;
  for (size_t i = 0; i < t->n; i++)
    len += strlen(t->v[i]) + 1;
  char *o = malloc(len), *w = o;
  if (!o) return NULL;
  if (t->n && is_digit((unsigned char)t->v[0][0]) && prefix_if_digit) *w++ = '_';
  for (size_t i = 0; i < t->n; i++) {
    if (i) *w++ = '_';
    size_t l = strlen(t->v[i]);
    memcpy(w, t->v[i], l);
    w += l;
  }
  *w = 0;
  return o;
}

char *prom_metric_name(const char *name, const char *unit, prom_otel_kind kind,
                       const char *namespace_, bool add_suffixes, bool *empty) {
  *empty = false;
  toks t = {0};
  char *out = NULL, *mainu = NULL, *peru = NULL;
  if (!name) name = "";
  if (!unit) unit = "";
  bool ns = namespace_ && namespace_[0];
  if (add_suffixes) {
    tok_split(&t, name, false);
    if (unit_suffixes(unit, &mainu, &peru)) goto out;
    if (tok_has(&t, mainu)) mainu[0] = 0;
    if (strcmp(peru, "per_") == 0) {
      peru[0] = 0;
    } else {
      size_t pl = strlen(peru);
      if (pl && peru[pl - 1] == '_') peru[pl - 1] = 0;
      if (tok_has(&t, peru)) peru[0] = 0;
    }
    if (peru[0]) {
      size_t ml = strlen(mainu);
      if (ml && mainu[ml - 1] == '_') mainu[ml - 1] = 0;
    }
    if (mainu[0]) tok_push(&t, mainu, strlen(mainu));
    if (peru[0]) tok_push(&t, peru, strlen(peru));
    if (kind == PROM_OTEL_MONOTONIC_COUNTER) {
      tok_remove(&t, "total");
      tok_push(&t, "total", 5);
    }
    if (strcmp(unit, "1") == 0 && kind == PROM_OTEL_GAUGE) {
      tok_remove(&t, "ratio");
      tok_push(&t, "ratio", 5);
    }
    if (ns && !t.oom) {
      toks withns = {0};
      tok_push(&withns, namespace_, strlen(namespace_));
      for (size_t i = 0; i < t.n; i++)
        tok_push(&withns, t.v[i], strlen(t.v[i]));
      tok_free(&t);
      t = withns;
    }
    if (t.oom) goto out;
    out = join(&t, "_");
  } else {
    tok_split(&t, name, true);
    if (t.oom) goto out;
    char *base = join(&t, NULL);
    if (!base) goto out;
    if (ns) {
      toks nt = {0};
      tok_split(&nt, namespace_, true);
      char *nsj = nt.oom ? NULL : join(&nt, NULL);
      tok_free(&nt);
      if (!nsj) {
        free(base);
        goto out;
      }
      out = malloc(strlen(nsj) + strlen(base) + 2);
      if (out) sprintf(out, "%s_%s", nsj, base);
      free(nsj);
      free(base);
    } else if (base[0] && is_digit((unsigned char)base[0])) {
      out = malloc(strlen(base) + 2);
      if (out) sprintf(out, "_%s", base);
      free(base);
    } else {
      out = base;
    }
  }
  if (out) {
    bool only_underscores = true;
    for (const char *p = out; *p; p++)
      if (*p != '_') only_underscores = false;
    if (only_underscores) {
      free(out);
      out = NULL;
      *empty = true;
    }
  }
out:
  free(mainu);
  free(peru);
  tok_free(&t);
  return out;
}

char *prom_label_name(const char *key, bool *empty) {
  *empty = false;
  if (!key || !key[0]) {
    *empty = true;
    return NULL;
  }
  size_t l = strlen(key);
  char *o = malloc(l + 5), *w = o;
  if (!o) return NULL;
  w += 4; /* room for "key_" */
  char *start = w;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || is_digit(*p) || *p == '_')
      *w++ = (char)*p;
    else if (!utf8_cont(*p))
      *w++ = '_';
  }
  *w = 0;
  const char *prefix = "";
  if (is_digit((unsigned char)start[0]))
    prefix = "key_";
  else if (start[0] == '_' && start[1] != '_')
    prefix = "key";
  size_t pl = strlen(prefix);
  memcpy(start - pl, prefix, pl);
  memmove(o, start - pl, strlen(start - pl) + 1);
  bool only_underscores = true;
  for (const char *p = o; *p; p++)
    if (*p != '_') only_underscores = false;
  if (!o[0] || (only_underscores && strcmp(o, key) != 0)) {
    free(o);
    *empty = true;
    return NULL;
  }
  return o;
}

/* ---- floats ---------------------------------------------------------------------------------- */

/* The shortest decimal digits of |v| (finite, non-zero) that read back as v; *exp10 is the
 * exponent of the first digit (v = d.ddd * 10^exp10). Returns the digit count. */
static int shortest_digits(double v, char digs[20], int *exp10) {
  char tmp[40];
  double a = fabs(v);
  /* If any decimal of 15 digits or fewer reads back as v, rounding v to 15 digits gives it
   * (a double's half-ulp is below 15 digits' rounding), so 15, 16, 17 are the only tries. */
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, a);
    if (strtod(tmp, NULL) == a) break;
  }
  int n = 0;
  const char *p = tmp;
  for (; *p && *p != 'e'; p++)
    if (is_digit((unsigned char)*p)) digs[n++] = *p;
  while (n > 1 && digs[n - 1] == '0')
    n--;
  digs[n] = 0;
  *exp10 = *p == 'e' ? atoi(p + 1) : 0;
  return n;
}

/* Go's %e exponent: sign and at least two digits. */
static int put_exp(char *w, int e) {
  return sprintf(w, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
}

static int fmt_e(char *out, bool neg, const char *digs, int n, int e) {
  char *w = out;
  if (neg) *w++ = '-';
  *w++ = digs[0];
  if (n > 1) {
    *w++ = '.';
    memcpy(w, digs + 1, (size_t)n - 1);
    w += n - 1;
  }
  w += put_exp(w, e);
  *w = 0;
  return (int)(w - out);
}

static int fmt_f(char *out, bool neg, const char *digs, int n, int e) {
  char *w = out;
  if (neg) *w++ = '-';
  int dp = e + 1; /* digits before the point */
  if (dp <= 0) {
    *w++ = '0';
    *w++ = '.';
    for (int i = 0; i < -dp; i++)
      *w++ = '0';
    memcpy(w, digs, (size_t)n);
    w += n;
  } else {
    for (int i = 0; i < dp; i++)
      *w++ = i < n ? digs[i] : '0';
    if (n > dp) {
      *w++ = '.';
      memcpy(w, digs + dp, (size_t)(n - dp));
      w += n - dp;
    }
  }
  *w = 0;
  return (int)(w - out);
}

static int fmt_special(char *out, double v) {
  if (isnan(v)) return sprintf(out, "NaN");
  if (isinf(v)) return sprintf(out, v > 0 ? "+Inf" : "-Inf");
  if (v == 0) return sprintf(out, signbit(v) ? "-0" : "0");
  return -1;
}

int prom_fmt_float(char *out, double v) {
  int r = fmt_special(out, v);
  if (r >= 0) return r;
  if (fabs(v) < 1e6 && v == (double)(int64_t)v) /* counts: the common case, without strtod */
    return sprintf(out, "%" PRId64, (int64_t)v);
  char digs[20];
  int e, n = shortest_digits(v, digs, &e);
  /* 'g' with the shortest precision switches to %e below 1e-4 and from 1e+06 (eprec 6). */
  if (e < -4 || e >= 6) return fmt_e(out, v < 0, digs, n, e);
  return fmt_f(out, v < 0, digs, n, e);
}

int prom_fmt_om_float(char *out, double v) {
  int n = prom_fmt_float(out, v);
  if (isfinite(v) && !strpbrk(out, "e.")) {
    out[n++] = '.';
    out[n++] = '0';
    out[n] = 0;
  }
  return n;
}

/* ES6 number text, as pcommon's float64AsString: %e (with the exponent's leading zeros dropped)
 * below 1e-6 and from 1e21, plain decimals otherwise. */
static int fmt_es6(char *out, double v) {
  if (isnan(v)) return sprintf(out, "NaN");
  if (isinf(v)) return sprintf(out, v > 0 ? "+Inf" : "-Inf");
  if (v == 0) return sprintf(out, "0");
  char digs[20];
  int e, n = shortest_digits(v, digs, &e);
  double a = fabs(v);
  if (a < 1e-6 || a >= 1e21) {
    char *w = out;
    if (v < 0) *w++ = '-';
    *w++ = digs[0];
    if (n > 1) {
      *w++ = '.';
      memcpy(w, digs + 1, (size_t)n - 1);
      w += n - 1;
    }
    w += sprintf(w, "e%c%d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    return (int)(w - out);
  }
  return fmt_f(out, v < 0, digs, n, e);
}

/* ---- AnyValue as string ---------------------------------------------------------------------- */

static int put_b64(sonde_buf *o, const uint8_t *p, size_t n) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    uint32_t x = (uint32_t)p[i] << 16;
    if (i + 1 < n) x |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) x |= p[i + 2];
    char q[4] = {tab[x >> 18 & 63], tab[x >> 12 & 63], i + 1 < n ? tab[x >> 6 & 63] : '=',
                 i + 2 < n ? tab[x & 63] : '='};
    if (sonde_buf_append(o, q, 4)) return -1;
  }
  return 0;
}

static int put_json_str(sonde_buf *o, const char *s) {
  int rc = sonde_buf_append(o, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); !rc && *p; p++) {
    switch (*p) {
    case '"':
      rc = sonde_buf_append(o, "\\\"", 2);
      break;
    case '\\':
      rc = sonde_buf_append(o, "\\\\", 2);
      break;
    case '\n':
      rc = sonde_buf_append(o, "\\n", 2);
      break;
    case '\r':
      rc = sonde_buf_append(o, "\\r", 2);
      break;
    case '\t':
      rc = sonde_buf_append(o, "\\t", 2);
      break;
    case '<':
    case '>':
    case '&':
      /* encoding/json's HTML-safe escaping */
      rc = sonde_buf_printf(o, "\\u%04x", *p);
      break;
    default:
      rc = *p < 0x20 ? sonde_buf_printf(o, "\\u%04x", *p) : sonde_buf_append(o, p, 1);
    }
  }
  return rc ? rc : sonde_buf_append(o, "\"", 1);
}

static int cmp_kv(const void *a, const void *b) {
  const kv_t *x = *(const kv_t *const *)a, *y = *(const kv_t *const *)b;
  return strcmp(x->key ? x->key : "", y->key ? y->key : "");
}

static int put_json(sonde_buf *o, const any_t *v, int depth) {
  char num[40];
  if (depth > 64) return sonde_buf_append(o, "null", 4);
  if (!v) return sonde_buf_append(o, "null", 4);
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    return put_json_str(o, v->string_value);
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    return sonde_buf_printf(o, "%s", v->bool_value ? "true" : "false");
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    return sonde_buf_printf(o, "%" PRId64, v->int_value);
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    fmt_es6(num, v->double_value);
    return sonde_buf_printf(o, "%s", num);
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
    if (sonde_buf_append(o, "\"", 1) ||
        put_b64(o, v->bytes_value.data, v->bytes_value.data ? v->bytes_value.len : 0))
      return -1;
    return sonde_buf_append(o, "\"", 1);
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE: {
    if (sonde_buf_append(o, "[", 1)) return -1;
    const Opentelemetry__Proto__Common__V1__ArrayValue *a = v->array_value;
    for (size_t i = 0; a && i < a->n_values; i++)
      if ((i && sonde_buf_append(o, ",", 1)) || put_json(o, a->values[i], depth + 1)) return -1;
    return sonde_buf_append(o, "]", 1);
  }
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE: {
    const Opentelemetry__Proto__Common__V1__KeyValueList *l = v->kvlist_value;
    size_t n = l ? l->n_values : 0;
    kv_t **sorted = n ? malloc(n * sizeof(*sorted)) : NULL;
    if (n && !sorted) return -1;
    if (n) memcpy(sorted, l->values, n * sizeof(*sorted));
    if (n) qsort(sorted, n, sizeof(*sorted), cmp_kv);
    int rc = sonde_buf_append(o, "{", 1);
    for (size_t i = 0; !rc && i < n; i++) {
      if (i) rc = sonde_buf_append(o, ",", 1);
      if (!rc) rc = put_json_str(o, sorted[i]->key);
      if (!rc) rc = sonde_buf_append(o, ":", 1);
      if (!rc) rc = put_json(o, sorted[i]->value, depth + 1);
    }
    free(sorted);
    return rc ? rc : sonde_buf_append(o, "}", 1);
  }
  default:
    return sonde_buf_append(o, "null", 4);
  }
}

char *prom_any_string(const any_t *v) {
  char num[40];
  if (!v) return strdup("");
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    return strdup(v->string_value ? v->string_value : "");
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    return strdup(v->bool_value ? "true" : "false");
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    snprintf(num, sizeof(num), "%" PRId64, v->int_value);
    return strdup(num);
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    fmt_es6(num, v->double_value);
    return strdup(num);
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE: {
    sonde_buf b = {0};
    int rc = put_json(&b, v, 0);
    if (!rc && v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE) {
      /* bytes are base64 without the JSON quotes */
      memmove(b.data, b.data + 1, b.len - 2);
      b.len -= 2;
    }
    if (!rc) rc = sonde_buf_append(&b, "", 1);
    if (rc) {
      sonde_buf_free(&b);
      return NULL;
    }
    return (char *)b.data;
  }
  default:
    return strdup("");
  }
}

/* Length of the valid UTF-8 sequence at p, 0 when invalid. */
static size_t utf8_seq(const unsigned char *p) {
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) return utf8_cont(p[1]) ? 2 : 0;
  if (p[0] >= 0xe0 && p[0] <= 0xef) {
    if (!utf8_cont(p[1]) || !utf8_cont(p[2])) return 0;
    if (p[0] == 0xe0 && p[1] < 0xa0) return 0;  /* overlong */
    if (p[0] == 0xed && p[1] >= 0xa0) return 0; /* surrogate */
    return 3;
  }
  if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    if (!utf8_cont(p[1]) || !utf8_cont(p[2]) || !utf8_cont(p[3])) return 0;
    if (p[0] == 0xf0 && p[1] < 0x90) return 0;  /* overlong */
    if (p[0] == 0xf4 && p[1] >= 0x90) return 0; /* past U+10FFFF */
    return 4;
  }
  return 0;
}

bool prom_utf8_valid(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    size_t n = utf8_seq(p);
    if (!n) return false;
    p += n;
  }
  return true;
}

char *prom_utf8_sanitize(const char *s) {
  size_t l = strlen(s);
  char *o = malloc(l * 3 + 1), *w = o;
  if (!o) return NULL;
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    size_t n = utf8_seq(p);
    if (n) {
      memcpy(w, p, n);
      w += n;
      p += n;
    } else {
      memcpy(w, "\xef\xbf\xbd", 3);
      w += 3;
      p++;
    }
  }
  *w = 0;
  return o;
}

int prom_put_escaped(sonde_buf *out, const char *s, bool quote) {
  const char *p = s ? s : "", *run = p;
  for (; *p; p++) {
    const char *rep = NULL;
    if (*p == '\\')
      rep = "\\\\";
    else if (*p == '\n')
      rep = "\\n";
    else if (*p == '"' && quote)
      rep = "\\\"";
    if (!rep) continue;
    if ((p > run && sonde_buf_append(out, run, (size_t)(p - run))) || sonde_buf_append(out, rep, 2))
      return -1;
    run = p + 1;
  }
  return p > run ? sonde_buf_append(out, run, (size_t)(p - run)) : 0;
}

/* OTLP-JSON codec, generic over protobuf-c descriptors.
 *
 * Protobuf JSON mapping with the OTLP exceptions: trace/span/profile ids as lowercase hex, enums
 * as integers, 64-bit integers as decimal strings, and otelcol's output conventions (default
 * scalars and empty lists omitted, singular sub-messages always written, "{}" when unset, fields
 * in .proto declaration order). Decoding is lenient where OTLP says so: unknown keys ignored,
 * snake_case keys, enum names, 64-bit integers as numbers. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdata_internal.h"
#include "sonde/errors.h"
#include "sonde/pdata.h"

#define JSON_MAX_DEPTH 128 /* object/array nesting accepted by the parser */
#define ENC_MAX_DEPTH 256  /* message nesting the encoder follows (hand-built messages) */

/* ---- field order ---- */

/* protobuf-c lists fields by number; otelcol writes them in declaration order. These are the
 * OTLP messages where the two differ (field numbers in declaration order). */
typedef struct field_order {
  const ProtobufCMessageDescriptor *desc;
  const uint32_t *ids;
  size_t n;
} field_order;

static const uint32_t span_order[] = {1, 2, 3, 4, 16, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint32_t log_order[] = {1, 11, 2, 3, 5, 6, 7, 8, 9, 10, 12};
static const uint32_t ndp_order[] = {7, 2, 3, 4, 6, 5, 8};
static const uint32_t hdp_order[] = {9, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12};
static const uint32_t sdp_order[] = {7, 2, 3, 4, 5, 6, 8};
static const uint32_t ex_order[] = {7, 2, 3, 6, 4, 5};

#define ORDER(d, a)                                                                                \
  { &d, a, sizeof a / sizeof a[0] }
static const field_order orders[] = {
    ORDER(opentelemetry__proto__trace__v1__span__descriptor, span_order),
    ORDER(opentelemetry__proto__logs__v1__log_record__descriptor, log_order),
    ORDER(opentelemetry__proto__metrics__v1__number_data_point__descriptor, ndp_order),
    ORDER(opentelemetry__proto__metrics__v1__histogram_data_point__descriptor, hdp_order),
    ORDER(opentelemetry__proto__metrics__v1__summary_data_point__descriptor, sdp_order),
    ORDER(opentelemetry__proto__metrics__v1__exemplar__descriptor, ex_order),
};

static const field_order *order_for(const ProtobufCMessageDescriptor *d) {
  for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++)
    if (orders[i].desc == d) return &orders[i];
  return NULL;
}

/* Ids are hex in OTLP-JSON; every OTLP bytes field with one of these names is an id. */
static int is_hex_id(const ProtobufCFieldDescriptor *f) {
  return f->type == PROTOBUF_C_TYPE_BYTES &&
         (!strcmp(f->name, "trace_id") || !strcmp(f->name, "span_id") ||
          !strcmp(f->name, "parent_span_id") || !strcmp(f->name, "profile_id"));
}


/* ==== encoder ==== */

static int put(sonde_buf *o, const char *s, size_t n) {
  return sonde_buf_append(o, s, n);
}

static int puts_(sonde_buf *o, const char *s) {
  return put(o, s, strlen(s));
}

static int put_key(sonde_buf *o, const char *name, int *first) {
  char tmp[128];
  size_t n = 0;
  int up = 0;
  if (!*first) tmp[n++] = ',';
  *first = 0;
  tmp[n++] = '"';
  for (const char *p = name; *p && n < sizeof tmp - 3; p++) {
    if (*p == '_') {
      up = 1;
      continue;
    }
    tmp[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
    up = 0;
  }
  tmp[n++] = '"';
  tmp[n++] = ':';
  return put(o, tmp, n);
}

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p, size_t avail) {
  unsigned c = p[0];
  size_t n;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, min = 0x10000;
  else
    return 0;
  if (avail < n) return 0;
  unsigned cp = c & (0x3f >> (n - 1));
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

/* A JSON string; invalid UTF-8 becomes U+FFFD so the output stays valid JSON. */
static int put_str(sonde_buf *o, const char *s, size_t len) {
  int rc;
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  if ((rc = put(o, "\"", 1))) return rc;
  while (p < end) {
    const unsigned char *run = p;
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
      p++;
    if (p > run && (rc = put(o, (const char *)run, (size_t)(p - run)))) return rc;
    if (p >= end) break;
    unsigned c = *p;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      rc = put(o, esc, 2);
      p++;
    } else if (c < 0x20) {
      const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
      if (named)
        rc = put(o, named, 2);
      else {
        snprintf(esc, sizeof esc, "\\u%04x", c);
        rc = put(o, esc, 6);
      }
      p++;
    } else {
      size_t n = utf8_len(p, (size_t)(end - p));
      if (n) {
        rc = put(o, (const char *)p, n);
        p += n;
      } else {
        rc = put(o, "\\ufffd", 6);
        p++;
      }
    }
    if (rc) return rc;
  }
  return put(o, "\"", 1);
}

/* Shortest round-trip digits, laid out like Go's strconv 'f' (or 'e' outside [1e-6, 1e21)),
 * which is what otelcol's JSON writer does. */
static int put_double(sonde_buf *o, double v) {
  if (isnan(v)) return puts_(o, "\"NaN\"");
  if (isinf(v)) return puts_(o, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  if (v == 0) return puts_(o, signbit(v) ? "-0" : "0");
  char e[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  /* e is [-]d[.ddd]e(+|-)XX */
  char digits[24];
  size_t nd = 0;
  const char *p = e;
  int neg = *p == '-';
  if (neg) p++;
  for (; *p != 'e'; p++)
    if (*p != '.') digits[nd++] = *p;
  int exp10 = atoi(p + 1);
  while (nd > 1 && digits[nd - 1] == '0')
    nd--;
  char out[400];
  size_t n = 0;
  if (neg) out[n++] = '-';
  double a = fabs(v);
  if (a < 1e-6 || a >= 1e21) {
    out[n++] = digits[0];
    if (nd > 1) {
      out[n++] = '.';
      memcpy(out + n, digits + 1, nd - 1);
      n += nd - 1;
    }
    n += (size_t)snprintf(out + n, sizeof out - n, "e%c%02d", exp10 < 0 ? '-' : '+',
                          exp10 < 0 ? -exp10 : exp10);
  } else if (exp10 >= 0) {
    for (int i = 0; i <= exp10; i++)
      out[n++] = (size_t)i < nd ? digits[i] : '0';
    if (nd > (size_t)exp10 + 1) {
      out[n++] = '.';
      for (size_t i = (size_t)exp10 + 1; i < nd; i++)
        out[n++] = digits[i];
    }
  } else {
    out[n++] = '0';
    out[n++] = '.';
    for (int i = -1; i > exp10; i--)
      out[n++] = '0';
    memcpy(out + n, digits, nd);
    n += nd;
  }
  return put(o, out, n);
}

static int put_bytes(sonde_buf *o, const ProtobufCBinaryData *bd, int hex) {
  static const char hx[] = "0123456789abcdef";
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t need = hex ? bd->len * 2 : (bd->len + 2) / 3 * 4;
  int rc = sonde_buf_reserve(o, need + 3);
  if (rc) return rc;
  uint8_t *w = o->data + o->len;
  *w++ = '"';
  const uint8_t *s = bd->data;
  if (hex) {
    for (size_t i = 0; i < bd->len; i++) {
      *w++ = (uint8_t)hx[s[i] >> 4];
      *w++ = (uint8_t)hx[s[i] & 15];
    }
  } else {
    size_t i = 0;
    for (; i + 3 <= bd->len; i += 3) {
      uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
      *w++ = (uint8_t)b64[x >> 18], *w++ = (uint8_t)b64[(x >> 12) & 63];
      *w++ = (uint8_t)b64[(x >> 6) & 63], *w++ = (uint8_t)b64[x & 63];
    }
    if (bd->len - i == 1) {
      uint32_t x = (uint32_t)s[i] << 16;
      *w++ = (uint8_t)b64[x >> 18], *w++ = (uint8_t)b64[(x >> 12) & 63], *w++ = '=', *w++ = '=';
    } else if (bd->len - i == 2) {
      uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
      *w++ = (uint8_t)b64[x >> 18], *w++ = (uint8_t)b64[(x >> 12) & 63];
      *w++ = (uint8_t)b64[(x >> 6) & 63], *w++ = '=';
    }
  }
  *w++ = '"';
  o->len = (size_t)(w - o->data);
  o->data[o->len] = 0;
  return 0;
}

static int enc_msg(sonde_buf *o, const ProtobufCMessage *m, unsigned depth);

static int enc_value(sonde_buf *o, const ProtobufCFieldDescriptor *f, const void *p,
                     unsigned depth) {
  char tmp[32];
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    return sonde_buf_printf(o, "%" PRId32, *(const int32_t *)p);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return sonde_buf_printf(o, "%" PRIu32, *(const uint32_t *)p);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    return put(o, tmp, (size_t)snprintf(tmp, sizeof tmp, "\"%" PRId64 "\"", *(const int64_t *)p));
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return put(o, tmp, (size_t)snprintf(tmp, sizeof tmp, "\"%" PRIu64 "\"", *(const uint64_t *)p));
  case PROTOBUF_C_TYPE_FLOAT:
    return put_double(o, *(const float *)p);
  case PROTOBUF_C_TYPE_DOUBLE:
    return put_double(o, *(const double *)p);
  case PROTOBUF_C_TYPE_BOOL:
    return puts_(o, *(const protobuf_c_boolean *)p ? "true" : "false");
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return put_str(o, s ? s : "", s ? strlen(s) : 0);
  }
  case PROTOBUF_C_TYPE_BYTES:
    return put_bytes(o, p, is_hex_id(f));
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
    return sub ? enc_msg(o, sub, depth + 1) : puts_(o, "{}");
  }
  }
  return SONDE_EINVAL;
}

static int is_default(const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    return *(const uint32_t *)p == 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return *(const uint64_t *)p == 0;
  case PROTOBUF_C_TYPE_FLOAT:
    return *(const float *)p == 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    return *(const double *)p == 0;
  case PROTOBUF_C_TYPE_BOOL:
    return !*(const protobuf_c_boolean *)p;
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return !s || !*s;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return ((const ProtobufCBinaryData *)p)->len == 0;
  case PROTOBUF_C_TYPE_MESSAGE:
    return 0; /* singular messages are always written, like otelcol */
  }
  return 1;
}

static int enc_field(sonde_buf *o, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                     int *first, unsigned depth) {
  const char *base = (const char *)m;
  const void *member = base + f->offset;
  int rc;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    if (!n) return 0;
    const char *arr = *(char *const *)member;
    size_t es = sonde__pb_elt_size(f->type);
    if (!arr) return 0;
    if ((rc = put_key(o, f->name, first)) || (rc = put(o, "[", 1))) return rc;
    for (size_t i = 0; i < n; i++) {
      if ((i && (rc = put(o, ",", 1))) || (rc = enc_value(o, f, arr + i * es, depth))) return rc;
    }
    return put(o, "]", 1);
  }
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) return 0;
  } else if (is_default(f, member)) {
    return 0;
  }
  if ((rc = put_key(o, f->name, first))) return rc;
  return enc_value(o, f, member, depth);
}

static int enc_msg(sonde_buf *o, const ProtobufCMessage *m, unsigned depth) {
  if (depth > ENC_MAX_DEPTH) return SONDE_ETOOBIG;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const field_order *ord = order_for(d);
  int first = 1, rc;
  if ((rc = put(o, "{", 1))) return rc;
  if (ord) {
    for (size_t i = 0; i < ord->n; i++) {
      const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, ord->ids[i]);
      if (f && (rc = enc_field(o, m, f, &first, depth))) return rc;
    }
  } else {
    for (unsigned i = 0; i < d->n_fields; i++)
      if ((rc = enc_field(o, m, &d->fields[i], &first, depth))) return rc;
  }
  return put(o, "}", 1);
}

int sonde_batch_to_json(const sonde_batch *b, sonde_buf *out) {
  const ProtobufCMessage *m = sonde_batch_msg(b);
  if (!m || !out) return SONDE_EINVAL;
  size_t mark = out->len;
  int rc = enc_msg(out, m, 1);
  if (rc && out->data) { /* leave out as it was */
    out->len = mark;
    out->data[mark] = 0;
  }
  return rc;
}

/* ==== parser ==== */

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
  int type;
  size_t n;         /* children of an array or object */
  const char *s;    /* string (decoded, NUL-terminated) or number text */
  size_t len;       /* of s */
  const char *key;  /* when a member of an object */
  size_t klen;      /* of key */
  size_t off;       /* input offset, for messages */
  struct jv *child; /* first child */
  struct jv *next;  /* next sibling */
} jv;

typedef struct parser {
  const char *p, *start, *end;
  sonde_batch *tmp; /* scratch arena for the tree */
  char *err;
  size_t errlen;
  int rc;
} parser;

__attribute__((format(printf, 3, 4))) static int perr(parser *ps, size_t off, const char *fmt,
                                                      ...) {
  if (ps->rc) return ps->rc;
  ps->rc = SONDE_EPROTO;
  if (ps->err && ps->errlen) {
    int n = snprintf(ps->err, ps->errlen, "offset %zu: ", off);
    if (n >= 0 && (size_t)n < ps->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return ps->rc;
}

static int nomem(parser *ps) {
  if (!ps->rc) {
    ps->rc = SONDE_ENOMEM;
    if (ps->err && ps->errlen) snprintf(ps->err, ps->errlen, "out of memory");
  }
  return ps->rc;
}

static void ws(parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static size_t off(const parser *ps) {
  return (size_t)(ps->p - ps->start);
}

static int hex4(const char *p, unsigned *v) {
  unsigned r = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    r <<= 4;
    if (c >= '0' && c <= '9')
      r |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      r |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      r |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *v = r;
  return 0;
}

static size_t put_utf8(char *w, unsigned cp) {
  if (cp < 0x80) {
    w[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    w[0] = (char)(0xc0 | cp >> 6), w[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    w[0] = (char)(0xe0 | cp >> 12), w[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    w[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  w[0] = (char)(0xf0 | cp >> 18), w[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  w[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), w[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* At the opening quote. Decoded string goes to the scratch arena (never longer than its
 * source). */
static int parse_str(parser *ps, const char **s, size_t *len) {
  size_t start = off(ps);
  const char *p = ++ps->p;
  const char *q = p;
  while (q < ps->end && *q != '"') /* find an upper bound for the decoded length */
    q += *q == '\\' && q + 1 < ps->end ? 2 : 1;
  if (q >= ps->end) return perr(ps, start, "unterminated string");
  /* Invalid UTF-8 becomes U+FFFD (as Go's decoder does): up to 3 bytes out per byte in. */
  char *w0 = sonde_batch_alloc(ps->tmp, 3 * (size_t)(q - p) + 1), *w = w0;
  if (!w0) return nomem(ps);
  while (p < ps->end && *p != '"') {
    unsigned char c = (unsigned char)*p;
    if (c < 0x20) return perr(ps, (size_t)(p - ps->start), "control character in string");
    if (c >= 0x80) {
      size_t n = utf8_len((const unsigned char *)p, (size_t)(ps->end - p));
      if (n) {
        memcpy(w, p, n);
        w += n, p += n;
      } else {
        memcpy(w, "\xef\xbf\xbd", 3);
        w += 3, p++;
      }
      continue;
    }
    if (c != '\\') {
      *w++ = (char)c;
      p++;
      continue;
    }
    if (p + 1 >= ps->end) return perr(ps, start, "unterminated string");
    char e = p[1];
    p += 2;
    switch (e) {
    case '"':
    case '\\':
    case '/':
      *w++ = e;
      break;
    case 'b':
      *w++ = '\b';
      break;
    case 'f':
      *w++ = '\f';
      break;
    case 'n':
      *w++ = '\n';
      break;
    case 'r':
      *w++ = '\r';
      break;
    case 't':
      *w++ = '\t';
      break;
    case 'u': {
      unsigned cp, lo;
      if (ps->end - p < 4 || hex4(p, &cp))
        return perr(ps, (size_t)(p - ps->start) - 2, "bad \\u escape");
      p += 4;
      if (cp >= 0xdc00 && cp <= 0xdfff)
        return perr(ps, (size_t)(p - ps->start) - 6, "lone low surrogate in \\u escape");
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (ps->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xdc00 ||
            lo > 0xdfff)
          return perr(ps, (size_t)(p - ps->start) - 6, "unpaired high surrogate in \\u escape");
        p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      }
      w += put_utf8(w, cp); /* 6 or 12 source bytes always cover the 1-4 written */
      break;
    }
    default:
      return perr(ps, (size_t)(p - ps->start) - 2, "bad escape '\\%c'", e);
    }
  }
  *w = 0;
  ps->p = p + 1;
  *s = w0;
  *len = (size_t)(w - w0);
  return 0;
}

static int parse_num(parser *ps, jv *v) {
  const char *p = ps->p, *e = ps->end;
  const char *s = p;
  if (p < e && *p == '-') p++;
  if (p < e && *p == '0')
    p++;
  else if (p < e && *p >= '1' && *p <= '9')
    while (p < e && *p >= '0' && *p <= '9')
      p++;
  else
    return perr(ps, off(ps), "invalid number");
  if (p < e && *p == '.') {
    p++;
    if (!(p < e && *p >= '0' && *p <= '9')) return perr(ps, off(ps), "invalid number");
    while (p < e && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (!(p < e && *p >= '0' && *p <= '9')) return perr(ps, off(ps), "invalid number");
    while (p < e && *p >= '0' && *p <= '9')
      p++;
  }
  v->type = J_NUM;
  v->s = s;
  v->len = (size_t)(p - s);
  ps->p = p;
  return 0;
}

static int lit(parser *ps, const char *word, int type, jv *v) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
    return perr(ps, off(ps), "unexpected character '%c'", *ps->p);
  ps->p += n;
  v->type = type;
  return 0;
}

static int parse_value(parser *ps, jv *v, unsigned depth) {
  ws(ps);
  v->off = off(ps);
  if (ps->p >= ps->end) return perr(ps, off(ps), "unexpected end of input");
  char c = *ps->p;
  if (c == '{' || c == '[') {
    if (depth >= JSON_MAX_DEPTH) return perr(ps, off(ps), "nesting deeper than %d", JSON_MAX_DEPTH);
    char close = c == '{' ? '}' : ']';
    v->type = c == '{' ? J_OBJ : J_ARR;
    ps->p++;
    ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      return 0;
    }
    jv **tail = &v->child;
    for (;;) {
      jv *ch = sonde_batch_alloc(ps->tmp, sizeof *ch);
      if (!ch) return nomem(ps);
      if (v->type == J_OBJ) {
        ws(ps);
        if (ps->p >= ps->end) return perr(ps, off(ps), "unexpected end of input in object");
        if (*ps->p != '"') return perr(ps, off(ps), "expected a string key");
        if (parse_str(ps, &ch->key, &ch->klen)) return ps->rc;
        ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return perr(ps, off(ps), "expected ':' after key");
        ps->p++;
      }
      if (parse_value(ps, ch, depth + 1)) return ps->rc;
      *tail = ch;
      tail = &ch->next;
      v->n++;
      ws(ps);
      if (ps->p >= ps->end)
        return perr(ps, off(ps), "unexpected end of input in %s",
                    v->type == J_OBJ ? "object" : "array");
      if (*ps->p == ',') {
        ps->p++;
        continue;
      }
      if (*ps->p == close) {
        ps->p++;
        return 0;
      }
      return perr(ps, off(ps), "expected ',' or '%c'", close);
    }
  }
  if (c == '"') {
    v->type = J_STR;
    return parse_str(ps, &v->s, &v->len);
  }
  if (c == 't') return lit(ps, "true", J_TRUE, v);
  if (c == 'f') return lit(ps, "false", J_FALSE, v);
  if (c == 'n') return lit(ps, "null", J_NULL, v);
  if (c == '-' || (c >= '0' && c <= '9')) return parse_num(ps, v);
  return perr(ps, off(ps), "unexpected character '%c'", c);
}

/* ==== tree -> message ==== */

typedef struct dec {
  sonde_batch *b;
  char path[200];
  size_t plen;
  char *err;
  size_t errlen;
  int rc;
} dec;

static const char *type_name(int t) {
  static const char *names[] = {"null", "false", "true", "number", "string", "array", "object"};
  return names[t];
}

__attribute__((format(printf, 3, 4))) static int derr(dec *d, const jv *v, const char *fmt, ...) {
  if (d->rc) return d->rc;
  d->rc = SONDE_EPROTO;
  if (d->err && d->errlen) {
    int n = snprintf(d->err, d->errlen, "%s (offset %zu): ", d->plen ? d->path : "(top)",
                     v ? v->off : 0);
    if (n >= 0 && (size_t)n < d->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(d->err + n, d->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return d->rc;
}

static int dnomem(dec *d) {
  if (!d->rc) {
    d->rc = SONDE_ENOMEM;
    if (d->err && d->errlen) snprintf(d->err, d->errlen, "out of memory");
  }
  return d->rc;
}

static size_t path_push(dec *d, const char *fmt, const char *s, size_t i) {
  size_t mark = d->plen;
  if (d->plen < sizeof d->path - 1) {
    int n = s ? snprintf(d->path + d->plen, sizeof d->path - d->plen, fmt, s)
              : snprintf(d->path + d->plen, sizeof d->path - d->plen, fmt, i);
    if (n > 0)
      d->plen = d->plen + (size_t)n < sizeof d->path ? d->plen + (size_t)n : sizeof d->path - 1;
  }
  return mark;
}

static void path_pop(dec *d, size_t mark) {
  d->plen = mark;
  d->path[mark] = 0;
}

/* Matches a JSON key against a field's lowerCamelCase or proto (snake_case) name. */
static int key_matches(const char *name, const char *key, size_t klen) {
  size_t n = strlen(name);
  if (n == klen && !memcmp(name, key, klen)) return 1;
  size_t i = 0;
  int up = 0;
  for (const char *p = name; *p; p++) {
    if (*p == '_') {
      up = 1;
      continue;
    }
    char c = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
    up = 0;
    if (i >= klen || key[i] != c) return 0;
    i++;
  }
  return i == klen;
}

/* Integer from a JSON number or string; exponent/fraction forms allowed when integral. */
static int get_int(dec *d, const jv *v, int is_signed, int64_t min, uint64_t max, uint64_t *out) {
  if (v->type != J_NUM && v->type != J_STR)
    return derr(d, v, "expected an integer, got %s", type_name(v->type));
  char buf[64];
  if (v->len == 0 || v->len >= sizeof buf) return derr(d, v, "invalid integer");
  memcpy(buf, v->s, v->len);
  buf[v->len] = 0;
  if (strpbrk(buf, ".eE")) {
    char *endp;
    errno = 0;
    double x = strtod(buf, &endp);
    if (*endp || errno || !isfinite(x) || x != floor(x))
      return derr(d, v, "not an integer: %s", buf);
    if (is_signed ? (x < (double)min || x >= 9223372036854775808.0 || x > (double)max)
                  : (x < 0 || x >= 18446744073709551616.0 || x > (double)max))
      return derr(d, v, "integer out of range: %s", buf);
    *out = is_signed ? (uint64_t)(int64_t)x : (uint64_t)x;
    return 0;
  }
  const char *s = buf;
  if (!(*s == '-' || (*s >= '0' && *s <= '9'))) return derr(d, v, "invalid integer: %s", buf);
  char *endp;
  errno = 0;
  if (is_signed) {
    long long x = strtoll(s, &endp, 10);
    if (*endp || errno || x < min || (x > 0 && (uint64_t)x > max))
      return derr(d, v, "integer out of range or invalid: %s", buf);
    *out = (uint64_t)x;
  } else {
    if (*s == '-') return derr(d, v, "negative value for an unsigned field: %s", buf);
    unsigned long long x = strtoull(s, &endp, 10);
    if (*endp || errno || x > max) return derr(d, v, "integer out of range or invalid: %s", buf);
    *out = x;
  }
  return 0;
}

static int get_double(dec *d, const jv *v, double *out) {
  if (v->type == J_STR) {
    if (!strcmp(v->s, "NaN")) {
      *out = NAN;
      return 0;
    }
    if (!strcmp(v->s, "Infinity")) {
      *out = INFINITY;
      return 0;
    }
    if (!strcmp(v->s, "-Infinity")) {
      *out = -INFINITY;
      return 0;
    }
  } else if (v->type != J_NUM) {
    return derr(d, v, "expected a number, got %s", type_name(v->type));
  }
  char buf[400];
  if (v->len == 0 || v->len >= sizeof buf) return derr(d, v, "invalid number");
  memcpy(buf, v->s, v->len);
  buf[v->len] = 0;
  char *endp;
  if (!(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
    return derr(d, v, "invalid number: %s", buf);
  *out = strtod(buf, &endp); /* overflow to +-inf is what other JSON decoders do, too */
  if (*endp) return derr(d, v, "invalid number: %s", buf);
  return 0;
}

static int unhex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int unb64(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

static int get_bytes(dec *d, const jv *v, int hex, ProtobufCBinaryData *out) {
  if (v->type != J_STR)
    return derr(d, v, "expected a %s string, got %s", hex ? "hex" : "base64", type_name(v->type));
  const char *s = v->s;
  size_t n = v->len;
  out->len = 0;
  out->data = NULL;
  if (!n) return 0;
  if (hex) {
    if (n % 2) return derr(d, v, "odd number of hex digits in id");
    uint8_t *w = sonde_batch_alloc(d->b, n / 2);
    if (!w) return dnomem(d);
    for (size_t i = 0; i < n; i += 2) {
      int hi = unhex(s[i]), lo = unhex(s[i + 1]);
      if (hi < 0 || lo < 0) return derr(d, v, "invalid hex digit in id");
      w[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    out->data = w;
    out->len = n / 2;
    return 0;
  }
  while (n && s[n - 1] == '=')
    n--;
  if (v->len - n > 2 || n % 4 == 1) return derr(d, v, "invalid base64 length");
  uint8_t *w = sonde_batch_alloc(d->b, n / 4 * 3 + 3);
  if (!w) return dnomem(d);
  size_t o = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  for (size_t i = 0; i < n; i++) {
    int x = unb64(s[i]);
    if (x < 0) return derr(d, v, "invalid base64 character");
    acc = acc << 6 | (uint32_t)x;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      w[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  out->data = w;
  out->len = o;
  return 0;
}

static int dec_msg(dec *d, const jv *v, const ProtobufCMessageDescriptor *md, ProtobufCMessage *m);

static int dec_value(dec *d, const ProtobufCFieldDescriptor *f, const jv *v, void *dst) {
  uint64_t u;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    if (get_int(d, v, 1, INT32_MIN, INT32_MAX, &u)) return d->rc;
    *(int32_t *)dst = (int32_t)(int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if (get_int(d, v, 0, 0, UINT32_MAX, &u)) return d->rc;
    *(uint32_t *)dst = (uint32_t)u;
    return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if (get_int(d, v, 1, INT64_MIN, INT64_MAX, &u)) return d->rc;
    *(int64_t *)dst = (int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if (get_int(d, v, 0, 0, UINT64_MAX, &u)) return d->rc;
    *(uint64_t *)dst = u;
    return 0;
  case PROTOBUF_C_TYPE_ENUM:
    if (v->type == J_STR) {
      const ProtobufCEnumValue *ev =
          protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, v->s);
      if (!ev) return derr(d, v, "unknown enum value name \"%s\"", v->s);
      *(int32_t *)dst = ev->value;
      return 0;
    }
    if (get_int(d, v, 1, INT32_MIN, INT32_MAX, &u)) /* proto3 enums are open */
      return d->rc;
    *(int32_t *)dst = (int32_t)(int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_FLOAT: {
    double x;
    if (get_double(d, v, &x)) return d->rc;
    *(float *)dst = (float)x;
    return 0;
  }
  case PROTOBUF_C_TYPE_DOUBLE:
    return get_double(d, v, dst);
  case PROTOBUF_C_TYPE_BOOL:
    if (v->type != J_TRUE && v->type != J_FALSE)
      return derr(d, v, "expected true or false, got %s", type_name(v->type));
    *(protobuf_c_boolean *)dst = v->type == J_TRUE;
    return 0;
  case PROTOBUF_C_TYPE_STRING: {
    if (v->type != J_STR) return derr(d, v, "expected a string, got %s", type_name(v->type));
    if (memchr(v->s, 0, v->len)) return derr(d, v, "string contains a NUL character");
    char *s = sonde_batch_memdup(d->b, v->s, v->len + 1);
    if (!s) return dnomem(d);
    *(char **)dst = s;
    return 0;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return get_bytes(d, v, is_hex_id(f), dst);
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessageDescriptor *sd = f->descriptor;
    ProtobufCMessage *sub = sonde__batch_new_msg(d->b, sd);
    if (!sub) return dnomem(d);
    if (dec_msg(d, v, sd, sub)) return d->rc;
    *(ProtobufCMessage **)dst = sub;
    return 0;
  }
  }
  return derr(d, v, "unsupported field type");
}

static int dec_msg(dec *d, const jv *v, const ProtobufCMessageDescriptor *md, ProtobufCMessage *m) {
  if (v->type != J_OBJ) return derr(d, v, "expected an object, got %s", type_name(v->type));
  char *base = (char *)m;
  for (const jv *mem = v->child; mem; mem = mem->next) {
    const ProtobufCFieldDescriptor *f = NULL;
    for (unsigned i = 0; i < md->n_fields && !f; i++)
      if (key_matches(md->fields[i].name, mem->key, mem->klen)) f = &md->fields[i];
    if (!f || mem->type == J_NULL) /* unknown keys are ignored (OTLP); null means default */
      continue;
    size_t mark = path_push(d, d->plen ? ".%s" : "%s", mem->key, 0);
    void *dst = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      if (mem->type != J_ARR)
        return derr(d, mem, "expected an array, got %s", type_name(mem->type));
      size_t es = sonde__pb_elt_size(f->type);
      char *arr = NULL;
      if (mem->n) {
        if (mem->n > SIZE_MAX / es) return dnomem(d);
        arr = sonde_batch_alloc(d->b, mem->n * es);
        if (!arr) return dnomem(d);
      }
      size_t i = 0;
      for (const jv *el = mem->child; el; el = el->next, i++) {
        size_t m2 = path_push(d, "[%zu]", NULL, i);
        if (el->type == J_NULL) return derr(d, el, "null inside an array");
        if (dec_value(d, f, el, arr + i * es)) return d->rc;
        path_pop(d, m2);
      }
      *(void **)dst = arr;
      *(size_t *)(base + f->quantifier_offset) = mem->n;
    } else {
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *c = (uint32_t *)(base + f->quantifier_offset);
        if (*c && *c != f->id) return derr(d, mem, "more than one member of a oneof is set");
        if (dec_value(d, f, mem, dst)) return d->rc;
        *c = f->id;
      } else if (dec_value(d, f, mem, dst)) {
        return d->rc;
      }
    }
    path_pop(d, mark);
  }
  return 0;
}

int sonde_batch_from_json(sonde_signal sig, const char *json, size_t len, sonde_batch **out,
                          char *err, size_t errlen) {
  if (err && errlen) err[0] = 0;
  if (!out) return SONDE_EINVAL;
  *out = NULL;
  const ProtobufCMessageDescriptor *md = sonde__signal_descriptor(sig);
  if (!md || (!json && len)) {
    if (err && errlen) snprintf(err, errlen, "invalid argument");
    return SONDE_EINVAL;
  }
  parser ps = {.p = json, .start = json, .end = json + len, .err = err, .errlen = errlen};
  ps.tmp = sonde__batch_empty(sig);
  if (!ps.tmp) return nomem(&ps);
  jv root = {0};
  int rc = parse_value(&ps, &root, 0);
  if (!rc) {
    ws(&ps);
    if (ps.p < ps.end) rc = perr(&ps, off(&ps), "trailing characters after the JSON value");
  }
  if (rc) {
    sonde__batch_destroy_unused(ps.tmp);
    return rc;
  }
  dec d = {.err = err, .errlen = errlen};
  d.b = sonde__batch_empty(sig);
  ProtobufCMessage *m = d.b ? sonde__batch_new_msg(d.b, md) : NULL;
  if (!m)
    rc = dnomem(&d);
  else
    rc = dec_msg(&d, &root, md, m);
  sonde__batch_destroy_unused(ps.tmp);
  if (rc) {
    sonde__batch_destroy_unused(d.b);
    return rc;
  }
  sonde__batch_set_msg(d.b, m);
  *out = d.b;
  return 0;
}

/* Deep merge of trees, --set assignments, and YAML output. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

/* src is taken. Maps merge key by key; anything else replaces. */
static int merge_node(sonde__cfg_node **dst, sonde__cfg_node *src) {
  sonde__cfg_node *d = *dst;
  if (!d || d->kind != SONDE__CFG_MAP || src->kind != SONDE__CFG_MAP) {
    sonde__cfg_node_free(d);
    *dst = src;
    return 0;
  }
  int rc = 0;
  for (size_t i = 0; i < src->n && !rc; i++) {
    long j = sonde__cfg_index(d, src->keys[i]);
    if (j >= 0) {
      sonde__cfg_node *kid = src->kids[i];
      src->kids[i] = NULL;
      if (kid->kind != SONDE__CFG_MAP || d->kids[j]->kind != SONDE__CFG_MAP) {
        d->key_lines[j] = src->key_lines[i]; /* the key now stands where its value came from */
        d->key_cols[j] = src->key_cols[i];
      }
      rc = merge_node(&d->kids[j], kid);
    } else if (!(rc = sonde__cfg_map_add(d, src->keys[i], src->key_lines[i], src->key_cols[i],
                                         src->kids[i]))) {
      src->keys[i] = NULL;
      src->kids[i] = NULL;
    }
  }
  sonde__cfg_node_free(src); /* what was not moved */
  return rc;
}

int sonde__cfg_merge(sonde__cfg_node **dst, sonde__cfg_node *src, char *err, size_t errlen) {
  if (!src) return 0;
  if (!*dst) {
    *dst = src;
    return 0;
  }
  struct sonde__cfg_files *df = (*dst)->files, *sf = src->files;
  (*dst)->files = src->files = NULL;
  int rc = merge_node(dst, src);
  sonde__cfg_files_splice(&df, sf);
  (*dst)->files = df;
  if (rc) return sonde__cfg_err(rc, err, errlen, "merging configuration: out of memory");
  return 0;
}

int sonde__cfg_set(sonde__cfg_node **root, const char *a, char *err, size_t errlen) {
  const char *eq = strchr(a, '=');
  if (!eq || eq == a)
    return sonde__cfg_err(SONDE_ECONFIG, err, errlen, "--set:1:1: expected key=value, got \"%s\"",
                          a);
  size_t klen = (size_t)(eq - a);
  bool colons = memmem(a, klen, "::", 2) != NULL;
  size_t seplen = colons ? 2 : 1;

  /* Key segments, validated before anything is built. */
  size_t seg_start[SONDE__CFG_MAX_DEPTH / 2], seg_end[SONDE__CFG_MAX_DEPTH / 2], nseg = 0;
  for (size_t i = 0;;) {
    const char *end = colons ? memmem(a + i, klen - i, "::", 2) : memchr(a + i, '.', klen - i);
    size_t e = end ? (size_t)(end - a) : klen;
    if (e == i)
      return sonde__cfg_err(SONDE_ECONFIG, err, errlen,
                            "--set:1:%zu: empty key segment in \"%.*s\"", i + 1, (int)klen, a);
    if (nseg == SONDE__CFG_MAX_DEPTH / 2)
      return sonde__cfg_err(SONDE_ECONFIG, err, errlen, "--set:1:1: key has more than %d segments",
                            SONDE__CFG_MAX_DEPTH / 2);
    seg_start[nseg] = i;
    seg_end[nseg++] = e;
    if (!end) break;
    i = e + seplen;
  }

  sonde__cfg_node *node;
  const char *val = eq + 1;
  int rc = sonde__cfg_parse_ex("--set", val, strlen(val), false, (unsigned)(val - a), &node, err,
                               errlen);
  if (rc) return rc;
  struct sonde__cfg_files *files = node->files;
  node->files = NULL;
  const char *file = node->file;

  /* Wrap the value in one map per segment, innermost first. */
  for (size_t s = nseg; s-- > 0;) {
    unsigned col = (unsigned)seg_start[s] + 1;
    sonde__cfg_node *m = sonde__cfg_node_new(SONDE__CFG_MAP, file, 1, col);
    char *key = strndup(a + seg_start[s], seg_end[s] - seg_start[s]);
    if (!m || !key || sonde__cfg_map_add(m, key, 1, col, node)) {
      free(key);
      free(m);
      sonde__cfg_node_free(node);
      sonde__cfg_files_free(files);
      return sonde__cfg_err(SONDE_ENOMEM, err, errlen, "--set: out of memory");
    }
    node = m;
  }
  node->files = files;
  return sonde__cfg_merge(root, node, err, errlen);
}

/* ---- emit ----------------------------------------------------------------------------------- */

static bool null_word(const char *s) {
  return !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Conservative: anything unusual is quoted rather than reasoned about. */
static bool plain_ok(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || null_word(s) || s[0] == ' ' || s[len - 1] == ' ' || s[len - 1] == ':')
    return false;
  unsigned char c0 = (unsigned char)s[0];
  if (!(isalnum(c0) || strchr("_./($+^<=", c0) ||
        (c0 == '-' && len > 1 && (isalnum((unsigned char)s[1]) || s[1] == '.'))))
    return false;
  if (!strncmp(s, "...", 3)) return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isalnum(c) || strchr("_-./+=@()<>;^$%~, ", c)) continue;
    if (c == ':' && s[i + 1] != ' ') continue;
    return false;
  }
  return true;
}

static int utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
  unsigned char c = s[0];
  int n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
  if (!n || (size_t)n > len || c > 0xf4) return 0;
  uint32_t v = c & (0x7f >> n);
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    v = v << 6 | (s[i] & 0x3f);
  }
  static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min[n] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

int sonde__cfg_emit_scalar(sonde_buf *o, const char *s, bool force_quote) {
  if (!force_quote && plain_ok(s)) return sonde_buf_append(o, s, strlen(s));
  int rc = sonde_buf_append(o, "\"", 1);
  const unsigned char *p = (const unsigned char *)s;
  size_t len = strlen(s);
  for (size_t i = 0; i < len && !rc;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      const char *e = NULL;
      char hex[8];
      switch (c) {
      case '"':
        e = "\\\"";
        break;
      case '\\':
        e = "\\\\";
        break;
      case '\n':
        e = "\\n";
        break;
      case '\t':
        e = "\\t";
        break;
      case '\r':
        e = "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          snprintf(hex, sizeof hex, "\\x%02x", c);
          e = hex;
        }
      }
      rc = e ? sonde_buf_append(o, e, strlen(e)) : sonde_buf_append(o, &p[i], 1);
      i++;
      continue;
    }
    uint32_t cp;
    int n = utf8_decode(p + i, len - i, &cp);
    char esc[12];
    if (!n) {
      /* Not UTF-8 (only possible from the environment): YAML cannot carry the byte as is. */
      snprintf(esc, sizeof esc, "\\x%02x", c);
      rc = sonde_buf_append(o, esc, strlen(esc));
      i++;
      continue;
    }
    /* Line breaks YAML would fold and characters libyaml refuses to read must be escaped. */
    if (cp == 0x85)
      rc = sonde_buf_append(o, "\\N", 2);
    else if (cp == 0x2028)
      rc = sonde_buf_append(o, "\\L", 2);
    else if (cp == 0x2029)
      rc = sonde_buf_append(o, "\\P", 2);
    else if (cp < 0xa0 || cp == 0xfeff || cp == 0xfffe || cp == 0xffff) {
      snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
      rc = sonde_buf_append(o, esc, strlen(esc));
    } else
      rc = sonde_buf_append(o, p + i, (size_t)n);
    i += (size_t)n;
  }
  return rc ? rc : sonde_buf_append(o, "\"", 1);
}

static int indent(sonde_buf *o, int n) {
  static const char sp[] = "                                ";
  int rc = 0;
  while (n > 0 && !rc) {
    int k = n > 32 ? 32 : n;
    rc = sonde_buf_append(o, sp, (size_t)k);
    n -= k;
  }
  return rc;
}

static int emit_map(sonde_buf *o, const sonde__cfg_node *n, int ind, bool first_inline);
static int emit_seq(sonde_buf *o, const sonde__cfg_node *n, int ind);

/* What follows "key:" or "-": the rest of the line and any nested block. */
static int emit_after(sonde_buf *o, const sonde__cfg_node *n, int ind) {
  int rc;
  switch (n->kind) {
  case SONDE__CFG_NULL:
    return sonde_buf_append(o, "\n", 1);
  case SONDE__CFG_SCALAR:
    if ((rc = sonde_buf_append(o, " ", 1)) ||
        (rc = sonde__cfg_emit_scalar(o, n->scalar, n->quoted)))
      return rc;
    return sonde_buf_append(o, "\n", 1);
  case SONDE__CFG_MAP:
    if (!n->n) return sonde_buf_append(o, " {}\n", 4);
    if ((rc = sonde_buf_append(o, "\n", 1))) return rc;
    return emit_map(o, n, ind + 2, false);
  case SONDE__CFG_SEQ:
    if (!n->n) return sonde_buf_append(o, " []\n", 4);
    if ((rc = sonde_buf_append(o, "\n", 1))) return rc;
    return emit_seq(o, n, ind + 2);
  }
  return SONDE_EINVAL;
}

/* libyaml reads a key without "?" only when it is at most 1024 characters long. */
#define SIMPLE_KEY_MAX 1000

int sonde__cfg_emit_key(sonde_buf *o, const char *key, int ind) {
  size_t at = o->len;
  int rc = sonde__cfg_emit_scalar(o, key, false);
  if (rc) return rc;
  if (o->len - at > SIMPLE_KEY_MAX) {
    /* rewrite as an explicit key: "? key" NL ind ":" */
    if ((rc = sonde_buf_reserve(o, 3))) return rc;
    memmove(o->data + at + 2, o->data + at, o->len - at);
    memcpy(o->data + at, "? ", 2);
    o->len += 2;
    if ((rc = sonde_buf_append(o, "\n", 1)) || (rc = indent(o, ind))) return rc;
  }
  return sonde_buf_append(o, ":", 1);
}

static int emit_map(sonde_buf *o, const sonde__cfg_node *n, int ind, bool first_inline) {
  int rc = 0;
  for (size_t i = 0; i < n->n && !rc; i++) {
    if ((i > 0 || !first_inline) && (rc = indent(o, ind))) break;
    if (!(rc = sonde__cfg_emit_key(o, n->keys[i], ind))) rc = emit_after(o, n->kids[i], ind);
  }
  return rc;
}

static int emit_seq(sonde_buf *o, const sonde__cfg_node *n, int ind) {
  int rc = 0;
  for (size_t i = 0; i < n->n && !rc; i++) {
    const sonde__cfg_node *k = n->kids[i];
    if ((rc = indent(o, ind)) || (rc = sonde_buf_append(o, "-", 1))) break;
    if (k->kind == SONDE__CFG_MAP && k->n) {
      if (!(rc = sonde_buf_append(o, " ", 1))) rc = emit_map(o, k, ind + 2, true);
    } else {
      rc = emit_after(o, k, ind);
    }
  }
  return rc;
}

int sonde__cfg_emit(const sonde__cfg_node *root, sonde_buf *out) {
  if (!root || root->kind == SONDE__CFG_NULL) return sonde_buf_append(out, "~\n", 2);
  switch (root->kind) {
  case SONDE__CFG_MAP:
    return root->n ? emit_map(out, root, 0, false) : sonde_buf_append(out, "{}\n", 3);
  case SONDE__CFG_SEQ:
    return root->n ? emit_seq(out, root, 0) : sonde_buf_append(out, "[]\n", 3);
  default: {
    int rc = sonde__cfg_emit_scalar(out, root->scalar, root->quoted);
    return rc ? rc : sonde_buf_append(out, "\n", 1);
  }
  }
}

/* ${env:VAR}, ${VAR}, ${env:VAR:-default} and $$, as otelcol's confmap expands them.
 * Results are not expanded again, so a variable holding "${X}" stays literal (and cannot loop).
 * Other providers (file:, http:, yaml:) are not supported and refused by name. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

typedef struct where {
  const char *file;
  unsigned line, col;
  bool exact; /* single-line text: col + offset is the column of a character */
} where;

static int xerr(const where *w, size_t off, char *err, size_t errlen, const char *msg,
                const char *a, size_t alen) {
  unsigned col = w->exact ? w->col + (unsigned)off : w->col;
  return sonde__cfg_err(SONDE_ECONFIG, err, errlen, "%s:%u:%u: %s \"%.*s\"", w->file, w->line, col,
                        msg, (int)alen, a);
}

static bool valid_name(const char *s, size_t len) {
  if (len == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
  for (size_t i = 1; i < len; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return false;
  return true;
}

static int put(sonde_buf *b, const char *p, size_t len) {
  return sonde_buf_append(b, p, len);
}

/* Expands s into a new string in *out (NULL when s has nothing to expand). */
static int expand_text(const char *s, const where *w, char **out, char *err, size_t errlen) {
  *out = NULL;
  if (!strchr(s, '$')) return 0;
  sonde_buf b = {0};
  int rc = 0;
  size_t i = 0, len = strlen(s);
  while (i < len && !rc) {
    const char *d = strchr(s + i, '$');
    if (!d) {
      rc = put(&b, s + i, len - i);
      break;
    }
    size_t at = (size_t)(d - s);
    if ((rc = put(&b, s + i, at - i))) break;
    if (s[at + 1] == '$') { /* $$ -> $ */
      rc = put(&b, "$", 1);
      i = at + 2;
      continue;
    }
    if (s[at + 1] != '{') { /* a lone $ is literal */
      rc = put(&b, "$", 1);
      i = at + 1;
      continue;
    }
    const char *body = s + at + 2;
    const char *close = strchr(body, '}');
    if (!close) {
      rc = xerr(w, at, err, errlen, "unterminated", s + at, len - at);
      break;
    }
    size_t blen = (size_t)(close - body);
    const char *name = body;
    size_t nlen = blen;
    if (nlen >= 4 && !memcmp(name, "env:", 4)) {
      name += 4;
      nlen -= 4;
    }
    const char *def = NULL;
    size_t dlen = 0;
    const char *sep = memchr(name, ':', nlen);
    if (sep && sep + 1 < name + nlen && sep[1] == '-') {
      def = sep + 2;
      dlen = (size_t)(name + nlen - def);
      nlen = (size_t)(sep - name);
    }
    if (!valid_name(name, nlen)) {
      const char *colon = memchr(body, ':', blen);
      if (colon && name == body && colon > body && valid_name(body, (size_t)(colon - body)))
        rc = xerr(w, at, err, errlen, "unsupported config provider in", s + at, blen + 3);
      else
        rc = xerr(w, at, err, errlen, "invalid environment variable name in", s + at, blen + 3);
      break;
    }
    char nbuf[256];
    if (nlen >= sizeof nbuf) {
      rc = xerr(w, at, err, errlen, "environment variable name too long in", s + at, blen + 3);
      break;
    }
    memcpy(nbuf, name, nlen);
    nbuf[nlen] = 0;
    const char *val = getenv(nbuf);
    if (val)
      rc = put(&b, val, strlen(val));
    else if (def)
      rc = put(&b, def, dlen); /* otelcol: the default applies when unset, not when empty */
    i = (size_t)(close - s) + 1;
  }
  if (!rc && !b.data) rc = put(&b, "", 0);
  if (rc) {
    sonde_buf_free(&b);
    if (rc == SONDE_ENOMEM) return sonde__cfg_err(rc, err, errlen, "%s: out of memory", w->file);
    return rc;
  }
  *out = (char *)b.data;
  return 0;
}

static where at_scalar(const char *file, unsigned line, unsigned col, const char *text,
                       bool quoted) {
  return (where){.file = file,
                 .line = line,
                 .col = col + (quoted ? 1 : 0),
                 .exact = strchr(text, '\n') == NULL};
}

static int expand_node(sonde__cfg_node *n, char *err, size_t errlen) {
  int rc;
  char *x;
  if (n->kind == SONDE__CFG_SCALAR) {
    where w = at_scalar(n->file, n->line, n->col, n->scalar, n->quoted);
    if ((rc = expand_text(n->scalar, &w, &x, err, errlen))) return rc;
    if (x) {
      free(n->scalar);
      n->scalar = x;
    }
    return 0;
  }
  bool keys_changed = false;
  for (size_t i = 0; i < n->n; i++) {
    if (n->kind == SONDE__CFG_MAP) {
      /* A key's quoting is not kept, so its column may be one off for a quoted key. */
      where w = at_scalar(n->kids[i]->file, n->key_lines[i], n->key_cols[i], n->keys[i], false);
      if ((rc = expand_text(n->keys[i], &w, &x, err, errlen))) return rc;
      if (x) {
        free(n->keys[i]);
        n->keys[i] = x;
        keys_changed = true;
      }
    }
    if ((rc = expand_node(n->kids[i], err, errlen))) return rc;
  }
  if (keys_changed)
    for (size_t i = 1; i < n->n; i++)
      for (size_t j = 0; j < i; j++)
        if (!strcmp(n->keys[i], n->keys[j]))
          return sonde__cfg_err(SONDE_ECONFIG, err, errlen,
                                "%s:%u:%u: duplicate key \"%s\" after expansion (first at "
                                "%s:%u:%u)",
                                n->kids[i]->file, n->key_lines[i], n->key_cols[i], n->keys[i],
                                n->kids[j]->file, n->key_lines[j], n->key_cols[j]);
  return 0;
}

int sonde__cfg_expand(sonde__cfg_node *root, char *err, size_t errlen) {
  return root ? expand_node(root, err, errlen) : 0;
}

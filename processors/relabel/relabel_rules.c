/* Prometheus relabel_configs (model/relabel/relabel.go) in C over PCRE2.
 *
 * The label set reproduces Prometheus's labels.Builder, including the order in which Range visits
 * labels (it matters when labelmap maps two labels onto one name: the last visited wins): first the
 * labels the set started with that no rule has set or deleted, by name, then the labels rules set,
 * in the order they were first set.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "relabel_rules.h"

#include <pcre2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const rl_action_names[] = {
    "replace",  "keep",      "drop",      "keepequal", "dropequal", "hashmod",
    "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase", NULL,
};

/* ---- label set ------------------------------------------------------------------------------ */

static uint64_t next_seq(rl_labels *ls) {
  uint64_t m = 0;
  for (size_t i = 0; i < ls->n; i++)
    if (ls->v[i].seq > m) m = ls->v[i].seq;
  return m + 1;
}

/* Index of name, or where it would be inserted (with *found false). */
static size_t find(const rl_labels *ls, const char *name, bool *found) {
  size_t lo = 0, hi = ls->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(ls->v[mid].name, name);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

const char *rl_labels_get(const rl_labels *ls, const char *name) {
  bool found;
  size_t i = find(ls, name, &found);
  return found ? ls->v[i].value : "";
}

void rl_labels_del(rl_labels *ls, const char *name) {
  bool found;
  size_t i = find(ls, name, &found);
  if (!found) return;
  rl_label *s = ls->v;
  free(s[i].name);
  free(s[i].value);
  memmove(&s[i], &s[i + 1], (ls->n - i - 1) * sizeof(*s));
  ls->n--;
}

/* rule: 0 while the starting set is built, 1 for a rule's Set (which moves the label into Range's
 * added order). */
static int labels_put(rl_labels *ls, const char *name, const char *value, int rule) {
  if (!*value) {
    rl_labels_del(ls, name);
    return 0;
  }
  bool found;
  size_t i = find(ls, name, &found);
  char *v = strdup(value);
  if (!v) return SONDE_ENOMEM;
  if (found) {
    rl_label *s = &ls->v[i];
    free(s->value);
    s->value = v;
    if (rule && s->seq == 0) s->seq = next_seq(ls);
    return 0;
  }
  char *n = strdup(name);
  if (!n) {
    free(v);
    return SONDE_ENOMEM;
  }
  if (ls->n == ls->cap) {
    size_t cap = ls->cap ? ls->cap * 2 : 16;
    rl_label *nv = realloc(ls->v, cap * sizeof(rl_label));
    if (!nv) {
      free(n);
      free(v);
      return SONDE_ENOMEM;
    }
    ls->v = nv;
    ls->cap = cap;
  }
  uint64_t seq = rule ? next_seq(ls) : 0;
  rl_label *s = ls->v;
  memmove(&s[i + 1], &s[i], (ls->n - i) * sizeof(*s));
  s[i] = (rl_label){n, v, seq};
  ls->n++;
  return 0;
}

int rl_labels_set(rl_labels *ls, const char *name, const char *value) {
  return labels_put(ls, name, value, 0);
}

void rl_labels_free(rl_labels *ls) {
  for (size_t i = 0; i < ls->n; i++) {
    free(ls->v[i].name);
    free(ls->v[i].value);
  }
  free(ls->v);
  *ls = (rl_labels){0};
}

void rl_drop_internal(rl_labels *ls) {
  size_t w = 0;
  rl_label *s = ls->v;
  for (size_t i = 0; i < ls->n; i++) {
    if (s[i].name[0] == '_' && s[i].name[1] == '_') {
      free(s[i].name);
      free(s[i].value);
    } else {
      s[w++] = s[i];
    }
  }
  ls->n = w;
}

static int by_range_order(const void *a, const void *b) {
  const rl_label *x = a, *y = b;
  if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* A deep copy of the set in Range order, for the actions that iterate while they change it. */
static int snapshot(const rl_labels *ls, rl_label **out) {
  rl_label *c = malloc((ls->n ? ls->n : 1) * sizeof(*c));
  if (!c) return SONDE_ENOMEM;
  for (size_t i = 0; i < ls->n; i++) {
    c[i] = ls->v[i];
    c[i].name = strdup(c[i].name);
    c[i].value = strdup(c[i].value);
    if (!c[i].name || !c[i].value) {
      for (size_t k = 0; k <= i; k++) {
        free(c[k].name);
        free(c[k].value);
      }
      free(c);
      return SONDE_ENOMEM;
    }
  }
  qsort(c, ls->n, sizeof(*c), by_range_order);
  *out = c;
  return 0;
}

static void snapshot_free(rl_label *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(c[i].name);
    free(c[i].value);
  }
  free(c);
}

/* ---- rules ---------------------------------------------------------------------------------- */

typedef struct rl_rule {
  const rl_rule_cfg *cfg;
  pcre2_code *re;
  pcre2_match_data *md;
} rl_rule;

struct rl_rules {
  rl_rule *v;
  size_t n;
  rl_names names;
  bool default_regex_ok; /* (.*) compiled: the fast path of replace applies to default regexes */
  pcre2_match_context *mctx;
};

bool rl_legacy_name(const char *s) {
  if (!*s) return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(p > s && c >= '0' && c <= '9')) return false;
  }
  return true;
}

/* Valid UTF-8, no overlong forms or surrogates (Go's utf8.ValidString). */
static bool valid_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p;
    int n;
    unsigned min;
    if (c < 0x80) {
      p++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, min = 0x10000, c &= 0x07;
    } else {
      return false;
    }
    for (int k = 1; k <= n; k++) {
      if ((p[k] & 0xc0) != 0x80) return false;
      c = (c << 6) | (p[k] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return false;
    p += n + 1;
  }
  return true;
}

static bool name_valid(rl_names names, const char *s) {
  return names == RL_NAMES_UTF8 ? (*s && valid_utf8(s)) : rl_legacy_name(s);
}

static bool is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Prometheus's relabelTarget, ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$: word characters and
 * $name / ${name} references, not starting with a digit. */
static bool template_name_ok(const char *s) {
  if (!*s || (*s >= '0' && *s <= '9')) return false;
  for (const char *p = s; *p;) {
    if (*p == '$') {
      p++;
      if (*p == '{') {
        const char *q = ++p;
        while (is_word(*p))
          p++;
        if (p == q || *p != '}') return false;
        p++;
      } else {
        const char *q = p;
        while (is_word(*p))
          p++;
        if (p == q) return false;
      }
    } else if (is_word(*p)) {
      p++;
    } else {
      return false;
    }
  }
  return true;
}

static int cfg_err(char *err, size_t errlen, size_t i, const char *fmt, const char *a,
                   const char *b) {
  int k = snprintf(err, errlen, "relabel_configs[%zu]: ", i);
  if (k > 0 && (size_t)k < errlen) snprintf(err + k, errlen - (size_t)k, fmt, a, b);
  return SONDE_ECONFIG;
}

static bool eq(const char *s, const char *def) {
  return s ? strcmp(s, def) == 0 : true; /* unset reads as the default */
}

static int validate_one(const rl_rule_cfg *c, size_t i, rl_names names, char *err, size_t errlen) {
  rl_action a = (rl_action)c->action;
  const char *an = rl_action_names[a];
  const char *t = c->target_label ? c->target_label : "";
  if (a == RL_HASHMOD && c->modulus <= 0)
    return cfg_err(err, errlen, i,
                   "relabel configuration for hashmod requires non-zero modulus%s%s", "", "");
  if ((a == RL_REPLACE || a == RL_HASHMOD || a == RL_LOWERCASE || a == RL_UPPERCASE ||
       a == RL_KEEPEQUAL || a == RL_DROPEQUAL) &&
      !*t)
    return cfg_err(err, errlen, i,
                   "relabel configuration for %s action requires 'target_label' value%s", an, "");
  if (a == RL_REPLACE && !strchr(t, '$') && !name_valid(names, t))
    return cfg_err(err, errlen, i, "\"%s\" is invalid 'target_label' for %s action", t, an);
  if (a == RL_REPLACE && strchr(t, '$') && names == RL_NAMES_LEGACY && !template_name_ok(t))
    return cfg_err(err, errlen, i, "\"%s\" is invalid 'target_label' for %s action", t, an);
  if ((a == RL_LOWERCASE || a == RL_UPPERCASE || a == RL_KEEPEQUAL || a == RL_DROPEQUAL ||
       a == RL_HASHMOD) &&
      !name_valid(names, t))
    return cfg_err(err, errlen, i, "\"%s\" is invalid 'target_label' for %s action", t, an);
  if ((a == RL_LOWERCASE || a == RL_UPPERCASE || a == RL_KEEPEQUAL || a == RL_DROPEQUAL) &&
      !eq(c->replacement, RL_DEFAULT_REPLACEMENT))
    return cfg_err(err, errlen, i, "'replacement' can not be set for %s action%s", an, "");
  if (a == RL_LABELMAP && names == RL_NAMES_LEGACY &&
      !template_name_ok(c->replacement ? c->replacement : RL_DEFAULT_REPLACEMENT))
    return cfg_err(err, errlen, i, "\"%s\" is invalid 'replacement' for %s action", c->replacement,
                   an);
  if ((a == RL_KEEPEQUAL || a == RL_DROPEQUAL) &&
      (!eq(c->regex, RL_DEFAULT_REGEX) || c->modulus != 0 ||
       !eq(c->separator, RL_DEFAULT_SEPARATOR) || !eq(c->replacement, RL_DEFAULT_REPLACEMENT)))
    return cfg_err(err, errlen, i,
                   "%s action requires only 'source_labels' and `target_label`, and no other "
                   "fields%s",
                   an, "");
  if ((a == RL_LABELDROP || a == RL_LABELKEEP) &&
      (c->source_labels.n || *t || c->modulus != 0 || !eq(c->separator, RL_DEFAULT_SEPARATOR) ||
       !eq(c->replacement, RL_DEFAULT_REPLACEMENT)))
    return cfg_err(err, errlen, i, "%s action requires only 'regex', and no other fields%s", an,
                   "");
  return 0;
}

void rl_free(rl_rules *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) {
    pcre2_match_data_free(r->v[i].md);
    pcre2_code_free(r->v[i].re);
  }
  pcre2_match_context_free(r->mctx);
  free(r->v);
  free(r);
}

int rl_compile(const rl_rule_cfg *cfgs, size_t n, rl_names names, rl_rules **out, char *err,
               size_t errlen) {
  rl_rules *r = calloc(1, sizeof(*r));
  if (!r || !(r->v = calloc(n ? n : 1, sizeof(*r->v)))) {
    free(r);
    return SONDE_ENOMEM;
  }
  r->names = names;
  int rc = SONDE_ENOMEM;
  /* Bounds backtracking (RE2 cannot backtrack at all); a subject that hits them does not match. */
  if (!(r->mctx = pcre2_match_context_create(NULL))) goto fail;
  pcre2_set_match_limit(r->mctx, 1000000);
  pcre2_set_depth_limit(r->mctx, 10000);
  for (size_t i = 0; i < n; i++, r->n++) {
    const rl_rule_cfg *c = &cfgs[i];
    if (c->action < 0 || c->action > RL_UPPERCASE) {
      rc = cfg_err(err, errlen, i, "unknown relabel action%s%s", "", "");
      goto fail;
    }
    if ((rc = validate_one(c, i, names, err, errlen))) goto fail;
    const char *re = c->regex ? c->regex : RL_DEFAULT_REGEX;
    size_t len = strlen(re) + 8;
    char *anchored = malloc(len);
    if (!anchored) {
      rc = SONDE_ENOMEM;
      goto fail;
    }
    snprintf(anchored, len, "^(?:%s)$", re);
    int ec;
    PCRE2_SIZE eoff;
    /* DOLLAR_ENDONLY: RE2's $ (without (?m)) matches only at the very end, Perl's also before a
     * final newline. MATCH_INVALID_UTF: label values are bytes, not always UTF-8. */
    r->v[i].re = pcre2_compile((PCRE2_SPTR)anchored, PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY |
                                   PCRE2_NEVER_BACKSLASH_C,
                               &ec, &eoff, NULL);
    free(anchored);
    r->v[i].cfg = c;
    if (!r->v[i].re) {
      PCRE2_UCHAR msg[160];
      pcre2_get_error_message(ec, msg, sizeof msg);
      char where[32];
      snprintf(where, sizeof where, "%zu", eoff >= 4 ? (size_t)eoff - 4 : 0);
      rc = cfg_err(err, errlen, i, "invalid regex: %s at offset %s", (const char *)msg, where);
      goto fail;
    }
    pcre2_jit_compile(r->v[i].re, PCRE2_JIT_COMPLETE); /* optional speed-up: failure is fine */
    if (!(r->v[i].md = pcre2_match_data_create_from_pattern(r->v[i].re, NULL))) {
      pcre2_code_free(r->v[i].re);
      rc = SONDE_ENOMEM;
      goto fail;
    }
  }
  *out = r;
  return 0;
fail:
  if (rc == SONDE_ENOMEM) snprintf(err, errlen, "out of memory");
  rl_free(r);
  return rc;
}

bool rl_reads(const rl_rules *r, const char *name) {
  for (size_t i = 0; i < r->n; i++) {
    const rl_rule_cfg *c = r->v[i].cfg;
    if (c->action == RL_LABELMAP) return true;
    if ((c->action == RL_KEEPEQUAL || c->action == RL_DROPEQUAL) && c->target_label &&
        !strcmp(c->target_label, name))
      return true;
    for (size_t k = 0; k < c->source_labels.n; k++)
      if (!strcmp(c->source_labels.v[k], name)) return true;
  }
  return false;
}

/* ---- matching and expansion ----------------------------------------------------------------- */

/* > 0: matched with that many pairs set; 0: no match (also when a backtracking limit hit). */
static int match(const rl_rules *r, const rl_rule *ru, const char *s) {
  int rc = pcre2_match(ru->re, (PCRE2_SPTR)s, strlen(s), 0, 0, ru->md, r->mctx);
  return rc > 0 ? rc : 0;
}

typedef struct sbuf {
  char *p;
  size_t n, cap;
  bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1)
      cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

/* Go's Regexp.ExpandString: $name or ${name} (name: letters, digits, _; all digits without a
 * leading zero is a group number), $$ is a literal $, a malformed reference is literal text, and a
 * group that does not exist or did not take part is empty. ASCII names only (Go also takes
 * Unicode letters). The result is NUL-terminated in b (also when empty). */
static void expand(const rl_rule *ru, int pairs, const char *tmpl, const char *src, sbuf *b) {
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ru->md);
  sb_add(b, "", 0);
  const char *t = tmpl;
  while (*t) {
    const char *d = strchr(t, '$');
    if (!d) {
      sb_add(b, t, strlen(t));
      break;
    }
    sb_add(b, t, (size_t)(d - t));
    t = d + 1;
    if (*t == '$') {
      sb_add(b, "$", 1);
      t++;
      continue;
    }
    bool brace = *t == '{';
    const char *name = brace ? t + 1 : t;
    const char *e = name;
    while (is_word(*e))
      e++;
    if (e == name || (brace && *e != '}')) {
      sb_add(b, "$", 1); /* malformed: the $ is text, the rest is read on */
      continue;
    }
    size_t nlen = (size_t)(e - name);
    t = brace ? e + 1 : e;
    long num = 0;
    for (size_t k = 0; k < nlen; k++) {
      if (name[k] < '0' || name[k] > '9' || num >= 100000000) {
        num = -1;
        break;
      }
      num = num * 10 + (name[k] - '0');
    }
    if (name[0] == '0' && nlen > 1) num = -1;
    if (num < 0) {
      char nm[128];
      if (nlen >= sizeof nm) continue;
      memcpy(nm, name, nlen);
      nm[nlen] = 0;
      int g = pcre2_substring_number_from_name(ru->re, (PCRE2_SPTR)nm);
      if (g <= 0) continue;
      num = g;
    }
    if (num < pairs && ov[2 * num] != PCRE2_UNSET)
      sb_add(b, src + ov[2 * num], ov[2 * num + 1] - ov[2 * num]);
  }
}

uint64_t rl_hashmod(const char *val, uint64_t modulus) {
  unsigned char h[EVP_MAX_MD_SIZE];
  unsigned int hl = 0;
  if (!EVP_Digest(val, strlen(val), h, &hl, EVP_md5(), NULL) || hl != 16) return 0;
  /* The last 8 bytes, big-endian, as Prometheus has always done. */
  uint64_t x = 0;
  for (int k = 8; k < 16; k++)
    x = (x << 8) | h[k];
  return x % modulus;
}

static void ascii_case(char *s, bool upper) {
  for (; *s; s++) {
    if (upper && *s >= 'a' && *s <= 'z') *s = (char)(*s - 'a' + 'A');
    if (!upper && *s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
  }
}

/* The joined source values. */
static int joined(const rl_rule_cfg *c, const rl_labels *ls, sbuf *b) {
  const char *sep = c->separator ? c->separator : RL_DEFAULT_SEPARATOR;
  sb_add(b, "", 0);
  for (size_t k = 0; k < c->source_labels.n; k++) {
    if (k) sb_add(b, sep, strlen(sep));
    const char *v = rl_labels_get(ls, c->source_labels.v[k]);
    sb_add(b, v, strlen(v));
  }
  return b->oom ? SONDE_ENOMEM : 0;
}

static int apply_one(const rl_rules *r, const rl_rule *ru, rl_labels *ls, bool *keep) {
  const rl_rule_cfg *c = ru->cfg;
  const char *target = c->target_label ? c->target_label : "";
  const char *repl = c->replacement ? c->replacement : RL_DEFAULT_REPLACEMENT;
  sbuf val = {0}, res = {0}, tgt = {0};
  int rc = joined(c, ls, &val);
  if (rc) goto out;
  switch ((rl_action)c->action) {
  case RL_DROP:
    if (match(r, ru, val.p)) *keep = false;
    break;
  case RL_KEEP:
    if (!match(r, ru, val.p)) *keep = false;
    break;
  case RL_DROPEQUAL:
    if (!strcmp(rl_labels_get(ls, target), val.p)) *keep = false;
    break;
  case RL_KEEPEQUAL:
    if (strcmp(rl_labels_get(ls, target), val.p)) *keep = false;
    break;
  case RL_REPLACE: {
    /* Prometheus's fast path: with the default regex, an empty value and no $ anywhere, the
     * target is set to the replacement as it stands (and an empty one deletes the target). */
    if (!*val.p && eq(c->regex, RL_DEFAULT_REGEX) && !strchr(target, '$') && !strchr(repl, '$')) {
      rc = labels_put(ls, target, repl, 1);
      break;
    }
    int pairs = match(r, ru, val.p);
    if (!pairs) break; /* no match: no change */
    expand(ru, pairs, target, val.p, &tgt);
    expand(ru, pairs, repl, val.p, &res);
    if (tgt.oom || res.oom) {
      rc = SONDE_ENOMEM;
      break;
    }
    if (!name_valid(r->names, tgt.p)) break; /* invalid target after expansion: no change */
    rc = labels_put(ls, tgt.p, res.p, 1);    /* empty result deletes */
    break;
  }
  case RL_LOWERCASE:
  case RL_UPPERCASE:
    ascii_case(val.p, c->action == RL_UPPERCASE);
    rc = labels_put(ls, target, val.p, 1);
    break;
  case RL_HASHMOD: {
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)rl_hashmod(val.p, (uint64_t)c->modulus));
    rc = labels_put(ls, target, num, 1);
    break;
  }
  case RL_LABELMAP:
  case RL_LABELDROP:
  case RL_LABELKEEP: {
    rl_label *snap;
    size_t sn = ls->n;
    if ((rc = snapshot(ls, &snap))) break;
    for (size_t k = 0; k < sn && !rc; k++) {
      bool m = match(r, ru, snap[k].name) > 0;
      if (c->action == RL_LABELDROP && m) rl_labels_del(ls, snap[k].name);
      if (c->action == RL_LABELKEEP && !m) rl_labels_del(ls, snap[k].name);
      if (c->action == RL_LABELMAP && m) {
        /* ReplaceAllString of an anchored regex that matched: the expansion replaces the whole
         * name. Prometheus does not check the new name; an empty one is skipped here. */
        int pairs = match(r, ru, snap[k].name);
        res.n = 0;
        expand(ru, pairs, repl, snap[k].name, &res);
        if (res.oom)
          rc = SONDE_ENOMEM;
        else if (*res.p)
          rc = labels_put(ls, res.p, snap[k].value, 1);
      }
    }
    snapshot_free(snap, sn);
    break;
  }
  }
out:
  free(val.p);
  free(res.p);
  free(tgt.p);
  return rc;
}

int rl_apply(const rl_rules *r, rl_labels *ls, bool *keep) {
  *keep = true;
  for (size_t i = 0; i < r->n && *keep; i++) {
    int rc = apply_one(r, &r->v[i], ls, keep);
    if (rc) return rc;
  }
  return 0;
}

/* Routes (http.route) for request paths (hx.h): configured patterns first, else a heuristic that
 * folds the segments that look like identifiers. Each service gets a bounded set of distinct
 * heuristic routes (hashes only); past the cap a new route becomes the overflow route, counted,
 * so a service that puts random tokens in its paths cannot grow the metric series without end. */
#include <stdlib.h>
#include <string.h>

#include "hx.h"

#define MAX_SEGS 64      /* path segments a pattern is matched against */
#define MAX_GLOBSTARS 2  /* "**" per pattern: matching cost is O(segments ^ globstars) */
#define MAX_SERVICES 256 /* services with their own route set; the rest share one */
#define SVC_SLOTS 512    /* open addressing, twice MAX_SERVICES */
#define OVERFLOW_ROUTE "/**"

enum seg_kind { SEG_LIT, SEG_PARAM, SEG_STAR, SEG_GLOBSTAR };

typedef struct pseg {
  enum seg_kind kind;
  const char *s; /* literal text (into the pattern's copy) */
  size_t len;
} pseg;

typedef struct pattern {
  char *text;
  pseg *segs;
  size_t n;
} pattern;

typedef struct route_set {
  char *name;  /* NULL: free slot */
  uint64_t *h; /* hashes of the routes seen; 0 marks a free slot */
  size_t cap, n;
} route_set;

struct hx_routes {
  pattern *pats;
  size_t npats;
  size_t per_service_cap;
  route_set *svcs; /* SVC_SLOTS slots */
  size_t nsvcs;
  route_set shared; /* services past MAX_SERVICES */
  uint64_t overflows;
};

typedef struct span {
  const char *s;
  size_t len;
} span;

static void pattern_free(pattern *p) {
  free(p->text);
  free(p->segs);
}

void hx_routes_free(hx_routes *r) {
  if (!r) return;
  for (size_t i = 0; i < r->npats; i++)
    pattern_free(&r->pats[i]);
  free(r->pats);
  if (r->svcs) {
    for (size_t i = 0; i < SVC_SLOTS; i++) {
      free(r->svcs[i].name);
      free(r->svcs[i].h);
    }
    free(r->svcs);
  }
  free(r->shared.h);
  free(r);
}

/* Splits "/a/b" (after its leading '/') into at most max spans; returns how many, or SIZE_MAX
 * when there are more. */
static size_t split(const char *s, size_t len, span *out, size_t max) {
  size_t n = 0, i = 1, start = 1;
  for (;; i++) {
    if (i == len || s[i] == '/') {
      if (n == max) return SIZE_MAX;
      out[n++] = (span){s + start, i - start};
      start = i + 1;
      if (i >= len) break;
    }
  }
  return n;
}

static int pattern_parse(const char *text, pattern *p) {
  size_t len = strlen(text);
  if (len == 0 || text[0] != '/') return SONDE_EINVAL;
  p->text = strdup(text);
  p->segs = calloc(MAX_SEGS, sizeof(*p->segs));
  if (!p->text || !p->segs) return SONDE_ENOMEM;
  span sp[MAX_SEGS];
  size_t n = split(p->text, len, sp, MAX_SEGS);
  if (n == SIZE_MAX) return SONDE_EINVAL;
  size_t globstars = 0;
  for (size_t i = 0; i < n; i++) {
    pseg *g = &p->segs[i];
    g->s = sp[i].s;
    g->len = sp[i].len;
    const char *open = memchr(g->s, '{', g->len), *close = memchr(g->s, '}', g->len);
    if (g->len == 2 && g->s[0] == '*' && g->s[1] == '*') {
      g->kind = SEG_GLOBSTAR;
      if (++globstars > MAX_GLOBSTARS) return SONDE_EINVAL;
    } else if (g->len == 1 && g->s[0] == '*') {
      g->kind = SEG_STAR;
    } else if (open || close) {
      /* only a whole segment "{name}" is a parameter */
      if (g->len < 3 || open != g->s || close != g->s + g->len - 1 ||
          memchr(g->s + 1, '{', g->len - 2) || memchr(g->s + 1, '}', g->len - 2))
        return SONDE_EINVAL;
      g->kind = SEG_PARAM;
    } else {
      g->kind = SEG_LIT;
    }
  }
  p->n = n;
  return 0;
}

int hx_routes_new(const char *const *patterns, size_t n, size_t per_service_cap, hx_routes **out) {
  if (!out || (n && !patterns)) return SONDE_EINVAL;
  *out = NULL;
  hx_routes *r = calloc(1, sizeof(*r));
  if (!r) return SONDE_ENOMEM;
  r->per_service_cap = per_service_cap ? per_service_cap : 1000;
  r->svcs = calloc(SVC_SLOTS, sizeof(*r->svcs));
  r->pats = n ? calloc(n, sizeof(*r->pats)) : NULL;
  if (!r->svcs || (n && !r->pats)) {
    hx_routes_free(r);
    return SONDE_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    if (!patterns[i]) {
      hx_routes_free(r);
      return SONDE_EINVAL;
    }
    r->npats++;
    int rc = pattern_parse(patterns[i], &r->pats[i]);
    if (rc) {
      hx_routes_free(r);
      return rc;
    }
  }
  *out = r;
  return 0;
}

static bool match(const pattern *p, size_t i, const span *s, size_t j, size_t n) {
  for (; i < p->n; i++, j++) {
    const pseg *g = &p->segs[i];
    if (g->kind == SEG_GLOBSTAR) {
      for (size_t k = j; k <= n; k++)
        if (match(p, i + 1, s, k, n)) return true;
      return false;
    }
    if (j == n) return false;
    switch (g->kind) {
    case SEG_LIT:
      if (g->len != s[j].len || memcmp(g->s, s[j].s, g->len) != 0) return false;
      break;
    case SEG_PARAM:
    case SEG_STAR:
      if (s[j].len == 0) return false;
      break;
    default:
      break;
    }
  }
  return j == n;
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
static bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_uuid(const char *s, size_t n) {
  if (n != 36) return false;
  for (size_t i = 0; i < n; i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !is_hex(s[i])) return false;
  }
  return true;
}

/* Whether a path segment is an identifier rather than a word of the API. */
static bool is_id(const char *s, size_t n) {
  if (n == 0) return false;
  size_t digits = 0, hex = 0, token = 0, switches = 0, numeric = 0;
  int prev = 0; /* 1 letter, 2 digit */
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (is_digit(c)) digits++;
    if (is_hex(c)) hex++;
    if (is_digit(c) || c == '-' || c == '.' || c == ':' || c == '_' || c == ',' || c == '+')
      numeric++;
    if (is_digit(c) || is_alpha(c) || c == '-' || c == '_' || c == '=' || c == '+' || c == '.' ||
        c == '~')
      token++;
    int cls = is_digit(c) ? 2 : is_alpha(c) ? 1 : 0;
    if (cls && prev && cls != prev) switches++;
    if (cls) prev = cls;
  }
  if (digits == n) return true;                     /* 42 */
  if (numeric == n && digits * 2 >= n) return true; /* 2024-01-15, 10.0.0.1, 12:30, -1.5 */
  if (is_uuid(s, n)) return true;                   /* 123e4567-e89b-12d3-... */
  if (hex == n && ((n >= 8 && digits > 0) || n >= 16)) return true; /* 9f8e7d6c, sha256 */
  /* base64 / random tokens: long, letters and digits interleaved (slugs like
   * "release-notes-2024" switch once or twice) */
  return n >= 16 && token == n && digits >= 2 && switches >= 4;
}

/* Appends to out (bounded; always NUL-terminated). */
static void put(char *out, size_t len, size_t *at, const char *s, size_t n) {
  if (*at + 1 >= len) return;
  size_t room = len - 1 - *at;
  if (n > room) n = room;
  memcpy(out + *at, s, n);
  *at += n;
  out[*at] = '\0';
}

static uint64_t hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h ? h : 1;
}

static route_set *service_set(hx_routes *r, const char *service) {
  uint64_t h = hash(service);
  for (size_t i = 0; i < SVC_SLOTS; i++) {
    route_set *s = &r->svcs[(h + i) & (SVC_SLOTS - 1)];
    if (!s->name) {
      if (r->nsvcs >= MAX_SERVICES) return &r->shared;
      s->name = strdup(service);
      if (!s->name) return &r->shared;
      r->nsvcs++;
      return s;
    }
    if (strcmp(s->name, service) == 0) return s;
  }
  return &r->shared;
}

/* Adds h to the set; false when the set is full and h is new. */
static bool set_admit(hx_routes *r, route_set *s, uint64_t h) {
  if (s->cap) {
    for (size_t i = 0; i < s->cap; i++) {
      uint64_t *slot = &s->h[(h + i) & (s->cap - 1)];
      if (*slot == h) return true;
      if (*slot == 0) break;
    }
  }
  if (s->n >= r->per_service_cap) return false;
  if ((s->n + 1) * 2 > s->cap) { /* keep at most half full */
    size_t cap = s->cap ? s->cap * 2 : 16;
    uint64_t *v = calloc(cap, sizeof(*v));
    if (!v) return false;
    for (size_t i = 0; i < s->cap; i++) {
      if (!s->h[i]) continue;
      size_t j = s->h[i] & (cap - 1);
      while (v[j])
        j = (j + 1) & (cap - 1);
      v[j] = s->h[i];
    }
    free(s->h);
    s->h = v;
    s->cap = cap;
  }
  size_t j = h & (s->cap - 1);
  while (s->h[j])
    j = (j + 1) & (s->cap - 1);
  s->h[j] = h;
  s->n++;
  return true;
}

const char *hx_routes_match(hx_routes *r, const char *service, const char *path, char *out,
                            size_t len) {
  if (!out || len < 2) return out;
  out[0] = '\0';
  if (!path || !*path) path = "/";
  size_t plen = strcspn(path, "?#");
  if (path[0] != '/') {
    /* absolute-form "http://host/p" (proxies) */
    const char *scheme = strstr(path, "://");
    if (scheme && (size_t)(scheme - path) < plen) {
      const char *sl = memchr(scheme + 3, '/', plen - (size_t)(scheme + 3 - path));
      size_t off = sl ? (size_t)(sl - path) : plen;
      path += off;
      plen -= off;
    }
    if (plen == 0) {
      path = "/";
      plen = 1;
    }
  }
  size_t at = 0;
  if (plen == 1 && path[0] == '*') { /* OPTIONS * */
    put(out, len, &at, "*", 1);
    return out;
  }
  bool slash = path[0] == '/'; /* a relative path is routed as if it had its slash */
  span sp[MAX_SEGS];
  size_t n = slash ? split(path, plen, sp, MAX_SEGS) : SIZE_MAX;
  if (r && n != SIZE_MAX) {
    for (size_t i = 0; i < r->npats; i++) {
      if (match(&r->pats[i], 0, sp, 0, n)) {
        put(out, len, &at, r->pats[i].text, strlen(r->pats[i].text));
        return out;
      }
    }
  }
  const char *s = path + (slash ? 1 : 0), *end = path + plen;
  put(out, len, &at, "/", 1);
  for (;;) {
    const char *e = memchr(s, '/', (size_t)(end - s));
    if (!e) e = end;
    if (is_id(s, (size_t)(e - s)))
      put(out, len, &at, "{id}", 4);
    else
      put(out, len, &at, s, (size_t)(e - s));
    if (e == end) break;
    put(out, len, &at, "/", 1);
    s = e + 1;
  }
  if (!r) return out;
  route_set *set = service_set(r, service ? service : "");
  if (!set_admit(r, set, hash(out))) {
    r->overflows++;
    at = 0;
    put(out, len, &at, OVERFLOW_ROUTE, sizeof(OVERFLOW_ROUTE) - 1);
  }
  return out;
}

uint64_t hx_routes_overflows(const hx_routes *r) {
  return r ? r->overflows : 0;
}

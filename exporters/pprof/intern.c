/* Bump allocator and string interning (intern.h). */
#include "intern.h"

#include <stdlib.h>
#include <string.h>

struct intern_chunk {
  intern_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

void *intern_alloc(intern_arena *a, size_t n) {
  size_t al = a->align ? a->align : 16;
  n = (n + al - 1) & ~(al - 1);
  if (!a->c || a->c->cap - a->c->used < n) {
    size_t min = a->chunk ? a->chunk : 65536;
    size_t cap = n > min ? n : min;
    intern_chunk *c = malloc(sizeof(intern_chunk) + cap);
    if (!c) return NULL;
    c->next = a->c;
    c->used = 0;
    c->cap = cap;
    a->c = c;
    a->bytes += sizeof(intern_chunk) + cap;
  }
  void *p = a->c->data + a->c->used;
  a->c->used += n;
  memset(p, 0, n);
  return p;
}

void intern_arena_free(intern_arena *a) {
  while (a->c) {
    intern_chunk *n = a->c->next;
    free(a->c);
    a->c = n;
  }
  a->bytes = 0;
}

/* What precedes an interned string. */
typedef struct head {
  uint64_t hash, index;
} head;

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h | 1; /* 0 marks a free slot */
}

uint64_t intern_hash(const char *interned) {
  head h;
  memcpy(&h, interned - sizeof(h), sizeof(h));
  return h.hash;
}

size_t intern_index(const char *interned) {
  head h;
  memcpy(&h, interned - sizeof(h), sizeof(h));
  return (size_t)h.index;
}

static int grow(intern_table *t) {
  size_t nc = t->hcap ? t->hcap * 2 : 64;
  const char **ns = calloc(nc, sizeof(*ns));
  uint64_t *nh = calloc(nc, sizeof(*nh));
  if (!ns || !nh) {
    free(ns);
    free(nh);
    return -1;
  }
  for (size_t i = 0; i < t->hcap; i++) {
    if (!t->hh[i]) continue;
    size_t j = t->hh[i] & (nc - 1);
    while (nh[j])
      j = (j + 1) & (nc - 1);
    nh[j] = t->hh[i];
    ns[j] = t->hs[i];
  }
  free(t->hs);
  free(t->hh);
  t->hs = ns;
  t->hh = nh;
  t->hcap = nc;
  return 0;
}

const char *intern_str(intern_table *t, intern_arena *a, const char *s, size_t n) {
  if ((t->hn + 1) * 4 > t->hcap * 3 && grow(t)) return NULL;
  uint64_t h = hash_bytes(s, n);
  size_t i = h & (t->hcap - 1);
  for (; t->hh[i]; i = (i + 1) & (t->hcap - 1))
    if (t->hh[i] == h && !strncmp(t->hs[i], s, n) && !t->hs[i][n]) return t->hs[i];
  char *d = intern_alloc(a, sizeof(head) + n + 1);
  if (!d) return NULL;
  head hd = {h, t->hn};
  memcpy(d, &hd, sizeof(hd));
  d += sizeof(hd);
  memcpy(d, s, n);
  d[n] = 0;
  t->hs[i] = d;
  t->hh[i] = h;
  t->hn++;
  return d;
}

size_t intern_table_bytes(const intern_table *t) {
  return t->hcap * (sizeof(*t->hs) + sizeof(*t->hh));
}

void intern_table_free(intern_table *t) {
  free(t->hs);
  free(t->hh);
  t->hs = NULL;
  t->hh = NULL;
  t->hcap = t->hn = 0;
}

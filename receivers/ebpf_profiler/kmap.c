#include "kmap.h"

#include <stdlib.h>
#include <string.h>

#include "sonde/errors.h"

/* FNV-1a over 8-byte words then the tail: keys are mostly arrays of addresses. */
static uint64_t hash_bytes(const void *p, size_t len) {
  const uint8_t *b = p;
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < len; i++)
    h = (h ^ b[i]) * 0x100000001b3ull;
  return h ^ (h >> 32) ^ len;
}

static int grow_slots(kmap *m) {
  size_t nc = m->cap ? m->cap * 2 : 64;
  uint32_t *s = calloc(nc, sizeof(*s));
  if (!s) return SONDE_ENOMEM;
  for (size_t i = 0; i < m->n; i++) {
    size_t j = m->e[i].hash & (nc - 1);
    while (s[j])
      j = (j + 1) & (nc - 1);
    s[j] = (uint32_t)(i + 1);
  }
  free(m->slots);
  m->slots = s;
  m->cap = nc;
  return 0;
}

int kmap_intern(kmap *m, const void *key, size_t len, int32_t val, int32_t *out) {
  if ((m->n + 1) * 2 > m->cap && grow_slots(m)) return SONDE_ENOMEM;
  uint64_t h = hash_bytes(key, len);
  size_t j = h & (m->cap - 1);
  while (m->slots[j]) {
    const kmap_entry *e = &m->e[m->slots[j] - 1];
    if (e->hash == h && e->len == len && !memcmp(m->keys + e->off, key, len)) {
      *out = e->val;
      return 0;
    }
    j = (j + 1) & (m->cap - 1);
  }
  if (m->n == m->ecap) {
    size_t nc = m->ecap ? m->ecap * 2 : 32;
    kmap_entry *ne = realloc(m->e, nc * sizeof(*ne));
    if (!ne) return SONDE_ENOMEM;
    m->e = ne;
    m->ecap = nc;
  }
  size_t need = (len + 7) & ~(size_t)7;
  if (m->klen + need > m->kcap) {
    size_t nc = m->kcap ? m->kcap : 4096;
    while (nc < m->klen + need)
      nc *= 2;
    uint8_t *nk = realloc(m->keys, nc);
    if (!nk) return SONDE_ENOMEM;
    m->keys = nk;
    m->kcap = nc;
  }
  if (len) memcpy(m->keys + m->klen, key, len);
  m->e[m->n] = (kmap_entry){.hash = h, .off = m->klen, .len = (uint32_t)len, .val = val};
  m->klen += need;
  m->slots[j] = (uint32_t)(++m->n);
  *out = val;
  return 1;
}

void kmap_reset(kmap *m) {
  if (m->slots) memset(m->slots, 0, m->cap * sizeof(*m->slots));
  m->n = 0;
  m->klen = 0;
}

void kmap_free(kmap *m) {
  free(m->slots);
  free(m->e);
  free(m->keys);
  memset(m, 0, sizeof(*m));
}

size_t kmap_bytes(const kmap *m) {
  return m->cap * sizeof(*m->slots) + m->ecap * sizeof(*m->e) + m->kcap;
}

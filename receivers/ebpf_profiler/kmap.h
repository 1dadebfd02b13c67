/* A byte-string -> int32 hash map for the profiler's interning (strings, mappings, locations,
 * stacks, attributes) and sample aggregation. Keys are copied; entries are never removed, only the
 * whole map is reset, which keeps its memory for the next round. Loop thread only. */
#ifndef SONDE_EBPF_PROFILER_KMAP_H
#define SONDE_EBPF_PROFILER_KMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct kmap_entry {
  uint64_t hash;
  size_t off; /* key bytes at keys + off */
  uint32_t len;
  int32_t val;
} kmap_entry;

typedef struct kmap {
  uint32_t *slots; /* 0: empty, else entry index + 1 */
  size_t cap;      /* slots, a power of two */
  kmap_entry *e;
  size_t n, ecap;
  uint8_t *keys;
  size_t klen, kcap;
} kmap;

/* Finds key; when absent adds it with value val. *out gets the stored value; returns 1 when added,
 * 0 when found, SONDE_ENOMEM (map unchanged) when it could not add. */
int kmap_intern(kmap *m, const void *key, size_t len, int32_t val, int32_t *out);
/* The key bytes of entry i (0 <= i < m->n). */
static inline const void *kmap_key(const kmap *m, size_t i) {
  return m->keys + m->e[i].off;
}
/* The value stored with entry i. */
static inline int32_t kmap_val(const kmap *m, size_t i) {
  return m->e[i].val;
}
void kmap_reset(kmap *m);
void kmap_free(kmap *m);
/* Bytes held (for the RSS budget). */
size_t kmap_bytes(const kmap *m);

#endif

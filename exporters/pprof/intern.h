/* A bump allocator and string interning on it, shared by the pprof encoder (its string table) and
 * the flame graph's history (a slot's names): static library sonde_intern. Not thread-safe: one
 * arena and table per user. */
#ifndef SONDE_INTERN_H
#define SONDE_INTERN_H

#include <stddef.h>
#include <stdint.h>

typedef struct intern_chunk intern_chunk;

/* Zeroed memory from chunks of at least `chunk` bytes, `align` (a power of two) aligned; all of it
 * freed at once. bytes: what the chunks take from malloc. */
typedef struct intern_arena {
  intern_chunk *c;
  uint64_t bytes;
  size_t chunk, align;
} intern_arena;

void *intern_alloc(intern_arena *a, size_t n);
void intern_arena_free(intern_arena *a);

/* Distinct strings, each copied once into an arena with its hash and its index (the order in which
 * it was first added) in front of it, so neither is computed again. Open addressing; the table
 * itself is malloc'd (intern_table_bytes). */
typedef struct intern_table {
  const char **hs;
  uint64_t *hh;
  size_t hcap, hn;
} intern_table;

/* s[0..n) interned (a NUL-terminated copy in a), or NULL when out of memory. */
const char *intern_str(intern_table *t, intern_arena *a, const char *s, size_t n);
uint64_t intern_hash(const char *interned);
size_t intern_index(const char *interned);
size_t intern_table_bytes(const intern_table *t);
void intern_table_free(intern_table *t);

#endif

/* The symbolizer's resolver: addresses -> frames, with a byte-budgeted LRU cache.
 *
 * Not thread-safe: one resolver is used by one thread at a time (the processor runs one job at a
 * time). Frames returned by a lookup stay valid until the next call on the resolver (an insert
 * may evict them).
 */
#ifndef SONDE_SYMRES_H
#define SONDE_SYMRES_H

#include <stddef.h>
#include <stdint.h>

typedef struct sym_frame {
  const char *name;   /* demangled when it was mangled */
  const char *system; /* the symbol as written in the binary (mangled), or name */
  const char *file;   /* source file, or NULL */
  int64_t line;       /* 0: unknown */
  int64_t column;
} sym_frame;

typedef struct symres_opts {
  const char *const *debug_dirs; /* roots holding .build-id/ and debuglink files */
  size_t n_debug_dirs;
  uint64_t cache_bytes;
  const char *kallsyms_path; /* NULL: /proc/kallsyms */
  const char *perf_map_dir;  /* NULL: /tmp */
  const char *proc_root;     /* NULL: /proc */
  int use_debuginfod;        /* DEBUGINFOD_URLS is already in the environment */
  int demangle;
} symres_opts;

typedef struct symres symres;

typedef struct symres_stats {
  uint64_t bytes, files, lookups, hits;
} symres_stats;

/* opts is copied (strings too). */
int symres_new(const symres_opts *opts, symres **out);
void symres_free(symres *r);

/* Frames (innermost first) of a file offset in an ELF file. path: as the process saw it; pid > 0
 * opens it through <proc_root>/<pid>/root first. build_id: raw bytes (may be NULL): a file whose
 * build id differs is not used. *n = 0 when unknown. Returns 0 or a negative errno (ENOMEM). */
int symres_elf(symres *r, const char *path, int pid, const uint8_t *build_id, size_t bid_len,
               uint64_t file_offset, const sym_frame **frames, size_t *n);
/* Frames of a kernel address from kallsyms (module symbols have file "[module]"). */
int symres_kernel(symres *r, uint64_t addr, const sym_frame **frames, size_t *n);
/* Frames of a runtime address from <perf_map_dir>/perf-<pid>.map. */
int symres_perfmap(symres *r, int pid, uint64_t addr, const sym_frame **frames, size_t *n);
/* Starts a new batch: perf maps may be re-read once per batch when they changed. */
void symres_tick(symres *r);
void symres_stats_get(const symres *r, symres_stats *s);

/* For the fuzzer: resolves addr against an in-memory ELF image (no cache, no debug files). */
int symres_elf_memory(const void *image, size_t len, uint64_t file_offset, char *out,
                      size_t outlen);

#endif

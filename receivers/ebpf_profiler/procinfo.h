/* What the ebpf_profiler receiver knows of a process: read from /proc on the thread pool (never on
 * the loop), then handed to the loop thread, which alone reads it afterwards. */
#ifndef SONDE_EBPF_PROFILER_PROCINFO_H
#define SONDE_EBPF_PROFILER_PROCINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "procsel.h"

#define PROF_BUILD_ID_MAX 32

/* One executable mapping of /proc/PID/maps (only those can hold a pc or return address). */
typedef struct prof_mapping {
  uint64_t start, end; /* [start, end) in the process */
  uint64_t offset;     /* file offset of start */
  uint64_t dev, inode; /* 0 for anonymous memory */
  char *path;          /* as /proc/PID/maps names it: a path, "[vdso]", or "" (anonymous, JIT) */
  uint8_t build_id[PROF_BUILD_ID_MAX];
  uint8_t build_id_len; /* 0: none found */
} prof_mapping;

typedef struct prof_procinfo {
  sonde__proc_ident id; /* executable, name, cgroup, container id */
  prof_mapping *maps;   /* sorted by start, non-overlapping */
  size_t n_maps;
} prof_procinfo;

/* Build ids by file identity (device, inode, size, mtime), shared by every read so a file mapped by
 * many processes (libc) is parsed once. Bounded (direct-mapped, a collision replaces); a mutex
 * guards it because reads run on several pool threads at once. */
typedef struct prof_bidcache prof_bidcache;
prof_bidcache *prof_bidcache_new(void); /* NULL on out of memory */
void prof_bidcache_free(prof_bidcache *c);

/* Reads everything about pid (blocking: run it on the thread pool). Returns 0, SONDE_ENOTFOUND when
 * the process is gone, or another error; *out is filled as far as it got either way and must be
 * freed with prof_procinfo_free. Files are opened through /proc/PID/root so containers' paths
 * resolve in their own mount namespace. */
int prof_procinfo_read(int pid, prof_bidcache *cache, prof_procinfo *out);
void prof_procinfo_free(prof_procinfo *pi);
/* The mapping holding addr, or NULL. */
const prof_mapping *prof_procinfo_find(const prof_procinfo *pi, uint64_t addr);

/* The GNU build id of the ELF file at path (NT_GNU_BUILD_ID note). Returns its length, 0 when the
 * file has none or is not ELF. */
size_t prof_elf_build_id(const char *path, uint8_t *out, size_t cap);

#endif

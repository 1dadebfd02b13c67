/* /proc and ELF reading for the ebpf_profiler receiver; runs on the thread pool. */
#include "procinfo.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sonde/errors.h"

size_t prof_elf_build_id(const char *path, uint8_t *out, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  size_t len = 0;
  Elf *e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
  if (e && elf_kind(e) == ELF_K_ELF) {
    Elf_Scn *scn = NULL;
    while (!len && (scn = elf_nextscn(e, scn))) {
      GElf_Shdr sh;
      if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE) continue;
      Elf_Data *d = elf_getdata(scn, NULL);
      if (!d) continue;
      GElf_Nhdr nh;
      size_t off = 0, noff, doff;
      while (!len && (off = gelf_getnote(d, off, &nh, &noff, &doff)) > 0) {
        if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
            !memcmp((const char *)d->d_buf + noff, "GNU", 4) && nh.n_descsz > 0 &&
            nh.n_descsz <= cap) {
          memcpy(out, (const char *)d->d_buf + doff, nh.n_descsz);
          len = nh.n_descsz;
        }
      }
    }
  }
  if (e) elf_end(e);
  close(fd);
  return len;
}

#define BIDCACHE_SLOTS 1024

typedef struct bid_slot {
  uint64_t dev, ino, size, mtime_ns;
  uint8_t len, valid;
  uint8_t id[PROF_BUILD_ID_MAX];
} bid_slot;

struct prof_bidcache {
  pthread_mutex_t mu;
  bid_slot slot[BIDCACHE_SLOTS];
};

prof_bidcache *prof_bidcache_new(void) {
  prof_bidcache *c = calloc(1, sizeof(*c));
  if (c && pthread_mutex_init(&c->mu, NULL)) {
    free(c);
    c = NULL;
  }
  return c;
}

void prof_bidcache_free(prof_bidcache *c) {
  if (!c) return;
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static bid_slot *bid_slot_of(prof_bidcache *c, const struct stat *st) {
  uint64_t h = ((uint64_t)st->st_dev * 0x9e3779b97f4a7c15ull) ^
               ((uint64_t)st->st_ino * 0xff51afd7ed558ccdull);
  return &c->slot[(h ^ (h >> 29)) % BIDCACHE_SLOTS];
}

/* The build id of the file at path, through the cache when there is one. */
static size_t cached_build_id(prof_bidcache *c, const char *path, uint8_t *out, size_t cap) {
  struct stat st;
  if (!c || stat(path, &st)) return prof_elf_build_id(path, out, cap);
  uint64_t mt = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
  bid_slot *s = bid_slot_of(c, &st);
  pthread_mutex_lock(&c->mu);
  if (s->valid && s->dev == (uint64_t)st.st_dev && s->ino == (uint64_t)st.st_ino &&
      s->size == (uint64_t)st.st_size && s->mtime_ns == mt && s->len <= cap) {
    size_t n = s->len;
    memcpy(out, s->id, n);
    pthread_mutex_unlock(&c->mu);
    return n;
  }
  pthread_mutex_unlock(&c->mu);
  /* Parsed outside the lock; two threads may parse the same file once each. */
  size_t n = prof_elf_build_id(path, out, cap);
  if (n > sizeof(s->id)) return n;
  pthread_mutex_lock(&c->mu);
  *s = (bid_slot){.dev = (uint64_t)st.st_dev,
                  .ino = (uint64_t)st.st_ino,
                  .size = (uint64_t)st.st_size,
                  .mtime_ns = mt,
                  .len = (uint8_t)n,
                  .valid = 1};
  memcpy(s->id, out, n);
  pthread_mutex_unlock(&c->mu);
  return n;
}

static int add_mapping(prof_procinfo *pi, size_t *cap, const prof_mapping *m) {
  if (pi->n_maps == *cap) {
    size_t nc = *cap ? *cap * 2 : 16;
    prof_mapping *v = realloc(pi->maps, nc * sizeof(*v));
    if (!v) return SONDE_ENOMEM;
    pi->maps = v;
    *cap = nc;
  }
  pi->maps[pi->n_maps++] = *m;
  return 0;
}

/* Build ids of the mapped files: one ELF read per distinct file of this process. */
static void fill_build_ids(int pid, prof_bidcache *cache, prof_procinfo *pi) {
  char path[PATH_MAX + 64];
  for (size_t i = 0; i < pi->n_maps; i++) {
    prof_mapping *m = &pi->maps[i];
    if (!m->inode || m->path[0] != '/') continue;
    bool done = false;
    for (size_t j = 0; j < i && !done; j++) {
      if (pi->maps[j].inode == m->inode && pi->maps[j].dev == m->dev) {
        memcpy(m->build_id, pi->maps[j].build_id, sizeof(m->build_id));
        m->build_id_len = pi->maps[j].build_id_len;
        done = true;
      }
    }
    if (done) continue;
    /* Through the process's root (containers); map_files also reaches deleted files. */
    snprintf(path, sizeof(path), "/proc/%d/root%s", pid, m->path);
    size_t n = cached_build_id(cache, path, m->build_id, sizeof(m->build_id));
    if (!n) {
      snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, pid, m->start,
               m->end);
      n = cached_build_id(cache, path, m->build_id, sizeof(m->build_id));
    }
    m->build_id_len = (uint8_t)n;
  }
}

int prof_procinfo_read(int pid, prof_bidcache *cache, prof_procinfo *pi) {
  char path[64];
  memset(pi, 0, sizeof(*pi));

  int rc = sonde__proc_ident_read(pid, &pi->id);
  if (rc) return rc;

  snprintf(path, sizeof(path), "/proc/%d/maps", pid);
  char *maps = sonde__read_small(path, NULL);
  if (!maps) return errno == ENOMEM ? SONDE_ENOMEM : SONDE_ENOTFOUND;
  size_t cap = 0;
  char *save = NULL;
  for (char *line = strtok_r(maps, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
    uint64_t start, end, off, ino;
    unsigned maj, min;
    char perms[8];
    int pos = 0;
    if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %x:%x %" SCNu64 " %n", &start, &end,
               perms, &off, &maj, &min, &ino, &pos) < 7)
      continue;
    if (perms[2] != 'x') continue;
    const char *name = pos ? line + pos : "";
    prof_mapping m = {.start = start,
                      .end = end,
                      .offset = off,
                      .dev = ((uint64_t)maj << 32) | min,
                      .inode = ino};
    if (!(m.path = strdup(name))) {
      rc = SONDE_ENOMEM;
      break;
    }
    if ((rc = add_mapping(pi, &cap, &m))) free(m.path);
  }
  free(maps);
  if (!rc) fill_build_ids(pid, cache, pi);
  return rc;
}

void prof_procinfo_free(prof_procinfo *pi) {
  if (!pi) return;
  for (size_t i = 0; i < pi->n_maps; i++)
    free(pi->maps[i].path);
  free(pi->maps);
  sonde__proc_ident_free(&pi->id);
  memset(pi, 0, sizeof(*pi));
}

const prof_mapping *prof_procinfo_find(const prof_procinfo *pi, uint64_t addr) {
  size_t lo = 0, hi = pi->n_maps;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const prof_mapping *m = &pi->maps[mid];
    if (addr < m->start)
      hi = mid;
    else if (addr >= m->end)
      lo = mid + 1;
    else
      return m;
  }
  return NULL;
}

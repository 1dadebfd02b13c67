/* The `ebpf_profiler` receiver: a CPU profile of every process on the node, from BPF.
 *
 * Sampling: one CPU-clock perf_event per CPU at samples_per_second, each with the BPF program
 * bpf/profiler.bpf.c attached; it sends one record per sample (kernel stack, user stack walked
 * with the unwind rows this file publishes, or a stack copy when BPF met a mapping it does not
 * know, which pend_walk finishes here) over a BPF ring buffer, drained on the loop.
 *
 * Aggregation (loop thread): samples with the same pid, image (exec / pid reuse), tid, cpu,
 * thread name and stack are counted together; every reporter_interval the counts become ONE OTLP
 * profiles batch in the v1development dictionary form (one ResourceProfiles per process image).
 * Addresses are resolved against the process's executable mappings only then, so a process whose
 * /proc was not read yet still gets its samples attributed once the read completes.
 *
 * Processes: the first sample of a pid queues a read of /proc/PID/{exe,cgroup,maps} and of the
 * mapped files' build ids on the thread pool (never on the loop), which also builds the unwind
 * rows of the files the sample's addresses fall in (ehframe.c); files are reference-counted by
 * the processes that map them and their rows freed when none does. An address outside the known
 * mappings (dlopen, JIT) queues a re-read (every 200 ms for a waiting stack copy, else once a
 * second). The BPF
 * sched_process_exit hook reports the exit of sampled processes; their state is dropped after the
 * next report. A process quiet for a minute is checked with kill(pid, 0) in case its exit record
 * was lost (ring buffer full).
 *
 * Addresses in the output: Mapping holds the runtime range [memory_start, memory_limit) and the
 * file offset of memory_start (as /proc/PID/maps says); Location.address is the normalized file
 * offset of the instruction (address - memory_start + file_offset), which is what a symbolizer
 * needs with the file's build id and does not depend on where ASLR put the file. Kernel frames use
 * one mapping "[kernel.kallsyms]" spanning the whole address space with offset 0, so their
 * address is the kernel address itself. Addresses found in no mapping keep the raw address and
 * mapping index 0. User callers' frames arrive as return address - 1 (bpf/profiler.h ustack), so
 * the address, and the mapping it is looked up in, are inside the call.
 */
#include <errno.h>
#include <gelf.h>
#include <inttypes.h>
#include <linux/perf_event.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <uv.h>

#include "ehframe.h"
#include "kmap.h"
#include "procinfo.h"
#include "procsel.h"
#include "profiler.h"
#include "sonde/sonde.h"
#include "sonde_profiler.skel.h"

#define NS_PER_S 1000000000ll
_Static_assert(SONDE_UW_ROWS == 1048576, "the unwind_rows metric's help names the size");
#define UW_BIG_ROWS (1u << 16)         /* a table above this many rows is "big"... */
#define UW_RESERVE (SONDE_UW_ROWS / 8) /* ... and must leave this many rows free */
#define RELOAD_MIN_NS NS_PER_S         /* re-read a process's maps at most this often */
/* ... but at most this often when BPF stopped at a pc in no known mapping (dlopen, new JIT code),
 * the stack copy waiting for the read */
#define STOP_RELOAD_NS (200 * 1000000ull)
#define EXE_CACHE 1024
#define QUIET_CHECK_INTERVALS 12 /* intervals without samples before kill(pid, 0) */
#define PROC_BUCKETS 4096

/* ---- configuration --------------------------------------------------------------------------- */

typedef struct prof_config {
  int64_t samples_per_second;
  int64_t reporter_interval_ns;
  bool measure_bpf_time;
  sonde__select include;
  sonde__select exclude;
} prof_config;

static const sonde_option prof_options[] = {
    SONDE_OPT_RANGE("samples_per_second", SONDE_OPT_INT, prof_config, samples_per_second, "19", 1,
                    10000, "sampling frequency per CPU"),
    SONDE_OPT_RANGE("reporter_interval", SONDE_OPT_DURATION, prof_config, reporter_interval_ns,
                    "5s", 1e8, 3.6e12, "time covered by one profiles batch"),
    SONDE_OPT("measure_bpf_time", SONDE_OPT_BOOL, prof_config, measure_bpf_time, "false",
              "time every sample's BPF program and log its median, p90 and p99 at each report"),
    SONDE_OPT_NESTED("include", prof_config, include, sonde__select_options,
                     "profile only processes matching one of these (empty: every process)"),
    SONDE_OPT_NESTED("exclude", prof_config, exclude, sonde__select_options,
                     "never profile processes matching one of these (sonde itself never is)"),
    SONDE_OPT_END,
};

static int prof_validate(const void *config, char *err, size_t errlen) {
  const prof_config *c = config;
  int rc = sonde__select_validate(&c->include, &c->exclude, err, errlen);
  if (rc) return rc;
  /* `sonde validate` runs this too: a configuration that cannot run here says why. */
  return sonde__check_host("the eBPF profiler", SONDE__NEED_PERF_EVENT, err, errlen);
}

/* ---- state ----------------------------------------------------------------------------------- */

typedef struct prof prof;

/* What a process was before its last exec (or the process that had its pid before): kept until
 * the report that flushes the samples it had in the interval. */
typedef struct image {
  struct image *next;
  uint32_t gen;
  int verdict;
  bool have_info;
  prof_procinfo info;
  char comm[16];
  char *exe_hint;
  uint64_t exe_dev, exe_ino;
} image;

typedef struct proc {
  uint32_t pid;
  uint32_t gen;   /* images of this pid so far (exec, pid reuse): part of the aggregation key */
  image *old;     /* earlier images with samples in this interval */
  char *exe_hint; /* the path of the last exec (BPF), when /proc could not be read */
  uint64_t exe_dev, exe_ino; /* the executable file, from BPF (0: not known) */
  uint32_t start_ms;         /* the process's start, from BPF (sonde_prof_sample.start_ms) */
  bool have_start;
  struct proc *next; /* hash chain */
  prof_procinfo info;
  bool have_info;
  bool loading;
  bool exited;
  bool reload_wanted;
  int verdict;          /* 1 profile, -1 drop, 0 not known yet */
  uint64_t loaded_at;   /* uv_hrtime of the last read */
  uint64_t samples;     /* in the current interval */
  unsigned quiet;       /* intervals without samples */
  char comm[16];        /* thread name of the first sample: the name when /proc is gone */
  struct pend *pending; /* stack-copy samples waiting for this process's maps and tables */
  struct pend **pend_tail;
  unsigned npend;
  uint64_t (*held)[2]; /* (dev, ino) of the files whose refs this process holds */
  size_t nheld;
} proc;

/* A sample whose walk BPF left to user space (struct sonde_prof_sample_stack, stack trimmed to
 * stack_len), kept until the process's maps and the tables of its stack's files are known. */
typedef struct pend {
  struct pend *next;
  unsigned tries; /* reads asked for it */
  struct sonde_prof_sample_stack r;
} pend;
#define PEND_MAX_PROC 64 /* per process; more are walked with what is known */
#define PEND_MAX 256     /* in all: ~4 MiB of stack copies at most */
#define STACK_CANDIDATES 8192

/* A file's unwind rows, built on the thread pool for the loop to copy into the BPF array. */
#define UW_MAX_LOADS 8
typedef struct uw_newfile {
  uint64_t dev, ino;
  struct sonde_uw_row *rows; /* NULL: the file has no usable table; mmap'ed */
  size_t n;                  /* row slots: the rows, then their index */
  uint32_t n_rows;
  uint64_t base; /* file address the rows' pc count from */
  uw_index index;
  uw_load loads[UW_MAX_LOADS];
  size_t nloads;
} uw_newfile;

/* A file whose rows are in the BPF array: [first, first + n). Never evicted yet (bounded by
 * SONDE_UW_ROWS). */
typedef struct uw_file {
  uint64_t dev, ino;
  uint32_t first, n; /* row slots: n_rows rows, then their index */
  uint32_t n_rows;
  uint64_t base;
  uw_index index;
  uint32_t refs;  /* processes whose published mappings use it; 0: freed at the next report */
  uint32_t batch; /* the registration batch that brought it (kept while that batch is published) */
  uw_load loads[UW_MAX_LOADS];
  size_t nloads;
} uw_file;

/* A range of free rows of the BPF array. */
typedef struct uw_range {
  uint32_t first, n;
} uw_range;

typedef struct load_job {
  prof *p;
  uint32_t pid;
  uint32_t gen; /* the image it was asked for: a read for an image gone since is dropped */
  prof_procinfo info;
  int rc;
  uw_newfile *newfiles;
  size_t nnew;
  /* The user addresses of the sample that asked for this read, and the words of its stack copy
   * that may be return addresses: tables are built only for the files they fall in (most mapped
   * files are never sampled). */
  uint64_t addrs[SONDE_PROF_USTACK_MAX + STACK_CANDIDATES];
  size_t naddrs;
} load_job;

/* Key of one aggregated sample; followed by n_kstack + n_ustack addresses. */
typedef struct agg_key {
  uint32_t pid, tid, cpu;
  uint16_t n_kstack, n_ustack;
  char comm[16];
  uint32_t gen, pad; /* the process image (proc.gen) */
} agg_key;
_Static_assert(sizeof(agg_key) == 40, "agg_key has no padding");

struct prof {
  const sonde_host *h;
  const prof_config *cfg;
  struct sonde_profiler *skel;
  struct ring_buffer *rb;
  prof_bidcache *bids; /* shared with the pool threads (it has its own lock) */
  /* Unwind tables: the registry is written on the loop and read by pool threads, under uw_mu. */
  pthread_mutex_t uw_mu;
  uw_file *uwf;
  size_t nuwf, capuwf;
  uint32_t uw_next;  /* rows from here on were never used */
  uint32_t uw_used;  /* rows held by files */
  uint32_t uw_batch; /* registrations so far */
  uw_range *uw_free; /* freed ranges below uw_next, sorted, coalesced */
  size_t nfree, capfree;
  struct sonde_uw_row *uw_mem; /* the BPF array, mmap'ed */
  bool uw_full_logged;
  uv_poll_t *poll; /* freed in its close callback */
  int ncpus;
  int *pfd;                /* perf event fd per possible CPU, -1 when none */
  struct bpf_link **links; /* per possible CPU */
  struct bpf_link *exit_link, *exec_link;
  sonde_timer *timer;
  sonde_timer *drain; /* BPF wakes us only when the ring fills up: drain it periodically */
  proc *buckets[PROC_BUCKETS];
  size_t nprocs;
  unsigned jobs; /* load jobs in flight */
  bool stopping;
  void (*shutdown_done)(void *arg);
  void *shutdown_arg;

  kmap agg; /* agg_key + frames -> index into counts */
  int64_t *counts;
  size_t ncounts, counts_cap;
  uint64_t interval_start_ns; /* CLOCK_REALTIME */

  char hostname[256];
  uint8_t kernel_build_id[PROF_BUILD_ID_MAX];
  size_t kernel_build_id_len;
  uint32_t self_pid;
  uint64_t lost_seen; /* Executable paths by file (device as in prof_mapping, inode), learnt from
                       * every read: names a process gone before its own read (a short-lived child
                       * of a known executable). Direct-mapped, a collision replaces. */
  struct {
    uint64_t dev, ino;
    char *path;
  } exe_cache[EXE_CACHE];
  unsigned npend;   /* pending stack-copy samples, all processes */
  unsigned nwanted; /* processes with reload_wanted */

  sonde_metric *m_samples, *m_lost, *m_procs, *m_batches, *m_refused, *m_proc_reads, *m_uw_rows,
      *m_uw_files, *m_evicted, *m_copied, *m_truncated;
};

static void metric_add(prof *p, sonde_metric *m, double d) {
  if (m) p->h->api->metric_add(m, d);
}

static proc *proc_find(prof *p, uint32_t pid) {
  for (proc *q = p->buckets[pid % PROC_BUCKETS]; q; q = q->next)
    if (q->pid == pid) return q;
  return NULL;
}

static void proc_release(prof *p, proc *q);

static void images_free(proc *q) {
  for (image *im = q->old, *nx; im; im = nx) {
    nx = im->next;
    prof_procinfo_free(&im->info);
    free(im->exe_hint);
    free(im);
  }
  q->old = NULL;
}

static void proc_unlink_free(prof *p, proc *q) {
  proc **pp = &p->buckets[q->pid % PROC_BUCKETS];
  while (*pp && *pp != q)
    pp = &(*pp)->next;
  if (*pp) *pp = q->next;
  if (p->skel) bpf_map__delete_elem(p->skel->maps.uw_procs, &q->pid, sizeof(q->pid), 0);
  proc_release(p, q);
  images_free(q);
  free(q->exe_hint);
  if (q->reload_wanted) p->nwanted--;
  for (pend *x = q->pending, *nx; x; x = nx) {
    nx = x->next;
    free(x);
    p->npend--;
  }
  prof_procinfo_free(&q->info);
  free(q);
  p->nprocs--;
  metric_add(p, p->m_evicted, 1);
  if (p->m_procs) p->h->api->metric_set(p->m_procs, (double)p->nprocs);
}

/* ---- process selection ----------------------------------------------------------------------- */

static bool select_keep(const prof_config *c, uint32_t pid, const prof_procinfo *pi) {
  const sonde__proc_ident *id = pi ? &pi->id : NULL;
  return (sonde__select_empty(&c->include) || sonde__select_match(&c->include, pid, id)) &&
         !sonde__select_match(&c->exclude, pid, id);
}

/* Decides once the process is known; a dropped pid goes to the BPF filter so its samples stop. */
static void proc_decide(prof *p, proc *q) {
  const prof_config *c = p->cfg;
  bool only_pids = sonde__select_pids_only(&c->include) && sonde__select_pids_only(&c->exclude);
  if (!q->have_info && !only_pids) return;
  bool keep = select_keep(c, q->pid, q->have_info ? &q->info : NULL);
  q->verdict = keep ? 1 : -1;
  if (!keep) {
    uint32_t v = SONDE_PROF_PID_EXCLUDE;
    bpf_map__update_elem(p->skel->maps.pid_filter, &q->pid, sizeof(q->pid), &v, sizeof(v), BPF_ANY);
  }
}

/* ---- /proc reads on the thread pool ---------------------------------------------------------- */

/* The vdso is one image for every process (the kernel's): its rows are built once, from sonde's
 * own, and found under this key. */
#define VDSO_DEV 0
#define VDSO_INO UINT64_MAX

/* The unwind-table key of a mapping: false for anonymous memory (JIT: frame pointers). */
static bool map_key(const prof_mapping *m, uint64_t *dev, uint64_t *ino) {
  if (m->inode && m->path[0] == '/') {
    *dev = m->dev;
    *ino = m->inode;
    return true;
  }
  if (!strcmp(m->path, "[vdso]")) {
    *dev = VDSO_DEV;
    *ino = VDSO_INO;
    return true;
  }
  return false;
}

/* The registered file (dev, ino), or NULL (loop thread: no lock, only it writes). */
static const uw_file *uw_find(prof *p, uint64_t dev, uint64_t ino) {
  for (size_t k = 0; k < p->nuwf; k++)
    if (p->uwf[k].dev == dev && p->uwf[k].ino == ino) return &p->uwf[k];
  return NULL;
}

static uw_file *uw_find_mut(prof *p, uint64_t dev, uint64_t ino) {
  return (uw_file *)uw_find(p, dev, ino);
}

static bool uw_known(prof *p, uint64_t dev, uint64_t ino) {
  bool found = false;
  pthread_mutex_lock(&p->uw_mu);
  for (size_t i = 0; i < p->nuwf && !found; i++)
    found = p->uwf[i].dev == dev && p->uwf[i].ino == ino;
  pthread_mutex_unlock(&p->uw_mu);
  return found;
}

/* nf's BPF rows and their index from table t (mmap, not malloc: see uw_table's rows). Returns
 * false on out of memory. */
static bool uw_rows_make(const uw_table *t, uw_newfile *nf) {
  size_t n = uw_bpf_rows_count(t);
  struct sonde_uw_row *rows = malloc(n * sizeof(*rows));
  if (!rows) return false;
  nf->base = t->rows[0].pc;
  for (size_t i = 0; i < n; i++)
    rows[i] = uw_bpf_row(&t->rows[i], nf->base);
  size_t nslots = uw_index_plan(rows, n, &nf->index);
  void *mem = mmap(NULL, (n + nslots) * sizeof(*rows), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    free(rows);
    return false;
  }
  nf->rows = mem;
  memcpy(nf->rows, rows, n * sizeof(*rows));
  if (nslots) uw_index_fill(rows, n, &nf->index, nf->rows + n);
  free(rows);
  nf->n_rows = (uint32_t)n;
  nf->n = n + nslots;
  return true;
}

/* Builds the rows of one mapped file (pool thread). Returns false only on out of memory. */
static bool uw_build_file(int pid, const prof_mapping *m, uw_newfile *nf) {
  char path[PATH_MAX + 64];
  snprintf(path, sizeof(path), "/proc/%d/root%s", pid, m->path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, pid, m->start, m->end);
    fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  struct stat st;
  if (fd < 0) return true;
  if (fstat(fd, &st) || st.st_size < 64) {
    close(fd);
    return true;
  }
  const uint8_t *buf = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (buf == MAP_FAILED) return true;
  uw_table t = {0};
  bool ok = true;
  /* One build at a time: a big table takes tens of MB while it is built (rows, their sorted
   * copy, the BPF form), and the pool threads all building at start-up made sonde's peak RSS. */
  static pthread_mutex_t build_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&build_mu);
  int rc = uw_table_build(buf, (size_t)st.st_size, &t);
  nf->nloads = uw_elf_loads(buf, (size_t)st.st_size, nf->loads, UW_MAX_LOADS);
  if (rc == SONDE_ENOMEM) ok = false;
  if (!rc && t.n && nf->nloads) ok = uw_rows_make(&t, nf);
  uw_table_free(&t);
  pthread_mutex_unlock(&build_mu);
  munmap((void *)buf, (size_t)st.st_size);
  return ok;
}

static void load_work(void *arg) {
  load_job *j = arg;
  prof *p = j->p;
  j->rc = prof_procinfo_read((int)j->pid, p->bids, &j->info);
  if (j->rc) return;
  if (!select_keep(p->cfg, j->pid, &j->info)) return; /* not profiled: no tables */
  /* Unwind tables of the files this process maps that no process brought yet. */
  size_t cap = j->info.n_maps;
  if (!cap || !(j->newfiles = calloc(cap, sizeof(*j->newfiles)))) return;
  for (size_t i = 0; i < j->info.n_maps; i++) {
    const prof_mapping *m = &j->info.maps[i];
    if (!m->inode || m->path[0] != '/') continue; /* anonymous; the vdso is built at start */
    bool hit = false;
    for (size_t a = 0; a < j->naddrs && !hit; a++)
      hit = j->addrs[a] >= m->start && j->addrs[a] < m->end;
    if (!hit || uw_known(p, m->dev, m->inode)) continue;
    bool dup = false;
    for (size_t k = 0; k < j->nnew && !dup; k++)
      dup = j->newfiles[k].dev == m->dev && j->newfiles[k].ino == m->inode;
    if (dup) continue;
    uw_newfile *nf = &j->newfiles[j->nnew];
    nf->dev = m->dev;
    nf->ino = m->inode;
    if (!uw_build_file((int)j->pid, m, nf)) break;
    j->nnew++;
  }
}

/* Row ranges of the BPF array (loop thread): first fit among the freed ranges, else the untouched
 * end. */
static bool rows_alloc(prof *p, uint32_t n, uint32_t *first) {
  for (size_t i = 0; i < p->nfree; i++) {
    if (p->uw_free[i].n < n) continue;
    *first = p->uw_free[i].first;
    p->uw_free[i].first += n;
    p->uw_free[i].n -= n;
    if (!p->uw_free[i].n)
      memmove(&p->uw_free[i], &p->uw_free[i + 1], (--p->nfree - i) * sizeof(uw_range));
    return true;
  }
  if (n > SONDE_UW_ROWS - p->uw_next) return false;
  *first = p->uw_next;
  p->uw_next += n;
  return true;
}

static void rows_free(prof *p, uint32_t first, uint32_t n) {
  if (!n) return;
  size_t i = 0;
  while (i < p->nfree && p->uw_free[i].first < first)
    i++;
  bool prev = i > 0 && p->uw_free[i - 1].first + p->uw_free[i - 1].n == first;
  bool next = i < p->nfree && first + n == p->uw_free[i].first;
  if (prev && next) {
    p->uw_free[i - 1].n += n + p->uw_free[i].n;
    memmove(&p->uw_free[i], &p->uw_free[i + 1], (--p->nfree - i) * sizeof(uw_range));
  } else if (prev) {
    p->uw_free[i - 1].n += n;
  } else if (next) {
    p->uw_free[i].first = first;
    p->uw_free[i].n += n;
  } else {
    if (p->nfree == p->capfree) {
      size_t nc = p->capfree ? p->capfree * 2 : 32;
      uw_range *v = realloc(p->uw_free, nc * sizeof(*v));
      if (!v) return; /* the rows leak until sonde restarts: only on out of memory */
      p->uw_free = v;
      p->capfree = nc;
    }
    memmove(&p->uw_free[i + 1], &p->uw_free[i], (p->nfree - i) * sizeof(uw_range));
    p->uw_free[i] = (uw_range){first, n};
    p->nfree++;
  }
  /* A free range at the end goes back to the untouched part. */
  if (p->nfree && p->uw_free[p->nfree - 1].first + p->uw_free[p->nfree - 1].n == p->uw_next) {
    p->uw_next = p->uw_free[p->nfree - 1].first;
    p->nfree--;
  }
}

static void uw_gauges(prof *p) {
  if (p->m_uw_rows) p->h->api->metric_set(p->m_uw_rows, p->uw_used);
  if (p->m_uw_files) p->h->api->metric_set(p->m_uw_files, (double)p->nuwf);
}

/* Frees the files no process uses any more (loop thread). No uw_procs entry points at them: an
 * entry is rewritten or deleted before its process drops its references. */
static void uw_sweep(prof *p) {
  for (size_t i = 0; i < p->nuwf;) {
    uw_file *f = &p->uwf[i];
    if (f->refs || f->batch == p->uw_batch) {
      i++;
      continue;
    }
    rows_free(p, f->first, f->n);
    p->uw_used -= f->n;
    pthread_mutex_lock(&p->uw_mu);
    p->uwf[i] = p->uwf[--p->nuwf];
    pthread_mutex_unlock(&p->uw_mu);
  }
  uw_gauges(p);
}

/* Loop thread: copies a new file's rows into the BPF array and registers it. */
static void uw_add(prof *p, const uw_newfile *nf) {
  {
    if (uw_known(p, nf->dev, nf->ino)) return;
    if (p->nuwf == p->capuwf) {
      size_t nc = p->capuwf ? p->capuwf * 2 : 64;
      pthread_mutex_lock(&p->uw_mu);
      uw_file *v = realloc(p->uwf, nc * sizeof(*v));
      if (v) {
        p->uwf = v;
        p->capuwf = nc;
      }
      pthread_mutex_unlock(&p->uw_mu);
      if (!v) return;
    }
    uw_file f = {.dev = nf->dev,
                 .ino = nf->ino,
                 .nloads = nf->nloads,
                 .batch = p->uw_batch,
                 .base = nf->base,
                 .index = nf->index};
    memcpy(f.loads, nf->loads, sizeof(f.loads));
    uint32_t first;
    if (nf->rows && p->uw_mem && nf->n + UW_RESERVE > SONDE_UW_ROWS - p->uw_used) {
      uw_sweep(p); /* make room from the files nobody maps any more */
    }
    if (nf->rows && p->uw_mem) {
      /* A big table (compilers, node: 100k-500k rows) must leave UW_RESERVE rows free, so that
       * the small libraries every process maps (libc ~28k rows) still find room on a machine
       * whose builds fill the array; the big file is walked with frame pointers instead. */
      bool room = nf->n <= UW_BIG_ROWS || nf->n + UW_RESERVE <= SONDE_UW_ROWS - p->uw_used;
      if (room && nf->n <= SONDE_UW_ROWS && rows_alloc(p, (uint32_t)nf->n, &first)) {
        memcpy(p->uw_mem + first, nf->rows, nf->n * sizeof(*nf->rows));
        f.first = first;
        f.n = (uint32_t)nf->n;
        f.n_rows = nf->n_rows;
        p->uw_used += f.n;
      } else if (!p->uw_full_logged) {
        p->uw_full_logged = true;
        sonde_log(p->h, SONDE_LOG_WARN,
                  "unwind tables full (%u of %u rows in use): files that do not fit (a table "
                  "of more than %u rows must leave %u free) are walked with frame pointers",
                  p->uw_used, SONDE_UW_ROWS, UW_BIG_ROWS, UW_RESERVE);
      }
    }
    pthread_mutex_lock(&p->uw_mu);
    p->uwf[p->nuwf++] = f;
    pthread_mutex_unlock(&p->uw_mu);
    uw_gauges(p);
  }
}

static void uw_register(prof *p, load_job *j) {
  p->uw_batch++;
  for (size_t i = 0; i < j->nnew; i++)
    uw_add(p, &j->newfiles[i]);
}

/* The vdso's rows, from sonde's own vdso (the kernel maps the same image into every process). */
static void uw_add_vdso(prof *p) {
  const uint8_t *base = (const uint8_t *)getauxval(AT_SYSINFO_EHDR);
  FILE *f = fopen("/proc/self/maps", "re");
  if (!base || !f) {
    if (f) fclose(f);
    return;
  }
  char line[512];
  size_t len = 0;
  while (!len && fgets(line, sizeof(line), f)) {
    unsigned long a, b;
    if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &a, &b) == 2 && a == (uintptr_t)base)
      len = b - a;
  }
  fclose(f);
  if (!len) return;
  uw_table t = {0};
  uw_newfile nf = {.dev = VDSO_DEV, .ino = VDSO_INO};
  nf.nloads = uw_elf_loads(base, len, nf.loads, UW_MAX_LOADS);
  if (!uw_table_build(base, len, &t) && t.n) uw_rows_make(&t, &nf);
  uw_table_free(&t);
  uw_add(p, &nf);
  if (nf.rows) munmap(nf.rows, nf.n * sizeof(*nf.rows));
  uw_file *vf = uw_find_mut(p, VDSO_DEV, VDSO_INO);
  if (vf) vf->refs = 1; /* for good */
}

/* The walker's view of mapping m: rows and bias when its file has rows, frame pointers when it
 * has none or is anonymous; need when its file's rows were never built. Loop thread (reads the
 * registry without the lock: only this thread writes it). */
static uw_walk_map uw_view(prof *p, const prof_mapping *m, const uw_file **file) {
  uw_walk_map v = {.start = m->start, .end = m->end};
  uint64_t dev, ino;
  if (file) *file = NULL;
  if (!map_key(m, &dev, &ino)) return v;
  const uw_file *f = uw_find(p, dev, ino);
  if (!f) {
    v.need = p->uw_mem != NULL;
    return v;
  }
  if (!f->n || !p->uw_mem) return v;
  for (size_t l = 0; l < f->nloads; l++) {
    const uw_load *ld = &f->loads[l];
    if ((ld->offset & ~(uint64_t)0xfff) <= m->offset && m->offset < ld->offset + ld->filesz) {
      v.bias = m->start - m->offset + ld->offset - ld->vaddr;
      v.rows = p->uw_mem + f->first;
      v.n_rows = f->n_rows;
      v.base = f->base;
      if (file) *file = f;
      break;
    }
  }
  return v;
}

/* q drops its references to files (loop thread). */
static void proc_release(prof *p, proc *q) {
  for (size_t i = 0; i < q->nheld; i++) {
    uw_file *f = uw_find_mut(p, q->held[i][0], q->held[i][1]);
    if (f && f->refs) f->refs--;
  }
  free(q->held);
  q->held = NULL;
  q->nheld = 0;
}

/* q takes references to the registered files it maps, then drops the ones it held before. */
static void proc_hold(prof *p, proc *q) {
  uint64_t(*nh)[2] = q->info.n_maps ? malloc(q->info.n_maps * sizeof(*nh)) : NULL;
  size_t nn = 0;
  for (size_t i = 0; nh && i < q->info.n_maps; i++) {
    uint64_t dev, ino;
    if (!map_key(&q->info.maps[i], &dev, &ino)) continue;
    uw_file *f = uw_find_mut(p, dev, ino);
    bool dup = false;
    for (size_t k = 0; k < nn && !dup; k++)
      dup = nh[k][0] == dev && nh[k][1] == ino;
    if (!f || dup) continue;
    f->refs++;
    nh[nn][0] = dev;
    nh[nn++][1] = ino;
  }
  proc_release(p, q);
  q->held = nh;
  q->nheld = nn;
}

/* Loop thread: tells BPF q's executable mappings: with rows, frame pointers (anonymous, no
 * table), and leaves out the files whose rows were never built so that BPF stops there and sends
 * a stack copy (which asks for them). */
static void uw_publish(prof *p, proc *q) {
  if (!p->skel || !q->have_info) return;
  struct sonde_uw_proc up;
  memset(&up, 0, sizeof(up));
  /* Maps not read (permissions): frame pointers everywhere rather than a copy per sample. */
  if (!q->info.n_maps) up.flags |= SONDE_UW_PROC_PARTIAL;
  for (size_t i = 0; i < q->info.n_maps; i++) {
    const uw_file *f;
    uw_walk_map v = uw_view(p, &q->info.maps[i], &f);
    if (v.need) continue;
    if (up.n == SONDE_UW_MAPS) {
      up.flags |= SONDE_UW_PROC_PARTIAL;
      break;
    }
    struct sonde_uw_map *um = &up.m[up.n++];
    um->start = v.start;
    um->end = v.end;
    um->bias = v.bias;
    um->first_row = v.rows ? (uint32_t)(v.rows - p->uw_mem) : 0;
    um->n_rows = v.n_rows;
    if (f) {
      um->base = f->base;
      um->index_n = f->index.n;
      um->index_shift = f->index.shift;
    }
  }
  bpf_map__update_elem(p->skel->maps.uw_procs, &q->pid, sizeof(q->pid), &up, sizeof(up), BPF_ANY);
  proc_hold(p, q);
}

static void job_free(load_job *j) {
  for (size_t i = 0; i < j->nnew; i++)
    if (j->newfiles[i].rows)
      munmap(j->newfiles[i].rows, j->newfiles[i].n * sizeof(*j->newfiles[i].rows));
  free(j->newfiles);
  prof_procinfo_free(&j->info);
  free(j);
}

static void maybe_finish_shutdown(prof *p);
static void pend_run(prof *p, proc *q, bool force);
static void proc_queue_read(prof *p, proc *q, const void *addrs, size_t naddrs);

static size_t exe_slot(uint64_t dev, uint64_t ino) {
  return (size_t)(((dev * 0x9e3779b97f4a7c15ull) ^ (ino * 0xff51afd7ed558ccdull)) >> 40) %
         EXE_CACHE;
}

/* Remembers the executable of a process just read (the mapping of its exe path names its file). */
static void exe_cache_learn(prof *p, const prof_procinfo *pi) {
  if (!pi->id.exe_path) return;
  for (size_t i = 0; i < pi->n_maps; i++) {
    const prof_mapping *m = &pi->maps[i];
    if (!m->inode || strcmp(m->path, pi->id.exe_path)) continue;
    size_t k = exe_slot(m->dev, m->inode);
    /* Same file, same path: known. A different path for the same inode is a file deleted and
     * its inode reused (tests' temporary directories): the newest read wins. */
    if (p->exe_cache[k].path && p->exe_cache[k].dev == m->dev && p->exe_cache[k].ino == m->inode &&
        !strcmp(p->exe_cache[k].path, pi->id.exe_path))
      return;
    char *d = strdup(pi->id.exe_path);
    if (!d) return;
    free(p->exe_cache[k].path);
    p->exe_cache[k].dev = m->dev;
    p->exe_cache[k].ino = m->inode;
    p->exe_cache[k].path = d;
    return;
  }
}

static const char *exe_cache_find(const prof *p, uint64_t dev, uint64_t ino) {
  if (!ino) return NULL;
  size_t k = exe_slot(dev, ino);
  if (!p->exe_cache[k].path || p->exe_cache[k].dev != dev || p->exe_cache[k].ino != ino)
    return NULL;
  /* The file must still be there: a deleted file's inode is reused by the next file created
   * (concurrent test runs named each other's programs). A path only valid in another mount
   * namespace is not used either; the exec path from BPF comes first anyway. */
  struct stat st;
  if (stat(p->exe_cache[k].path, &st) || st.st_ino != ino ||
      (((uint64_t)major(st.st_dev) << 32) | minor(st.st_dev)) != dev)
    return NULL;
  return p->exe_cache[k].path;
}

/* The path of pid's last exec as BPF saw it, when /proc could not tell (the process is gone). */
static void proc_exec_hint(prof *p, proc *q) {
  struct sonde_prof_exec x;
  if (q->exe_hint || !p->skel ||
      bpf_map__lookup_elem(p->skel->maps.execs, &q->pid, sizeof(q->pid), &x, sizeof(x), 0))
    return;
  x.path[sizeof(x.path) - 1] = 0;
  if (x.path[0]) q->exe_hint = strdup(x.path);
}

static void load_done(void *arg, int status) {
  load_job *j = arg;
  prof *p = j->p;
  p->jobs--;
  if (status == 0 && !p->stopping) uw_register(p, j);
  proc *q = proc_find(p, j->pid);
  if (q && q->loading && j->gen != q->gen) {
    /* The process exec'd (or its pid was reused) while this read ran: read it again. */
    q->loading = false;
    job_free(j);
    proc_queue_read(p, q, NULL, 0);
    maybe_finish_shutdown(p);
    return;
  }
  if (q && q->loading) {
    q->loading = false;
    q->loaded_at = uv_hrtime();
    metric_add(p, p->m_proc_reads, 1);
    /* A re-read of a process that is gone keeps what the first read found. */
    if (status == 0 && (j->rc == 0 || !q->have_info) && (j->info.id.exe_name || j->info.n_maps)) {
      prof_procinfo_free(&q->info);
      q->info = j->info;
      memset(&j->info, 0, sizeof(j->info));
      q->have_info = true;
    }
    if (!q->have_info || !q->info.id.exe_path) proc_exec_hint(p, q);
    if (q->have_info) exe_cache_learn(p, &q->info);
    if (!q->verdict) proc_decide(p, q);
    if (q->verdict >= 0 && !p->stopping) uw_publish(p, q);
    if (q->verdict >= 0) pend_run(p, q, false);
    if (q->exited && !q->samples && !q->pending && !q->loading) proc_unlink_free(p, q);
  }
  job_free(j);
  maybe_finish_shutdown(p);
}

/* addrs: the naddrs 64-bit user frames of the sample that asks (borrowed). */
static void proc_queue_read(prof *p, proc *q, const void *addrs, size_t naddrs) {
  if (q->loading || p->stopping) return;
  load_job *j = calloc(1, sizeof(*j));
  if (!j) return; /* tried again at the next unknown address */
  j->p = p;
  j->pid = q->pid;
  j->gen = q->gen;
  j->naddrs = naddrs < SONDE_PROF_USTACK_MAX ? naddrs : SONDE_PROF_USTACK_MAX;
  if (j->naddrs) memcpy(j->addrs, addrs, j->naddrs * sizeof(j->addrs[0]));
  /* The words of the oldest waiting stack copy that look like user code addresses: the files its
   * walk will go through are among the files they fall in. */
  for (const pend *x = q->pending; x && j->naddrs < sizeof(j->addrs) / 8; x = x->next) {
    const struct sonde_prof_sample_stack *r = &x->r;
    if (j->naddrs < sizeof(j->addrs) / 8) j->addrs[j->naddrs++] = r->s.pc;
    for (uint32_t o = 0; o + 8 <= r->stack_len && j->naddrs < sizeof(j->addrs) / 8; o += 8) {
      uint64_t v;
      memcpy(&v, r->stack + o, 8);
      if (v >= 0x10000 && v < 0x800000000000ull) j->addrs[j->naddrs++] = v;
    }
  }
  if (p->h->api->queue_work(p->h, load_work, load_done, j)) {
    free(j);
    return;
  }
  q->loading = true;
  p->jobs++;
  if (q->reload_wanted) {
    q->reload_wanted = false;
    p->nwanted--;
  }
}

/* The process of pid, created (without a read queued yet: *created) when new. */
static proc *proc_get(prof *p, uint32_t pid, bool *created) {
  proc *q = proc_find(p, pid);
  *created = false;
  if (q) return q;
  if (!(q = calloc(1, sizeof(*q)))) return NULL;
  q->pid = pid;
  q->pend_tail = &q->pending;
  q->next = p->buckets[pid % PROC_BUCKETS];
  p->buckets[pid % PROC_BUCKETS] = q;
  p->nprocs++;
  if (p->m_procs) p->h->api->metric_set(p->m_procs, (double)p->nprocs);
  proc_decide(p, q); /* pid-only selections are known at once */
  *created = true;
  return q;
}

/* ---- ring buffer records --------------------------------------------------------------------- */

/* q starts a new image (exec, or a new process with its pid): what it was is kept for the
 * samples it has in this interval, and everything else is learnt again. */
static void proc_new_image(prof *p, proc *q) {
  if (q->pending) pend_run(p, q, true); /* walked with the old maps */
  image *im = q->samples ? calloc(1, sizeof(*im)) : NULL;
  if (im) {
    im->gen = q->gen;
    im->verdict = q->verdict;
    im->have_info = q->have_info;
    im->info = q->info;
    memcpy(im->comm, q->comm, sizeof(im->comm));
    im->exe_hint = q->exe_hint;
    im->exe_dev = q->exe_dev;
    im->exe_ino = q->exe_ino;
    im->next = q->old;
    q->old = im;
  } else {
    prof_procinfo_free(&q->info);
    free(q->exe_hint);
  }
  memset(&q->info, 0, sizeof(q->info));
  q->exe_hint = NULL;
  q->exe_dev = q->exe_ino = 0;
  q->have_info = false;
  q->comm[0] = 0;
  q->gen++;
  /* The old image's mappings must not steer the walk of the new one, nor its verdict apply. */
  bpf_map__delete_elem(p->skel->maps.uw_procs, &q->pid, sizeof(q->pid), 0);
  if (q->verdict < 0) bpf_map__delete_elem(p->skel->maps.pid_filter, &q->pid, sizeof(q->pid), 0);
  proc_release(p, q);
  q->verdict = 0;
  proc_decide(p, q);
}

/* Counts one sample of q with user stack ustack[0..nu) (leaf first). */
static void agg_add(prof *p, proc *q, const struct sonde_prof_sample *s, const uint64_t *ustack,
                    uint32_t nu) {
  uint32_t nk = s->n_kstack <= SONDE_PROF_KSTACK_MAX ? s->n_kstack : SONDE_PROF_KSTACK_MAX;
  if (nu > SONDE_PROF_USTACK_MAX) nu = SONDE_PROF_USTACK_MAX;
  uint64_t keybuf[(sizeof(agg_key) / 8) + SONDE_PROF_KSTACK_MAX + SONDE_PROF_USTACK_MAX];
  agg_key *k = (agg_key *)keybuf;
  memset(k, 0, sizeof(*k));
  k->pid = s->pid;
  k->tid = s->tid;
  k->cpu = s->cpu;
  k->gen = q->gen;
  k->n_kstack = (uint16_t)nk;
  k->n_ustack = (uint16_t)nu;
  memcpy(k->comm, s->comm, sizeof(k->comm));
  k->comm[15] = 0;
  uint64_t *fr = keybuf + sizeof(agg_key) / 8;
  memcpy(fr, s->kstack, nk * 8);
  memcpy(fr + nk, ustack, nu * 8);
  size_t klen = sizeof(agg_key) + (nk + nu) * 8;

  if (p->ncounts == p->counts_cap) {
    size_t nc = p->counts_cap ? p->counts_cap * 2 : 256;
    int64_t *v = realloc(p->counts, nc * sizeof(*v));
    if (!v) return;
    p->counts = v;
    p->counts_cap = nc;
  }
  int32_t idx;
  int rc = kmap_intern(&p->agg, keybuf, klen, (int32_t)p->ncounts, &idx);
  if (rc < 0) return;
  if (rc == 1) p->counts[p->ncounts++] = 0;
  p->counts[idx]++;
  q->samples++;
  metric_add(p, p->m_samples, 1);
}

/* Finishes the walk of a stack-copy sample with q's maps and the tables known now. Returns false,
 * counting nothing, when it stopped at a file whose rows are not built and may_wait; otherwise
 * counts the sample. A stack that could not be walked to its end gets a last frame of address 0
 * (no mapping): it shows as an unknown root rather than as a complete stack, and is counted in
 * samples_truncated. */
static bool pend_walk(prof *p, proc *q, const struct sonde_prof_sample_stack *r, bool may_wait,
                      uint64_t *stop_pc) {
  const struct sonde_prof_sample *s = &r->s;
  uint64_t frames[SONDE_PROF_USTACK_MAX];
  size_t n = s->n_ustack <= SONDE_PROF_USTACK_MAX ? s->n_ustack : SONDE_PROF_USTACK_MAX;
  memcpy(frames, s->ustack, n * 8);
  int rc = UW_WALK_END;
  if (n) {
    size_t nm = q->have_info ? q->info.n_maps : 0;
    uw_walk_map *maps = nm ? malloc(nm * sizeof(*maps)) : NULL;
    if (nm && !maps) nm = 0;
    for (size_t i = 0; i < nm; i++)
      maps[i] = uw_view(p, &q->info.maps[i], NULL);
    rc = uw_walk(maps, nm, s->pc, s->sp, s->fp, !!(s->flags & SONDE_PROF_F_EXACT_PC), r->stack,
                 r->stack_len <= SONDE_PROF_STACK_COPY ? r->stack_len : SONDE_PROF_STACK_COPY,
                 r->stack_addr, r->stack_len < SONDE_PROF_STACK_COPY, may_wait, frames, &n,
                 SONDE_PROF_USTACK_MAX);
    free(maps);
    if (rc == UW_WALK_NEED && may_wait) {
      if (stop_pc) *stop_pc = frames[n - 1];
      return false;
    }
  }
  if ((rc == UW_WALK_NEED || rc == UW_WALK_CUT) && n) {
    if (n == SONDE_PROF_USTACK_MAX) n--;
    frames[n++] = 0;
    metric_add(p, p->m_truncated, 1);
  }
  agg_add(p, q, s, frames, (uint32_t)n);
  return true;
}

/* A read of q's maps for a stack copy that stopped at an unknown pc: now, or from the drain timer
 * when the last read is too recent. */
static void proc_reread_soon(prof *p, proc *q) {
  if (q->loading) return;
  if (!q->have_info || uv_hrtime() - q->loaded_at >= STOP_RELOAD_NS) {
    proc_queue_read(p, q, NULL, 0);
  } else if (!q->reload_wanted) {
    q->reload_wanted = true;
    p->nwanted++;
  }
}

/* Walks q's waiting stack copies with what is known now. One that stops at a file without rows
 * asks for a read once (the read builds them); force: walk every one with what there is (before
 * a report, or when waiting is over). */
static void pend_run(prof *p, proc *q, bool force) {
  bool want = false;
  pend **pp = &q->pending;
  while (*pp) {
    pend *x = *pp;
    bool wait = !force && !x->tries && q->have_info && !p->stopping;
    if (!pend_walk(p, q, &x->r, wait, NULL)) {
      x->tries++;
      want = true;
      pp = &x->next;
      continue;
    }
    *pp = x->next;
    free(x);
    q->npend--;
    p->npend--;
  }
  q->pend_tail = pp;
  /* Once per waiting sample (tries): the read just done did not cover it, so another at once. */
  if (want) proc_queue_read(p, q, NULL, 0);
}

static int on_sample(prof *p, const struct sonde_prof_sample *s) {
  if (s->pid == p->self_pid) return 0;
  uint32_t nu = s->n_ustack <= SONDE_PROF_USTACK_MAX ? s->n_ustack : SONDE_PROF_USTACK_MAX;
  bool created;
  proc *q = proc_get(p, s->pid, &created);
  if (!q) return 0; /* out of memory: the sample is lost, the next one tries again */
  bool read = created;
  if (q->exited) {
    /* Records arrive in the order they were reserved and a process's exit comes after its last
     * sample, so a sample after the exit record is a new process with a reused pid: a new
     * image, read again. */
    q->exited = false;
    q->have_start = false;
    proc_new_image(p, q);
    metric_add(p, p->m_evicted,
               1); /* the exited process is gone; its entry now holds the new one */
    read = true;
  }
  if ((s->flags & SONDE_PROF_F_EXE) && q->have_start && s->start_ms != q->start_ms) {
    /* Another process with this pid whose predecessor's exit record was lost (ring buffer
     * full): a new image, its own verdict (BPF forgot the old one at the exit). */
    proc_new_image(p, q);
    metric_add(p, p->m_evicted, 1);
    read = true;
  }
  if (s->flags & SONDE_PROF_F_EXE) {
    q->start_ms = s->start_ms;
    q->have_start = true;
  }
  if ((s->flags & SONDE_PROF_F_EXE) && !q->exe_ino) {
    /* The kernel's dev_t (major << 20 | minor) in /proc/PID/maps' form (major << 32 | minor). */
    q->exe_dev = ((uint64_t)(s->exe_dev >> 20) << 32) | (s->exe_dev & 0xfffff);
    q->exe_ino = s->exe_ino;
  }
  if (q->verdict < 0) return 0;
  if (!q->comm[0]) memcpy(q->comm, s->comm, sizeof(q->comm) - 1);

  if (s->flags & SONDE_PROF_F_STACK_COPY) {
    /* BPF stopped at a pc in no mapping it knows: finish the walk here, now if the maps and
     * tables are there, else once the read that builds them is done. */
    const struct sonde_prof_sample_stack *r = (const void *)s;
    metric_add(p, p->m_copied, 1);
    uint64_t stop = 0;
    if (q->have_info && !q->loading && !read && pend_walk(p, q, r, true, &stop)) return 0;
    /* Stopped in a mapping already known whose file's rows were never built (the maps were read
     * mid-exec, before the sample's code was reached): the read that builds them cannot wait for
     * the re-read throttle, a short-lived process would be gone by then. */
    if (stop && prof_procinfo_find(&q->info, stop)) read = !q->loading;
    if (q->npend >= PEND_MAX_PROC || p->npend >= PEND_MAX) {
      pend_walk(p, q, r, false, NULL);
    } else {
      size_t len = r->stack_len <= SONDE_PROF_STACK_COPY ? r->stack_len : SONDE_PROF_STACK_COPY;
      pend *x = malloc(offsetof(pend, r.stack) + len);
      if (!x) return 0;
      memcpy(&x->r, r, offsetof(struct sonde_prof_sample_stack, stack) + len);
      x->r.stack_len = (uint32_t)len;
      x->next = NULL;
      x->tries = 0;
      *q->pend_tail = x;
      q->pend_tail = &x->next;
      q->npend++;
      p->npend++;
    }
    if (read)
      proc_queue_read(p, q, s->ustack, nu);
    else
      proc_reread_soon(p, q);
    return 0;
  }
  if (read) proc_queue_read(p, q, s->ustack, nu);

  /* An address in no known mapping (something was mapped since the last read), or in a file
   * whose unwind rows were never built: read again, at most once a second. */
  if (q->have_info && !q->loading && uv_hrtime() - q->loaded_at > RELOAD_MIN_NS) {
    for (uint32_t i = 0; i < nu; i++) {
      const prof_mapping *m = prof_procinfo_find(&q->info, s->ustack[i]);
      bool missing = !m;
      if (m && m->inode && m->path[0] == '/' && p->uw_mem) missing = !uw_find(p, m->dev, m->inode);
      if (missing) {
        proc_queue_read(p, q, s->ustack, nu);
        break;
      }
    }
  }
  agg_add(p, q, s, (const uint64_t *)s->ustack, nu);
  return 0;
}

static void on_exit_rec(prof *p, const struct sonde_prof_exit *e) {
  proc *q = proc_find(p, e->pid);
  /* pid_filter entries die with the process (pid reuse must not inherit a verdict). */
  bpf_map__delete_elem(p->skel->maps.pid_filter, &e->pid, sizeof(e->pid), 0);
  if (!q) return;
  q->exited = true;
  if (!q->samples && !q->loading && !q->pending) proc_unlink_free(p, q);
}

/* A sampled process called exec: samples from now on are of a new image. */
static void on_exec_rec(prof *p, const struct sonde_prof_exit *e) {
  proc *q = proc_find(p, e->pid);
  if (!q || q->exited) return;
  proc_new_image(p, q);
  proc_queue_read(p, q, NULL, 0); /* now, while the process surely lives */
}

static int rb_event(void *ctx, void *data, size_t size) {
  prof *p = ctx;
  if (size < 4) return 0;
  uint32_t type;
  memcpy(&type, data, 4);
  if (type == SONDE_PROF_REC_SAMPLE && size >= sizeof(struct sonde_prof_sample)) {
    const struct sonde_prof_sample *s = data;
    if ((s->flags & SONDE_PROF_F_STACK_COPY) && size < sizeof(struct sonde_prof_sample_stack))
      return 0;
    return on_sample(p, s);
  }
  if (type == SONDE_PROF_REC_EXIT && size >= sizeof(struct sonde_prof_exit)) on_exit_rec(p, data);
  if (type == SONDE_PROF_REC_EXEC && size >= sizeof(struct sonde_prof_exit)) on_exec_rec(p, data);
  return 0;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  prof *p = h->data;
  if (status < 0) {
    sonde_log(p->h, SONDE_LOG_ERROR, "ring buffer poll: %s", uv_strerror(status));
    return;
  }
  int n = ring_buffer__consume(p->rb);
  if (n < 0) sonde_log(p->h, SONDE_LOG_WARN, "ring buffer: %s", strerror(-n));
}

static void on_drain(void *arg) {
  prof *p = arg;
  uint64_t now = uv_hrtime();
  for (size_t i = 0; i < PROC_BUCKETS && p->nwanted; i++)
    for (proc *q = p->buckets[i]; q; q = q->next)
      if (q->reload_wanted && !q->loading && now - q->loaded_at >= STOP_RELOAD_NS) {
        q->reload_wanted = false;
        p->nwanted--;
        proc_queue_read(p, q, NULL, 0);
      }
  if (p->rb) {
    int n = ring_buffer__consume(p->rb);
    if (n < 0) sonde_log(p->h, SONDE_LOG_WARN, "ring buffer: %s", strerror(-n));
  }
}

/* ---- perf events ----------------------------------------------------------------------------- */

/* Parses a CPU list like "0-3,5" into online[]. */
static void read_online(bool *online, int ncpus) {
  memset(online, 0, (size_t)ncpus * sizeof(*online));
  FILE *f = fopen("/sys/devices/system/cpu/online", "re");
  char buf[1024];
  if (!f || !fgets(buf, sizeof(buf), f)) {
    if (f) fclose(f);
    for (int i = 0; i < ncpus; i++)
      online[i] = true; /* unknown: try them all, offline ones fail with ENODEV */
    return;
  }
  fclose(f);
  for (char *s = buf; *s && *s != '\n';) {
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (end == s) break;
    if (*end == '-') b = strtol(end + 1, &end, 10);
    for (long i = a; i <= b && i < ncpus; i++)
      if (i >= 0) online[i] = true;
    s = *end == ',' ? end + 1 : end;
  }
}

/* Opens and attaches a sampling event on every online CPU that has none yet; called at start and
 * at every report, which is how CPUs brought online later get sampled. */
static int attach_cpus(prof *p, char *err, size_t errlen) {
  bool online[p->ncpus];
  read_online(online, p->ncpus);
  int attached = 0;
  for (int cpu = 0; cpu < p->ncpus; cpu++) {
    if (p->pfd[cpu] >= 0) {
      attached++;
      continue;
    }
    if (!online[cpu]) continue;
    struct perf_event_attr a = {.type = PERF_TYPE_SOFTWARE,
                                .size = sizeof(a),
                                .config = PERF_COUNT_SW_CPU_CLOCK,
                                .sample_freq = (uint64_t)p->cfg->samples_per_second,
                                .freq = 1};
    int fd = (int)syscall(SYS_perf_event_open, &a, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == ENODEV) continue; /* went offline meanwhile */
      snprintf(err, errlen, "perf_event_open(cpu-clock, cpu %d): %s%s", cpu, strerror(e),
               e == EACCES || e == EPERM        ? " (needs CAP_PERFMON or CAP_SYS_ADMIN)"
               : e == ENOENT || e == EOPNOTSUPP ? " (kernel feature missing: perf events, "
                                                  "CONFIG_PERF_EVENTS)"
                                                : "");
      return e == EACCES || e == EPERM ? SONDE_EPERM : SONDE_EIO;
    }
    struct bpf_link *l = bpf_program__attach_perf_event(p->skel->progs.sample, fd);
    if (!l) {
      int e = errno;
      close(fd);
      snprintf(err, errlen, "attaching the BPF program to the perf event of cpu %d: %s", cpu,
               strerror(e));
      return SONDE_EIO;
    }
    p->pfd[cpu] = fd;
    p->links[cpu] = l;
    attached++;
  }
  if (!attached) {
    snprintf(err, errlen, "no online CPU could be sampled");
    return SONDE_EIO;
  }
  return 0;
}

/* ---- the report: one OTLP profiles batch ----------------------------------------------------- */

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary pdict_t;
typedef Opentelemetry__Proto__Profiles__V1development__Mapping mapping_t;
typedef Opentelemetry__Proto__Profiles__V1development__Location location_t;
typedef Opentelemetry__Proto__Profiles__V1development__Stack stack_t_;
typedef Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit kvu_t;
typedef Opentelemetry__Proto__Profiles__V1development__Sample sample_t;
typedef Opentelemetry__Proto__Profiles__V1development__Profile profile_t;
typedef Opentelemetry__Proto__Profiles__V1development__ResourceProfiles rprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__ScopeProfiles sprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__ValueType vtype_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;

/* A growable array of pointers on the heap, copied into the batch arena when done. */
typedef struct pvec {
  void **v;
  size_t n, cap;
} pvec;

static int pvec_push(pvec *a, void *x) {
  if (!x) return SONDE_ENOMEM;
  if (a->n == a->cap) {
    size_t nc = a->cap ? a->cap * 2 : 64;
    void **nv = realloc(a->v, nc * sizeof(*nv));
    if (!nv) return SONDE_ENOMEM;
    a->v = nv;
    a->cap = nc;
  }
  a->v[a->n++] = x;
  return 0;
}

typedef struct dict {
  sonde_batch *b;
  kmap strs, maps, locs, stacks, attrs;
  pvec str_v, map_v, loc_v, stack_v, attr_v;
} dict;

static void dict_free(dict *d) {
  kmap_free(&d->strs);
  kmap_free(&d->maps);
  kmap_free(&d->locs);
  kmap_free(&d->stacks);
  kmap_free(&d->attrs);
  free(d->str_v.v);
  free(d->map_v.v);
  free(d->loc_v.v);
  free(d->stack_v.v);
  free(d->attr_v.v);
}

/* String index; -1 on out of memory. */
static int32_t dict_str(dict *d, const char *s) {
  int32_t idx;
  int rc = kmap_intern(&d->strs, s, strlen(s), (int32_t)d->str_v.n, &idx);
  if (rc < 0) return -1;
  if (rc == 1 && pvec_push(&d->str_v, sonde_batch_strdup(d->b, s))) return -1;
  return idx;
}

static any_t *any_new(sonde_batch *b) {
  any_t *v = sonde_batch_alloc(b, sizeof(*v));
  if (v) opentelemetry__proto__common__v1__any_value__init(v);
  return v;
}

/* Attribute-table index of key = value (string when s, else the int i); -1 on out of memory. */
static int32_t dict_attr(dict *d, const char *key, const char *s, int64_t i) {
  int32_t ks = dict_str(d, key), vs = s ? dict_str(d, s) : 0;
  if (ks < 0 || vs < 0) return -1;
  struct {
    int32_t ks, vs;
    int64_t i;
    int32_t is_str, pad;
  } k = {ks, vs, s ? 0 : i, s != NULL, 0};
  int32_t idx;
  int rc = kmap_intern(&d->attrs, &k, sizeof(k), (int32_t)d->attr_v.n, &idx);
  if (rc < 0) return -1;
  if (rc == 1) {
    kvu_t *a = sonde_batch_alloc(d->b, sizeof(*a));
    any_t *v = any_new(d->b);
    if (!a || !v) return -1;
    opentelemetry__proto__profiles__v1development__key_value_and_unit__init(a);
    a->key_strindex = ks;
    if (s) {
      v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
      if (!(v->string_value = sonde_batch_strdup(d->b, s))) return -1;
    } else {
      v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
      v->int_value = i;
    }
    a->value = v;
    if (pvec_push(&d->attr_v, a)) return -1;
  }
  return idx;
}

static char *hex(sonde_batch *b, const uint8_t *p, size_t n) {
  char *s = sonde_batch_alloc(b, n * 2 + 1);
  if (s)
    for (size_t i = 0; i < n; i++)
      snprintf(s + 2 * i, 3, "%02x", p[i]);
  return s;
}

/* Mapping-table index for one of pid's mappings (m NULL: the kernel); -1 on out of memory. */
static int32_t dict_mapping(dict *d, prof *p, uint32_t pid, uint32_t gen, const prof_mapping *m) {
  struct {
    uint32_t pid, gen;
    uint64_t start, end, off;
  } k = {m ? pid : 0, m ? gen : 0, m ? m->start : 0, m ? m->end : 0, m ? m->offset : 0};
  int32_t idx;
  int rc = kmap_intern(&d->maps, &k, sizeof(k), (int32_t)d->map_v.n, &idx);
  if (rc < 0) return -1;
  if (rc == 0) return idx;
  mapping_t *mp = sonde_batch_alloc(d->b, sizeof(*mp));
  if (!mp) return -1;
  opentelemetry__proto__profiles__v1development__mapping__init(mp);
  const uint8_t *bid = m ? m->build_id : p->kernel_build_id;
  size_t bidlen = m ? m->build_id_len : p->kernel_build_id_len;
  mp->memory_start = m ? m->start : 0;
  mp->memory_limit = m ? m->end : UINT64_MAX;
  mp->file_offset = m ? m->offset : 0;
  mp->filename_strindex = dict_str(d, m ? m->path : "[kernel.kallsyms]");
  if (mp->filename_strindex < 0) return -1;
  if (bidlen) {
    char *h = hex(d->b, bid, bidlen);
    int32_t a = h ? dict_attr(d, "process.executable.build_id.gnu", h, 0) : -1;
    if (a < 0 || !(mp->attribute_indices = sonde_batch_memdup(d->b, &a, sizeof(a)))) return -1;
    mp->n_attribute_indices = 1;
  }
  return pvec_push(&d->map_v, mp) ? -1 : idx;
}

static int32_t dict_location(dict *d, int32_t mapping, uint64_t addr) {
  struct {
    int64_t mapping;
    uint64_t addr;
  } k = {mapping, addr};
  int32_t idx;
  int rc = kmap_intern(&d->locs, &k, sizeof(k), (int32_t)d->loc_v.n, &idx);
  if (rc < 0) return -1;
  if (rc == 1) {
    location_t *l = sonde_batch_alloc(d->b, sizeof(*l));
    if (!l) return -1;
    opentelemetry__proto__profiles__v1development__location__init(l);
    l->mapping_index = mapping;
    l->address = addr;
    if (pvec_push(&d->loc_v, l)) return -1;
  }
  return idx;
}

static int32_t dict_stack(dict *d, const int32_t *locs, size_t n) {
  int32_t idx;
  int rc = kmap_intern(&d->stacks, locs, n * sizeof(*locs), (int32_t)d->stack_v.n, &idx);
  if (rc < 0) return -1;
  if (rc == 1) {
    stack_t_ *s = sonde_batch_alloc(d->b, sizeof(*s));
    if (!s) return -1;
    opentelemetry__proto__profiles__v1development__stack__init(s);
    if (n && !(s->location_indices = sonde_batch_memdup(d->b, locs, n * sizeof(*locs)))) return -1;
    s->n_location_indices = n;
    if (pvec_push(&d->stack_v, s)) return -1;
  }
  return idx;
}

/* Index 0 of every table is the zero value, as the dictionary form requires. */
static int dict_init(dict *d, sonde_batch *b) {
  memset(d, 0, sizeof(*d));
  d->b = b;
  mapping_t *m = sonde_batch_alloc(b, sizeof(*m));
  location_t *l = sonde_batch_alloc(b, sizeof(*l));
  stack_t_ *s = sonde_batch_alloc(b, sizeof(*s));
  kvu_t *a = sonde_batch_alloc(b, sizeof(*a));
  if (!m || !l || !s || !a) return SONDE_ENOMEM;
  opentelemetry__proto__profiles__v1development__mapping__init(m);
  opentelemetry__proto__profiles__v1development__location__init(l);
  opentelemetry__proto__profiles__v1development__stack__init(s);
  opentelemetry__proto__profiles__v1development__key_value_and_unit__init(a);
  int32_t idx;
  if (dict_str(d, "") != 0 || pvec_push(&d->map_v, m) || pvec_push(&d->loc_v, l) ||
      pvec_push(&d->stack_v, s) || pvec_push(&d->attr_v, a) ||
      kmap_intern(&d->maps, "", 0, 0, &idx) < 0 || kmap_intern(&d->locs, "", 0, 0, &idx) < 0 ||
      kmap_intern(&d->attrs, "", 0, 0, &idx) < 0)
    return SONDE_ENOMEM;
  return 0;
}

static void **to_arena(sonde_batch *b, const pvec *v) {
  return v->n ? sonde_batch_memdup(b, v->v, v->n * sizeof(void *)) : NULL;
}

static int dict_finish(dict *d, sonde_profiles *req) {
  pdict_t *pd = sonde_batch_alloc(d->b, sizeof(*pd));
  if (!pd) return SONDE_ENOMEM;
  opentelemetry__proto__profiles__v1development__profiles_dictionary__init(pd);
  pd->string_table = (char **)to_arena(d->b, &d->str_v);
  pd->mapping_table = (mapping_t **)to_arena(d->b, &d->map_v);
  pd->location_table = (location_t **)to_arena(d->b, &d->loc_v);
  pd->stack_table = (stack_t_ **)to_arena(d->b, &d->stack_v);
  pd->attribute_table = (kvu_t **)to_arena(d->b, &d->attr_v);
  if (!pd->string_table || !pd->mapping_table || !pd->location_table || !pd->stack_table ||
      !pd->attribute_table)
    return SONDE_ENOMEM;
  pd->n_string_table = d->str_v.n;
  pd->n_mapping_table = d->map_v.n;
  pd->n_location_table = d->loc_v.n;
  pd->n_stack_table = d->stack_v.n;
  pd->n_attribute_table = d->attr_v.n;
  req->dictionary = pd;
  return 0;
}

/* One image of a process, as the report sees it. */
typedef struct pview {
  uint32_t pid, gen;
  int verdict;
  const prof_procinfo *info; /* NULL: /proc was not read */
  const char *comm, *exe_hint;
  uint64_t exe_dev, exe_ino;
} pview;

static bool pview_of(const proc *q, uint32_t gen, pview *v) {
  if (!q) return false;
  if (gen == q->gen) {
    *v = (pview){q->pid,  gen,         q->verdict, q->have_info ? &q->info : NULL,
                 q->comm, q->exe_hint, q->exe_dev, q->exe_ino};
    return true;
  }
  for (const image *im = q->old; im; im = im->next)
    if (im->gen == gen) {
      *v = (pview){q->pid,   gen,          im->verdict, im->have_info ? &im->info : NULL,
                   im->comm, im->exe_hint, im->exe_dev, im->exe_ino};
      return true;
    }
  return false;
}

static Opentelemetry__Proto__Resource__V1__Resource *resource_new(prof *p, sonde_batch *b,
                                                                  const pview *q) {
  Opentelemetry__Proto__Resource__V1__Resource *r = sonde_batch_alloc(b, sizeof(*r));
  kv_t **a = sonde_batch_alloc(b, 5 * sizeof(*a));
  if (!r || !a) return NULL;
  opentelemetry__proto__resource__v1__resource__init(r);
  size_t n = 0;
  if (!(a[n++] = sonde_batch_kv_int(b, "process.pid", q->pid))) return NULL;
  /* A process gone before /proc was read is still named: by the path of its exec (BPF saw it),
   * else by its thread name. */
  const char *path = NULL, *name = NULL;
  if (q->info && q->info->id.exe_path) {
    path = q->info->id.exe_path;
    name = q->info->id.exe_name;
  } else if (q->exe_hint) {
    path = q->exe_hint;
    name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  } else if (q->info && q->info->id.exe_name) {
    name = q->info->id.exe_name;
  }
  if (!name) name = q->comm;
  if (name[0] && !(a[n++] = sonde_batch_kv_str(b, "process.executable.name", name))) return NULL;
  if (path && !(a[n++] = sonde_batch_kv_str(b, "process.executable.path", path))) return NULL;
  if (q->info && q->info->id.container_id[0] &&
      !(a[n++] = sonde_batch_kv_str(b, "container.id", q->info->id.container_id)))
    return NULL;
  if (!(a[n++] = sonde_batch_kv_str(b, "host.name", p->hostname))) return NULL;
  r->attributes = a;
  r->n_attributes = n;
  return r;
}

static int cmp_by_pid(const void *a, const void *b, void *arg) {
  const kmap *m = arg;
  const agg_key *ka = kmap_key(m, *(const size_t *)a), *kb = kmap_key(m, *(const size_t *)b);
  if (ka->pid != kb->pid) return ka->pid < kb->pid ? -1 : 1;
  return ka->gen < kb->gen ? -1 : ka->gen > kb->gen;
}

/* Builds the batch of the interval that ends now; *out NULL when there was nothing to report. */
static int build_batch(prof *p, uint64_t now_ns, sonde_batch **out) {
  *out = NULL;
  size_t n = p->agg.n;
  if (!n) return 0;
  size_t *order = malloc(n * sizeof(*order));
  int32_t *locs = malloc((SONDE_PROF_KSTACK_MAX + SONDE_PROF_USTACK_MAX) * sizeof(*locs));
  sonde_batch *b = NULL;
  dict d = {0};
  int rc = SONDE_ENOMEM;
  if (!order || !locs || (rc = sonde_batch_new(SONDE_SIGNAL_PROFILES, &b)) ||
      (rc = dict_init(&d, b)))
    goto out;
  rc = SONDE_ENOMEM;
  for (size_t i = 0; i < n; i++)
    order[i] = i;
  qsort_r(order, n, sizeof(*order), cmp_by_pid, &p->agg);

  int32_t s_samples = dict_str(&d, "samples"), s_count = dict_str(&d, "count"),
          s_cpu = dict_str(&d, "cpu"), s_ns = dict_str(&d, "nanoseconds");
  if (s_samples < 0 || s_count < 0 || s_cpu < 0 || s_ns < 0) goto out;

  pvec rps = {0};
  sonde_profiles *req = sonde_batch_profiles(b);
  for (size_t i = 0; i < n;) {
    const agg_key *k0 = kmap_key(&p->agg, order[i]);
    size_t j = i;
    while (j < n && ((const agg_key *)kmap_key(&p->agg, order[j]))->pid == k0->pid &&
           ((const agg_key *)kmap_key(&p->agg, order[j]))->gen == k0->gen)
      j++;
    pview qv, *q = &qv;
    bool keep = pview_of(proc_find(p, k0->pid), k0->gen, &qv) && q->verdict >= 0 &&
                (q->verdict > 0 || (sonde__select_empty(&p->cfg->include) &&
                                    sonde__select_pids_only(&p->cfg->exclude)));
    if (!keep) {
      i = j;
      continue;
    }
    if (!(q->info && q->info->id.exe_path) && !q->exe_hint)
      q->exe_hint = exe_cache_find(p, q->exe_dev, q->exe_ino);
    sample_t **samples = sonde_batch_alloc(b, (j - i) * sizeof(*samples));
    if (!samples) goto fail;
    for (size_t s = i; s < j; s++) {
      const agg_key *k = kmap_key(&p->agg, order[s]);
      const uint64_t *fr = (const uint64_t *)(k + 1);
      size_t nl = 0;
      for (uint32_t f = 0; f < k->n_kstack; f++) {
        int32_t m = dict_mapping(&d, p, 0, 0, NULL);
        int32_t l = m < 0 ? -1 : dict_location(&d, m, fr[f]);
        if (l < 0) goto fail;
        locs[nl++] = l;
      }
      for (uint32_t f = 0; f < k->n_ustack; f++) {
        uint64_t a = fr[k->n_kstack + f];
        const prof_mapping *pm = q->info ? prof_procinfo_find(q->info, a) : NULL;
        int32_t m = pm ? dict_mapping(&d, p, k->pid, k->gen, pm) : 0;
        int32_t l = m < 0 ? -1 : dict_location(&d, m, pm ? a - pm->start + pm->offset : a);
        if (l < 0) goto fail;
        locs[nl++] = l;
      }
      sample_t *smp = sonde_batch_alloc(b, sizeof(*smp));
      int64_t *val = sonde_batch_alloc(b, sizeof(*val));
      int32_t *attrs = sonde_batch_alloc(b, 3 * sizeof(*attrs));
      if (!smp || !val || !attrs) goto fail;
      opentelemetry__proto__profiles__v1development__sample__init(smp);
      if ((smp->stack_index = dict_stack(&d, locs, nl)) < 0 ||
          (attrs[0] = dict_attr(&d, "thread.id", NULL, k->tid)) < 0 ||
          (attrs[1] = dict_attr(&d, "thread.name", k->comm, 0)) < 0 ||
          (attrs[2] = dict_attr(&d, "cpu.logical_number", NULL, k->cpu)) < 0)
        goto fail;
      *val = p->counts[kmap_val(&p->agg, order[s])];
      smp->values = val;
      smp->n_values = 1;
      smp->attribute_indices = attrs;
      smp->n_attribute_indices = 3;
      samples[s - i] = smp;
    }
    rprof_t *rp = sonde_batch_alloc(b, sizeof(*rp));
    sprof_t *sp = sonde_batch_alloc(b, sizeof(*sp));
    sprof_t **sps = sonde_batch_alloc(b, sizeof(*sps));
    profile_t *pr = sonde_batch_alloc(b, sizeof(*pr));
    profile_t **prs = sonde_batch_alloc(b, sizeof(*prs));
    vtype_t *st = sonde_batch_alloc(b, sizeof(*st)), *pt = sonde_batch_alloc(b, sizeof(*pt));
    Opentelemetry__Proto__Common__V1__InstrumentationScope *scope =
        sonde_batch_alloc(b, sizeof(*scope));
    uint8_t *pid16 = sonde_batch_alloc(b, 16);
    if (!rp || !sp || !sps || !pr || !prs || !st || !pt || !scope || !pid16) goto fail;
    opentelemetry__proto__profiles__v1development__resource_profiles__init(rp);
    opentelemetry__proto__profiles__v1development__scope_profiles__init(sp);
    opentelemetry__proto__profiles__v1development__profile__init(pr);
    opentelemetry__proto__profiles__v1development__value_type__init(st);
    opentelemetry__proto__profiles__v1development__value_type__init(pt);
    opentelemetry__proto__common__v1__instrumentation_scope__init(scope);
    if (!(scope->name = sonde_batch_strdup(b, "sonde/ebpf_profiler")) ||
        !(scope->version = sonde_batch_strdup(b, SONDE_VERSION)) ||
        !(rp->resource = resource_new(p, b, q)))
      goto fail;
    st->type_strindex = s_samples;
    st->unit_strindex = s_count;
    pt->type_strindex = s_cpu;
    pt->unit_strindex = s_ns;
    pr->sample_type = st;
    pr->period_type = pt;
    pr->period = NS_PER_S / p->cfg->samples_per_second;
    pr->time_unix_nano = p->interval_start_ns;
    pr->duration_nano = now_ns > p->interval_start_ns ? now_ns - p->interval_start_ns : 0;
    if (getrandom(pid16, 16, GRND_NONBLOCK) != 16)
      for (int x = 0; x < 16; x++)
        pid16[x] = (uint8_t)(rand() >> 7);
    pr->profile_id.data = pid16;
    pr->profile_id.len = 16;
    pr->samples = samples;
    pr->n_samples = j - i;
    prs[0] = pr;
    sp->scope = scope;
    sp->profiles = prs;
    sp->n_profiles = 1;
    sps[0] = sp;
    rp->scope_profiles = sps;
    rp->n_scope_profiles = 1;
    if (pvec_push(&rps, rp)) goto fail;
    i = j;
  }
  if (rps.n) {
    if (!(req->resource_profiles = (rprof_t **)to_arena(b, &rps)) || dict_finish(&d, req))
      goto fail;
    req->n_resource_profiles = rps.n;
    *out = b;
    b = NULL;
  }
  rc = 0;
fail:
  free(rps.v);
out:
  if (b) sonde_batch_unref(b);
  dict_free(&d);
  free(order);
  free(locs);
  return rc;
}

/* ---- the reporter tick ----------------------------------------------------------------------- */

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Samples the BPF side could not send because the ring buffer was full. */
static void read_lost(prof *p) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0 || !p->m_lost) return;
  uint64_t v[ncpu];
  uint32_t k = 0;
  if (bpf_map__lookup_elem(p->skel->maps.counters, &k, sizeof(k), v, sizeof(v), 0)) return;
  uint64_t total = 0;
  for (int i = 0; i < ncpu; i++)
    total += v[i];
  if (total > p->lost_seen) {
    metric_add(p, p->m_lost, (double)(total - p->lost_seen));
    p->lost_seen = total;
  }
}

/* The value below which a share q of the histogram's samples ran: the middle of that bucket. */
static double hist_quantile(const uint64_t *n, uint64_t total, double q) {
  uint64_t want = (uint64_t)(q * (double)total), seen = 0;
  for (uint32_t i = 0; i < SONDE_PROF_TIME_BUCKETS; i++) {
    seen += n[i];
    if (seen <= want || !n[i]) continue;
    if (!i) return 8;
    uint32_t o = 4 + (i - 1) / 8;
    double w = (double)(1ull << (o - 3));
    return (double)(1ull << o) + ((i - 1) % 8) * w + w / 2;
  }
  return 0;
}

/* measure_bpf_time: logs the run-time quantiles of sample() since start, per kind. */
static void log_bpf_time(prof *p) {
  static const char *const kinds[SONDE_PROF_TIME_KINDS] = {"dwarf", "stack copy", "frame pointers"};
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return;
  struct sonde_prof_time_hist *v = calloc((size_t)ncpu, sizeof(*v));
  if (!v) return;
  char line[512];
  size_t len = 0;
  line[0] = 0;
  for (uint32_t k = 0; k < SONDE_PROF_TIME_KINDS * 2; k++) {
    uint64_t sum[SONDE_PROF_TIME_BUCKETS] = {0}, total = 0;
    if (bpf_map__lookup_elem(p->skel->maps.timing, &k, sizeof(k), v, (size_t)ncpu * sizeof(*v), 0))
      break;
    for (int c = 0; c < ncpu; c++)
      for (uint32_t i = 0; i < SONDE_PROF_TIME_BUCKETS; i++)
        sum[i] += v[c].n[i];
    for (uint32_t i = 0; i < SONDE_PROF_TIME_BUCKETS; i++)
      total += sum[i];
    if (!total || len >= sizeof(line)) continue;
    len += (size_t)snprintf(
        line + len, sizeof(line) - len, "%s%s%s n=%" PRIu64 " p50=%.0f p90=%.0f p99=%.0f ns",
        len ? "; " : "", kinds[k / 2], k % 2 ? " walk" : "", total, hist_quantile(sum, total, 0.5),
        hist_quantile(sum, total, 0.9), hist_quantile(sum, total, 0.99));
  }
  free(v);
  if (len) sonde_log(p->h, SONDE_LOG_INFO, "BPF time per sample since start: %s", line);
}

static void on_report(void *arg) {
  prof *p = arg;
  if (p->stopping) return;
  ring_buffer__consume(p->rb); /* what is already there belongs to this interval */
  /* Stack copies still waiting for tables are walked with what is known (a read in flight keeps
   * them for the next interval). */
  for (size_t i = 0; i < PROC_BUCKETS && p->npend; i++)
    for (proc *q = p->buckets[i]; q; q = q->next)
      if (q->pending && !q->loading && !q->reload_wanted) pend_run(p, q, true);
  uint64_t now = realtime_ns();
  sonde_batch *b = NULL;
  int rc = build_batch(p, now, &b);
  if (rc)
    sonde_log(p->h, SONDE_LOG_WARN, "profile of the last interval dropped: %s", sonde_strerror(rc));
  if (b) {
    size_t items = sonde_batch_items(b);
    rc = p->h->api->consume(p->h, b, "ebpf");
    metric_add(p, rc ? p->m_refused : p->m_batches, 1);
    if (rc)
      sonde_log(p->h, SONDE_LOG_WARN, "profile of %zu samples refused downstream: %s", items,
                sonde_strerror(rc));
    sonde_batch_unref(b);
  }
  kmap_reset(&p->agg);
  p->ncounts = 0;
  p->interval_start_ns = now;
  read_lost(p);
  if (p->cfg->measure_bpf_time) log_bpf_time(p);

  /* Evict what exited; check processes that went quiet in case their exit record was lost. */
  for (size_t i = 0; i < PROC_BUCKETS; i++) {
    for (proc *q = p->buckets[i], *next; q; q = next) {
      next = q->next;
      images_free(q); /* their samples were in this report */
      q->quiet = q->samples ? 0 : q->quiet + 1;
      q->samples = 0;
      if (!q->exited && q->quiet >= QUIET_CHECK_INTERVALS) {
        q->quiet = 0;
        if (kill((pid_t)q->pid, 0) && errno == ESRCH) q->exited = true;
      }
      if (q->exited && !q->loading && !q->pending) {
        bpf_map__delete_elem(p->skel->maps.pid_filter, &q->pid, sizeof(q->pid), 0);
        proc_unlink_free(p, q);
      }
    }
  }
  p->uw_batch++; /* nothing is being published now */
  uw_sweep(p);
  /* Table builds and /proc reads on the pool threads leave their malloc arenas holding megabytes
   * nobody uses until the next burst: give them back (glibc; ~0.1 ms per report). */
  malloc_trim(0);
  char err[256];
  if (attach_cpus(p, err, sizeof(err))) sonde_log(p->h, SONDE_LOG_WARN, "%s", err);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void read_kernel_build_id(prof *p) {
  /* /sys/kernel/notes is the kernel's .notes section: ELF notes, 4-byte aligned. */
  FILE *f = fopen("/sys/kernel/notes", "re");
  if (!f) return;
  uint8_t buf[4096];
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  for (size_t off = 0; off + 12 <= n;) {
    uint32_t namesz, descsz, type;
    memcpy(&namesz, buf + off, 4);
    memcpy(&descsz, buf + off + 4, 4);
    memcpy(&type, buf + off + 8, 4);
    size_t name = off + 12, desc = name + ((namesz + 3) & ~3u);
    if (desc + descsz > n) break;
    if (type == NT_GNU_BUILD_ID && namesz == 4 && !memcmp(buf + name, "GNU", 4) &&
        descsz <= sizeof(p->kernel_build_id)) {
      memcpy(p->kernel_build_id, buf + desc, descsz);
      p->kernel_build_id_len = descsz;
      return;
    }
    off = desc + ((descsz + 3) & ~3u);
  }
}

static int prof_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  prof *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = config;
  p->self_pid = (uint32_t)getpid();
  if (!(p->bids = prof_bidcache_new())) {
    free(p);
    return SONDE_ENOMEM;
  }
  if (pthread_mutex_init(&p->uw_mu, NULL)) {
    prof_bidcache_free(p->bids);
    free(p);
    return SONDE_ENOMEM;
  }
  if (gethostname(p->hostname, sizeof(p->hostname) - 1))
    snprintf(p->hostname, sizeof(p->hostname), "unknown");
  elf_version(EV_CURRENT);
  read_kernel_build_id(p);
  const sonde_host_api *a = h->api;
  /* Metrics are diagnostics: the receiver works without them. */
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_samples", "samples received from BPF",
            NULL, &p->m_samples);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_samples_lost",
            "samples BPF dropped because the ring buffer was full", NULL, &p->m_lost);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_ebpf_profiler_processes", "processes tracked", NULL,
            &p->m_procs);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_batches", "profiles batches accepted",
            NULL, &p->m_batches);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_batches_refused",
            "profiles batches refused downstream (dropped)", NULL, &p->m_refused);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_proc_reads",
            "reads of /proc/PID/maps (first sight and new mappings)", NULL, &p->m_proc_reads);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_processes_evicted",
            "processes dropped from the table after they exited", NULL, &p->m_evicted);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_ebpf_profiler_unwind_rows",
            "rows of the BPF unwind table in use (1048576 at most)", NULL, &p->m_uw_rows);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_samples_stack_copied",
            "samples whose walk BPF left to user space (a pc in a mapping not known yet)", NULL,
            &p->m_copied);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_profiler_samples_truncated",
            "samples whose user stack could not be walked to its end (marked by a last frame 0)",
            NULL, &p->m_truncated);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_ebpf_profiler_unwind_files",
            "files whose unwind rows were built (with or without rows)", NULL, &p->m_uw_files);
  *inst = p;
  return 0;
}

static void teardown_bpf(prof *p) {
  for (int i = 0; p->links && i < p->ncpus; i++)
    bpf_link__destroy(p->links[i]);
  for (int i = 0; p->pfd && i < p->ncpus; i++)
    if (p->pfd[i] >= 0) close(p->pfd[i]);
  free(p->links);
  free(p->pfd);
  p->links = NULL;
  p->pfd = NULL;
  bpf_link__destroy(p->exit_link);
  p->exit_link = NULL;
  bpf_link__destroy(p->exec_link);
  p->exec_link = NULL;
  ring_buffer__free(p->rb);
  p->rb = NULL;
  if (p->uw_mem) munmap(p->uw_mem, (size_t)SONDE_UW_ROWS * sizeof(struct sonde_uw_row));
  p->uw_mem = NULL;
  sonde_profiler__destroy(p->skel);
  p->skel = NULL;
}

static void poll_closed(uv_handle_t *h) {
  free(h);
}

static int prof_start(void *inst) {
  prof *p = inst;
  char err[512];
  int rc = sonde__check_host("the eBPF profiler", SONDE__NEED_PERF_EVENT, err, sizeof(err));
  if (rc) {
    sonde_log(p->h, SONDE_LOG_ERROR, "%s", err);
    return rc;
  }
  rc = SONDE_EIO;
  p->skel = sonde_profiler__open();
  if (!p->skel) {
    sonde_log(p->h, SONDE_LOG_ERROR, "opening the BPF profiler: %s", strerror(errno));
    return SONDE_EIO;
  }
  /* pid-only include lists are applied in BPF; anything else needs /proc, so in user space. */
  const sonde__select *inc = &p->cfg->include;
  p->skel->rodata->cfg.include_only = inc->pids.n && sonde__select_pids_only(inc);
  /* Room for one second of samples of every CPU, each with a stack copy (the worst case: every
   * process new), a power of two between the bounds. */
  uint64_t want = (uint64_t)p->cfg->samples_per_second * (uint64_t)libbpf_num_possible_cpus() *
                  sizeof(struct sonde_prof_sample_stack);
  uint32_t ring = SONDE_PROF_RINGBUF_MIN;
  while (ring < want && ring < SONDE_PROF_RINGBUF_BYTES)
    ring *= 2;
  bpf_map__set_max_entries(p->skel->maps.events, ring);
  p->skel->rodata->cfg.wakeup_bytes = ring / 2;
  p->skel->rodata->cfg.timing = p->cfg->measure_bpf_time;
  if (sonde_profiler__load(p->skel)) {
    int e = errno;
    sonde_log(p->h, SONDE_LOG_ERROR, "loading the BPF profiler: %s%s", strerror(e),
              e == EPERM || e == EACCES ? " (the verifier rejected it: see the log above)"
                                        : " (run with log level debug for libbpf's verifier log)");
    rc = e == EPERM || e == EACCES ? SONDE_EPERM : SONDE_EIO;
    goto fail;
  }
  int er = sonde__pid_filter_seed(p->skel->maps.pid_filter, p->self_pid, inc, &p->cfg->exclude,
                                  SONDE_PROF_PID_INCLUDE, SONDE_PROF_PID_EXCLUDE);
  if (er) {
    errno = -er;
    goto fail_errno;
  }
  /* Unwind rows are written straight into the BPF array. Without it, frame pointers only. */
  void *mem = mmap(NULL, (size_t)SONDE_UW_ROWS * sizeof(struct sonde_uw_row),
                   PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(p->skel->maps.uw_rows), 0);
  if (mem == MAP_FAILED)
    sonde_log(p->h, SONDE_LOG_WARN, "mapping the unwind table array: %s (frame pointers only)",
              strerror(errno));
  else
    p->uw_mem = mem;
  if (p->uw_mem) uw_add_vdso(p);
  p->exit_link = bpf_program__attach_raw_tracepoint(p->skel->progs.on_exit, "sched_process_exit");
  if (!p->exit_link) {
    sonde_log(p->h, SONDE_LOG_ERROR,
              "attaching to the raw tracepoint sched_process_exit: %s (kernel feature missing: "
              "raw tracepoints)",
              strerror(errno));
    goto fail;
  }
  p->exec_link = bpf_program__attach_raw_tracepoint(p->skel->progs.on_exec, "sched_process_exec");
  if (!p->exec_link) {
    sonde_log(p->h, SONDE_LOG_ERROR, "attaching to the raw tracepoint sched_process_exec: %s",
              strerror(errno));
    goto fail;
  }
  p->rb = ring_buffer__new(bpf_map__fd(p->skel->maps.events), rb_event, p, NULL);
  if (!p->rb) goto fail_errno;
  p->ncpus = libbpf_num_possible_cpus();
  if (p->ncpus <= 0) {
    sonde_log(p->h, SONDE_LOG_ERROR, "cannot count the possible CPUs");
    goto fail;
  }
  p->pfd = malloc((size_t)p->ncpus * sizeof(*p->pfd));
  p->links = calloc((size_t)p->ncpus, sizeof(*p->links));
  if (!p->pfd || !p->links) {
    rc = SONDE_ENOMEM;
    goto fail;
  }
  for (int i = 0; i < p->ncpus; i++)
    p->pfd[i] = -1;
  if ((rc = attach_cpus(p, err, sizeof(err)))) {
    sonde_log(p->h, SONDE_LOG_ERROR, "%s", err);
    goto fail;
  }
  rc = SONDE_ENOMEM;
  if (!(p->poll = calloc(1, sizeof(*p->poll)))) goto fail;
  int urc = uv_poll_init(p->h->api->loop(p->h), p->poll, ring_buffer__epoll_fd(p->rb));
  if (urc) {
    sonde_log(p->h, SONDE_LOG_ERROR, "watching the ring buffer: %s", uv_strerror(urc));
    free(p->poll);
    p->poll = NULL;
    rc = SONDE_EIO;
    goto fail;
  }
  p->poll->data = p;
  uv_poll_start(p->poll, UV_READABLE, on_poll);
  p->interval_start_ns = realtime_ns();
  if ((rc = p->h->api->timer_start(p->h, p->cfg->reporter_interval_ns, p->cfg->reporter_interval_ns,
                                   on_report, p, &p->timer)))
    goto fail;
  if ((rc = p->h->api->timer_start(p->h, SONDE_PROF_DRAIN_MS * 1000000ll,
                                   SONDE_PROF_DRAIN_MS * 1000000ll, on_drain, p, &p->drain)))
    goto fail;
  sonde_log(p->h, SONDE_LOG_INFO,
            "sampling %d CPUs at %" PRId64 " Hz, reporting every %" PRId64 " ms", p->ncpus,
            p->cfg->samples_per_second, p->cfg->reporter_interval_ns / 1000000);
  return 0;

fail_errno:
  sonde_log(p->h, SONDE_LOG_ERROR, "setting up the BPF profiler: %s", strerror(errno));
  rc = SONDE_EIO;
fail:
  if (p->timer) {
    p->h->api->timer_stop(p->timer);
    p->timer = NULL;
  }
  if (p->poll) {
    uv_close((uv_handle_t *)p->poll, poll_closed);
    p->poll = NULL;
  }
  teardown_bpf(p);
  return rc;
}

static void maybe_finish_shutdown(prof *p) {
  if (p->stopping && !p->jobs && p->shutdown_done) {
    void (*done)(void *) = p->shutdown_done;
    p->shutdown_done = NULL;
    done(p->shutdown_arg);
  }
}

static void prof_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  prof *p = inst;
  /* The last partial interval is reported, then nothing more is produced. */
  if (p->timer && p->rb) {
    on_report(p);
    p->h->api->timer_stop(p->timer);
    p->timer = NULL;
  }
  if (p->drain) {
    p->h->api->timer_stop(p->drain);
    p->drain = NULL;
  }
  p->stopping = true;
  if (p->poll) {
    uv_poll_stop(p->poll);
    uv_close((uv_handle_t *)p->poll, poll_closed);
    p->poll = NULL;
  }
  teardown_bpf(p);
  p->shutdown_done = done;
  p->shutdown_arg = arg;
  maybe_finish_shutdown(p);
}

static void prof_destroy(void *inst) {
  prof *p = inst;
  if (p->timer) p->h->api->timer_stop(p->timer);
  if (p->drain) p->h->api->timer_stop(p->drain);
  teardown_bpf(p);
  for (size_t i = 0; i < PROC_BUCKETS; i++) {
    for (proc *q = p->buckets[i], *next; q; q = next) {
      next = q->next;
      prof_procinfo_free(&q->info);
      for (pend *x = q->pending, *nx; x; x = nx) {
        nx = x->next;
        free(x);
      }
      free(q->held);
      images_free(q);
      free(q->exe_hint);
      free(q);
    }
  }
  kmap_free(&p->agg);
  free(p->counts);
  prof_bidcache_free(p->bids);
  pthread_mutex_destroy(&p->uw_mu);
  free(p->uwf);
  free(p->uw_free);
  for (size_t i = 0; i < EXE_CACHE; i++)
    free(p->exe_cache[i].path);
  free(p);
}

static const sonde_component ebpf_profiler = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_RECEIVER,
    .type = "ebpf_profiler",
    .doc = "CPU profiles of every process on the node, sampled in BPF (perf_event + ring buffer)",
    .signals = SONDE_SIGNAL_PROFILES,
    .options = prof_options,
    .config_size = sizeof(prof_config),
    .validate = prof_validate,
    .create = prof_create,
    .start = prof_start,
    .shutdown = prof_shutdown,
    .destroy = prof_destroy,
};

SONDE_PLUGIN_DEFINE("ebpf_profiler", SONDE_VERSION, &ebpf_profiler);

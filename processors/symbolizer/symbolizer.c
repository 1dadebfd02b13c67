/* The `symbolizer` processor: gives function names, files and lines (inlined frames included) to
 * the profile locations that have none.
 *
 * Which resolver a location goes to depends on its mapping's filename:
 *   "[kernel.kallsyms]", "[kernel]" (any name starting with "[kernel"): the address is a kernel
 *     address, looked up in /proc/kallsyms (module symbols get the module as the file);
 *   "", "[anon]", "//anon", "[jit]", "[anon:...]", "/memfd:..." or "/tmp/perf-*.map": JIT code,
 *     looked up in perf-<pid>.map of the resource's process.pid at the runtime address
 *     memory_start + (address - file_offset);
 *   any other absolute path: an ELF file; Location.address is the file offset of the instruction
 *     (what the ebpf_profiler receiver writes), turned into an ELF address with the PT_LOAD
 *     segments. The build id is the mapping attribute process.executable.build_id.gnu (hex).
 *
 * Dictionary: the request's string_table and function_table get new entries appended (existing
 * equal strings and functions are reused); a changed location is a copy, so nothing this stage did
 * not allocate is written except the request's dictionary pointer. An address nobody can name
 * keeps no lines.
 *
 * Threads: resolving runs on host->api->queue_work with the batch referenced, one job at a time
 * (the resolver and its cache belong to that one job), in arrival order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sonde/sonde.h"
#include "symres.h"

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary dict_t;
typedef Opentelemetry__Proto__Profiles__V1development__Location location_t;
typedef Opentelemetry__Proto__Profiles__V1development__Mapping mapping_t;
typedef Opentelemetry__Proto__Profiles__V1development__Function function_t;
typedef Opentelemetry__Proto__Profiles__V1development__Line line_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;

#define MAX_PENDING 64

typedef struct sym_config {
  sonde_strlist debug_dirs;
  uint64_t cache_size;
  char *debuginfod_urls;
  char *kallsyms_path;
  char *perf_map_dir;
  char *proc_root;
  bool demangle;
} sym_config;

static const sonde_option sym_options[] = {
    SONDE_OPT("debug_dirs", SONDE_OPT_STRLIST, sym_config, debug_dirs, NULL,
              "roots of separate debug files (.build-id/ and debuglink); empty: /usr/lib/debug"),
    SONDE_OPT_RANGE("cache_size", SONDE_OPT_BYTES, sym_config, cache_size, "64MiB", 1 << 20, -1,
                    "bytes of parsed files and resolved addresses kept, least recently used out"),
    SONDE_OPT("debuginfod_urls", SONDE_OPT_STRING, sym_config, debuginfod_urls, NULL,
              "space-separated debuginfod servers asked for missing debug files (off when unset)"),
    SONDE_OPT("kallsyms_path", SONDE_OPT_STRING, sym_config, kallsyms_path, "/proc/kallsyms",
              "kernel symbol table"),
    SONDE_OPT("perf_map_dir", SONDE_OPT_STRING, sym_config, perf_map_dir, "/tmp",
              "where perf-<pid>.map JIT symbol files are"),
    SONDE_OPT("proc_root", SONDE_OPT_STRING, sym_config, proc_root, "/proc",
              "procfs: files are opened through <proc_root>/<pid>/root first"),
    SONDE_OPT("demangle", SONDE_OPT_BOOL, sym_config, demangle, "true",
              "demangle C++ and Rust names (the mangled one stays as system_name)"),
    SONDE_OPT_END,
};

typedef struct job {
  struct job *next;
  struct symp *p;
  sonde_batch *b;
  int rc;
  size_t resolved, unresolved;
  double seconds; /* of the work, for the debug log */
} job;

typedef struct symp {
  const sonde_host *h;
  const sym_config *cfg;
  symres *r;
  job *head, *tail;
  size_t n_pending;
  bool running;
  void (*shutdown_done)(void *);
  void *shutdown_arg;
  sonde_metric *m_resolved, *m_unresolved, *m_cache;
} symp;

/* ---- interning ----------------------------------------------------------------------------- */

typedef struct imap {
  uint64_t *h; /* hash | 1 (0: empty) */
  int32_t *v;  /* index */
  size_t cap, n;
} imap;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h | 1;
}

static uint64_t hash_fn(int32_t a, int32_t b, int32_t c) {
  uint64_t h = ((uint64_t)(uint32_t)a * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(uint32_t)b << 21) ^
               ((uint64_t)(uint32_t)c * 0xC2B2AE3D27D4EB4Full);
  return (h ^ (h >> 29)) | 1;
}

static int imap_grow(imap *m) {
  size_t nc = m->cap ? m->cap * 2 : 1024;
  uint64_t *nh = calloc(nc, sizeof(*nh));
  int32_t *nv = calloc(nc, sizeof(*nv));
  if (!nh || !nv) {
    free(nh);
    free(nv);
    return SONDE_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->h[i]) continue;
    size_t j = m->h[i] & (nc - 1);
    while (nh[j])
      j = (j + 1) & (nc - 1);
    nh[j] = m->h[i];
    nv[j] = m->v[i];
  }
  free(m->h);
  free(m->v);
  m->h = nh;
  m->v = nv;
  m->cap = nc;
  return 0;
}

static void imap_free(imap *m) {
  free(m->h);
  free(m->v);
}

/* Growable pointer vector: the old table's entries, then appended ones. */
typedef struct pvec {
  void **v;
  size_t n, cap;
} pvec;

static int pvec_push(pvec *p, void *x) {
  if (p->n == p->cap) {
    size_t nc = p->cap ? p->cap * 2 : 256;
    void **nv = realloc(p->v, nc * sizeof(*nv));
    if (!nv) return SONDE_ENOMEM;
    p->v = nv;
    p->cap = nc;
  }
  p->v[p->n++] = x;
  return 0;
}

typedef struct ctx {
  sonde_batch *b;
  pvec strs, fns;
  imap smap, fmap;
  bool strs_changed, fns_changed;
} ctx;

static int32_t intern_str(ctx *c, const char *s) {
  if (!s) s = "";
  uint64_t h = hash_str(s);
  if ((c->smap.n + 1) * 2 > c->smap.cap && imap_grow(&c->smap)) return -1;
  size_t i = h & (c->smap.cap - 1);
  for (; c->smap.h[i]; i = (i + 1) & (c->smap.cap - 1))
    if (c->smap.h[i] == h && !strcmp(c->strs.v[c->smap.v[i]], s)) return c->smap.v[i];
  char *d = sonde_batch_strdup(c->b, s);
  if (!d || pvec_push(&c->strs, d)) return -1;
  c->smap.h[i] = h;
  c->smap.v[i] = (int32_t)(c->strs.n - 1);
  c->smap.n++;
  c->strs_changed = true;
  return (int32_t)(c->strs.n - 1);
}

static int32_t intern_fn(ctx *c, int32_t name, int32_t sys, int32_t file, function_t *existing) {
  uint64_t h = hash_fn(name, sys, file);
  if ((c->fmap.n + 1) * 2 > c->fmap.cap && imap_grow(&c->fmap)) return -1;
  size_t i = h & (c->fmap.cap - 1);
  for (; c->fmap.h[i]; i = (i + 1) & (c->fmap.cap - 1)) {
    const function_t *f = c->fns.v[c->fmap.v[i]];
    if (c->fmap.h[i] == h && f->name_strindex == name && f->system_name_strindex == sys &&
        f->filename_strindex == file)
      return c->fmap.v[i];
  }
  function_t *f = existing;
  if (!f) {
    if (!(f = sonde_batch_alloc(c->b, sizeof(*f)))) return -1;
    opentelemetry__proto__profiles__v1development__function__init(f);
    f->name_strindex = name;
    f->system_name_strindex = sys;
    f->filename_strindex = file;
    if (pvec_push(&c->fns, f)) return -1;
    c->fns_changed = true;
  }
  c->fmap.h[i] = h;
  c->fmap.v[i] = existing ? (int32_t)(c->fns.n - 1) : (int32_t)(c->fns.n - 1);
  c->fmap.n++;
  return c->fmap.v[i];
}

/* ---- the work -------------------------------------------------------------------------------- */

static const char *str_at(const dict_t *d, int32_t i) {
  return i >= 0 && (size_t)i < d->n_string_table && d->string_table[i] ? d->string_table[i] : "";
}

static int64_t resource_pid(const Opentelemetry__Proto__Resource__V1__Resource *res) {
  if (!res) return 0;
  for (size_t i = 0; i < res->n_attributes; i++) {
    const kv_t *kv = res->attributes[i];
    if (!kv || !kv->key || strcmp(kv->key, "process.pid") || !kv->value) continue;
    if (kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE)
      return kv->value->int_value;
    if (kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
        kv->value->string_value)
      return strtoll(kv->value->string_value, NULL, 10);
  }
  return 0;
}

static int nibble(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

static int unhex(const char *s, uint8_t *out, size_t max) {
  size_t n = strlen(s);
  if (n % 2 || n / 2 > max) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return (int)(n / 2);
}

/* A mapping's build id, decoded once per batch. */
typedef struct mbid {
  bool done;
  uint8_t len;
  uint8_t b[64];
} mbid;

static size_t mapping_build_id(const dict_t *d, const mapping_t *m, uint8_t *out, size_t max) {
  for (size_t i = 0; i < m->n_attribute_indices; i++) {
    int32_t k = m->attribute_indices[i];
    if (k < 0 || (size_t)k >= d->n_attribute_table || !d->attribute_table[k]) continue;
    const Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit *a = d->attribute_table[k];
    if (strcmp(str_at(d, a->key_strindex), "process.executable.build_id.gnu") || !a->value)
      continue;
    if (a->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
        a->value->string_value) {
      int n = unhex(a->value->string_value, out, max);
      return n > 0 ? (size_t)n : 0;
    }
    if (a->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE &&
        a->value->bytes_value.len <= max) {
      memcpy(out, a->value->bytes_value.data, a->value->bytes_value.len);
      return a->value->bytes_value.len;
    }
  }
  return 0;
}

static bool is_jit(const char *f) {
  return !*f || !strcmp(f, "[anon]") || !strcmp(f, "//anon") || !strcmp(f, "[jit]") ||
         !strncmp(f, "[anon:", 6) || !strncmp(f, "/memfd:", 7) ||
         (!strncmp(f, "/tmp/perf-", 10) && strstr(f, ".map"));
}

static int symbolize(symp *p, job *j) {
  sonde_profiles *req = sonde_batch_profiles(j->b);
  if (!req || !req->dictionary || !req->dictionary->n_location_table) return 0;
  dict_t *d = req->dictionary;
  size_t nloc = d->n_location_table;
  int rc = SONDE_ENOMEM;
  ctx c = {.b = j->b};
  location_t **locs = NULL;
  int32_t *pids = calloc(nloc, sizeof(*pids));
  mbid *bids = calloc(d->n_mapping_table + 1, sizeof(*bids));
  if (!pids || !bids) {
    free(pids);
    free(bids);
    return SONDE_ENOMEM;
  }

  /* The process of each location (the location table is shared by every resource). */
  for (size_t i = 0; i < req->n_resource_profiles; i++) {
    const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *rp =
        req->resource_profiles[i];
    int64_t pid = rp ? resource_pid(rp->resource) : 0;
    if (pid <= 0 || pid > INT32_MAX) continue;
    for (size_t s = 0; s < rp->n_scope_profiles; s++) {
      const Opentelemetry__Proto__Profiles__V1development__ScopeProfiles *sp =
          rp->scope_profiles[s];
      for (size_t k = 0; sp && k < sp->n_profiles; k++) {
        const Opentelemetry__Proto__Profiles__V1development__Profile *pr = sp->profiles[k];
        for (size_t x = 0; pr && x < pr->n_samples; x++) {
          int32_t si = pr->samples[x] ? pr->samples[x]->stack_index : -1;
          if (si < 0 || (size_t)si >= d->n_stack_table || !d->stack_table[si]) continue;
          const Opentelemetry__Proto__Profiles__V1development__Stack *st = d->stack_table[si];
          for (size_t y = 0; y < st->n_location_indices; y++) {
            int32_t li = st->location_indices[y];
            if (li >= 0 && (size_t)li < nloc && !pids[li]) pids[li] = (int32_t)pid;
          }
        }
      }
    }
  }

  /* Existing strings and functions, for reuse. */
  for (size_t i = 0; i < d->n_string_table; i++) {
    const char *s = d->string_table[i] ? d->string_table[i] : "";
    if (pvec_push(&c.strs, (void *)s)) goto out;
    uint64_t h = hash_str(s);
    if ((c.smap.n + 1) * 2 > c.smap.cap && imap_grow(&c.smap)) goto out;
    size_t x = h & (c.smap.cap - 1);
    bool dup = false;
    for (; c.smap.h[x]; x = (x + 1) & (c.smap.cap - 1))
      if (c.smap.h[x] == h && !strcmp(c.strs.v[c.smap.v[x]], s)) dup = true;
    if (dup) continue;
    c.smap.h[x] = h;
    c.smap.v[x] = (int32_t)i;
    c.smap.n++;
  }
  for (size_t i = 0; i < d->n_function_table; i++) {
    function_t *f = d->function_table[i];
    if (pvec_push(&c.fns, f)) goto out;
    if (f && intern_fn(&c, f->name_strindex, f->system_name_strindex, f->filename_strindex, f) < 0)
      goto out;
  }
  if (d->n_string_table == 0 && intern_str(&c, "") != 0) goto out;

  if (!(locs = sonde_batch_memdup(j->b, d->location_table, nloc * sizeof(*locs)))) goto out;
  symres_tick(p->r);
  bool changed = false;
  for (size_t li = 0; li < nloc; li++) {
    location_t *l = locs[li];
    if (!l || l->n_lines) continue;
    if (l->mapping_index < 0 || (size_t)l->mapping_index >= d->n_mapping_table) continue;
    const mapping_t *m = d->mapping_table[l->mapping_index];
    if (!m) continue;
    const char *fname = str_at(d, m->filename_strindex);
    if (l->address == 0 && m->memory_limit == 0 && !*fname) continue; /* the zero entry */
    const sym_frame *fr = NULL;
    size_t n = 0;
    int e = 0;
    if (!strncmp(fname, "[kernel", 7)) {
      e = symres_kernel(p->r, l->address, &fr, &n);
    } else if (is_jit(fname)) {
      e = symres_perfmap(p->r, pids[li], m->memory_start + (l->address - m->file_offset), &fr, &n);
    } else if (fname[0] == '/') {
      mbid *mb = &bids[l->mapping_index];
      if (!mb->done) {
        mb->len = (uint8_t)mapping_build_id(d, m, mb->b, sizeof mb->b);
        mb->done = true;
      }
      e = symres_elf(p->r, fname, pids[li], mb->len ? mb->b : NULL, mb->len, l->address, &fr, &n);
    }
    if (e) goto out;
    if (!n) {
      j->unresolved++;
      continue;
    }
    location_t *nl = sonde_batch_memdup(j->b, l, sizeof(*l));
    line_t **lines = sonde_batch_alloc(j->b, n * sizeof(*lines));
    line_t *lv = sonde_batch_alloc(j->b, n * sizeof(*lv));
    if (!nl || !lines || !lv) goto out;
    for (size_t k = 0; k < n; k++) {
      int32_t ni = intern_str(&c, fr[k].name);
      int32_t si = intern_str(&c, fr[k].system ? fr[k].system : fr[k].name);
      int32_t fi = fr[k].file ? intern_str(&c, fr[k].file) : 0;
      if (ni < 0 || si < 0 || fi < 0) goto out;
      int32_t fn = intern_fn(&c, ni, si, fi, NULL);
      if (fn < 0) goto out;
      opentelemetry__proto__profiles__v1development__line__init(&lv[k]);
      lv[k].function_index = fn;
      lv[k].line = fr[k].line;
      lv[k].column = fr[k].column;
      lines[k] = &lv[k];
    }
    nl->lines = lines;
    nl->n_lines = n;
    locs[li] = nl;
    changed = true;
    j->resolved++;
  }
  rc = 0;
  if (!changed) goto out;
  /* Commit: a new dictionary with the grown tables (all arena memory of this batch). */
  dict_t *nd = sonde_batch_memdup(j->b, d, sizeof(*d));
  if (!nd) {
    rc = SONDE_ENOMEM;
    goto out;
  }
  nd->location_table = locs;
  if (c.strs_changed) {
    if (!(nd->string_table = sonde_batch_memdup(j->b, c.strs.v, c.strs.n * sizeof(char *)))) {
      rc = SONDE_ENOMEM;
      goto out;
    }
    nd->n_string_table = c.strs.n;
  }
  if (c.fns_changed) {
    if (!(nd->function_table = sonde_batch_memdup(j->b, c.fns.v, c.fns.n * sizeof(void *)))) {
      rc = SONDE_ENOMEM;
      goto out;
    }
    nd->n_function_table = c.fns.n;
  }
  req->dictionary = nd;
out:
  free(pids);
  free(bids);
  free(c.strs.v);
  free(c.fns.v);
  imap_free(&c.smap);
  imap_free(&c.fmap);
  return rc;
}

static void start_next(symp *p);

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void job_work(void *arg) {
  job *j = arg;
  double t0 = mono();
  j->rc = symbolize(j->p, j);
  j->seconds = mono() - t0;
}

static void job_done(void *arg, int status) {
  job *j = arg;
  symp *p = j->p;
  p->running = false;
  p->head = j->next;
  if (!p->head) p->tail = NULL;
  p->n_pending--;
  if (status == 0 && j->rc)
    sonde_log(p->h, SONDE_LOG_WARN, "symbolization stopped: %s (the batch goes on as it was)",
              sonde_strerror(j->rc));
  if (status == 0 && p->h->api->log_enabled(p->h, SONDE_LOG_DEBUG))
    sonde_log(p->h, SONDE_LOG_DEBUG, "symbolized %zu locations (%zu left as addresses) in %.3f ms",
              j->resolved, j->unresolved, j->seconds * 1e3);
  if (p->m_resolved && j->resolved) p->h->api->metric_add(p->m_resolved, (double)j->resolved);
  if (p->m_unresolved && j->unresolved)
    p->h->api->metric_add(p->m_unresolved, (double)j->unresolved);
  if (p->m_cache && status == 0) {
    symres_stats st;
    symres_stats_get(p->r, &st);
    p->h->api->metric_set(p->m_cache, (double)st.bytes);
  }
  /* A batch whose work failed or was cancelled is passed on unchanged (its dictionary is only
   * replaced once everything succeeded). */
  int rc = p->h->api->consume(p->h, j->b, NULL);
  if (rc)
    sonde_log(p->h, SONDE_LOG_WARN, "the next stage refused a profiles batch: %s",
              sonde_strerror(rc));
  sonde_batch_unref(j->b);
  free(j);
  start_next(p);
}

static void start_next(symp *p) {
  while (!p->running && p->head) {
    job *j = p->head;
    p->running = true;
    int rc = p->h->api->queue_work(p->h, job_work, job_done, j);
    if (rc == 0) return;
    /* No thread pool: pass it on unsymbolized rather than losing it. */
    p->running = false;
    p->head = j->next;
    if (!p->head) p->tail = NULL;
    p->n_pending--;
    sonde_log(p->h, SONDE_LOG_WARN, "cannot queue symbolization: %s", sonde_strerror(rc));
    p->h->api->consume(p->h, j->b, NULL);
    sonde_batch_unref(j->b);
    free(j);
  }
  if (!p->head && p->shutdown_done) {
    void (*done)(void *) = p->shutdown_done;
    p->shutdown_done = NULL;
    done(p->shutdown_arg);
  }
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static int sym_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  const sym_config *c = config;
  symp *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = c;
  static const char *const def_dirs[] = {"/usr/lib/debug"};
  symres_opts o = {
      .debug_dirs = c->debug_dirs.n ? (const char *const *)c->debug_dirs.v : def_dirs,
      .n_debug_dirs = c->debug_dirs.n ? c->debug_dirs.n : 1,
      .cache_bytes = c->cache_size,
      .kallsyms_path = c->kallsyms_path,
      .perf_map_dir = c->perf_map_dir,
      .proc_root = c->proc_root,
      .demangle = c->demangle,
  };
  if (c->debuginfod_urls && *c->debuginfod_urls) {
    /* libdwfl asks libdebuginfod, which only reads its servers from the environment; set before
     * any job runs, on the loop thread. */
    if (setenv("DEBUGINFOD_URLS", c->debuginfod_urls, 1)) {
      free(p);
      return SONDE_ENOMEM;
    }
    o.use_debuginfod = 1;
  }
  int rc = symres_new(&o, &p->r);
  if (rc) {
    free(p);
    return SONDE_ENOMEM;
  }
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_symbolizer_resolved_locations",
                 "Locations given function names.", NULL, &p->m_resolved);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_symbolizer_unresolved_locations",
                 "Locations left as addresses (no symbol, file or debug info).", NULL,
                 &p->m_unresolved);
  h->api->metric(h, SONDE_METRIC_GAUGE, "sonde_processor_symbolizer_cache_bytes",
                 "Bytes held by the symbolizer's caches.", NULL, &p->m_cache);
  *inst = p;
  return 0;
}

static int sym_consume(void *inst, sonde_batch *b) {
  symp *p = inst;
  if (p->n_pending >= MAX_PENDING) return SONDE_EREFUSED;
  job *j = calloc(1, sizeof(*j));
  if (!j) return SONDE_ENOMEM;
  j->p = p;
  j->b = sonde_batch_ref(b);
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  p->n_pending++;
  start_next(p);
  return 0;
}

static void sym_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  symp *p = inst;
  if (!p->head) {
    done(arg);
    return;
  }
  p->shutdown_done = done;
  p->shutdown_arg = arg;
}

static void sym_destroy(void *inst) {
  symp *p = inst;
  if (!p) return;
  while (p->head) {
    job *j = p->head;
    p->head = j->next;
    sonde_batch_unref(j->b);
    free(j);
  }
  symres_free(p->r);
  free(p);
}

static const sonde_component sym_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "symbolizer",
    .doc = "function names, files, lines and inlined frames for profile locations",
    .signals = SONDE_SIGNAL_PROFILES,
    .flags = SONDE_COMP_MUTATES,
    .options = sym_options,
    .config_size = sizeof(sym_config),
    .create = sym_create,
    .consume = sym_consume,
    .shutdown = sym_shutdown,
    .destroy = sym_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-symbolizer", "1.0", &sym_component);

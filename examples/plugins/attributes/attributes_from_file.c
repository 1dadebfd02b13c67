/* The `attributes_from_file` processor: an example third-party plug-in built against the installed
 * sonde SDK only.
 *
 * It reads `key=value` lines from a file and adds them as string attributes to the resource of
 * every resource_spans / resource_metrics / resource_logs / resource_profiles entry of each batch
 * (for profiles too, resource attributes are plain KeyValues; only profile and sample attributes
 * go through the request's dictionary). With `reload_interval` set, the file is re-read on the
 * thread pool and the new content replaces the old on the loop thread; a file that no longer parses
 * is logged (with its line number) and the last good content stays in use.
 *
 * Copy-on-write, all the way down: the core hands a mutating stage a private copy only when the
 * batch itself is shared, but a batch built by zero-copy merging (sonde_batch_hold) points at
 * resource entries that live in, and may be read through, other batches. So this stage never
 * writes into a structure it did not allocate: it builds new resource entries, resources and
 * attribute arrays in the batch arena and finally swaps the request's array pointer. An
 * allocation failure therefore leaves the batch exactly as it came.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Resource__V1__Resource resource_t;

/* Longest file accepted: attributes are copied into every batch, so this is a sanity bound. */
#define MAX_FILE_BYTES (1u << 20)

/* ---- options ------------------------------------------------------------------------------- */

enum { ACTION_UPSERT = 0, ACTION_INSERT = 1 };
static const char *const actions[] = {"upsert", "insert", NULL};

typedef struct attrs_config {
  char *path;
  int action;
  int64_t reload_interval_ns;
} attrs_config;

static const sonde_option attrs_options[] = {
    {.name = "path",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(attrs_config, path),
     .doc = "file of key=value lines (# starts a comment line) to add to every resource",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT_ENUMV("action", attrs_config, action, "upsert", actions,
                    "upsert: overwrite keys the resource already has; insert: keep them"),
    SONDE_OPT_RANGE("reload_interval", SONDE_OPT_DURATION, attrs_config, reload_interval_ns, "0", 0,
                    86400e9, "re-read the file this often (0: never)"),
    SONDE_OPT_END,
};

static int attrs_validate(const void *config, char *err, size_t errlen) {
  const attrs_config *c = config;
  if (!c->path || !c->path[0]) {
    snprintf(err, errlen, "path must be non-empty");
    return SONDE_ECONFIG;
  }
  return 0;
}

/* ---- the attribute file -------------------------------------------------------------------- */

/* One parsed file: keys[i] and values[i] point into buf. Immutable once built, so a reload
 * builds a new one on the thread pool and the loop thread swaps the pointer. */
typedef struct attrset {
  char *buf;
  char **keys, **values;
  size_t n;
} attrset;

static void attrset_free(attrset *s) {
  if (!s) return;
  free(s->buf);
  free(s->keys);
  free(s->values);
  free(s);
}

static bool attrset_equal(const attrset *a, const attrset *b) {
  if (a->n != b->n) return false;
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->keys[i], b->keys[i]) != 0 || strcmp(a->values[i], b->values[i]) != 0)
      return false;
  return true;
}

static bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims [s, e) in place and NUL-terminates it; returns the new start. */
static char *trim(char *s, char *e) {
  while (s < e && is_space(*s))
    s++;
  while (e > s && is_space(e[-1]))
    e--;
  *e = '\0';
  return s;
}

/* Reads the whole file into a NUL-terminated malloc'd buffer. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return errno == ENOENT ? SONDE_ENOTFOUND : SONDE_EIO;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  int rc = buf ? 0 : SONDE_ENOMEM;
  while (rc == 0) {
    if (cap - n < 2) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        rc = SONDE_ENOMEM;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - 1 - n, f);
    n += got;
    if (n > MAX_FILE_BYTES) {
      snprintf(err, errlen, "%s: larger than %u bytes", path, MAX_FILE_BYTES);
      rc = SONDE_ETOOBIG;
    } else if (got == 0 && ferror(f)) {
      snprintf(err, errlen, "%s: read error", path);
      rc = SONDE_EIO;
    } else if (got == 0) {
      break;
    }
  }
  fclose(f);
  if (rc == SONDE_ENOMEM) snprintf(err, errlen, "%s: out of memory", path);
  if (rc) {
    free(buf);
    return rc;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

/* Parses path into a new set. Runs on the thread pool for reloads, so it touches nothing shared
 * and does not log: the message in err is logged by the caller on the loop thread. A key that
 * appears twice keeps its last value, as in an environment file. */
static int attrset_load(const char *path, attrset **out, char *err, size_t errlen) {
  attrset *s = calloc(1, sizeof(*s));
  if (!s) {
    snprintf(err, errlen, "%s: out of memory", path);
    return SONDE_ENOMEM;
  }
  size_t len = 0;
  int rc = read_file(path, &s->buf, &len, err, errlen);
  if (rc) goto fail;
  if (memchr(s->buf, '\0', len)) {
    snprintf(err, errlen, "%s: contains a NUL byte; not a text file", path);
    rc = SONDE_EPROTO;
    goto fail;
  }
  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    lines += s->buf[i] == '\n';
  s->keys = calloc(lines, sizeof(*s->keys));
  s->values = calloc(lines, sizeof(*s->values));
  if (!s->keys || !s->values) {
    snprintf(err, errlen, "%s: out of memory", path);
    rc = SONDE_ENOMEM;
    goto fail;
  }
  char *p = s->buf, *end = s->buf + len;
  for (size_t lineno = 1; p < end; lineno++) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *eol = nl ? nl : end;
    char *line = trim(p, eol);
    p = nl ? nl + 1 : end;
    if (line[0] == '\0' || line[0] == '#') continue;
    char *eq = strchr(line, '=');
    if (!eq) {
      snprintf(err, errlen, "%s:%zu: expected key=value, got \"%.64s\"", path, lineno, line);
      rc = SONDE_EPROTO;
      goto fail;
    }
    char *key = trim(line, eq);
    char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
    if (key[0] == '\0') {
      snprintf(err, errlen, "%s:%zu: empty key before '='", path, lineno);
      rc = SONDE_EPROTO;
      goto fail;
    }
    size_t k = 0;
    while (k < s->n && strcmp(s->keys[k], key) != 0)
      k++;
    s->keys[k] = key;
    s->values[k] = value;
    if (k == s->n) s->n++;
  }
  *out = s;
  return 0;
fail:
  attrset_free(s);
  return rc;
}

/* ---- applying it to a batch ----------------------------------------------------------------- */

/* Where the resource entries sit in each signal's request, and where the Resource pointer sits in
 * an entry; read through offsets so one walker serves the four generated types. */
typedef struct shape {
  size_t req_n, req_arr;      /* request: n_resource_x, resource_x */
  size_t entry_size, res_off; /* entry: sizeof(ResourceX), offsetof(ResourceX, resource) */
} shape;

#define SHAPE(Req, Entry, n, arr)                                                                  \
  { offsetof(Req, n), offsetof(Req, arr), sizeof(Entry), offsetof(Entry, resource) }

static const shape trace_shape = SHAPE(sonde_traces, Opentelemetry__Proto__Trace__V1__ResourceSpans,
                                       n_resource_spans, resource_spans);
static const shape metric_shape =
    SHAPE(sonde_metrics, Opentelemetry__Proto__Metrics__V1__ResourceMetrics, n_resource_metrics,
          resource_metrics);
static const shape log_shape =
    SHAPE(sonde_logs, Opentelemetry__Proto__Logs__V1__ResourceLogs, n_resource_logs, resource_logs);
static const shape profile_shape =
    SHAPE(sonde_profiles, Opentelemetry__Proto__Profiles__V1development__ResourceProfiles,
          n_resource_profiles, resource_profiles);

#define FIELD(T, p, off) (*(T *)(void *)((char *)(p) + (off)))

static const shape *shape_of(sonde_signal sig) {
  switch (sig) {
  case SONDE_SIGNAL_TRACES:
    return &trace_shape;
  case SONDE_SIGNAL_METRICS:
    return &metric_shape;
  case SONDE_SIGNAL_LOGS:
    return &log_shape;
  case SONDE_SIGNAL_PROFILES:
    return &profile_shape;
  }
  return NULL;
}

/* The file's key/value strings copied once into the batch arena; the KeyValue and AnyValue nodes
 * are made per resource so that the message stays a tree a later stage may edit node by node. */
typedef struct arena_strs {
  char **keys, **values;
} arena_strs;

static kv_t *kv_new(sonde_batch *b, char *key, char *value) {
  kv_t *kv = sonde_batch_alloc(b, sizeof(*kv));
  any_t *v = sonde_batch_alloc(b, sizeof(*v));
  if (!kv || !v) return NULL;
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v->string_value = value;
  kv->key = key;
  kv->value = v;
  return kv;
}

/* A new Resource: old's fields (old may be NULL) with the set applied. */
static resource_t *resource_with(sonde_batch *b, const resource_t *old, const attrset *set,
                                 const arena_strs *str, int action) {
  resource_t *r = sonde_batch_alloc(b, sizeof(*r));
  if (!r) return NULL;
  if (old)
    *r = *old;
  else
    opentelemetry__proto__resource__v1__resource__init(r);
  size_t n_old = old ? old->n_attributes : 0;
  kv_t **a = sonde_batch_alloc(b, (n_old + set->n) * sizeof(*a)); /* set->n > 0 */
  if (!a) return NULL;
  size_t n = 0;
  /* Existing attributes first, in their order; an upserted key keeps its position. A quadratic
   * scan: files hold a handful of keys and resources a few dozen attributes. */
  for (size_t i = 0; i < n_old; i++) {
    kv_t *kv = old->attributes[i];
    size_t k = set->n;
    if (action == ACTION_UPSERT && kv && kv->key)
      for (k = 0; k < set->n && strcmp(set->keys[k], kv->key) != 0; k++)
        ;
    if (k < set->n) {
      if (!(kv = kv_new(b, str->keys[k], str->values[k]))) return NULL;
    }
    a[n++] = kv;
  }
  for (size_t k = 0; k < set->n; k++) {
    bool present = false;
    for (size_t i = 0; i < n_old && !present; i++) {
      const kv_t *kv = old->attributes[i];
      present = kv && kv->key && strcmp(kv->key, set->keys[k]) == 0;
    }
    if (present) continue; /* upserted above, or kept as it is for insert */
    if (!(a[n++] = kv_new(b, str->keys[k], str->values[k]))) return NULL;
  }
  r->attributes = a;
  r->n_attributes = n;
  return r;
}

/* Applies set to every resource of b; on failure b is unchanged. */
static int apply(sonde_batch *b, const attrset *set, int action) {
  const shape *sh = shape_of(sonde_batch_signal(b));
  ProtobufCMessage *req = sonde_batch_msg(b);
  if (!sh || !req) return SONDE_EINVAL;
  size_t n = FIELD(size_t, req, sh->req_n);
  void **entries = FIELD(void **, req, sh->req_arr);
  if (n == 0 || set->n == 0) return 0;

  arena_strs str = {sonde_batch_alloc(b, set->n * sizeof(char *)),
                    sonde_batch_alloc(b, set->n * sizeof(char *))};
  if (!str.keys || !str.values) return SONDE_ENOMEM;
  for (size_t k = 0; k < set->n; k++)
    if (!(str.keys[k] = sonde_batch_strdup(b, set->keys[k])) ||
        !(str.values[k] = sonde_batch_strdup(b, set->values[k])))
      return SONDE_ENOMEM;

  void **fresh = sonde_batch_alloc(b, n * sizeof(*fresh));
  if (!fresh) return SONDE_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (!entries[i]) { /* not valid OTLP, but keep whatever is there */
      fresh[i] = NULL;
      continue;
    }
    void *e = sonde_batch_memdup(b, entries[i], sh->entry_size);
    if (!e) return SONDE_ENOMEM;
    resource_t *r = resource_with(b, FIELD(resource_t *, e, sh->res_off), set, &str, action);
    if (!r) return SONDE_ENOMEM;
    FIELD(resource_t *, e, sh->res_off) = r;
    fresh[i] = e;
  }
  /* The one write into memory this stage did not allocate: the request of its private batch. */
  FIELD(void **, req, sh->req_arr) = fresh;
  return 0;
}

/* ---- the processor ------------------------------------------------------------------------- */

typedef struct attrs attrs;

/* One reload in flight: filled on the thread pool, consumed on the loop thread. */
typedef struct reload_job {
  attrs *a;
  attrset *set;
  int rc;
  char err[512];
} reload_job;

struct attrs {
  const sonde_host *h;
  const attrs_config *cfg; /* kept by the core until destroy */
  attrset *set;            /* current content; replaced only on the loop thread */
  sonde_timer *timer;
  bool reloading; /* a reload_job is on the thread pool */
  bool stopping;
  char last_err[512]; /* the last reload error logged, to log a broken file once, not per tick */
  sonde_metric *m_reloads, *m_failures;
};

static void reload_work(void *arg) {
  reload_job *j = arg;
  j->rc = attrset_load(j->a->cfg->path, &j->set, j->err, sizeof(j->err));
}

static void reload_done(void *arg, int status) {
  reload_job *j = arg;
  attrs *a = j->a;
  const sonde_host *h = a->h;
  a->reloading = false;
  if (status != 0 || a->stopping) { /* canceled, or the instance is shutting down */
    attrset_free(j->set);
  } else if (j->rc != 0) {
    if (a->m_failures) h->api->metric_add(a->m_failures, 1);
    if (strcmp(a->last_err, j->err) != 0) {
      sonde_log(h, SONDE_LOG_ERROR, "reload failed, keeping the previous %zu attributes: %s",
                a->set->n, j->err);
      snprintf(a->last_err, sizeof(a->last_err), "%s", j->err);
    }
  } else {
    if (a->m_reloads) h->api->metric_add(a->m_reloads, 1);
    if (a->last_err[0]) {
      sonde_log(h, SONDE_LOG_INFO, "%s parses again", a->cfg->path);
      a->last_err[0] = '\0';
    }
    if (attrset_equal(j->set, a->set)) {
      attrset_free(j->set);
    } else {
      sonde_log(h, SONDE_LOG_INFO, "reloaded %s: %zu attributes", a->cfg->path, j->set->n);
      attrset_free(a->set);
      a->set = j->set;
    }
  }
  free(j);
}

static void reload_tick(void *arg) {
  attrs *a = arg;
  if (a->reloading || a->stopping) return; /* a slow disk: skip ticks rather than pile up */
  reload_job *j = calloc(1, sizeof(*j));
  if (!j) {
    sonde_log(a->h, SONDE_LOG_WARN, "reload skipped: out of memory");
    return;
  }
  j->a = a;
  /* File I/O stays off the loop thread; the parse result comes back in reload_done. */
  int rc = a->h->api->queue_work(a->h, reload_work, reload_done, j);
  if (rc) {
    sonde_log(a->h, SONDE_LOG_WARN, "reload skipped: %s", sonde_strerror(rc));
    free(j);
    return;
  }
  a->reloading = true;
}

static int attrs_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals; /* the same work for every signal */
  const attrs_config *cfg = config;
  attrs *a = calloc(1, sizeof(*a));
  if (!a) return SONDE_ENOMEM;
  a->h = h;
  a->cfg = cfg;
  char err[512];
  /* The first read is synchronous: nothing runs yet, and a missing or broken file should stop the
   * service from starting rather than let data through without its attributes. */
  int rc = attrset_load(cfg->path, &a->set, err, sizeof(err));
  if (rc) {
    sonde_log(h, SONDE_LOG_ERROR, "%s", err);
    free(a);
    return rc == SONDE_ENOMEM ? rc : SONDE_ECONFIG;
  }
  if (h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_attributes_from_file_reloads",
                     "Successful re-reads of the attribute file", NULL, &a->m_reloads) ||
      h->api->metric(h, SONDE_METRIC_COUNTER,
                     "sonde_processor_attributes_from_file_reload_failures",
                     "Re-reads of the attribute file that failed (previous content kept)", NULL,
                     &a->m_failures))
    sonde_log(h, SONDE_LOG_WARN, "cannot register its metrics");
  sonde_log(h, SONDE_LOG_DEBUG, "%s: %zu attributes", cfg->path, a->set->n);
  *inst = a;
  return 0;
}

static int attrs_start(void *inst) {
  attrs *a = inst;
  int64_t every = a->cfg->reload_interval_ns;
  if (every <= 0) return 0;
  return a->h->api->timer_start(a->h, every, every, reload_tick, a, &a->timer);
}

static int attrs_consume(void *inst, sonde_batch *b) {
  attrs *a = inst;
  int rc = apply(b, a->set, a->cfg->action);
  if (rc) return rc; /* b is unchanged; the error goes back to whoever produced it */
  return a->h->api->consume(a->h, b, NULL);
}

static void attrs_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  attrs *a = inst;
  a->stopping = true;
  if (a->timer) {
    a->h->api->timer_stop(a->timer);
    a->timer = NULL;
  }
  /* Nothing is held back. A reload still on the thread pool finishes later: the core waits for
   * queued work before destroy, and reload_done frees the result once stopping is set. */
  done(arg);
}

static void attrs_destroy(void *inst) {
  attrs *a = inst;
  if (!a) return;
  if (a->timer) a->h->api->timer_stop(a->timer); /* destroy instead of shutdown */
  attrset_free(a->set);
  free(a);
}

static const sonde_component attrs_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "attributes_from_file",
    .doc = "adds the key=value lines of a file to every resource, optionally re-reading it",
    .signals = SONDE_SIGNAL_ALL,
    .flags = SONDE_COMP_MUTATES,
    .options = attrs_options,
    .config_size = sizeof(attrs_config),
    .validate = attrs_validate,
    .create = attrs_create,
    .start = attrs_start,
    .consume = attrs_consume,
    .shutdown = attrs_shutdown,
    .destroy = attrs_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-example-attributes", "1.0.0", &attrs_component);

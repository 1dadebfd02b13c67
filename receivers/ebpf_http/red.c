/* RED metrics (hx.h): one explicit-bucket histogram series per (process, metric, attribute set),
 * cumulative since the series was created, collected into an OTLP metrics batch with one
 * ResourceMetrics per process.
 *
 * Names and units follow the OTel semantic conventions: http.server/client.request.duration in
 * seconds with the buckets the HTTP conventions advise, the body sizes in bytes, and the RPC
 * metrics of the conventions up to v1.37 (rpc.server.duration, rpc.client.duration in ms, the
 * names Beyla and the gRPC instrumentations emit) with the SDK's default buckets, which are the
 * HTTP ones times 1000. Attributes are the low-cardinality ones the conventions require or
 * recommend; the number of series is bounded: past RED_MAX_SERIES a new attribute set goes into
 * one otel.metric.overflow=true series per process and metric, as the OTel SDKs do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "hx.h"

#define RED_MAX_SERIES 8192 /* attribute sets over all processes (overflow series not counted) */
#define RED_MAX_PROCS 1024  /* processes with series; exchanges of more are dropped, counted */
#define SERIES_BUCKETS 4096 /* hash chains */
#define PROC_BUCKETS 256
#define NB 15 /* explicit bounds */
#define MAX_ATTRS 8

typedef Opentelemetry__Proto__Metrics__V1__ResourceMetrics rm_t;
typedef Opentelemetry__Proto__Metrics__V1__ScopeMetrics sm_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__Histogram hist_t;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint hdp_t;

enum metric {
  M_HTTP_SERVER_DURATION,
  M_HTTP_CLIENT_DURATION,
  M_RPC_SERVER_DURATION,
  M_RPC_CLIENT_DURATION,
  M_HTTP_SERVER_REQ_SIZE,
  M_HTTP_SERVER_RESP_SIZE,
  M_HTTP_CLIENT_REQ_SIZE,
  M_HTTP_CLIENT_RESP_SIZE,
  M_N
};

static const struct {
  const char *name, *unit, *desc;
  bool seconds; /* bounds in seconds (else the SDK defaults: ms, bytes) */
} metrics[M_N] = {
    {"http.server.request.duration", "s", "Duration of HTTP server requests.", true},
    {"http.client.request.duration", "s", "Duration of HTTP client requests.", true},
    {"rpc.server.duration", "ms", "Measures the duration of inbound RPC.", false},
    {"rpc.client.duration", "ms", "Measures the duration of outbound RPC.", false},
    {"http.server.request.body.size", "By", "Size of HTTP server request bodies.", false},
    {"http.server.response.body.size", "By", "Size of HTTP server response bodies.", false},
    {"http.client.request.body.size", "By", "Size of HTTP client request bodies.", false},
    {"http.client.response.body.size", "By", "Size of HTTP client response bodies.", false},
};

static const double bounds_s[NB] = {0,   0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                    0.5, 0.75,  1,    2.5,   5,    7.5,   10};
static const double bounds_sdk[NB] = {0,   5,   10,   25,   50,   75,   100,  250,
                                      500, 750, 1000, 2500, 5000, 7500, 10000};

/* One attribute of a series: a string or an integer value. */
typedef struct attr {
  const char *key; /* static */
  const char *s;   /* NULL: integer i */
  int64_t i;
} attr;

typedef struct red_proc red_proc;

typedef struct series {
  struct series *next;  /* hash chain */
  struct series *pnext; /* the process's series */
  red_proc *proc;
  uint64_t hash;
  uint8_t metric, nattrs;
  bool overflow;
  uint64_t start_unix_ns;
  uint64_t count;
  double sum, min, max;
  uint64_t buckets[NB + 1];
  attr attrs[MAX_ATTRS]; /* string values point into the allocation after the struct */
} series;

struct red_proc {
  red_proc *next; /* hash chain */
  uint32_t pid;
  char *service_name, *service_namespace, *exe_name, *exe_path, *host_name, *container_id;
  series *series;
  series *overflow[M_N];
};

struct hx_red {
  series *chains[SERIES_BUCKETS];
  red_proc *procs[PROC_BUCKETS];
  size_t nseries, nprocs;
  uint64_t overflowed, dropped;
};

int hx_red_new(hx_red **out) {
  if (!out) return SONDE_EINVAL;
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : SONDE_ENOMEM;
}

static void proc_free(red_proc *p) {
  for (series *s = p->series, *n; s; s = n) {
    n = s->pnext;
    free(s);
  }
  for (int m = 0; m < M_N; m++)
    free(p->overflow[m]);
  free(p->service_name);
  free(p->service_namespace);
  free(p->exe_name);
  free(p->exe_path);
  free(p->host_name);
  free(p->container_id);
  free(p);
}

void hx_red_free(hx_red *r) {
  if (!r) return;
  for (size_t b = 0; b < PROC_BUCKETS; b++) {
    for (red_proc *p = r->procs[b], *n; p; p = n) {
      n = p->next;
      proc_free(p);
    }
  }
  free(r);
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

static uint64_t hash_str(uint64_t h, const char *s) {
  uint64_t x = 0xcbf29ce484222325ull;
  for (; *s; s++)
    x = (x ^ (uint8_t)*s) * 0x100000001b3ull;
  return mix(h, x);
}

static char *dup_or_null(const char *s) {
  return s && *s ? strdup(s) : NULL;
}

static red_proc *proc_get(hx_red *r, const hx_resource *res) {
  red_proc **head = &r->procs[res->pid % PROC_BUCKETS];
  for (red_proc *p = *head; p; p = p->next)
    if (p->pid == res->pid) return p;
  if (r->nprocs >= RED_MAX_PROCS) return NULL;
  red_proc *p = calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->pid = res->pid;
  p->service_name = dup_or_null(res->service_name);
  p->service_namespace = dup_or_null(res->service_namespace);
  p->exe_name = dup_or_null(res->exe_name);
  p->exe_path = dup_or_null(res->exe_path);
  p->host_name = dup_or_null(res->host_name);
  p->container_id = dup_or_null(res->container_id);
  p->next = *head;
  *head = p;
  r->nprocs++;
  return p;
}

static const char *method_of(const char *m) {
  static const char *const known[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                      "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  if (m)
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
      if (strcmp(m, known[i]) == 0) return known[i];
  return "_OTHER"; /* the conventions' bound on method cardinality */
}

static bool attrs_equal(const series *s, const attr *a, size_t n) {
  if (s->nattrs != n) return false;
  for (size_t i = 0; i < n; i++) {
    if (s->attrs[i].key != a[i].key) return false;
    if (!a[i].s != !s->attrs[i].s) return false;
    if (a[i].s ? strcmp(a[i].s, s->attrs[i].s) != 0 : a[i].i != s->attrs[i].i) return false;
  }
  return true;
}

static series *series_new(red_proc *p, int metric, const attr *a, size_t n, uint64_t h) {
  size_t extra = 0;
  for (size_t i = 0; i < n; i++)
    if (a[i].s) extra += strlen(a[i].s) + 1;
  series *s = calloc(1, sizeof(*s) + extra);
  if (!s) return NULL;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  s->start_unix_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  s->proc = p;
  s->metric = (uint8_t)metric;
  s->hash = h;
  s->nattrs = (uint8_t)n;
  char *w = (char *)(s + 1);
  for (size_t i = 0; i < n; i++) {
    s->attrs[i] = a[i];
    if (a[i].s) {
      size_t l = strlen(a[i].s) + 1;
      memcpy(w, a[i].s, l);
      s->attrs[i].s = w;
      w += l;
    }
  }
  return s;
}

static series *series_get(hx_red *r, red_proc *p, int metric, const attr *a, size_t n) {
  uint64_t h = mix(p->pid, (uint64_t)metric);
  for (size_t i = 0; i < n; i++)
    h = a[i].s ? hash_str(mix(h, (uintptr_t)a[i].key), a[i].s)
               : mix(mix(h, (uintptr_t)a[i].key), (uint64_t)a[i].i);
  series **head = &r->chains[h % SERIES_BUCKETS];
  for (series *s = *head; s; s = s->next)
    if (s->hash == h && s->proc == p && s->metric == metric && attrs_equal(s, a, n)) return s;
  if (r->nseries >= RED_MAX_SERIES) {
    r->overflowed++;
    if (!p->overflow[metric]) {
      attr o = {.key = "otel.metric.overflow", .s = NULL, .i = 1};
      series *s = series_new(p, metric, &o, 1, 0);
      if (!s) return NULL;
      s->overflow = true;
      p->overflow[metric] = s;
    }
    return p->overflow[metric];
  }
  series *s = series_new(p, metric, a, n, h);
  if (!s) return NULL;
  s->next = *head;
  *head = s;
  s->pnext = p->series;
  p->series = s;
  r->nseries++;
  return s;
}

static void observe(series *s, double v, bool seconds) {
  const double *b = seconds ? bounds_s : bounds_sdk;
  size_t i = 0;
  while (i < NB && v > b[i])
    i++; /* bucket i holds (b[i-1], b[i]] */
  s->buckets[i]++;
  if (s->count == 0 || v < s->min) s->min = v;
  if (s->count == 0 || v > s->max) s->max = v;
  s->count++;
  s->sum += v;
}

static void record(hx_red *r, red_proc *p, int metric, const attr *a, size_t n, double v) {
  series *s = series_get(r, p, metric, a, n);
  if (!s) {
    r->dropped++;
    return;
  }
  observe(s, v, metrics[metric].seconds);
}

void hx_red_record(hx_red *r, const hx_resource *res, const hx_exchange *ex, const char *route,
                   const char *server_address, int server_port) {
  if (!r || !res || !ex) return;
  red_proc *p = proc_get(r, res);
  if (!p) {
    r->dropped++;
    return;
  }
  uint64_t ns = ex->end_ns > ex->start_ns ? ex->end_ns - ex->start_ns : 0;
  attr a[MAX_ATTRS];
  size_t n = 0;
  char code[16];
  if (ex->proto == HX_GRPC) {
    /* "/pkg.Service/Method" */
    char svc[256] = "", meth[128] = "";
    const char *path = ex->path ? ex->path : "";
    const char *slash = path[0] == '/' ? strchr(path + 1, '/') : NULL;
    if (slash) {
      snprintf(svc, sizeof(svc), "%.*s", (int)(slash - path - 1), path + 1);
      snprintf(meth, sizeof(meth), "%s", slash + 1);
    }
    a[n++] = (attr){"rpc.system", "grpc", 0};
    a[n++] = (attr){"rpc.service", svc, 0};
    a[n++] = (attr){"rpc.method", meth, 0};
    if (ex->grpc_status >= 0) a[n++] = (attr){"rpc.grpc.status_code", NULL, ex->grpc_status};
    if (!ex->server) {
      if (server_address && *server_address) a[n++] = (attr){"server.address", server_address, 0};
      if (server_port > 0) a[n++] = (attr){"server.port", NULL, server_port};
    }
    record(r, p, ex->server ? M_RPC_SERVER_DURATION : M_RPC_CLIENT_DURATION, a, n,
           (double)ns / 1e6);
    return;
  }
  a[n++] = (attr){"http.request.method", method_of(ex->method), 0};
  if (ex->status > 0) a[n++] = (attr){"http.response.status_code", NULL, ex->status};
  a[n++] = (attr){"url.scheme", ex->tls ? "https" : "http", 0};
  a[n++] = (attr){"network.protocol.version", ex->version ? ex->version : "1.1", 0};
  bool failed = ex->status == 0 || ex->status >= (ex->server ? 500 : 400);
  if (failed) {
    /* the status code as a string; with no response, the name of the HTTP/2 error code that
     * reset the stream ("CANCEL"), else _OTHER */
    snprintf(code, sizeof(code), "%d", ex->status);
    const char *et = ex->status ? code : "_OTHER";
    if (!ex->status && ex->rst_code >= 0) et = nghttp2_http2_strerror((uint32_t)ex->rst_code);
    a[n++] = (attr){"error.type", et, 0};
  }
  if (ex->server) {
    if (route && *route) a[n++] = (attr){"http.route", route, 0};
  } else {
    if (server_address && *server_address) a[n++] = (attr){"server.address", server_address, 0};
    if (server_port > 0) a[n++] = (attr){"server.port", NULL, server_port};
  }
  int base = ex->server ? M_HTTP_SERVER_DURATION : M_HTTP_CLIENT_DURATION;
  record(r, p, base, a, n, (double)ns / 1e9);
  int req = ex->server ? M_HTTP_SERVER_REQ_SIZE : M_HTTP_CLIENT_REQ_SIZE;
  record(r, p, req, a, n, (double)ex->req_body_bytes);
  if (ex->status > 0) record(r, p, req + 1, a, n, (double)ex->resp_body_bytes);
}

void hx_red_forget(hx_red *r, uint32_t pid) {
  if (!r) return;
  red_proc **pp = &r->procs[pid % PROC_BUCKETS];
  while (*pp && (*pp)->pid != pid)
    pp = &(*pp)->next;
  red_proc *p = *pp;
  if (!p) return;
  *pp = p->next;
  for (series *s = p->series; s; s = s->pnext) {
    series **sp = &r->chains[s->hash % SERIES_BUCKETS];
    while (*sp != s)
      sp = &(*sp)->next;
    *sp = s->next;
    r->nseries--;
  }
  proc_free(p);
  r->nprocs--;
}

void hx_red_stats(const hx_red *r, size_t *series_out, uint64_t *overflowed, uint64_t *dropped) {
  if (series_out) *series_out = r ? r->nseries : 0;
  if (overflowed) *overflowed = r ? r->overflowed : 0;
  if (dropped) *dropped = r ? r->dropped : 0;
}

/* ---- collect ---- */

static int add_res_str(sonde_batch *b, sonde_kv **a, size_t *n, const char *k, const char *v) {
  if (!v) return 0;
  return (a[(*n)++] = sonde_batch_kv_str(b, k, v)) ? 0 : SONDE_ENOMEM;
}

static int fill_point(sonde_batch *b, const series *s, uint64_t now, hdp_t *dp) {
  opentelemetry__proto__metrics__v1__histogram_data_point__init(dp);
  dp->start_time_unix_nano = s->start_unix_ns;
  dp->time_unix_nano = now > s->start_unix_ns ? now : s->start_unix_ns;
  dp->count = s->count;
  dp->_sum_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM;
  dp->sum = s->sum;
  if (s->count) {
    dp->_min_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MIN_MIN;
    dp->min = s->min;
    dp->_max_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MAX_MAX;
    dp->max = s->max;
  }
  dp->bucket_counts = sonde_batch_memdup(b, s->buckets, sizeof(s->buckets));
  dp->explicit_bounds =
      sonde_batch_memdup(b, metrics[s->metric].seconds ? bounds_s : bounds_sdk, sizeof(bounds_s));
  dp->attributes = sonde_batch_alloc(b, sizeof(sonde_kv *) * (s->nattrs ? s->nattrs : 1));
  if (!dp->bucket_counts || !dp->explicit_bounds || !dp->attributes) return SONDE_ENOMEM;
  dp->n_bucket_counts = NB + 1;
  dp->n_explicit_bounds = NB;
  for (size_t i = 0; i < s->nattrs; i++) {
    const attr *a = &s->attrs[i];
    sonde_kv *kv = s->overflow ? sonde_batch_kv_bool(b, a->key, true)
                   : a->s      ? sonde_batch_kv_str(b, a->key, a->s)
                               : sonde_batch_kv_int(b, a->key, a->i);
    if (!kv) return SONDE_ENOMEM;
    dp->attributes[dp->n_attributes++] = kv;
  }
  return 0;
}

static int proc_metrics(sonde_batch *b, const red_proc *p, uint64_t now, rm_t **out) {
  size_t per[M_N] = {0};
  for (const series *s = p->series; s; s = s->pnext)
    per[s->metric]++;
  size_t nm = 0;
  for (int m = 0; m < M_N; m++) {
    if (p->overflow[m]) per[m]++;
    if (per[m]) nm++;
  }
  *out = NULL;
  if (!nm) return 0;
  rm_t *rm = sonde_batch_alloc(b, sizeof(*rm));
  sm_t *sm = sonde_batch_alloc(b, sizeof(*sm));
  sm_t **sms = sonde_batch_alloc(b, sizeof(*sms));
  Opentelemetry__Proto__Resource__V1__Resource *res = sonde_batch_alloc(b, sizeof(*res));
  Opentelemetry__Proto__Common__V1__InstrumentationScope *scope =
      sonde_batch_alloc(b, sizeof(*scope));
  sonde_kv **ra = sonde_batch_alloc(b, sizeof(sonde_kv *) * 7);
  metric_t **ms = sonde_batch_alloc(b, sizeof(*ms) * nm);
  if (!rm || !sm || !sms || !res || !scope || !ra || !ms) return SONDE_ENOMEM;
  opentelemetry__proto__metrics__v1__resource_metrics__init(rm);
  opentelemetry__proto__metrics__v1__scope_metrics__init(sm);
  opentelemetry__proto__resource__v1__resource__init(res);
  opentelemetry__proto__common__v1__instrumentation_scope__init(scope);
  size_t n = 0;
  /* the SDKs' fallback when nothing names the service */
  const char *svc = p->service_name ? p->service_name
                    : p->exe_name   ? p->exe_name
                                    : "unknown_service";
  if (add_res_str(b, ra, &n, "service.name", svc) ||
      add_res_str(b, ra, &n, "service.namespace", p->service_namespace) ||
      !(ra[n++] = sonde_batch_kv_int(b, "process.pid", p->pid)) ||
      add_res_str(b, ra, &n, "process.executable.name", p->exe_name) ||
      add_res_str(b, ra, &n, "process.executable.path", p->exe_path) ||
      add_res_str(b, ra, &n, "host.name", p->host_name) ||
      add_res_str(b, ra, &n, "container.id", p->container_id))
    return SONDE_ENOMEM;
  res->attributes = ra;
  res->n_attributes = n;
  if (!(scope->name = sonde_batch_strdup(b, "sonde/ebpf_http")) ||
      !(scope->version = sonde_batch_strdup(b, SONDE_VERSION)))
    return SONDE_ENOMEM;
  size_t k = 0;
  for (int m = 0; m < M_N; m++) {
    if (!per[m]) continue;
    metric_t *mt = sonde_batch_alloc(b, sizeof(*mt));
    hist_t *h = sonde_batch_alloc(b, sizeof(*h));
    hdp_t **dps = sonde_batch_alloc(b, sizeof(*dps) * per[m]);
    if (!mt || !h || !dps) return SONDE_ENOMEM;
    opentelemetry__proto__metrics__v1__metric__init(mt);
    opentelemetry__proto__metrics__v1__histogram__init(h);
    if (!(mt->name = sonde_batch_strdup(b, metrics[m].name)) ||
        !(mt->unit = sonde_batch_strdup(b, metrics[m].unit)) ||
        !(mt->description = sonde_batch_strdup(b, metrics[m].desc)))
      return SONDE_ENOMEM;
    h->aggregation_temporality =
        OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
    for (const series *s = p->series; s; s = s->pnext) {
      if (s->metric != m) continue;
      hdp_t *dp = sonde_batch_alloc(b, sizeof(*dp));
      if (!dp || fill_point(b, s, now, dp)) return SONDE_ENOMEM;
      dps[h->n_data_points++] = dp;
    }
    if (p->overflow[m]) {
      hdp_t *dp = sonde_batch_alloc(b, sizeof(*dp));
      if (!dp || fill_point(b, p->overflow[m], now, dp)) return SONDE_ENOMEM;
      dps[h->n_data_points++] = dp;
    }
    h->data_points = dps;
    mt->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM;
    mt->histogram = h;
    ms[k++] = mt;
  }
  sm->scope = scope;
  sm->metrics = ms;
  sm->n_metrics = k;
  sms[0] = sm;
  rm->resource = res;
  rm->scope_metrics = sms;
  rm->n_scope_metrics = 1;
  *out = rm;
  return 0;
}

int hx_red_collect(hx_red *r, uint64_t now_unix_ns, sonde_batch **out) {
  if (!r || !out) return SONDE_EINVAL;
  *out = NULL;
  if (r->nprocs == 0) return 0;
  sonde_batch *b;
  int rc = sonde_batch_new(SONDE_SIGNAL_METRICS, &b);
  if (rc) return rc;
  sonde_metrics *req = sonde_batch_metrics(b);
  rm_t **rms = sonde_batch_alloc(b, sizeof(*rms) * r->nprocs);
  if (!rms) {
    sonde_batch_unref(b);
    return SONDE_ENOMEM;
  }
  size_t n = 0;
  for (size_t i = 0; i < PROC_BUCKETS; i++) {
    for (red_proc *p = r->procs[i]; p; p = p->next) {
      rm_t *rm;
      if ((rc = proc_metrics(b, p, now_unix_ns, &rm))) {
        sonde_batch_unref(b);
        return rc;
      }
      if (rm) rms[n++] = rm;
    }
  }
  if (n == 0) {
    sonde_batch_unref(b);
    return 0;
  }
  req->resource_metrics = rms;
  req->n_resource_metrics = n;
  *out = b;
  return 0;
}

/* Bench-only plug-in for tests/bench/otlp_bench.sh (built by that script, not by CMake):
 *   receiver `otlp_benchgen`: requests of `per_request` spans with 10 attributes each at `rate`
 *     spans/s, every span's start time the wall clock at creation (so a sink can tell latency);
 *   exporter `otlp_benchsink`: counts spans and records now - start_time of each request's first
 *     span, writing a JSON line {"spans":N,"requests":N,"p50_ms":x,"p99_ms":x} to `out` each
 * second. Strings point to static storage: a batch only reads them and never frees them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;

static uint64_t wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- generator --------------------------------------------------------------------------------
 */

typedef struct gen_cfg {
  int64_t rate;
  int64_t per_request;
} gen_cfg;

static const sonde_option gen_options[] = {
    SONDE_OPT_RANGE("rate", SONDE_OPT_INT, gen_cfg, rate, "100000", 1, 1e9, "spans per second"),
    SONDE_OPT_RANGE("per_request", SONDE_OPT_INT, gen_cfg, per_request, "100", 1, 100000,
                    "spans per request"),
    SONDE_OPT_END,
};

typedef struct gen {
  const sonde_host *h;
  const gen_cfg *cfg;
  sonde_timer *timer;
  uint64_t start_ms, made, refused, next_id;
} gen;

static const char *const keys[10] = {
    "http.method", "http.route", "http.status_code", "net.peer.name", "user.id",
    "tenant",      "region",     "db.system",        "retry.count",   "payload.size"};
static const char *const svals[10] = {"GET",        "/api/v1/orders/{id}",
                                      NULL,         "orders.internal",
                                      "user-12345", "acme",
                                      "eu-west-1",  "postgresql",
                                      NULL,         NULL};

static int make_request(gen *g, sonde_batch **out) {
  sonde_batch *b;
  int rc = sonde_batch_new(SONDE_SIGNAL_TRACES, &b);
  if (rc) return rc;
  sonde_traces *req = sonde_batch_traces(b);
  size_t n = (size_t)g->cfg->per_request;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = sonde_batch_alloc(b, sizeof *rs);
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = sonde_batch_alloc(b, sizeof *ss);
  Opentelemetry__Proto__Resource__V1__Resource *res = sonde_batch_alloc(b, sizeof *res);
  kv_t *rkv = sonde_batch_alloc(b, sizeof *rkv);
  any_t *rv = sonde_batch_alloc(b, sizeof *rv);
  kv_t **rkvp = sonde_batch_alloc(b, sizeof *rkvp);
  req->resource_spans = sonde_batch_alloc(b, sizeof *req->resource_spans);
  Opentelemetry__Proto__Trace__V1__ScopeSpans **ssp = sonde_batch_alloc(b, sizeof *ssp);
  span_t **spp = sonde_batch_alloc(b, n * sizeof *spp);
  span_t *spans = sonde_batch_alloc(b, n * sizeof *spans);
  kv_t *kvs = sonde_batch_alloc(b, n * 10 * sizeof *kvs);
  any_t *vals = sonde_batch_alloc(b, n * 10 * sizeof *vals);
  kv_t **kvps = sonde_batch_alloc(b, n * 10 * sizeof *kvps);
  uint8_t *ids = sonde_batch_alloc(b, n * 24);
  if (!rs || !ss || !res || !rkv || !rv || !rkvp || !req->resource_spans || !ssp || !spp ||
      !spans || !kvs || !vals || !kvps || !ids) {
    sonde_batch_unref(b);
    return SONDE_ENOMEM;
  }
  opentelemetry__proto__trace__v1__resource_spans__init(rs);
  opentelemetry__proto__trace__v1__scope_spans__init(ss);
  rs->scope_spans = ssp;
  ss->spans = spp;
  opentelemetry__proto__resource__v1__resource__init(res);
  opentelemetry__proto__common__v1__key_value__init(rkv);
  opentelemetry__proto__common__v1__any_value__init(rv);
  rv->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  rv->string_value = (char *)"bench-service";
  rkv->key = (char *)"service.name";
  rkv->value = rv;
  rkvp[0] = rkv;
  res->attributes = rkvp;
  res->n_attributes = 1;
  rs->resource = res;
  rs->scope_spans[0] = ss;
  rs->n_scope_spans = 1;
  req->resource_spans[0] = rs;
  req->n_resource_spans = 1;
  uint64_t now = wall_ns();
  for (size_t i = 0; i < n; i++) {
    span_t *sp = &spans[i];
    opentelemetry__proto__trace__v1__span__init(sp);
    uint64_t id = ++g->next_id;
    uint8_t *t = ids + i * 24;
    memcpy(t, "benchbenchbench!", 16);
    memcpy(t + 8, &id, 8);
    memcpy(t + 16, &id, 8);
    sp->trace_id = (ProtobufCBinaryData){16, t};
    sp->span_id = (ProtobufCBinaryData){8, t + 16};
    sp->name = (char *)"GET /api/v1/orders/{id}";
    sp->kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER;
    sp->start_time_unix_nano = now;
    sp->end_time_unix_nano = now + 1500000;
    sp->attributes = kvps + i * 10;
    sp->n_attributes = 10;
    for (int k = 0; k < 10; k++) {
      kv_t *kv = &kvs[i * 10 + (size_t)k];
      any_t *v = &vals[i * 10 + (size_t)k];
      opentelemetry__proto__common__v1__key_value__init(kv);
      opentelemetry__proto__common__v1__any_value__init(v);
      if (svals[k]) {
        v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
        v->string_value = (char *)svals[k];
      } else {
        v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
        v->int_value = (int64_t)(id * 7 + (uint64_t)k);
      }
      kv->key = (char *)keys[k];
      kv->value = v;
      sp->attributes[k] = kv;
    }
    ss->spans[i] = sp;
  }
  ss->n_spans = n;
  *out = b;
  return 0;
}

static void gen_tick(void *arg) {
  gen *g = arg;
  uint64_t now = uv_now(g->h->api->loop(g->h));
  if (!g->start_ms) g->start_ms = now;
  uint64_t due = (uint64_t)((double)(now - g->start_ms + 1) * (double)g->cfg->rate / 1000.0);
  /* At most a second of backlog: a generator that fell behind does not burst forever. */
  if (due > g->made + (uint64_t)g->cfg->rate) g->made = due - (uint64_t)g->cfg->rate;
  while (g->made + (uint64_t)g->cfg->per_request <= due) {
    sonde_batch *b;
    if (make_request(g, &b)) return;
    int rc = g->h->api->consume(g->h, b, NULL);
    sonde_batch_unref(b);
    if (rc) g->refused++;
    g->made += (uint64_t)g->cfg->per_request;
  }
}

static int gen_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  gen *g = calloc(1, sizeof *g);
  if (!g) return SONDE_ENOMEM;
  g->h = h;
  g->cfg = config;
  *inst = g;
  return 0;
}

static int gen_start(void *inst) {
  gen *g = inst;
  return g->h->api->timer_start(g->h, 1000000, 1000000, gen_tick, g, &g->timer);
}

static void gen_shutdown(void *inst, void (*done)(void *), void *arg) {
  gen *g = inst;
  if (g->timer) g->h->api->timer_stop(g->timer);
  g->timer = NULL;
  sonde_log(g->h, SONDE_LOG_INFO, "generated %" PRIu64 " spans, %" PRIu64 " requests refused",
            g->made, g->refused);
  done(arg);
}

static void gen_destroy(void *inst) {
  free(inst);
}

static const sonde_component gen_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_RECEIVER,
    .type = "otlp_benchgen",
    .doc = "bench load: spans with 10 attributes at a fixed rate",
    .signals = SONDE_SIGNAL_TRACES,
    .options = gen_options,
    .config_size = sizeof(gen_cfg),
    .create = gen_create,
    .start = gen_start,
    .shutdown = gen_shutdown,
    .destroy = gen_destroy,
};

/* ---- sink ----------------------------------------------------------------------------------- */

typedef struct sink_cfg {
  char *out;
} sink_cfg;

static const sonde_option sink_options[] = {
    SONDE_OPT("out", SONDE_OPT_STRING, sink_cfg, out, "/dev/null", "where the figures go"),
    SONDE_OPT_END,
};

#define NBUCKET 100000 /* 0.1 ms buckets up to 10 s */

typedef struct sink {
  const sonde_host *h;
  const sink_cfg *cfg;
  sonde_timer *timer;
  uint64_t spans, requests;
  uint32_t *hist;
} sink;

static double quantile(const sink *s, double q) {
  uint64_t total = 0;
  for (int i = 0; i < NBUCKET; i++)
    total += s->hist[i];
  if (!total) return 0;
  uint64_t want = (uint64_t)((double)total * q), acc = 0;
  for (int i = 0; i < NBUCKET; i++) {
    acc += s->hist[i];
    if (acc > want) return (i + 1) * 0.1;
  }
  return NBUCKET * 0.1;
}

static void sink_tick(void *arg) {
  sink *s = arg;
  FILE *f = fopen(s->cfg->out, "a");
  if (!f) return;
  fprintf(f, "{\"spans\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"p50_ms\":%.1f,\"p99_ms\":%.1f}\n",
          s->spans, s->requests, quantile(s, 0.5), quantile(s, 0.99));
  fclose(f);
}

static int sink_consume(void *inst, sonde_batch *b) {
  sink *s = inst;
  sonde_traces *t = sonde_batch_traces(b);
  if (!t) return 0;
  uint64_t now = wall_ns();
  for (size_t i = 0; i < t->n_resource_spans; i++)
    for (size_t j = 0; j < t->resource_spans[i]->n_scope_spans; j++) {
      Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = t->resource_spans[i]->scope_spans[j];
      s->spans += ss->n_spans;
      /* One latency sample per 100 spans: one per generated request. */
      for (size_t k = 0; k < ss->n_spans; k += 100) {
        uint64_t st = ss->spans[k]->start_time_unix_nano;
        uint64_t us = now > st ? (now - st) / 100000 : 0;
        s->hist[us < NBUCKET ? us : NBUCKET - 1]++;
        s->requests++;
      }
    }
  return 0;
}

static int sink_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  sink *s = calloc(1, sizeof *s);
  if (!s) return SONDE_ENOMEM;
  s->hist = calloc(NBUCKET, sizeof *s->hist);
  if (!s->hist) {
    free(s);
    return SONDE_ENOMEM;
  }
  s->h = h;
  s->cfg = config;
  *inst = s;
  return 0;
}

static int sink_start(void *inst) {
  sink *s = inst;
  return s->h->api->timer_start(s->h, 1000000000, 1000000000, sink_tick, s, &s->timer);
}

static void sink_shutdown(void *inst, void (*done)(void *), void *arg) {
  sink *s = inst;
  if (s->timer) s->h->api->timer_stop(s->timer);
  s->timer = NULL;
  sink_tick(s);
  done(arg);
}

static void sink_destroy(void *inst) {
  sink *s = inst;
  free(s->hist);
  free(s);
}

static const sonde_component sink_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "otlp_benchsink",
    .doc = "bench sink: counts spans and end-to-end latency",
    .signals = SONDE_SIGNAL_TRACES,
    .options = sink_options,
    .config_size = sizeof(sink_cfg),
    .create = sink_create,
    .start = sink_start,
    .consume = sink_consume,
    .shutdown = sink_shutdown,
    .destroy = sink_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-otlp-bench", "0.1", &gen_component, &sink_component);

/* The `testgen` receiver: deterministic traces, metrics and logs for tests.
 *
 * Item i (0-based, per signal) carries everything a checker needs to recognise it:
 *   span:        trace_id = 0x73 0x6f 0x6e 0x64 seed(4 BE) (i/4)(8 BE), span_id = (i+1)(8 BE),
 *                parent = first span of its trace, name "span-<i>"
 *   data point:  even i in gauge "testgen.gauge" (double i/2), odd i in sum "testgen.sum" (int i)
 *   log record:  body "log-<i>", severity INFO, trace/span ids as the span with the same index
 * and the attributes testgen.index (int i), testgen.name ("item-<i>"), testgen.even (bool),
 * testgen.half (double i/2). Each batch of per_batch items is split over two resources
 * (service.name "testgen", testgen.batch, testgen.part) so that batch splitting is exercised.
 * A refused batch (SONDE_EREFUSED) is offered again at the next tick; the receiver stops once
 * `count` items of each signal were accepted.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;

typedef struct testgen_config {
  int64_t count;
  int64_t per_batch;
  int64_t interval_ns;
  int64_t seed;
} testgen_config;

static const sonde_option testgen_options[] = {
    SONDE_OPT_RANGE("count", SONDE_OPT_INT, testgen_config, count, "100", 0, 1e12,
                    "total items to generate per signal"),
    SONDE_OPT_RANGE("per_batch", SONDE_OPT_INT, testgen_config, per_batch, "10", 1, 1e9,
                    "items per generated batch"),
    SONDE_OPT("interval", SONDE_OPT_DURATION, testgen_config, interval_ns, "10ms",
              "time between batches"),
    SONDE_OPT_RANGE("seed", SONDE_OPT_INT, testgen_config, seed, "0", 0, 4294967295.0,
                    "mixed into trace ids"),
    SONDE_OPT_END,
};

enum { N_SIG = 3 };
static const sonde_signal sig_of[N_SIG] = {SONDE_SIGNAL_TRACES, SONDE_SIGNAL_METRICS,
                                           SONDE_SIGNAL_LOGS};

typedef struct testgen {
  const sonde_host *h;
  const testgen_config *cfg;
  uint32_t signals;
  sonde_timer *timer;
  int64_t next[N_SIG];         /* index of the next item to generate */
  sonde_batch *pending[N_SIG]; /* refused batch waiting for another try */
  int64_t pending_n[N_SIG];
  uint64_t batches, refused;
  bool finished;
} testgen;

/* ---- building blocks in the batch arena ------------------------------------------------------ */

static any_t *any_new(sonde_batch *b) {
  any_t *v = sonde_batch_alloc(b, sizeof(*v));
  if (v) opentelemetry__proto__common__v1__any_value__init(v);
  return v;
}

static kv_t *kv_new(sonde_batch *b, const char *key, any_t *v) {
  kv_t *kv = sonde_batch_alloc(b, sizeof(*kv));
  if (!kv || !v) return NULL;
  opentelemetry__proto__common__v1__key_value__init(kv);
  kv->key = sonde_batch_strdup(b, key);
  kv->value = v;
  return kv->key ? kv : NULL;
}

static kv_t *kv_str(sonde_batch *b, const char *key, const char *s) {
  any_t *v = any_new(b);
  if (!v || !(v->string_value = sonde_batch_strdup(b, s))) return NULL;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  return kv_new(b, key, v);
}

static kv_t *kv_int(sonde_batch *b, const char *key, int64_t i) {
  any_t *v = any_new(b);
  if (!v) return NULL;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  v->int_value = i;
  return kv_new(b, key, v);
}

static kv_t *kv_bool(sonde_batch *b, const char *key, bool x) {
  any_t *v = any_new(b);
  if (!v) return NULL;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
  v->bool_value = x;
  return kv_new(b, key, v);
}

static kv_t *kv_double(sonde_batch *b, const char *key, double d) {
  any_t *v = any_new(b);
  if (!v) return NULL;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
  v->double_value = d;
  return kv_new(b, key, v);
}

/* The four per-item attributes; NULL on out of memory. */
static kv_t **item_attrs(sonde_batch *b, int64_t i, size_t *n) {
  kv_t **a = sonde_batch_alloc(b, 4 * sizeof(*a));
  char name[32];
  snprintf(name, sizeof(name), "item-%" PRId64, i);
  if (!a || !(a[0] = kv_int(b, "testgen.index", i)) || !(a[1] = kv_str(b, "testgen.name", name)) ||
      !(a[2] = kv_bool(b, "testgen.even", i % 2 == 0)) ||
      !(a[3] = kv_double(b, "testgen.half", (double)i / 2.0)))
    return NULL;
  *n = 4;
  return a;
}

static Opentelemetry__Proto__Resource__V1__Resource *resource_new(sonde_batch *b, uint64_t batch,
                                                                  int part) {
  Opentelemetry__Proto__Resource__V1__Resource *r = sonde_batch_alloc(b, sizeof(*r));
  kv_t **a = sonde_batch_alloc(b, 3 * sizeof(*a));
  if (!r || !a) return NULL;
  opentelemetry__proto__resource__v1__resource__init(r);
  if (!(a[0] = kv_str(b, "service.name", "testgen")) ||
      !(a[1] = kv_int(b, "testgen.batch", (int64_t)batch)) ||
      !(a[2] = kv_int(b, "testgen.part", part)))
    return NULL;
  r->attributes = a;
  r->n_attributes = 3;
  return r;
}

static Opentelemetry__Proto__Common__V1__InstrumentationScope *scope_new(sonde_batch *b) {
  Opentelemetry__Proto__Common__V1__InstrumentationScope *s = sonde_batch_alloc(b, sizeof(*s));
  if (!s) return NULL;
  opentelemetry__proto__common__v1__instrumentation_scope__init(s);
  s->name = sonde_batch_strdup(b, "sonde/testgen");
  s->version = sonde_batch_strdup(b, "1");
  return s->name && s->version ? s : NULL;
}

static void put_be(uint8_t *p, uint64_t v, int n) {
  for (int k = n - 1; k >= 0; k--, v >>= 8)
    p[k] = (uint8_t)v;
}

static bool ids(sonde_batch *b, uint32_t seed, int64_t i, ProtobufCBinaryData *trace,
                ProtobufCBinaryData *span, ProtobufCBinaryData *parent) {
  uint8_t *t = sonde_batch_alloc(b, 16), *s = sonde_batch_alloc(b, 8);
  if (!t || !s) return false;
  memcpy(t, "sond", 4);
  put_be(t + 4, seed, 4);
  put_be(t + 8, (uint64_t)(i / 4), 8);
  put_be(s, (uint64_t)i + 1, 8);
  *trace = (ProtobufCBinaryData){16, t};
  *span = (ProtobufCBinaryData){8, s};
  if (parent && i % 4 != 0) {
    uint8_t *p = sonde_batch_alloc(b, 8);
    if (!p) return false;
    put_be(p, (uint64_t)(i - i % 4) + 1, 8);
    *parent = (ProtobufCBinaryData){8, p};
  }
  return true;
}

#define BASE_NS 1700000000000000000ull

/* ---- one batch per signal ----------------------------------------------------------------------
 */

/* Items [first, first+n) over two resources: the first half and the rest. */
static int gen_traces(testgen *g, sonde_batch *b, int64_t first, int64_t n) {
  sonde_traces *req = sonde_batch_traces(b);
  int parts = n > 1 ? 2 : 1;
  req->resource_spans = sonde_batch_alloc(b, (size_t)parts * sizeof(*req->resource_spans));
  if (!req->resource_spans) return SONDE_ENOMEM;
  int64_t i = first;
  for (int p = 0; p < parts; p++) {
    int64_t cnt = p == 0 ? (parts == 1 ? n : n / 2) : n - n / 2;
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = sonde_batch_alloc(b, sizeof(*rs));
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = sonde_batch_alloc(b, sizeof(*ss));
    if (!rs || !ss) return SONDE_ENOMEM;
    opentelemetry__proto__trace__v1__resource_spans__init(rs);
    opentelemetry__proto__trace__v1__scope_spans__init(ss);
    rs->resource = resource_new(b, g->batches, p);
    rs->scope_spans = sonde_batch_alloc(b, sizeof(*rs->scope_spans));
    ss->scope = scope_new(b);
    ss->spans = sonde_batch_alloc(b, (size_t)cnt * sizeof(*ss->spans));
    if (!rs->resource || !rs->scope_spans || !ss->scope || !ss->spans) return SONDE_ENOMEM;
    rs->scope_spans[0] = ss;
    rs->n_scope_spans = 1;
    for (int64_t k = 0; k < cnt; k++, i++) {
      Opentelemetry__Proto__Trace__V1__Span *sp = sonde_batch_alloc(b, sizeof(*sp));
      Opentelemetry__Proto__Trace__V1__Status *st = sonde_batch_alloc(b, sizeof(*st));
      char name[32];
      if (!sp || !st) return SONDE_ENOMEM;
      opentelemetry__proto__trace__v1__span__init(sp);
      opentelemetry__proto__trace__v1__status__init(st);
      snprintf(name, sizeof(name), "span-%" PRId64, i);
      if (!ids(b, (uint32_t)g->cfg->seed, i, &sp->trace_id, &sp->span_id, &sp->parent_span_id) ||
          !(sp->name = sonde_batch_strdup(b, name)) ||
          !(sp->attributes = item_attrs(b, i, &sp->n_attributes)))
        return SONDE_ENOMEM;
      sp->kind = i % 4 == 0 ? OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER
                            : OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL;
      sp->start_time_unix_nano = BASE_NS + (uint64_t)i * 1000;
      sp->end_time_unix_nano = sp->start_time_unix_nano + 500;
      st->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_OK;
      sp->status = st;
      ss->spans[ss->n_spans++] = sp;
    }
    req->resource_spans[req->n_resource_spans++] = rs;
  }
  return 0;
}

static Opentelemetry__Proto__Metrics__V1__NumberDataPoint *point_new(sonde_batch *b, int64_t i) {
  Opentelemetry__Proto__Metrics__V1__NumberDataPoint *dp = sonde_batch_alloc(b, sizeof(*dp));
  if (!dp) return NULL;
  opentelemetry__proto__metrics__v1__number_data_point__init(dp);
  if (!(dp->attributes = item_attrs(b, i, &dp->n_attributes))) return NULL;
  dp->start_time_unix_nano = BASE_NS;
  dp->time_unix_nano = BASE_NS + (uint64_t)i * 1000;
  if (i % 2 == 0) {
    dp->value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE;
    dp->as_double = (double)i / 2.0;
  } else {
    dp->value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
    dp->as_int = i;
  }
  return dp;
}

static int gen_metrics(testgen *g, sonde_batch *b, int64_t first, int64_t n) {
  sonde_metrics *req = sonde_batch_metrics(b);
  int parts = n > 1 ? 2 : 1;
  req->resource_metrics = sonde_batch_alloc(b, (size_t)parts * sizeof(*req->resource_metrics));
  if (!req->resource_metrics) return SONDE_ENOMEM;
  int64_t i = first;
  for (int p = 0; p < parts; p++) {
    int64_t cnt = p == 0 ? (parts == 1 ? n : n / 2) : n - n / 2;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = sonde_batch_alloc(b, sizeof(*rm));
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = sonde_batch_alloc(b, sizeof(*sm));
    Opentelemetry__Proto__Metrics__V1__Metric *gm = sonde_batch_alloc(b, sizeof(*gm));
    Opentelemetry__Proto__Metrics__V1__Metric *summ = sonde_batch_alloc(b, sizeof(*summ));
    Opentelemetry__Proto__Metrics__V1__Gauge *gauge = sonde_batch_alloc(b, sizeof(*gauge));
    Opentelemetry__Proto__Metrics__V1__Sum *sum = sonde_batch_alloc(b, sizeof(*sum));
    if (!rm || !sm || !gm || !summ || !gauge || !sum) return SONDE_ENOMEM;
    opentelemetry__proto__metrics__v1__resource_metrics__init(rm);
    opentelemetry__proto__metrics__v1__scope_metrics__init(sm);
    opentelemetry__proto__metrics__v1__metric__init(gm);
    opentelemetry__proto__metrics__v1__metric__init(summ);
    opentelemetry__proto__metrics__v1__gauge__init(gauge);
    opentelemetry__proto__metrics__v1__sum__init(sum);
    rm->resource = resource_new(b, g->batches, p);
    rm->scope_metrics = sonde_batch_alloc(b, sizeof(*rm->scope_metrics));
    sm->scope = scope_new(b);
    sm->metrics = sonde_batch_alloc(b, 2 * sizeof(*sm->metrics));
    gauge->data_points = sonde_batch_alloc(b, (size_t)cnt * sizeof(*gauge->data_points));
    sum->data_points = sonde_batch_alloc(b, (size_t)cnt * sizeof(*sum->data_points));
    gm->name = sonde_batch_strdup(b, "testgen.gauge");
    summ->name = sonde_batch_strdup(b, "testgen.sum");
    gm->unit = summ->unit = sonde_batch_strdup(b, "1");
    if (!rm->resource || !rm->scope_metrics || !sm->scope || !sm->metrics || !gauge->data_points ||
        !sum->data_points || !gm->name || !summ->name || !gm->unit)
      return SONDE_ENOMEM;
    gm->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
    gm->gauge = gauge;
    summ->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM;
    summ->sum = sum;
    sum->is_monotonic = 1;
    sum->aggregation_temporality =
        OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
    for (int64_t k = 0; k < cnt; k++, i++) {
      Opentelemetry__Proto__Metrics__V1__NumberDataPoint *dp = point_new(b, i);
      if (!dp) return SONDE_ENOMEM;
      if (i % 2 == 0)
        gauge->data_points[gauge->n_data_points++] = dp;
      else
        sum->data_points[sum->n_data_points++] = dp;
    }
    /* Only non-empty metrics: an empty one would be a metric without points. */
    if (gauge->n_data_points) sm->metrics[sm->n_metrics++] = gm;
    if (sum->n_data_points) sm->metrics[sm->n_metrics++] = summ;
    rm->scope_metrics[0] = sm;
    rm->n_scope_metrics = 1;
    req->resource_metrics[req->n_resource_metrics++] = rm;
  }
  return 0;
}

static int gen_logs(testgen *g, sonde_batch *b, int64_t first, int64_t n) {
  sonde_logs *req = sonde_batch_logs(b);
  int parts = n > 1 ? 2 : 1;
  req->resource_logs = sonde_batch_alloc(b, (size_t)parts * sizeof(*req->resource_logs));
  if (!req->resource_logs) return SONDE_ENOMEM;
  int64_t i = first;
  for (int p = 0; p < parts; p++) {
    int64_t cnt = p == 0 ? (parts == 1 ? n : n / 2) : n - n / 2;
    Opentelemetry__Proto__Logs__V1__ResourceLogs *rl = sonde_batch_alloc(b, sizeof(*rl));
    Opentelemetry__Proto__Logs__V1__ScopeLogs *sl = sonde_batch_alloc(b, sizeof(*sl));
    if (!rl || !sl) return SONDE_ENOMEM;
    opentelemetry__proto__logs__v1__resource_logs__init(rl);
    opentelemetry__proto__logs__v1__scope_logs__init(sl);
    rl->resource = resource_new(b, g->batches, p);
    rl->scope_logs = sonde_batch_alloc(b, sizeof(*rl->scope_logs));
    sl->scope = scope_new(b);
    sl->log_records = sonde_batch_alloc(b, (size_t)cnt * sizeof(*sl->log_records));
    if (!rl->resource || !rl->scope_logs || !sl->scope || !sl->log_records) return SONDE_ENOMEM;
    rl->scope_logs[0] = sl;
    rl->n_scope_logs = 1;
    for (int64_t k = 0; k < cnt; k++, i++) {
      Opentelemetry__Proto__Logs__V1__LogRecord *lr = sonde_batch_alloc(b, sizeof(*lr));
      any_t *body = any_new(b);
      char text[32];
      if (!lr || !body) return SONDE_ENOMEM;
      opentelemetry__proto__logs__v1__log_record__init(lr);
      snprintf(text, sizeof(text), "log-%" PRId64, i);
      body->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
      if (!(body->string_value = sonde_batch_strdup(b, text)) ||
          !(lr->severity_text = sonde_batch_strdup(b, "INFO")) ||
          !ids(b, (uint32_t)g->cfg->seed, i, &lr->trace_id, &lr->span_id, NULL) ||
          !(lr->attributes = item_attrs(b, i, &lr->n_attributes)))
        return SONDE_ENOMEM;
      lr->body = body;
      lr->time_unix_nano = BASE_NS + (uint64_t)i * 1000;
      lr->observed_time_unix_nano = lr->time_unix_nano + 1;
      lr->severity_number = OPENTELEMETRY__PROTO__LOGS__V1__SEVERITY_NUMBER__SEVERITY_NUMBER_INFO;
      sl->log_records[sl->n_log_records++] = lr;
    }
    req->resource_logs[req->n_resource_logs++] = rl;
  }
  return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void stop_timer(testgen *g) {
  if (g->timer) {
    g->h->api->timer_stop(g->timer);
    g->timer = NULL;
  }
}

static void tick(void *arg) {
  testgen *g = arg;
  bool all_done = true;
  for (int s = 0; s < N_SIG; s++) {
    if (!(g->signals & sig_of[s])) continue;
    if (!g->pending[s] && g->next[s] < g->cfg->count) {
      int64_t n = g->cfg->count - g->next[s];
      if (n > g->cfg->per_batch) n = g->cfg->per_batch;
      sonde_batch *b = NULL;
      int rc = sonde_batch_new(sig_of[s], &b);
      if (rc == 0)
        rc = s == 0   ? gen_traces(g, b, g->next[s], n)
             : s == 1 ? gen_metrics(g, b, g->next[s], n)
                      : gen_logs(g, b, g->next[s], n);
      if (rc) {
        sonde_log(g->h, SONDE_LOG_ERROR, "cannot build a batch: %s", sonde_strerror(rc));
        if (b) sonde_batch_unref(b);
        all_done = false;
        continue;
      }
      g->pending[s] = b;
      g->pending_n[s] = n;
      g->batches++;
    }
    if (g->pending[s]) {
      int rc = g->h->api->consume(g->h, g->pending[s], "internal");
      if (rc == SONDE_EREFUSED) {
        g->refused++;
        all_done = false;
        continue;
      }
      if (rc)
        sonde_log(g->h, SONDE_LOG_WARN, "%s batch rejected: %s", sonde_signal_name(sig_of[s]),
                  sonde_strerror(rc));
      sonde_batch_unref(g->pending[s]);
      g->pending[s] = NULL;
      g->next[s] += g->pending_n[s];
    }
    if (g->next[s] < g->cfg->count) all_done = false;
  }
  if (all_done && !g->finished) {
    g->finished = true;
    stop_timer(g);
    sonde_log(g->h, SONDE_LOG_INFO,
              "finished: %" PRId64 " items per signal in %" PRIu64 " batches, %" PRIu64 " refusals",
              g->cfg->count, g->batches, g->refused);
  }
}

static int testgen_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  testgen *g = calloc(1, sizeof(*g));
  if (!g) return SONDE_ENOMEM;
  g->h = h;
  g->cfg = config;
  g->signals = signals;
  *inst = g;
  return 0;
}

static int testgen_start(void *inst) {
  testgen *g = inst;
  int64_t every = g->cfg->interval_ns > 0 ? g->cfg->interval_ns : 1000000;
  return g->h->api->timer_start(g->h, 0, every, tick, g, &g->timer);
}

static void testgen_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  testgen *g = inst;
  stop_timer(g);
  if (!g->finished)
    sonde_log(g->h, SONDE_LOG_INFO,
              "stopped early: %" PRIu64 " batches built, %" PRIu64 " refusals", g->batches,
              g->refused);
  done(arg);
}

static void testgen_destroy(void *inst) {
  testgen *g = inst;
  if (!g) return;
  stop_timer(g);
  for (int s = 0; s < N_SIG; s++)
    if (g->pending[s]) sonde_batch_unref(g->pending[s]);
  free(g);
}

static const sonde_component testgen_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_RECEIVER,
    .type = "testgen",
    .doc = "test receiver: deterministic spans, metric points and log records, then stops",
    .signals = SONDE_SIGNAL_TRACES | SONDE_SIGNAL_METRICS | SONDE_SIGNAL_LOGS,
    .options = testgen_options,
    .config_size = sizeof(testgen_config),
    .create = testgen_create,
    .start = testgen_start,
    .shutdown = testgen_shutdown,
    .destroy = testgen_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-testgen", "1.0", &testgen_component);

/* Unit tests for the batch (core/src/sdk/pdata.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sonde/errors.h"
#include "sonde/pdata.h"

typedef Opentelemetry__Proto__Trace__V1__ResourceSpans ResourceSpans;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans ScopeSpans;
typedef Opentelemetry__Proto__Trace__V1__Span Span;
typedef Opentelemetry__Proto__Metrics__V1__ResourceMetrics ResourceMetrics;
typedef Opentelemetry__Proto__Metrics__V1__ScopeMetrics ScopeMetrics;
typedef Opentelemetry__Proto__Metrics__V1__Metric Metric;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint NumberDataPoint;

/* A traces batch with 2 resources: 1 scope x 2 spans, 2 scopes x (1, 0) spans. */
static sonde_batch *make_traces(void) {
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_TRACES, &b), 0);
  sonde_traces *t = sonde_batch_traces(b);
  static const size_t scopes[2] = {1, 2};
  static const size_t spans[2][2] = {{2, 0}, {1, 0}};
  t->n_resource_spans = 2;
  t->resource_spans = sonde_batch_alloc(b, 2 * sizeof(ResourceSpans *));
  for (size_t i = 0; i < 2; i++) {
    ResourceSpans *rs = sonde_batch_alloc(b, sizeof *rs);
    opentelemetry__proto__trace__v1__resource_spans__init(rs);
    t->resource_spans[i] = rs;
    rs->n_scope_spans = scopes[i];
    rs->scope_spans = sonde_batch_alloc(b, scopes[i] * sizeof(ScopeSpans *));
    for (size_t j = 0; j < scopes[i]; j++) {
      ScopeSpans *ss = sonde_batch_alloc(b, sizeof *ss);
      opentelemetry__proto__trace__v1__scope_spans__init(ss);
      rs->scope_spans[j] = ss;
      ss->n_spans = spans[i][j];
      ss->spans = sonde_batch_alloc(b, (ss->n_spans + 1) * sizeof(Span *));
      for (size_t k = 0; k < ss->n_spans; k++) {
        Span *sp = sonde_batch_alloc(b, sizeof *sp);
        opentelemetry__proto__trace__v1__span__init(sp);
        sp->name = sonde_batch_strdup(b, "op");
        uint8_t id[16];
        memset(id, (int)(i * 16 + k + 1), sizeof id);
        sp->trace_id.data = sonde_batch_memdup(b, id, 16);
        sp->trace_id.len = 16;
        sp->start_time_unix_nano = 1544712660000000000ull + k;
        ss->spans[k] = sp;
      }
    }
  }
  return b;
}

static uint8_t *pack(const sonde_batch *b, size_t *len) {
  *len = sonde_batch_packed_size(b);
  uint8_t *buf = malloc(*len ? *len : 1);
  assert_non_null(buf);
  assert_int_equal(sonde_batch_pack(b, buf), *len);
  return buf;
}

static void test_signal_names(void **state) {
  (void)state;
  assert_string_equal(sonde_signal_name(SONDE_SIGNAL_TRACES), "traces");
  assert_string_equal(sonde_signal_name(SONDE_SIGNAL_PROFILES), "profiles");
  assert_string_equal(sonde_signal_name((sonde_signal)0x40), "unknown");
  assert_int_equal(sonde_signal_parse("metrics", 7), SONDE_SIGNAL_METRICS);
  assert_int_equal(sonde_signal_parse("logsX", 4), SONDE_SIGNAL_LOGS);
  assert_int_equal(sonde_signal_parse("log", 3), 0);
  assert_int_equal(sonde_signal_parse(NULL, 0), 0);
  assert_string_equal(sonde_signal_item_name(SONDE_SIGNAL_TRACES), "spans");
  assert_string_equal(sonde_signal_item_name(SONDE_SIGNAL_METRICS), "metric_points");
  assert_string_equal(sonde_signal_item_name(SONDE_SIGNAL_LOGS), "log_records");
  assert_string_equal(sonde_signal_item_name(SONDE_SIGNAL_PROFILES), "profiles");
}

static void test_new_and_accessors(void **state) {
  (void)state;
  sonde_batch *b;
  assert_int_equal(sonde_batch_new((sonde_signal)0, &b), SONDE_EINVAL);
  assert_null(b);
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_LOGS, &b), 0);
  assert_int_equal(sonde_batch_signal(b), SONDE_SIGNAL_LOGS);
  assert_non_null(sonde_batch_logs(b));
  assert_null(sonde_batch_traces(b));
  assert_null(sonde_batch_metrics(b));
  assert_null(sonde_batch_profiles(b));
  assert_ptr_equal(sonde_batch_msg(b), sonde_batch_logs(b));
  assert_ptr_equal(
      sonde_batch_msg(b)->descriptor,
      &opentelemetry__proto__collector__logs__v1__export_logs_service_request__descriptor);
  assert_int_equal(sonde_batch_items(b), 0);
  assert_int_equal(sonde_batch_packed_size(b), 0);
  assert_int_equal(sonde_batch_refcount(b), 1);
  assert_ptr_equal(sonde_batch_ref(b), b);
  assert_int_equal(sonde_batch_refcount(b), 2);
  sonde_batch_unref(b);
  assert_int_equal(sonde_batch_refcount(b), 1);
  sonde_batch_unref(b);
  sonde_batch_unref(NULL);
}

static void test_arena(void **state) {
  (void)state;
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_TRACES, &b), 0);
  size_t before = sonde_batch_arena_bytes(b);
  for (size_t i = 1; i < 3000; i += 7) {
    uint8_t *p = sonde_batch_alloc(b, i);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    for (size_t j = 0; j < i; j++)
      assert_int_equal(p[j], 0);
    memset(p, 0xab, i);
  }
  uint8_t *big = sonde_batch_alloc(b, 10u << 20);
  assert_non_null(big);
  assert_int_equal((uintptr_t)big % 16, 0);
  assert_int_equal(big[(10u << 20) - 1], 0);
  /* after a big allocation the current chunk is still used for small ones */
  uint8_t *small = sonde_batch_alloc(b, 8);
  assert_non_null(small);
  assert_true(sonde_batch_arena_bytes(b) >= before + (10u << 20));
  assert_null(sonde_batch_alloc(b, SIZE_MAX - 4));
  assert_non_null(sonde_batch_alloc(b, 0));
  assert_string_equal(sonde_batch_strdup(b, "hello"), "hello");
  assert_null(sonde_batch_strdup(b, NULL));
  assert_memory_equal(sonde_batch_memdup(b, "abc", 3), "abc", 3);
  ProtobufCAllocator *a = sonde_batch_allocator(b);
  void *q = a->alloc(a->allocator_data, 24);
  assert_non_null(q);
  a->free(a->allocator_data, q);
  sonde_batch_unref(b);
}

static void test_roundtrip_traces(void **state) {
  (void)state;
  sonde_batch *b = make_traces(), *d;
  assert_int_equal(sonde_batch_items(b), 3);
  size_t n;
  uint8_t *buf = pack(b, &n);
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_TRACES, buf, n, &d), 0);
  assert_int_equal(sonde_batch_items(d), 3);
  sonde_traces *t = sonde_batch_traces(d);
  assert_int_equal(t->n_resource_spans, 2);
  assert_string_equal(t->resource_spans[0]->scope_spans[0]->spans[1]->name, "op");
  assert_int_equal(t->resource_spans[0]->scope_spans[0]->spans[1]->start_time_unix_nano,
                   1544712660000000001ull);
  size_t n2;
  uint8_t *buf2 = pack(d, &n2);
  assert_int_equal(n, n2);
  assert_memory_equal(buf, buf2, n);
  /* the same bytes read as another signal are still valid protobuf, just other fields */
  sonde_batch *e;
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_LOGS, NULL, 0, &e), 0);
  assert_int_equal(sonde_batch_items(e), 0);
  sonde_batch_unref(e);
  free(buf);
  free(buf2);
  sonde_batch_unref(b);
  sonde_batch_unref(d);
}

static void test_malformed(void **state) {
  (void)state;
  sonde_batch *b = make_traces(), *d = (sonde_batch *)1;
  size_t n;
  uint8_t *buf = pack(b, &n);
  for (size_t cut = 1; cut < n; cut += 3) {
    int rc = sonde_batch_decode(SONDE_SIGNAL_TRACES, buf, cut, &d);
    if (rc == 0) { /* a cut on a field boundary of the outer message is valid */
      sonde_batch_unref(d);
      continue;
    }
    assert_int_equal(rc, SONDE_EPROTO);
    assert_null(d);
  }
  static const uint8_t bad_wire[] = {0x0b, 0x00};             /* field 1, start group */
  static const uint8_t huge_len[] = {0x0a, 0xff, 0xff, 0x7f}; /* length past the end */
  static const uint8_t bad_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  static const uint8_t wrong_type[] = {0x08, 0x01}; /* resource_spans as a varint */
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_TRACES, bad_wire, sizeof bad_wire, &d),
                   SONDE_EPROTO);
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_TRACES, huge_len, sizeof huge_len, &d),
                   SONDE_EPROTO);
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_METRICS, bad_varint, sizeof bad_varint, &d),
                   SONDE_EPROTO);
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_TRACES, wrong_type, sizeof wrong_type, &d),
                   SONDE_EPROTO);
  assert_null(d);
  assert_int_equal(sonde_batch_decode((sonde_signal)3, buf, n, &d), SONDE_EINVAL);
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_TRACES, NULL, 5, &d), SONDE_EINVAL);
  free(buf);
  sonde_batch_unref(b);
}

/* Logs request whose one log record's body nests array values `depth` deep. */
static uint8_t *nested_body(size_t depth, size_t *len) {
  /* innermost: AnyValue{int_value=1} */
  size_t cap = 16 + depth * 24;
  uint8_t *a = malloc(cap), *b = malloc(cap);
  assert_non_null(a);
  assert_non_null(b);
  size_t n = 0;
  a[n++] = 0x18, a[n++] = 0x01;
  for (size_t i = 0; i < depth; i++) {
    /* ArrayValue{values=[a]} then AnyValue{array_value=...} */
    size_t m = 0;
    uint8_t hdr[12];
    size_t h = 0;
    hdr[h++] = 0x0a;
    size_t l = n;
    do {
      hdr[h++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
      l >>= 7;
    } while (l);
    size_t inner = h + n;
    b[m++] = 0x2a;
    l = inner;
    do {
      b[m++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
      l >>= 7;
    } while (l);
    memcpy(b + m, hdr, h);
    memcpy(b + m + h, a, n);
    n = m + h + n;
    uint8_t *t = a;
    a = b;
    b = t;
  }
  /* LogRecord{body=a} -> ScopeLogs{log_records} -> ResourceLogs{scope_logs} -> request */
  static const uint8_t tags[] = {0x2a, 0x12, 0x12, 0x0a};
  for (size_t k = 0; k < 4; k++) {
    size_t m = 0, l = n;
    b[m++] = tags[k];
    do {
      b[m++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
      l >>= 7;
    } while (l);
    memcpy(b + m, a, n);
    n += m;
    uint8_t *t = a;
    a = b;
    b = t;
  }
  free(b);
  *len = n;
  return a;
}

static void test_depth_limit(void **state) {
  (void)state;
  size_t n;
  uint8_t *buf = nested_body(10, &n);
  sonde_batch *d;
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_LOGS, buf, n, &d), 0);
  assert_int_equal(sonde_batch_items(d), 1);
  Opentelemetry__Proto__Common__V1__AnyValue *v =
      sonde_batch_logs(d)->resource_logs[0]->scope_logs[0]->log_records[0]->body;
  for (int i = 0; i < 10; i++)
    v = v->array_value->values[0];
  assert_int_equal(v->int_value, 1);
  sonde_batch_unref(d);
  free(buf);
  buf = nested_body(100000, &n); /* would exhaust protobuf-c's recursion */
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_LOGS, buf, n, &d), SONDE_EPROTO);
  assert_null(d);
  free(buf);
}

static void test_items_metrics(void **state) {
  (void)state;
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_METRICS, &b), 0);
  Opentelemetry__Proto__Metrics__V1__Gauge g = OPENTELEMETRY__PROTO__METRICS__V1__GAUGE__INIT;
  Opentelemetry__Proto__Metrics__V1__Sum s = OPENTELEMETRY__PROTO__METRICS__V1__SUM__INIT;
  Opentelemetry__Proto__Metrics__V1__Histogram h =
      OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM__INIT;
  Opentelemetry__Proto__Metrics__V1__ExponentialHistogram e =
      OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM__INIT;
  Opentelemetry__Proto__Metrics__V1__Summary su = OPENTELEMETRY__PROTO__METRICS__V1__SUMMARY__INIT;
  NumberDataPoint np = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__INIT;
  NumberDataPoint *nps[3] = {&np, &np, &np};
  Opentelemetry__Proto__Metrics__V1__HistogramDataPoint hp =
      OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__INIT;
  Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *hps[1] = {&hp};
  Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint ep =
      OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT__INIT;
  Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint *eps[1] = {&ep};
  Opentelemetry__Proto__Metrics__V1__SummaryDataPoint sp =
      OPENTELEMETRY__PROTO__METRICS__V1__SUMMARY_DATA_POINT__INIT;
  Opentelemetry__Proto__Metrics__V1__SummaryDataPoint *sps[2] = {&sp, &sp};
  g.n_data_points = 2, g.data_points = nps;
  s.n_data_points = 3, s.data_points = nps;
  h.n_data_points = 1, h.data_points = hps;
  e.n_data_points = 1, e.data_points = eps;
  su.n_data_points = 2, su.data_points = sps;
  Metric m[6];
  for (int i = 0; i < 6; i++)
    opentelemetry__proto__metrics__v1__metric__init(&m[i]);
  m[0].data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE, m[0].gauge = &g;
  m[1].data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM, m[1].sum = &s;
  m[2].data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM, m[2].histogram = &h;
  m[3].data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM;
  m[3].exponential_histogram = &e;
  m[4].data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY, m[4].summary = &su;
  /* m[5]: no data */
  Metric *mp[6] = {&m[0], &m[1], &m[2], &m[3], &m[4], &m[5]};
  ScopeMetrics sm = OPENTELEMETRY__PROTO__METRICS__V1__SCOPE_METRICS__INIT;
  sm.n_metrics = 6, sm.metrics = mp;
  ScopeMetrics *smp = &sm;
  ResourceMetrics rm = OPENTELEMETRY__PROTO__METRICS__V1__RESOURCE_METRICS__INIT;
  rm.n_scope_metrics = 1, rm.scope_metrics = &smp;
  ResourceMetrics *rmp[2] = {&rm, &rm};
  sonde_batch_metrics(b)->n_resource_metrics = 2;
  sonde_batch_metrics(b)->resource_metrics = rmp;
  assert_int_equal(sonde_batch_items(b), 2 * (2 + 3 + 1 + 1 + 2));
  /* and after a wire round trip */
  size_t n;
  uint8_t *buf = pack(b, &n);
  sonde_batch *d;
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_METRICS, buf, n, &d), 0);
  assert_int_equal(sonde_batch_items(d), 18);
  free(buf);
  sonde_batch_unref(d);
  sonde_batch_unref(b);
}

static void test_items_logs_profiles(void **state) {
  (void)state;
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_LOGS, &b), 0);
  Opentelemetry__Proto__Logs__V1__LogRecord lr = OPENTELEMETRY__PROTO__LOGS__V1__LOG_RECORD__INIT;
  Opentelemetry__Proto__Logs__V1__LogRecord *lrs[4] = {&lr, &lr, &lr, &lr};
  Opentelemetry__Proto__Logs__V1__ScopeLogs sl = OPENTELEMETRY__PROTO__LOGS__V1__SCOPE_LOGS__INIT;
  sl.n_log_records = 4, sl.log_records = lrs;
  Opentelemetry__Proto__Logs__V1__ScopeLogs *slp[2] = {&sl, &sl};
  Opentelemetry__Proto__Logs__V1__ResourceLogs rl =
      OPENTELEMETRY__PROTO__LOGS__V1__RESOURCE_LOGS__INIT;
  rl.n_scope_logs = 2, rl.scope_logs = slp;
  Opentelemetry__Proto__Logs__V1__ResourceLogs *rlp = &rl;
  sonde_batch_logs(b)->n_resource_logs = 1;
  sonde_batch_logs(b)->resource_logs = &rlp;
  assert_int_equal(sonde_batch_items(b), 8);
  sonde_batch_unref(b);

  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_PROFILES, &b), 0);
  Opentelemetry__Proto__Profiles__V1development__Sample s =
      OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__SAMPLE__INIT;
  Opentelemetry__Proto__Profiles__V1development__Sample *ss[3] = {&s, &s, &s};
  Opentelemetry__Proto__Profiles__V1development__Profile p =
      OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__PROFILE__INIT;
  p.n_samples = 3, p.samples = ss;
  Opentelemetry__Proto__Profiles__V1development__Profile *pp[2] = {&p, &p};
  Opentelemetry__Proto__Profiles__V1development__ScopeProfiles sp =
      OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__SCOPE_PROFILES__INIT;
  sp.n_profiles = 2, sp.profiles = pp;
  Opentelemetry__Proto__Profiles__V1development__ScopeProfiles *spp = &sp;
  Opentelemetry__Proto__Profiles__V1development__ResourceProfiles rp =
      OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__RESOURCE_PROFILES__INIT;
  rp.n_scope_profiles = 1, rp.scope_profiles = &spp;
  Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *rpp = &rp;
  sonde_batch_profiles(b)->n_resource_profiles = 1;
  sonde_batch_profiles(b)->resource_profiles = &rpp;
  assert_int_equal(sonde_batch_items(b), 6);
  sonde_batch_unref(b);
}

static void test_copy_independent(void **state) {
  (void)state;
  sonde_batch *b = make_traces(), *c;
  assert_int_equal(sonde_batch_copy(b, &c), 0);
  assert_int_equal(sonde_batch_refcount(c), 1);
  assert_int_equal(sonde_batch_items(c), 3);
  Span *orig = sonde_batch_traces(b)->resource_spans[0]->scope_spans[0]->spans[0];
  Span *cp = sonde_batch_traces(c)->resource_spans[0]->scope_spans[0]->spans[0];
  assert_ptr_not_equal(orig, cp);
  cp->name = sonde_batch_strdup(c, "changed");
  cp->trace_id.data[0] ^= 0xff;
  sonde_batch_traces(c)->resource_spans[1]->scope_spans[0]->n_spans = 0;
  assert_string_equal(orig->name, "op");
  assert_int_equal(orig->trace_id.data[0], 1);
  assert_int_equal(sonde_batch_items(b), 3);
  assert_int_equal(sonde_batch_items(c), 2);
  sonde_batch_unref(b);
  /* the copy outlives its source */
  assert_string_equal(cp->name, "changed");
  sonde_batch_unref(c);
  assert_int_equal(sonde_batch_copy(NULL, &c), SONDE_EINVAL);
}

static void test_hold(void **state) {
  (void)state;
  sonde_batch *src = make_traces(), *dst;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_TRACES, &dst), 0);
  assert_int_equal(sonde_batch_hold(dst, dst), SONDE_EINVAL);
  /* zero-copy move of src's first resource into dst */
  sonde_traces *t = sonde_batch_traces(dst);
  t->resource_spans = sonde_batch_alloc(dst, sizeof(ResourceSpans *));
  t->resource_spans[0] = sonde_batch_traces(src)->resource_spans[0];
  t->n_resource_spans = 1;
  assert_int_equal(sonde_batch_hold(dst, src), 0);
  assert_int_equal(sonde_batch_hold(dst, src), 0); /* held once */
  assert_int_equal(sonde_batch_refcount(src), 2);
  sonde_batch_unref(src);
  /* src's arena is alive through dst */
  assert_int_equal(sonde_batch_items(dst), 2);
  assert_string_equal(t->resource_spans[0]->scope_spans[0]->spans[1]->name, "op");
  sonde_batch *c;
  assert_int_equal(sonde_batch_copy(dst, &c), 0);
  sonde_batch_unref(dst); /* frees src too */
  assert_int_equal(sonde_batch_items(c), 2);
  assert_string_equal(sonde_batch_traces(c)->resource_spans[0]->scope_spans[0]->spans[0]->name,
                      "op");
  sonde_batch_unref(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_signal_names),
      cmocka_unit_test(test_new_and_accessors),
      cmocka_unit_test(test_arena),
      cmocka_unit_test(test_roundtrip_traces),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_depth_limit),
      cmocka_unit_test(test_items_metrics),
      cmocka_unit_test(test_items_logs_profiles),
      cmocka_unit_test(test_copy_independent),
      cmocka_unit_test(test_hold),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

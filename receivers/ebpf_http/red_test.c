/* Unit tests of red.c: the OTLP metrics batch it builds, read back after a protobuf round trip
 * (bucket counts, sums, attributes, units, temporality, resources), its bounds and its cost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "hx.h"

typedef Opentelemetry__Proto__Metrics__V1__ResourceMetrics rm_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint hdp_t;

static uint64_t now_unix(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const hx_resource res_a = {.pid = 100,
                                  .service_name = "checkout",
                                  .exe_name = "node",
                                  .exe_path = "/usr/bin/node",
                                  .host_name = "h1",
                                  .container_id = "abc123"};
static const hx_resource res_b = {.pid = 200,
                                  .service_name = NULL,
                                  .exe_name = "nginx",
                                  .exe_path = "/usr/sbin/nginx",
                                  .host_name = "h1"};

static hx_exchange http(bool server, const char *method, int status, double seconds) {
  hx_exchange ex = {.proto = HX_HTTP1,
                    .server = server,
                    .start_ns = 1000,
                    .end_ns = 1000 + (uint64_t)(seconds * 1e9),
                    .method = method,
                    .path = "/users/1",
                    .status = status,
                    .grpc_status = -1,
                    .rst_code = -1,
                    .version = "1.1",
                    .req_body_bytes = 12,
                    .resp_body_bytes = 3000};
  return ex;
}

/* Collects, packs and decodes again: the test reads what a peer would. */
static sonde_batch *collect(hx_red *r) {
  sonde_batch *b;
  assert_int_equal(hx_red_collect(r, now_unix(), &b), 0);
  if (!b) return NULL;
  size_t len = sonde_batch_packed_size(b);
  uint8_t *buf = malloc(len);
  assert_int_equal(sonde_batch_pack(b, buf), len);
  sonde_batch *d;
  assert_int_equal(sonde_batch_decode(SONDE_SIGNAL_METRICS, buf, len, &d), 0);
  free(buf);
  sonde_batch_unref(b);
  return d;
}

static const sonde_kv *kv(sonde_kv **a, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(a[i]->key, key) == 0) return a[i];
  return NULL;
}

static const char *kv_s(sonde_kv **a, size_t n, const char *key) {
  const sonde_kv *x = kv(a, n, key);
  return x ? x->value->string_value : NULL;
}

static int64_t kv_i(sonde_kv **a, size_t n, const char *key) {
  const sonde_kv *x = kv(a, n, key);
  return x ? x->value->int_value : -999;
}

static const rm_t *resource(const sonde_batch *b, int64_t pid) {
  const sonde_metrics *m = sonde_batch_metrics(b);
  for (size_t i = 0; i < m->n_resource_metrics; i++) {
    const rm_t *rm = m->resource_metrics[i];
    if (kv_i(rm->resource->attributes, rm->resource->n_attributes, "process.pid") == pid) return rm;
  }
  return NULL;
}

static const metric_t *metric(const rm_t *rm, const char *name) {
  assert_int_equal(rm->n_scope_metrics, 1);
  for (size_t i = 0; i < rm->scope_metrics[0]->n_metrics; i++)
    if (strcmp(rm->scope_metrics[0]->metrics[i]->name, name) == 0)
      return rm->scope_metrics[0]->metrics[i];
  return NULL;
}

/* The data point whose attribute key has value (string) or ival (when value is NULL). */
static const hdp_t *point(const metric_t *m, const char *key, const char *value, int64_t ival) {
  for (size_t i = 0; i < m->histogram->n_data_points; i++) {
    const hdp_t *dp = m->histogram->data_points[i];
    const sonde_kv *x = kv(dp->attributes, dp->n_attributes, key);
    if (!x) continue;
    if (value ? strcmp(x->value->string_value, value) == 0 : x->value->int_value == ival) return dp;
  }
  return NULL;
}

static void test_http_server(void **state) {
  (void)state;
  hx_red *r;
  assert_int_equal(hx_red_new(&r), 0);
  sonde_batch *none;
  assert_int_equal(hx_red_collect(r, now_unix(), &none), 0);
  assert_null(none);
  uint64_t t0 = now_unix();
  hx_exchange e1 = http(true, "GET", 200, 0.001), e2 = http(true, "GET", 200, 0.02),
              e3 = http(true, "GET", 200, 3.0), e4 = http(true, "POST", 503, 0.0051),
              e5 = http(true, "BREW", 200, 0.005);
  hx_red_record(r, &res_a, &e1, "/users/{id}", NULL, 0);
  hx_red_record(r, &res_a, &e2, "/users/{id}", NULL, 0);
  hx_red_record(r, &res_a, &e3, "/users/{id}", NULL, 0);
  hx_red_record(r, &res_a, &e4, "/users/{id}", NULL, 0);
  hx_red_record(r, &res_a, &e5, "/users/{id}", NULL, 0);
  sonde_batch *b = collect(r);
  assert_non_null(b);
  assert_int_equal(sonde_batch_metrics(b)->n_resource_metrics, 1);
  const rm_t *rm = resource(b, 100);
  assert_non_null(rm);
  sonde_kv **ra = rm->resource->attributes;
  size_t nra = rm->resource->n_attributes;
  assert_string_equal(kv_s(ra, nra, "service.name"), "checkout");
  assert_string_equal(kv_s(ra, nra, "process.executable.name"), "node");
  assert_string_equal(kv_s(ra, nra, "process.executable.path"), "/usr/bin/node");
  assert_string_equal(kv_s(ra, nra, "host.name"), "h1");
  assert_string_equal(kv_s(ra, nra, "container.id"), "abc123");
  assert_null(kv(ra, nra, "service.namespace"));
  assert_string_equal(rm->scope_metrics[0]->scope->name, "sonde/ebpf_http");

  const metric_t *d = metric(rm, "http.server.request.duration");
  assert_non_null(d);
  assert_string_equal(d->unit, "s");
  assert_int_equal(d->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM);
  assert_int_equal(
      d->histogram->aggregation_temporality,
      OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE);
  assert_int_equal(d->histogram->n_data_points, 3); /* GET 200, POST 503, _OTHER 200 */
  const hdp_t *ok = point(d, "http.request.method", "GET", 0);
  assert_non_null(ok);
  assert_int_equal(ok->count, 3);
  assert_float_equal(ok->sum, 3.021, 1e-9);
  assert_float_equal(ok->min, 0.001, 1e-12);
  assert_float_equal(ok->max, 3.0, 1e-12);
  assert_int_equal(ok->n_explicit_bounds, 15);
  assert_float_equal(ok->explicit_bounds[1], 0.005, 0);
  assert_float_equal(ok->explicit_bounds[14], 10, 0);
  assert_int_equal(ok->n_bucket_counts, 16);
  /* 0.001 in (0, 0.005]; 0.02 in (0.01, 0.025]; 3.0 in (2.5, 5] */
  uint64_t want[16] = {0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  for (int i = 0; i < 16; i++)
    assert_int_equal(ok->bucket_counts[i], want[i]);
  assert_int_equal(kv_i(ok->attributes, ok->n_attributes, "http.response.status_code"), 200);
  assert_string_equal(kv_s(ok->attributes, ok->n_attributes, "http.route"), "/users/{id}");
  assert_null(kv(ok->attributes, ok->n_attributes, "error.type"));
  assert_string_equal(kv_s(ok->attributes, ok->n_attributes, "url.scheme"), "http");
  assert_string_equal(kv_s(ok->attributes, ok->n_attributes, "network.protocol.version"), "1.1");
  assert_true(ok->start_time_unix_nano >= t0 && ok->start_time_unix_nano <= ok->time_unix_nano);
  const hdp_t *bad = point(d, "http.request.method", "POST", 0);
  assert_non_null(bad);
  assert_string_equal(kv_s(bad->attributes, bad->n_attributes, "error.type"), "503");
  assert_int_equal(bad->bucket_counts[2], 1); /* 0.0051 in (0.005, 0.01] */
  const hdp_t *other = point(d, "http.request.method", "_OTHER", 0);
  assert_non_null(other);
  assert_int_equal(other->bucket_counts[1], 1); /* 0.005 in (0, 0.005]: upper bound inclusive */

  const metric_t *rq = metric(rm, "http.server.request.body.size");
  const metric_t *rs = metric(rm, "http.server.response.body.size");
  assert_non_null(rq);
  assert_non_null(rs);
  assert_string_equal(rq->unit, "By");
  const hdp_t *rsp = point(rs, "http.request.method", "GET", 0);
  assert_int_equal(rsp->count, 3);
  assert_float_equal(rsp->sum, 9000, 0);
  assert_int_equal(rsp->bucket_counts[12], 3); /* 3000 in (2500, 5000] */
  assert_float_equal(rsp->explicit_bounds[14], 10000, 0);
  assert_null(metric(rm, "http.client.request.duration"));
  assert_null(metric(rm, "rpc.server.duration"));
  sonde_batch_unref(b);

  /* cumulative: a second collect includes the first exchanges, same start time */
  uint64_t start = 0;
  b = collect(r);
  start = point(metric(resource(b, 100), "http.server.request.duration"), "http.request.method",
                "GET", 0)
              ->start_time_unix_nano;
  sonde_batch_unref(b);
  hx_red_record(r, &res_a, &e1, "/users/{id}", NULL, 0);
  b = collect(r);
  const hdp_t *again = point(metric(resource(b, 100), "http.server.request.duration"),
                             "http.request.method", "GET", 0);
  assert_int_equal(again->count, 4);
  assert_int_equal(again->start_time_unix_nano, start);
  sonde_batch_unref(b);
  hx_red_free(r);
}

static void test_client_and_grpc(void **state) {
  (void)state;
  hx_red *r;
  assert_int_equal(hx_red_new(&r), 0);
  hx_exchange c404 = http(false, "GET", 404, 0.2), reset = http(false, "PUT", 0, 0.3);
  hx_red_record(r, &res_b, &c404, "/ignored", "api.example.com", 443);
  hx_red_record(r, &res_b, &reset, "/ignored", "api.example.com", 443);
  /* An HTTP/2 GET over TLS the client cancelled (RST_STREAM CANCEL) before any response, and an
   * HTTP/1.0 one. */
  hx_exchange h2c = http(false, "DELETE", 0, 0.05), h10 = http(false, "HEAD", 200, 0.01);
  h2c.proto = HX_HTTP2;
  h2c.version = "2";
  h2c.tls = true;
  h2c.rst_code = 8;
  h10.version = "1.0";
  hx_red_record(r, &res_b, &h2c, "/ignored", "api.example.com", 443);
  hx_red_record(r, &res_b, &h10, "/ignored", "api.example.com", 443);
  hx_exchange g = {.proto = HX_GRPC,
                   .server = true,
                   .start_ns = 0,
                   .end_ns = 7500000, /* 7.5 ms */
                   .method = "POST",
                   .path = "/helloworld.Greeter/SayHello",
                   .status = 200,
                   .grpc_status = 14,
                   .rst_code = -1};
  hx_red_record(r, &res_a, &g, "/helloworld.Greeter/SayHello", NULL, 0);
  g.server = false;
  g.grpc_status = 0;
  hx_red_record(r, &res_b, &g, NULL, "greeter", 50051);
  sonde_batch *b = collect(r);
  assert_int_equal(sonde_batch_metrics(b)->n_resource_metrics, 2);
  const rm_t *rb = resource(b, 200);
  /* no OTEL_SERVICE_NAME: the executable name */
  assert_string_equal(kv_s(rb->resource->attributes, rb->resource->n_attributes, "service.name"),
                      "nginx");
  const metric_t *cd = metric(rb, "http.client.request.duration");
  assert_non_null(cd);
  const hdp_t *p404 = point(cd, "http.response.status_code", NULL, 404);
  assert_non_null(p404);
  assert_string_equal(kv_s(p404->attributes, p404->n_attributes, "error.type"), "404");
  assert_string_equal(kv_s(p404->attributes, p404->n_attributes, "server.address"),
                      "api.example.com");
  assert_int_equal(kv_i(p404->attributes, p404->n_attributes, "server.port"), 443);
  assert_null(kv(p404->attributes, p404->n_attributes, "http.route"));
  const hdp_t *pr = point(cd, "http.request.method", "PUT", 0);
  assert_string_equal(kv_s(pr->attributes, pr->n_attributes, "error.type"), "_OTHER");
  assert_null(kv(pr->attributes, pr->n_attributes, "http.response.status_code"));
  assert_string_equal(kv_s(pr->attributes, pr->n_attributes, "url.scheme"), "http");
  const hdp_t *pc = point(cd, "http.request.method", "DELETE", 0);
  assert_non_null(pc);
  assert_string_equal(kv_s(pc->attributes, pc->n_attributes, "error.type"), "CANCEL");
  assert_string_equal(kv_s(pc->attributes, pc->n_attributes, "url.scheme"), "https");
  assert_string_equal(kv_s(pc->attributes, pc->n_attributes, "network.protocol.version"), "2");
  assert_null(kv(pc->attributes, pc->n_attributes, "http.response.status_code"));
  const hdp_t *ph = point(cd, "http.request.method", "HEAD", 0);
  assert_non_null(ph);
  assert_string_equal(kv_s(ph->attributes, ph->n_attributes, "network.protocol.version"), "1.0");
  assert_null(kv(ph->attributes, ph->n_attributes, "error.type"));
  /* no response (PUT, DELETE): no response body size point for them: 404 and HEAD only */
  const metric_t *crs = metric(rb, "http.client.response.body.size");
  assert_int_equal(crs->histogram->n_data_points, 2);

  const metric_t *rc = metric(rb, "rpc.client.duration");
  assert_non_null(rc);
  assert_string_equal(rc->unit, "ms");
  const hdp_t *gp = rc->histogram->data_points[0];
  assert_string_equal(kv_s(gp->attributes, gp->n_attributes, "rpc.system"), "grpc");
  assert_string_equal(kv_s(gp->attributes, gp->n_attributes, "rpc.service"), "helloworld.Greeter");
  assert_string_equal(kv_s(gp->attributes, gp->n_attributes, "rpc.method"), "SayHello");
  assert_int_equal(kv_i(gp->attributes, gp->n_attributes, "rpc.grpc.status_code"), 0);
  assert_string_equal(kv_s(gp->attributes, gp->n_attributes, "server.address"), "greeter");
  assert_int_equal(kv_i(gp->attributes, gp->n_attributes, "server.port"), 50051);
  assert_float_equal(gp->sum, 7.5, 1e-9);
  assert_int_equal(gp->bucket_counts[2], 1); /* 7.5 ms in (5, 10] */
  /* the gRPC call is not counted as HTTP: only the four HTTP client exchanges */
  const metric_t *crq = metric(rb, "http.client.request.body.size");
  uint64_t calls = 0;
  for (size_t i = 0; i < crq->histogram->n_data_points; i++)
    calls += crq->histogram->data_points[i]->count;
  assert_int_equal(calls, 4);
  const metric_t *rsd = metric(resource(b, 100), "rpc.server.duration");
  assert_int_equal(kv_i(rsd->histogram->data_points[0]->attributes,
                        rsd->histogram->data_points[0]->n_attributes, "rpc.grpc.status_code"),
                   14);
  assert_null(metric(resource(b, 100), "http.server.request.duration"));
  sonde_batch_unref(b);

  /* nothing names the process: unknown_service, as the SDKs say */
  hx_resource anon = {.pid = 300};
  hx_red_record(r, &anon, &c404, NULL, NULL, 0);
  b = collect(r);
  const rm_t *ra = resource(b, 300);
  assert_string_equal(kv_s(ra->resource->attributes, ra->resource->n_attributes, "service.name"),
                      "unknown_service");
  assert_null(kv(ra->resource->attributes, ra->resource->n_attributes, "host.name"));
  sonde_batch_unref(b);
  hx_red_forget(r, 300);

  /* a process that exited is forgotten */
  hx_red_forget(r, 200);
  b = collect(r);
  assert_int_equal(sonde_batch_metrics(b)->n_resource_metrics, 1);
  assert_null(resource(b, 200));
  sonde_batch_unref(b);
  hx_red_forget(r, 100);
  hx_red_forget(r, 12345);
  assert_int_equal(hx_red_collect(r, now_unix(), &b), 0);
  assert_null(b);
  size_t ns;
  hx_red_stats(r, &ns, NULL, NULL);
  assert_int_equal(ns, 0);
  hx_red_free(r);
}

/* Past the series cap, new attribute sets go into one overflow series per process and metric;
 * existing series keep counting; nothing is lost from the totals. */
static void test_overflow(void **state) {
  (void)state;
  hx_red *r;
  assert_int_equal(hx_red_new(&r), 0);
  char route[32];
  const int n = 10000;
  hx_exchange e = http(true, "GET", 200, 0.01);
  for (int i = 0; i < n; i++) {
    snprintf(route, sizeof(route), "/r%d", i);
    hx_red_record(r, &res_a, &e, route, NULL, 0);
  }
  hx_red_record(r, &res_a, &e, "/r0", NULL, 0); /* an existing series still gets its own */
  size_t ns;
  uint64_t over, dropped;
  hx_red_stats(r, &ns, &over, &dropped);
  assert_true(ns <= 8192);
  assert_true(over > 0);
  assert_int_equal(dropped, 0);
  sonde_batch *b = collect(r);
  const metric_t *d = metric(resource(b, 100), "http.server.request.duration");
  uint64_t total = 0;
  const hdp_t *of = NULL;
  for (size_t i = 0; i < d->histogram->n_data_points; i++) {
    const hdp_t *dp = d->histogram->data_points[i];
    total += dp->count;
    const sonde_kv *x = kv(dp->attributes, dp->n_attributes, "otel.metric.overflow");
    if (x) {
      assert_int_equal(dp->n_attributes, 1);
      assert_true(x->value->bool_value);
      of = dp;
    }
  }
  assert_non_null(of);
  assert_int_equal(total, (uint64_t)n + 1);
  assert_int_equal(point(d, "http.route", "/r0", 0)->count, 2);
  sonde_batch_unref(b);
  hx_red_free(r);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_bench(void **state) {
  (void)state;
  hx_red *r;
  assert_int_equal(hx_red_new(&r), 0);
  const char *routes[] = {"/users/{id}", "/orders/{id}", "/", "/health", "/api/v1/items"};
  const int iters = 200000;
  double t0 = mono();
  for (int i = 0; i < iters; i++) {
    hx_exchange e = http(true, i % 7 ? "GET" : "POST", i % 11 ? 200 : 500, (i % 100) * 0.001);
    hx_red_record(r, i % 3 ? &res_a : &res_b, &e, routes[i % 5], NULL, 0);
  }
  double dt = mono() - t0;
  sonde_batch *b;
  double t1 = mono();
  assert_int_equal(hx_red_collect(r, now_unix(), &b), 0);
  double dc = mono() - t1;
  printf("# red: %.0f ns per hx_red_record (HTTP server: 3 histograms), collect of %zu points "
         "%.0f us\n",
         dt * 1e9 / iters, sonde_batch_items(b), dc * 1e6);
  sonde_batch_unref(b);
  hx_red_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_http_server),
      cmocka_unit_test(test_client_and_grpc),
      cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_bench),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

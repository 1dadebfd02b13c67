/* The prometheus exporter's translation and state: names against otlptranslator's rules, values
 * as Go's strconv writes them, and whole expositions for OTLP-JSON input (every metric type,
 * delta accumulation, stale and misaligned points, type conflicts, expiration, OpenMetrics). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prom_http.h"
#include "prom_names.h"
#include "prom_state.h"
#include "sonde/errors.h"

/* ---- names ----------------------------------------------------------------------------------- */

static void check_name(const char *name, const char *unit, prom_otel_kind k, const char *ns,
                       bool suffixes, const char *want) {
  bool empty;
  char *got = prom_metric_name(name, unit, k, ns, suffixes, &empty);
  if (!want) {
    assert_null(got);
    assert_true(empty);
    return;
  }
  if (!got || strcmp(got, want) != 0)
    fail_msg("name %s unit %s: got %s, want %s", name, unit, got ? got : "(null)", want);
  free(got);
}

static void test_metric_names(void **state) {
  (void)state;
  check_name("system.filesystem.usage", "By", PROM_OTEL_GAUGE, NULL, true,
             "system_filesystem_usage_bytes");
  check_name("http.server.request.duration", "s", PROM_OTEL_HISTOGRAM, NULL, true,
             "http_server_request_duration_seconds");
  check_name("http.requests", "{requests}", PROM_OTEL_MONOTONIC_COUNTER, NULL, true,
             "http_requests_total");
  check_name("system.io", "By", PROM_OTEL_MONOTONIC_COUNTER, NULL, true, "system_io_bytes_total");
  check_name("cpu.utilization", "1", PROM_OTEL_GAUGE, NULL, true, "cpu_utilization_ratio");
  check_name("cpu.utilization", "1", PROM_OTEL_NONMONOTONIC_SUM, NULL, true, "cpu_utilization");
  check_name("net.rate", "By/s", PROM_OTEL_GAUGE, NULL, true, "net_rate_bytes_per_second");
  check_name("speed", "m/s", PROM_OTEL_GAUGE, NULL, true, "speed_meters_per_second");
  check_name("events", "1/s", PROM_OTEL_GAUGE, NULL, true, "events_per_second");
  check_name("packets", "{packets}/s", PROM_OTEL_GAUGE, NULL, true, "packets_per_second");
  check_name("total.requests", "", PROM_OTEL_MONOTONIC_COUNTER, NULL, true, "requests_total");
  check_name("request_duration_seconds", "s", PROM_OTEL_HISTOGRAM, NULL, true,
             "request_duration_seconds");
  check_name("temperature",
             "\xc2\xb0"
             "F",
             PROM_OTEL_GAUGE, NULL, true, "temperature_F");
  check_name("a..b__c", "", PROM_OTEL_GAUGE, NULL, true, "a_b_c");
  check_name("1st.metric", "", PROM_OTEL_GAUGE, NULL, true, "_1st_metric");
  check_name("a.b", "ms", PROM_OTEL_GAUGE, "ns", true, "ns_a_b_milliseconds");
  check_name("ratio.value", "1", PROM_OTEL_GAUGE, NULL, true, "value_ratio");
  /* add_metric_suffixes: false keeps '_' runs and adds nothing */
  check_name("a.b__c", "s", PROM_OTEL_MONOTONIC_COUNTER, NULL, false, "a_b__c");
  check_name("a.b", "s", PROM_OTEL_MONOTONIC_COUNTER, "my.ns", false, "my_ns_a_b");
  check_name("9lives", "", PROM_OTEL_GAUGE, NULL, false, "_9lives");
  check_name("...", "", PROM_OTEL_GAUGE, NULL, true, NULL);
}

static void check_label(const char *key, const char *want) {
  bool empty;
  char *got = prom_label_name(key, &empty);
  if (!want) {
    assert_null(got);
    assert_true(empty);
    return;
  }
  if (!got || strcmp(got, want) != 0)
    fail_msg("label %s: got %s, want %s", key, got ? got : "(null)", want);
  free(got);
}

static void test_label_names(void **state) {
  (void)state;
  check_label("http.request.method", "http_request_method");
  check_label("123abc", "key_123abc");
  check_label("_private", "key_private");
  check_label("__reserved__", "__reserved__");
  check_label("a-b c", "a_b_c");
  check_label("\xc3\xbcml", "key_ml"); /* one rune, one '_' */
  check_label("...", NULL);
  check_label("", NULL);
}

static void check_float(double v, const char *want, const char *want_om) {
  char buf[40];
  prom_fmt_float(buf, v);
  if (strcmp(buf, want) != 0) fail_msg("%.17g: got %s, want %s", v, buf, want);
  prom_fmt_om_float(buf, v);
  if (strcmp(buf, want_om) != 0) fail_msg("%.17g (om): got %s, want %s", v, buf, want_om);
}

static void test_floats(void **state) {
  (void)state;
  check_float(1, "1", "1.0");
  check_float(0, "0", "0.0");
  check_float(0.25, "0.25", "0.25");
  check_float(0.1, "0.1", "0.1");
  check_float(2.5, "2.5", "2.5");
  check_float(-3.5, "-3.5", "-3.5");
  check_float(123456, "123456", "123456.0");
  check_float(1e6, "1e+06", "1e+06");
  check_float(1234567, "1.234567e+06", "1.234567e+06");
  check_float(0.0001, "0.0001", "0.0001");
  check_float(0.00001, "1e-05", "1e-05");
  check_float(1e21, "1e+21", "1e+21");
  check_float(1.0 / 3, "0.3333333333333333", "0.3333333333333333");
  check_float(1.0 / 0.0, "+Inf", "+Inf");
  check_float(-1.0 / 0.0, "-Inf", "-Inf");
  check_float(0.0 / 0.0, "NaN", "NaN");
}

static void check_any(const char *json_value, const char *want) {
  /* Built through a one-attribute resource so the OTLP-JSON decoder makes the value. */
  char json[1024];
  snprintf(json, sizeof(json),
           "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":%s}]},"
           "\"scopeMetrics\":[]}]}",
           json_value);
  sonde_batch *b;
  char err[256];
  assert_int_equal(
      sonde_batch_from_json(SONDE_SIGNAL_METRICS, json, strlen(json), &b, err, sizeof(err)), 0);
  const sonde_metrics *m = sonde_batch_metrics(b);
  char *got = prom_any_string(m->resource_metrics[0]->resource->attributes[0]->value);
  if (!got || strcmp(got, want) != 0) fail_msg("%s: got %s, want %s", json_value, got, want);
  free(got);
  sonde_batch_unref(b);
}

static void test_any_string(void **state) {
  (void)state;
  check_any("{\"stringValue\":\"a\\\"b\"}", "a\"b");
  check_any("{\"intValue\":\"-42\"}", "-42");
  check_any("{\"boolValue\":true}", "true");
  check_any("{\"doubleValue\":1.5}", "1.5");
  check_any("{\"doubleValue\":1e21}", "1e+21");
  check_any("{\"doubleValue\":0.0000001}", "1e-7");
  check_any("{\"doubleValue\":1234567}", "1234567");
  check_any("{\"bytesValue\":\"aGk=\"}", "aGk=");
  check_any("{\"arrayValue\":{\"values\":[{\"stringValue\":\"x\"},{\"intValue\":1}]}}",
            "[\"x\",1]");
  check_any("{\"kvlistValue\":{\"values\":[{\"key\":\"b\",\"value\":{\"intValue\":2}},"
            "{\"key\":\"a\",\"value\":{\"stringValue\":\"<\"}}]}}",
            "{\"a\":\"\\u003c\",\"b\":2}");
}

/* ---- content negotiation --------------------------------------------------------------------- */

static void test_negotiation(void **state) {
  (void)state;
  const char *v;
  /* What Prometheus 2.x sends. */
  const char *prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
  assert_true(prom_negotiate(prom, true, &v));
  assert_string_equal(v, "1.0.0");
  assert_false(prom_negotiate(prom, false, &v)); /* not enabled */
  assert_false(prom_negotiate(NULL, true, &v));
  assert_false(prom_negotiate("*/*", true, &v));
  assert_false(prom_negotiate("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5",
                              true, &v));
  assert_true(
      prom_negotiate("text/plain;q=0.4 , Application/OpenMetrics-Text ; version=0.0.1", true, &v));
  assert_string_equal(v, "0.0.1");
  /* Unknown versions are skipped, q=0 refuses. */
  assert_false(prom_negotiate("application/openmetrics-text;version=2.0.0", true, &v));
  assert_false(prom_negotiate("application/openmetrics-text;q=0", true, &v));
  assert_true(prom_accepts_gzip("gzip"));
  assert_true(prom_accepts_gzip("deflate, gzip;q=0.5"));
  assert_false(prom_accepts_gzip("gzip;q=0"));
  assert_false(prom_accepts_gzip("identity"));
  assert_false(prom_accepts_gzip(NULL));
}

/* ---- state ----------------------------------------------------------------------------------- */

#define S 1000000000ll

static prom_state *new_state(const prom_opts *o) {
  prom_opts def = {.add_suffixes = true, .expiration_ns = 300 * S};
  prom_state *s;
  assert_int_equal(prom_state_new(o ? o : &def, &s), 0);
  return s;
}

static prom_stats feed(prom_state *s, int64_t now, const char *json) {
  sonde_batch *b;
  char err[256];
  int rc = sonde_batch_from_json(SONDE_SIGNAL_METRICS, json, strlen(json), &b, err, sizeof(err));
  if (rc) fail_msg("bad test JSON: %s", err);
  prom_stats st = {0};
  char perr[256] = "";
  prom_state_consume(s, sonde_batch_metrics(b), now, &st, perr, sizeof(perr));
  sonde_batch_unref(b);
  return st;
}

static void expect(prom_state *s, bool om, const char *want) {
  sonde_buf out = {0};
  assert_int_equal(prom_state_render(s, om, &out), 0);
  assert_int_equal(sonde_buf_append(&out, "", 1), 0);
  if (strcmp((char *)out.data, want) != 0)
    fail_msg("exposition differs:\n--- got\n%s--- want\n%s", (char *)out.data, want);
  sonde_buf_free(&out);
}

#define RES                                                                                        \
  "\"resource\":{\"attributes\":["                                                                 \
  "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"svc\"}},"                                \
  "{\"key\":\"service.namespace\",\"value\":{\"stringValue\":\"shop\"}},"                          \
  "{\"key\":\"service.instance.id\",\"value\":{\"stringValue\":\"i1\"}},"                          \
  "{\"key\":\"host.name\",\"value\":{\"stringValue\":\"h\\\"1\"}}]}"
#define SCOPE "\"scope\":{\"name\":\"lib\",\"version\":\"1.0\"}"
#define ONE(metrics)                                                                               \
  "{\"resourceMetrics\":[{" RES ",\"scopeMetrics\":[{" SCOPE ",\"metrics\":[" metrics "]}]}]}"
#define L                                                                                          \
  "instance=\"i1\",job=\"shop/"                                                                    \
  "svc\",otel_scope_name=\"lib\",otel_scope_schema_url=\"\",otel_scope_version=\"1.0\""
#define TARGET                                                                                     \
  "# HELP target_info Target metadata\n# TYPE target_info gauge\n"                                 \
  "target_info{host_name=\"h\\\"1\",instance=\"i1\",job=\"shop/svc\"} 1\n"

static const char every_type[] = ONE(
    "{\"name\":\"http.requests\",\"unit\":\"{requests}\",\"description\":\"Requests.\","
    "\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[{"
    "\"attributes\":[{\"key\":\"http.method\",\"value\":{\"stringValue\":\"GET\"}}],"
    "\"startTimeUnixNano\":\"1\",\"timeUnixNano\":\"1000000000\",\"asInt\":\"5\"}]}},"
    "{\"name\":\"mem.usage\",\"unit\":\"By\",\"description\":\"Memory\\nin use.\","
    "\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":\"1000000000\",\"asDouble\":1024.5}]}},"
    "{\"name\":\"rpc.duration\",\"unit\":\"ms\",\"description\":\"RPC time.\","
    "\"histogram\":{\"aggregationTemporality\":2,\"dataPoints\":[{\"timeUnixNano\":\"1000000000\","
    "\"count\":\"6\",\"sum\":20,\"bucketCounts\":[\"1\",\"2\",\"3\"],\"explicitBounds\":[1,5]}]}},"
    "{\"name\":\"lat\",\"unit\":\"s\",\"description\":\"Latency.\",\"summary\":{\"dataPoints\":[{"
    "\"timeUnixNano\":\"1000000000\",\"count\":\"3\",\"sum\":4,\"quantileValues\":["
    "{\"quantile\":0.9,\"value\":2},{\"quantile\":0.5,\"value\":7},{\"quantile\":0.5,\"value\":1}]}"
    "]}}");

#define EVERY_TEXT                                                                                 \
  "# HELP http_requests_total Requests.\n"                                                         \
  "# TYPE http_requests_total counter\n"                                                           \
  "http_requests_total{http_method=\"GET\"," L "} 5\n"                                             \
  "# HELP lat_seconds Latency.\n"                                                                  \
  "# TYPE lat_seconds summary\n"                                                                   \
  "lat_seconds{" L ",quantile=\"0.5\"} 1\n"                                                        \
  "lat_seconds{" L ",quantile=\"0.9\"} 2\n"                                                        \
  "lat_seconds_sum{" L "} 4\n"                                                                     \
  "lat_seconds_count{" L "} 3\n"                                                                   \
  "# HELP mem_usage_bytes Memory\\nin use.\n"                                                      \
  "# TYPE mem_usage_bytes gauge\n"                                                                 \
  "mem_usage_bytes{" L "} 1024.5\n"                                                                \
  "# HELP rpc_duration_milliseconds RPC time.\n"                                                   \
  "# TYPE rpc_duration_milliseconds histogram\n"                                                   \
  "rpc_duration_milliseconds_bucket{" L ",le=\"1\"} 1\n"                                           \
  "rpc_duration_milliseconds_bucket{" L ",le=\"5\"} 3\n"                                           \
  "rpc_duration_milliseconds_bucket{" L ",le=\"+Inf\"} 6\n"                                        \
  "rpc_duration_milliseconds_sum{" L "} 20\n"                                                      \
  "rpc_duration_milliseconds_count{" L "} 6\n" TARGET

static void test_every_type(void **state) {
  (void)state;
  prom_state *s = new_state(NULL);
  prom_stats st = feed(s, 0, every_type);
  assert_int_equal(st.stored, 4);
  expect(s, false, EVERY_TEXT);
  expect(s, true,
         "# HELP http_requests Requests.\n"
         "# TYPE http_requests counter\n"
         "http_requests_total{http_method=\"GET\"," L "} 5.0\n"
         "# HELP lat_seconds Latency.\n"
         "# TYPE lat_seconds summary\n"
         "lat_seconds{" L ",quantile=\"0.5\"} 1.0\n"
         "lat_seconds{" L ",quantile=\"0.9\"} 2.0\n"
         "lat_seconds_sum{" L "} 4.0\n"
         "lat_seconds_count{" L "} 3\n"
         "# HELP mem_usage_bytes Memory\\nin use.\n"
         "# TYPE mem_usage_bytes gauge\n"
         "mem_usage_bytes{" L "} 1024.5\n"
         "# HELP rpc_duration_milliseconds RPC time.\n"
         "# TYPE rpc_duration_milliseconds histogram\n"
         "rpc_duration_milliseconds_bucket{" L ",le=\"1.0\"} 1\n"
         "rpc_duration_milliseconds_bucket{" L ",le=\"5.0\"} 3\n"
         "rpc_duration_milliseconds_bucket{" L ",le=\"+Inf\"} 6\n"
         "rpc_duration_milliseconds_sum{" L "} 20.0\n"
         "rpc_duration_milliseconds_count{" L "} 6\n"
         "# HELP target_info Target metadata\n# TYPE target_info gauge\n"
         "target_info{host_name=\"h\\\"1\",instance=\"i1\",job=\"shop/svc\"} 1.0\n"
         "# EOF\n");
  prom_state_free(s);
}

#define SUM(temp, mono, start, ts, v)                                                              \
  ONE("{\"name\":\"c\",\"sum\":{\"aggregationTemporality\":" #temp ",\"isMonotonic\":" #mono       \
      ",\"dataPoints\":[{\"startTimeUnixNano\":\"" #start "\",\"timeUnixNano\":\"" #ts             \
      "\",\"asInt\":\"" #v "\"}]}}")

static void test_delta_sums(void **state) {
  (void)state;
  prom_state *s = new_state(NULL);
  assert_int_equal(feed(s, 0, SUM(1, true, 0, 10, 3)).stored, 1);
  assert_int_equal(feed(s, 0, SUM(1, true, 10, 20, 4)).stored, 1);
  expect(s, false, "# HELP c_total \n# TYPE c_total counter\nc_total{" L "} 7\n" TARGET);
  /* A start after the previous end is a restart: the value starts again. */
  feed(s, 0, SUM(1, true, 30, 40, 1));
  expect(s, false, "# HELP c_total \n# TYPE c_total counter\nc_total{" L "} 1\n" TARGET);
  /* Older than what is stored: ignored, and a cached body stays valid. */
  uint64_t gen = prom_state_generation(s);
  assert_int_equal(feed(s, 0, SUM(2, true, 0, 35, 100)).stale, 1);
  assert_true(prom_state_generation(s) == gen);
  feed(s, 0, SUM(2, true, 0, 45, 100));
  assert_true(prom_state_generation(s) != gen);
  /* Non-monotonic deltas and sums without temporality cannot be exposed. */
  assert_int_equal(feed(s, 0, SUM(1, false, 0, 50, 1)).invalid, 1);
  assert_int_equal(feed(s, 0, SUM(0, true, 0, 50, 1)).invalid, 1);
  prom_state_free(s);
}

#define HIST(temp, start, ts, count, sum, counts, bounds)                                          \
  ONE("{\"name\":\"h\",\"unit\":\"s\",\"histogram\":{\"aggregationTemporality\":" #temp            \
      ",\"dataPoints\":[{\"startTimeUnixNano\":\"" #start "\",\"timeUnixNano\":\"" #ts             \
      "\",\"count\":\"" #count "\",\"sum\":" #sum ",\"bucketCounts\":" counts                      \
      ",\"explicitBounds\":" bounds "}]}}")

static void test_delta_histograms(void **state) {
  (void)state;
  prom_state *s = new_state(NULL);
  feed(s, 0, HIST(1, 0, 10, 3, 1.5, "[1,2]", "[0.5]"));
  feed(s, 0, HIST(1, 10, 20, 2, 3, "[0,2]", "[0.5]"));
  expect(s, false,
         "# HELP h_seconds \n# TYPE h_seconds histogram\n"
         "h_seconds_bucket{" L ",le=\"0.5\"} 1\n"
         "h_seconds_bucket{" L ",le=\"+Inf\"} 5\n"
         "h_seconds_sum{" L "} 4.5\n"
         "h_seconds_count{" L "} 5\n" TARGET);
  /* Overlapping the stored interval: dropped. */
  assert_int_equal(feed(s, 0, HIST(1, 15, 25, 1, 1, "[1,0]", "[0.5]")).misaligned, 1);
  /* Other bounds: the newer point wins. */
  feed(s, 0, HIST(1, 20, 30, 1, 0.1, "[1,0,0]", "[0.25,1]"));
  expect(s, false,
         "# HELP h_seconds \n# TYPE h_seconds histogram\n"
         "h_seconds_bucket{" L ",le=\"0.25\"} 1\n"
         "h_seconds_bucket{" L ",le=\"1\"} 1\n"
         "h_seconds_bucket{" L ",le=\"+Inf\"} 1\n"
         "h_seconds_sum{" L "} 0.1\n"
         "h_seconds_count{" L "} 1\n" TARGET);
  /* bucketCounts must be one longer than the bounds. */
  assert_int_equal(feed(s, 0, HIST(2, 0, 40, 1, 1, "[1]", "[0.5]")).invalid, 1);
  prom_state_free(s);
}

static void test_exponential_histogram(void **state) {
  (void)state;
  prom_state *s = new_state(NULL);
  /* scale 0: bucket i holds (2^i, 2^(i+1)]; negative bucket 0 holds [-2, -1). */
  const char *one =
      ONE("{\"name\":\"e\",\"exponentialHistogram\":{\"aggregationTemporality\":1,\"dataPoints\":"
          "[{\"startTimeUnixNano\":\"0\",\"timeUnixNano\":\"10\",\"count\":\"5\",\"sum\":5,"
          "\"scale\":0,\"zeroCount\":\"1\",\"positive\":{\"offset\":0,\"bucketCounts\":[\"1\","
          "\"2\"]},\"negative\":{\"offset\":0,\"bucketCounts\":[\"1\"]}}]}}");
  feed(s, 0, one);
  expect(s, false,
         "# HELP e \n# TYPE e histogram\n"
         "e_bucket{" L ",le=\"-1\"} 1\n"
         "e_bucket{" L ",le=\"0\"} 2\n"
         "e_bucket{" L ",le=\"2\"} 3\n"
         "e_bucket{" L ",le=\"4\"} 5\n"
         "e_bucket{" L ",le=\"+Inf\"} 5\n"
         "e_sum{" L "} 5\n"
         "e_count{" L "} 5\n" TARGET);
  /* A delta at scale 1 merges down to scale 0: (1,sqrt2] and (sqrt2,2] both land in (1,2]. */
  const char *two =
      ONE("{\"name\":\"e\",\"exponentialHistogram\":{\"aggregationTemporality\":1,\"dataPoints\":"
          "[{\"startTimeUnixNano\":\"10\",\"timeUnixNano\":\"20\",\"count\":\"2\",\"sum\":3,"
          "\"scale\":1,\"positive\":{\"offset\":0,\"bucketCounts\":[\"1\",\"1\"]}}]}}");
  feed(s, 0, two);
  expect(s, false,
         "# HELP e \n# TYPE e histogram\n"
         "e_bucket{" L ",le=\"-1\"} 1\n"
         "e_bucket{" L ",le=\"0\"} 2\n"
         "e_bucket{" L ",le=\"2\"} 5\n"
         "e_bucket{" L ",le=\"4\"} 7\n"
         "e_bucket{" L ",le=\"+Inf\"} 7\n"
         "e_sum{" L "} 8\n"
         "e_count{" L "} 7\n" TARGET);
  /* Buckets a million apart would take megabytes to merge: refused, the series unchanged. */
  const char *far =
      ONE("{\"name\":\"e\",\"exponentialHistogram\":{\"aggregationTemporality\":1,\"dataPoints\":"
          "[{\"startTimeUnixNano\":\"20\",\"timeUnixNano\":\"30\",\"count\":\"1\",\"sum\":1,"
          "\"scale\":0,\"positive\":{\"offset\":1000000,\"bucketCounts\":[\"1\"]}}]}}");
  assert_int_equal(feed(s, 0, far).invalid, 1);
  sonde_buf out = {0};
  assert_int_equal(prom_state_render(s, false, &out), 0);
  assert_int_equal(sonde_buf_append(&out, "", 1), 0);
  assert_non_null(strstr((char *)out.data, "e_count{" L "} 7\n"));
  sonde_buf_free(&out);
  prom_state_free(s);
}

static void test_exemplars(void **state) {
  (void)state;
  prom_state *s = new_state(NULL);
#define EX(v, ts)                                                                                  \
  "{\"timeUnixNano\":\"" #ts "\",\"asDouble\":" #v ",\"traceId\":"                                 \
  "\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\"}"
  feed(s, 0,
       ONE("{\"name\":\"c\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,"
           "\"dataPoints\":[{\"timeUnixNano\":\"10\",\"asInt\":\"3\",\"exemplars\":[" EX(
               2, 1000000000) "," EX(1, 1500000000) "]}]}},"
                                                    "{\"name\":\"h\",\"histogram\":{"
                                                    "\"aggregationTemporality\":2,"
                                                    "\"dataPoints\":[{\"timeUnixNano\":\"10\","
                                                    "\"count\":\"3\",\"sum\":"
                                                    "7.6,\"bucketCounts\":[\"1\",\"2\"],"
                                                    "\"explicitBounds\":[0.5],"
                                                    "\"exemplars\":[" EX(0.3,
                                                                         0) "," EX(7, 0) "]}]}}"));
#define X "{trace_id=\"5b8efff798038103d269b633813fc60c\",span_id=\"eee19b7ec3c1b174\"}"
  /* OpenMetrics: the counter's last exemplar, each histogram exemplar in its bucket. */
  expect(s, true,
         "# HELP c \n# TYPE c counter\n"
         "c_total{" L "} 3.0 # " X " 1.0 1.5\n"
         "# HELP h \n# TYPE h histogram\n"
         "h_bucket{" L ",le=\"0.5\"} 1 # " X " 0.3\n"
         "h_bucket{" L ",le=\"+Inf\"} 3 # " X " 7.0\n"
         "h_sum{" L "} 7.6\n"
         "h_count{" L "} 3\n"
         "# HELP target_info Target metadata\n# TYPE target_info gauge\n"
         "target_info{host_name=\"h\\\"1\",instance=\"i1\",job=\"shop/svc\"} 1.0\n"
         "# EOF\n");
  /* The text format has no exemplars. */
  expect(s, false,
         "# HELP c_total \n# TYPE c_total counter\nc_total{" L "} 3\n"
         "# HELP h \n# TYPE h histogram\n"
         "h_bucket{" L ",le=\"0.5\"} 1\n"
         "h_bucket{" L ",le=\"+Inf\"} 3\n"
         "h_sum{" L "} 7.6\n"
         "h_count{" L "} 3\n" TARGET);
  prom_state_free(s);
}

static void test_conflicts_and_removal(void **state) {
  (void)state;
  prom_state *s = new_state(NULL);
  assert_int_equal(feed(s, 0, SUM(2, true, 0, 10, 3)).stored, 1);
  /* "c.total" is c_total too, but a gauge: the counter keeps the name. */
  prom_stats st = feed(s, 0,
                       ONE("{\"name\":\"c.total\",\"gauge\":{\"dataPoints\":[{"
                           "\"timeUnixNano\":\"10\",\"asDouble\":1}]}}"));
  assert_int_equal(st.conflicts, 1);
  assert_int_equal(st.stored, 0);
  expect(s, false, "# HELP c_total \n# TYPE c_total counter\nc_total{" L "} 3\n" TARGET);
  /* A point flagged "no recorded value" removes the series, and target_info goes with it. */
  feed(s, 0,
       ONE("{\"name\":\"c\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,"
           "\"dataPoints\":[{\"timeUnixNano\":\"20\",\"flags\":1}]}}"));
  assert_int_equal(prom_state_series(s), 0);
  expect(s, false, "");
  /* Now the name is free for a gauge. */
  assert_int_equal(feed(s, 0,
                        ONE("{\"name\":\"c.total\",\"gauge\":{\"dataPoints\":[{"
                            "\"timeUnixNano\":\"10\",\"asDouble\":1}]}}"))
                       .stored,
                   1);
  prom_state_free(s);
}

static void test_expiration(void **state) {
  (void)state;
  prom_opts o = {.add_suffixes = true, .expiration_ns = 5 * S};
  prom_state *s = new_state(&o);
  feed(s, 0, SUM(2, true, 0, 10, 3));
  feed(s, 3 * S, ONE("{\"name\":\"g\",\"gauge\":{\"dataPoints\":[{\"asDouble\":2}]}}"));
  uint64_t gen = prom_state_generation(s);
  assert_int_equal(prom_state_expire(s, 4 * S), 0);
  assert_true(prom_state_generation(s) == gen);
  assert_int_equal(prom_state_expire(s, 6 * S), 1);
  assert_true(prom_state_generation(s) != gen);
  expect(s, false, "# HELP g \n# TYPE g gauge\ng{" L "} 2\n" TARGET);
  assert_int_equal(prom_state_expire(s, 9 * S), 1);
  expect(s, false, "");
  prom_state_free(s);
}

static void test_options(void **state) {
  (void)state;
  char *keys[] = {"env", "job"}, *values[] = {"prod", "override"};
  prom_opts o = {.namespace_ = "app",
                 .add_suffixes = true,
                 .send_timestamps = true,
                 .without_scope_info = true,
                 .resource_to_telemetry = true,
                 .resource_exclude_service_attrs = true,
                 .const_keys = keys,
                 .const_values = values,
                 .n_const = 2,
                 .expiration_ns = 300 * S};
  prom_state *s = new_state(&o);
  feed(s, 0,
       ONE("{\"name\":\"g\",\"unit\":\"1\",\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":"
           "\"1500000000\",\"asDouble\":0.5,\"attributes\":[{\"key\":\"host.name\",\"value\":"
           "{\"stringValue\":\"point\"}},{\"key\":\"a.b\",\"value\":{\"intValue\":\"1\"}},"
           "{\"key\":\"a_b\",\"value\":{\"intValue\":\"2\"}}]}]}}"));
  /* The resource's host.name wins over the point's (resource_to_telemetry), a.b and a_b
   * share a label, const labels win over job. */
  expect(s, false,
         "# HELP app_g_ratio \n# TYPE app_g_ratio gauge\n"
         "app_g_ratio{a_b=\"1;2\",env=\"prod\",host_name=\"h\\\"1\",instance=\"i1\","
         "job=\"override\"} 0.5 1500\n"
         "# HELP app_target_info Target metadata\n# TYPE app_target_info gauge\n"
         "app_target_info{host_name=\"h\\\"1\",instance=\"i1\",job=\"shop/svc\"} 1\n");
  prom_state_free(s);
}

static void test_resource_constant_labels(void **state) {
  (void)state;
  char *inc[] = {"host.*", "service.*"}, *exc[] = {"service.instance.id"};
  prom_opts o = {.add_suffixes = true,
                 .resource_to_telemetry = true, /* ignored: resource_constant_labels wins */
                 .resource_labels_set = true,
                 .resource_include = inc,
                 .n_include = 2,
                 .resource_exclude = exc,
                 .n_exclude = 1,
                 .without_scope_info = true,
                 .expiration_ns = 300 * S};
  prom_state *s = new_state(&o);
  feed(s, 0, ONE("{\"name\":\"g\",\"gauge\":{\"dataPoints\":[{\"asDouble\":1}]}}"));
  expect(s, false,
         "# HELP g \n# TYPE g gauge\n"
         "g{host_name=\"h\\\"1\",instance=\"i1\",job=\"shop/svc\",service_name=\"svc\","
         "service_namespace=\"shop\"} 1\n" TARGET);
  prom_state_free(s);
  /* Only excluded: every other attribute. */
  o.n_include = 0;
  o.resource_exclude = inc;
  o.n_exclude = 2;
  s = new_state(&o);
  feed(s, 0, ONE("{\"name\":\"g\",\"gauge\":{\"dataPoints\":[{\"asDouble\":1}]}}"));
  expect(s, false, "# HELP g \n# TYPE g gauge\ng{instance=\"i1\",job=\"shop/svc\"} 1\n" TARGET);
  prom_state_free(s);
}

static void test_invalid_utf8(void **state) {
  (void)state;
  assert_true(prom_utf8_valid("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  assert_false(prom_utf8_valid("\xc3"));             /* truncated */
  assert_false(prom_utf8_valid("\xc0\xaf"));         /* overlong */
  assert_false(prom_utf8_valid("\xed\xa0\x80"));     /* surrogate */
  assert_false(prom_utf8_valid("\xf4\x90\x80\x80")); /* past U+10FFFF */
  char *fixed = prom_utf8_sanitize("a\xff"
                                   "b");
  assert_string_equal(fixed, "a\xef\xbf\xbd"
                             "b");
  free(fixed);
  /* Protobuf strings are not checked on decode: build one with a bad attribute value. */
  sonde_batch *b;
  char err[256];
  const char *json = ONE("{\"name\":\"g\",\"description\":\"ok\",\"gauge\":{\"dataPoints\":["
                         "{\"asDouble\":1,\"attributes\":[{\"key\":\"k\",\"value\":{"
                         "\"stringValue\":\"BAD\"}}]},{\"asDouble\":2}]}}");
  assert_int_equal(
      sonde_batch_from_json(SONDE_SIGNAL_METRICS, json, strlen(json), &b, err, sizeof(err)), 0);
  const sonde_metrics *m = sonde_batch_metrics(b);
  char *v = m->resource_metrics[0]
                ->scope_metrics[0]
                ->metrics[0]
                ->gauge->data_points[0]
                ->attributes[0]
                ->value->string_value;
  v[0] = (char)0xff; /* "\xffAD" */
  m->resource_metrics[0]->scope_metrics[0]->metrics[0]->description[0] = (char)0xfe;
  prom_state *s = new_state(NULL);
  prom_stats st = {0};
  char perr[256] = "";
  prom_state_consume(s, m, 0, &st, perr, sizeof(perr));
  assert_int_equal(st.invalid, 1);
  assert_int_equal(st.stored, 1);
  assert_non_null(strstr(perr, "not valid UTF-8"));
  /* The bad point is dropped, the other one stays; the description is repaired. */
  expect(s, false, "# HELP g \xef\xbf\xbdk\n# TYPE g gauge\ng{" L "} 2\n" TARGET);
  prom_state_free(s);
  sonde_batch_unref(b);
}

/* ---- allocation failures --------------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
static long alloc_count, fail_at = -1;
static bool fail_now(void) {
  return fail_at >= 0 && alloc_count++ == fail_at;
}
void *__wrap_malloc(size_t n) {
  return fail_now() ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
  return fail_now() ? NULL : __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
  return fail_now() ? NULL : __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) {
  return fail_now() ? NULL : __real_strdup(s);
}
char *__wrap_strndup(const char *s, size_t n) {
  return fail_now() ? NULL : __real_strndup(s, n);
}

/* Every allocation of the exporter's code fails in turn, during creation, consume and render:
 * no crash or leak (ASan), and the same input given again afterwards gives the full exposition,
 * so a failure never leaves a half-made series behind. */
static void test_alloc_failures(void **state) {
  (void)state;
  prom_opts o = {.add_suffixes = true, .expiration_ns = 300 * S};
  long n;
  for (n = 0;; n++) {
    prom_state *s;
    alloc_count = 0;
    fail_at = n;
    int rc = prom_state_new(&o, &s);
    if (rc) {
      fail_at = -1;
      continue;
    }
    feed(s, 0, every_type);
    sonde_buf out = {0};
    rc = prom_state_render(s, false, &out);
    assert_true(rc == 0 || rc == SONDE_ENOMEM);
    sonde_buf_free(&out);
    bool hit = alloc_count > n;
    fail_at = -1;
    feed(s, 0, every_type);
    expect(s, false, EVERY_TEXT);
    prom_state_free(s);
    if (!hit) break;
  }
  assert_true(n > 50);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metric_names),
      cmocka_unit_test(test_label_names),
      cmocka_unit_test(test_floats),
      cmocka_unit_test(test_any_string),
      cmocka_unit_test(test_negotiation),
      cmocka_unit_test(test_every_type),
      cmocka_unit_test(test_delta_sums),
      cmocka_unit_test(test_delta_histograms),
      cmocka_unit_test(test_exponential_histogram),
      cmocka_unit_test(test_exemplars),
      cmocka_unit_test(test_conflicts_and_removal),
      cmocka_unit_test(test_expiration),
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_resource_constant_labels),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

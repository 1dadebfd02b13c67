/* Unit tests for the OTLP-JSON codec (core/src/sdk/otlp_json.c). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sonde/errors.h"
#include "sonde/pdata.h"

static char *to_json(const sonde_batch *b) {
  sonde_buf out = {0};
  assert_int_equal(sonde_batch_to_json(b, &out), 0);
  return (char *)out.data; /* NUL-terminated by sonde_buf_append */
}

static sonde_batch *from_json(sonde_signal sig, const char *json) {
  sonde_batch *b = NULL;
  char err[256];
  int rc = sonde_batch_from_json(sig, json, strlen(json), &b, err, sizeof err);
  if (rc) fail_msg("from_json: %s", err);
  return b;
}

/* JSON -> batch -> JSON gives back the same text, and JSON -> proto -> JSON too. */
static void roundtrip(sonde_signal sig, const char *json) {
  sonde_batch *b = from_json(sig, json);
  char *out = to_json(b);
  assert_string_equal(out, json);
  size_t n = sonde_batch_packed_size(b);
  uint8_t *buf = malloc(n + 1);
  assert_int_equal(sonde_batch_pack(b, buf), n);
  sonde_batch *d;
  assert_int_equal(sonde_batch_decode(sig, buf, n, &d), 0);
  char *out2 = to_json(d);
  assert_string_equal(out2, json);
  free(out);
  free(out2);
  free(buf);
  sonde_batch_unref(b);
  sonde_batch_unref(d);
}

static const char span_json[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{"
    "\"stringValue\":\"x\"}}]},\"scopeSpans\":[{\"scope\":{},\"spans\":[{\"traceId\":"
    "\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\",\"name\":\"op\","
    "\"kind\":2,\"startTimeUnixNano\":\"1544712660000000000\",\"endTimeUnixNano\":"
    "\"1544712661000000000\",\"attributes\":[{\"key\":\"http.status_code\",\"value\":{"
    "\"intValue\":\"200\"}}],\"status\":{}}]}]}]}";

/* The brief's example built from C structs gives otelcol's bytes. */
static void test_golden_span_from_structs(void **state) {
  (void)state;
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_TRACES, &b), 0);
  static const uint8_t tid[16] = {0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03,
                                  0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c};
  static const uint8_t sid[8] = {0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74};
  Opentelemetry__Proto__Common__V1__AnyValue v1 = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT,
                                             v2 = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
  v1.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v1.string_value = "x";
  v2.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  v2.int_value = 200;
  Opentelemetry__Proto__Common__V1__KeyValue kv1 =
                                                 OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT,
                                             kv2 =
                                                 OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
  kv1.key = "service.name", kv1.value = &v1;
  kv2.key = "http.status_code", kv2.value = &v2;
  Opentelemetry__Proto__Common__V1__KeyValue *kv1p = &kv1, *kv2p = &kv2;
  Opentelemetry__Proto__Resource__V1__Resource res =
      OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  res.n_attributes = 1, res.attributes = &kv1p;
  Opentelemetry__Proto__Trace__V1__Span sp = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
  sp.trace_id.data = (uint8_t *)tid, sp.trace_id.len = 16;
  sp.span_id.data = (uint8_t *)sid, sp.span_id.len = 8;
  sp.name = "op";
  sp.kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER;
  sp.start_time_unix_nano = 1544712660000000000ull;
  sp.end_time_unix_nano = 1544712661000000000ull;
  sp.n_attributes = 1, sp.attributes = &kv2p;
  Opentelemetry__Proto__Trace__V1__Span *spp = &sp;
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
      OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  ss.n_spans = 1, ss.spans = &spp;
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
      OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  rs.resource = &res, rs.n_scope_spans = 1, rs.scope_spans = &ssp;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
  sonde_batch_traces(b)->n_resource_spans = 1;
  sonde_batch_traces(b)->resource_spans = &rsp;
  char *out = to_json(b);
  assert_string_equal(out, span_json);
  free(out);
  /* appends, and leaves earlier contents alone */
  sonde_buf buf = {0};
  assert_int_equal(sonde_buf_append(&buf, "x", 1), 0);
  assert_int_equal(sonde_batch_to_json(b, &buf), 0);
  assert_int_equal(buf.len, 1 + strlen(span_json));
  sonde_buf_free(&buf);
  sonde_batch_unref(b);
}

static void test_span_roundtrip(void **state) {
  (void)state;
  roundtrip(SONDE_SIGNAL_TRACES, span_json);
  static const char full[] =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"a\",\"value\":{"
      "\"arrayValue\":{\"values\":[{\"boolValue\":false},{\"doubleValue\":1.5},{\"bytesValue\":"
      "\"AAEC/w==\"},{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":{}}]}}]}}}],"
      "\"droppedAttributesCount\":1},\"scopeSpans\":[{\"scope\":{\"name\":\"lib\",\"version\":"
      "\"1.0\"},\"spans\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":"
      "\"0102030405060708\",\"traceState\":\"k=v\",\"parentSpanId\":\"1112131415161718\","
      "\"flags\":257,\"name\":\"GET /\",\"kind\":3,\"startTimeUnixNano\":\"1\","
      "\"endTimeUnixNano\":\"18446744073709551615\",\"events\":[{\"timeUnixNano\":\"5\","
      "\"name\":\"ev\"}],\"links\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\","
      "\"spanId\":\"0102030405060709\",\"flags\":256}],\"droppedLinksCount\":2,\"status\":{"
      "\"message\":\"boom\",\"code\":2}}],\"schemaUrl\":\"https://s\"}]}]}";
  roundtrip(SONDE_SIGNAL_TRACES, full);
  sonde_batch *b = from_json(SONDE_SIGNAL_TRACES, full);
  Opentelemetry__Proto__Trace__V1__Span *sp =
      sonde_batch_traces(b)->resource_spans[0]->scope_spans[0]->spans[0];
  assert_int_equal(sp->end_time_unix_nano, UINT64_MAX);
  assert_int_equal(sp->flags, 257);
  assert_int_equal(sp->parent_span_id.len, 8);
  assert_int_equal(sp->parent_span_id.data[7], 0x18);
  assert_int_equal(sp->status->code, 2);
  Opentelemetry__Proto__Common__V1__AnyValue *av =
      sonde_batch_traces(b)->resource_spans[0]->resource->attributes[0]->value;
  assert_int_equal(av->array_value->n_values, 4);
  assert_int_equal(av->array_value->values[2]->bytes_value.len, 4);
  assert_int_equal(av->array_value->values[2]->bytes_value.data[3], 0xff);
  assert_int_equal(av->array_value->values[0]->value_case,
                   OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE);
  sonde_batch_unref(b);
}

static void test_metrics_golden(void **state) {
  (void)state;
  static const char json[] =
      "{\"resourceMetrics\":[{\"resource\":{},\"scopeMetrics\":[{\"scope\":{},\"metrics\":[{"
      "\"name\":\"g\",\"unit\":\"1\",\"gauge\":{\"dataPoints\":[{\"attributes\":[{\"key\":\"k\","
      "\"value\":{\"stringValue\":\"v\"}}],\"timeUnixNano\":\"100\",\"asDouble\":0.1},{"
      "\"timeUnixNano\":\"100\",\"asDouble\":0}]}},{\"name\":\"s\",\"sum\":{\"dataPoints\":[{"
      "\"startTimeUnixNano\":\"1\",\"timeUnixNano\":\"2\",\"asInt\":\"-5\",\"exemplars\":[{"
      "\"timeUnixNano\":\"2\",\"asInt\":\"3\",\"spanId\":\"0102030405060708\"}],\"flags\":1}],"
      "\"aggregationTemporality\":2,\"isMonotonic\":true}},{\"name\":\"h\",\"histogram\":{"
      "\"dataPoints\":[{\"count\":\"3\",\"sum\":0,\"bucketCounts\":[\"1\",\"2\"],"
      "\"explicitBounds\":[100,1e+21],\"min\":1e-07,\"max\":123456.75}],"
      "\"aggregationTemporality\":1}},{\"name\":\"e\",\"exponentialHistogram\":{\"dataPoints\":"
      "[{\"count\":\"4\",\"scale\":-2,\"zeroCount\":\"1\",\"positive\":{\"offset\":-1,"
      "\"bucketCounts\":[\"3\"]},\"negative\":{},\"zeroThreshold\":1e-300}]}},{\"name\":\"q\","
      "\"summary\":{\"dataPoints\":[{\"count\":\"2\",\"sum\":\"NaN\",\"quantileValues\":[{"
      "\"quantile\":0.5,\"value\":\"Infinity\"},{\"quantile\":1,\"value\":\"-Infinity\"}]}]}}]}]}"
      "]}";
  roundtrip(SONDE_SIGNAL_METRICS, json);
  sonde_batch *b = from_json(SONDE_SIGNAL_METRICS, json);
  assert_int_equal(sonde_batch_items(b), 6);
  Opentelemetry__Proto__Metrics__V1__Metric **m =
      sonde_batch_metrics(b)->resource_metrics[0]->scope_metrics[0]->metrics;
  assert_true(m[0]->gauge->data_points[0]->as_double == 0.1);
  assert_int_equal(m[1]->sum->data_points[0]->as_int, -5);
  /* an explicitly set zero optional sum is kept, an unset one is not */
  assert_int_equal(m[2]->histogram->data_points[0]->_sum_case,
                   OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM);
  assert_true(m[2]->histogram->data_points[0]->explicit_bounds[1] == 1e21);
  assert_true(isnan(m[4]->summary->data_points[0]->sum));
  assert_true(isinf(m[4]->summary->data_points[0]->quantile_values[1]->value));
  sonde_batch_unref(b);
}

static void test_logs_golden(void **state) {
  (void)state;
  static const char json[] =
      "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"host.name\",\"value\":{"
      "\"stringValue\":\"n1\"}}]},\"scopeLogs\":[{\"scope\":{},\"logRecords\":[{"
      "\"timeUnixNano\":\"1700000000000000000\",\"observedTimeUnixNano\":\"1700000000000000001\","
      "\"severityNumber\":9,\"severityText\":\"INFO\",\"body\":{\"stringValue\":\"caf\xc3\xa9 "
      "\\\"q\\\"\\n\\u0001\xf0\x9f\x98\x80\"},\"flags\":1,\"traceId\":"
      "\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\",\"eventName\":"
      "\"e\"},{\"body\":{}}]}]}]}";
  roundtrip(SONDE_SIGNAL_LOGS, json);
  sonde_batch *b = from_json(SONDE_SIGNAL_LOGS, json);
  assert_int_equal(sonde_batch_items(b), 2);
  Opentelemetry__Proto__Logs__V1__LogRecord *lr =
      sonde_batch_logs(b)->resource_logs[0]->scope_logs[0]->log_records[0];
  assert_string_equal(lr->body->string_value, "caf\xc3\xa9 \"q\"\n\x01\xf0\x9f\x98\x80");
  assert_int_equal(lr->severity_number, 9);
  sonde_batch_unref(b);
}

static void test_profiles_golden(void **state) {
  (void)state;
  static const char json[] =
      "{\"resourceProfiles\":[{\"resource\":{},\"scopeProfiles\":[{\"scope\":{},\"profiles\":[{"
      "\"sampleType\":{\"typeStrindex\":1,\"unitStrindex\":2},\"samples\":[{\"stackIndex\":1,"
      "\"values\":[\"10\"],\"attributeIndices\":[1],\"linkIndex\":1,\"timestampsUnixNano\":["
      "\"1700000000000000000\"]},{\"stackIndex\":1,\"values\":[\"3\"]}],\"timeUnixNano\":"
      "\"1700000000000000000\",\"durationNano\":\"1000000000\",\"periodType\":{\"typeStrindex\""
      ":1,\"unitStrindex\":2},\"period\":\"52631578\",\"profileId\":"
      "\"0102030405060708090a0b0c0d0e0f10\"}]}]}],\"dictionary\":{\"mappingTable\":[{},{"
      "\"memoryStart\":\"4194304\",\"memoryLimit\":\"8388608\",\"filenameStrindex\":3}],"
      "\"locationTable\":[{},{\"mappingIndex\":1,\"address\":\"4198400\",\"lines\":[{"
      "\"functionIndex\":1,\"line\":\"42\"}]}],\"functionTable\":[{},{\"nameStrindex\":4}],"
      "\"linkTable\":[{},{\"traceId\":\"5b8efff798038103d269b633813fc60c\",\"spanId\":"
      "\"eee19b7ec3c1b174\"}],\"stringTable\":[\"\",\"cpu\",\"nanoseconds\",\"/bin/app\","
      "\"main\",\"thread.name\"],\"attributeTable\":[{\"value\":{}},{\"keyStrindex\":5,"
      "\"value\":{\"stringValue\":\"worker\"}}],\"stackTable\":[{},{\"locationIndices\":[1]}]}}";
  roundtrip(SONDE_SIGNAL_PROFILES, json);
  sonde_batch *b = from_json(SONDE_SIGNAL_PROFILES, json);
  assert_int_equal(sonde_batch_items(b), 2);
  sonde_profiles *p = sonde_batch_profiles(b);
  assert_int_equal(p->dictionary->n_string_table, 6);
  assert_int_equal(p->resource_profiles[0]->scope_profiles[0]->profiles[0]->period, 52631578);
  sonde_batch_unref(b);
}

/* What OTel SDKs send: snake_case keys, enum names, numbers for 64-bit ints, unknown keys. */
static void test_lenient_input(void **state) {
  (void)state;
  static const char in[] =
      " {\"resource_spans\":[{\"scope_spans\":[{\"spans\":[{\"trace_id\":"
      "\"5B8EFFF798038103D269B633813FC60C\",\"name\":\"op\",\"kind\":\"SPAN_KIND_CLIENT\","
      "\"start_time_unix_nano\":1544712660000000000,\"endTimeUnixNano\":1.5e3,"
      "\"unknownField\":{\"deep\":[1,2,{\"x\":null}]},\"attributes\":null,\"status\":{\"code\":"
      "\"STATUS_CODE_ERROR\"},\"droppedEventsCount\":\"7\"}]}],\"newThing\":true}]}\n";
  sonde_batch *b = from_json(SONDE_SIGNAL_TRACES, in);
  char *out = to_json(b);
  assert_string_equal(
      out, "{\"resourceSpans\":[{\"resource\":{},\"scopeSpans\":[{\"scope\":{},\"spans\":[{"
           "\"traceId\":\"5b8efff798038103d269b633813fc60c\",\"name\":\"op\",\"kind\":3,"
           "\"startTimeUnixNano\":\"1544712660000000000\",\"endTimeUnixNano\":\"1500\","
           "\"droppedEventsCount\":7,\"status\":{\"code\":2}}]}]}]}");
  free(out);
  sonde_batch_unref(b);
  /* invalid UTF-8 in a JSON string reads as U+FFFD, as Go's decoder does */
  b = from_json(SONDE_SIGNAL_LOGS, "{\"resourceLogs\":[{\"schemaUrl\":\"a\xff\xc3\"}]}");
  assert_string_equal(sonde_batch_logs(b)->resource_logs[0]->schema_url,
                      "a\xef\xbf\xbd\xef\xbf\xbd");
  sonde_batch_unref(b);
  /* an empty request */
  b = from_json(SONDE_SIGNAL_LOGS, "{}");
  out = to_json(b);
  assert_string_equal(out, "{}");
  free(out);
  sonde_batch_unref(b);
}

static void expect_error(sonde_signal sig, const char *json, const char *msg) {
  sonde_batch *b = (sonde_batch *)1;
  char err[256];
  int rc = sonde_batch_from_json(sig, json, strlen(json), &b, err, sizeof err);
  assert_int_equal(rc, SONDE_EPROTO);
  assert_null(b);
  if (!strstr(err, msg)) fail_msg("error \"%s\" does not mention \"%s\"", err, msg);
}

static void test_errors(void **state) {
  (void)state;
  expect_error(SONDE_SIGNAL_TRACES, "", "unexpected end of input");
  expect_error(SONDE_SIGNAL_TRACES, "{\"resourceSpans\":[{", "unexpected end of input");
  expect_error(SONDE_SIGNAL_TRACES, "{\"resourceSpans\":[{\"x\":\"abc", "unterminated string");
  expect_error(SONDE_SIGNAL_TRACES, "[]", "expected an object");
  expect_error(SONDE_SIGNAL_TRACES, "{} x", "trailing characters");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\" 1}", "expected ':'");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":1,}", "expected a string key");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":01}", "expected ','");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":tru}", "unexpected character");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":\"\\x\"}", "bad escape");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":\"\\ud800\"}", "unpaired high surrogate");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":\"\\udc00\"}", "lone low surrogate");
  expect_error(SONDE_SIGNAL_TRACES, "{\"a\":\"\x01\"}", "control character");
  expect_error(SONDE_SIGNAL_TRACES, "{\"resourceSpans\":{}}",
               "resourceSpans (offset 17): expected an array");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"name\":5}]}]}]}",
               "resourceSpans[0].scopeSpans[0].spans[0].name (offset 51): expected a string");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}",
               "invalid hex digit");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"kind\":\"NOPE\"}]}]}]}",
               "unknown enum value name \"NOPE\"");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"droppedEventsCount\":-1}]}]}]}",
               "negative value");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"kind\":4294967296}]}]}]}",
               "out of range");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"startTimeUnixNano\":"
               "\"18446744073709551616\"}]}]}]}",
               "out of range");
  expect_error(SONDE_SIGNAL_TRACES,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"startTimeUnixNano\":1.5}]}]}]}",
               "not an integer");
  expect_error(SONDE_SIGNAL_LOGS,
               "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":"
               "\"a\",\"intValue\":\"1\"}}]}]}]}",
               "more than one member of a oneof");
  expect_error(SONDE_SIGNAL_LOGS,
               "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"bytesValue\":"
               "\"a\"}}]}]}]}",
               "invalid base64");
  expect_error(SONDE_SIGNAL_LOGS,
               "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":"
               "\"a\\u0000b\"}}]}]}]}",
               "NUL");
  expect_error(SONDE_SIGNAL_LOGS, "{\"resourceLogs\":[null]}", "null inside an array");
  /* too deep: the parser stops before the stack does */
  size_t depth = 100000;
  char *deep = malloc(2 * depth + 1);
  assert_non_null(deep);
  memset(deep, '[', depth);
  memset(deep + depth, ']', depth);
  deep[2 * depth] = 0;
  expect_error(SONDE_SIGNAL_LOGS, deep, "nesting deeper than 128");
  free(deep);
  /* bad arguments */
  sonde_batch *b;
  char err[64];
  assert_int_equal(sonde_batch_from_json((sonde_signal)5, "{}", 2, &b, err, sizeof err),
                   SONDE_EINVAL);
  assert_int_equal(sonde_batch_from_json(SONDE_SIGNAL_LOGS, "{}", 2, NULL, NULL, 0), SONDE_EINVAL);
  assert_int_equal(sonde_batch_from_json(SONDE_SIGNAL_LOGS, "[", 1, &b, NULL, 0), SONDE_EPROTO);
}

static void test_string_escapes_out(void **state) {
  (void)state;
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_LOGS, &b), 0);
  Opentelemetry__Proto__Logs__V1__LogRecord lr = OPENTELEMETRY__PROTO__LOGS__V1__LOG_RECORD__INIT;
  lr.severity_text = "a\tb\x7f\xff\xc3"; /* invalid UTF-8 becomes U+FFFD */
  Opentelemetry__Proto__Logs__V1__LogRecord *lrp = &lr;
  Opentelemetry__Proto__Logs__V1__ScopeLogs sl = OPENTELEMETRY__PROTO__LOGS__V1__SCOPE_LOGS__INIT;
  sl.n_log_records = 1, sl.log_records = &lrp;
  Opentelemetry__Proto__Logs__V1__ScopeLogs *slp = &sl;
  Opentelemetry__Proto__Logs__V1__ResourceLogs rl =
      OPENTELEMETRY__PROTO__LOGS__V1__RESOURCE_LOGS__INIT;
  rl.n_scope_logs = 1, rl.scope_logs = &slp;
  Opentelemetry__Proto__Logs__V1__ResourceLogs *rlp = &rl;
  sonde_batch_logs(b)->n_resource_logs = 1;
  sonde_batch_logs(b)->resource_logs = &rlp;
  char *out = to_json(b);
  assert_string_equal(out, "{\"resourceLogs\":[{\"resource\":{},\"scopeLogs\":[{\"scope\":{},"
                           "\"logRecords\":[{\"severityText\":\"a\\tb\x7f\\ufffd\\ufffd\","
                           "\"body\":{}}]}]}]}");
  free(out);
  sonde_batch_unref(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_span_from_structs),
      cmocka_unit_test(test_span_roundtrip),
      cmocka_unit_test(test_metrics_golden),
      cmocka_unit_test(test_logs_golden),
      cmocka_unit_test(test_profiles_golden),
      cmocka_unit_test(test_lenient_input),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_string_escapes_out),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit test of the flamegraph exporter's history (fg_store.c) and helpers (fg_util.c): profiles
 * given as OTLP-JSON (decoded by libsonde), the merged tree read back as JSON text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fg_store.h"
#include "sonde/errors.h"

#define S (1000000000LL)
static const int64_t T0 = 1700000000LL * S; /* a slot boundary for 10 s slots */

/* Strings: 0 "", 1 main, 2 work, 3 leaf, 4 idle, 5 inner, 6 samples, 7 count, 8 app, 9 a weird
 * name. Functions 1..5 name strings 1..5, 6 the weird one. Locations: 1 main, 2 work, 3 leaf,
 * 4 idle, 5 = inner inlined into work (two lines), 6 an address in /usr/lib/libx.so, 7 weird.
 * Stacks (leaf first): 1 leaf<work<main, 2 idle<main, 3 loc5<main, 4 loc6<main, 5 weird. */
static const char *DICT =
    "\"dictionary\":{\"stringTable\":[\"\",\"main\",\"work\",\"leaf\",\"idle\",\"inner\","
    "\"samples\",\"count\",\"/usr/lib/libx.so\",\"q\\\"</script><b>\\u0001\\u2028\"],"
    "\"functionTable\":[{},{\"nameStrindex\":1},{\"nameStrindex\":2},{\"nameStrindex\":3},"
    "{\"nameStrindex\":4},{\"nameStrindex\":5},{\"nameStrindex\":9}],"
    "\"mappingTable\":[{},{\"filenameStrindex\":8,\"memoryStart\":\"4096\",\"memoryLimit\":"
    "\"8192\"}],"
    "\"locationTable\":[{},{\"lines\":[{\"functionIndex\":1}]},{\"lines\":[{\"functionIndex\":2}]},"
    "{\"lines\":[{\"functionIndex\":3}]},{\"lines\":[{\"functionIndex\":4}]},"
    "{\"lines\":[{\"functionIndex\":5},{\"functionIndex\":2}]},"
    "{\"mappingIndex\":1,\"address\":\"4660\"},{\"lines\":[{\"functionIndex\":6}]}],"
    "\"stackTable\":[{},{\"locationIndices\":[3,2,1]},{\"locationIndices\":[4,1]},"
    "{\"locationIndices\":[5,1]},{\"locationIndices\":[6,1]},{\"locationIndices\":[7]}]}";

typedef struct smp {
  int stack;
  int value;
} smp;

/* One resource with one profile at time t holding the samples. */
static sonde_batch *req(const char *svc, int pid, const char *ctr, int64_t t, const smp *s,
                        size_t n) {
  char samples[2048] = "", one[128];
  for (size_t i = 0; i < n; i++) {
    snprintf(one, sizeof one, "%s{\"stackIndex\":%d,\"values\":[\"%d\"]}", i ? "," : "", s[i].stack,
             s[i].value);
    strcat(samples, one);
  }
  char json[8192];
  snprintf(json, sizeof json,
           "{\"resourceProfiles\":[{\"resource\":{\"attributes\":["
           "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"%s\"}},"
           "{\"key\":\"process.pid\",\"value\":{\"intValue\":\"%d\"}},"
           "{\"key\":\"process.executable.name\",\"value\":{\"stringValue\":\"app\"}},"
           "{\"key\":\"container.id\",\"value\":{\"stringValue\":\"%s\"}}]},"
           "\"scopeProfiles\":[{\"profiles\":[{\"sampleType\":{\"typeStrindex\":6,"
           "\"unitStrindex\":7},\"timeUnixNano\":\"%lld\",\"samples\":[%s]}]}]}],%s}",
           svc, pid, ctr, (long long)t, samples, DICT);
  sonde_batch *b = NULL;
  char err[256];
  int rc = sonde_batch_from_json(SONDE_SIGNAL_PROFILES, json, strlen(json), &b, err, sizeof err);
  if (rc) fail_msg("bad test JSON: %s\n%s", err, json);
  return b;
}

static void add(fg_store *st, sonde_batch *b, int64_t now, uint64_t want_samples) {
  uint64_t n = 0;
  assert_int_equal(fg_store_add(st, sonde_batch_profiles(b), now, &n), 0);
  assert_int_equal(n, want_samples);
  sonde_batch_unref(b);
}

static char *query(fg_store *st, const fg_query *q) {
  sonde_buf b = {0};
  assert_int_equal(fg_store_query_json(st, q, &b), 0);
  assert_int_equal(sonde_buf_append(&b, "", 1), 0);
  return (char *)b.data;
}

static fg_store *store(int64_t history_s, uint64_t max_bytes) {
  fg_limits lim = {.slot_ns = 10 * S, .history_ns = history_s * S, .max_bytes = max_bytes};
  fg_store *st = NULL;
  assert_int_equal(fg_store_new(&lim, &st), 0);
  return st;
}

static void test_merge_and_inline(void **state) {
  (void)state;
  fg_store *st = store(3600, 0);
  smp a[] = {{1, 5}, {2, 2}};
  smp b[] = {{1, 1}, {3, 4}};
  add(st, req("shop", 7, "", T0 + S, a, 2), T0 + 2 * S, 2);
  add(st, req("shop", 7, "", T0 + 3 * S, b, 2), T0 + 4 * S, 2);
  fg_query q = {0};
  char *j = query(st, &q);
  /* work (5+1 direct, 4 through the inlined location) sorts before idle; inner is under work */
  assert_string_equal(j, "{\"from\":0,\"to\":0,\"unit\":\"samples/count\",\"total\":12,\"tree\":"
                         "{\"n\":\"all\",\"v\":12,\"c\":[{\"n\":\"main\",\"v\":12,\"c\":["
                         "{\"n\":\"work\",\"v\":10,\"c\":[{\"n\":\"leaf\",\"v\":6},"
                         "{\"n\":\"inner\",\"v\":4}]},{\"n\":\"idle\",\"v\":2}]}]}}");
  free(j);
  fg_store_free(st);
}

static void test_filters_and_groups(void **state) {
  (void)state;
  fg_store *st = store(3600, 0);
  smp a[] = {{2, 3}};
  smp b[] = {{4, 2}};
  add(st, req("cart", 10, "c0ffee", T0, a, 1), T0, 1);
  add(st, req("shop", 11, "", T0, b, 1), T0, 1);
  fg_query q = {.service = "cart"};
  char *j = query(st, &q);
  assert_non_null(strstr(j, "\"total\":3,"));
  assert_null(strstr(j, "libx"));
  free(j);
  q = (fg_query){.group = 4};
  j = query(st, &q);
  assert_non_null(strstr(j, "{\"n\":\"cart\",\"v\":3,\"k\":\"s\",\"c\":[{\"n\":\"c0ffee\",\"v\":3,"
                            "\"k\":\"c\",\"c\":[{\"n\":\"app [10]\",\"v\":3,\"k\":\"p\""));
  /* an address without a function: the mapping's file name and the address */
  assert_non_null(strstr(j, "{\"n\":\"libx.so+0x1234\",\"v\":2}"));
  free(j);
  q = (fg_query){.group = 3, .process = "app [11]"};
  j = query(st, &q);
  assert_non_null(
      strstr(j, "\"total\":2,\"tree\":{\"n\":\"all\",\"v\":2,\"c\":[{\"n\":\"app [11]\""));
  free(j);
  sonde_buf l = {0};
  assert_int_equal(fg_store_labels_json(st, 0, 0, &l), 0);
  assert_int_equal(sonde_buf_append(&l, "", 1), 0);
  assert_non_null(strstr((char *)l.data, "\"services\":[\"cart\",\"shop\"],\"containers\":"
                                         "[\"c0ffee\"],\"processes\":[\"app [10]\",\"app [11]\"]"));
  sonde_buf_free(&l);
  fg_store_free(st);
}

static void test_windows_and_diff(void **state) {
  (void)state;
  fg_store *st = store(3600, 0);
  smp a[] = {{1, 1}};
  smp b[] = {{1, 4}, {2, 1}};
  add(st, req("s", 1, "", T0 + 1 * S, a, 1), T0 + 40 * S, 1);
  add(st, req("s", 1, "", T0 + 21 * S, b, 2), T0 + 40 * S, 2);
  assert_int_equal(fg_store_slots(st), 2);
  fg_query q = {.from_ns = T0 + 20 * S, .to_ns = T0 + 30 * S};
  char *j = query(st, &q);
  assert_non_null(strstr(j, "\"total\":5,"));
  free(j);
  q.from2_ns = T0;
  q.to2_ns = T0 + 10 * S;
  j = query(st, &q);
  assert_non_null(strstr(j, "\"total\":5,\"base\":1,"));
  assert_non_null(strstr(j, "{\"n\":\"leaf\",\"v\":4,\"b\":1}"));
  assert_non_null(strstr(j, "{\"n\":\"idle\",\"v\":1,\"b\":0}"));
  free(j);
  fg_store_free(st);
}

static void test_history_bounded_by_time(void **state) {
  (void)state;
  fg_store *st = store(30, 0);
  smp a[] = {{1, 1}};
  add(st, req("s", 1, "", T0, a, 1), T0, 1);
  add(st, req("s", 1, "", T0 + 15 * S, a, 1), T0 + 15 * S, 1);
  assert_int_equal(fg_store_slots(st), 2);
  /* 100 s later both slots are past the 30 s history */
  add(st, req("s", 1, "", T0 + 100 * S, a, 1), T0 + 100 * S, 1);
  assert_int_equal(fg_store_slots(st), 1);
  assert_int_equal(fg_store_dropped_slots(st), 2);
  /* a profile already older than the history is not kept */
  add(st, req("s", 1, "", T0 + 10 * S, a, 1), T0 + 100 * S, 0);
  fg_query q = {0};
  char *j = query(st, &q);
  assert_non_null(strstr(j, "\"total\":1,"));
  free(j);
  fg_store_prune(st, T0 + 200 * S);
  assert_int_equal(fg_store_slots(st), 0);
  fg_store_free(st);
}

static void test_history_bounded_by_bytes(void **state) {
  (void)state;
  uint64_t max = 256 * 1024;
  fg_store *st = store(100000, max);
  smp a[] = {{1, 1}, {2, 1}, {3, 1}};
  for (int i = 0; i < 200; i++) {
    add(st, req("s", i, "", T0 + i * 10 * S, a, 3), T0 + i * 10 * S, 3);
    assert_true(fg_store_bytes(st) <= max);
  }
  assert_true(fg_store_slots(st) > 2);
  assert_true(fg_store_slots(st) < 200);
  assert_int_equal(fg_store_dropped_slots(st) + fg_store_slots(st), 200);
  /* the newest slot is always there */
  fg_query q = {.from_ns = T0 + 1990 * S, .to_ns = T0 + 2000 * S, .group = 3};
  char *j = query(st, &q);
  assert_non_null(strstr(j, "app [199]"));
  free(j);
  fg_store_free(st);
}

static void test_one_slot_bounded(void **state) {
  (void)state;
  uint64_t max = 64 * 1024;
  fg_store *st = store(3600, max);
  smp a[] = {{1, 1}};
  uint64_t kept = 0;
  for (int i = 0; i < 3000; i++) {
    uint64_t n = 0;
    sonde_batch *b = req("s", i, "", T0, a, 1);
    assert_int_equal(fg_store_add(st, sonde_batch_profiles(b), T0, &n), 0);
    sonde_batch_unref(b);
    kept += n;
  }
  assert_int_equal(fg_store_slots(st), 1);
  assert_true(kept > 100 && kept < 3000);
  assert_int_equal(fg_store_dropped_samples(st), 3000 - kept);
  /* over by at most what one profile and one table growth add */
  assert_true(fg_store_bytes(st) < max + 32 * 1024);
  fg_query q = {.group = 3};
  char *j = query(st, &q);
  assert_non_null(strstr(j, "\"app [0]\""));
  assert_null(strstr(j, "\"app [2999]\""));
  free(j);
  fg_store_free(st);
}

/* A query job holds its slots: a sample for the same slot goes to a sibling, a prune does not free
 * them under it; after the job both slots count as one to the page. */
static void test_job_isolation(void **state) {
  (void)state;
  fg_store *st = store(30, 0);
  smp a[] = {{2, 3}};
  add(st, req("s", 1, "", T0, a, 1), T0, 1);
  fg_query q = {.group = 0};
  fg_job *j;
  assert_int_equal(fg_store_job_new(st, &q, &j), 0);
  add(st, req("s", 1, "", T0 + S, a, 1), T0 + S, 1);
  assert_int_equal(fg_store_slots(st), 2);
  sonde_buf l = {0};
  assert_int_equal(fg_store_labels_json(st, 0, 0, &l), 0);
  assert_int_equal(sonde_buf_append(&l, "", 1), 0);
  assert_non_null(strstr((char *)l.data, "\"slots\":[[1700000000000,6]]"));
  sonde_buf_free(&l);
  fg_store_prune(st, T0 + 100 * S); /* both dropped from the store; the job's still readable */
  assert_int_equal(fg_store_slots(st), 0);
  sonde_buf out = {0};
  assert_int_equal(fg_job_run(j, &out), 0);
  assert_int_equal(sonde_buf_append(&out, "", 1), 0);
  assert_non_null(strstr((char *)out.data, "\"total\":3,"));
  sonde_buf_free(&out);
  fg_job_free(j);
  fg_store_free(st);
}

static void test_escaping(void **state) {
  (void)state;
  fg_store *st = store(3600, 0);
  smp a[] = {{5, 1}};
  add(st, req("s", 1, "", T0, a, 1), T0, 1);
  fg_query q = {0};
  char *j = query(st, &q);
  assert_non_null(strstr(j, "\"q\\\"\\u003c/script\\u003e\\u003cb\\u003e\\u0001\\u2028\""));
  assert_null(strstr(j, "<"));
  free(j);
  sonde_buf b = {0};
  assert_int_equal(fg_json_str(&b, "a\xff\xc3\xa9\xed\xa0\x80z", 8), 0);
  assert_int_equal(b.len, strlen("\"a\\ufffd\xc3\xa9\\ufffd\\ufffd\\ufffdz\""));
  assert_memory_equal(b.data, "\"a\\ufffd\xc3\xa9\\ufffd\\ufffd\\ufffdz\"", b.len);
  sonde_buf_free(&b);
  fg_store_free(st);
}

static void test_query_parse(void **state) {
  (void)state;
  fg_query q;
  fg_qbufs bufs;
  char err[128];
  assert_int_equal(fg_query_parse("from=-5000&service=a%2Fb+c&group=process&process=x%", T0, &q,
                                  &bufs, err, sizeof err),
                   0);
  assert_int_equal(q.from_ns, T0 - 5 * S);
  assert_int_equal(q.to_ns, T0 + 1);
  assert_string_equal(q.service, "a/b c");
  assert_string_equal(q.process, "x%");
  assert_null(q.container);
  assert_int_equal(q.group, 3);
  assert_int_equal(
      fg_query_parse("from=1700000000000&to=1700000010000", T0, &q, &bufs, err, sizeof err), 0);
  assert_int_equal(q.from_ns, T0);
  assert_int_equal(q.to_ns, T0 + 10 * S);
  assert_int_equal(fg_query_parse("from=yesterday", T0, &q, &bufs, err, sizeof err), SONDE_EINVAL);
  assert_non_null(strstr(err, "from"));
  assert_int_equal(fg_query_parse("group=pid", T0, &q, &bufs, err, sizeof err), SONDE_EINVAL);
  assert_int_equal(fg_query_parse("from=20&to=10", T0, &q, &bufs, err, sizeof err), SONDE_EINVAL);
  assert_int_equal(fg_query_parse("to2=10", T0, &q, &bufs, err, sizeof err), SONDE_EINVAL);
}

static void test_host_allowed(void **state) {
  (void)state;
  assert_true(fg_host_allowed("localhost:7070", "localhost:7070"));
  assert_true(fg_host_allowed("localhost:7070", "127.0.0.1:7070"));
  assert_true(fg_host_allowed("localhost:7070", "[::1]:7070"));
  assert_true(fg_host_allowed("localhost:7070", "LOCALHOST"));
  assert_false(fg_host_allowed("localhost:7070", "evil.example:7070"));
  assert_false(fg_host_allowed("localhost:7070", "127.0.0.1.evil.example"));
  assert_false(fg_host_allowed("localhost:7070", NULL));
  assert_true(fg_host_allowed("node1.lan:7070", "node1.lan:7070"));
  assert_false(fg_host_allowed("node1.lan:7070", "node2.lan:7070"));
  assert_true(fg_host_allowed("0.0.0.0:7070", "anything"));
  assert_true(fg_host_allowed(":7070", "localhost:7070"));
  assert_false(fg_host_allowed(":7070", ":7070"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_merge_and_inline),
      cmocka_unit_test(test_filters_and_groups),
      cmocka_unit_test(test_windows_and_diff),
      cmocka_unit_test(test_history_bounded_by_time),
      cmocka_unit_test(test_history_bounded_by_bytes),
      cmocka_unit_test(test_one_slot_bounded),
      cmocka_unit_test(test_job_isolation),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_query_parse),
      cmocka_unit_test(test_host_allowed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

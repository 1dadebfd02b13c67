/* probabilistic_sampler decisions against values computed independently of this code.
 *
 * Derivations (Python 3, stdlib only; the same functions are in tests/e2e/test_sampling.py):
 *
 *   def fnv1a32(seed, data):             # otelcol computeHash: FNV-1a over seed (LE) + data
 *       h = 2166136261
 *       for b in struct.pack('<I', seed) + data:
 *           h = ((h ^ b) * 16777619) & 0xffffffff
 *       return h
 *   (checked against the published FNV-1a vector: unseeded "a" -> 0xe40c292c)
 *
 *   murmur3 x86_32 as in Austin Appleby's MurmurHash3_x86_32 (checked: ("", 0) -> 0,
 *   ("a", 0) -> 0x3c2569b2, published values).
 *
 *   scaled(pct) = int(f32(f32(pct) * f32(163.84)))     # float32 product, truncated:
 *       25 -> 4096, 33.3 -> 5455, 50 -> 8192, 99.99 -> 16382, 100 -> 16384, 0.001 -> 0
 *   kept in hash_seed mode iff (fnv1a32(seed, trace_id) & 0x3fff) < scaled(pct)
 *   rv written = ((0x3fff - (h & 0x3fff)) << 42) | (((h>>14) ^ (h>>14 << 10)) & (2**28-1)) << 14
 *                | (h & 0x3fff)
 *   th written = hex(((16384 - scaled) << 42), 14 digits).rstrip('0'): 25% -> "c",
 *                33.3% -> (10929 << 42) = 0xaac40000000000 -> "aac4"
 *
 *   trace id 000102030405060708090a0b0c0d0e0f:
 *     seed 0:  fnv 0x1995bd65, & 0x3fff = 15717 (>= 4096: dropped at 25%), rv 0a68664f95bd65
 *     seed 1:  fnv 0x4fb4c164, & 0x3fff =   356 (kept at 25%),            rv fa6d3e9cb4c164
 *     seed 22: fnv 0x5571e3c3, & 0x3fff =  9155 (kept at 60%: scaled 9830), rv 70f1559271e3c3
 *   trace id 5b8efff798038103d269b633813fc60c, seed 0: fnv 0x245dd6df, & 0x3fff = 5855
 *   testgen trace id 736f6e64 00000000 0000000000000000 ("sond", seed 0, trace 0):
 *     seed 0: fnv 0x252866ad (9901), murmur3 0xd788ac2b
 *
 *   OTEP 235 thresholds (ProbabilityToThresholdWithPrecision, precision 4):
 *     0.25 -> c, 1/3 -> aaab, 0.5 -> 8, 0.75 -> 4, 0.375 -> a, 0.001 -> ffbe77 (6 digits: the
 *     leading fs add precision), 0.999 -> 004189, 1/3 at precision 14 -> aaaaaaaaaaaaac
 *   proportional randomness = last 7 bytes of the trace id (69b633813fc60c for 5b8e...c60c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "psampler_logic.h"

static const uint8_t TID_SEQ[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t TID_W3C[16] = {0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03,
                                    0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c};
static const uint8_t TID_TESTGEN[16] = {'s', 'o', 'n', 'd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t TID_HIGH[16] = {1,    2,    3,    4,    5,    6,    7,    8,
                                     0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t TID_LOW[16] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t TID_ZERO[16] = {0};

static void test_hashes(void **state) {
  (void)state;
  assert_int_equal(ps_fnv1a32(0, TID_SEQ, 16), 0x1995bd65);
  assert_int_equal(ps_fnv1a32(1, TID_SEQ, 16), 0x4fb4c164);
  assert_int_equal(ps_fnv1a32(22, TID_SEQ, 16), 0x5571e3c3);
  assert_int_equal(ps_fnv1a32(0, TID_W3C, 16), 0x245dd6df);
  assert_int_equal(ps_fnv1a32(0, TID_TESTGEN, 16), 0x252866ad);
  assert_int_equal(ps_fnv1a32(0, (const uint8_t *)"", 0), 0x4b95f515);
  assert_int_equal(ps_murmur3_32(0, (const uint8_t *)"", 0), 0);
  assert_int_equal(ps_murmur3_32(0, (const uint8_t *)"a", 1), 0x3c2569b2);
  assert_int_equal(ps_murmur3_32(1, (const uint8_t *)"abc", 3), 0xaa75e9ff);
  assert_int_equal(ps_murmur3_32(0, (const uint8_t *)"abcd", 4), 0x43ed676a);
  assert_int_equal(ps_murmur3_32(0, TID_TESTGEN, 16), 0xd788ac2b);
  assert_int_equal(ps_murmur3_32(22, TID_SEQ, 16), 0x9619d70a);
  assert_true(ps_hash_randomness(0x1995bd65) == 0x0a68664f95bd65ull);
  assert_true(ps_hash_randomness(0x4fb4c164) == 0xfa6d3e9cb4c164ull);
}

static void test_thresholds(void **state) {
  (void)state;
  static const struct {
    double p;
    int prec;
    const char *tv;
  } v[] = {
      {0.25, 4, "c"},       {1.0 / 3, 4, "aaab"}, {0.5, 4, "8"},
      {0.75, 4, "4"},       {0.375, 4, "a"},      {0.001, 4, "ffbe77"},
      {0.999, 4, "004189"}, {1, 4, "0"},          {1.0 / 3, 14, "aaaaaaaaaaaaac"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    uint64_t th;
    char tv[16];
    assert_true(ps_prob_to_threshold(v[i].p, v[i].prec, &th));
    ps_tvalue(th, tv);
    if (strcmp(tv, v[i].tv))
      fail_msg("p %g prec %d: th %s, want %s", v[i].p, v[i].prec, tv, v[i].tv);
    uint64_t back;
    assert_true(ps_parse_tvalue(tv, strlen(tv), &back));
    assert_true(back == th);
  }
  uint64_t th;
  assert_false(ps_prob_to_threshold(0, 4, &th));
  assert_false(ps_prob_to_threshold(1.5, 4, &th));
  assert_false(ps_parse_tvalue("123456789abcdef", 15, &th));
  assert_false(ps_parse_tvalue("xyz", 3, &th));
  assert_false(ps_parse_rvalue("123", 3, &th));
  char tv[16];
  ps_tvalue(PS_NEVER_SAMPLE, tv);
  assert_string_equal(tv, "");
}

/* One span decision. */
static ps_result span(const ps_sampler *s, const uint8_t *tid, const char *ts, int prio) {
  ps_item it = {.trace_id = tid, .trace_id_len = 16, .tracestate = ts, .span_priority = prio};
  ps_result r;
  ps_decide(s, &it, &r);
  return r;
}

static void test_hash_seed(void **state) {
  (void)state;
  ps_sampler s;
  ps_make(&s, PS_MODE_HASH_SEED, 25, 0, 4, true, false);
  ps_result r = span(&s, TID_SEQ, NULL, -1);
  assert_false(r.sampled); /* 15717 >= 4096 */
  ps_make(&s, PS_MODE_HASH_SEED, 25, 1, 4, true, false);
  r = span(&s, TID_SEQ, NULL, -1);
  assert_true(r.sampled); /* 356 < 4096 */
  assert_int_equal(r.policy, PS_POL_TRACE_ID_HASH);
  assert_true(r.tracestate_changed);
  assert_string_equal(r.tracestate, "ot=rv:fa6d3e9cb4c164;th:c");
  /* Other vendors' members stay, after ot. */
  r = span(&s, TID_SEQ, "vendor=x,other=y", -1);
  assert_string_equal(r.tracestate, "ot=rv:fa6d3e9cb4c164;th:c,vendor=x,other=y");
  /* 33.3%: scaled 5455, th (16384-5455) << 42 = aac4. */
  ps_make(&s, PS_MODE_HASH_SEED, 33.3f, 1, 4, true, false);
  r = span(&s, TID_SEQ, NULL, -1);
  assert_string_equal(r.tracestate, "ot=rv:fa6d3e9cb4c164;th:aac4");
  /* seed 22: 9155; kept at 60% (scaled 9830), dropped at 55% (9011). */
  ps_make(&s, PS_MODE_HASH_SEED, 60, 22, 4, true, false);
  assert_true(span(&s, TID_SEQ, NULL, -1).sampled);
  ps_make(&s, PS_MODE_HASH_SEED, 55, 22, 4, true, false);
  assert_false(span(&s, TID_SEQ, NULL, -1).sampled);
  /* An arriving th or rv: this mode must not be used; fail_closed drops, fail open keeps as is. */
  ps_make(&s, PS_MODE_HASH_SEED, 100, 1, 4, true, false);
  r = span(&s, TID_SEQ, "ot=th:8", -1);
  assert_false(r.sampled);
  assert_non_null(r.error);
  ps_make(&s, PS_MODE_HASH_SEED, 100, 1, 4, false, false);
  r = span(&s, TID_SEQ, "ot=rv:00000000000001", -1);
  assert_true(r.sampled);
  assert_false(r.tracestate_changed);
  /* A malformed tracestate is an error too. */
  ps_make(&s, PS_MODE_HASH_SEED, 100, 1, 4, true, false);
  assert_false(span(&s, TID_SEQ, "ot=th:zz", -1).sampled);
  assert_false(span(&s, TID_SEQ, "Bad Key=1", -1).sampled);
  /* No trace id: missing randomness. */
  assert_false(span(&s, TID_ZERO, NULL, -1).sampled);
  /* 100% keeps all and writes th:0; 0% keeps none. */
  r = span(&s, TID_SEQ, NULL, -1);
  assert_true(r.sampled);
  assert_string_equal(r.tracestate, "ot=rv:fa6d3e9cb4c164;th:0");
  ps_make(&s, PS_MODE_HASH_SEED, 0, 1, 4, true, false);
  assert_false(span(&s, TID_SEQ, NULL, -1).sampled);
  /* sampling.priority: 0 never, > 0 always. */
  assert_true(span(&s, TID_SEQ, NULL, 1).sampled);
  ps_make(&s, PS_MODE_HASH_SEED, 100, 1, 4, true, false);
  r = span(&s, TID_SEQ, NULL, 0);
  assert_false(r.sampled);
  assert_int_equal(r.policy, PS_POL_PRIORITY);
  /* The legacy murmur3 hash: testgen's trace 0 hashes to 0xd788ac2b, & 0x3fff = 11307. */
  ps_make(&s, PS_MODE_HASH_SEED, 70, 0, 4, true, true); /* scaled 11468 */
  assert_true(span(&s, TID_TESTGEN, NULL, -1).sampled);
  ps_make(&s, PS_MODE_HASH_SEED, 69, 0, 4, true, true); /* scaled 11304 */
  assert_false(span(&s, TID_TESTGEN, NULL, -1).sampled);
}

static void test_proportional(void **state) {
  (void)state;
  ps_sampler s;
  /* Randomness 69b633813fc60c: below 8 (50%), above 4 (75%). */
  ps_make(&s, PS_MODE_PROPORTIONAL, 50, 0, 4, true, false);
  assert_false(span(&s, TID_W3C, NULL, -1).sampled);
  ps_make(&s, PS_MODE_PROPORTIONAL, 75, 0, 4, true, false);
  ps_result r = span(&s, TID_W3C, NULL, -1);
  assert_true(r.sampled);
  assert_int_equal(r.policy, PS_POL_TRACE_ID_W3C);
  assert_string_equal(r.tracestate, "ot=th:4");
  /* Arriving at 75% (th:4), sampled again at 50%: 0.375 -> th:a, above the randomness. */
  ps_make(&s, PS_MODE_PROPORTIONAL, 50, 0, 4, true, false);
  assert_false(span(&s, TID_W3C, "ot=th:4", -1).sampled);
  /* Randomness ffffffffffffff passes every threshold: 50% of 50% -> th:c; other ot values and
   * vendors are kept. */
  r = span(&s, TID_HIGH, "ot=th:8;x:y,vendor=abc", -1);
  assert_true(r.sampled);
  assert_string_equal(r.tracestate, "ot=th:c;x:y,vendor=abc");
  /* An explicit rv wins over the trace id. */
  r = span(&s, TID_W3C, "ot=rv:ffffffffffffff", -1);
  assert_true(r.sampled);
  assert_int_equal(r.policy, PS_POL_RANDOMNESS);
  assert_string_equal(r.tracestate, "ot=rv:ffffffffffffff;th:8");
  /* Inconsistent arrival: th:8 but randomness 1 (should never have been sampled). */
  r = span(&s, TID_LOW, "ot=th:8", -1);
  assert_false(r.sampled);
  assert_non_null(r.error);
  ps_make(&s, PS_MODE_PROPORTIONAL, 50, 0, 4, false, false);
  r = span(&s, TID_LOW, "ot=th:8", -1);
  assert_true(r.sampled); /* fail open: kept, th cleared then set to always */
  assert_string_equal(r.tracestate, "ot=th:0");
  /* No randomness at all. */
  ps_make(&s, PS_MODE_PROPORTIONAL, 50, 0, 4, true, false);
  assert_false(span(&s, TID_ZERO, NULL, -1).sampled);
  /* Tiny products fall below 2^-56 and are never sampled. */
  ps_make(&s, PS_MODE_PROPORTIONAL, 1e-12f, 0, 4, true, false);
  assert_false(span(&s, TID_HIGH, "ot=th:fffffffffffff", -1).sampled);
}

static void test_equalizing(void **state) {
  (void)state;
  ps_sampler s;
  ps_make(&s, PS_MODE_EQUALIZING, 50, 0, 4, true, false);
  /* Arriving at 25% (th:c) is below 50%: the arriving threshold stands, tracestate unchanged. */
  ps_result r = span(&s, TID_HIGH, "ot=th:c", -1);
  assert_true(r.sampled);
  assert_false(r.tracestate_changed);
  /* Arriving at 75%: raised to 50%. */
  r = span(&s, TID_HIGH, "ot=th:4", -1);
  assert_string_equal(r.tracestate, "ot=th:8");
  assert_false(span(&s, TID_W3C, NULL, -1).sampled);
}

static void test_logs(void **state) {
  (void)state;
  ps_sampler s;
  ps_make(&s, PS_MODE_HASH_SEED, 25, 1, 4, true, false);
  ps_item it = {.trace_id = TID_SEQ, .trace_id_len = 16, .is_log = true, .use_trace_id = true};
  ps_result r;
  ps_decide(&s, &it, &r);
  assert_true(r.sampled);
  assert_true(r.set_rv && r.set_th);
  assert_string_equal(r.rv, "fa6d3e9cb4c164");
  assert_string_equal(r.th, "c");
  /* attribute_source record: the attribute's bytes are hashed, not the trace id.
   * fnv1a32(1, b"000102030405060708090a0b0c0d0e0f"[:0]) is not used: use a known vector:
   * fnv1a32(0, bytes(range(16))) & 0x3fff = 15717, dropped at 25% with seed 0. */
  ps_make(&s, PS_MODE_HASH_SEED, 25, 0, 4, true, false);
  ps_item rec = {.is_log = true, .attr_bytes = TID_SEQ, .attr_len = 16};
  ps_decide(&s, &rec, &r);
  assert_false(r.sampled);
  assert_int_equal(r.policy, PS_POL_ATTRIBUTE);
  ps_make(&s, PS_MODE_HASH_SEED, 25, 1, 4, true, false);
  ps_decide(&s, &rec, &r);
  assert_true(r.sampled);
  /* Neither: missing randomness, dropped when fail_closed. */
  ps_item none = {.is_log = true, .use_trace_id = true};
  ps_decide(&s, &none, &r);
  assert_false(r.sampled);
  /* sampling_priority 100 keeps it anyway (threshold from 100% = 0). */
  none.has_prio_th = true;
  none.prio_th = 0;
  ps_make(&s, PS_MODE_HASH_SEED, 100, 1, 4, false, false);
  ps_decide(&s, &none, &r);
  assert_true(r.sampled);
  /* Proportional with sampling.threshold attribute arriving. */
  ps_make(&s, PS_MODE_PROPORTIONAL, 50, 0, 4, true, false);
  ps_item arr = {.trace_id = TID_HIGH, .trace_id_len = 16, .is_log = true, .log_th = "8"};
  ps_decide(&s, &arr, &r);
  assert_true(r.sampled && r.set_th);
  assert_string_equal(r.th, "c");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hashes),     cmocka_unit_test(test_thresholds),
      cmocka_unit_test(test_hash_seed),  cmocka_unit_test(test_proportional),
      cmocka_unit_test(test_equalizing), cmocka_unit_test(test_logs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

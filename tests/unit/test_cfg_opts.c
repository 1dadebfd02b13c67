/* Option tables: strict parsers, binding every option type, the exact error messages users see,
 * defaults, bounds, did-you-mean, several targets on one map, freeing, docs and print-config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfg.h"

static char err[2048];

/* ---- strict parsers ------------------------------------------------------------------------- */

static void test_parse_duration(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t ns;
  } ok[] = {
      {"0", 0},
      {"-0", 0},
      {"250ms", 250000000},
      {"1m30s", 90000000000},
      {"1.5h", 5400000000000},
      {"300us", 300000},
      {"300\xc2\xb5s", 300000},
      {"300\xce\xbcs", 300000},
      {"10ns", 10},
      {"2h45m", 9900000000000},
      {".5s", 500000000},
      {"1.s", 1000000000},
      {"-1.5s", -1500000000},
      {"+2s", 2000000000},
      {"9223372036854775807ns", INT64_MAX},
      {"2562047h47m16.854775807s", INT64_MAX},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t v = -42;
    if (sonde__parse_duration(ok[i].s, &v)) fail_msg("\"%s\" rejected", ok[i].s);
    if (v != ok[i].ns)
      fail_msg("\"%s\" = %lld, want %lld", ok[i].s, (long long)v, (long long)ok[i].ns);
  }
  static const char *const bad[] = {"",      "5",  "1.5", "5 s", " 5s", "5s ",   "5sec", "5S", "s",
                                    "1h-5m", "ms", ".",   "-",   "5m3", "0x10s", "1d",   "00"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t v;
    if (sonde__parse_duration(bad[i], &v) != SONDE_EINVAL) fail_msg("\"%s\" accepted", bad[i]);
  }
  int64_t v;
  assert_int_equal(sonde__parse_duration("9223372036854775808ns", &v), SONDE_ETOOBIG);
  assert_int_equal(sonde__parse_duration("3000000h", &v), SONDE_ETOOBIG);
  assert_int_equal(sonde__parse_duration("99999999999999999999999s", &v), SONDE_ETOOBIG);
}

static void test_parse_bytes(void **state) {
  (void)state;
  static const struct {
    const char *s;
    uint64_t b;
  } ok[] = {
      {"0", 0},           {"512", 512},
      {"512B", 512},      {"1KiB", 1024},
      {"1KB", 1000},      {"1kB", 1000},
      {"1MB", 1000000},   {"64MiB", 64u << 20},
      {"1GiB", 1u << 30}, {"2TiB", 2ull << 40},
      {"16EiB", 0},       {"18446744073709551615", UINT64_MAX},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    uint64_t v = 42;
    int rc = sonde__parse_bytes(ok[i].s, &v);
    if (!strcmp(ok[i].s, "16EiB")) { /* 2^64: one past the end */
      assert_int_equal(rc, SONDE_ETOOBIG);
      continue;
    }
    if (rc) fail_msg("\"%s\" rejected", ok[i].s);
    if (v != ok[i].b) fail_msg("\"%s\" = %llu", ok[i].s, (unsigned long long)v);
  }
  static const char *const bad[] = {"",   "-1",  "+1", "1.5MiB", "64 MiB", "64mib", "MiB",
                                    "1K", "1Ki", "1b", " 1",     "1 ",     "0x10"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v;
    if (sonde__parse_bytes(bad[i], &v) != SONDE_EINVAL) fail_msg("\"%s\" accepted", bad[i]);
  }
  uint64_t v;
  assert_int_equal(sonde__parse_bytes("18446744073709551616", &v), SONDE_ETOOBIG);
  assert_int_equal(sonde__parse_bytes("20000000TiB", &v), SONDE_ETOOBIG);
}

static void test_parse_scalars(void **state) {
  (void)state;
  bool b;
  assert_int_equal(sonde__parse_bool("true", &b), 0);
  assert_true(b);
  assert_int_equal(sonde__parse_bool("TRUE", &b), 0);
  assert_true(b);
  assert_int_equal(sonde__parse_bool("False", &b), 0);
  assert_false(b);
  static const char *const badb[] = {"yes", "no", "on", "1", "0", "tRue", "", "true "};
  for (size_t i = 0; i < sizeof badb / sizeof badb[0]; i++)
    assert_int_equal(sonde__parse_bool(badb[i], &b), SONDE_EINVAL);

  int64_t i64;
  assert_int_equal(sonde__parse_int("-42", &i64), 0);
  assert_int_equal(i64, -42);
  assert_int_equal(sonde__parse_int("0123", &i64), 0);
  assert_int_equal(i64, 123);
  assert_int_equal(sonde__parse_int("9223372036854775807", &i64), 0);
  assert_true(i64 == INT64_MAX);
  assert_int_equal(sonde__parse_int("-9223372036854775808", &i64), 0);
  assert_true(i64 == INT64_MIN);
  assert_int_equal(sonde__parse_int("9223372036854775808", &i64), SONDE_ETOOBIG);
  assert_int_equal(sonde__parse_int("-9223372036854775809", &i64), SONDE_ETOOBIG);
  static const char *const badi[] = {"1.5", "1e3", "0x10", "", "-", " 1", "1_000", "12a"};
  for (size_t i = 0; i < sizeof badi / sizeof badi[0]; i++)
    assert_int_equal(sonde__parse_int(badi[i], &i64), SONDE_EINVAL);

  double d;
  assert_int_equal(sonde__parse_double("0.25", &d), 0);
  assert_true(d == 0.25);
  assert_int_equal(sonde__parse_double("-1e-3", &d), 0);
  assert_true(d == -1e-3);
  assert_int_equal(sonde__parse_double("7", &d), 0);
  assert_true(d == 7);
  assert_int_equal(sonde__parse_double("1e999", &d), SONDE_ETOOBIG);
  static const char *const badd[] = {"nan", "inf", ".inf", "0x1p3", "", "1e", "1.2.3", " 1", "."};
  for (size_t i = 0; i < sizeof badd / sizeof badd[0]; i++)
    assert_int_equal(sonde__parse_double(badd[i], &d), SONDE_EINVAL);
}

static void test_did_you_mean(void **state) {
  (void)state;
  static const char *const c[] = {"endpoint", "timeout", "compression", "tls", "headers"};
  assert_string_equal(sonde__did_you_mean("endpont", c, 5), "endpoint");
  assert_string_equal(sonde__did_you_mean("tiemout", c, 5), "timeout");
  assert_string_equal(sonde__did_you_mean("Compresion", c, 5), "compression");
  assert_string_equal(sonde__did_you_mean("tsl", c, 5), "tls");
  assert_null(sonde__did_you_mean("retry_on_failure", c, 5));
  assert_null(sonde__did_you_mean("x", c, 5));
  assert_null(sonde__did_you_mean("", c, 5));
}

/* ---- binding -------------------------------------------------------------------------------- */

typedef struct tls_cfg {
  bool insecure;
  char *ca_file;
} tls_cfg;

typedef struct rule_cfg {
  int action;
  char *regex;
  sonde_strlist labels;
} rule_cfg;

typedef struct exp_cfg {
  char *endpoint;
  int64_t workers;
  bool compress;
  double ratio;
  int64_t timeout;
  uint64_t max_size;
  int compression;
  sonde_strlist tags;
  sonde_strmap headers;
  tls_cfg tls;
  sonde_tablelist rules;
  char *token;
  char *id;
} exp_cfg;

static const char *const compressions[] = {"none", "gzip", "zstd", NULL};
static const char *const actions[] = {"keep", "drop", "replace", NULL};

static const sonde_option tls_opts[] = {
    SONDE_OPT("insecure", SONDE_OPT_BOOL, tls_cfg, insecure, "false", "skip verification"),
    SONDE_OPT("ca_file", SONDE_OPT_STRING, tls_cfg, ca_file, NULL, "CA bundle"),
    SONDE_OPT_END,
};

static const sonde_option rule_opts[] = {
    {.name = "action",
     .type = SONDE_OPT_ENUM,
     .offset = offsetof(rule_cfg, action),
     .enum_values = actions,
     .doc = "what to do",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT("regex", SONDE_OPT_STRING, rule_cfg, regex, NULL, "match"),
    SONDE_OPT("labels", SONDE_OPT_STRLIST, rule_cfg, labels, NULL, "source labels"),
    SONDE_OPT_END,
};

static const sonde_option exp_opts[] = {
    {.name = "endpoint",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(exp_cfg, endpoint),
     .doc = "host:port",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT_RANGE("workers", SONDE_OPT_INT, exp_cfg, workers, "4", 1, 64, "senders"),
    SONDE_OPT("compress", SONDE_OPT_BOOL, exp_cfg, compress, "true", "compress bodies"),
    SONDE_OPT_RANGE("ratio", SONDE_OPT_DOUBLE, exp_cfg, ratio, "0.5", 0, 1, "sampling ratio"),
    SONDE_OPT_RANGE("timeout", SONDE_OPT_DURATION, exp_cfg, timeout, "5s", 1e6, 3600e9,
                    "per request"),
    SONDE_OPT_RANGE("max_size", SONDE_OPT_BYTES, exp_cfg, max_size, "64MiB", 1024, 0,
                    "largest body"),
    SONDE_OPT_ENUMV("compression", exp_cfg, compression, "gzip", compressions, "codec"),
    SONDE_OPT("tags", SONDE_OPT_STRLIST, exp_cfg, tags, "[a, \"b c\"]", "tags"),
    {.name = "headers",
     .type = SONDE_OPT_STRMAP,
     .offset = offsetof(exp_cfg, headers),
     .doc = "extra headers",
     .flags = SONDE_OPT_SECRET},
    SONDE_OPT_NESTED("tls", exp_cfg, tls, tls_opts, "TLS settings"),
    SONDE_OPT_ROWS("rules", exp_cfg, rules, rule_cfg, rule_opts, "relabel rules"),
    {.name = "token",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(exp_cfg, token),
     .doc = "bearer token",
     .flags = SONDE_OPT_SECRET},
    SONDE_OPT("id", SONDE_OPT_STRING, exp_cfg, id, "0123", "an id"),
    SONDE_OPT_END,
};

/* A second table bound from the same map, as the core does for queued exporters. */
typedef struct queue_cfg {
  bool enabled;
  int64_t queue_size;
} queue_cfg;
typedef struct core_cfg {
  queue_cfg sending_queue;
  int64_t timeout;
} core_cfg;

static const sonde_option queue_opts[] = {
    SONDE_OPT("enabled", SONDE_OPT_BOOL, queue_cfg, enabled, "true", "queue batches"),
    SONDE_OPT_RANGE("queue_size", SONDE_OPT_INT, queue_cfg, queue_size, "1000", 1, 0, "batches"),
    SONDE_OPT_END,
};
static const sonde_option core_opts[] = {
    SONDE_OPT_NESTED("sending_queue", core_cfg, sending_queue, queue_opts, "queue"),
    SONDE_OPT("timeout", SONDE_OPT_DURATION, core_cfg, timeout, "10s", "send timeout"),
    SONDE_OPT_END,
};

static sonde__cfg_node *parse(const char *yaml) {
  sonde__cfg_node *r = NULL;
  if (sonde__cfg_parse_string("t.yaml", yaml, strlen(yaml), &r, err, sizeof err))
    fail_msg("parse: %s", err);
  return r;
}

/* Binds yaml (a map of options) into *c at path; returns rc, message in err. */
static int bind(const char *yaml, exp_cfg *c, const char *path) {
  sonde__cfg_node *r = parse(yaml);
  sonde__opts_target t = {exp_opts, c};
  int rc = sonde__opts_bind(&t, 1, r, path, err, sizeof err);
  sonde__cfg_free(r);
  return rc;
}

static void test_bind_defaults(void **state) {
  (void)state;
  exp_cfg c = {0};
  assert_int_equal(bind("endpoint: x:1\n", &c, "exporters::otlp"), 0);
  assert_string_equal(c.endpoint, "x:1");
  assert_int_equal(c.workers, 4);
  assert_true(c.compress);
  assert_true(c.ratio == 0.5);
  assert_int_equal(c.timeout, 5000000000);
  assert_int_equal(c.max_size, 64u << 20);
  assert_int_equal(c.compression, 1);
  assert_int_equal(c.tags.n, 2);
  assert_string_equal(c.tags.v[1], "b c");
  assert_int_equal(c.headers.n, 0);
  assert_false(c.tls.insecure);
  assert_null(c.tls.ca_file);
  assert_int_equal(c.rules.n, 0);
  assert_null(c.token);
  assert_string_equal(c.id, "0123"); /* a string default keeps its text */
  sonde__opts_free(exp_opts, &c);
  assert_null(c.endpoint);
  assert_null(c.tags.v);
}

static void test_bind_all_types(void **state) {
  (void)state;
  exp_cfg c = {0};
  assert_int_equal(bind("endpoint: 0123\n"
                        "workers: 64\n"
                        "compress: FALSE\n"
                        "ratio: 1\n"
                        "timeout: 1m30s\n"
                        "max_size: 1KiB\n"
                        "compression: zstd\n"
                        "tags: []\n"
                        "headers: {X-Api-Key: secret, Empty: }\n"
                        "tls:\n"
                        "  insecure: true\n"
                        "  ca_file: /etc/ca.pem\n"
                        "rules:\n"
                        "  - action: drop\n"
                        "    labels: [a, b]\n"
                        "  - {action: replace, regex: \"^x$\"}\n"
                        "token: t0k3n\n"
                        "id: 'true'\n",
                        &c, "exporters::otlp"),
                   0);
  assert_string_equal(c.endpoint, "0123");
  assert_int_equal(c.workers, 64);
  assert_false(c.compress);
  assert_true(c.ratio == 1.0);
  assert_int_equal(c.timeout, 90000000000);
  assert_int_equal(c.max_size, 1024);
  assert_int_equal(c.compression, 2);
  assert_int_equal(c.tags.n, 0);
  assert_int_equal(c.headers.n, 2);
  assert_string_equal(c.headers.keys[0], "X-Api-Key");
  assert_string_equal(c.headers.values[0], "secret");
  assert_string_equal(c.headers.keys[1], "Empty");
  assert_string_equal(c.headers.values[1], "");
  assert_true(c.tls.insecure);
  assert_string_equal(c.tls.ca_file, "/etc/ca.pem");
  assert_int_equal(c.rules.n, 2);
  rule_cfg *r = c.rules.items;
  assert_int_equal(r[0].action, 1);
  assert_int_equal(r[0].labels.n, 2);
  assert_string_equal(r[0].labels.v[1], "b");
  assert_int_equal(r[1].action, 2);
  assert_string_equal(r[1].regex, "^x$");
  assert_string_equal(c.token, "t0k3n");
  assert_string_equal(c.id, "true");
  /* binding again replaces (and frees) the earlier values */
  assert_int_equal(bind("endpoint: y\n", &c, "e"), 0);
  assert_string_equal(c.endpoint, "y");
  assert_int_equal(c.rules.n, 0);
  sonde__opts_free(exp_opts, &c);
}

static void test_empty_row_with_required(void **state) {
  (void)state;
  /* an empty row is bound with defaults, so its required options are missing */
  exp_cfg c = {0};
  assert_int_equal(bind("endpoint: x\nrules:\n  - action: keep\n  -\n", &c, "processors::relabel"),
                   SONDE_ECONFIG);
  assert_string_equal(err, "t.yaml:4:4: processors::relabel::rules[1]::action: required option is "
                           "missing");
  sonde__opts_free(exp_opts, &c);
}

typedef struct bad_case {
  const char *yaml;
  const char *msg;
} bad_case;

static void test_bind_errors(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"endpoint: x\ntimeout: 5 seconds\n",
       "t.yaml:2:10: exporters::otlp_grpc/tempo::timeout: invalid duration \"5 seconds\" (use a "
       "number with a unit: ns, us, ms, s, m, h)"},
      {"endpoint: x\ntimeout: 5\n",
       "t.yaml:2:10: exporters::otlp_grpc/tempo::timeout: invalid duration \"5\" (use a number "
       "with a unit: ns, us, ms, s, m, h)"},
      {"endpoint: x\ntimeout: 2h\n", "t.yaml:2:10: exporters::otlp_grpc/tempo::timeout: 2h is out "
                                     "of range (must be between 1ms and 1h)"},
      {"endpoint: x\ntimeout: 0\n", "t.yaml:2:10: exporters::otlp_grpc/tempo::timeout: 0 is out "
                                    "of range (must be between 1ms and 1h)"},
      {"endpoint: x\ntimeout: 99999999h\n",
       "t.yaml:2:10: exporters::otlp_grpc/tempo::timeout: duration 99999999h is out of range"},
      {"endpoint: x\nworkers: 1.5\n", "t.yaml:2:10: exporters::otlp_grpc/tempo::workers: invalid "
                                      "integer \"1.5\" (expected a whole number)"},
      {"endpoint: x\nworkers: 99999999999999999999\n",
       "t.yaml:2:10: exporters::otlp_grpc/tempo::workers: integer 99999999999999999999 is out of "
       "range"},
      {"endpoint: x\nworkers: 0\n", "t.yaml:2:10: exporters::otlp_grpc/tempo::workers: 0 is out "
                                    "of range (must be between 1 and 64)"},
      {"endpoint: x\ncompress: yes\n", "t.yaml:2:11: exporters::otlp_grpc/tempo::compress: "
                                       "invalid boolean \"yes\" (use true or false)"},
      {"endpoint: x\nratio: abc\n",
       "t.yaml:2:8: exporters::otlp_grpc/tempo::ratio: invalid number \"abc\""},
      {"endpoint: x\nratio: 1.5\n", "t.yaml:2:8: exporters::otlp_grpc/tempo::ratio: 1.5 is out "
                                    "of range (must be between 0 and 1)"},
      {"endpoint: x\nmax_size: 64 MiB\n",
       "t.yaml:2:11: exporters::otlp_grpc/tempo::max_size: invalid size \"64 MiB\" (use a whole "
       "number with an optional unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"},
      {"endpoint: x\nmax_size: -1\n",
       "t.yaml:2:11: exporters::otlp_grpc/tempo::max_size: invalid size \"-1\" (use a whole "
       "number with an optional unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"},
      {"endpoint: x\nmax_size: 1000\n", "t.yaml:2:11: exporters::otlp_grpc/tempo::max_size: 1000 "
                                        "is out of range (must be at least 1KiB)"},
      {"endpoint: x\nmax_size: 100000000EiB\n",
       "t.yaml:2:11: exporters::otlp_grpc/tempo::max_size: size 100000000EiB is out of range"},
      {"endpoint: x\ncompression: gzp\n",
       "t.yaml:2:14: exporters::otlp_grpc/tempo::compression: invalid value \"gzp\", did you "
       "mean \"gzip\"? (valid values: none, gzip, zstd)"},
      {"endpoint: x\ncompression: brotli\n",
       "t.yaml:2:14: exporters::otlp_grpc/tempo::compression: invalid value \"brotli\" (valid "
       "values: none, gzip, zstd)"},
      {"endpont: x\n", "t.yaml:1:1: exporters::otlp_grpc/tempo::endpont: unknown option, did you "
                       "mean \"endpoint\"? (valid options: endpoint, workers, compress, ratio, "
                       "timeout, max_size, compression, tags, headers, tls, rules, token, id)"},
      {"endpoint: x\nretry_on_failure: {}\n",
       "t.yaml:2:1: exporters::otlp_grpc/tempo::retry_on_failure: unknown option (valid options: "
       "endpoint, workers, compress, ratio, timeout, max_size, compression, tags, headers, tls, "
       "rules, token, id)"},
      {"workers: 2\n",
       "t.yaml:1:1: exporters::otlp_grpc/tempo::endpoint: required option is missing"},
      {"endpoint:\n",
       "t.yaml:1:1: exporters::otlp_grpc/tempo::endpoint: required option has no value"},
      {"endpoint: [a]\n", "t.yaml:1:11: exporters::otlp_grpc/tempo::endpoint: expected a scalar "
                          "(string), got a list"},
      {"endpoint: x\ntags: a\n", "t.yaml:2:7: exporters::otlp_grpc/tempo::tags: expected a list "
                                 "(list of strings), got a scalar"},
      {"endpoint: x\ntags: [a, [b]]\n",
       "t.yaml:2:11: exporters::otlp_grpc/tempo::tags[1]: expected a string, got a list"},
      {"endpoint: x\nheaders:\n  a: {b: c}\n",
       "t.yaml:3:6: exporters::otlp_grpc/tempo::headers::a: expected a string, got a map"},
      {"endpoint: x\ntls: {insecure: maybe}\n",
       "t.yaml:2:17: exporters::otlp_grpc/tempo::tls::insecure: invalid boolean \"maybe\" (use "
       "true or false)"},
      {"endpoint: x\ntls: {insecur: true}\n",
       "t.yaml:2:7: exporters::otlp_grpc/tempo::tls::insecur: unknown option, did you mean "
       "\"insecure\"? (valid options: insecure, ca_file)"},
      {"endpoint: x\ntls: on\n",
       "t.yaml:2:6: exporters::otlp_grpc/tempo::tls: expected a map (table), got a scalar"},
      {"endpoint: x\nrules: {action: keep}\n", "t.yaml:2:8: exporters::otlp_grpc/tempo::rules: "
                                               "expected a list of maps (list of tables), got a "
                                               "map"},
      {"endpoint: x\nrules: [x]\n",
       "t.yaml:2:9: exporters::otlp_grpc/tempo::rules[0]: expected a map, got a scalar"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    exp_cfg c = {0};
    int rc = bind(cases[i].yaml, &c, "exporters::otlp_grpc/tempo");
    sonde__opts_free(exp_opts, &c); /* also after a failure */
    if (rc != SONDE_ECONFIG) fail_msg("case %zu: rc %d", i, rc);
    if (strcmp(err, cases[i].msg)) fail_msg("case %zu:\n got  %s\n want %s", i, err, cases[i].msg);
  }
}

static void test_table_list_path(void **state) {
  (void)state;
  exp_cfg c = {0};
  int rc = bind("endpoint: x\n"
                "rules:\n"
                "  - action: keep\n"
                "    labels: [a]\n"
                "  - {action: drop, regex: y, labels: [b, c]}\n"
                "  - action: frob\n",
                &c, "processors::relabel");
  assert_int_equal(rc, SONDE_ECONFIG);
  assert_string_equal(err, "t.yaml:6:13: processors::relabel::rules[2]::action: invalid value "
                           "\"frob\" (valid values: keep, drop, replace)");
  /* the half-bound struct (two rows with strings and lists) frees cleanly */
  assert_int_equal(c.rules.n, 3);
  sonde__opts_free(exp_opts, &c);
  assert_int_equal(c.rules.n, 0);
  assert_null(c.rules.items);
  sonde__opts_free(exp_opts, &c); /* twice is harmless */
}

static void test_node_not_a_map(void **state) {
  (void)state;
  sonde__cfg_node *r = parse("otlp: grpc\n");
  exp_cfg c = {0};
  sonde__opts_target t = {exp_opts, &c};
  assert_int_equal(
      sonde__opts_bind(&t, 1, sonde__cfg_get(r, "otlp"), "receivers::otlp", err, sizeof err),
      SONDE_ECONFIG);
  assert_string_equal(err, "t.yaml:1:7: receivers::otlp: expected a map, got a scalar");
  sonde__opts_free(exp_opts, &c);
  /* NULL node: every default, and a missing required option has no position to show */
  assert_int_equal(sonde__opts_bind(&t, 1, NULL, "receivers::otlp", err, sizeof err),
                   SONDE_ECONFIG);
  assert_string_equal(err, "receivers::otlp::endpoint: required option is missing");
  sonde__opts_free(exp_opts, &c);
  sonde__cfg_free(r);

  tls_cfg tc = {0};
  sonde__opts_target tt = {tls_opts, &tc};
  assert_int_equal(sonde__opts_bind(&tt, 1, NULL, "x", err, sizeof err), 0);
  assert_false(tc.insecure);
  sonde__opts_free(tls_opts, &tc);
}

static void test_empty_table_means_defaults(void **state) {
  (void)state;
  exp_cfg c = {.tls.insecure = true};
  assert_int_equal(bind("endpoint: x\ntls:\n", &c, "e"), 0);
  assert_false(c.tls.insecure);
  assert_null(c.tls.ca_file);
  sonde__opts_free(exp_opts, &c);
}

static void test_env_then_bind(void **state) {
  (void)state;
  setenv("SONDE_T_WORKERS", "8", 1);
  unsetenv("SONDE_T_NOPE");
  sonde__cfg_node *r = parse("endpoint: ${env:SONDE_T_NOPE}\n"
                             "workers: ${env:SONDE_T_WORKERS}\n"
                             "timeout: ${env:SONDE_T_NOPE}\n"
                             "tls: ${SONDE_T_NOPE}\n"
                             "compression: ${env:SONDE_T_NOPE:-zstd}\n");
  assert_int_equal(sonde__cfg_expand(r, err, sizeof err), 0);
  exp_cfg c = {0};
  sonde__opts_target t = {exp_opts, &c};
  assert_int_equal(sonde__opts_bind(&t, 1, r, "e", err, sizeof err), 0);
  assert_string_equal(c.endpoint, ""); /* unset: "" for a string */
  assert_int_equal(c.workers, 8);
  assert_int_equal(c.timeout, 5000000000); /* unset: the default for anything else */
  assert_int_equal(c.compression, 2);
  sonde__opts_free(exp_opts, &c);
  sonde__cfg_free(r);
}

static void test_several_targets(void **state) {
  (void)state;
  sonde__cfg_node *r = parse("endpoint: x\n"
                             "timeout: 2s\n"
                             "sending_queue:\n"
                             "  queue_size: 50\n");
  exp_cfg e = {0};
  core_cfg q = {0};
  sonde__opts_target t[] = {{exp_opts, &e}, {core_opts, &q}};
  assert_int_equal(sonde__opts_bind(t, 2, r, "exporters::otlp", err, sizeof err), 0);
  assert_string_equal(e.endpoint, "x");
  assert_int_equal(e.timeout, 2000000000); /* a key both tables know goes to both */
  assert_int_equal(q.timeout, 2000000000);
  assert_true(q.sending_queue.enabled);
  assert_int_equal(q.sending_queue.queue_size, 50);
  sonde__opts_free(exp_opts, &e);
  sonde__opts_free(core_opts, &q);
  sonde__cfg_free(r);

  r = parse("endpoint: x\nsending_queu: {}\nsending_queue: {queue_size: 0}\n");
  assert_int_equal(sonde__opts_bind(t, 2, r, "exporters::otlp", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "t.yaml:2:1: exporters::otlp::sending_queu: unknown option, did you "
                           "mean \"sending_queue\"? (valid options: endpoint, workers, compress, "
                           "ratio, timeout, max_size, compression, tags, headers, tls, rules, "
                           "token, id, sending_queue)");
  sonde__cfg_free(r);
  r = parse("endpoint: x\nsending_queue: {queue_size: 0}\n");
  assert_int_equal(sonde__opts_bind(t, 2, r, "exporters::otlp", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "t.yaml:2:29: exporters::otlp::sending_queue::queue_size: 0 is out of "
                           "range (must be at least 1)");
  sonde__opts_free(exp_opts, &e);
  sonde__opts_free(core_opts, &q);
  sonde__cfg_free(r);
}

static void test_bad_default(void **state) {
  (void)state;
  typedef struct {
    int64_t t;
  } s;
  static const sonde_option bad[] = {
      SONDE_OPT("interval", SONDE_OPT_DURATION, s, t, "10", "oops"),
      SONDE_OPT_END,
  };
  s v = {0};
  sonde__opts_target t = {bad, &v};
  assert_int_equal(sonde__opts_bind(&t, 1, NULL, "receivers::x", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "receivers::x::interval: invalid duration \"10\" (use a number with a "
                           "unit: ns, us, ms, s, m, h) [in the option table's default]");
}

/* ---- docs and print-config ------------------------------------------------------------------ */

static void test_doc(void **state) {
  (void)state;
  sonde_buf b = {0};
  assert_int_equal(sonde__opts_doc(exp_opts, 2, &b), 0);
  assert_string_equal((char *)b.data,
                      "  endpoint (string, required): host:port\n"
                      "  workers (int, default \"4\", min 1, max 64): senders\n"
                      "  compress (bool, default \"true\"): compress bodies\n"
                      "  ratio (double, default \"0.5\", min 0, max 1): sampling ratio\n"
                      "  timeout (duration, default \"5s\", min 1ms, max 1h): per request\n"
                      "  max_size (size, default \"64MiB\", min 1KiB): largest body\n"
                      "  compression (enum: none|gzip|zstd, default \"gzip\"): codec\n"
                      "  tags (list of strings, default \"[a, \"b c\"]\"): tags\n"
                      "  headers (map of strings, secret): extra headers\n"
                      "  tls (table): TLS settings\n"
                      "    insecure (bool, default \"false\"): skip verification\n"
                      "    ca_file (string): CA bundle\n"
                      "  rules (list of tables): relabel rules\n"
                      "    action (enum: keep|drop|replace, required): what to do\n"
                      "    regex (string): match\n"
                      "    labels (list of strings): source labels\n"
                      "  token (string, secret): bearer token\n"
                      "  id (string, default \"0123\"): an id\n");
  sonde_buf_free(&b);
}

static void test_emit_and_rebind(void **state) {
  (void)state;
  exp_cfg c = {0};
  assert_int_equal(bind("endpoint: \"a: b\"\n"
                        "ratio: 0.1\n"
                        "timeout: 1m30.5s\n"
                        "max_size: 3000\n"
                        "tags: [x, '#y']\n"
                        "headers: {Authorization: Bearer xyz}\n"
                        "tls: {ca_file: /ca}\n"
                        "rules: [{action: drop, labels: [l1]}, {action: keep}]\n"
                        "token: hunter2\n",
                        &c, "e"),
                   0);
  sonde_buf b = {0};
  assert_int_equal(sonde__opts_emit(exp_opts, &c, 4, &b), 0);
  assert_string_equal((char *)b.data, "    endpoint: \"a: b\"\n"
                                      "    workers: 4\n"
                                      "    compress: true\n"
                                      "    ratio: 0.1\n"
                                      "    timeout: 1m30.5s\n"
                                      "    max_size: 3KB\n"
                                      "    compression: gzip\n"
                                      "    tags:\n"
                                      "      - x\n"
                                      "      - \"#y\"\n"
                                      "    headers:\n"
                                      "      Authorization: \"[REDACTED]\"\n"
                                      "    tls:\n"
                                      "      insecure: false\n"
                                      "      ca_file: /ca\n"
                                      "    rules:\n"
                                      "      - action: drop\n"
                                      "        regex:\n"
                                      "        labels:\n"
                                      "          - l1\n"
                                      "      - action: keep\n"
                                      "        regex:\n"
                                      "        labels: []\n"
                                      "    token: \"[REDACTED]\"\n"
                                      "    id: 0123\n");
  /* what print-config shows binds back to the same values (secrets aside) */
  exp_cfg d = {0};
  sonde__cfg_node *r = parse((char *)b.data);
  sonde__opts_target t = {exp_opts, &d};
  assert_int_equal(sonde__opts_bind(&t, 1, r, "e", err, sizeof err), 0);
  assert_string_equal(d.endpoint, c.endpoint);
  assert_true(d.ratio == c.ratio);
  assert_int_equal(d.timeout, c.timeout);
  assert_int_equal(d.max_size, c.max_size);
  assert_int_equal(d.tags.n, 2);
  assert_string_equal(d.tags.v[1], "#y");
  assert_string_equal(d.tls.ca_file, "/ca");
  assert_int_equal(d.rules.n, 2);
  assert_int_equal(((rule_cfg *)d.rules.items)[1].action, 0);
  assert_string_equal(d.id, "0123");
  assert_string_equal(d.token, "[REDACTED]");
  sonde__cfg_free(r);
  sonde_buf_free(&b);
  sonde__opts_free(exp_opts, &c);
  sonde__opts_free(exp_opts, &d);
}

/* SONDE_OPT_PRESENCE: a written section (even empty) is told apart from an absent one, and
 * print-config leaves an absent one out so that re-reading its output configures the same. */
typedef struct proto_sub {
  char *endpoint;
} proto_sub;
typedef struct protos_cfg {
  proto_sub grpc, http;
  bool has_grpc, has_http;
} protos_cfg;
static const sonde_option proto_sub_opts[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, proto_sub, endpoint, "localhost:1", "where"),
    SONDE_OPT_END,
};
static const sonde_option protos_opts[] = {
    SONDE_OPT_NESTED_P("grpc", protos_cfg, grpc, has_grpc, proto_sub_opts, "grpc"),
    SONDE_OPT_NESTED_P("http", protos_cfg, http, has_http, proto_sub_opts, "http"),
    SONDE_OPT_END,
};

static void test_presence(void **state) {
  (void)state;
  const char *cases[] = {"grpc:\n", "http: {endpoint: h:2}\n", "{}\n"};
  const bool want_grpc[] = {true, false, false}, want_http[] = {false, true, false};
  for (int i = 0; i < 3; i++) {
    protos_cfg c = {0};
    sonde__cfg_node *r = parse(cases[i]);
    sonde__opts_target t = {protos_opts, &c};
    assert_int_equal(sonde__opts_bind(&t, 1, r, "receivers::otlp::protocols", err, sizeof err), 0);
    sonde__cfg_free(r);
    assert_int_equal(c.has_grpc, want_grpc[i]);
    assert_int_equal(c.has_http, want_http[i]);
    assert_string_equal(c.grpc.endpoint, "localhost:1"); /* defaults bound either way */
    sonde_buf out = {0};
    assert_int_equal(sonde__opts_emit(protos_opts, &c, 0, &out), 0);
    assert_int_equal(strstr(out.len ? (char *)out.data : "", "grpc:") != NULL, want_grpc[i]);
    assert_int_equal(strstr(out.len ? (char *)out.data : "", "http:") != NULL, want_http[i]);
    sonde_buf_free(&out);
    sonde__opts_free(protos_opts, &c);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_presence),        cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_parse_bytes),     cmocka_unit_test(test_parse_scalars),
      cmocka_unit_test(test_did_you_mean),    cmocka_unit_test(test_bind_defaults),
      cmocka_unit_test(test_bind_all_types),  cmocka_unit_test(test_empty_row_with_required),
      cmocka_unit_test(test_bind_errors),     cmocka_unit_test(test_table_list_path),
      cmocka_unit_test(test_node_not_a_map),  cmocka_unit_test(test_empty_table_means_defaults),
      cmocka_unit_test(test_env_then_bind),   cmocka_unit_test(test_several_targets),
      cmocka_unit_test(test_bad_default),     cmocka_unit_test(test_doc),
      cmocka_unit_test(test_emit_and_rebind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the self-metrics registry and its Prometheus text exposition
 * (core/src/telemetry.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry.h"

static char *render(sonde__metrics *m) {
  sonde_buf b = {0};
  assert_int_equal(sonde__metrics_render(m, &b), 0);
  assert_int_equal(sonde_buf_append(&b, "", 0), 0);
  return (char *)b.data;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* The sample line of name{labels} (labels as rendered, or "" for none); NULL when absent. */
static const char *sample(const char *text, const char *series) {
  size_t l = strlen(series);
  for (const char *p = text; p && *p;) {
    if (strncmp(p, series, l) == 0 && p[l] == ' ')
      return p + l + 1;
    p = strchr(p, '\n');
    if (p)
      p++;
  }
  return NULL;
}

static double value_of(const char *text, const char *series) {
  const char *v = sample(text, series);
  if (!v)
    fail_msg("no sample for %s in:\n%s", series, text);
  return strtod(v, NULL);
}

/* Checks the text against the exposition format rules a Prometheus scraper applies: every family
 * has one HELP and one TYPE line before its samples, samples of a family are contiguous, metric
 * and label names are valid, label values are quoted with escapes, values parse. */
static void check_exposition(const char *text) {
  char fam[64][128];
  int nfam = 0;
  char cur[128] = "", type[16] = "";
  const char *p = text;
  int line = 0;
  while (*p) {
    line++;
    const char *nl = strchr(p, '\n');
    assert_non_null(nl); /* every line ends with \n */
    char buf[1024];
    size_t len = (size_t)(nl - p);
    assert_true(len < sizeof buf);
    memcpy(buf, p, len);
    buf[len] = 0;
    p = nl + 1;
    if (strncmp(buf, "# HELP ", 7) == 0) {
      char name[128];
      assert_int_equal(sscanf(buf + 7, "%127s", name), 1);
      for (int i = 0; i < nfam; i++)
        if (strcmp(fam[i], name) == 0)
          fail_msg("line %d: family %s described twice (not contiguous)", line, name);
      snprintf(fam[nfam++], sizeof fam[0], "%s", name);
      snprintf(cur, sizeof cur, "%s", name);
      type[0] = 0;
      /* HELP text: no raw newline possible here; a backslash only as \\ or \n */
      const char *h = buf + 7 + strlen(name);
      for (; *h; h++)
        if (*h == '\\') {
          h++;
          assert_true(*h == '\\' || *h == 'n');
        }
      continue;
    }
    if (strncmp(buf, "# TYPE ", 7) == 0) {
      char name[128];
      assert_int_equal(sscanf(buf + 7, "%127s %15s", name, type), 2);
      assert_string_equal(name, cur);
      assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0);
      if (strcmp(type, "counter") == 0)
        assert_true(strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_total") == 0);
      continue;
    }
    assert_true(buf[0] != '#');
    assert_true(type[0]); /* a sample without HELP/TYPE before it */
    /* name */
    const char *s = buf;
    assert_true(isalpha((unsigned char)*s) || *s == '_' || *s == ':');
    while (isalnum((unsigned char)*s) || *s == '_' || *s == ':')
      s++;
    if (strncmp(buf, cur, strlen(cur)) != 0 || (size_t)(s - buf) != strlen(cur))
      fail_msg("line %d: sample \"%s\" outside its family %s", line, buf, cur);
    if (*s == '{') {
      s++;
      while (*s != '}') {
        assert_true(isalpha((unsigned char)*s) || *s == '_');
        while (isalnum((unsigned char)*s) || *s == '_')
          s++;
        assert_int_equal(*s++, '=');
        assert_int_equal(*s++, '"');
        while (*s != '"') {
          assert_true(*s != 0 && *s != '\n');
          if (*s == '\\') {
            s++;
            assert_true(*s == '\\' || *s == 'n' || *s == '"');
          }
          s++;
        }
        s++;
        if (*s == ',')
          s++;
        else
          assert_int_equal(*s, '}');
      }
      s++;
    }
    assert_int_equal(*s++, ' ');
    char *end;
    if (strcmp(s, "NaN") && strcmp(s, "+Inf") && strcmp(s, "-Inf")) {
      strtod(s, &end);
      assert_true(end != s && *end == 0);
    }
  }
}

static void test_exposition_format(void **state) {
  sonde__metrics *m;
  assert_int_equal(sonde__metrics_new(&m), 0);
  sonde_metric *a, *b, *c, *g, *a2;
  /* registered interleaved: the two accepted series must still render as one family */
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_receiver_accepted_spans",
                                      "Items pushed", "receiver=otlp,transport=grpc", &a),
                   0);
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, "otelcol_exporter_queue_size",
                                      "Current size", "exporter=otlp", &g),
                   0);
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_receiver_accepted_spans",
                                      "Items pushed", "receiver=otlp,transport=http", &b),
                   0);
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_exporter_sent_spans",
                                      "Items sent", "exporter=otlp", &c),
                   0);
  /* the same series again: the same object */
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_receiver_accepted_spans",
                                      "Items pushed", "receiver=otlp,transport=grpc", &a2),
                   0);
  assert_ptr_equal(a, a2);
  sonde__metric_add(a, 3);
  sonde__metric_add(a2, 4);
  sonde__metric_add(b, 1.5);
  sonde__metric_set(g, 42);
  sonde__metric_set(g, 17);
  sonde__metric_add(c, 1e20);
  assert_true(sonde__metric_value(a) == 7);
  char *t = render(m);
  check_exposition(t);
  assert_int_equal(count(t, "# HELP otelcol_receiver_accepted_spans_total Items pushed\n"), 1);
  assert_int_equal(count(t, "# TYPE otelcol_receiver_accepted_spans_total counter\n"), 1);
  assert_int_equal(count(t, "# TYPE otelcol_exporter_queue_size gauge\n"), 1);
  assert_non_null(
      strstr(t, "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 7\n"));
  assert_non_null(strstr(
      t, "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"} 1.5\n"));
  assert_non_null(strstr(t, "otelcol_exporter_queue_size{exporter=\"otlp\"} 17\n"));
  assert_non_null(strstr(t, "otelcol_exporter_sent_spans_total{exporter=\"otlp\"} 1e+20\n"));
  /* the process metrics otelcol has */
  assert_true(value_of(t, "otelcol_process_memory_rss_bytes") > 1e5);
  assert_true(value_of(t, "otelcol_process_cpu_seconds_total") >= 0);
  assert_true(value_of(t, "otelcol_process_uptime_seconds_total") >= 0);
  assert_int_equal(count(t, "# TYPE otelcol_process_memory_rss_bytes gauge\n"), 1);
  assert_int_equal(count(t, "# TYPE otelcol_process_cpu_seconds_total counter\n"), 1);
  free(t);
  sonde__metrics_free(m);
}

static void test_label_escaping(void **state) {
  sonde__metrics *m;
  assert_int_equal(sonde__metrics_new(&m), 0);
  sonde_metric *s;
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, "x_info", "X",
                                      "path=C:\\dir\\f,quote=say \"hi\",nl=a\nb,empty=", &s),
                   0);
  sonde__metric_set(s, 1);
  char *t = render(m);
  check_exposition(t);
  assert_non_null(strstr(
      t, "x_info{path=\"C:\\\\dir\\\\f\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",empty=\"\"} 1\n"));
  free(t);
  sonde__metrics_free(m);
}

static void test_help_escaping(void **state) {
  sonde__metrics *m;
  assert_int_equal(sonde__metrics_new(&m), 0);
  sonde_metric *s;
  /* a plug-in's help text with a newline must not break the exposition into a bogus line */
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "plugin_things",
                                      "Things seen\nper C:\\path", NULL, &s),
                   0);
  char *t = render(m);
  check_exposition(t);
  assert_non_null(strstr(t, "# HELP plugin_things_total Things seen\\nper C:\\\\path\n"));
  assert_non_null(strstr(t, "\nplugin_things_total 0\n"));
  free(t);
  sonde__metrics_free(m);
}

static void test_values(void **state) {
  sonde__metrics *m;
  assert_int_equal(sonde__metrics_new(&m), 0);
  static const struct {
    const char *name;
    double v;
    const char *want;
  } cases[] = {
      {"v_zero", 0, "0"},       {"v_int", 3, "3"},          {"v_neg", -2.5, "-2.5"},
      {"v_tenth", 0.1, "0.1"},  {"v_third", 1.0 / 3, "0.3333333333333333"},
      {"v_big", 1e20, "1e+20"}, {"v_nbig", -1e20, "-1e+20"}, {"v_huge", 1e300, "1e+300"},
      {"v_nan", NAN, "NaN"},    {"v_inf", INFINITY, "+Inf"}, {"v_ninf", -INFINITY, "-Inf"},
  };
  size_t n = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n; i++) {
    sonde_metric *s;
    assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, cases[i].name, "h", NULL, &s), 0);
    sonde__metric_set(s, cases[i].v);
  }
  char *t = render(m);
  check_exposition(t);
  for (size_t i = 0; i < n; i++) {
    const char *v = sample(t, cases[i].name);
    assert_non_null(v);
    size_t l = strlen(cases[i].want);
    if (strncmp(v, cases[i].want, l) != 0 || v[l] != '\n')
      fail_msg("%s: want %s, got %.20s", cases[i].name, cases[i].want, v);
  }
  free(t);
  sonde__metrics_free(m);
}

static void test_kind_conflict(void **state) {
  sonde__metrics *m;
  assert_int_equal(sonde__metrics_new(&m), 0);
  sonde_metric *s = NULL, *o = NULL;
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "dup", "h", "a=2", &s), 0);
  /* another label set, other kind: still one family, one kind */
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, "dup", "h", "a=1", &o), SONDE_EEXISTS);
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, "dup", "h", "a=3", &o), SONDE_EEXISTS);
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, "dup", "h", "a=2", &o), SONDE_EEXISTS);
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, "dup", "h", NULL, &o), SONDE_EEXISTS);
  assert_null(o);
  /* the process metrics are taken too */
  assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_process_memory_rss_bytes",
                                      "h", NULL, &o),
                   SONDE_EEXISTS);
  char *t = render(m);
  check_exposition(t);
  assert_int_equal(count(t, "# TYPE dup_total counter\n"), 1);
  assert_int_equal(count(t, "dup"), 3); /* HELP, TYPE, one sample */
  free(t);
  sonde__metrics_free(m);
}

static void test_many_families_contiguous(void **state) {
  sonde__metrics *m;
  assert_int_equal(sonde__metrics_new(&m), 0);
  /* names that are prefixes of each other, registered in a scrambled order */
  static const char *names[] = {"a_b", "a", "a_b_c", "a_", "b", "a_b"};
  for (int r = 0; r < 3; r++)
    for (int i = 0; i < 6; i++) {
      char labels[32];
      snprintf(labels, sizeof labels, "k=%d", (r * 7 + i * 3) % 5);
      sonde_metric *s;
      assert_int_equal(sonde__metrics_get(m, SONDE_METRIC_GAUGE, names[i], "h", labels, &s), 0);
      sonde__metric_add(s, 1);
    }
  char *t = render(m);
  check_exposition(t);
  free(t);
  sonde__metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exposition_format), cmocka_unit_test(test_label_escaping),
      cmocka_unit_test(test_help_escaping),     cmocka_unit_test(test_values),
      cmocka_unit_test(test_kind_conflict),     cmocka_unit_test(test_many_families_contiguous),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

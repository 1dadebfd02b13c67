/* Unit tests for the service (core/src/service.c): configurations as YAML strings, real plug-ins
 * from $SONDE_PLUGIN_DIR (testgen, batch, debug, file) and the recording plug-ins of
 * tests/plugins/recorder ($SONDE_BUILD_DIR/tests/recplugins). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../plugins/recorder/recorder.h"
#include "cfg.h"
#include "loader.h"
#include "log.h"
#include "service.h"
#include "telemetry.h"

static sonde__registry g_reg;
static const rec_api *R;
static void *g_rec_dl;
static char g_recdir[PATH_MAX - 64];

static int setup(void **state) {
  const char *pd = getenv("SONDE_PLUGIN_DIR"), *bd = getenv("SONDE_BUILD_DIR");
  if (!pd || !bd) {
    fprintf(stderr, "SONDE_PLUGIN_DIR / SONDE_BUILD_DIR not set (run through ctest)\n");
    return -1;
  }
  snprintf(g_recdir, sizeof g_recdir, "%s/tests/recplugins", bd);
  if (sonde__registry_add_dir(&g_reg, pd) || sonde__registry_add_dir(&g_reg, g_recdir))
    return -1;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/recorder.so", g_recdir);
  g_rec_dl = dlopen(path, RTLD_NOW | RTLD_NOLOAD); /* the registry's copy */
  if (!g_rec_dl) {
    fprintf(stderr, "%s not loaded: build recplugin_recorder\n", path);
    return -1;
  }
  R = dlsym(g_rec_dl, "rec_api_v");
  static const char *const need[][2] = {
      {"receiver", "testgen"}, {"processor", "batch"}, {"exporter", "debug"}, {"exporter", "file"}};
  static const sonde_kind kinds[] = {SONDE_KIND_RECEIVER, SONDE_KIND_PROCESSOR,
                                     SONDE_KIND_EXPORTER, SONDE_KIND_EXPORTER};
  for (int i = 0; i < 4; i++)
    if (!sonde__registry_find(&g_reg, kinds[i], need[i][1], NULL)) {
      fprintf(stderr, "%s %s missing from %s\n", need[i][0], need[i][1], pd);
      return -1;
    }
  return R ? 0 : -1;
}

static int teardown(void **state) {
  if (g_rec_dl)
    dlclose(g_rec_dl);
  sonde__registry_free(&g_reg);
  return 0;
}

/* ---- fixture -------------------------------------------------------------------------------- */

typedef struct sfx {
  uv_loop_t loop;
  sonde__metrics *m;
  sonde__cfg_node *root;
  sonde__service *s;
  char err[4096];
  int stopped;
} sfx;

static int sfx_build(sfx *x, const char *yaml) {
  memset(x, 0, sizeof *x);
  R->reset();
  assert_int_equal(uv_loop_init(&x->loop), 0);
  assert_int_equal(sonde__metrics_new(&x->m), 0);
  int rc = sonde__cfg_parse_string("test.yaml", yaml, strlen(yaml), &x->root, x->err,
                                   sizeof x->err);
  if (rc)
    fail_msg("parse: %s", x->err);
  rc = sonde__cfg_expand(x->root, x->err, sizeof x->err);
  if (rc)
    fail_msg("expand: %s", x->err);
  return sonde__service_build(x->root, &g_reg, &x->loop, x->m, &x->s, x->err, sizeof x->err);
}

static void on_stopped(void *arg) {
  ((sfx *)arg)->stopped++;
}

static void sfx_stop(sfx *x) {
  sonde__service_stop(x->s, 2000 * 1000000LL, on_stopped, x);
  while (!x->stopped)
    uv_run(&x->loop, UV_RUN_ONCE);
  assert_int_equal(x->stopped, 1);
}

static void sfx_free(sfx *x) {
  sonde__service_free(x->s);
  sonde__cfg_free(x->root);
  uv_run(&x->loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&x->loop);
  if (rc)
    uv_print_all_handles(&x->loop, stderr);
  assert_int_equal(rc, 0);
  sonde__metrics_free(x->m);
}

/* Building yaml must fail with SONDE_ECONFIG and exactly msg. */
static void build_fails(const char *yaml, const char *msg) {
  sfx x;
  int rc = sfx_build(&x, yaml);
  if (rc != SONDE_ECONFIG)
    fail_msg("rc %s, want SONDE_ECONFIG; err: %s", sonde_err_name(rc), rc ? x.err : "");
  if (strcmp(x.err, msg) != 0)
    fail_msg("\n got: %s\nwant: %s", x.err, msg);
  x.s = NULL;
  sfx_free(&x);
}

/* The same, when part of the message depends on what plug-ins are installed. */
static void build_fails_like(const char *yaml, const char *prefix, const char *part) {
  sfx x;
  int rc = sfx_build(&x, yaml);
  assert_int_equal(rc, SONDE_ECONFIG);
  if (strncmp(x.err, prefix, strlen(prefix)) != 0 || !strstr(x.err, part))
    fail_msg("\n got: %s\nwant: %s...%s...", x.err, prefix, part);
  x.s = NULL;
  sfx_free(&x);
}

static int line_of(const char *events, const char *line) {
  int n = 0;
  size_t l = strlen(line);
  for (const char *p = events; *p; n++) {
    const char *nl = strchr(p, '\n');
    if ((size_t)(nl - p) == l && strncmp(p, line, l) == 0)
      return n;
    p = nl + 1;
  }
  return -1;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* ---- configuration errors ------------------------------------------------------------------- */

static void test_unknown_type_did_you_mean(void **state) {
  build_fails_like("receivers:\n"
                   "  testgn/a:\n"
                   "exporters:\n"
                   "  debug:\n"
                   "service:\n"
                   "  pipelines:\n"
                   "    traces:\n"
                   "      receivers: [testgn/a]\n"
                   "      exporters: [debug]\n",
                   "test.yaml:2:3: receivers::testgn/a: unknown receiver type \"testgn\" (did you "
                   "mean \"testgen\"? valid: ",
                   "testgen");
  build_fails_like("receivers:\n"
                   "  testgen:\n"
                   "exporters:\n"
                   "  zzzzzzzz:\n",
                   "test.yaml:4:3: exporters::zzzzzzzz: unknown exporter type \"zzzzzzzz\" (valid: ",
                   "debug");
}

static void test_unconfigured_id(void **state) {
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "  debug/two:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      receivers: [testgen]\n"
              "      exporters: [debug, debug/tow]\n",
              "test.yaml:10:26: service::pipelines::traces::exporters: exporter \"debug/tow\" is "
              "not configured under exporters (did you mean \"debug/two\"? valid: debug, "
              "debug/two)");
  build_fails("receivers:\n"
              "  testgen:\n"
              "processors:\n"
              "  batch:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    logs:\n"
              "      receivers: [testgen]\n"
              "      processors:\n"
              "        - batch/x\n"
              "      exporters: [debug]\n",
              "test.yaml:12:11: service::pipelines::logs::processors: processor \"batch/x\" is not "
              "configured under processors (did you mean \"batch\"? valid: batch)");
}

static void test_unsupported_signal(void **state) {
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    profiles:\n"
              "      receivers: [testgen]\n"
              "      exporters: [debug]\n",
              "test.yaml:8:19: service::pipelines::profiles::receivers: receivers::testgen does "
              "not support profiles (it supports traces, metrics, logs)");
  build_fails("receivers:\n"
              "  rec_src:\n"
              "processors:\n"
              "  rec_mut:\n"
              "exporters:\n"
              "  rec_sink:\n"
              "service:\n"
              "  pipelines:\n"
              "    metrics/m:\n"
              "      receivers: [rec_src]\n"
              "      processors: [rec_mut]\n"
              "      exporters: [rec_sink]\n",
              "test.yaml:11:20: service::pipelines::metrics/m::processors: processors::rec_mut "
              "does not support metrics (it supports traces)");
}

static void test_bad_pipeline_name(void **state) {
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    trace/x:\n"
              "      receivers: [testgen]\n"
              "      exporters: [debug]\n",
              "test.yaml:7:5: service::pipelines::trace/x: unknown signal \"trace\" (pipeline ids "
              "are signal[/name]; did you mean \"traces\"? valid: traces, metrics, logs, "
              "profiles)");
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    logs/:\n"
              "      receivers: [testgen]\n"
              "      exporters: [debug]\n",
              "test.yaml:7:5: service::pipelines::logs/: unknown signal \"logs\" (pipeline ids are "
              "signal[/name]; did you mean \"logs\"? valid: traces, metrics, logs, profiles)");
}

static void test_missing_receivers_or_exporters(void **state) {
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      exporters: [debug]\n",
              "test.yaml:7:5: service::pipelines::traces: must have at least one receiver");
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      receivers: [testgen]\n"
              "      exporters: []\n",
              "test.yaml:7:5: service::pipelines::traces: must have at least one exporter");
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n",
              "test.yaml:1:1: service: missing; it must list the pipelines");
  build_fails("receivers:\n"
              "  testgen:\n"
              "service:\n"
              "  pipelines:\n",
              "test.yaml:4:13: service::pipelines: at least one pipeline is required");
}

static void test_connector_misuse(void **state) {
  /* only as an exporter: its data goes nowhere */
  build_fails("receivers:\n"
              "  rec_src:\n"
              "connectors:\n"
              "  rec_conn:\n"
              "exporters:\n"
              "  rec_sink:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      receivers: [rec_src]\n"
              "      exporters: [rec_sink, rec_conn]\n",
              "service::pipelines: connector rec_conn must be used as an exporter in one pipeline "
              "and as a receiver in another");
  /* only as a receiver */
  build_fails("receivers:\n"
              "  rec_src:\n"
              "connectors:\n"
              "  rec_conn:\n"
              "exporters:\n"
              "  rec_sink:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      receivers: [rec_src, rec_conn]\n"
              "      exporters: [rec_sink]\n",
              "service::pipelines: connector rec_conn must be used as an exporter in one pipeline "
              "and as a receiver in another");
  /* in a processors list */
  build_fails("receivers:\n"
              "  rec_src:\n"
              "connectors:\n"
              "  rec_conn:\n"
              "exporters:\n"
              "  rec_sink:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      receivers: [rec_src]\n"
              "      processors: [rec_conn]\n"
              "      exporters: [rec_sink]\n",
              "test.yaml:11:20: service::pipelines::traces::processors: processor \"rec_conn\" is "
              "not configured under processors (valid: none)");
  /* feeding itself */
  build_fails("receivers:\n"
              "  rec_src:\n"
              "connectors:\n"
              "  rec_conn:\n"
              "exporters:\n"
              "  rec_sink:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces/a:\n"
              "      receivers: [rec_src]\n"
              "      exporters: [rec_conn]\n"
              "    traces/b:\n"
              "      receivers: [rec_conn]\n"
              "      exporters: [rec_conn, rec_sink]\n",
              "service::pipelines: the pipelines form a cycle through connectors::rec_conn");
}

static void test_unknown_keys(void **state) {
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporter:\n"
              "  debug:\n",
              "test.yaml:3:1: exporter: unknown top-level key (did you mean \"exporters\"? valid: "
              "receivers, processors, exporters, connectors, extensions, service)");
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipeline:\n"
              "    traces:\n",
              "test.yaml:6:3: service::pipeline: unknown key (did you mean \"pipelines\"? valid: "
              "extensions, pipelines, telemetry)");
  build_fails("receivers:\n"
              "  testgen:\n"
              "exporters:\n"
              "  debug:\n"
              "service:\n"
              "  pipelines:\n"
              "    traces:\n"
              "      receivers: [testgen]\n"
              "      exporter: [debug]\n",
              "test.yaml:9:7: service::pipelines::traces::exporter: unknown key (did you mean "
              "\"exporters\"? valid: receivers, processors, exporters)");
  /* an option a component does not have: the path names the component */
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  testgen:\n"
                                 "    cuont: 3\n"
                                 "exporters:\n"
                                 "  debug:\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces:\n"
                                 "      receivers: [testgen]\n"
                                 "      exporters: [debug]\n"),
                   SONDE_ECONFIG);
  if (!strstr(x.err, "test.yaml:3:5: receivers::testgen::cuont") || !strstr(x.err, "count"))
    fail_msg("got: %s", x.err);
  sfx_free(&x);
}

/* ---- graph wiring --------------------------------------------------------------------------- */

static const char *k_two_pipelines =
    "receivers:\n"
    "  rec_src:\n"
    "processors:\n"
    "  rec_pass:\n"
    "  rec_mut:\n"
    "exporters:\n"
    "  rec_sink/a:\n"
    "  rec_sink/b:\n"
    "service:\n"
    "  pipelines:\n"
    "    traces/a:\n"
    "      receivers: [rec_src]\n"
    "      processors: [rec_pass, rec_mut]\n"
    "      exporters: [rec_sink/a]\n"
    "    traces/b:\n"
    "      receivers: [rec_src]\n"
    "      processors: [rec_pass]\n"
    "      exporters: [rec_sink/b]\n";

static void test_start_and_stop_order(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, k_two_pipelines), 0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  const char *ev = R->events();
  /* everything is created before anything starts */
  int last_create = -1, first_start = 1 << 30;
  for (int i = 0, n = 0; ev[i]; i++)
    if (i == 0 || ev[i - 1] == '\n') {
      if (strncmp(ev + i, "create ", 7) == 0)
        last_create = n;
      if (strncmp(ev + i, "start ", 6) == 0 && n < first_start)
        first_start = n;
      n++;
    }
  assert_true(last_create < first_start);
  int sa = line_of(ev, "start exporters::rec_sink/a"), sb = line_of(ev, "start exporters::rec_sink/b");
  int sm = line_of(ev, "start processors::rec_mut"), sr = line_of(ev, "start receivers::rec_src");
  int sp = line_of(ev, "start processors::rec_pass");
  assert_true(sa >= 0 && sb >= 0 && sm >= 0 && sr >= 0 && sp >= 0);
  /* sinks before what feeds them: exporters, then processors (last of a chain first), then the
   * receiver */
  assert_true(sa < sm && sb < sm);
  assert_true(sm < sr && sp < sr);
  assert_true(sa < sp && sb < sp);
  assert_int_equal(count(ev, "start processors::rec_pass\n"), 2); /* one per pipeline */
  /* pass of pipeline a feeds mut: mut starts first */
  int second_pass = line_of(ev + 0, "start processors::rec_pass");
  (void)second_pass;
  R->reset();
  sfx_stop(&x);
  ev = R->events();
  int hr = line_of(ev, "shutdown receivers::rec_src"), hm = line_of(ev, "shutdown processors::rec_mut");
  int ha = line_of(ev, "shutdown exporters::rec_sink/a"), hb = line_of(ev, "shutdown exporters::rec_sink/b");
  int hp = line_of(ev, "shutdown processors::rec_pass");
  assert_true(hr >= 0 && hm >= 0 && ha >= 0 && hb >= 0 && hp >= 0);
  /* receivers stop first, exporters last */
  assert_true(hr < hp && hr < hm);
  assert_true(hp < ha && hm < ha && hp < hb && hm < hb);
  /* destroyed only once everything is shut down */
  int first_destroy = line_of(ev, "destroy receivers::rec_src");
  assert_true(first_destroy > ha && first_destroy > hb);
  assert_int_equal(count(ev, "destroy "), 6);
  sfx_free(&x);
}

static sonde_batch *one_span(const char *name) {
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_TRACES, &b), 0);
  sonde_traces *t = sonde_batch_traces(b);
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = sonde_batch_alloc(b, sizeof *rs);
  opentelemetry__proto__trace__v1__resource_spans__init(rs);
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = sonde_batch_alloc(b, sizeof *ss);
  opentelemetry__proto__trace__v1__scope_spans__init(ss);
  Opentelemetry__Proto__Trace__V1__Span *sp = sonde_batch_alloc(b, sizeof *sp);
  opentelemetry__proto__trace__v1__span__init(sp);
  sp->name = sonde_batch_strdup(b, name);
  ss->spans = sonde_batch_alloc(b, sizeof sp);
  ss->spans[0] = sp;
  ss->n_spans = 1;
  rs->scope_spans = sonde_batch_alloc(b, sizeof ss);
  rs->scope_spans[0] = ss;
  rs->n_scope_spans = 1;
  t->resource_spans = sonde_batch_alloc(b, sizeof rs);
  t->resource_spans[0] = rs;
  t->n_resource_spans = 1;
  return b;
}

static const char *span_name(sonde_batch *b) {
  return sonde_batch_traces(b)->resource_spans[0]->scope_spans[0]->spans[0]->name;
}

/* The line "data <path> <name> <ptr>" for path, or fail. */
static void seen(const char *ev, const char *path, const char *name, const void *ptr, bool same) {
  char want[256];
  snprintf(want, sizeof want, "data %s %s %p", path, name, ptr);
  if (same) {
    if (line_of(ev, want) < 0)
      fail_msg("no \"%s\" in:\n%s", want, ev);
    return;
  }
  snprintf(want, sizeof want, "data %s %s ", path, name);
  const char *p = strstr(ev, want);
  if (!p)
    fail_msg("no \"%s...\" in:\n%s", want, ev);
  char ptrs[32];
  snprintf(ptrs, sizeof ptrs, "%p\n", ptr);
  if (strncmp(p + strlen(want), ptrs, strlen(ptrs)) == 0)
    fail_msg("%s got the shared batch itself, not a copy:\n%s", path, ev);
}

static void test_fanout_mutating_gets_copy(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, k_two_pipelines), 0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  R->reset();
  sonde_batch *b = one_span("orig");
  assert_int_equal(R->emit("rec_src", b), 0);
  const char *ev = R->events();
  /* the read-only stages of both pipelines see the original batch itself */
  assert_int_equal(count(ev, "data processors::rec_pass orig "), 2);
  seen(ev, "exporters::rec_sink/b", "orig", b, true);
  /* the mutating one (behind a read-only one) works on a copy, and its change goes on */
  seen(ev, "processors::rec_mut", "orig", b, false);
  seen(ev, "exporters::rec_sink/a", "mutated", b, false);
  /* the original is untouched */
  assert_string_equal(span_name(b), "orig");
  assert_int_equal(sonde_batch_refcount(b), 1);
  sonde_batch_unref(b);
  sfx_stop(&x);
  sfx_free(&x);
}

/* Pipelines in the other order: the mutating pipeline comes last. */
static void test_fanout_mutating_last(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  rec_src:\n"
                                 "processors:\n"
                                 "  rec_mut:\n"
                                 "exporters:\n"
                                 "  rec_sink/a:\n"
                                 "  rec_sink/b:\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces/b:\n"
                                 "      receivers: [rec_src]\n"
                                 "      exporters: [rec_sink/b]\n"
                                 "    traces/a:\n"
                                 "      receivers: [rec_src]\n"
                                 "      processors: [rec_mut]\n"
                                 "      exporters: [rec_sink/a]\n"),
                   0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  R->reset();
  sonde_batch *b = one_span("orig");
  assert_int_equal(R->emit("rec_src", b), 0);
  const char *ev = R->events();
  seen(ev, "exporters::rec_sink/b", "orig", b, true);
  seen(ev, "exporters::rec_sink/a", "mutated", b, false);
  assert_string_equal(span_name(b), "orig");
  sonde_batch_unref(b);
  sfx_stop(&x);
  sfx_free(&x);
}

/* One pipeline, two exporters: a mutating exporter-side processor is not involved, but a read-only
 * chain hands the batch through without copies. */
static void test_single_pipeline_no_copy(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  rec_src:\n"
                                 "processors:\n"
                                 "  rec_pass:\n"
                                 "exporters:\n"
                                 "  rec_sink/a:\n"
                                 "  rec_sink/b:\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces:\n"
                                 "      receivers: [rec_src]\n"
                                 "      processors: [rec_pass]\n"
                                 "      exporters: [rec_sink/a, rec_sink/b]\n"),
                   0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  R->reset();
  sonde_batch *b = one_span("s");
  assert_int_equal(R->emit("rec_src", b), 0);
  const char *ev = R->events();
  seen(ev, "processors::rec_pass", "s", b, true);
  seen(ev, "exporters::rec_sink/a", "s", b, true);
  seen(ev, "exporters::rec_sink/b", "s", b, true);
  sonde_batch_unref(b);
  sfx_stop(&x);
  sfx_free(&x);
}

static void test_shared_receiver_one_instance(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  rec_src:\n"
                                 "exporters:\n"
                                 "  rec_sink/a:\n"
                                 "  rec_sink/b:\n"
                                 "  rec_sink/all:\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces/a:\n"
                                 "      receivers: [rec_src]\n"
                                 "      exporters: [rec_sink/a, rec_sink/all]\n"
                                 "    traces/b:\n"
                                 "      receivers: [rec_src]\n"
                                 "      exporters: [rec_sink/b]\n"
                                 "    logs:\n"
                                 "      receivers: [rec_src]\n"
                                 "      exporters: [rec_sink/all]\n"),
                   0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  const char *ev = R->events();
  /* one receiver for both traces pipelines and the logs one; the exporter shared by two signals
   * is one instance created for both */
  assert_int_equal(count(ev, "create receivers::rec_src "), 1);
  assert_int_equal(line_of(ev, "create receivers::rec_src signals=5") >= 0, 1);
  assert_int_equal(count(ev, "create exporters::rec_sink/all "), 1);
  assert_int_equal(line_of(ev, "create exporters::rec_sink/all signals=5") >= 0, 1);
  assert_int_equal(line_of(ev, "create exporters::rec_sink/a signals=1") >= 0, 1);
  R->reset();
  sonde_batch *b = one_span("x");
  assert_int_equal(R->emit("rec_src", b), 0);
  ev = R->events();
  assert_int_equal(count(ev, "data exporters::rec_sink/a x"), 1);
  assert_int_equal(count(ev, "data exporters::rec_sink/b x"), 1);
  assert_int_equal(count(ev, "data exporters::rec_sink/all x"), 1);
  sonde_batch_unref(b);
  /* a logs batch only reaches the logs pipeline */
  R->reset();
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_LOGS, &b), 0);
  assert_int_equal(R->emit("rec_src", b), 0);
  ev = R->events();
  assert_int_equal(count(ev, "data "), 1);
  assert_int_equal(count(ev, "data exporters::rec_sink/all logs"), 1);
  sonde_batch_unref(b);
  /* and the receiver's metrics count both deliveries once */
  sonde_buf out = {0};
  assert_int_equal(sonde__metrics_render(x.m, &out), 0);
  sonde_buf_append(&out, "", 0);
  assert_non_null(strstr((char *)out.data, "otelcol_receiver_accepted_spans_total{receiver=\"rec_src\","
                                           "transport=\"test\"} 1\n"));
  sonde_buf_free(&out);
  sfx_stop(&x);
  sfx_free(&x);
}

static void test_connector_flow(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  rec_src:\n"
                                 "connectors:\n"
                                 "  rec_conn:\n"
                                 "exporters:\n"
                                 "  rec_sink:\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces/in:\n"
                                 "      receivers: [rec_src]\n"
                                 "      exporters: [rec_conn]\n"
                                 "    traces/out:\n"
                                 "      receivers: [rec_conn]\n"
                                 "      exporters: [rec_sink]\n"),
                   0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  const char *ev = R->events();
  assert_int_equal(count(ev, "create connectors::rec_conn "), 1);
  int ss = line_of(ev, "start exporters::rec_sink"), sc = line_of(ev, "start connectors::rec_conn"),
      sr = line_of(ev, "start receivers::rec_src");
  assert_true(ss < sc && sc < sr);
  R->reset();
  sonde_batch *b = one_span("via");
  assert_int_equal(R->emit("rec_src", b), 0);
  ev = R->events();
  assert_true(line_of(ev, "data connectors::rec_conn via 0x0") < 0);
  assert_int_equal(count(ev, "data exporters::rec_sink via"), 1);
  sonde_batch_unref(b);
  R->reset();
  sfx_stop(&x);
  ev = R->events();
  assert_true(line_of(ev, "shutdown receivers::rec_src") < line_of(ev, "shutdown connectors::rec_conn"));
  assert_true(line_of(ev, "shutdown connectors::rec_conn") < line_of(ev, "shutdown exporters::rec_sink"));
  sfx_free(&x);
}

static void test_queued_exporter_drained_before_shutdown(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  rec_src:\n"
                                 "exporters:\n"
                                 "  rec_qsink:\n"
                                 "    sending_queue:\n"
                                 "      num_consumers: 1\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces:\n"
                                 "      receivers: [rec_src]\n"
                                 "      exporters: [rec_qsink]\n"),
                   0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  R->reset();
  sonde_batch *b = one_span("q");
  assert_int_equal(R->emit("rec_src", b), 0);
  assert_int_equal(R->emit("rec_src", b), 0);
  sonde_batch_unref(b);
  sfx_stop(&x);
  const char *ev = R->events();
  assert_int_equal(count(ev, "data exporters::rec_qsink q"), 2);
  assert_true(line_of(ev, "shutdown exporters::rec_qsink") > 0);
  sonde_buf out = {0};
  assert_int_equal(sonde__metrics_render(x.m, &out), 0);
  sonde_buf_append(&out, "", 0);
  assert_non_null(strstr((char *)out.data,
                         "otelcol_exporter_sent_spans_total{exporter=\"rec_qsink\"} 2\n"));
  sonde_buf_free(&out);
  sfx_free(&x);
}

static void test_create_failure_leaves_nothing_running(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, k_two_pipelines), 0);
  R->fail_create("rec_sink/b");
  int rc = sonde__service_start(x.s, x.err, sizeof x.err);
  assert_int_equal(rc, SONDE_EIO);
  assert_string_equal(x.err, "exporters::rec_sink/b: cannot create: I/O error");
  const char *ev = R->events();
  assert_int_equal(count(ev, "start "), 0);
  int created = count(ev, "signals=");
  R->reset();
  sfx_stop(&x);
  ev = R->events();
  assert_int_equal(count(ev, "shutdown "), 0); /* nothing was started */
  assert_int_equal(count(ev, "destroy "), created);
  sfx_free(&x);
}

/* A service freed without a stop (the CLI does so when a fallback config cannot start): what was
 * started is destroyed, and timers the plug-in stops itself in destroy() are not closed twice. */
static void test_free_without_stop(void **state) {
  sfx x;
  assert_int_equal(sfx_build(&x, "receivers:\n"
                                 "  testgen:\n"
                                 "    count: 1000000\n"
                                 "    interval: 1h\n"
                                 "processors:\n"
                                 "  batch:\n"
                                 "exporters:\n"
                                 "  debug:\n"
                                 "service:\n"
                                 "  pipelines:\n"
                                 "    traces:\n"
                                 "      receivers: [testgen]\n"
                                 "      processors: [batch]\n"
                                 "      exporters: [debug]\n"),
                   0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  uv_run(&x.loop, UV_RUN_NOWAIT);
  sfx_free(&x);
}

/* The lib indices the service keeps stay right after the registry is trimmed (the CLI trims
 * right after start). */
static void test_trim_then_free_releases_libs(void **state) {
  sonde__registry reg = {0};
  assert_int_equal(sonde__registry_add_dir(&reg, getenv("SONDE_PLUGIN_DIR")), 0);
  assert_int_equal(sonde__registry_add_dir(&reg, g_recdir), 0);
  assert_true(reg.nlibs >= 2);
  sfx x;
  memset(&x, 0, sizeof x);
  R->reset();
  uv_loop_init(&x.loop);
  sonde__metrics_new(&x.m);
  const char *yaml = "receivers:\n"
                     "  rec_src:\n"
                     "exporters:\n"
                     "  rec_sink:\n"
                     "service:\n"
                     "  pipelines:\n"
                     "    traces:\n"
                     "      receivers: [rec_src]\n"
                     "      exporters: [rec_sink]\n";
  assert_int_equal(sonde__cfg_parse_string("t.yaml", yaml, strlen(yaml), &x.root, x.err,
                                           sizeof x.err), 0);
  assert_int_equal(sonde__service_build(x.root, &reg, &x.loop, x.m, &x.s, x.err, sizeof x.err), 0);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  sonde__registry_trim(&reg);
  assert_int_equal(reg.nlibs, 1);
  assert_int_equal(reg.libs[0].used, 2);
  sonde_batch *b = one_span("t");
  assert_int_equal(R->emit("rec_src", b), 0);
  sonde_batch_unref(b);
  sfx_stop(&x);
  sonde__service_free(x.s);
  x.s = NULL;
  assert_int_equal(reg.libs[0].used, 0);
  sonde__cfg_free(x.root);
  x.root = NULL;
  uv_run(&x.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&x.loop), 0);
  sonde__metrics_free(x.m);
  sonde__registry_free(&reg);
}

/* Real stages end to end: testgen -> batch -> file, drained on stop. */
static void test_real_plugins_pipeline(void **state) {
  char dir[] = "/tmp/sonde-svc-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char yaml[2048], path[PATH_MAX];
  snprintf(path, sizeof path, "%s/out.json", dir);
  snprintf(yaml, sizeof yaml,
           "receivers:\n"
           "  testgen:\n"
           "    count: 20\n"
           "    per_batch: 5\n"
           "    interval: 1ms\n"
           "processors:\n"
           "  batch:\n"
           "    timeout: 10ms\n"
           "exporters:\n"
           "  file:\n"
           "    path: ${env:SONDE_TEST_OUT}\n"
           "  debug:\n"
           "service:\n"
           "  telemetry:\n"
           "    logs:\n"
           "      level: error\n"
           "  pipelines:\n"
           "    traces:\n"
           "      receivers: [testgen]\n"
           "      processors: [batch]\n"
           "      exporters: [file, debug]\n");
  setenv("SONDE_TEST_OUT", path, 1);
  sfx x;
  int rc = sfx_build(&x, yaml);
  if (rc)
    fail_msg("%s", x.err);
  assert_int_equal(sonde__service_telemetry(x.s)->logs.level, SONDE_LOG_ERROR);
  assert_int_equal(sonde__service_start(x.s, x.err, sizeof x.err), 0);
  /* run until testgen has handed over its 20 spans (each pass waits at most for a 1 ms tick) */
  bool done = false;
  for (int i = 0; i < 5000 && !done; i++) {
    uv_run(&x.loop, UV_RUN_ONCE);
    sonde_buf out = {0};
    sonde__metrics_render(x.m, &out);
    sonde_buf_append(&out, "", 0);
    done = strstr((char *)out.data, "otelcol_receiver_accepted_spans_total{receiver=\"testgen\","
                                         "transport=\"internal\"} 20\n") != NULL;
    sonde_buf_free(&out);
  }
  assert_true(done);
  sfx_stop(&x);
  sfx_free(&x);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char *text = calloc(1, 1 << 20);
  size_t n = fread(text, 1, (1 << 20) - 1, f);
  fclose(f);
  assert_true(n > 0);
  assert_int_equal(count(text, "\"spanId\""), 20);
  for (int i = 0; i < 20; i++) {
    char name[32];
    snprintf(name, sizeof name, "\"span-%d\"", i);
    if (!strstr(text, name))
      fail_msg("%s missing from %s", name, path);
  }
  free(text);
  unlink(path);
  rmdir(dir);
  unsetenv("SONDE_TEST_OUT");
}

int main(void) {
  if (!getenv("SONDE_TEST_VERBOSE"))
    sonde__log_set_level(SONDE_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unknown_type_did_you_mean),
      cmocka_unit_test(test_unconfigured_id),
      cmocka_unit_test(test_unsupported_signal),
      cmocka_unit_test(test_bad_pipeline_name),
      cmocka_unit_test(test_missing_receivers_or_exporters),
      cmocka_unit_test(test_connector_misuse),
      cmocka_unit_test(test_unknown_keys),
      cmocka_unit_test(test_start_and_stop_order),
      cmocka_unit_test(test_fanout_mutating_gets_copy),
      cmocka_unit_test(test_fanout_mutating_last),
      cmocka_unit_test(test_single_pipeline_no_copy),
      cmocka_unit_test(test_shared_receiver_one_instance),
      cmocka_unit_test(test_connector_flow),
      cmocka_unit_test(test_queued_exporter_drained_before_shutdown),
      cmocka_unit_test(test_create_failure_leaves_nothing_running),
      cmocka_unit_test(test_free_without_stop),
      cmocka_unit_test(test_trim_then_free_releases_libs),
      cmocka_unit_test(test_real_plugins_pipeline),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

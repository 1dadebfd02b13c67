/* The whole lifecycle — parse, load plug-ins, build, create, start, run, drain, destroy — with the
 * Nth allocation of the core failing, for every N until a run sees no failure: no crash, a clean
 * error, and (checked by heap accounting here, by LeakSanitizer under make check) no leak. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "cfg.h"
#include "loader.h"
#include "log.h"
#include "service.h"
#include "telemetry.h"

/* Linked with -Wl,--wrap: only the core's own calls (this executable's objects) are affected. */
static long g_fail_at = -1, g_count;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void __real_free(void *p);

/* Every live block the core allocated, in an open-addressing set: what is still here after a
 * run is the core's leak (libraries' own allocations are not counted, nor confused with ours). */
#define LIVE_CAP (1u << 20)
static void **g_live;
static size_t g_nlive;

static size_t slot(const void *p) {
  return ((uintptr_t)p >> 4) * 2654435761u & (LIVE_CAP - 1);
}
static void live_add(void *p) {
  if (!p || !g_live) return;
  size_t i = slot(p);
  while (g_live[i] && g_live[i] != (void *)1)
    i = (i + 1) & (LIVE_CAP - 1);
  g_live[i] = p;
  g_nlive++;
}
static void live_del(void *p) {
  if (!p || !g_live) return;
  for (size_t i = slot(p); g_live[i]; i = (i + 1) & (LIVE_CAP - 1)) {
    if (g_live[i] == p) {
      g_live[i] = (void *)1; /* tombstone */
      g_nlive--;
      return;
    }
  }
}

/* A breakpoint here (gdb: break injected_failure) shows which allocation failed. */
__attribute__((noinline)) void injected_failure(long n);
__attribute__((noinline)) void injected_failure(long n) {
  __asm__ volatile("" ::"r"(n));
}

static bool fail_now(void) {
  if (++g_count != g_fail_at) return false;
  injected_failure(g_count);
  return true;
}
void *__wrap_malloc(size_t n) {
  void *p = fail_now() ? NULL : __real_malloc(n);
  live_add(p);
  return p;
}
void *__wrap_calloc(size_t n, size_t m) {
  void *p = fail_now() ? NULL : __real_calloc(n, m);
  live_add(p);
  return p;
}
void *__wrap_realloc(void *p, size_t n) {
  if (fail_now()) return NULL;
  void *q = __real_realloc(p, n);
  if (q) {
    live_del(p);
    live_add(q);
  }
  return q;
}
char *__wrap_strdup(const char *s) {
  char *p = fail_now() ? NULL : __real_strdup(s);
  live_add(p);
  return p;
}
void __wrap_free(void *p) {
  live_del(p);
  __real_free(p);
}

static char g_out[512];

static const char *config_text(void) {
  static char buf[2048];
  snprintf(buf, sizeof buf,
           "receivers:\n"
           "  testgen:\n"
           "    count: 30\n"
           "    per_batch: 10\n"
           "    interval: 1ms\n"
           "processors:\n"
           "  batch:\n"
           "    timeout: 1ms\n"
           "exporters:\n"
           "  file:\n"
           "    path: %s\n"
           "connectors:\n"
           "  forward:\n"
           "service:\n"
           "  telemetry:\n"
           "    metrics:\n"
           "      level: none\n"
           "  pipelines:\n"
           "    traces/in:\n"
           "      receivers: [testgen]\n"
           "      processors: [batch]\n"
           "      exporters: [forward]\n"
           "    traces/out:\n"
           "      receivers: [forward]\n"
           "      exporters: [file]\n",
           g_out);
  return buf;
}

static void stop_loop(uv_timer_t *t) {
  uv_stop(t->data);
}

static void on_stopped(void *arg) {
  *(bool *)arg = true;
}

/* One lifecycle; returns 0 when it ran to the end without an allocation failure. */
static int run_once(void) {
  char err[2048];
  uv_loop_t loop;
  if (uv_loop_init(&loop)) return -1;
  sonde__metrics *metrics = NULL;
  sonde__cfg_node *root = NULL;
  sonde__registry reg = {0};
  sonde__service *svc = NULL;
  int rc = sonde__metrics_new(&metrics);
  if (!rc) {
    const char *t = config_text();
    rc = sonde__cfg_parse_string("mem.yaml", t, strlen(t), &root, err, sizeof err);
  }
  if (!rc) rc = sonde__cfg_expand(root, err, sizeof err);
  if (!rc) {
    const char *dir = getenv("SONDE_PLUGIN_DIR");
    rc = sonde__registry_add_dir(&reg, dir);
    if (!rc && reg.nlibs < 4)
      rc = SONDE_ENOMEM; /* a plug-in failed to register: an allocation failed in the loader */
  }
  if (!rc) rc = sonde__service_build(root, &reg, &loop, metrics, &svc, err, sizeof err);
  if (!rc) {
    rc = sonde__service_start(svc, err, sizeof err);
    /* let the test receiver produce for a while, then drain as SIGTERM would */
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &loop;
    uv_timer_start(&t, stop_loop, rc ? 0 : 60, 0);
    if (!rc) uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    bool stopped = false;
    sonde__service_stop(svc, 2000000000LL, on_stopped, &stopped);
    while (!stopped)
      uv_run(&loop, UV_RUN_ONCE);
  }
  sonde__service_free(svc);
  uv_run(&loop, UV_RUN_DEFAULT); /* closes what free handed to the loop */
  sonde__registry_free(&reg);
  sonde__cfg_free(root);
  sonde__metrics_free(metrics);
  int crc = uv_loop_close(&loop);
  assert_int_equal(crc, 0); /* every handle closed, on every error path */
  return rc;
}

static void test_every_allocation_failure(void **state) {
  snprintf(g_out, sizeof g_out, "%s/lifecycle_alloc_%d.json",
           getenv("SONDE_BUILD_DIR") ? getenv("SONDE_BUILD_DIR") : "/tmp", (int)getpid());
  sonde__log_set_level(SONDE_LOG_ERROR + 1); /* thousands of expected error lines: keep quiet */
  g_live = __real_calloc(LIVE_CAP, sizeof *g_live);
  assert_non_null(g_live);
  g_fail_at = -1;
  g_count = 0;
  assert_int_equal(run_once(), 0);
  long total = g_count;
  assert_true(total > 100);
  if (g_nlive) fail_msg("a run without failures leaked %zu blocks", g_nlive);
  long failures = 0;
  for (long n = 1; n <= total + 1; n++) {
    g_fail_at = n;
    g_count = 0;
    int rc = run_once();
    if (g_count < n) { /* the Nth allocation never happened: nothing left to fail */
      assert_int_equal(rc, 0);
      break;
    }
    failures++;
    if (g_nlive)
      fail_msg("allocation %ld failing leaked %zu blocks (gdb: break injected_failure)", n,
               g_nlive);
  }
  print_message("failed each of %ld allocations in turn (one run allocates %ld)\n", failures,
                total);
  assert_true(failures >= total - 5);
  remove(g_out);
  __real_free(g_live);
  g_live = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_allocation_failure)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the exporter sending queue (core/src/queue.c), driven with a fake queued exporter
 * whose send() follows a script: succeed now or later, ask for a retry, fail for good, or hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "queue.h"
#include "telemetry.h"

typedef Opentelemetry__Proto__Trace__V1__ResourceSpans ResourceSpans;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans ScopeSpans;
typedef Opentelemetry__Proto__Trace__V1__Span Span;

/* A traces batch of n spans. */
static sonde_batch *spans(size_t n) {
  sonde_batch *b;
  assert_int_equal(sonde_batch_new(SONDE_SIGNAL_TRACES, &b), 0);
  sonde_traces *t = sonde_batch_traces(b);
  ResourceSpans *rs = sonde_batch_alloc(b, sizeof *rs);
  opentelemetry__proto__trace__v1__resource_spans__init(rs);
  ScopeSpans *ss = sonde_batch_alloc(b, sizeof *ss);
  opentelemetry__proto__trace__v1__scope_spans__init(ss);
  ss->spans = sonde_batch_alloc(b, (n + 1) * sizeof(Span *));
  for (size_t k = 0; k < n; k++) {
    Span *sp = sonde_batch_alloc(b, sizeof *sp);
    opentelemetry__proto__trace__v1__span__init(sp);
    sp->name = sonde_batch_strdup(b, "op");
    ss->spans[k] = sp;
  }
  ss->n_spans = n;
  rs->scope_spans = sonde_batch_alloc(b, sizeof(ScopeSpans *));
  rs->scope_spans[0] = ss;
  rs->n_scope_spans = 1;
  t->resource_spans = sonde_batch_alloc(b, sizeof(ResourceSpans *));
  t->resource_spans[0] = rs;
  t->n_resource_spans = 1;
  assert_int_equal(sonde_batch_items(b), n);
  return b;
}

/* ---- the fake exporter ---------------------------------------------------------------------- */

enum act {
  A_OK_SYNC,      /* cb(0) before send returns */
  A_RETRY_SYNC,   /* cb(SONDE_ERETRY) before send returns */
  A_OK_ASYNC,     /* cb(0) after delay ms */
  A_RETRY_ASYNC,  /* cb(SONDE_ERETRY, retry_after) after delay ms */
  A_PERM_ASYNC,   /* cb(SONDE_EPERMANENT) after delay ms */
  A_HANG,         /* keep cb until fake_release() */
  A_RET_ERR,      /* return SONDE_EIO without calling cb */
  A_RET_PERM,     /* return SONDE_EPERMANENT without calling cb */
};

#define MAXCALLS 512

typedef struct fake fake;

typedef struct later {
  uv_timer_t t;
  fake *f;
  sonde_send_cb cb;
  void *arg;
  int status;
  int64_t retry_after;
  sonde_batch *b;
  struct later *next;
} later;

struct fake {
  uv_loop_t *loop;
  enum act script[MAXCALLS];
  int nscript; /* the last action repeats */
  int delay_ms;
  int64_t retry_after_ns;
  int calls;
  uint64_t at[MAXCALLS]; /* uv_now of each call */
  int inflight, max_inflight;
  int depth, max_depth; /* nesting of send() calls */
  later *hung;
  int nhung;
};

static void later_closed(uv_handle_t *h) {
  later *l = h->data;
  sonde_batch_unref(l->b);
  free(l);
}

static void later_fire(uv_timer_t *t) {
  later *l = t->data;
  l->f->inflight--;
  l->cb(l->arg, l->status, l->retry_after);
  uv_close((uv_handle_t *)t, later_closed);
}

static later *later_new(fake *f, sonde_batch *b, sonde_send_cb cb, void *arg) {
  later *l = calloc(1, sizeof *l);
  l->f = f;
  l->cb = cb;
  l->arg = arg;
  l->b = sonde_batch_ref(b); /* b is borrowed: keep a reference while the send is pending */
  uv_timer_init(f->loop, &l->t);
  l->t.data = l;
  return l;
}

static int fake_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  fake *f = inst;
  int i = f->calls++;
  enum act a = f->script[i < f->nscript ? i : f->nscript - 1];
  if (i < MAXCALLS)
    f->at[i] = uv_now(f->loop);
  f->depth++;
  if (f->depth > f->max_depth)
    f->max_depth = f->depth;
  int rc = 0;
  switch (a) {
  case A_OK_SYNC:
  case A_RETRY_SYNC:
    f->inflight++;
    if (f->inflight > f->max_inflight)
      f->max_inflight = f->inflight;
    f->inflight--;
    cb(arg, a == A_OK_SYNC ? 0 : SONDE_ERETRY, 0);
    break;
  case A_OK_ASYNC:
  case A_RETRY_ASYNC:
  case A_PERM_ASYNC:
  case A_HANG: {
    f->inflight++;
    if (f->inflight > f->max_inflight)
      f->max_inflight = f->inflight;
    later *l = later_new(f, b, cb, arg);
    l->status = a == A_OK_ASYNC ? 0 : a == A_RETRY_ASYNC ? SONDE_ERETRY : SONDE_EPERMANENT;
    l->retry_after = a == A_RETRY_ASYNC ? f->retry_after_ns : 0;
    if (a == A_HANG) {
      l->next = f->hung;
      f->hung = l;
      f->nhung++;
    } else {
      uv_timer_start(&l->t, later_fire, (uint64_t)f->delay_ms, 0);
    }
    break;
  }
  case A_RET_ERR:
    rc = SONDE_EIO;
    break;
  case A_RET_PERM:
    rc = SONDE_EPERMANENT;
    break;
  }
  f->depth--;
  return rc;
}

/* Calls back every hung send now, with status (late callbacks). */
static void fake_release(fake *f, int status) {
  later *list = f->hung; /* only those hung now, not the ones their callbacks start */
  f->hung = NULL;
  while (list) {
    later *l = list;
    list = l->next;
    f->nhung--;
    l->status = status;
    later_fire(&l->t);
  }
}

static int noop_create(const sonde_host *h, const void *cfg, uint32_t sig, void **inst) {
  return 0;
}
static void noop_shutdown(void *inst, void (*done)(void *), void *arg) {
  done(arg);
}
static void noop_destroy(void *inst) {
}

static const sonde_component fake_comp = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "fake",
    .signals = SONDE_SIGNAL_ALL,
    .flags = SONDE_COMP_QUEUED,
    .create = noop_create,
    .send = fake_send,
    .shutdown = noop_shutdown,
    .destroy = noop_destroy,
};

/* ---- fixture -------------------------------------------------------------------------------- */

typedef struct fx {
  uv_loop_t loop;
  sonde__metrics *reg;
  sonde__queue_metrics m;
  sonde__qcfg cfg;
  fake f;
  sonde__queue *q;
  int drained;
  bool free_in_done;
} fx;

static fx *fx_new(void) {
  fx *x = calloc(1, sizeof *x);
  assert_int_equal(uv_loop_init(&x->loop), 0);
  assert_int_equal(sonde__metrics_new(&x->reg), 0);
  const char *l = "exporter=fake";
  sonde__metrics_get(x->reg, SONDE_METRIC_COUNTER, "otelcol_exporter_sent_spans", "", l, &x->m.sent);
  sonde__metrics_get(x->reg, SONDE_METRIC_COUNTER, "otelcol_exporter_send_failed_spans", "", l,
                     &x->m.send_failed);
  sonde__metrics_get(x->reg, SONDE_METRIC_COUNTER, "otelcol_exporter_enqueue_failed_spans", "", l,
                     &x->m.enqueue_failed);
  sonde__metrics_get(x->reg, SONDE_METRIC_GAUGE, "otelcol_exporter_queue_size", "", l, &x->m.size);
  sonde__metrics_get(x->reg, SONDE_METRIC_GAUGE, "otelcol_exporter_queue_capacity", "", l,
                     &x->m.capacity);
  /* defaults as in the option table, but in milliseconds and without jitter */
  x->cfg.timeout = 0;
  x->cfg.sending_queue.enabled = true;
  x->cfg.sending_queue.num_consumers = 1;
  x->cfg.sending_queue.queue_size = 100;
  x->cfg.retry.enabled = true;
  x->cfg.retry.initial_interval = 10 * 1000000LL;
  x->cfg.retry.randomization_factor = 0;
  x->cfg.retry.multiplier = 2;
  x->cfg.retry.max_interval = 1000 * 1000000LL;
  x->cfg.retry.max_elapsed_time = 0;
  x->f.loop = &x->loop;
  x->f.script[0] = A_OK_SYNC;
  x->f.nscript = 1;
  x->f.delay_ms = 5;
  return x;
}

static void fx_queue(fx *x) {
  sonde__queue_target t = {&fake_comp, &x->f, "exporters::fake"};
  assert_int_equal(sonde__queue_new(&x->loop, &x->cfg, t, SONDE_SIGNAL_TRACES, x->m, &x->q), 0);
}

static void script(fx *x, int n, ...) {
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++)
    x->f.script[i] = va_arg(ap, enum act);
  va_end(ap);
  x->f.nscript = n;
}

static void on_drained(void *arg) {
  fx *x = arg;
  x->drained++;
  if (x->free_in_done) {
    sonde__queue_free(x->q);
    x->q = NULL;
  }
}

static double val(sonde_metric *m) {
  return sonde__metric_value(m);
}

static void push(fx *x, size_t items, int want) {
  sonde_batch *b = spans(items);
  assert_int_equal(sonde__queue_push(x->q, b), want);
  sonde_batch_unref(b); /* the queue took its own reference when it accepted */
}

/* Runs the loop until cond or 2 s. */
#define RUN_UNTIL(x, cond)                                                                         \
  do {                                                                                             \
    uint64_t t0_ = uv_now(&(x)->loop);                                                             \
    while (!(cond) && uv_now(&(x)->loop) - t0_ < 2000) {                                           \
      uv_run(&(x)->loop, UV_RUN_ONCE);                                                             \
      uv_update_time(&(x)->loop);                                                                  \
    }                                                                                              \
  } while (0)

static void fx_free(fx *x) {
  if (x->q)
    sonde__queue_free(x->q); /* aborts: what still hangs answers late below */
  while (x->f.hung)
    fake_release(&x->f, 0);
  uv_run(&x->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&x->loop), 0);
  sonde__metrics_free(x->reg);
  free(x);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_num_consumers_bound(void **state) {
  fx *x = fx_new();
  x->cfg.sending_queue.num_consumers = 3;
  script(x, 1, A_OK_ASYNC);
  x->f.delay_ms = 10;
  fx_queue(x);
  assert_int_equal(val(x->m.capacity), 100);
  for (int i = 0; i < 10; i++)
    push(x, 2, 0);
  assert_int_equal(x->f.calls, 3); /* three in flight, the rest waits */
  assert_int_equal(sonde__queue_len(x->q), 7);
  assert_int_equal(val(x->m.size), 7);
  RUN_UNTIL(x, val(x->m.sent) == 20);
  assert_int_equal(val(x->m.sent), 20);
  assert_int_equal(x->f.calls, 10);
  assert_int_equal(x->f.max_inflight, 3);
  assert_int_equal(val(x->m.size), 0);
  assert_int_equal(val(x->m.send_failed), 0);
  fx_free(x);
}

static void test_full_queue_refuses(void **state) {
  fx *x = fx_new();
  x->cfg.sending_queue.queue_size = 2;
  script(x, 1, A_HANG);
  fx_queue(x);
  push(x, 3, 0); /* in flight */
  push(x, 3, 0); /* queued */
  push(x, 3, 0); /* queued */
  push(x, 3, SONDE_EFULL);
  push(x, 5, SONDE_EFULL);
  assert_int_equal(val(x->m.enqueue_failed), 8);
  assert_int_equal(val(x->m.size), 2);
  assert_int_equal(x->f.calls, 1);
  /* once the hung send completes, room comes back */
  fake_release(&x->f, 0);
  assert_int_equal(x->f.calls, 2);
  push(x, 3, 0);
  assert_int_equal(val(x->m.enqueue_failed), 8);
  fx_free(x);
}

static void test_full_queue_items_sizer(void **state) {
  fx *x = fx_new();
  x->cfg.sending_queue.queue_size = 25;
  x->cfg.sending_queue.sizer = 1; /* items */
  script(x, 1, A_HANG);
  fx_queue(x);
  push(x, 10, 0); /* in flight */
  push(x, 10, 0);
  push(x, 10, 0);
  push(x, 10, SONDE_EFULL); /* 30 > 25 */
  push(x, 5, 0);            /* 25 fits exactly */
  assert_int_equal(val(x->m.size), 25);
  assert_int_equal(val(x->m.enqueue_failed), 10);
  fx_free(x);
}

static void test_queue_disabled_holds_only_inflight(void **state) {
  fx *x = fx_new();
  x->cfg.sending_queue.enabled = false;
  x->cfg.sending_queue.num_consumers = 2;
  script(x, 1, A_HANG);
  fx_queue(x);
  push(x, 1, 0);
  push(x, 1, 0);
  push(x, 1, SONDE_EFULL);
  assert_int_equal(x->f.calls, 2);
  assert_int_equal(val(x->m.enqueue_failed), 1);
  fx_free(x);
}

static void test_retry_backoff_then_success(void **state) {
  fx *x = fx_new();
  script(x, 3, A_RETRY_ASYNC, A_RETRY_ASYNC, A_OK_ASYNC);
  x->f.delay_ms = 1;
  fx_queue(x);
  push(x, 4, 0);
  RUN_UNTIL(x, val(x->m.sent) > 0);
  assert_int_equal(x->f.calls, 3);
  assert_int_equal(val(x->m.sent), 4); /* counted once, not per attempt */
  assert_int_equal(val(x->m.send_failed), 0);
  /* exponential: ~10 ms, then ~20 ms (after the 1 ms the fake takes to answer) */
  uint64_t d1 = x->f.at[1] - x->f.at[0], d2 = x->f.at[2] - x->f.at[1];
  assert_true(d1 >= 10 && d1 < 200);
  assert_true(d2 >= 20 && d2 < 300);
  assert_true(d2 > d1);
  fx_free(x);
}

static void test_retry_after_honoured(void **state) {
  fx *x = fx_new();
  x->cfg.retry.initial_interval = 5000 * 1000000LL; /* our own backoff would wait 5 s */
  script(x, 2, A_RETRY_ASYNC, A_OK_ASYNC);
  x->f.delay_ms = 1;
  x->f.retry_after_ns = 40 * 1000000LL;
  fx_queue(x);
  push(x, 1, 0);
  RUN_UNTIL(x, val(x->m.sent) > 0);
  assert_int_equal(val(x->m.sent), 1);
  assert_int_equal(x->f.calls, 2);
  uint64_t d = x->f.at[1] - x->f.at[0];
  assert_true(d >= 40 && d < 1000);
  fx_free(x);
}

static void test_permanent_dropped(void **state) {
  fx *x = fx_new();
  script(x, 2, A_PERM_ASYNC, A_RET_PERM);
  fx_queue(x);
  push(x, 7, 0);
  RUN_UNTIL(x, val(x->m.send_failed) == 7);
  assert_int_equal(val(x->m.send_failed), 7);
  push(x, 2, 0); /* a send that returns SONDE_EPERMANENT is not retried either */
  assert_int_equal(val(x->m.send_failed), 9);
  uv_run(&x->loop, UV_RUN_NOWAIT);
  assert_int_equal(x->f.calls, 2);
  assert_int_equal(val(x->m.sent), 0);
  fx_free(x);
}

static void test_send_returning_error_is_retried(void **state) {
  fx *x = fx_new();
  script(x, 2, A_RET_ERR, A_OK_ASYNC);
  fx_queue(x);
  push(x, 3, 0);
  RUN_UNTIL(x, val(x->m.sent) > 0);
  assert_int_equal(x->f.calls, 2);
  assert_int_equal(val(x->m.sent), 3);
  fx_free(x);
}

static void test_max_elapsed_gives_up(void **state) {
  fx *x = fx_new();
  x->cfg.retry.initial_interval = 20 * 1000000LL;
  x->cfg.retry.multiplier = 1;
  x->cfg.retry.max_elapsed_time = 70 * 1000000LL;
  script(x, 1, A_RETRY_ASYNC);
  x->f.delay_ms = 1;
  fx_queue(x);
  push(x, 5, 0);
  RUN_UNTIL(x, val(x->m.send_failed) > 0);
  assert_int_equal(val(x->m.send_failed), 5);
  assert_int_equal(val(x->m.sent), 0);
  assert_true(x->f.calls >= 2 && x->f.calls <= 4);
  int calls = x->f.calls;
  uv_run(&x->loop, UV_RUN_NOWAIT);
  assert_int_equal(x->f.calls, calls); /* given up: no more attempts */
  assert_int_equal(val(x->m.size), 0);
  fx_free(x);
}

static void test_retry_disabled_fails_at_once(void **state) {
  fx *x = fx_new();
  x->cfg.retry.enabled = false;
  script(x, 1, A_RETRY_SYNC);
  fx_queue(x);
  push(x, 2, 0);
  assert_int_equal(val(x->m.send_failed), 2);
  assert_int_equal(x->f.calls, 1);
  fx_free(x);
}

static void test_timeout_retries_and_ignores_late_callback(void **state) {
  fx *x = fx_new();
  x->cfg.timeout = 30 * 1000000LL;
  script(x, 2, A_HANG, A_OK_ASYNC);
  fx_queue(x);
  push(x, 6, 0);
  RUN_UNTIL(x, val(x->m.sent) > 0);
  assert_int_equal(x->f.calls, 2);
  assert_true(x->f.at[1] - x->f.at[0] >= 30 + 10); /* timeout, then the first backoff */
  assert_int_equal(val(x->m.sent), 6);
  /* the hung first attempt answers now, late: success must not be counted twice */
  assert_int_equal(x->f.nhung, 1);
  fake_release(&x->f, 0);
  uv_run(&x->loop, UV_RUN_NOWAIT);
  assert_int_equal(val(x->m.sent), 6);
  assert_int_equal(val(x->m.send_failed), 0);
  assert_int_equal(x->f.calls, 2);
  fx_free(x);
}

static void test_timeout_counts_as_failure(void **state) {
  fx *x = fx_new();
  x->cfg.timeout = 20 * 1000000LL;
  x->cfg.retry.enabled = false;
  script(x, 1, A_HANG);
  fx_queue(x);
  push(x, 3, 0);
  push(x, 4, 0);
  RUN_UNTIL(x, val(x->m.send_failed) == 7);
  assert_int_equal(val(x->m.send_failed), 7);
  assert_int_equal(x->f.calls, 2); /* the consumer was freed for the next item */
  /* late answers, in any order, with any status: ignored */
  fake_release(&x->f, SONDE_ERETRY);
  uv_run(&x->loop, UV_RUN_NOWAIT);
  assert_int_equal(x->f.calls, 2);
  assert_int_equal(val(x->m.sent), 0);
  assert_int_equal(val(x->m.send_failed), 7);
  fx_free(x);
}

static void test_drain_waits_for_inflight(void **state) {
  fx *x = fx_new();
  script(x, 1, A_OK_ASYNC);
  x->f.delay_ms = 10;
  fx_queue(x);
  push(x, 1, 0);
  push(x, 1, 0);
  push(x, 1, 0);
  sonde__queue_drain(x->q, on_drained, x);
  assert_int_equal(x->drained, 0);
  push(x, 9, SONDE_ESHUTDOWN); /* draining: no new work, counted */
  assert_int_equal(val(x->m.enqueue_failed), 9);
  RUN_UNTIL(x, x->drained);
  assert_int_equal(x->drained, 1);
  assert_int_equal(val(x->m.sent), 3);
  assert_int_equal(x->f.calls, 3);
  fx_free(x);
  /* an empty queue drains at once */
  x = fx_new();
  fx_queue(x);
  sonde__queue_drain(x->q, on_drained, x);
  assert_int_equal(x->drained, 1);
  fx_free(x);
}

static void test_drain_cuts_backoff_short(void **state) {
  fx *x = fx_new();
  x->cfg.retry.initial_interval = 10000 * 1000000LL; /* 10 s */
  script(x, 2, A_RETRY_ASYNC, A_OK_ASYNC);
  x->f.delay_ms = 1;
  fx_queue(x);
  push(x, 2, 0);
  RUN_UNTIL(x, x->f.calls == 1 && x->f.inflight == 0);
  uv_run(&x->loop, UV_RUN_NOWAIT);
  sonde__queue_drain(x->q, on_drained, x);
  uint64_t t0 = uv_now(&x->loop);
  RUN_UNTIL(x, x->drained);
  assert_int_equal(x->drained, 1);
  assert_true(uv_now(&x->loop) - t0 < 1000);
  assert_int_equal(val(x->m.sent), 2);
  fx_free(x);
}

static void test_abort_drops_and_counts(void **state) {
  fx *x = fx_new();
  x->cfg.sending_queue.num_consumers = 2;
  script(x, 2, A_HANG, A_RETRY_ASYNC);
  x->f.delay_ms = 1;
  x->cfg.retry.initial_interval = 10000 * 1000000LL;
  fx_queue(x);
  push(x, 1, 0);  /* hangs */
  push(x, 10, 0); /* asks for a retry, then waits 10 s */
  push(x, 100, 0);
  push(x, 1000, 0);
  RUN_UNTIL(x, x->f.calls == 2 && x->f.inflight == 1);
  uv_run(&x->loop, UV_RUN_NOWAIT);
  sonde__queue_drain(x->q, on_drained, x);
  assert_int_equal(x->drained, 0);
  sonde__queue_abort(x->q);
  assert_int_equal(x->drained, 1); /* the drain is over */
  assert_int_equal(val(x->m.send_failed), 1111);
  assert_int_equal(val(x->m.sent), 0);
  assert_int_equal(val(x->m.size), 0);
  assert_int_equal(sonde__queue_len(x->q), 0);
  /* the hung send comes back after the abort: ignored, freed */
  fake_release(&x->f, 0);
  assert_int_equal(val(x->m.sent), 0);
  sonde__queue_free(x->q);
  x->q = NULL;
  uv_run(&x->loop, UV_RUN_DEFAULT);
  assert_int_equal(x->f.calls, 2);
  fx_free(x);
}

static void test_free_with_late_callback_pending(void **state) {
  fx *x = fx_new();
  script(x, 1, A_HANG);
  fx_queue(x);
  push(x, 1, 0);
  push(x, 2, 0);
  sonde__queue_free(x->q); /* aborts what is left */
  x->q = NULL;
  assert_int_equal(val(x->m.send_failed), 3);
  fake_release(&x->f, 0); /* the exporter answers after the queue is gone */
  fx_free(x);
}

static void test_sync_completion(void **state) {
  fx *x = fx_new();
  script(x, 1, A_OK_SYNC);
  fx_queue(x);
  for (int i = 0; i < 200; i++)
    push(x, 1, 0);
  assert_int_equal(val(x->m.sent), 200);
  assert_int_equal(x->f.calls, 200);
  assert_int_equal(x->f.max_depth, 1);
  assert_int_equal(val(x->m.size), 0);
  fx_free(x);
}

/* A completion that frees a consumer while many items wait: they are sent in a loop, never from
 * inside another send(). */
static void test_sync_completion_after_async_no_recursion(void **state) {
  fx *x = fx_new();
  script(x, 2, A_HANG, A_OK_SYNC);
  x->cfg.sending_queue.queue_size = 1000;
  fx_queue(x);
  for (int i = 0; i < 300; i++)
    push(x, 1, 0);
  assert_int_equal(x->f.calls, 1);
  fake_release(&x->f, 0);
  assert_int_equal(val(x->m.sent), 300);
  assert_int_equal(x->f.calls, 300);
  assert_int_equal(x->f.max_depth, 1);
  fx_free(x);
}

/* A synchronous retry answer, then a synchronous success from the backoff timer, with more items
 * waiting: the next send must not start inside the previous send() call. */
static void test_sync_retry_then_sync_success(void **state) {
  fx *x = fx_new();
  x->cfg.retry.initial_interval = 2 * 1000000LL;
  script(x, 2, A_RETRY_SYNC, A_OK_SYNC);
  fx_queue(x);
  push(x, 1, 0);
  push(x, 1, 0);
  push(x, 1, 0);
  assert_int_equal(x->f.calls, 1);
  RUN_UNTIL(x, val(x->m.sent) == 3);
  assert_int_equal(val(x->m.sent), 3);
  assert_int_equal(x->f.calls, 4);
  assert_int_equal(x->f.max_depth, 1);
  fx_free(x);
}

/* The drain's done callback frees the queue. When the last items complete synchronously inside
 * send(), the queue must not be used after done returned. */
static void test_drain_done_frees_queue_during_sync_sends(void **state) {
  fx *x = fx_new();
  script(x, 2, A_HANG, A_OK_SYNC);
  fx_queue(x);
  push(x, 1, 0);
  push(x, 1, 0);
  push(x, 1, 0);
  x->free_in_done = true;
  sonde__queue_drain(x->q, on_drained, x);
  assert_int_equal(x->drained, 0);
  fake_release(&x->f, 0); /* -> two synchronous sends -> drained -> freed */
  assert_int_equal(x->drained, 1);
  assert_null(x->q);
  assert_int_equal(val(x->m.sent), 3);
  fx_free(x);
}

/* The same with the last completion arriving from a timer and sent synchronously. */
static void test_drain_done_frees_queue_after_backoff(void **state) {
  fx *x = fx_new();
  x->cfg.retry.initial_interval = 5000 * 1000000LL;
  script(x, 2, A_RETRY_SYNC, A_OK_SYNC);
  fx_queue(x);
  push(x, 1, 0);
  x->free_in_done = true;
  sonde__queue_drain(x->q, on_drained, x); /* cuts the 5 s backoff short */
  RUN_UNTIL(x, x->drained);
  assert_int_equal(x->drained, 1);
  assert_null(x->q);
  assert_int_equal(val(x->m.sent), 1);
  fx_free(x);
}

static void test_options_table(void **state) {
  /* the options otelcol users know, where they expect them */
  const sonde_option *o = sonde__qcfg_options;
  assert_string_equal(o[0].name, "timeout");
  assert_string_equal(o[0].def, "5s");
  assert_string_equal(o[1].name, "sending_queue");
  assert_string_equal(o[2].name, "retry_on_failure");
  const char *names[] = {"enabled", "num_consumers", "queue_size"};
  for (int i = 0; i < 3; i++)
    assert_string_equal(o[1].sub[i].name, names[i]);
  assert_string_equal(o[1].sub[1].def, "10");
  assert_string_equal(o[1].sub[2].def, "1000");
  assert_string_equal(o[2].sub[1].name, "initial_interval");
  assert_string_equal(o[2].sub[1].def, "5s");
  assert_string_equal(o[2].sub[5].name, "max_elapsed_time");
  assert_string_equal(o[2].sub[5].def, "5m");
}

int main(void) {
  if (!getenv("SONDE_TEST_VERBOSE"))
    sonde__log_set_level((sonde_log_level)(SONDE_LOG_ERROR + 1)); /* quiet: drops are expected */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_num_consumers_bound),
      cmocka_unit_test(test_full_queue_refuses),
      cmocka_unit_test(test_full_queue_items_sizer),
      cmocka_unit_test(test_queue_disabled_holds_only_inflight),
      cmocka_unit_test(test_retry_backoff_then_success),
      cmocka_unit_test(test_retry_after_honoured),
      cmocka_unit_test(test_permanent_dropped),
      cmocka_unit_test(test_send_returning_error_is_retried),
      cmocka_unit_test(test_max_elapsed_gives_up),
      cmocka_unit_test(test_retry_disabled_fails_at_once),
      cmocka_unit_test(test_timeout_retries_and_ignores_late_callback),
      cmocka_unit_test(test_timeout_counts_as_failure),
      cmocka_unit_test(test_drain_waits_for_inflight),
      cmocka_unit_test(test_drain_cuts_backoff_short),
      cmocka_unit_test(test_abort_drops_and_counts),
      cmocka_unit_test(test_free_with_late_callback_pending),
      cmocka_unit_test(test_sync_completion),
      cmocka_unit_test(test_sync_completion_after_async_no_recursion),
      cmocka_unit_test(test_sync_retry_then_sync_success),
      cmocka_unit_test(test_drain_done_frees_queue_during_sync_sends),
      cmocka_unit_test(test_drain_done_frees_queue_after_backoff),
      cmocka_unit_test(test_options_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "queue.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "telemetry.h"

static const char *const sizers[] = {"requests", "items", NULL};

static const sonde_option queue_opts[] = {
    SONDE_OPT("enabled", SONDE_OPT_BOOL, sonde__qcfg, sending_queue.enabled, "true",
              "Buffer requests in memory and send them from num_consumers workers"),
    SONDE_OPT_RANGE("num_consumers", SONDE_OPT_INT, sonde__qcfg, sending_queue.num_consumers, "10",
                    1, 1000, "Sends in flight at once"),
    SONDE_OPT_RANGE("queue_size", SONDE_OPT_INT, sonde__qcfg, sending_queue.queue_size, "1000", 1,
                    1e9, "Capacity, in units of the sizer"),
    SONDE_OPT_ENUMV("sizer", sonde__qcfg, sending_queue.sizer, "requests", sizers,
                    "What queue_size counts"),
    SONDE_OPT("block_on_overflow", SONDE_OPT_BOOL, sonde__qcfg, sending_queue.block_on_overflow,
              "false",
              "Accepted for compatibility; sonde never blocks a receiver: a full queue "
              "refuses and counts"),
    SONDE_OPT_END};

static const sonde_option retry_opts[] = {
    SONDE_OPT("enabled", SONDE_OPT_BOOL, sonde__qcfg, retry.enabled, "true",
              "Retry failed sends that may succeed later"),
    SONDE_OPT_RANGE("initial_interval", SONDE_OPT_DURATION, sonde__qcfg, retry.initial_interval,
                    "5s", 1e6, 1e13, "Wait before the first retry"),
    SONDE_OPT_RANGE("randomization_factor", SONDE_OPT_DOUBLE, sonde__qcfg,
                    retry.randomization_factor, "0.5", 0, 1, "Jitter: +- this share of the wait"),
    SONDE_OPT_RANGE("multiplier", SONDE_OPT_DOUBLE, sonde__qcfg, retry.multiplier, "1.5", 1, 100,
                    "Growth of the wait per attempt"),
    SONDE_OPT_RANGE("max_interval", SONDE_OPT_DURATION, sonde__qcfg, retry.max_interval, "30s", 1e6,
                    1e13, "Longest wait between attempts"),
    SONDE_OPT("max_elapsed_time", SONDE_OPT_DURATION, sonde__qcfg, retry.max_elapsed_time, "5m",
              "Give up after this long (0: never)"),
    SONDE_OPT_END};

const sonde_option sonde__qcfg_options[] = {
    SONDE_OPT("timeout", SONDE_OPT_DURATION, sonde__qcfg, timeout, "5s",
              "Time one send may take before it counts as failed and is retried"),
    {.name = "sending_queue",
     .type = SONDE_OPT_TABLE,
     .offset = 0,
     .sub = queue_opts,
     .doc = "The in-memory sending queue"},
    {.name = "retry_on_failure",
     .type = SONDE_OPT_TABLE,
     .offset = 0,
     .sub = retry_opts,
     .doc = "Retries with exponential backoff"},
    SONDE_OPT_END};

typedef struct qitem {
  struct qitem *next;
  sonde_batch *b;
  size_t items;
  unsigned attempts;
  uint64_t first_ms;
} qitem;

typedef struct sender {
  uv_timer_t timer; /* send timeout, then backoff wait */
  sonde__queue *q;
  qitem *it;
  bool sending, abandoned;
  struct sender *next, **pprev;
} sender;

struct sonde__queue {
  uv_loop_t *loop;
  const sonde__qcfg *cfg;
  sonde__queue_target t;
  sonde_signal sig;
  sonde__queue_metrics m;
  qitem *head, *tail;
  size_t len, items, cap;
  int inflight, max_inflight;
  sender *senders;
  bool draining, pumping;
  void (*drain_done)(void *);
  void *drain_arg;
};

static size_t qsize(const sonde__queue *q) {
  return q->cfg->sending_queue.sizer == 1 ? q->items : q->len;
}

static void update_gauges(sonde__queue *q) {
  sonde__metric_set(q->m.size, (double)qsize(q));
}

int sonde__queue_new(uv_loop_t *loop, const sonde__qcfg *cfg, sonde__queue_target target,
                     sonde_signal sig, sonde__queue_metrics metrics, sonde__queue **out) {
  sonde__queue *q = calloc(1, sizeof *q);
  if (!q) return SONDE_ENOMEM;
  q->loop = loop;
  q->cfg = cfg;
  q->t = target;
  q->sig = sig;
  q->m = metrics;
  q->max_inflight = (int)cfg->sending_queue.num_consumers;
  /* Without a queue, only what is in flight is held (otelcol would block the caller instead). */
  q->cap =
      cfg->sending_queue.enabled ? (size_t)cfg->sending_queue.queue_size : (size_t)q->max_inflight;
  sonde__metric_set(q->m.capacity, (double)q->cap);
  *out = q;
  return 0;
}

size_t sonde__queue_len(const sonde__queue *q) {
  return q->len;
}

static void pump(sonde__queue *q);

static void maybe_drained(sonde__queue *q) {
  /* Not from inside pump() or send(): done() may free q; the outermost caller checks again. */
  if (q->pumping) return;
  if (q->draining && !q->head && q->inflight == 0 && q->drain_done) {
    void (*cb)(void *) = q->drain_done;
    q->drain_done = NULL;
    cb(q->drain_arg);
  }
}

/* The queue's list of live senders (in flight or waiting out a backoff). */
static void sender_link(sonde__queue *q, sender *s) {
  s->q = q;
  uv_timer_init(q->loop, &s->timer);
  s->timer.data = s;
  s->next = q->senders;
  if (q->senders) q->senders->pprev = &s->next;
  q->senders = s;
  s->pprev = &q->senders;
}

static void sender_unlink(sender *s) {
  if (s->pprev) {
    *s->pprev = s->next;
    if (s->next) s->next->pprev = s->pprev;
    s->pprev = NULL;
  }
}

static void sender_closed(uv_handle_t *h) {
  free(h->data);
}

static void sender_free(sender *s) {
  sender_unlink(s);
  uv_close((uv_handle_t *)&s->timer, sender_closed);
}

static void item_free(qitem *it) {
  sonde_batch_unref(it->b);
  free(it);
}

static void give_up(sonde__queue *q, qitem *it, int status, const char *why) {
  sonde__metric_add(q->m.send_failed, (double)it->items);
  sonde__log(SONDE_LOG_ERROR, q->t.who, "dropping %zu %s after %u attempt(s): %s (%s)", it->items,
             sonde_signal_item_name(q->sig), it->attempts, why, sonde_strerror(status));
  item_free(it);
}

static void start_send(sender *s);

static void on_backoff_done(uv_timer_t *t) {
  start_send(t->data);
}

static void on_timeout(uv_timer_t *t);

static void finish(sender *s, int status, int64_t retry_after_ns) {
  sonde__queue *q = s->q;
  qitem *it = s->it;
  uv_timer_stop(&s->timer);
  s->sending = false;
  if (status == 0) {
    sonde__metric_add(q->m.sent, (double)it->items);
    item_free(it);
  } else {
    const sonde__qcfg *c = q->cfg;
    bool retryable = status != SONDE_EPERMANENT && c->retry.enabled;
    double wait = 0;
    if (retryable) {
      wait = (double)c->retry.initial_interval * pow(c->retry.multiplier, it->attempts - 1);
      if (wait > (double)c->retry.max_interval) wait = (double)c->retry.max_interval;
      double jitter = c->retry.randomization_factor * wait;
      wait += jitter * (2.0 * ((double)rand() / RAND_MAX) - 1.0);
      if (retry_after_ns > 0)
        wait = (double)retry_after_ns; /* the server said when: it wins over our backoff */
      uint64_t elapsed = uv_now(q->loop) - it->first_ms;
      if (c->retry.max_elapsed_time > 0 &&
          (double)elapsed * 1e6 + wait > (double)c->retry.max_elapsed_time)
        retryable = false;
    }
    if (!retryable) {
      give_up(q, it, status,
              status == SONDE_EPERMANENT ? "permanent error"
              : c->retry.enabled         ? "retries exhausted (max_elapsed_time)"
                                         : "retry_on_failure disabled");
    } else {
      sonde__log(SONDE_LOG_WARN, q->t.who, "send failed (%s), retrying %zu %s in %.3fs",
                 sonde_strerror(status), it->items, sonde_signal_item_name(q->sig), wait / 1e9);
      /* The consumer waits out the backoff holding its slot, as otelcol's do. */
      uv_timer_start(&s->timer, on_backoff_done, (uint64_t)(wait / 1e6), 0);
      return;
    }
  }
  s->it = NULL;
  q->inflight--;
  sender_free(s);
  if (!q->pumping) pump(q);
  maybe_drained(q);
}

static void on_sent(void *arg, int status, int64_t retry_after_ns) {
  sender *s = arg;
  if (s->abandoned) { /* timed out or aborted earlier: only free what is left */
    if (s->it) item_free(s->it);
    sender_free(s);
    return;
  }
  finish(s, status, retry_after_ns);
}

static void on_timeout(uv_timer_t *t) {
  sender *old = t->data;
  sonde__queue *q = old->q;
  /* The exporter still owns the late callback: leave it a zombie sender and retry with a new one,
   * so a hung backend cannot pin this consumer forever. */
  sender *s = calloc(1, sizeof *s);
  if (!s) {
    old->abandoned = true;
    old->sending = false;
    sender_unlink(old);
    give_up(q, old->it, SONDE_ENOMEM, "timeout");
    old->it = NULL;
    q->inflight--;
    pump(q);
    maybe_drained(q);
    return;
  }
  s->q = q;
  s->it = old->it;
  old->it = NULL;
  old->abandoned = true;
  sender_unlink(old);
  sender_link(q, s);
  s->sending = true;
  finish(s, SONDE_ETIMEOUT, 0);
}

static void start_send(sender *s) {
  sonde__queue *q = s->q;
  s->it->attempts++;
  s->sending = true;
  if (q->cfg->timeout > 0)
    uv_timer_start(&s->timer, on_timeout, (uint64_t)(q->cfg->timeout / 1000000), 0);
  /* A callback from inside send() must not start another send() (the exporter is not
   * reentered) nor end the drain: pump() and the drain check run once send() has returned. */
  bool outer = !q->pumping;
  q->pumping = true;
  int rc = q->t.comp->send(q->t.inst, s->it->b, on_sent, s);
  if (rc) finish(s, rc == SONDE_EPERMANENT ? rc : SONDE_ERETRY, 0);
  if (outer) {
    q->pumping = false;
    pump(q);
    maybe_drained(q);
  }
}

static void pump(sonde__queue *q) {
  q->pumping = true;
  while (q->head && q->inflight < q->max_inflight) {
    qitem *it = q->head;
    sender *s = calloc(1, sizeof *s);
    if (!s) break; /* try again on the next completion */
    q->head = it->next;
    if (!q->head) q->tail = NULL;
    q->len--;
    q->items -= it->items;
    it->next = NULL;
    s->it = it;
    sender_link(q, s);
    q->inflight++;
    start_send(s);
  }
  q->pumping = false;
  update_gauges(q);
}

int sonde__queue_push(sonde__queue *q, sonde_batch *b) {
  size_t items = sonde_batch_items(b);
  if (q->draining) {
    sonde__metric_add(q->m.enqueue_failed, (double)items);
    return SONDE_ESHUTDOWN;
  }
  size_t add = q->cfg->sending_queue.sizer == 1 ? items : 1;
  size_t used = qsize(q) + (q->cfg->sending_queue.enabled ? 0 : (size_t)q->inflight);
  if (used + add > q->cap) {
    sonde__metric_add(q->m.enqueue_failed, (double)items);
    return SONDE_EFULL;
  }
  qitem *it = calloc(1, sizeof *it);
  if (!it) {
    sonde__metric_add(q->m.enqueue_failed, (double)items);
    return SONDE_ENOMEM;
  }
  it->b = sonde_batch_ref(b);
  it->items = items;
  it->first_ms = uv_now(q->loop);
  if (q->tail)
    q->tail->next = it;
  else
    q->head = it;
  q->tail = it;
  q->len++;
  q->items += items;
  if (!q->pumping)
    pump(q);
  else
    update_gauges(q);
  return 0;
}

void sonde__queue_drain(sonde__queue *q, void (*done)(void *), void *arg) {
  q->draining = true;
  q->drain_done = done;
  q->drain_arg = arg;
  /* Whoever waits out a backoff tries again now: the deadline is what bounds the drain. */
  for (sender *s = q->senders; s; s = s->next)
    if (!s->sending && s->it) uv_timer_start(&s->timer, on_backoff_done, 0, 0);
  maybe_drained(q);
}

void sonde__queue_abort(sonde__queue *q) {
  size_t dropped = 0;
  while (q->head) {
    qitem *it = q->head;
    q->head = it->next;
    dropped += it->items;
    sonde__metric_add(q->m.send_failed, (double)it->items);
    item_free(it);
  }
  q->tail = NULL;
  q->len = q->items = 0;
  for (sender *s = q->senders, *n; s; s = n) {
    n = s->next;
    s->pprev = NULL;
    s->abandoned = true;
    uv_timer_stop(&s->timer);
    if (s->it) {
      dropped += s->it->items;
      sonde__metric_add(q->m.send_failed, (double)s->it->items);
    }
    if (!s->sending) { /* waiting out a backoff: nobody else will free it */
      if (s->it) item_free(s->it);
      s->it = NULL;
      uv_close((uv_handle_t *)&s->timer, sender_closed);
    }
  }
  q->senders = NULL;
  q->inflight = 0;
  if (dropped)
    sonde__log(SONDE_LOG_ERROR, q->t.who, "shutdown deadline: dropped %zu %s not yet sent", dropped,
               sonde_signal_item_name(q->sig));
  update_gauges(q);
  maybe_drained(q);
}

void sonde__queue_free(sonde__queue *q) {
  if (!q) return;
  if (q->head || q->senders) sonde__queue_abort(q);
  free(q);
}

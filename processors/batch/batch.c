/* The `batch` processor: otelcol's batchprocessor on the loop thread.
 *
 * Incoming batches are queued by reference (never copied). A flush builds a new batch whose
 * request message points at the resource entries of the queued ones (sonde_batch_hold keeps them
 * alive); when send_batch_max_size cuts through a resource, scope or metric, only a shallow copy of
 * that one container is made, with its item array pointing at a sub-range of the original.
 *
 * Profiles are forwarded unbatched: their request carries a dictionary that the samples index
 * into, so two requests cannot be merged without rewriting every index.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/sonde.h"

typedef struct batch_config {
  int64_t send_batch_size;
  int64_t send_batch_max_size;
  int64_t timeout_ns;
} batch_config;

static const sonde_option batch_options[] = {
    SONDE_OPT_RANGE("send_batch_size", SONDE_OPT_INT, batch_config, send_batch_size, "8192", 0,
                    4294967295.0, "items after which a batch is sent regardless of the timeout"),
    SONDE_OPT_RANGE("send_batch_max_size", SONDE_OPT_INT, batch_config, send_batch_max_size, "0", 0,
                    4294967295.0, "upper bound of a sent batch; larger ones are split (0: none)"),
    SONDE_OPT("timeout", SONDE_OPT_DURATION, batch_config, timeout_ns, "200ms",
              "time after which a non-empty batch is sent regardless of size (0: send at once)"),
    SONDE_OPT_END,
};

static int batch_validate(const void *config, char *err, size_t errlen) {
  const batch_config *c = config;
  if (c->send_batch_max_size > 0 && c->send_batch_max_size < c->send_batch_size) {
    snprintf(err, errlen, "send_batch_max_size must be greater or equal to send_batch_size");
    return SONDE_ECONFIG;
  }
  if (c->timeout_ns < 0) {
    snprintf(err, errlen, "timeout must not be negative");
    return SONDE_ECONFIG;
  }
  return 0;
}

/* ---- message shapes
 * ------------------------------------------------------------------------------ Traces, metrics
 * and logs share one shape: request -> resources[] -> scopes[] -> items[]; only the type names
 * differ. The walker reads them through offsets (no type punning); metrics add one more level (data
 * points inside a metric) handled by item_count / split_item. */

typedef struct shape {
  size_t req_n, req_arr;           /* request: n_resource_x, resource_x */
  size_t res_size, res_n, res_arr; /* resource entry: sizeof, n_scope_x, scope_x */
  size_t sc_size, sc_n, sc_arr;    /* scope entry: sizeof, n_items, items */
  /* Items in one item (1, or data points of a metric). */
  size_t (*item_count)(const void *item);
  /* Shallow copy of item keeping k of its sub-items from index from; NULL on out of memory. */
  void *(*split_item)(sonde_batch *arena, const void *item, size_t from, size_t k);
} shape;

#define GET(T, p, off) (*(T *)(void *)((char *)(p) + (off)))

static size_t one_item(const void *item) {
  (void)item;
  return 1;
}

typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;

/* The data points array of a metric, as a generic pointer array. */
static void ***metric_points(metric_t *m, size_t **n) {
  switch (m->data_case) {
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    *n = m->gauge ? &m->gauge->n_data_points : NULL;
    return m->gauge ? (void ***)&m->gauge->data_points : NULL;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
    *n = m->sum ? &m->sum->n_data_points : NULL;
    return m->sum ? (void ***)&m->sum->data_points : NULL;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
    *n = m->histogram ? &m->histogram->n_data_points : NULL;
    return m->histogram ? (void ***)&m->histogram->data_points : NULL;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    *n = m->exponential_histogram ? &m->exponential_histogram->n_data_points : NULL;
    return m->exponential_histogram ? (void ***)&m->exponential_histogram->data_points : NULL;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
    *n = m->summary ? &m->summary->n_data_points : NULL;
    return m->summary ? (void ***)&m->summary->data_points : NULL;
  default:
    *n = NULL;
    return NULL;
  }
}

static size_t metric_count(const void *item) {
  size_t *n;
  return metric_points((metric_t *)item, &n) ? *n : 0;
}

static void *metric_split(sonde_batch *arena, const void *item, size_t from, size_t k) {
  metric_t *m = sonde_batch_memdup(arena, item, sizeof(metric_t));
  if (!m) return NULL;
  /* The data container (gauge, sum, ...) is copied too: its array is the one that changes. */
  size_t dsize = 0;
  void **data = NULL;
  switch (m->data_case) {
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    dsize = sizeof(*m->gauge), data = (void **)&m->gauge;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
    dsize = sizeof(*m->sum), data = (void **)&m->sum;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
    dsize = sizeof(*m->histogram), data = (void **)&m->histogram;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    dsize = sizeof(*m->exponential_histogram), data = (void **)&m->exponential_histogram;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
    dsize = sizeof(*m->summary), data = (void **)&m->summary;
    break;
  default:
    return m;
  }
  void *copy = sonde_batch_memdup(arena, *data, dsize);
  if (!copy) return NULL;
  *data = copy;
  size_t *n;
  void ***pts = metric_points(m, &n);
  *pts += from;
  *n = k;
  return m;
}

#define SHAPE(Req, Res, Sc, rn, ra, sn, sa, in, ia, cnt, split)                                    \
  {                                                                                                \
    offsetof(Req, rn), offsetof(Req, ra), sizeof(Res), offsetof(Res, sn), offsetof(Res, sa),       \
        sizeof(Sc), offsetof(Sc, in), offsetof(Sc, ia), cnt, split                                 \
  }

static const shape trace_shape =
    SHAPE(sonde_traces, Opentelemetry__Proto__Trace__V1__ResourceSpans,
          Opentelemetry__Proto__Trace__V1__ScopeSpans, n_resource_spans, resource_spans,
          n_scope_spans, scope_spans, n_spans, spans, one_item, NULL);
static const shape metric_shape =
    SHAPE(sonde_metrics, Opentelemetry__Proto__Metrics__V1__ResourceMetrics,
          Opentelemetry__Proto__Metrics__V1__ScopeMetrics, n_resource_metrics, resource_metrics,
          n_scope_metrics, scope_metrics, n_metrics, metrics, metric_count, metric_split);
static const shape log_shape =
    SHAPE(sonde_logs, Opentelemetry__Proto__Logs__V1__ResourceLogs,
          Opentelemetry__Proto__Logs__V1__ScopeLogs, n_resource_logs, resource_logs, n_scope_logs,
          scope_logs, n_log_records, log_records, one_item, NULL);

static size_t scope_count(const shape *sh, const void *sc) {
  size_t n = GET(size_t, sc, sh->sc_n), c = 0;
  void **items = GET(void **, sc, sh->sc_arr);
  for (size_t i = 0; i < n; i++)
    c += sh->item_count(items[i]);
  return c;
}

static size_t resource_count(const shape *sh, const void *res) {
  size_t n = GET(size_t, res, sh->res_n), c = 0;
  void **scopes = GET(void **, res, sh->res_arr);
  for (size_t i = 0; i < n; i++)
    c += scope_count(sh, scopes[i]);
  return c;
}

/* ---- the processor ------------------------------------------------------------------------- */

typedef struct pending {
  sonde_batch *b;
  size_t left;       /* items not yet sent */
  size_t r, s, i, p; /* cursor: resource, scope, item, sub-item (metric data point) */
} pending;

typedef struct sigstate {
  struct batchp *bp;
  sonde_signal sig;
  const shape *sh;
  pending *q; /* q[head .. n) are queued */
  size_t head, n, cap;
  size_t total; /* items queued */
  sonde_timer *timer;
} sigstate;

typedef struct batchp {
  const sonde_host *h;
  const batch_config *cfg;
  sigstate st[3];
  sonde_metric *m_send_size, *m_timeout, *m_size_trigger;
  bool stopping;
} batchp;

static void timer_cb(void *arg);

static void stop_timer(sigstate *st) {
  if (st->timer) {
    st->bp->h->api->timer_stop(st->timer);
    st->timer = NULL;
  }
}

static void pop_front(sigstate *st) {
  pending *p = &st->q[st->head++];
  st->total -= p->left < st->total ? p->left : st->total;
  sonde_batch_unref(p->b);
  if (st->head == st->n) st->head = st->n = 0;
}

/* A growable pointer array allocated with malloc while a flush is built. */
typedef struct ptrvec {
  void **v;
  size_t n, cap;
} ptrvec;

static int vec_push(ptrvec *v, void *p) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    void **nv = realloc(v->v, cap * sizeof(*nv));
    if (!nv) return SONDE_ENOMEM;
    v->v = nv;
    v->cap = cap;
  }
  v->v[v->n++] = p;
  return 0;
}

/* Copies a vector into the arena as the array of container c at (n_off, arr_off). */
static int vec_store(sonde_batch *out, ptrvec *v, void *c, size_t n_off, size_t arr_off) {
  void **arr = NULL;
  if (v->n && !(arr = sonde_batch_memdup(out, v->v, v->n * sizeof(*arr)))) return SONDE_ENOMEM;
  GET(size_t, c, n_off) = v->n;
  GET(void **, c, arr_off) = arr;
  return 0;
}

/* Moves up to need items from the front of the queue into out (zero-copy); *taken gets the count.
 * On failure the queue cursors may have moved; the caller drops out and the moved items with it
 * (reported as an error, as otelcol reports a failed send). */
static int take_front(sigstate *st, sonde_batch *out, ptrvec *res_out, size_t need, size_t *taken) {
  const shape *sh = st->sh;
  pending *P = &st->q[st->head];
  ProtobufCMessage *req = sonde_batch_msg(P->b);
  size_t nres = GET(size_t, req, sh->req_n);
  void **res = GET(void **, req, sh->req_arr);
  size_t got = 0;
  int rc = sonde_batch_hold(out, P->b);
  if (rc) return rc;
  ptrvec scs = {0}, its = {0};
  while (P->r < nres && got < need) {
    void *R = res[P->r];
    if (P->s == 0 && P->i == 0 && P->p == 0) {
      size_t c = resource_count(sh, R);
      if (c <= need - got) {
        if ((rc = vec_push(res_out, R))) goto out;
        got += c;
        P->r++;
        continue;
      }
    }
    /* Part of this resource: a shallow copy with a subset of its scopes. */
    void *R2 = sonde_batch_memdup(out, R, sh->res_size);
    if (!R2) {
      rc = SONDE_ENOMEM;
      goto out;
    }
    size_t nsc = GET(size_t, R, sh->res_n);
    void **sc = GET(void **, R, sh->res_arr);
    scs.n = 0;
    while (P->s < nsc && got < need) {
      void *S = sc[P->s];
      if (P->i == 0 && P->p == 0) {
        size_t c = scope_count(sh, S);
        if (c <= need - got) {
          if ((rc = vec_push(&scs, S))) goto out;
          got += c;
          P->s++;
          continue;
        }
      }
      void *S2 = sonde_batch_memdup(out, S, sh->sc_size);
      if (!S2) {
        rc = SONDE_ENOMEM;
        goto out;
      }
      size_t nit = GET(size_t, S, sh->sc_n);
      void **it = GET(void **, S, sh->sc_arr);
      its.n = 0;
      while (P->i < nit && got < need) {
        size_t c = sh->item_count(it[P->i]);
        if (P->p == 0 && c <= need - got) {
          if ((rc = vec_push(&its, it[P->i]))) goto out;
          got += c;
          P->i++;
          continue;
        }
        /* Only metrics get here: part of one metric's data points. */
        size_t k = c - P->p < need - got ? c - P->p : need - got;
        void *part = sh->split_item(out, it[P->i], P->p, k);
        if (!part) {
          rc = SONDE_ENOMEM;
          goto out;
        }
        if ((rc = vec_push(&its, part))) goto out;
        got += k;
        P->p += k;
        if (P->p == c) {
          P->p = 0;
          P->i++;
        }
      }
      if ((rc = vec_store(out, &its, S2, sh->sc_n, sh->sc_arr)) || (rc = vec_push(&scs, S2)))
        goto out;
      if (P->i < nit) break;
      P->i = 0;
      P->s++;
    }
    if ((rc = vec_store(out, &scs, R2, sh->res_n, sh->res_arr)) || (rc = vec_push(res_out, R2)))
      goto out;
    if (P->s < nsc) break;
    P->s = 0;
    P->r++;
  }
out:
  free(scs.v);
  free(its.v);
  *taken = got;
  P->left -= got < P->left ? got : P->left;
  st->total -= got < st->total ? got : st->total;
  /* Done with this batch once walked to the end, or once only empty entries remain. */
  if (rc == 0 && (P->r >= nres || P->left == 0)) pop_front(st);
  return rc;
}

/* Sends up to max items (0: everything queued) downstream as one batch. */
static void send_one(sigstate *st, size_t max, bool timeout_trigger) {
  batchp *bp = st->bp;
  const sonde_host *h = bp->h;
  size_t need = max && max < st->total ? max : st->total;
  sonde_batch *out = NULL;
  int rc = 0;

  pending *F = &st->q[st->head];
  if (F->r == 0 && F->s == 0 && F->i == 0 && F->p == 0 && F->left == need) {
    /* The front batch is exactly what goes out: forward it as it is. */
    out = sonde_batch_ref(F->b);
    pop_front(st);
  } else {
    ptrvec res = {0};
    size_t got = 0;
    rc = sonde_batch_new(st->sig, &out);
    while (rc == 0 && got < need && st->head < st->n) {
      size_t t = 0;
      rc = take_front(st, out, &res, need - got, &t);
      got += t;
    }
    if (rc == 0) rc = vec_store(out, &res, sonde_batch_msg(out), st->sh->req_n, st->sh->req_arr);
    free(res.v);
    if (rc) {
      sonde_log(h, SONDE_LOG_ERROR, "cannot build a %s batch, %zu items dropped: %s",
                sonde_signal_name(st->sig), got, sonde_strerror(rc));
      if (out) sonde_batch_unref(out);
      return;
    }
  }
  size_t items = sonde_batch_items(out);
  if (bp->m_send_size) h->api->metric_set(bp->m_send_size, (double)items);
  sonde_metric *trig = timeout_trigger ? bp->m_timeout : bp->m_size_trigger;
  if (trig) h->api->metric_add(trig, 1);
  rc = h->api->consume(h, out, NULL);
  if (rc) /* otelcol's batch processor has already answered its caller: it logs and drops. */
    sonde_log(h, SONDE_LOG_WARN, "sender failed, %zu %s dropped: %s", items,
              sonde_signal_item_name(st->sig), sonde_strerror(rc));
  sonde_batch_unref(out);
}

static void arm_timer(sigstate *st) {
  batchp *bp = st->bp;
  stop_timer(st);
  if (st->total == 0 || bp->cfg->timeout_ns <= 0 || bp->stopping) return;
  int rc = bp->h->api->timer_start(bp->h, bp->cfg->timeout_ns, 0, timer_cb, st, &st->timer);
  if (rc) {
    st->timer = NULL;
    sonde_log(bp->h, SONDE_LOG_ERROR, "cannot start the timer (%s); sending at once",
              sonde_strerror(rc));
    while (st->total)
      send_one(st, (size_t)bp->cfg->send_batch_max_size, true);
  }
}

static void timer_cb(void *arg) {
  sigstate *st = arg;
  /* A one-shot timer: after it fired it only needs to be freed. */
  st->bp->h->api->timer_stop(st->timer);
  st->timer = NULL;
  while (st->total)
    send_one(st, (size_t)st->bp->cfg->send_batch_max_size, true);
  while (st->head < st->n) /* only item-less leftovers */
    pop_front(st);
}

static sigstate *state_for(batchp *bp, sonde_signal sig) {
  for (int k = 0; k < 3; k++)
    if (bp->st[k].sig == sig) return &bp->st[k];
  return NULL;
}

static int batch_consume(void *inst, sonde_batch *b) {
  batchp *bp = inst;
  sonde_signal sig = sonde_batch_signal(b);
  sigstate *st = state_for(bp, sig);
  if (!st) /* profiles: see the top of the file */
    return bp->h->api->consume(bp->h, b, NULL);
  size_t items = sonde_batch_items(b);
  if (items == 0) return 0; /* nothing otelcol would ever send */
  if (st->n == st->cap) {
    if (st->head > 0) {
      memmove(st->q, st->q + st->head, (st->n - st->head) * sizeof(*st->q));
      st->n -= st->head;
      st->head = 0;
    } else {
      size_t cap = st->cap ? st->cap * 2 : 16;
      pending *nq = realloc(st->q, cap * sizeof(*nq));
      if (!nq) return SONDE_ENOMEM;
      st->q = nq;
      st->cap = cap;
    }
  }
  bool was_empty = st->total == 0;
  st->q[st->n++] = (pending){.b = sonde_batch_ref(b), .left = items};
  st->total += items;

  const batch_config *c = bp->cfg;
  size_t size = (size_t)c->send_batch_size, max = (size_t)c->send_batch_max_size;
  bool sent = false;
  if (c->timeout_ns <= 0) {
    while (st->total)
      send_one(st, max, false);
    return 0;
  }
  while (st->total && st->total >= size) {
    send_one(st, max, false);
    sent = true;
  }
  /* The timer measures the age of the oldest queued item. */
  if (sent || was_empty) arm_timer(st);
  return 0;
}

static int batch_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  batchp *bp = calloc(1, sizeof(*bp));
  if (!bp) return SONDE_ENOMEM;
  bp->h = h;
  bp->cfg = config;
  const sonde_signal sigs[3] = {SONDE_SIGNAL_TRACES, SONDE_SIGNAL_METRICS, SONDE_SIGNAL_LOGS};
  const shape *shapes[3] = {&trace_shape, &metric_shape, &log_shape};
  for (int k = 0; k < 3; k++)
    bp->st[k] = (sigstate){.bp = bp, .sig = sigs[k], .sh = shapes[k]};
  /* otelcol exposes batch_send_size as a histogram; the host offers counters and gauges, so this
   * is the size of the last batch sent. */
  if (h->api->metric(h, SONDE_METRIC_GAUGE, "otelcol_processor_batch_batch_send_size",
                     "Number of units in the last batch sent", NULL, &bp->m_send_size) ||
      h->api->metric(h, SONDE_METRIC_COUNTER, "otelcol_processor_batch_timeout_trigger_send",
                     "Number of times the batch was sent due to a timeout trigger", NULL,
                     &bp->m_timeout) ||
      h->api->metric(h, SONDE_METRIC_COUNTER, "otelcol_processor_batch_batch_size_trigger_send",
                     "Number of times the batch was sent due to a size trigger", NULL,
                     &bp->m_size_trigger))
    sonde_log(h, SONDE_LOG_WARN, "cannot register its metrics");
  *inst = bp;
  return 0;
}

static int batch_start(void *inst) {
  return 0;
}

static void batch_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  batchp *bp = inst;
  bp->stopping = true;
  for (int k = 0; k < 3; k++) {
    sigstate *st = &bp->st[k];
    stop_timer(st);
    while (st->total)
      send_one(st, (size_t)bp->cfg->send_batch_max_size, true);
    while (st->head < st->n)
      pop_front(st);
  }
  done(arg);
}

static void batch_destroy(void *inst) {
  batchp *bp = inst;
  if (!bp) return;
  for (int k = 0; k < 3; k++) {
    sigstate *st = &bp->st[k];
    stop_timer(st);
    while (st->head < st->n)
      pop_front(st);
    free(st->q);
  }
  free(bp);
}

static const sonde_component batch_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "batch",
    .doc = "merges small batches and splits large ones by item count, with a timeout",
    .signals = SONDE_SIGNAL_ALL,
    .options = batch_options,
    .config_size = sizeof(batch_config),
    .validate = batch_validate,
    .create = batch_create,
    .start = batch_start,
    .consume = batch_consume,
    .shutdown = batch_shutdown,
    .destroy = batch_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-batch", "1.0", &batch_component);

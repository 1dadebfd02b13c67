/* The `prometheus` exporter: otelcol-contrib's prometheusexporter. A pull endpoint, served by the
 * host's HTTP server on every path, exposing the latest value of every series it was given
 * (prom_state.c) in the Prometheus text format 0.0.4, or in OpenMetrics 1.0.0 when
 * enable_open_metrics is set and the scraper's Accept header prefers it (as promhttp
 * negotiates). Bodies are gzipped when the scraper accepts it.
 *
 * Threads: consume, expiry and the scrape handler run on the loop; rendering a changed state (and
 * its gzip) runs on the host's thread pool, as it takes tens of ms at 10k+ series. While a render
 * runs the loop leaves the state alone: batches consumed meanwhile are kept (referenced) and
 * applied when it ends, expiry waits, and scrapes that need a render wait for it (those asking for
 * the same format get its body; the others start the next render). A scrape of an unchanged state
 * is answered from the last body at once, also during a render.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "prom_http.h"
#include "prom_names.h"
#include "prom_state.h"
#include "sonde/sonde.h"

typedef struct r2t_cfg {
  bool enabled;
  bool exclude_service_attributes;
} r2t_cfg;

typedef struct rcl_cfg {
  sonde_strlist included;
  sonde_strlist excluded;
} rcl_cfg;

typedef struct prom_config {
  char *endpoint;
  char *namespace_;
  sonde_strmap const_labels;
  bool send_timestamps;
  int64_t metric_expiration;
  r2t_cfg resource_to_telemetry_conversion;
  rcl_cfg resource_constant_labels;
  bool has_resource_constant_labels;
  bool enable_open_metrics;
  bool add_metric_suffixes;
  bool without_scope_info;
  char *translation_strategy;
} prom_config;

static const sonde_option r2t_options[] = {
    SONDE_OPT("enabled", SONDE_OPT_BOOL, r2t_cfg, enabled, "false",
              "resource attributes become labels of every series"),
    SONDE_OPT("exclude_service_attributes", SONDE_OPT_BOOL, r2t_cfg, exclude_service_attributes,
              "false", "but not service.name/namespace/instance.id (already job and instance)"),
    SONDE_OPT_END,
};

static const sonde_option rcl_options[] = {
    SONDE_OPT("included", SONDE_OPT_STRLIST, rcl_cfg, included, NULL,
              "globs of resource attribute keys to add (empty: all but the excluded)"),
    SONDE_OPT("excluded", SONDE_OPT_STRLIST, rcl_cfg, excluded, NULL,
              "globs of resource attribute keys never added"),
    SONDE_OPT_END,
};

static const sonde_option prom_options[] = {
    {.name = "endpoint",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(prom_config, endpoint),
     .doc = "host:port serving the metrics (every path answers)",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT("namespace", SONDE_OPT_STRING, prom_config, namespace_, NULL,
              "prefix of every metric name (namespace_name)"),
    SONDE_OPT("const_labels", SONDE_OPT_STRMAP, prom_config, const_labels, NULL,
              "labels added to every series"),
    SONDE_OPT("send_timestamps", SONDE_OPT_BOOL, prom_config, send_timestamps, "false",
              "each sample carries its point's timestamp"),
    SONDE_OPT_RANGE("metric_expiration", SONDE_OPT_DURATION, prom_config, metric_expiration, "5m",
                    1e6, 0, "how long a series stays exposed without updates"),
    SONDE_OPT_NESTED("resource_to_telemetry_conversion", prom_config,
                     resource_to_telemetry_conversion, r2t_options,
                     "resource attributes as labels of every series"),
    SONDE_OPT_NESTED_P("resource_constant_labels", prom_config, resource_constant_labels,
                       has_resource_constant_labels, rcl_options,
                       "resource attributes, chosen by key, as labels of every series (wins over "
                       "resource_to_telemetry_conversion)"),
    SONDE_OPT("enable_open_metrics", SONDE_OPT_BOOL, prom_config, enable_open_metrics, "false",
              "answer in OpenMetrics when the scraper asks for it"),
    SONDE_OPT("add_metric_suffixes", SONDE_OPT_BOOL, prom_config, add_metric_suffixes, "true",
              "unit and type suffixes (_seconds, _total, _ratio) in names"),
    SONDE_OPT("without_scope_info", SONDE_OPT_BOOL, prom_config, without_scope_info, "false",
              "no otel_scope_* labels"),
    SONDE_OPT("translation_strategy", SONDE_OPT_STRING, prom_config, translation_strategy, NULL,
              "UnderscoreEscapingWithSuffixes or UnderscoreEscapingWithoutSuffixes (wins over "
              "add_metric_suffixes)"),
    SONDE_OPT_END,
};

static int prom_validate(const void *config, char *err, size_t errlen) {
  const prom_config *c = config;
  if (!c->endpoint || !c->endpoint[0]) {
    snprintf(err, errlen, "endpoint must be set (host:port)");
    return SONDE_ECONFIG;
  }
  const char *ts = c->translation_strategy;
  if (ts && ts[0] && strcmp(ts, "UnderscoreEscapingWithSuffixes") != 0 &&
      strcmp(ts, "UnderscoreEscapingWithoutSuffixes") != 0) {
    if (strcmp(ts, "NoUTF8EscapingWithSuffixes") == 0 || strcmp(ts, "NoTranslation") == 0)
      snprintf(err, errlen,
               "translation_strategy %s is not supported: UTF-8 names need the quoted syntax of "
               "text format 1.0.0, this exporter serves 0.0.4 and OpenMetrics 1.0.0",
               ts);
    else
      snprintf(err, errlen,
               "invalid translation_strategy %s (valid: UnderscoreEscapingWithSuffixes, "
               "UnderscoreEscapingWithoutSuffixes)",
               ts);
    return SONDE_ECONFIG;
  }
  for (size_t i = 0; i < c->const_labels.n; i++) {
    bool empty;
    char *n = prom_label_name(c->const_labels.keys[i], &empty);
    free(n);
    if (empty) {
      snprintf(err, errlen, "const_labels: \"%s\" is not a usable label name",
               c->const_labels.keys[i]);
      return SONDE_ECONFIG;
    }
  }
  return 0;
}

enum { DROP_STALE, DROP_CONFLICT, DROP_INVALID, DROP_MISALIGNED, DROP_NOMEM, DROP_N };
static const char *const drop_reasons[DROP_N] = {"stale", "type_conflict", "invalid", "misaligned",
                                                 "out_of_memory"};

/* What a scrape asked for: one rendered body serves every scrape with the same. */
typedef struct scrape_fmt {
  bool om, want_gz;
  const char *om_version;
} scrape_fmt;

typedef struct scrape {
  struct scrape *next;
  sonde_http_request *req;
  scrape_fmt f;
} scrape;

typedef struct deferred {
  struct deferred *next;
  sonde_batch *b;
} deferred;

typedef struct promexp promexp;

/* One render on the thread pool. */
typedef struct render_job {
  promexp *p;
  scrape_fmt f;
  uint64_t gen;
  sonde_buf body;
  bool gz;
  int rc;
} render_job;

struct promexp {
  const sonde_host *h;
  const prom_config *cfg;
  prom_state *st;
  sonde_http_server *srv;
  sonde_timer *sweep;
  int64_t last_warn;
  /* The last body served, reused while the state and the asked format are the same (HA pairs of
   * scrapers, or scrapes faster than updates, cost one render). */
  struct {
    bool valid, gz;
    scrape_fmt f;
    uint64_t gen;
    sonde_buf body;
  } cache;
  render_job *rendering;               /* the render in flight: the state is its until done */
  scrape *waiting, **waiting_tail;     /* scrapes for a render, in arrival order */
  deferred *deferred, **deferred_tail; /* batches consumed during a render */
  bool stopping;
  void (*done)(void *); /* shutdown's, called when the render in flight ends */
  void *done_arg;
  sonde_metric *m_series, *m_expired, *m_scrapes, *m_points;
  sonde_metric *m_dropped[DROP_N];
};

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void metric_add(promexp *p, sonde_metric *m, double d) {
  if (m && d) p->h->api->metric_add(m, d);
}

static void expire(promexp *p, int64_t now) {
  size_t n = prom_state_expire(p->st, now);
  metric_add(p, p->m_expired, (double)n);
  if (p->m_series) p->h->api->metric_set(p->m_series, (double)prom_state_series(p->st));
}

static void on_sweep(void *arg) {
  promexp *p = arg;
  if (!p->rendering) expire(p, mono_ns()); /* else the next sweep or scrape does it */
}

static int gzip_body(const sonde_buf *in, sonde_buf *out) {
  z_stream z;
  memset(&z, 0, sizeof(z));
  if (in->len > 0xffffffffu) return SONDE_ETOOBIG; /* one deflate call takes 32-bit lengths */
  /* Level 1: the body is rebuilt on every scrape, so speed matters more than the last bytes. */
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return SONDE_ENOMEM;
  size_t bound = deflateBound(&z, in->len);
  if (sonde_buf_reserve(out, bound)) {
    deflateEnd(&z);
    return SONDE_ENOMEM;
  }
  z.next_in = in->data;
  z.avail_in = (uInt)in->len;
  z.next_out = out->data;
  z.avail_out = (uInt)bound;
  int rc = deflate(&z, Z_FINISH);
  out->len = bound - z.avail_out;
  deflateEnd(&z);
  return rc == Z_STREAM_END ? 0 : SONDE_EIO;
}

static bool same_fmt(const scrape_fmt *a, const scrape_fmt *b) {
  return a->om == b->om && a->want_gz == b->want_gz && a->om_version == b->om_version;
}

static void respond(promexp *p, sonde_http_request *req, const scrape_fmt *f, const sonde_buf *body,
                    bool gz) {
  metric_add(p, p->m_scrapes, 1);
  char ctype[96];
  if (f->om)
    snprintf(ctype, sizeof(ctype), "application/openmetrics-text; version=%s; charset=utf-8",
             f->om_version);
  else
    snprintf(ctype, sizeof(ctype), "text/plain; version=0.0.4; charset=utf-8");
  p->h->api->http_respond(req, 200, ctype, gz ? "Content-Encoding: gzip\r\n" : NULL, body->data,
                          body->len);
}

static void fail_waiting(promexp *p, int status, const char *msg) {
  while (p->waiting) {
    scrape *w = p->waiting;
    p->waiting = w->next;
    p->h->api->http_respond(w->req, status, "text/plain; charset=utf-8", NULL, msg, strlen(msg));
    free(w);
  }
  p->waiting_tail = &p->waiting;
}

static void render_work(void *arg) {
  render_job *j = arg;
  sonde_buf zipped = {0};
  j->rc = prom_state_render(j->p->st, j->f.om, &j->body);
  if (j->rc) return;
  /* An empty body, or one that cannot be compressed, goes as it is. */
  j->gz = j->f.want_gz && j->body.len && gzip_body(&j->body, &zipped) == 0;
  if (j->gz) {
    sonde_buf_free(&j->body);
    j->body = zipped;
  } else {
    sonde_buf_free(&zipped);
  }
}

static int apply(promexp *p, sonde_batch *b);
static void render_done(void *arg, int status);

/* Renders for the first waiting scrape's format; the state is the render's until render_done. */
static void start_render(promexp *p) {
  if (p->rendering || !p->waiting || p->stopping) return;
  render_job *j = calloc(1, sizeof(*j));
  if (!j) {
    fail_waiting(p, 500, "out of memory rendering the metrics\n");
    return;
  }
  expire(p, mono_ns());
  *j = (render_job){.p = p, .f = p->waiting->f, .gen = prom_state_generation(p->st)};
  p->rendering = j;
  if (p->h->api->queue_work(p->h, render_work, render_done, j) == 0) return;
  render_work(j); /* no thread pool: render here rather than not at all */
  render_done(j, 0);
}

static void render_done(void *arg, int status) {
  render_job *j = arg;
  promexp *p = j->p;
  p->rendering = NULL;
  if (!status && !j->rc) {
    sonde_buf_free(&p->cache.body);
    p->cache.body = j->body;
    p->cache.gz = j->gz;
    p->cache.f = j->f;
    p->cache.gen = j->gen;
    p->cache.valid = true;
    j->body = (sonde_buf){0};
  }
  /* Every scrape that waited for this format gets this body: the state did not change while it
   * was rendered, as the batches consumed meanwhile were held back. */
  scrape **pp = &p->waiting;
  while (*pp) {
    scrape *w = *pp;
    if (!same_fmt(&w->f, &j->f)) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    if (status || j->rc) {
      static const char msg[] = "cannot render the metrics\n";
      p->h->api->http_respond(w->req, status ? 503 : 500, "text/plain; charset=utf-8", NULL, msg,
                              sizeof(msg) - 1);
    } else {
      respond(p, w->req, &w->f, &p->cache.body, p->cache.gz);
    }
    free(w);
  }
  p->waiting_tail = &p->waiting;
  for (scrape *w = p->waiting; w; w = w->next)
    p->waiting_tail = &w->next;
  sonde_buf_free(&j->body);
  free(j);
  while (p->deferred) {
    deferred *d = p->deferred;
    p->deferred = d->next;
    apply(p, d->b);
    sonde_batch_unref(d->b);
    free(d);
  }
  p->deferred_tail = &p->deferred;
  if (p->stopping) {
    fail_waiting(p, 503, "shutting down\n"); /* the server is closed: answering releases them */
    if (p->done) {
      void (*done)(void *) = p->done;
      p->done = NULL;
      done(p->done_arg);
    }
    return;
  }
  start_render(p); /* scrapes for another format */
}

static void handle(void *arg, sonde_http_request *req) {
  promexp *p = arg;
  const sonde_host_api *api = p->h->api;
  if (!p->rendering) expire(p, mono_ns());
  scrape_fmt f;
  f.om =
      prom_negotiate(api->http_header(req, "Accept"), p->cfg->enable_open_metrics, &f.om_version);
  f.want_gz = prom_accepts_gzip(api->http_header(req, "Accept-Encoding"));
  /* During a render the state is as it was when the render began, so the cache test holds. */
  if (p->cache.valid && p->cache.gen == prom_state_generation(p->st) && same_fmt(&p->cache.f, &f)) {
    respond(p, req, &f, &p->cache.body, p->cache.gz);
    return;
  }
  scrape *w = calloc(1, sizeof(*w));
  if (!w) {
    static const char msg[] = "out of memory\n";
    api->http_respond(req, 500, "text/plain; charset=utf-8", NULL, msg, sizeof(msg) - 1);
    return;
  }
  w->req = req;
  w->f = f;
  *p->waiting_tail = w;
  p->waiting_tail = &w->next;
  start_render(p);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void log_problem(promexp *p, const char *err, const prom_stats *st) {
  int64_t now = mono_ns();
  if (!err[0] || now - p->last_warn < 10 * (int64_t)1000000000) return;
  p->last_warn = now; /* at most one warning in 10 s; the counters have every drop */
  sonde_log(p->h, SONDE_LOG_WARN, "%s (dropped so far in this batch: %llu)", err,
            (unsigned long long)(st->conflicts + st->invalid + st->misaligned + st->nomem));
}

static int apply(promexp *p, sonde_batch *b) {
  const sonde_metrics *req = sonde_batch_metrics(b);
  if (!req) return 0;
  prom_stats st = {0};
  char err[256] = "";
  prom_state_consume(p->st, req, mono_ns(), &st, err, sizeof(err));
  metric_add(p, p->m_points, (double)st.stored);
  metric_add(p, p->m_dropped[DROP_STALE], (double)st.stale);
  metric_add(p, p->m_dropped[DROP_CONFLICT], (double)st.conflicts);
  metric_add(p, p->m_dropped[DROP_INVALID], (double)st.invalid);
  metric_add(p, p->m_dropped[DROP_MISALIGNED], (double)st.misaligned);
  metric_add(p, p->m_dropped[DROP_NOMEM], (double)st.nomem);
  if (p->m_series) p->h->api->metric_set(p->m_series, (double)prom_state_series(p->st));
  log_problem(p, err, &st);
  /* What could not be exposed is counted, as otelcol drops it and accepts the rest. */
  return 0;
}

static int prom_consume(void *inst, sonde_batch *b) {
  promexp *p = inst;
  if (!p->rendering) return apply(p, b);
  deferred *d = malloc(sizeof(*d));
  if (!d) return SONDE_ENOMEM;
  d->b = sonde_batch_ref(b);
  d->next = NULL;
  *p->deferred_tail = d;
  p->deferred_tail = &d->next;
  return 0;
}

static int prom_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const prom_config *c = config;
  promexp *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = c;
  p->waiting_tail = &p->waiting;
  p->deferred_tail = &p->deferred;
  bool empty;
  char *ns = c->namespace_ && c->namespace_[0] ? prom_label_name(c->namespace_, &empty) : NULL;
  bool suffixes = c->add_metric_suffixes;
  if (c->translation_strategy && c->translation_strategy[0])
    suffixes = strcmp(c->translation_strategy, "UnderscoreEscapingWithSuffixes") == 0;
  prom_opts o = {
      .namespace_ = ns,
      .add_suffixes = suffixes,
      .send_timestamps = c->send_timestamps,
      .without_scope_info = c->without_scope_info,
      .resource_to_telemetry = c->resource_to_telemetry_conversion.enabled,
      .resource_exclude_service_attrs =
          c->resource_to_telemetry_conversion.exclude_service_attributes,
      .resource_labels_set = c->has_resource_constant_labels,
      .resource_include = c->resource_constant_labels.included.v,
      .n_include = c->resource_constant_labels.included.n,
      .resource_exclude = c->resource_constant_labels.excluded.v,
      .n_exclude = c->resource_constant_labels.excluded.n,
      .const_keys = c->const_labels.keys,
      .const_values = c->const_labels.values,
      .n_const = c->const_labels.n,
      .expiration_ns = c->metric_expiration,
  };
  int rc = prom_state_new(&o, &p->st);
  free(ns);
  if (rc) {
    free(p);
    return rc;
  }
  /* Self-metrics are best effort: a missing one does not stop the exporter. */
  h->api->metric(h, SONDE_METRIC_GAUGE, "sonde_exporter_prometheus_series",
                 "Series the prometheus exporter exposes.", NULL, &p->m_series);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_prometheus_points",
                 "Data points that updated an exposed series.", NULL, &p->m_points);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_prometheus_expired_series",
                 "Series dropped after metric_expiration without updates.", NULL, &p->m_expired);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_prometheus_scrapes", "Scrapes answered.",
                 NULL, &p->m_scrapes);
  for (int i = 0; i < DROP_N; i++) {
    char labels[64];
    snprintf(labels, sizeof(labels), "reason=%s", drop_reasons[i]);
    h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_prometheus_dropped_points",
                   "Data points not exposed, by reason.", labels, &p->m_dropped[i]);
  }
  *inst = p;
  return 0;
}

static int prom_start(void *inst) {
  promexp *p = inst;
  const sonde_host_api *api = p->h->api;
  int rc = api->http_listen(p->h, p->cfg->endpoint, NULL, handle, p, &p->srv);
  if (rc) {
    p->srv = NULL;
    sonde_log(p->h, SONDE_LOG_ERROR, "cannot listen on %s: %s", p->cfg->endpoint,
              sonde_strerror(rc));
    return rc;
  }
  /* Series also expire between scrapes, so memory follows what is live. */
  int64_t every = p->cfg->metric_expiration / 2;
  if (every < 100000000) every = 100000000;
  if (every > 30 * (int64_t)1000000000) every = 30 * (int64_t)1000000000;
  rc = api->timer_start(p->h, every, every, on_sweep, p, &p->sweep);
  if (rc) {
    api->http_close(p->srv);
    p->srv = NULL;
    return rc;
  }
  sonde_log(p->h, SONDE_LOG_INFO, "serving metrics on http://%s/metrics", p->cfg->endpoint);
  return 0;
}

static void prom_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  promexp *p = inst;
  if (p->srv) p->h->api->http_close(p->srv);
  if (p->sweep) p->h->api->timer_stop(p->sweep);
  p->srv = NULL;
  p->sweep = NULL;
  p->stopping = true;
  if (p->rendering) { /* the render reads the state: wait for it */
    p->done = done;
    p->done_arg = arg;
    return;
  }
  done(arg);
}

static void prom_destroy(void *inst) {
  promexp *p = inst;
  if (!p) return;
  if (p->srv) p->h->api->http_close(p->srv);
  if (p->sweep) p->h->api->timer_stop(p->sweep);
  while (p->deferred) {
    deferred *d = p->deferred;
    p->deferred = d->next;
    sonde_batch_unref(d->b);
    free(d);
  }
  prom_state_free(p->st);
  sonde_buf_free(&p->cache.body);
  free(p);
}

static const sonde_component prom_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "prometheus",
    .doc = "Prometheus pull endpoint with the latest value of every series",
    .signals = SONDE_SIGNAL_METRICS,
    .options = prom_options,
    .config_size = sizeof(prom_config),
    .validate = prom_validate,
    .create = prom_create,
    .start = prom_start,
    .consume = prom_consume,
    .shutdown = prom_shutdown,
    .destroy = prom_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-prometheus", "1.0", &prom_component);

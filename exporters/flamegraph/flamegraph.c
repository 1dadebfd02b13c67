/* The `flamegraph` exporter: keeps a bounded history of the profiles it is given (fg_store.c) and
 * serves, through the host's HTTP server, a self-contained page (page/index.html, embedded at
 * build time) with an interactive flame graph of it:
 *   GET  /                 the page (live: it asks the API below)
 *   GET  /api/flame        the merged stack tree of a window, filtered (fg_store.h for the JSON)
 *   GET  /api/labels       the slots and the services / containers / processes of a window
 *   POST /api/snapshot     (with an X-Sonde-Snapshot header) writes <directory>/flamegraph-*.html:
 *                          the page with the whole history inlined, readable offline
 * A snapshot is also written at shutdown (snapshot_on_shutdown).
 * Threads: the store belongs to the loop. Merging a window into a tree and writing its JSON (for
 * /api/flame and snapshots) run on the thread pool, on slots taken on the loop (fg_job) that
 * nothing changes or frees until the job is released, on the loop again; the snapshot file is
 * written there too. So a large history never stalls the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fg_store.h"
#include "sonde/sonde.h"

extern const unsigned char fg_page[];
extern const size_t fg_page_len;

/* The page's placeholder for the inlined data of a snapshot. */
#define FG_DATA_MARK "null /*@SONDE_SNAPSHOT@*/"

typedef struct fg_config {
  char *endpoint;
  int64_t slot_ns;
  int64_t history_ns;
  uint64_t max_bytes;
  char *directory;
  bool snapshot_on_shutdown;
} fg_config;

static const sonde_option fg_options[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, fg_config, endpoint, "localhost:7070",
              "host:port the page is served on (\":port\" binds localhost)"),
    SONDE_OPT_RANGE("slot", SONDE_OPT_DURATION, fg_config, slot_ns, "10s", 1e9, 3600e9,
                    "time resolution of the history (one stack table per slot)"),
    SONDE_OPT_RANGE("max_history", SONDE_OPT_DURATION, fg_config, history_ns, "1h", 1e9,
                    7 * 24 * 3600e9, "slots older than this are dropped"),
    SONDE_OPT_RANGE("max_bytes", SONDE_OPT_BYTES, fg_config, max_bytes, "64MiB", 65536, 0,
                    "memory of the history; the oldest slots are dropped past it"),
    SONDE_OPT("directory", SONDE_OPT_STRING, fg_config, directory, NULL,
              "where snapshots are written (created if missing); unset: no snapshots"),
    SONDE_OPT("snapshot_on_shutdown", SONDE_OPT_BOOL, fg_config, snapshot_on_shutdown, "true",
              "write a snapshot when the service stops (needs directory)"),
    SONDE_OPT_END,
};

typedef struct fgexp {
  const sonde_host *h;
  const fg_config *cfg;
  fg_store *store;
  sonde_http_server *srv;
  sonde_timer *prune;
  unsigned inflight;
  unsigned seq;
  void (*done)(void *);
  void *done_arg;
  sonde_metric *m_samples, *m_bytes, *m_slots, *m_dropped, *m_snapshots, *m_dropped_samples;
  uint64_t dropped_seen, dropped_samples_seen;
} fgexp;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void update_gauges(fgexp *e) {
  const sonde_host_api *a = e->h->api;
  if (e->m_bytes) a->metric_set(e->m_bytes, (double)fg_store_bytes(e->store));
  if (e->m_slots) a->metric_set(e->m_slots, (double)fg_store_slots(e->store));
  uint64_t d = fg_store_dropped_slots(e->store);
  if (e->m_dropped && d > e->dropped_seen)
    a->metric_add(e->m_dropped, (double)(d - e->dropped_seen));
  e->dropped_seen = d;
  d = fg_store_dropped_samples(e->store);
  if (e->m_dropped_samples && d > e->dropped_samples_seen)
    a->metric_add(e->m_dropped_samples, (double)(d - e->dropped_samples_seen));
  e->dropped_samples_seen = d;
}

/* ---- snapshots ------------------------------------------------------------------------------ */

typedef struct snap {
  fgexp *e;
  fg_job *job;             /* the whole history, merged on the thread pool */
  sonde_buf html;          /* the page up to the tree (built on the loop), then the rest */
  sonde_http_request *req; /* NULL: the shutdown's */
  char path[4200];
  char err[4400];
  int status;
} snap;

/* The page with {"labels":..,"created":..,"flame":..} of the whole history in place of the
 * marker: the part up to the tree on the loop (the labels read the store), the rest in snap_work.
 */
static int snapshot_head(fgexp *e, sonde_buf *out) {
  const char *page = (const char *)fg_page;
  const char *mark = strstr(page, FG_DATA_MARK);
  if (!mark) return SONDE_EPROTO;
  int rc = sonde_buf_append(out, page, (size_t)(mark - page));
  if (!rc) rc = sonde_buf_append(out, "{\"labels\":", 10);
  if (!rc) rc = fg_store_labels_json(e->store, 0, 0, out);
  if (!rc) rc = sonde_buf_printf(out, ",\"created\":%" PRId64 ",\"flame\":", now_ns() / 1000000);
  return rc;
}

static void snap_work(void *arg) {
  snap *s = arg;
  const char *dir = s->e->cfg->directory;
  char tmp[4300];
  const char *page = (const char *)fg_page;
  const char *rest = strstr(page, FG_DATA_MARK) + strlen(FG_DATA_MARK);
  int rc = fg_job_run(s->job, &s->html);
  if (!rc) rc = sonde_buf_append(&s->html, "}", 1);
  if (!rc) rc = sonde_buf_append(&s->html, rest, fg_page_len - (size_t)(rest - page));
  if (rc) {
    snprintf(s->err, sizeof s->err, "cannot build it: %s", sonde_strerror(rc));
    s->status = rc;
    return;
  }
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    snprintf(s->err, sizeof s->err, "cannot create %s: %s", dir, strerror(errno));
    s->status = SONDE_EIO;
    return;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", s->path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(s->err, sizeof s->err, "%s: %s", tmp, strerror(errno));
    s->status = SONDE_EIO;
    return;
  }
  size_t off = 0;
  while (off < s->html.len) {
    ssize_t n = write(fd, s->html.data + off, s->html.len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  if (close(fd) != 0 || off != s->html.len || rename(tmp, s->path) != 0) {
    snprintf(s->err, sizeof s->err, "%s: %s", s->path, strerror(errno ? errno : EIO));
    unlink(tmp);
    s->status = SONDE_EIO;
  }
}

static void finish_inflight(fgexp *e) {
  e->inflight--;
  if (!e->inflight && e->done) {
    void (*done)(void *) = e->done;
    e->done = NULL;
    done(e->done_arg);
  }
}

static void snap_done(void *arg, int status) {
  snap *s = arg;
  fgexp *e = s->e;
  if (status && !s->status) {
    s->status = status;
    snprintf(s->err, sizeof s->err, "%s", sonde_strerror(status));
  }
  if (s->status) {
    sonde_log(e->h, SONDE_LOG_ERROR, "snapshot: %s", s->err);
  } else {
    sonde_log(e->h, SONDE_LOG_INFO, "snapshot written to %s", s->path);
    if (e->m_snapshots) e->h->api->metric_add(e->m_snapshots, 1);
  }
  if (s->req) {
    sonde_buf b = {0};
    int rc = sonde_buf_append(&b, s->status ? "{\"error\":" : "{\"path\":", s->status ? 9 : 8);
    const char *t = s->status ? s->err : s->path;
    if (!rc) rc = fg_json_str(&b, t, strlen(t));
    if (!rc) rc = sonde_buf_append(&b, "}", 1);
    e->h->api->http_respond(s->req,
                            rc          ? 500
                            : s->status ? 500
                                        : 200,
                            "application/json", NULL, b.data, b.len);
    sonde_buf_free(&b);
  }
  fg_job_free(s->job);
  sonde_buf_free(&s->html);
  free(s);
  finish_inflight(e);
}

/* Starts a snapshot; req (may be NULL) is answered when it is written. */
static int start_snapshot(fgexp *e, sonde_http_request *req) {
  snap *s = calloc(1, sizeof(*s));
  if (!s) return SONDE_ENOMEM;
  s->e = e;
  s->req = req;
  int64_t t = now_ns();
  /* the sequence number keeps two snapshots of the same second apart */
  snprintf(s->path, sizeof s->path, "%s/flamegraph-%" PRId64 "-%u.html", e->cfg->directory,
           (int64_t)(t / 1000000000LL), ++e->seq);
  fg_query q = {.group = 4};
  int rc = snapshot_head(e, &s->html);
  if (!rc) rc = fg_store_job_new(e->store, &q, &s->job);
  if (!rc) rc = e->h->api->queue_work(e->h, snap_work, snap_done, s);
  if (rc) {
    fg_job_free(s->job);
    sonde_buf_free(&s->html);
    free(s);
    return rc;
  }
  e->inflight++;
  return 0;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

static void respond_json(fgexp *e, sonde_http_request *r, int status, const sonde_buf *b) {
  e->h->api->http_respond(r, status, "application/json", "Cache-Control: no-store\r\n", b->data,
                          b->len);
}

static void respond_error(fgexp *e, sonde_http_request *r, int status, const char *msg) {
  sonde_buf b = {0};
  if (sonde_buf_append(&b, "{\"error\":", 9) || fg_json_str(&b, msg, strlen(msg)) ||
      sonde_buf_append(&b, "}", 1)) {
    e->h->api->http_respond(r, 500, "text/plain", NULL, "out of memory", 13);
  } else {
    respond_json(e, r, status, &b);
  }
  sonde_buf_free(&b);
}

/* /api/flame: the slots are taken on the loop, merged and written on the thread pool. */
typedef struct qjob {
  fgexp *e;
  sonde_http_request *req;
  fg_job *job;
  sonde_buf out;
  int rc;
} qjob;

static void qjob_work(void *arg) {
  qjob *q = arg;
  q->rc = fg_job_run(q->job, &q->out);
}

static void qjob_done(void *arg, int status) {
  qjob *q = arg;
  fgexp *e = q->e;
  int rc = status ? status : q->rc;
  if (rc)
    respond_error(e, q->req, 500, sonde_strerror(rc));
  else
    respond_json(e, q->req, 200, &q->out);
  fg_job_free(q->job);
  sonde_buf_free(&q->out);
  free(q);
  finish_inflight(e);
}

static int start_query(fgexp *e, sonde_http_request *r, const fg_query *fq) {
  qjob *q = calloc(1, sizeof(*q));
  if (!q) return SONDE_ENOMEM;
  q->e = e;
  q->req = r;
  int rc = fg_store_job_new(e->store, fq, &q->job);
  if (!rc) rc = e->h->api->queue_work(e->h, qjob_work, qjob_done, q);
  if (rc) {
    fg_job_free(q->job);
    free(q);
    return rc;
  }
  e->inflight++;
  return 0;
}

static void handle(void *arg, sonde_http_request *r) {
  fgexp *e = arg;
  const sonde_host_api *a = e->h->api;
  const char *m = a->http_method(r), *p = a->http_path(r), *qs = a->http_query(r);
  bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
  if (!fg_host_allowed(e->cfg->endpoint, a->http_header(r, "Host"))) {
    a->http_respond(r, 403, "text/plain", NULL, "unexpected Host\n", 16);
    return;
  }
  if (get && (!strcmp(p, "/") || !strcmp(p, "/index.html"))) {
    a->http_respond(r, 200, "text/html; charset=utf-8",
                    "Cache-Control: no-store\r\nContent-Security-Policy: default-src 'none'; "
                    "script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src "
                    "'self'; img-src data:\r\n",
                    fg_page, fg_page_len);
    return;
  }
  if (get && (!strcmp(p, "/api/flame") || !strcmp(p, "/api/labels"))) {
    int64_t now = now_ns();
    fg_store_prune(e->store, now);
    update_gauges(e);
    fg_query q;
    fg_qbufs bufs;
    char err[256];
    if (fg_query_parse(qs, now, &q, &bufs, err, sizeof err)) {
      respond_error(e, r, 400, err);
      return;
    }
    if (p[5] == 'f') {
      int rc = start_query(e, r, &q);
      if (rc) respond_error(e, r, 500, sonde_strerror(rc));
      return;
    }
    sonde_buf b = {0};
    int rc = fg_store_labels_json(e->store, q.from_ns, q.to_ns, &b);
    if (rc)
      respond_error(e, r, 500, sonde_strerror(rc));
    else
      respond_json(e, r, 200, &b);
    sonde_buf_free(&b);
    return;
  }
  if (!strcmp(m, "POST") && !strcmp(p, "/api/snapshot")) {
    /* a form on another site can POST here but cannot add a header */
    if (!a->http_header(r, "X-Sonde-Snapshot")) {
      respond_error(e, r, 403, "the X-Sonde-Snapshot header is required");
      return;
    }
    if (!e->cfg->directory) {
      respond_error(e, r, 409, "no directory configured for snapshots");
      return;
    }
    int rc = start_snapshot(e, r);
    if (rc) respond_error(e, r, 500, sonde_strerror(rc));
    return;
  }
  if (!strcmp(p, "/") || !strncmp(p, "/api/", 5)) {
    a->http_respond(r, 405, "text/plain", "Allow: GET, POST\r\n", "method not allowed\n", 19);
    return;
  }
  a->http_respond(r, 404, "text/plain", NULL, "not found\n", 10);
}

/* ---- component ------------------------------------------------------------------------------ */

static int fg_validate(const void *config, char *err, size_t errlen) {
  const fg_config *c = config;
  if (!c->endpoint || !*c->endpoint) {
    snprintf(err, errlen, "endpoint must not be empty");
    return SONDE_ECONFIG;
  }
  if (c->history_ns < c->slot_ns) {
    snprintf(err, errlen, "max_history must be at least one slot");
    return SONDE_ECONFIG;
  }
  return 0;
}

static int fg_consume(void *inst, sonde_batch *b) {
  fgexp *e = inst;
  uint64_t n = 0;
  int rc = fg_store_add(e->store, sonde_batch_profiles(b), now_ns(), &n);
  if (e->m_samples && n) e->h->api->metric_add(e->m_samples, (double)n);
  update_gauges(e);
  if (rc) sonde_log(e->h, SONDE_LOG_WARN, "cannot keep a profile: %s", sonde_strerror(rc));
  return rc;
}

static void prune_tick(void *arg) {
  fgexp *e = arg;
  fg_store_prune(e->store, now_ns());
  update_gauges(e);
}

static int fg_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  const fg_config *c = config;
  fgexp *e = calloc(1, sizeof(*e));
  if (!e) return SONDE_ENOMEM;
  e->h = h;
  e->cfg = c;
  fg_limits lim = {.slot_ns = c->slot_ns, .history_ns = c->history_ns, .max_bytes = c->max_bytes};
  int rc = fg_store_new(&lim, &e->store);
  if (rc) {
    free(e);
    return rc;
  }
  const sonde_host_api *a = h->api;
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_flamegraph_samples",
            "Profile samples added to the flame graph history.", NULL, &e->m_samples);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_exporter_flamegraph_history_bytes",
            "Memory held by the flame graph history.", NULL, &e->m_bytes);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_exporter_flamegraph_history_slots",
            "Time slots in the flame graph history.", NULL, &e->m_slots);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_flamegraph_dropped_slots",
            "Slots dropped from the history (too old or over max_bytes).", NULL, &e->m_dropped);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_flamegraph_dropped_samples",
            "Samples not kept: their slot alone had reached max_bytes.", NULL,
            &e->m_dropped_samples);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_flamegraph_snapshots",
            "Static HTML snapshots written.", NULL, &e->m_snapshots);
  *inst = e;
  return 0;
}

static int fg_start(void *inst) {
  fgexp *e = inst;
  const sonde_host_api *a = e->h->api;
  int rc = a->http_listen(e->h, e->cfg->endpoint, NULL, handle, e, &e->srv);
  if (rc) {
    sonde_log(e->h, SONDE_LOG_ERROR, "cannot listen on %s: %s", e->cfg->endpoint,
              sonde_strerror(rc));
    return rc;
  }
  rc = a->timer_start(e->h, e->cfg->slot_ns, e->cfg->slot_ns, prune_tick, e, &e->prune);
  if (rc) {
    a->http_close(e->srv);
    e->srv = NULL;
    return rc;
  }
  const char *ep = e->cfg->endpoint;
  sonde_log(e->h, SONDE_LOG_INFO, "flame graph on http://%s%s/", ep[0] == ':' ? "localhost" : "",
            ep);
  return 0;
}

static void fg_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  fgexp *e = inst;
  if (e->prune) e->h->api->timer_stop(e->prune);
  e->prune = NULL;
  if (e->srv) e->h->api->http_close(e->srv);
  e->srv = NULL;
  if (e->cfg->snapshot_on_shutdown && e->cfg->directory && fg_store_slots(e->store)) {
    int rc = start_snapshot(e, NULL);
    if (rc) sonde_log(e->h, SONDE_LOG_ERROR, "snapshot: %s", sonde_strerror(rc));
  }
  if (!e->inflight) {
    done(arg);
    return;
  }
  e->done = done;
  e->done_arg = arg;
}

static void fg_destroy(void *inst) {
  fgexp *e = inst;
  fg_store_free(e->store);
  free(e);
}

static const sonde_component fg_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "flamegraph",
    .doc = "a live flame graph page of the recent profiles on localhost, and HTML snapshots",
    .signals = SONDE_SIGNAL_PROFILES,
    .options = fg_options,
    .config_size = sizeof(fg_config),
    .validate = fg_validate,
    .create = fg_create,
    .start = fg_start,
    .consume = fg_consume,
    .shutdown = fg_shutdown,
    .destroy = fg_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-flamegraph", "1.0", &fg_component);

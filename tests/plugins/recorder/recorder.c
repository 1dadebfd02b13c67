/* Recording plug-ins for the service tests: every lifecycle call and every batch seen goes into one
 * event log that the test reads through rec_api.
 *   receiver  rec_src    (traces, metrics, logs): emits what the test hands it
 *   processor rec_pass   (all): forwards the same batch
 *   processor rec_mut    (traces, SONDE_COMP_MUTATES): renames the first span "mutated"
 *   exporter  rec_sink   (all): records what it gets
 *   exporter  rec_qsink  (all, SONDE_COMP_QUEUED): records what it is sent
 *   connector rec_conn   (traces): forwards to the pipelines it feeds */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recorder.h"

static char g_log[1 << 16];
static size_t g_len;
static char g_fail[128];

__attribute__((format(printf, 1, 2))) static void ev(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(g_log + g_len, sizeof g_log - g_len - 1, fmt, ap);
  va_end(ap);
  if (n > 0 && g_len + (size_t)n + 1 < sizeof g_log) {
    g_len += (size_t)n;
    g_log[g_len++] = '\n';
    g_log[g_len] = 0;
  }
}

typedef struct rec {
  const sonde_host *h;
  const char *kind;
  struct rec *next;
} rec;

static rec *g_srcs; /* running rec_src instances */

static const char *first_name(sonde_batch *b) {
  sonde_traces *t = sonde_batch_traces(b);
  if (t && t->n_resource_spans && t->resource_spans[0]->n_scope_spans &&
      t->resource_spans[0]->scope_spans[0]->n_spans)
    return t->resource_spans[0]->scope_spans[0]->spans[0]->name;
  return sonde_signal_name(sonde_batch_signal(b));
}

static const char *path(rec *r) {
  static char buf[256];
  snprintf(buf, sizeof buf, "%s::%s", r->kind, r->h->api->id(r->h));
  return buf;
}

static int mk(const sonde_host *h, const char *kind, uint32_t signals, void **inst) {
  rec *r = calloc(1, sizeof *r);
  if (!r)
    return SONDE_ENOMEM;
  r->h = h;
  r->kind = kind;
  if (strcmp(h->api->id(h), g_fail) == 0) {
    ev("create %s failed", path(r));
    free(r);
    return SONDE_EIO;
  }
  ev("create %s signals=%u", path(r), signals);
  *inst = r;
  return 0;
}

static int create_recv(const sonde_host *h, const void *c, uint32_t s, void **i) {
  return mk(h, "receivers", s, i);
}
static int create_proc(const sonde_host *h, const void *c, uint32_t s, void **i) {
  return mk(h, "processors", s, i);
}
static int create_exp(const sonde_host *h, const void *c, uint32_t s, void **i) {
  return mk(h, "exporters", s, i);
}
static int create_conn(const sonde_host *h, const void *c, uint32_t s, void **i) {
  return mk(h, "connectors", s, i);
}

static int start(void *inst) {
  rec *r = inst;
  ev("start %s", path(r));
  return 0;
}

static int start_src(void *inst) {
  rec *r = inst;
  r->next = g_srcs;
  g_srcs = r;
  return start(inst);
}

static void shutdown_(void *inst, void (*done)(void *), void *arg) {
  rec *r = inst;
  ev("shutdown %s", path(r));
  done(arg);
}

static void shutdown_src(void *inst, void (*done)(void *), void *arg) {
  for (rec **pp = &g_srcs; *pp; pp = &(*pp)->next)
    if (*pp == inst) {
      *pp = (*pp)->next;
      break;
    }
  shutdown_(inst, done, arg);
}

static void destroy(void *inst) {
  rec *r = inst;
  ev("destroy %s", path(r));
  free(r);
}

static int consume_pass(void *inst, sonde_batch *b) {
  rec *r = inst;
  ev("data %s %s %p", path(r), first_name(b), (void *)b);
  return r->h->api->consume(r->h, b, NULL);
}

static int consume_mut(void *inst, sonde_batch *b) {
  rec *r = inst;
  ev("data %s %s %p", path(r), first_name(b), (void *)b);
  sonde_traces *t = sonde_batch_traces(b);
  if (t && t->n_resource_spans && t->resource_spans[0]->n_scope_spans &&
      t->resource_spans[0]->scope_spans[0]->n_spans)
    t->resource_spans[0]->scope_spans[0]->spans[0]->name = sonde_batch_strdup(b, "mutated");
  return r->h->api->consume(r->h, b, NULL);
}

static int consume_sink(void *inst, sonde_batch *b) {
  rec *r = inst;
  ev("data %s %s %p", path(r), first_name(b), (void *)b);
  return 0;
}

static int send_q(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  rec *r = inst;
  ev("data %s %s %p", path(r), first_name(b), (void *)b);
  cb(arg, 0, 0);
  return 0;
}

#define ALL (SONDE_SIGNAL_TRACES | SONDE_SIGNAL_METRICS | SONDE_SIGNAL_LOGS)

static const sonde_component c_src = {
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_RECEIVER, .type = "rec_src",
    .doc = "test receiver", .signals = ALL, .create = create_recv, .start = start_src,
    .shutdown = shutdown_src, .destroy = destroy};
static const sonde_component c_pass = {
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_PROCESSOR, .type = "rec_pass",
    .doc = "test processor", .signals = ALL, .create = create_proc, .start = start,
    .consume = consume_pass, .shutdown = shutdown_, .destroy = destroy};
static const sonde_component c_mut = {
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_PROCESSOR, .type = "rec_mut",
    .doc = "test mutating processor", .signals = SONDE_SIGNAL_TRACES,
    .flags = SONDE_COMP_MUTATES, .create = create_proc, .start = start, .consume = consume_mut,
    .shutdown = shutdown_, .destroy = destroy};
static const sonde_component c_sink = {
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_EXPORTER, .type = "rec_sink",
    .doc = "test exporter", .signals = ALL, .create = create_exp, .start = start,
    .consume = consume_sink, .shutdown = shutdown_, .destroy = destroy};
static const sonde_component c_qsink = {
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_EXPORTER, .type = "rec_qsink",
    .doc = "test queued exporter", .signals = ALL, .flags = SONDE_COMP_QUEUED,
    .create = create_exp, .start = start, .send = send_q, .shutdown = shutdown_,
    .destroy = destroy};
static const sonde_component c_conn = {
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_CONNECTOR, .type = "rec_conn",
    .doc = "test connector", .signals = SONDE_SIGNAL_TRACES, .create = create_conn,
    .start = start, .consume = consume_pass, .shutdown = shutdown_, .destroy = destroy};

SONDE_PLUGIN_DEFINE("recorder", "1.0", &c_src, &c_pass, &c_mut, &c_sink, &c_qsink, &c_conn);

static const char *api_events(void) {
  return g_log;
}
static void api_reset(void) {
  g_len = 0;
  g_log[0] = 0;
  g_fail[0] = 0;
}
static int api_emit(const char *id, sonde_batch *b) {
  for (rec *r = g_srcs; r; r = r->next)
    if (strcmp(r->h->api->id(r->h), id) == 0)
      return r->h->api->consume(r->h, b, "test");
  return SONDE_ENOTFOUND;
}
static void api_fail_create(const char *id) {
  snprintf(g_fail, sizeof g_fail, "%s", id ? id : "");
}

__attribute__((visibility("default"))) const rec_api rec_api_v = {
    .events = api_events, .reset = api_reset, .emit = api_emit, .fail_create = api_fail_create};

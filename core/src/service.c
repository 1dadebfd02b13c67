#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "log.h"
#include "queue.h"

#define NSIG_IDX 4

typedef struct cfgent cfgent;
typedef struct inst inst;
typedef struct pipeline pipeline;

/* A configured component (one per id per section): its bound options. */
struct cfgent {
  sonde_kind kind;
  char *id;   /* "otlp/tempo" */
  char *path; /* "exporters::otlp/tempo" */
  const sonde_component *comp;
  size_t lib;
  void *cfg;
  sonde__qcfg qcfg; /* SONDE_COMP_QUEUED exporters */
  const sonde__cfg_node *node;
  bool used;
};

typedef struct route {
  pipeline **p;
  size_t n;
} route;

typedef struct mcache {
  const char *transport;
  sonde_metric *accepted, *refused;
} mcache;

typedef struct timer_rec {
  uv_timer_t t;
  inst *owner;
  void (*cb)(void *);
  void *arg;
  struct timer_rec *next, **pprev;
} timer_rec;

struct sonde_timer {
  timer_rec r;
};

typedef struct work_rec {
  uv_work_t w;
  inst *owner;
  void (*work)(void *);
  void (*done)(void *, int);
  void *arg;
} work_rec;

typedef struct srv_rec {
  sonde_http_server *srv;
  struct srv_rec *next;
} srv_rec;

struct inst {
  sonde_host host; /* first: a sonde_host* is an inst* */
  sonde__service *svc;
  cfgent *ce;
  char *who;    /* log prefix */
  pipeline *pl; /* processors: the pipeline they belong to */
  size_t pos;   /* processors: index in pl->procs */
  uint32_t signals;
  void *obj; /* the plug-in's instance */
  bool created, started, stopped;
  bool stuck;                /* never finished shutting down: not destroyed, not freed */
  route out[NSIG_IDX];       /* receivers, connectors: pipelines fed per signal */
  sonde__queue *q[NSIG_IDX]; /* queued exporters */
  mcache mc[NSIG_IDX][4];
  sonde_metric *proc_in[NSIG_IDX], *proc_out[NSIG_IDX];
  timer_rec *timers;
  srv_rec *servers;
  unsigned work;
  size_t order; /* topological rank */
  size_t indeg;
};

struct pipeline {
  char *name; /* "traces/x" */
  sonde_signal sig;
  inst **recv, **procs, **exps;
  size_t nrecv, nprocs, nexps;
};

enum state { ST_BUILT, ST_STARTING, ST_RUNNING, ST_STOPPING, ST_STOPPED };

struct sonde__service {
  uv_loop_t *loop;
  sonde__registry *reg;
  sonde__metrics *metrics;
  const sonde__cfg_node *root;
  cfgent *ents;
  size_t nents;
  pipeline *pls;
  size_t npls;
  inst **insts; /* in start order (reverse topological), extensions first */
  size_t ninsts;
  sonde__telemetry_cfg tel;
  enum state state;
  int fatal;
  /* stopping */
  size_t stop_pos;
  int stop_phase; /* of the component at stop_pos: 0 drain, 1 shutdown, 2 done */
  bool in_step, timers_init;
  int closing;
  uv_timer_t deadline, work_wait;
  int deadline_hit; /* 1: queues aborted; 2: grace over */
  void (*stop_done)(void *);
  void *stop_arg;
  unsigned pending; /* outstanding shutdown/drain callbacks of the current step */
};

/* ---- telemetry config ----------------------------------------------------------------------- */

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const metric_levels[] = {"none", "basic", "normal", "detailed", NULL};

typedef struct prom_cfg {
  char *host;
  int64_t port;
} prom_cfg;
typedef struct reader_cfg {
  struct {
    struct {
      prom_cfg prometheus;
    } exporter;
  } pull;
} reader_cfg;

static const sonde_option prom_opts[] = {
    SONDE_OPT("host", SONDE_OPT_STRING, prom_cfg, host, "localhost", "Address to serve on"),
    SONDE_OPT_RANGE("port", SONDE_OPT_INT, prom_cfg, port, "8888", 0, 65535, "Port"),
    SONDE_OPT_END};
static const sonde_option exp_opts[] = {{.name = "prometheus",
                                         .type = SONDE_OPT_TABLE,
                                         .offset = 0,
                                         .sub = prom_opts,
                                         .doc = "Serve Prometheus text"},
                                        SONDE_OPT_END};
static const sonde_option pull_opts[] = {{.name = "exporter",
                                          .type = SONDE_OPT_TABLE,
                                          .offset = 0,
                                          .sub = exp_opts,
                                          .doc = "The pull exporter"},
                                         SONDE_OPT_END};
static const sonde_option reader_opts[] = {{.name = "pull",
                                            .type = SONDE_OPT_TABLE,
                                            .offset = 0,
                                            .sub = pull_opts,
                                            .doc = "A pull reader"},
                                           SONDE_OPT_END};
static const sonde_option tel_logs_opts[] = {SONDE_OPT_ENUMV("level", sonde__telemetry_cfg,
                                                             logs.level, "info", log_levels,
                                                             "Lowest level logged"),
                                             SONDE_OPT_END};
static const sonde_option tel_metrics_opts[] = {
    SONDE_OPT_ENUMV("level", sonde__telemetry_cfg, metrics.level, "normal", metric_levels,
                    "none turns self-metrics off"),
    SONDE_OPT("address", SONDE_OPT_STRING, sonde__telemetry_cfg, metrics.address, NULL,
              "host:port of the Prometheus endpoint (older otelcol form of readers)"),
    {.name = "readers",
     .type = SONDE_OPT_TABLE_LIST,
     .offset = offsetof(sonde__telemetry_cfg, metrics.readers),
     .sub = reader_opts,
     .sub_size = sizeof(reader_cfg),
     .doc = "Metric readers (pull.exporter.prometheus)"},
    SONDE_OPT_END};
static const sonde_option tel_opts[] = {{.name = "logs",
                                         .type = SONDE_OPT_TABLE,
                                         .offset = 0,
                                         .sub = tel_logs_opts,
                                         .doc = "The service's own logs"},
                                        {.name = "metrics",
                                         .type = SONDE_OPT_TABLE,
                                         .offset = 0,
                                         .sub = tel_metrics_opts,
                                         .doc = "The service's own metrics"},
                                        SONDE_OPT_END};

const sonde__telemetry_cfg *sonde__service_telemetry(const sonde__service *s) {
  return &s->tel;
}

const char *sonde__service_metrics_endpoint(const sonde__service *s, char *buf, size_t len) {
  if (s->tel.metrics.level == 0) return NULL;
  if (s->tel.metrics.readers.n) {
    const reader_cfg *r = s->tel.metrics.readers.items;
    const prom_cfg *p = &r->pull.exporter.prometheus;
    bool v6 = p->host && strchr(p->host, ':');
    snprintf(buf, len, "%s%s%s:%lld", v6 ? "[" : "", p->host ? p->host : "localhost", v6 ? "]" : "",
             (long long)p->port);
    return buf;
  }
  snprintf(buf, len, "%s", s->tel.metrics.address ? s->tel.metrics.address : "localhost:8888");
  return buf;
}

/* ---- host vtable ---------------------------------------------------------------------------- */

static inst *I(const sonde_host *h) {
  return (inst *)h;
}

static const char *h_id(const sonde_host *h) {
  return I(h)->ce->id;
}

static void h_vlog(const sonde_host *h, sonde_log_level lvl, const char *fmt, va_list ap) {
  sonde__vlog(lvl, I(h)->who, fmt, ap);
}

static bool h_log_enabled(const sonde_host *h, sonde_log_level lvl) {
  return sonde__log_enabled(lvl);
}

static uv_loop_t *h_loop(const sonde_host *h) {
  return I(h)->svc->loop;
}

static int deliver_pipeline(pipeline *p, size_t pos, sonde_batch *b, bool shared);

/* Hands b to a processor or connector, copying first when it mutates and others share b. */
static int deliver_to(inst *to, sonde_batch *b, bool shared) {
  int i = sonde_signal_index(sonde_batch_signal(b));
  if (to->ce->kind == SONDE_KIND_PROCESSOR)
    sonde__metric_add(to->proc_in[i], (double)sonde_batch_items(b));
  if (!to->started || to->stopped) return SONDE_ESHUTDOWN;
  /* A merged batch can point into batches other pipelines still read: exclusive() looks there. */
  if ((to->ce->comp->flags & SONDE_COMP_MUTATES) && (shared || !sonde_batch_exclusive(b))) {
    sonde_batch *copy;
    int rc = sonde_batch_copy(b, &copy);
    if (rc) return rc;
    rc = to->ce->comp->consume(to->obj, copy);
    sonde_batch_unref(copy);
    return rc;
  }
  return to->ce->comp->consume(to->obj, b);
}

/* Fan-out to a pipeline's exporters. A full exporter queue is that exporter's loss (counted in
 * enqueue_failed), not the producer's: only when no exporter took the batch is it refused. */
static int deliver_exporters(pipeline *p, sonde_batch *b) {
  int i = sonde_signal_index(p->sig), last = 0;
  size_t ok = 0;
  if (p->nexps > 1) sonde_batch_ref(b); /* shared while it fans out: see route_batch */
  for (size_t k = 0; k < p->nexps; k++) {
    inst *e = p->exps[k];
    int rc;
    if (e->q[i] && (e->ce->comp->flags & SONDE_COMP_MUTATES) && !sonde_batch_exclusive(b)) {
      sonde_batch *copy; /* queued for later: it must not see the others' changes, nor they its */
      rc = sonde_batch_copy(b, &copy);
      if (!rc) {
        rc = sonde__queue_push(e->q[i], copy);
        sonde_batch_unref(copy);
      }
    } else if (e->q[i])
      rc = sonde__queue_push(e->q[i], b);
    else
      rc = deliver_to(e, b, p->nexps > 1);
    if (rc == 0)
      ok++;
    else
      last = rc;
  }
  if (p->nexps > 1) sonde_batch_unref(b);
  if (ok) return 0;
  return last == SONDE_EFULL ? SONDE_EREFUSED : last;
}

static int deliver_pipeline(pipeline *p, size_t pos, sonde_batch *b, bool shared) {
  if (pos < p->nprocs) return deliver_to(p->procs[pos], b, shared);
  return deliver_exporters(p, b);
}

static int route_batch(const route *r, sonde_batch *b) {
  int result = 0;
  /* While b goes to several pipelines, hold a reference of our own: a mutating stage anywhere
   * down them (not only the first one, to which `shared` is passed) then sees b shared
   * (refcount > 1) and gets a copy, so the other pipelines see b untouched. */
  if (r->n > 1) sonde_batch_ref(b);
  for (size_t k = 0; k < r->n; k++) {
    int rc = deliver_pipeline(r->p[k], 0, b, r->n > 1);
    if (rc && !result) result = rc;
  }
  if (r->n > 1) sonde_batch_unref(b);
  return result;
}

static mcache *receiver_metrics(inst *in, int i, const char *transport) {
  if (!transport) transport = "";
  for (int k = 0; k < 4; k++) {
    mcache *m = &in->mc[i][k];
    if (m->transport && strcmp(m->transport, transport) == 0) return m;
    if (!m->transport) {
      char labels[256], name[128];
      const char *item = sonde_signal_item_name((sonde_signal)(1u << i));
      snprintf(labels, sizeof labels, "receiver=%s,transport=%s", in->ce->id, transport);
      snprintf(name, sizeof name, "otelcol_receiver_accepted_%s", item);
      if (sonde__metrics_get(in->svc->metrics, SONDE_METRIC_COUNTER, name,
                             "Items successfully pushed into the pipeline", labels, &m->accepted))
        return NULL;
      snprintf(name, sizeof name, "otelcol_receiver_refused_%s", item);
      if (sonde__metrics_get(in->svc->metrics, SONDE_METRIC_COUNTER, name,
                             "Items that could not be pushed into the pipeline", labels,
                             &m->refused))
        return NULL;
      m->transport = transport; /* receivers pass string literals: kept by address */
      return m;
    }
  }
  return NULL;
}

static int h_consume(const sonde_host *h, sonde_batch *b, const char *transport) {
  inst *in = I(h);
  int i = sonde_signal_index(sonde_batch_signal(b));
  if (i < 0) return SONDE_EINVAL;
  if (in->svc->state != ST_RUNNING && in->svc->state != ST_STOPPING) return SONDE_ESHUTDOWN;
  int rc;
  switch (in->ce->kind) {
  case SONDE_KIND_PROCESSOR:
    sonde__metric_add(in->proc_out[i], (double)sonde_batch_items(b));
    return deliver_pipeline(in->pl, in->pos + 1, b, false);
  case SONDE_KIND_RECEIVER: {
    size_t items = sonde_batch_items(b);
    rc = route_batch(&in->out[i], b);
    mcache *m = receiver_metrics(in, i, transport);
    if (m) sonde__metric_add(rc ? m->refused : m->accepted, (double)items);
    return rc;
  }
  case SONDE_KIND_CONNECTOR:
    return route_batch(&in->out[i], b);
  default:
    return SONDE_EINVAL;
  }
}

static int h_metric(const sonde_host *h, sonde_metric_kind kind, const char *name, const char *help,
                    const char *labels, sonde_metric **out) {
  inst *in = I(h);
  char all[512];
  snprintf(all, sizeof all, "%s=%s%s%s", sonde__kind_name(in->ce->kind), in->ce->id,
           labels && *labels ? "," : "", labels ? labels : "");
  return sonde__metrics_get(in->svc->metrics, kind, name, help, all, out);
}

static void timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void timer_unlink(timer_rec *r) {
  if (r->pprev) {
    *r->pprev = r->next;
    if (r->next) r->next->pprev = r->pprev;
    r->pprev = NULL;
  }
}

static void timer_fire(uv_timer_t *t) {
  timer_rec *r = t->data;
  r->cb(r->arg);
}

static int h_timer_start(const sonde_host *h, int64_t after_ns, int64_t repeat_ns,
                         void (*cb)(void *), void *arg, sonde_timer **out) {
  inst *in = I(h);
  if (!cb || after_ns < 0 || repeat_ns < 0) return SONDE_EINVAL;
  timer_rec *r = calloc(1, sizeof(sonde_timer));
  if (!r) return SONDE_ENOMEM;
  r->owner = in;
  r->cb = cb;
  r->arg = arg;
  uv_timer_init(in->svc->loop, &r->t);
  r->t.data = r;
  uint64_t rep = (uint64_t)(repeat_ns / 1000000);
  if (repeat_ns > 0 && rep == 0) rep = 1;
  uv_timer_start(&r->t, timer_fire, (uint64_t)((after_ns + 999999) / 1000000), rep);
  r->next = in->timers;
  if (in->timers) in->timers->pprev = &r->next;
  in->timers = r;
  r->pprev = &in->timers;
  *out = (sonde_timer *)r;
  return 0;
}

static void h_timer_stop(sonde_timer *t) {
  if (!t) return;
  timer_rec *r = &t->r;
  timer_unlink(r);
  uv_timer_stop(&r->t);
  uv_close((uv_handle_t *)&r->t, timer_closed);
}

static void work_run(uv_work_t *w) {
  work_rec *r = w->data;
  r->work(r->arg);
}

static void work_after(uv_work_t *w, int status) {
  work_rec *r = w->data;
  r->owner->work--;
  r->done(r->arg, status == UV_ECANCELED ? SONDE_ECANCELED : 0);
  free(r);
}

static int h_queue_work(const sonde_host *h, void (*work)(void *), void (*done)(void *, int),
                        void *arg) {
  inst *in = I(h);
  if (!work || !done) return SONDE_EINVAL;
  work_rec *r = calloc(1, sizeof *r);
  if (!r) return SONDE_ENOMEM;
  r->owner = in;
  r->work = work;
  r->done = done;
  r->arg = arg;
  r->w.data = r;
  if (uv_queue_work(in->svc->loop, &r->w, work_run, work_after)) {
    free(r);
    return SONDE_EIO;
  }
  in->work++;
  return 0;
}

static int h_http_listen(const sonde_host *h, const char *endpoint, const sonde_http_options *opts,
                         sonde_http_handler handler, void *arg, sonde_http_server **out) {
  inst *in = I(h);
  char err[512];
  srv_rec *rec = calloc(1, sizeof *rec);
  if (!rec) return SONDE_ENOMEM;
  int rc =
      sonde__http_listen(in->svc->loop, endpoint, opts, handler, arg, &rec->srv, err, sizeof err);
  if (rc) {
    sonde__log(SONDE_LOG_ERROR, in->who, "%s", err);
    free(rec);
    return rc;
  }
  sonde__http_set_user(rec->srv, in);
  rec->next = in->servers;
  in->servers = rec;
  *out = rec->srv;
  return 0;
}

/* Servers are tracked per instance so that what a plug-in forgot to close is closed for it. */
static void h_http_close(sonde_http_server *srv);

static int h_service_status(const sonde_host *h) {
  sonde__service *s = I(h)->svc;
  if (s->fatal) return s->fatal;
  return s->state == ST_RUNNING ? 0 : SONDE_ESHUTDOWN;
}

static void h_report_fatal(const sonde_host *h, int err, const char *msg) {
  inst *in = I(h);
  sonde__log(SONDE_LOG_ERROR, in->who, "fatal: %s (%s)", msg ? msg : "", sonde_strerror(err));
  in->svc->fatal = err ? err : SONDE_EIO;
}

static void h_http_close(sonde_http_server *srv) {
  inst *in = srv ? sonde__http_user(srv) : NULL;
  for (srv_rec **pp = in ? &in->servers : NULL; pp && *pp; pp = &(*pp)->next) {
    if ((*pp)->srv == srv) {
      srv_rec *r = *pp;
      *pp = r->next;
      free(r);
      break;
    }
  }
  sonde__http_close(srv);
}

static int64_t h_send_timeout(const sonde_host *h) {
  const cfgent *e = I(h)->ce;
  return e->kind == SONDE_KIND_EXPORTER && (e->comp->flags & SONDE_COMP_QUEUED) ? e->qcfg.timeout
                                                                                : 0;
}

static const sonde_host_api g_api = {
    .struct_size = sizeof(sonde_host_api),
    .id = h_id,
    .vlog = h_vlog,
    .log_enabled = h_log_enabled,
    .loop = h_loop,
    .consume = h_consume,
    .metric = h_metric,
    .metric_add = sonde__metric_add,
    .metric_set = sonde__metric_set,
    .timer_start = h_timer_start,
    .timer_stop = h_timer_stop,
    .queue_work = h_queue_work,
    .http_listen = h_http_listen,
    .http_close = h_http_close,
    .http_method = sonde__http_method,
    .http_path = sonde__http_path,
    .http_query = sonde__http_query,
    .http_header = sonde__http_header,
    .http_body = sonde__http_body,
    .http_respond = sonde__http_respond,
    .service_status = h_service_status,
    .report_fatal = h_report_fatal,
    .send_timeout = h_send_timeout,
};

/* ---- building ---------------------------------------------------------------------------------
 */

static const sonde_kind g_sections[] = {SONDE_KIND_RECEIVER, SONDE_KIND_PROCESSOR,
                                        SONDE_KIND_EXPORTER, SONDE_KIND_CONNECTOR,
                                        SONDE_KIND_EXTENSION};

__attribute__((format(printf, 3, 4))) static int errat(char *err, size_t len, const char *fmt, ...);
static int errat(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return SONDE_ECONFIG;
}

/* "file:line:col: " of a node (or of key k of a map when k >= 0). */
static void pos(char *out, size_t len, const sonde__cfg_node *n, long k) {
  if (!n) {
    out[0] = 0;
    return;
  }
  if (k >= 0 && n->kind == SONDE__CFG_MAP && n->key_lines)
    snprintf(out, len, "%s:%u:%u: ", n->file ? n->file : "?", n->key_lines[k], n->key_cols[k]);
  else
    snprintf(out, len, "%s:%u:%u: ", n->file ? n->file : "?", n->line, n->col);
}

static void choices(char *out, size_t len, const char *const *v, size_t n) {
  size_t off = 0;
  out[0] = 0;
  for (size_t i = 0; i < n && off < len; i++)
    off += (size_t)snprintf(out + off, len - off, "%s%s", i ? ", " : "", v[i]);
  if (n == 0) snprintf(out, len, "none");
}

static void hint(char *out, size_t len, const char *word, const char *const *v, size_t n) {
  const char *dym = sonde__did_you_mean(word, v, n);
  char list[1024];
  choices(list, sizeof list, v, n);
  if (dym)
    snprintf(out, len, "did you mean \"%s\"? valid: %s", dym, list);
  else
    snprintf(out, len, "valid: %s", list);
}

static cfgent *find_ent(sonde__service *s, sonde_kind kind, const char *id) {
  for (size_t i = 0; i < s->nents; i++)
    if (s->ents[i].kind == kind && strcmp(s->ents[i].id, id) == 0) return &s->ents[i];
  return NULL;
}

static int bind_section(sonde__service *s, sonde_kind kind, const sonde__cfg_node *sec, char *err,
                        size_t errlen) {
  char where[512], h[2048];
  if (!sec || sec->kind == SONDE__CFG_NULL) return 0;
  if (sec->kind != SONDE__CFG_MAP) {
    pos(where, sizeof where, sec, -1);
    return errat(err, errlen, "%s%s: must be a map of component ids", where,
                 sonde__kind_section(kind));
  }
  for (size_t k = 0; k < sec->n; k++) {
    const char *id = sec->keys[k];
    pos(where, sizeof where, sec, (long)k);
    const char *slash = strchr(id, '/');
    size_t tl = slash ? (size_t)(slash - id) : strlen(id);
    char type[64];
    if (tl == 0 || tl >= sizeof type || (slash && !slash[1])) {
      return errat(err, errlen, "%s%s::%s: invalid component id (use type or type/name)", where,
                   sonde__kind_section(kind), id);
    }
    memcpy(type, id, tl);
    type[tl] = 0;
    size_t lib;
    const sonde_component *c = sonde__registry_find(s->reg, kind, type, &lib);
    if (!c) {
      size_t n;
      const char **types = sonde__registry_types(s->reg, kind, &n);
      if (!types) return SONDE_ENOMEM;
      hint(h, sizeof h, type, types, n);
      free(types);
      return errat(err, errlen, "%s%s::%s: unknown %s type \"%s\" (%s)", where,
                   sonde__kind_section(kind), id, sonde__kind_name(kind), type, h);
    }
    cfgent *ents = realloc(s->ents, (s->nents + 1) * sizeof *ents);
    if (!ents) return SONDE_ENOMEM;
    s->ents = ents;
    cfgent *e = &s->ents[s->nents];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->comp = c;
    e->lib = lib;
    e->node = sec->kids[k];
    e->id = strdup(id);
    size_t pl = strlen(id) + 32;
    e->path = malloc(pl);
    e->cfg = calloc(1, c->config_size ? c->config_size : 1);
    if (!e->id || !e->path || !e->cfg) {
      free(e->id);
      free(e->path);
      free(e->cfg);
      return SONDE_ENOMEM;
    }
    s->nents++;
    snprintf(e->path, pl, "%s::%s", sonde__kind_section(kind), id);
    sonde__opts_target t[2] = {{c->options, e->cfg}, {sonde__qcfg_options, &e->qcfg}};
    static const sonde_option none[] = {SONDE_OPT_END};
    if (!t[0].table) t[0].table = none;
    size_t nt = (kind == SONDE_KIND_EXPORTER && (c->flags & SONDE_COMP_QUEUED)) ? 2 : 1;
    int rc = sonde__opts_bind(t, nt, e->node, e->path, err, errlen);
    if (rc) return rc;
    if (c->validate) {
      char verr[1024] = "";
      rc = c->validate(e->cfg, verr, sizeof verr);
      if (rc) {
        pos(where, sizeof where, sec, (long)k);
        return errat(err, errlen, "%s%s: %s", where, e->path, *verr ? verr : sonde_strerror(rc));
      }
    }
  }
  return 0;
}

static inst *new_inst(sonde__service *s, cfgent *e) {
  inst **v = realloc(s->insts, (s->ninsts + 1) * sizeof *v);
  if (!v) return NULL;
  s->insts = v;
  inst *in = calloc(1, sizeof *in);
  if (!in) return NULL;
  in->host.api = &g_api;
  in->svc = s;
  in->ce = e;
  in->who = strdup(e->path);
  if (!in->who) {
    free(in);
    return NULL;
  }
  s->insts[s->ninsts++] = in;
  e->used = true;
  s->reg->libs[e->lib].used++;
  return in;
}

static inst *inst_for(sonde__service *s, cfgent *e) {
  for (size_t i = 0; i < s->ninsts; i++)
    if (s->insts[i]->ce == e && !s->insts[i]->pl) return s->insts[i];
  return new_inst(s, e);
}

static int add_ptr(void *vec, size_t *n, void *p) {
  void ***v = vec;
  void **nv = realloc(*v, (*n + 1) * sizeof *nv);
  if (!nv) return SONDE_ENOMEM;
  nv[(*n)++] = p;
  *v = nv;
  return 0;
}

static const char *const g_pl_keys[] = {"receivers", "processors", "exporters"};

static int bind_pipeline(sonde__service *s, const sonde__cfg_node *pls, size_t k, char *err,
                         size_t errlen) {
  char where[512], h[2048];
  const char *name = pls->keys[k];
  const sonde__cfg_node *pn = pls->kids[k];
  pos(where, sizeof where, pls, (long)k);
  const char *slash = strchr(name, '/');
  size_t sl = slash ? (size_t)(slash - name) : strlen(name);
  sonde_signal sig = sonde_signal_parse(name, sl);
  if (!sig || (slash && !slash[1])) {
    static const char *const sigs[] = {"traces", "metrics", "logs", "profiles"};
    char t[64];
    snprintf(t, sizeof t, "%.*s", (int)(sl < 60 ? sl : 60), name);
    hint(h, sizeof h, t, sigs, 4);
    return errat(err, errlen,
                 "%sservice::pipelines::%s: unknown signal \"%s\" (pipeline ids are "
                 "signal[/name]; %s)",
                 where, name, t, h);
  }
  if (!pn || pn->kind != SONDE__CFG_MAP) {
    return errat(err, errlen,
                 "%sservice::pipelines::%s: must be a map with receivers, processors, exporters",
                 where, name);
  }
  pipeline *p = &s->pls[s->npls];
  memset(p, 0, sizeof *p);
  p->sig = sig;
  if (!(p->name = strdup(name))) return SONDE_ENOMEM;
  s->npls++;
  for (size_t j = 0; j < pn->n; j++) {
    long which = -1;
    for (int q = 0; q < 3; q++)
      if (strcmp(pn->keys[j], g_pl_keys[q]) == 0) which = q;
    if (which < 0) {
      pos(where, sizeof where, pn, (long)j);
      hint(h, sizeof h, pn->keys[j], g_pl_keys, 3);
      return errat(err, errlen, "%sservice::pipelines::%s::%s: unknown key (%s)", where, name,
                   pn->keys[j], h);
    }
    const sonde__cfg_node *list = pn->kids[j];
    if (!list || list->kind == SONDE__CFG_NULL) continue;
    if (list->kind != SONDE__CFG_SEQ) {
      pos(where, sizeof where, list, -1);
      return errat(err, errlen, "%sservice::pipelines::%s::%s: must be a list of ids", where, name,
                   pn->keys[j]);
    }
    for (size_t i = 0; i < list->n; i++) {
      const sonde__cfg_node *item = list->kids[i];
      pos(where, sizeof where, item, -1);
      if (item->kind != SONDE__CFG_SCALAR) {
        return errat(err, errlen, "%sservice::pipelines::%s::%s[%zu]: must be an id", where, name,
                     pn->keys[j], i);
      }
      const char *id = item->scalar;
      sonde_kind kind = which == 0   ? SONDE_KIND_RECEIVER
                        : which == 1 ? SONDE_KIND_PROCESSOR
                                     : SONDE_KIND_EXPORTER;
      cfgent *e = find_ent(s, kind, id);
      if (!e && kind != SONDE_KIND_PROCESSOR) e = find_ent(s, SONDE_KIND_CONNECTOR, id);
      if (!e) {
        const char *ids[256];
        size_t n = 0;
        for (size_t q = 0; q < s->nents && n < 256; q++)
          if (s->ents[q].kind == kind ||
              (kind != SONDE_KIND_PROCESSOR && s->ents[q].kind == SONDE_KIND_CONNECTOR))
            ids[n++] = s->ents[q].id;
        hint(h, sizeof h, id, ids, n);
        return errat(
            err, errlen, "%sservice::pipelines::%s::%s: %s \"%s\" is not configured under %s (%s)",
            where, name, pn->keys[j], sonde__kind_name(kind), id, sonde__kind_section(kind), h);
      }
      if (!(e->comp->signals & sig)) {
        char sigs[128] = "";
        for (int b = 0; b < 4; b++)
          if (e->comp->signals & (1u << b))
            snprintf(sigs + strlen(sigs), sizeof sigs - strlen(sigs), "%s%s", *sigs ? ", " : "",
                     sonde_signal_name((sonde_signal)(1u << b)));
        return errat(err, errlen,
                     "%sservice::pipelines::%s::%s: %s does not support %s (it supports %s)", where,
                     name, pn->keys[j], e->path, sonde_signal_name(sig), sigs);
      }
      inst *in;
      if (kind == SONDE_KIND_PROCESSOR) {
        for (size_t q = 0; q < p->nprocs; q++)
          if (p->procs[q]->ce == e)
            return errat(err, errlen,
                         "%sservice::pipelines::%s::processors: \"%s\" is listed twice", where,
                         name, id);
        in = new_inst(s, e);
        if (!in) return SONDE_ENOMEM;
        in->pl = p;
        in->pos = p->nprocs;
        size_t wl = strlen(e->path) + strlen(name) + 8;
        char *who = malloc(wl);
        if (!who) return SONDE_ENOMEM;
        snprintf(who, wl, "%s (%s)", e->path, name);
        free(in->who);
        in->who = who;
      } else {
        in = inst_for(s, e);
        if (!in) return SONDE_ENOMEM;
        inst **v = which == 0 ? p->recv : p->exps;
        size_t nv = which == 0 ? p->nrecv : p->nexps;
        for (size_t q = 0; q < nv; q++)
          if (v[q] == in)
            return errat(err, errlen, "%sservice::pipelines::%s::%s: \"%s\" is listed twice", where,
                         name, pn->keys[j], id);
      }
      in->signals |= sig;
      int rc = which == 0   ? add_ptr(&p->recv, &p->nrecv, in)
               : which == 1 ? add_ptr(&p->procs, &p->nprocs, in)
                            : add_ptr(&p->exps, &p->nexps, in);
      if (rc) return rc;
    }
  }
  pos(where, sizeof where, pls, (long)k);
  if (!p->nrecv)
    return errat(err, errlen, "%sservice::pipelines::%s: must have at least one receiver", where,
                 name);
  if (!p->nexps)
    return errat(err, errlen, "%sservice::pipelines::%s: must have at least one exporter", where,
                 name);
  for (size_t q = 0; q < p->nrecv; q++) {
    inst *r = p->recv[q];
    int rc = add_ptr(&r->out[sonde_signal_index(sig)].p, &r->out[sonde_signal_index(sig)].n, p);
    if (rc) return rc;
  }
  return 0;
}

/* Edges of the data flow, for ordering: what in feeds. */
static size_t successors(sonde__service *s, inst *in, inst **out, size_t max) {
  size_t n = 0;
  for (size_t k = 0; k < s->npls; k++) {
    pipeline *p = &s->pls[k];
    inst **heads;
    size_t nheads;
    bool feeds = false;
    if (in->pl == p) {
      if (in->pos + 1 < p->nprocs) {
        if (n < max) out[n++] = p->procs[in->pos + 1];
        continue;
      }
      feeds = true;
    } else if (!in->pl) {
      for (size_t q = 0; q < p->nrecv; q++)
        if (p->recv[q] == in) feeds = true;
      if (feeds && p->nprocs) {
        if (n < max) out[n++] = p->procs[0];
        continue;
      }
    }
    if (!feeds) continue;
    heads = p->exps;
    nheads = p->nexps;
    for (size_t q = 0; q < nheads && n < max; q++)
      out[n++] = heads[q];
  }
  return n;
}

static int order_graph(sonde__service *s, char *err, size_t errlen) {
  size_t n = s->ninsts;
  /* No node has more successors than all pipelines' exporters plus one processor per pipeline. */
  size_t cap = 1;
  for (size_t k = 0; k < s->npls; k++)
    cap += s->pls[k].nexps + 1;
  inst **succ = malloc(cap * sizeof *succ);
  inst **topo = malloc((n + 1) * sizeof *topo);
  if (!succ || !topo) {
    free(succ);
    free(topo);
    return SONDE_ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    s->insts[i]->indeg = 0;
  for (size_t i = 0; i < n; i++) {
    size_t m = successors(s, s->insts[i], succ, cap);
    for (size_t k = 0; k < m; k++)
      succ[k]->indeg++;
  }
  size_t head = 0, tail = 0;
  for (size_t i = 0; i < n; i++)
    if (s->insts[i]->indeg == 0) topo[tail++] = s->insts[i];
  while (head < tail) {
    inst *in = topo[head++];
    size_t m = successors(s, in, succ, cap);
    for (size_t k = 0; k < m; k++)
      if (--succ[k]->indeg == 0) topo[tail++] = succ[k];
  }
  free(succ);
  if (tail < n) {
    free(topo);
    for (size_t i = 0; i < n; i++)
      if (s->insts[i]->indeg && s->insts[i]->ce->kind == SONDE_KIND_CONNECTOR)
        return errat(err, errlen, "service::pipelines: the pipelines form a cycle through %s",
                     s->insts[i]->ce->path);
    return errat(err, errlen, "service::pipelines: the pipelines form a cycle");
  }
  /* Start order: extensions, then sinks before sources (reverse topological). */
  size_t k = 0;
  inst **v = s->insts;
  for (size_t i = 0; i < n; i++)
    topo[i]->order = i;
  inst **sorted = malloc((n + 1) * sizeof *sorted);
  if (!sorted) {
    free(topo);
    return SONDE_ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    if (v[i]->ce->kind == SONDE_KIND_EXTENSION) sorted[k++] = v[i];
  for (size_t i = n; i-- > 0;)
    if (topo[i]->ce->kind != SONDE_KIND_EXTENSION) sorted[k++] = topo[i];
  free(topo);
  free(s->insts);
  s->insts = sorted;
  return 0;
}

int sonde__service_build(const sonde__cfg_node *root, sonde__registry *reg, uv_loop_t *loop,
                         sonde__metrics *metrics, sonde__service **out, char *err, size_t errlen) {
  char where[512], h[2048];
  static const char *const top[] = {"receivers",  "processors", "exporters",
                                    "connectors", "extensions", "service"};
  static const char *const svc_keys[] = {"extensions", "pipelines", "telemetry"};
  sonde__service *s = calloc(1, sizeof *s);
  if (!s) return SONDE_ENOMEM;
  s->loop = loop;
  s->reg = reg;
  s->metrics = metrics;
  s->root = root;
  int rc = SONDE_ECONFIG;
  if (!root || root->kind != SONDE__CFG_MAP) {
    pos(where, sizeof where, root, -1);
    errat(err, errlen,
          "%sthe configuration must be a map (receivers, exporters, "
          "service, ...)",
          where);
    goto fail;
  }
  for (size_t k = 0; k < root->n; k++) {
    bool ok = false;
    for (int q = 0; q < 6; q++)
      ok |= strcmp(root->keys[k], top[q]) == 0;
    if (!ok) {
      pos(where, sizeof where, root, (long)k);
      hint(h, sizeof h, root->keys[k], top, 6);
      errat(err, errlen, "%s%s: unknown top-level key (%s)", where, root->keys[k], h);
      goto fail;
    }
  }
  for (size_t q = 0; q < 5; q++) {
    sonde_kind kind = g_sections[q];
    if ((rc = bind_section(s, kind, sonde__cfg_get(root, sonde__kind_section(kind)), err, errlen)))
      goto fail;
  }
  rc = SONDE_ECONFIG;
  const sonde__cfg_node *svc = sonde__cfg_get(root, "service");
  if (!svc || svc->kind != SONDE__CFG_MAP) {
    pos(where, sizeof where, svc ? svc : root, -1);
    errat(err, errlen, "%sservice: missing; it must list the pipelines", where);
    goto fail;
  }
  for (size_t k = 0; k < svc->n; k++) {
    bool ok = false;
    for (int q = 0; q < 3; q++)
      ok |= strcmp(svc->keys[k], svc_keys[q]) == 0;
    if (!ok) {
      pos(where, sizeof where, svc, (long)k);
      hint(h, sizeof h, svc->keys[k], svc_keys, 3);
      errat(err, errlen, "%sservice::%s: unknown key (%s)", where, svc->keys[k], h);
      goto fail;
    }
  }
  sonde__opts_target tt = {tel_opts, &s->tel};
  if ((rc = sonde__opts_bind(&tt, 1, sonde__cfg_get(svc, "telemetry"), "service::telemetry", err,
                             errlen)))
    goto fail;
  rc = SONDE_ECONFIG;
  const sonde__cfg_node *exts = sonde__cfg_get(svc, "extensions");
  if (exts && exts->kind == SONDE__CFG_SEQ) {
    for (size_t i = 0; i < exts->n; i++) {
      const sonde__cfg_node *it = exts->kids[i];
      cfgent *e =
          it->kind == SONDE__CFG_SCALAR ? find_ent(s, SONDE_KIND_EXTENSION, it->scalar) : NULL;
      if (!e) {
        const char *ids[256];
        size_t n = 0;
        for (size_t q = 0; q < s->nents && n < 256; q++)
          if (s->ents[q].kind == SONDE_KIND_EXTENSION) ids[n++] = s->ents[q].id;
        pos(where, sizeof where, it, -1);
        hint(h, sizeof h, it->scalar ? it->scalar : "", ids, n);
        errat(err, errlen,
              "%sservice::extensions: extension \"%s\" is not configured under extensions (%s)",
              where, it->scalar ? it->scalar : "?", h);
        goto fail;
      }
      if (e->used) {
        pos(where, sizeof where, it, -1);
        errat(err, errlen, "%sservice::extensions: \"%s\" is listed twice", where, e->id);
        goto fail;
      }
      if (!new_inst(s, e)) {
        rc = SONDE_ENOMEM;
        goto fail;
      }
    }
  } else if (exts && exts->kind != SONDE__CFG_NULL) {
    pos(where, sizeof where, exts, -1);
    errat(err, errlen, "%sservice::extensions: must be a list of extension ids", where);
    goto fail;
  }
  const sonde__cfg_node *pls = sonde__cfg_get(svc, "pipelines");
  if (!pls || pls->kind != SONDE__CFG_MAP || pls->n == 0) {
    pos(where, sizeof where, pls ? pls : svc, -1);
    errat(err, errlen, "%sservice::pipelines: at least one pipeline is required", where);
    goto fail;
  }
  s->pls = calloc(pls->n, sizeof *s->pls);
  if (!s->pls) {
    rc = SONDE_ENOMEM;
    goto fail;
  }
  for (size_t k = 0; k < pls->n; k++)
    if ((rc = bind_pipeline(s, pls, k, err, errlen))) goto fail;
  /* A connector must both receive and export, or its data goes nowhere. */
  for (size_t i = 0; i < s->ninsts; i++) {
    inst *in = s->insts[i];
    if (in->ce->kind != SONDE_KIND_CONNECTOR) continue;
    bool as_recv = false, as_exp = false;
    for (size_t k = 0; k < s->npls; k++) {
      for (size_t q = 0; q < s->pls[k].nrecv; q++)
        as_recv |= s->pls[k].recv[q] == in;
      for (size_t q = 0; q < s->pls[k].nexps; q++)
        as_exp |= s->pls[k].exps[q] == in;
    }
    if (!as_recv || !as_exp) {
      errat(err, errlen,
            "service::pipelines: connector %s must be used as an exporter in one pipeline and as "
            "a receiver in another",
            in->ce->id);
      rc = SONDE_ECONFIG;
      goto fail;
    }
  }
  if ((rc = order_graph(s, err, errlen))) goto fail;
  *out = s;
  return 0;
fail:
  if (rc == SONDE_ENOMEM) snprintf(err, errlen, "out of memory while reading the configuration");
  sonde__service_free(s);
  return rc;
}

/* ---- starting ------------------------------------------------------------------------------- */

static int make_queues(sonde__service *s, inst *in) {
  for (int i = 0; i < NSIG_IDX; i++) {
    if (!(in->signals & (1u << i))) continue;
    const char *item = sonde_signal_item_name((sonde_signal)(1u << i));
    char name[128], labels[256], qlabels[300];
    sonde__queue_metrics m = {0};
    snprintf(labels, sizeof labels, "exporter=%s", in->ce->id);
    snprintf(qlabels, sizeof qlabels, "exporter=%s,data_type=%s", in->ce->id,
             sonde_signal_name((sonde_signal)(1u << i)));
    int rc;
    snprintf(name, sizeof name, "otelcol_exporter_sent_%s", item);
    rc = sonde__metrics_get(s->metrics, SONDE_METRIC_COUNTER, name,
                            "Items successfully sent to the destination", labels, &m.sent);
    snprintf(name, sizeof name, "otelcol_exporter_send_failed_%s", item);
    if (!rc)
      rc = sonde__metrics_get(s->metrics, SONDE_METRIC_COUNTER, name,
                              "Items the exporter failed to send (after retries)", labels,
                              &m.send_failed);
    snprintf(name, sizeof name, "otelcol_exporter_enqueue_failed_%s", item);
    if (!rc)
      rc = sonde__metrics_get(s->metrics, SONDE_METRIC_COUNTER, name,
                              "Items that could not be added to the sending queue", labels,
                              &m.enqueue_failed);
    if (!rc)
      rc = sonde__metrics_get(s->metrics, SONDE_METRIC_GAUGE, "otelcol_exporter_queue_size",
                              "Current size of the sending queue", qlabels, &m.size);
    if (!rc)
      rc = sonde__metrics_get(s->metrics, SONDE_METRIC_GAUGE, "otelcol_exporter_queue_capacity",
                              "Capacity of the sending queue", qlabels, &m.capacity);
    if (!rc)
      rc = sonde__queue_new(s->loop, &in->ce->qcfg,
                            (sonde__queue_target){in->ce->comp, in->obj, in->who},
                            (sonde_signal)(1u << i), m, &in->q[i]);
    if (rc) return rc;
  }
  return 0;
}

static int proc_metrics(sonde__service *s, inst *in) {
  for (int i = 0; i < NSIG_IDX; i++) {
    if (!(in->signals & (1u << i))) continue;
    char labels[300];
    snprintf(labels, sizeof labels, "processor=%s,otel_signal=%s", in->ce->id,
             sonde_signal_name((sonde_signal)(1u << i)));
    int rc =
        sonde__metrics_get(s->metrics, SONDE_METRIC_COUNTER, "otelcol_processor_incoming_items",
                           "Items passed to the processor", labels, &in->proc_in[i]);
    if (!rc)
      rc = sonde__metrics_get(s->metrics, SONDE_METRIC_COUNTER, "otelcol_processor_outgoing_items",
                              "Items emitted from the processor", labels, &in->proc_out[i]);
    if (rc) return rc;
  }
  return 0;
}

int sonde__service_start(sonde__service *s, char *err, size_t errlen) {
  s->state = ST_STARTING;
  /* Everything is created before anything starts: a component that cannot be created leaves
   * nothing running. */
  for (size_t i = 0; i < s->ninsts; i++) {
    inst *in = s->insts[i];
    const sonde_component *c = in->ce->comp;
    int rc = c->create(&in->host, in->ce->cfg, in->signals, &in->obj);
    if (rc) {
      snprintf(err, errlen, "%s: cannot create: %s", in->who, sonde_strerror(rc));
      return rc;
    }
    in->created = true;
    if (c->kind == SONDE_KIND_EXPORTER && (c->flags & SONDE_COMP_QUEUED))
      rc = make_queues(s, in);
    else if (c->kind == SONDE_KIND_PROCESSOR)
      rc = proc_metrics(s, in);
    if (rc) {
      snprintf(err, errlen, "%s: %s", in->who, sonde_strerror(rc));
      return rc;
    }
  }
  s->state = ST_RUNNING; /* starting receivers may produce at once */
  for (size_t i = 0; i < s->ninsts; i++) {
    inst *in = s->insts[i];
    int rc = in->ce->comp->start ? in->ce->comp->start(in->obj) : 0;
    if (rc) {
      s->state = ST_STARTING;
      snprintf(err, errlen, "%s: cannot start: %s", in->who, sonde_strerror(rc));
      return rc;
    }
    in->started = true;
  }
  return 0;
}

/* ---- stopping ------------------------------------------------------------------------------- */

static void stop_next(sonde__service *s);

static void step_done(void *arg) {
  sonde__service *s = arg;
  if (s->pending && --s->pending == 0 && !s->in_step) stop_next(s);
}

/* Stop order: the reverse of start order, extensions last. */
static inst *stop_at(sonde__service *s, size_t k) {
  size_t next = 0, n = s->ninsts;
  for (size_t i = n; i-- > 0;)
    if (s->insts[i]->ce->kind != SONDE_KIND_EXTENSION && next++ == k) return s->insts[i];
  for (size_t i = n; i-- > 0;)
    if (s->insts[i]->ce->kind == SONDE_KIND_EXTENSION && next++ == k) return s->insts[i];
  return NULL;
}

static void close_leftovers(inst *in) {
  while (in->timers) {
    sonde__log(SONDE_LOG_WARN, in->who, "a timer was left running at destroy; stopped");
    h_timer_stop((sonde_timer *)in->timers);
  }
  while (in->servers) {
    srv_rec *r = in->servers;
    in->servers = r->next;
    sonde__http_close(r->srv);
    free(r);
  }
}

static void finish_stop(sonde__service *s) {
  for (size_t k = 0; k < s->ninsts; k++) {
    inst *in = stop_at(s, k);
    for (int i = 0; i < NSIG_IDX; i++) {
      if (in->q[i]) {
        sonde__queue_free(in->q[i]);
        in->q[i] = NULL;
      }
    }
    /* destroy first: it may stop its own timers / servers; close_leftovers then closes only what
     * the plug-in forgot (the other order closed handles twice). */
    if (in->created && !in->stuck) in->ce->comp->destroy(in->obj);
    close_leftovers(in);
    in->created = false;
  }
  uv_timer_stop(&s->deadline);
  s->state = ST_STOPPED;
  if (s->stop_done) s->stop_done(s->stop_arg);
}

static void on_work_wait(uv_timer_t *t) {
  sonde__service *s = t->data;
  unsigned busy = 0;
  for (size_t i = 0; i < s->ninsts; i++)
    busy += s->insts[i]->work;
  if (busy == 0 || s->deadline_hit > 1) {
    uv_timer_stop(t);
    if (busy) /* their done callbacks would run into destroyed instances: keep those alive */
      for (size_t i = 0; i < s->ninsts; i++)
        if (s->insts[i]->work) s->insts[i]->stuck = true;
    finish_stop(s);
  }
}

static void on_deadline(uv_timer_t *t) {
  sonde__service *s = t->data;
  s->deadline_hit++;
  if (s->deadline_hit == 1) {
    sonde__warn("shutdown deadline reached: giving up on what is not sent yet");
    for (size_t i = 0; i < s->ninsts; i++)
      for (int q = 0; q < NSIG_IDX; q++)
        if (s->insts[i]->q[q]) sonde__queue_abort(s->insts[i]->q[q]);
    uv_timer_start(&s->deadline, on_deadline, 5000, 0); /* grace for shutdown callbacks */
    return;
  }
  inst *in = stop_at(s, s->stop_pos);
  if (in && s->pending) {
    sonde__error("%s did not finish shutting down within the grace period; not destroyed", in->who);
    in->stuck = true;
    s->pending = 0;
    s->stop_phase = 2;
    stop_next(s);
  }
}

static void stop_next(sonde__service *s) {
  s->in_step = true;
  for (;;) {
    inst *in = stop_at(s, s->stop_pos);
    if (!in) {
      s->in_step = false;
      /* Wait for offloaded work to come back before anything is destroyed. */
      uv_timer_start(&s->work_wait, on_work_wait, 0, 10);
      return;
    }
    if (s->stop_phase == 0) {
      s->stop_phase = 1;
      if (in->started) {
        s->pending = 1; /* held while the drains are started */
        for (int i = 0; i < NSIG_IDX; i++) {
          if (in->q[i]) {
            s->pending++;
            sonde__queue_drain(in->q[i], step_done, s);
          }
        }
        if (--s->pending) break;
      }
    }
    if (s->stop_phase == 1) {
      s->stop_phase = 2;
      if (in->started) {
        s->pending = 1;
        in->ce->comp->shutdown(in->obj, step_done, s);
        if (s->pending) break;
      }
    }
    in->stopped = true;
    s->stop_pos++;
    s->stop_phase = 0;
  }
  s->in_step = false;
}

void sonde__service_stop(sonde__service *s, int64_t deadline_ns, void (*done)(void *arg),
                         void *arg) {
  s->stop_done = done;
  s->stop_arg = arg;
  s->state = ST_STOPPING;
  s->stop_pos = 0;
  s->stop_phase = 0;
  uv_timer_init(s->loop, &s->deadline);
  uv_timer_init(s->loop, &s->work_wait);
  s->deadline.data = s->work_wait.data = s;
  s->timers_init = true;
  uv_timer_start(&s->deadline, on_deadline, (uint64_t)(deadline_ns / 1000000), 0);
  stop_next(s);
}

static void free_inst(inst *in) {
  for (int i = 0; i < NSIG_IDX; i++) {
    free(in->out[i].p);
    sonde__queue_free(in->q[i]);
  }
  free(in->who);
  free(in);
}

/* libuv runs close callbacks in no promised order: free after the last of the two. */
static void timer_closed_free(uv_handle_t *h) {
  sonde__service *s = h->data;
  if (--s->closing == 0) free(s);
}

void sonde__service_free(sonde__service *s) {
  if (!s) return;
  for (size_t i = 0; i < s->ninsts; i++) {
    inst *in = s->insts[i];
    if (in->created) { /* never stopped: destroy what was created */
      in->ce->comp->destroy(in->obj);
      close_leftovers(in);
    }
    if (in->stuck) continue; /* its late callbacks may still come */
    /* ce->lib is stale once the registry was trimmed (indices move): look the library up again */
    size_t lib;
    if (sonde__registry_find(s->reg, in->ce->kind, in->ce->comp->type, &lib))
      s->reg->libs[lib].used--;
    free_inst(in);
  }
  free(s->insts);
  for (size_t k = 0; k < s->npls; k++) {
    free(s->pls[k].name);
    free(s->pls[k].recv);
    free(s->pls[k].procs);
    free(s->pls[k].exps);
  }
  free(s->pls);
  for (size_t i = 0; i < s->nents; i++) {
    cfgent *e = &s->ents[i];
    if (e->comp->options) sonde__opts_free(e->comp->options, e->cfg);
    sonde__opts_free(sonde__qcfg_options, &e->qcfg);
    free(e->cfg);
    free(e->id);
    free(e->path);
  }
  free(s->ents);
  sonde__opts_free(tel_opts, &s->tel);
  if (s->timers_init) { /* the loop runs once more to close them; s must outlive that */
    s->closing = 2;
    s->deadline.data = s->work_wait.data = s;
    uv_close((uv_handle_t *)&s->deadline, timer_closed_free);
    uv_close((uv_handle_t *)&s->work_wait, timer_closed_free);
  } else {
    free(s);
  }
}

int sonde__service_emit(const sonde__service *s, sonde_buf *out) {
  int rc = 0;
  for (size_t q = 0; q < 5 && !rc; q++) {
    sonde_kind kind = g_sections[q];
    bool head = false;
    for (size_t i = 0; i < s->nents && !rc; i++) {
      const cfgent *e = &s->ents[i];
      if (e->kind != kind) continue;
      if (!head) rc = sonde_buf_printf(out, "%s:\n", sonde__kind_section(kind));
      head = true;
      if (!rc) rc = sonde_buf_printf(out, "  %s:\n", e->id);
      if (!rc && e->comp->options) rc = sonde__opts_emit(e->comp->options, e->cfg, 4, out);
      if (!rc && kind == SONDE_KIND_EXPORTER && (e->comp->flags & SONDE_COMP_QUEUED))
        rc = sonde__opts_emit(sonde__qcfg_options, &e->qcfg, 4, out);
    }
  }
  if (!rc) rc = sonde_buf_printf(out, "service:\n  telemetry:\n");
  if (!rc) rc = sonde__opts_emit(tel_opts, &s->tel, 4, out);
  const sonde__cfg_node *svc = sonde__cfg_get(s->root, "service");
  const sonde__cfg_node *exts = sonde__cfg_get(svc, "extensions");
  const sonde__cfg_node *pls = sonde__cfg_get(svc, "pipelines");
  sonde__cfg_node wrap = {.kind = SONDE__CFG_MAP, .n = 0};
  char *keys[2];
  sonde__cfg_node *kids[2];
  if (exts) {
    keys[wrap.n] = "extensions";
    kids[wrap.n++] = (sonde__cfg_node *)exts;
  }
  if (pls) {
    keys[wrap.n] = "pipelines";
    kids[wrap.n++] = (sonde__cfg_node *)pls;
  }
  wrap.keys = keys;
  wrap.kids = kids;
  sonde_buf tmp = {0};
  if (!rc && wrap.n) rc = sonde__cfg_emit(&wrap, &tmp);
  /* indent the service's remaining keys by two spaces under service: */
  for (size_t i = 0; !rc && i < tmp.len;) {
    const char *line = (const char *)tmp.data + i;
    const char *nl = memchr(line, '\n', tmp.len - i);
    size_t ll = nl ? (size_t)(nl - line) + 1 : tmp.len - i;
    rc = sonde_buf_printf(out, "  %.*s", (int)ll, line);
    i += ll;
  }
  sonde_buf_free(&tmp);
  return rc;
}

/* The otlp_http exporter: OTLP/HTTP (protobuf or JSON) over HTTP/1.1 keep-alive connections.
 *
 * A small client on the loop: up to max_conns connections per exporter, one request in flight on
 * each (no pipelining: a server may answer out of band with Connection: close), responses parsed
 * with the nodejs http_parser. Statuses follow otelcol's otlphttpexporter: 2xx is success (a
 * partial_success in the body is logged and counted), 429/502/503/504 retry (Retry-After honoured
 * on 429 and 503), everything else is permanent. Transport errors and timeouts retry. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <http_parser.h>

#include "otlp_common.h"
#include "otlp_exporters.h"

#define MAX_RESPONSE (1u << 20)

typedef struct hreq hreq;
typedef struct hconn hconn;
typedef struct ohttp ohttp;

struct hreq {
  hreq *next, *prev; /* g->all */
  hreq *qnext;       /* g->waiting */
  ohttp *x;
  sonde_batch *b;
  sonde_signal sig;
  int si;
  sonde_send_cb cb;
  void *arg;
  sonde_buf body;
  int enc_status;
  uint64_t deadline_ms;
  bool retried_stale, done, waiting;
  hconn *conn;
  /* otlp_http_call: not an OTLP export (no batch, no partial_success) */
  bool generic;
  char *path;
  const char *ctype;
  sonde_buf hdrs; /* "Name: value\r\n"... */
};

struct hconn {
  hconn *next, *prev;
  ohttp *x;
  otlp_conn *c;
  int origin;
  uint64_t created_ms;
  bool ready, reused, got_bytes, complete;
  hreq *req;
  http_parser p;
  int hdr; /* which header the current value belongs to: 0 none, 1 retry-after, 2 ctype */
  bool field_done;
  char field[32];
  size_t field_len;
  char retry_after[64], ctype[64];
  sonde_buf body;
};

struct ohttp {
  const sonde_host *h;
  const otlp_config *cfg;
  int64_t timeout_ns; /* request_timeout, or the core's timeout when unset */
  uv_loop_t *loop;
  otlp_url url[4];
  bool has_url[4];
  int origin[4]; /* signals with the same scheme, host and port share connections */
  SSL_CTX *tls;
  otlp_metrics m;
  sonde_buf extra_headers; /* "Name: value\r\n"... */
  hconn *conns;
  int nconns, live_conns;
  hreq *all, *wait_head, *wait_tail;
  int in_work;
  uv_timer_t tick;
  bool tick_open, stopping;
  void (*stop_done)(void *);
  void *stop_arg;
};

static void dispatch(ohttp *x);
static void maybe_stopped(ohttp *x);

/* ---- requests ------------------------------------------------------------------------------ */

static void req_complete(hreq *r, int status, int64_t retry_ns) {
  if (r->done) return;
  r->done = true;
  ohttp *x = r->x;
  if (r->prev)
    r->prev->next = r->next;
  else if (x->all == r)
    x->all = r->next;
  if (r->next) r->next->prev = r->prev;
  sonde_send_cb cb = r->cb;
  void *arg = r->arg;
  sonde_batch_unref(r->b);
  sonde_buf_free(&r->body);
  sonde_buf_free(&r->hdrs);
  free(r->path);
  free(r);
  cb(arg, status, retry_ns);
  maybe_stopped(x);
}

static void wait_push(ohttp *x, hreq *r, bool front) {
  r->waiting = true;
  if (front) {
    r->qnext = x->wait_head;
    x->wait_head = r;
    if (!x->wait_tail) x->wait_tail = r;
  } else {
    r->qnext = NULL;
    if (x->wait_tail)
      x->wait_tail->qnext = r;
    else
      x->wait_head = r;
    x->wait_tail = r;
  }
}

static void wait_remove(ohttp *x, hreq *r) {
  hreq **pp = &x->wait_head, *prev = NULL;
  while (*pp && *pp != r) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  if (!*pp) return;
  *pp = r->qnext;
  if (x->wait_tail == r) x->wait_tail = prev;
  r->qnext = NULL;
  r->waiting = false;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_free(hconn *k) {
  ohttp *x = k->x;
  if (k->prev)
    k->prev->next = k->next;
  else if (x->conns == k)
    x->conns = k->next;
  if (k->next) k->next->prev = k->prev;
  x->nconns--;
  if (k->c) otlp_conn_close(k->c);
  sonde_buf_free(&k->body);
  free(k);
}

/* A connection ended before its request was answered. */
static void conn_lost(hconn *k, const char *why) {
  ohttp *x = k->x;
  hreq *r = k->req;
  bool was_ready = k->ready;
  int origin = k->origin;
  k->req = NULL;
  conn_free(k);
  if (r) {
    r->conn = NULL;
    /* A keep-alive connection the server closed just as we reused it: the request was never
     * seen, so it goes again on a fresh connection once, as HTTP clients do. */
    if (!r->retried_stale && !x->stopping) {
      r->retried_stale = true;
      wait_push(x, r, true);
    } else {
      sonde_log(x->h, SONDE_LOG_WARN,
                "Exporting failed, will retry: failed to make an HTTP "
                "request: %s",
                why);
      req_complete(r, SONDE_ERETRY, 0);
    }
  } else if (!was_ready) {
    /* The connection attempt failed: what waited for this origin fails now and is retried by
     * the queue's backoff rather than hammering a dead backend. */
    for (hreq *w = x->wait_head, *n; w; w = n) {
      n = w->qnext;
      if (x->origin[w->si] != origin) continue;
      wait_remove(x, w);
      sonde_log(x->h, SONDE_LOG_WARN,
                "Exporting failed, will retry: failed to make an HTTP request: %s", why);
      req_complete(w, SONDE_ERETRY, 0);
    }
  }
  if (!x->stopping) dispatch(x);
  maybe_stopped(x);
}

static int64_t parse_retry_after(const char *v) {
  if (!*v) return 0;
  char *end;
  long s = strtol(v, &end, 10);
  if (end != v && !*end) return s > 0 ? (int64_t)s * 1000000000 : 0;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) { /* HTTP-date */
    time_t t = timegm(&tm), now = time(NULL);
    return t > now ? (int64_t)(t - now) * 1000000000 : 0;
  }
  return 0;
}

static void response_done(hconn *k) {
  ohttp *x = k->x;
  hreq *r = k->req;
  k->req = NULL;
  k->reused = true;
  int st = k->p.status_code;
  bool keep = http_should_keep_alive(&k->p) && !x->stopping;
  const char *ct = k->ctype;
  int64_t retry_ns = parse_retry_after(k->retry_after);
  sonde_buf body = k->body;
  memset(&k->body, 0, sizeof k->body);
  if (!keep) conn_free(k);
  if (r) {
    r->conn = NULL;
    if (st >= 200 && st <= 299) {
      int64_t rejected = 0;
      char msg[256] = "";
      /* otlp_http_call answers carry no OTLP partial_success */
      if (!r->generic && body.len && strstr(ct, "json"))
        otlp_json_partial_success((const char *)body.data, body.len, &rejected, msg, sizeof msg);
      else if (!r->generic && body.len)
        otlp_decode_partial_success(body.data, body.len, &rejected, msg, sizeof msg);
      if (rejected || msg[0]) {
        sonde_log(x->h, SONDE_LOG_WARN,
                  "Partial success response: message=\"%s\" dropped_%s=%" PRId64, msg,
                  sonde_signal_item_name(r->sig), rejected);
        sonde_metric *mc = x->m.rejected[sonde_signal_index(r->sig)];
        if (mc && rejected > 0) x->h->api->metric_add(mc, (double)rejected);
      }
      sonde_buf_free(&body);
      req_complete(r, 0, 0);
    } else {
      char msg[256] = "";
      int64_t unused;
      if (strstr(ct, "protobuf"))
        otlp_decode_rpc_status(body.data, body.len, msg, sizeof msg, &unused);
      else if (body.len)
        snprintf(msg, sizeof msg, "%.*s", (int)(body.len > 200 ? 200 : body.len),
                 (const char *)body.data);
      sonde_buf_free(&body);
      const char *url = r->path ? r->path : x->url[r->si].path;
      if (st == 429 || st == 502 || st == 503 || st == 504) {
        /* otelcol honours Retry-After only where it means throttling. */
        int64_t wait = st == 429 || st == 503 ? retry_ns : 0;
        sonde_log(x->h, SONDE_LOG_WARN,
                  "Exporting failed, will retry: error exporting items, request to %s responded "
                  "with HTTP Status Code %d, Message=%s",
                  url, st, msg);
        req_complete(r, SONDE_ERETRY, wait);
      } else {
        sonde_log(x->h, SONDE_LOG_ERROR,
                  "Exporting failed, dropping data (permanent): error exporting items, request "
                  "to %s responded with HTTP Status Code %d, Message=%s",
                  url, st, msg);
        req_complete(r, SONDE_EPERMANENT, 0);
      }
    }
  } else {
    sonde_buf_free(&body);
  }
  if (!x->stopping) dispatch(x);
  maybe_stopped(x);
}

static hconn *parser_conn(http_parser *p) {
  return p->data;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  hconn *k = parser_conn(p);
  if (k->field_done) {
    k->field_len = 0;
    k->field_done = false;
  }
  for (size_t i = 0; i < len && k->field_len + 1 < sizeof k->field; i++) {
    char ch = at[i];
    k->field[k->field_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
  }
  k->field[k->field_len] = 0;
  return 0;
}

static void append_str(char *dst, size_t cap, const char *at, size_t len) {
  size_t l = strlen(dst);
  if (l + len >= cap) len = cap - l - 1;
  memcpy(dst + l, at, len);
  dst[l + len] = 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  hconn *k = parser_conn(p);
  k->field_done = true;
  if (!strcmp(k->field, "retry-after"))
    append_str(k->retry_after, sizeof k->retry_after, at, len);
  else if (!strcmp(k->field, "content-type"))
    append_str(k->ctype, sizeof k->ctype, at, len);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  hconn *k = parser_conn(p);
  if (k->body.len + len <= MAX_RESPONSE && sonde_buf_append(&k->body, at, len))
    return 0; /* out of memory: the body is only informative */
  return 0;
}

static int on_message_complete(http_parser *p) {
  hconn *k = parser_conn(p);
  k->complete = true;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void reset_parser(hconn *k) {
  http_parser_init(&k->p, HTTP_RESPONSE);
  k->p.data = k;
  k->complete = false;
  k->got_bytes = false;
  k->field_done = false;
  k->field_len = 0;
  k->field[0] = 0;
  k->retry_after[0] = 0;
  k->ctype[0] = 0;
  k->body.len = 0;
}

static void conn_data(void *arg, otlp_conn *c, const uint8_t *data, size_t n) {
  hconn *k = arg;
  if (!k->req) {
    k->c = NULL;
    otlp_conn_close(c);
    conn_lost(k, "unsolicited response");
    return;
  }
  k->got_bytes = true;
  size_t done = http_parser_execute(&k->p, &parser_settings, (const char *)data, n);
  if (k->complete) {
    response_done(k);
    return;
  }
  if (done != n || HTTP_PARSER_ERRNO(&k->p) != HPE_OK) {
    char why[128];
    snprintf(why, sizeof why, "malformed HTTP response: %s",
             http_errno_description(HTTP_PARSER_ERRNO(&k->p)));
    k->req->retried_stale = true; /* the server saw it: no silent resend */
    k->c = NULL;
    otlp_conn_close(c);
    conn_lost(k, why);
  }
}

static void conn_closed(void *arg, otlp_conn *c, const char *why) {
  hconn *k = arg;
  k->c = NULL; /* closes itself */
  if (k->req && (k->got_bytes || !k->reused))
    k->req->retried_stale = true; /* only a reused, silent connection earns a free resend */
  if (k->req && k->got_bytes && !k->complete) {
    /* A body delimited by the connection's end. */
    http_parser_execute(&k->p, &parser_settings, NULL, 0);
    if (k->complete) {
      response_done(k);
      return;
    }
  }
  conn_lost(k, why);
}

static void start_request(hconn *k, hreq *r);

static void conn_connected(void *arg, otlp_conn *c) {
  hconn *k = arg;
  k->ready = true;
  dispatch(k->x);
}

static const otlp_conn_cbs http_conn_cbs = {
    .connected = conn_connected, .data = conn_data, .closed = conn_closed};

static int conn_new(ohttp *x, int origin) {
  hconn *k = calloc(1, sizeof *k);
  if (!k) return SONDE_ENOMEM;
  k->x = x;
  k->origin = origin;
  k->created_ms = uv_now(x->loop);
  const otlp_url *u = &x->url[origin];
  const char *ov = x->cfg->tls.server_name_override;
  otlp_conn_target t = {
      .host = u->host,
      .port = u->port,
      .tls = u->tls ? x->tls : NULL,
      .sni = ov && *ov ? ov : u->host,
      .verify = !x->cfg->tls.insecure_skip_verify,
  };
  int rc = otlp_conn_open(x->loop, &t, &http_conn_cbs, k, &x->live_conns, &k->c);
  if (rc) {
    free(k);
    return rc;
  }
  k->next = x->conns;
  if (x->conns) x->conns->prev = k;
  x->conns = k;
  x->nconns++;
  return 0;
}

static const char *const signal_paths[4] = {"/v1/traces", "/v1/metrics", "/v1/logs",
                                            "/v1development/profiles"};

static void start_request(hconn *k, hreq *r) {
  ohttp *x = k->x;
  const otlp_url *u = &x->url[r->si];
  const char *ctype = r->generic                          ? r->ctype
                      : x->cfg->encoding == OTLP_ENC_JSON ? "application/json"
                                                          : "application/x-protobuf";
  const char *enc = r->generic                              ? ""
                    : x->cfg->compression == OTLP_COMP_GZIP ? "Content-Encoding: gzip\r\n"
                    : x->cfg->compression == OTLP_COMP_ZSTD ? "Content-Encoding: zstd\r\n"
                                                            : "";
  const char *path = r->path ? r->path : u->path[0] ? u->path : "/";
  const char *ua =
      x->cfg->user_agent ? x->cfg->user_agent : "sonde-otlp-exporter/" SONDE_OTLP_VERSION;
  char head[4096];
  int hl = snprintf(head, sizeof head,
                    "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n"
                    "Content-Type: %s\r\nContent-Length: %zu\r\n%s",
                    path, u->authority, ua, ctype, r->body.len, enc);
  reset_parser(k);
  k->req = r;
  r->conn = k;
  int rc = 0;
  if (hl < 0 || (size_t)hl >= sizeof head) rc = SONDE_ETOOBIG;
  if (!rc) rc = otlp_conn_write(k->c, (const uint8_t *)head, (size_t)hl);
  if (!rc && x->extra_headers.len)
    rc = otlp_conn_write(k->c, x->extra_headers.data, x->extra_headers.len);
  if (!rc && r->hdrs.len) rc = otlp_conn_write(k->c, r->hdrs.data, r->hdrs.len);
  if (!rc) rc = otlp_conn_write(k->c, (const uint8_t *)"\r\n", 2);
  if (!rc) rc = otlp_conn_write(k->c, r->body.data, r->body.len);
  if (!rc) rc = otlp_conn_flush(k->c);
  if (rc) {
    r->retried_stale = true;
    conn_lost(k, "cannot write the request");
  }
}

/* Hands waiting requests to idle connections, opening new ones up to max_conns. */
static void dispatch(ohttp *x) {
  int connecting[4] = {0};
  for (hconn *k = x->conns; k; k = k->next)
    if (!k->ready) connecting[k->origin]++;
  for (hreq *r = x->wait_head, *n; r; r = n) {
    n = r->qnext;
    int o = x->origin[r->si];
    hconn *idle = NULL;
    for (hconn *k = x->conns; k && !idle; k = k->next)
      if (k->ready && !k->req && k->origin == o && k->c) idle = k;
    if (idle) {
      wait_remove(x, r);
      start_request(idle, r);
      return dispatch(x); /* the lists may have changed under us */
    }
    if (connecting[o] > 0) {
      connecting[o]--;
      continue;
    }
    if (x->nconns < x->cfg->max_conns) {
      int rc = conn_new(x, o);
      if (rc) {
        wait_remove(x, r);
        req_complete(r, SONDE_ERETRY, 0);
        return dispatch(x);
      }
    }
  }
}

/* ---- deadlines ---------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t) {
  ohttp *x = t->data;
  uint64_t now = uv_now(x->loop);
  uint64_t limit = x->timeout_ns > 0 ? (uint64_t)(x->timeout_ns / 1000000) : 30000;
  /* A connection attempt that hangs (a black-holed address) ends like a refused one. */
restart_conns:
  for (hconn *k = x->conns; k; k = k->next)
    if (!k->ready && now - k->created_ms > limit) {
      conn_lost(k, "connect timeout");
      goto restart_conns;
    }
restart:
  for (hreq *r = x->all; r; r = r->next) {
    if (!r->deadline_ms || now < r->deadline_ms) continue;
    if (r->conn) {
      /* Closing the connection is the only way to abandon an HTTP/1.1 request. */
      hconn *k = r->conn;
      k->req = NULL;
      r->conn = NULL;
      conn_free(k);
    } else if (r->waiting) {
      wait_remove(x, r);
    } else {
      continue; /* still encoding */
    }
    sonde_log(x->h, SONDE_LOG_WARN, "Exporting failed, will retry: context deadline exceeded");
    req_complete(r, SONDE_ERETRY, 0);
    goto restart; /* the list changed */
  }
  if (!x->stopping) dispatch(x);
  maybe_stopped(x);
}

/* ---- send ----------------------------------------------------------------------------------- */

static void encode_work(void *arg) {
  hreq *r = arg;
  sonde_buf raw = {0};
  if (r->x->cfg->encoding == OTLP_ENC_JSON) {
    r->enc_status = sonde_batch_to_json(r->b, &raw);
  } else {
    size_t n = sonde_batch_packed_size(r->b);
    r->enc_status = sonde_buf_reserve(&raw, n ? n : 1);
    if (!r->enc_status) raw.len = sonde_batch_pack(r->b, raw.data);
  }
  if (!r->enc_status) {
    if (r->x->cfg->compression == OTLP_COMP_NONE) {
      r->body = raw;
      memset(&raw, 0, sizeof raw);
    } else {
      r->enc_status =
          otlp_compress(r->x->cfg->compression, (int)r->x->cfg->compression_params.level, raw.data,
                        raw.len, &r->body);
    }
  }
  sonde_buf_free(&raw);
}

static void encode_done(void *arg, int status) {
  hreq *r = arg;
  ohttp *x = r->x;
  x->in_work--;
  if (status || r->enc_status) {
    int st = status ? status : r->enc_status;
    sonde_log(x->h, SONDE_LOG_ERROR, "cannot encode the request: %s", sonde_strerror(st));
    req_complete(r, st == SONDE_ENOMEM || st == SONDE_ECANCELED ? SONDE_ERETRY : SONDE_EPERMANENT,
                 0);
    return;
  }
  if (x->stopping) {
    req_complete(r, SONDE_ERETRY, 0);
    return;
  }
  if (x->timeout_ns > 0) r->deadline_ms = uv_now(x->loop) + (uint64_t)(x->timeout_ns / 1000000);
  wait_push(x, r, false);
  dispatch(x);
}

int otlp_http_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  ohttp *x = inst;
  if (x->stopping) return SONDE_ESHUTDOWN;
  int si = sonde_signal_index(sonde_batch_signal(b));
  if (!x->has_url[si]) return SONDE_EPERMANENT;
  hreq *r = calloc(1, sizeof *r);
  if (!r) return SONDE_ENOMEM;
  r->x = x;
  r->b = sonde_batch_ref(b);
  r->sig = sonde_batch_signal(b);
  r->si = si;
  r->cb = cb;
  r->arg = arg;
  r->next = x->all;
  if (x->all) x->all->prev = r;
  x->all = r;
  int rc = x->h->api->queue_work(x->h, encode_work, encode_done, r);
  if (rc) {
    x->all = r->next;
    if (x->all) x->all->prev = NULL;
    sonde_batch_unref(r->b);
    free(r);
    return rc;
  }
  x->in_work++;
  return 0;
}

int otlp_http_call(void *inst, otlp_call *c, sonde_send_cb cb, void *arg) {
  ohttp *x = inst;
  int si = sonde_signal_index(SONDE_SIGNAL_PROFILES), rc = 0;
  hreq *r = NULL;
  if (x->stopping) {
    rc = SONDE_ESHUTDOWN;
    goto fail;
  }
  if (!x->has_url[si] || !c->path || strpbrk(c->path, " \r\n")) {
    rc = SONDE_EINVAL;
    goto fail;
  }
  if (!(r = calloc(1, sizeof *r)) || !(r->path = strdup(c->path))) {
    rc = SONDE_ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < c->n_headers; i++) {
    const char *v = c->header_values[i] ? c->header_values[i] : "";
    if (strpbrk(c->header_names[i], "\r\n:") || strpbrk(v, "\r\n")) {
      rc = SONDE_EINVAL;
      goto fail;
    }
    if ((rc = sonde_buf_printf(&r->hdrs, "%s: %s\r\n", c->header_names[i], v))) goto fail;
  }
  r->x = x;
  r->generic = true;
  r->ctype = c->content_type ? c->content_type : "application/octet-stream";
  r->sig = SONDE_SIGNAL_PROFILES;
  r->si = si;
  r->cb = cb;
  r->arg = arg;
  r->body = c->body;
  memset(&c->body, 0, sizeof c->body);
  r->next = x->all;
  if (x->all) x->all->prev = r;
  x->all = r;
  if (x->timeout_ns > 0) r->deadline_ms = uv_now(x->loop) + (uint64_t)(x->timeout_ns / 1000000);
  wait_push(x, r, false);
  dispatch(x);
  return 0;
fail:
  sonde_buf_free(&c->body);
  if (r) {
    sonde_buf_free(&r->hdrs);
    free(r->path);
    free(r);
  }
  return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

int otlp_http_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const otlp_config *cfg = config;
  ohttp *x = calloc(1, sizeof *x);
  if (!x) return SONDE_ENOMEM;
  x->h = h;
  x->cfg = cfg;
  x->timeout_ns = cfg->request_timeout_ns > 0 ? cfg->request_timeout_ns
                  : h->api->struct_size > offsetof(sonde_host_api, send_timeout)
                      ? h->api->send_timeout(h)
                      : 5000000000LL;
  x->loop = h->api->loop(h);
  char err[512];
  int rc = 0;
  const char *per[4] = {cfg->traces_endpoint, cfg->metrics_endpoint, cfg->logs_endpoint,
                        cfg->profiles_endpoint};
  bool any_tls = false;
  for (int i = 0; i < 4; i++) {
    char url[1400];
    if (per[i] && *per[i]) {
      snprintf(url, sizeof url, "%s", per[i]);
    } else if (cfg->endpoint && *cfg->endpoint) {
      size_t l = strlen(cfg->endpoint);
      while (l && cfg->endpoint[l - 1] == '/')
        l--;
      snprintf(url, sizeof url, "%.*s%s", (int)l, cfg->endpoint, signal_paths[i]);
    } else {
      continue;
    }
    if ((rc = otlp_parse_http_url(url, &x->url[i], err, sizeof err))) {
      sonde_log(h, SONDE_LOG_ERROR, "%s", err);
      goto fail;
    }
    x->has_url[i] = true;
    any_tls |= x->url[i].tls;
  }
  for (int i = 0; i < 4; i++) {
    x->origin[i] = i;
    for (int j = 0; j < i; j++)
      if (x->has_url[i] && x->has_url[j] && x->url[i].tls == x->url[j].tls &&
          !strcmp(x->url[i].host, x->url[j].host) && !strcmp(x->url[i].port, x->url[j].port)) {
        x->origin[i] = j;
        break;
      }
  }
  if (any_tls && (rc = otlp_tls_ctx(&cfg->tls, "http/1.1", &x->tls, err, sizeof err))) {
    sonde_log(h, SONDE_LOG_ERROR, "%s", err);
    goto fail;
  }
  if ((rc = otlp_metrics_init(h, signals, &x->m))) goto fail;
  for (size_t i = 0; i < cfg->headers.n; i++) {
    const char *v = cfg->headers.values[i] ? cfg->headers.values[i] : "";
    if (strpbrk(cfg->headers.keys[i], "\r\n:") || strpbrk(v, "\r\n")) {
      sonde_log(h, SONDE_LOG_ERROR, "headers: invalid header \"%s\"", cfg->headers.keys[i]);
      rc = SONDE_ECONFIG;
      goto fail;
    }
    if ((rc = sonde_buf_printf(&x->extra_headers, "%s: %s\r\n", cfg->headers.keys[i], v)))
      goto fail;
  }
  *inst = x;
  return 0;
fail:
  otlp_http_destroy(x);
  return rc;
}

int otlp_http_start(void *inst) {
  ohttp *x = inst;
  uv_timer_init(x->loop, &x->tick);
  x->tick.data = x;
  x->tick_open = true;
  uv_timer_start(&x->tick, on_tick, 100, 100);
  uv_unref((uv_handle_t *)&x->tick);
  return 0;
}

static void on_tick_closed(uv_handle_t *hd) {
  ohttp *x = hd->data;
  void (*done)(void *) = x->stop_done;
  x->stop_done = NULL;
  if (done) done(x->stop_arg);
}

/* Once stopping and every request answered: connections close, and when libuv has freed them
 * (the tick polls live_conns) the timer closes and done runs. */
static void maybe_stopped(ohttp *x) {
  if (!x->stopping || x->all || x->in_work || !x->stop_done) return;
  while (x->conns)
    conn_free(x->conns);
  if (x->live_conns || !x->tick_open) return;
  x->tick_open = false;
  uv_close((uv_handle_t *)&x->tick, on_tick_closed);
}

void otlp_http_shutdown(void *inst, void (*done)(void *), void *arg) {
  ohttp *x = inst;
  x->stopping = true;
  x->stop_done = done;
  x->stop_arg = arg;
  /* The core calls this after draining its queue (or giving up at its deadline), so whatever is
   * still here has been abandoned: requests on the wire are dropped with their connection. */
  while (x->wait_head) {
    hreq *r = x->wait_head;
    wait_remove(x, r);
    req_complete(r, SONDE_ERETRY, 0);
  }
  int cancelled = 0;
  for (hreq *r = x->all, *n; r; r = n) {
    n = r->next;
    if (!r->conn) continue;
    hconn *k = r->conn;
    k->req = NULL;
    r->conn = NULL;
    conn_free(k);
    cancelled++;
    req_complete(r, SONDE_ERETRY, 0);
  }
  if (cancelled)
    sonde_log(x->h, SONDE_LOG_WARN, "shutdown: cancelled %d export(s) still in flight", cancelled);
  if (!x->tick_open) {
    x->stop_done = NULL;
    done(arg);
    return;
  }
  uv_ref((uv_handle_t *)&x->tick);
  maybe_stopped(x);
}

void otlp_http_destroy(void *inst) {
  ohttp *x = inst;
  if (!x) return;
  if (x->tls) SSL_CTX_free(x->tls);
  sonde_buf_free(&x->extra_headers);
  free(x);
}

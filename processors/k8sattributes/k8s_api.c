/* List + watch of pods against the Kubernetes API, on the loop.
 *
 * One connection at a time, one request per connection (Connection: close): a LIST of
 * /api/v1/pods filtered to this node, then a WATCH from the list's resourceVersion. The watch's
 * chunked body is a stream of newline-separated JSON events (ADDED, MODIFIED, DELETED, BOOKMARK,
 * ERROR). When the server ends a watch (its timeout) the next one resumes from the last
 * resourceVersion seen; 410 Gone (as a status or as an ERROR event) means that version is too old
 * and the pods are listed again. The connection (uv_getaddrinfo, libuv TCP, TLS through OpenSSL
 * memory BIOs: nothing blocks) is the OTLP exporters' otlp_conn. */
#include "k8s_api.h"

#include "otlp_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <http_parser.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#define MAX_LIST_BODY (256u << 20)
#define MAX_EVENT (16u << 20)
#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

enum { REQ_LIST, REQ_WATCH };

typedef struct kconn kconn;

struct k8s_api {
  const sonde_host *h;
  uv_loop_t *loop;
  k8s_api_opts o;
  char node[256];
  const char *resource; /* "pods" or "namespaces" (a literal) */
  char host[256], port[8];
  bool tls;
  char *token;
  char token_path[1024]; /* serviceAccount: re-read before each connection (tokens rotate) */
  SSL_CTX *ctx;
  char rv[128]; /* last resourceVersion seen */
  k8s_pod **pods;
  size_t n_pods;
  kconn *conn;
  uv_timer_t retry, sweep;
  bool retry_open, sweep_open, stopping;
  bool listed; /* a list succeeded once */
  int live;    /* open handles and connections */
  int backoff_ms;
  int want; /* what the retry timer starts */
  void (*done)(void *);
  void *done_arg;
};

/* One request; lives as long as its otlp_conn (freed with it). */
struct kconn {
  k8s_api *a;
  int kind;
  otlp_conn *oc;
  bool closing, complete;
  uint64_t started_ms;
  http_parser p;
  sonde_buf body; /* LIST: the whole body; WATCH: the unfinished event line */
};

static void metric_add(k8s_api *a, sonde_metric *m, double d) {
  if (m) a->h->api->metric_add(m, d);
}

static void pods_gauge(k8s_api *a) {
  if (a->o.m_pods) a->h->api->metric_set(a->o.m_pods, (double)a->n_pods);
}

/* ---- cache ---------------------------------------------------------------------------------- */

static void cache_clear(k8s_api *a) {
  for (size_t i = 0; i < a->n_pods; i++)
    k8s_pod_free(a->pods[i]);
  a->n_pods = 0;
}

/* A deleted pod is kept for the grace period, as otelcol does: its last spans and profiles are
 * often exported after the pod is gone. */
static void cache_mark_deleted(k8s_api *a, const char *uid) {
  for (size_t i = 0; i < a->n_pods; i++)
    if (!strcmp(a->pods[i]->uid, uid)) {
      if (a->o.delete_grace_ns <= 0) {
        k8s_pod_free(a->pods[i]);
        memmove(&a->pods[i], &a->pods[i + 1], (a->n_pods - i - 1) * sizeof(a->pods[0]));
        a->n_pods--;
      } else if (!a->pods[i]->deleted_ms) {
        a->pods[i]->deleted_ms = uv_now(a->loop) + 1; /* never 0 */
      }
      return;
    }
}

static void on_sweep(uv_timer_t *t) {
  k8s_api *a = t->data;
  uint64_t now = uv_now(a->loop), grace = (uint64_t)(a->o.delete_grace_ns / 1000000);
  size_t k = 0;
  for (size_t i = 0; i < a->n_pods; i++) {
    k8s_pod *p = a->pods[i];
    if (p->deleted_ms && now + 1 - p->deleted_ms >= grace)
      k8s_pod_free(p);
    else
      a->pods[k++] = p;
  }
  if (k != a->n_pods) {
    a->n_pods = k;
    pods_gauge(a);
  }
}

/* Takes p. A full cache evicts the pod stored longest ago (counted). */
static void cache_put(k8s_api *a, k8s_pod *p) {
  for (size_t i = 0; i < a->n_pods; i++)
    if (!strcmp(a->pods[i]->uid, p->uid)) {
      k8s_pod_free(a->pods[i]);
      memmove(&a->pods[i], &a->pods[i + 1], (a->n_pods - i - 1) * sizeof(a->pods[0]));
      a->n_pods--;
      break;
    }
  if (a->n_pods == a->o.max_pods) {
    k8s_pod_free(a->pods[0]);
    memmove(&a->pods[0], &a->pods[1], (a->n_pods - 1) * sizeof(a->pods[0]));
    a->n_pods--;
    metric_add(a, a->o.m_evictions, 1);
  }
  a->pods[a->n_pods++] = p;
}

const k8s_pod *k8s_api_by_name(const k8s_api *a, const char *name) {
  for (size_t i = a->n_pods; i-- > 0;)
    if (a->pods[i]->name && !strcmp(a->pods[i]->name, name)) return a->pods[i];
  return NULL;
}

const k8s_pod *k8s_api_by_uid(const k8s_api *a, const char *uid) {
  for (size_t i = a->n_pods; i-- > 0;)
    if (!strcmp(a->pods[i]->uid, uid)) return a->pods[i];
  return NULL;
}

const k8s_pod *k8s_api_by_ip(const k8s_api *a, const char *ip) {
  /* Pods on the host network share the node's IP: it names none of them. An IP is reused by the
   * next pod: a live pod wins over a deleted one in its grace period. */
  const k8s_pod *gone = NULL;
  for (size_t i = a->n_pods; i-- > 0;)
    if (a->pods[i]->ip && !a->pods[i]->host_network && !strcmp(a->pods[i]->ip, ip)) {
      if (!a->pods[i]->deleted_ms) return a->pods[i];
      if (!gone) gone = a->pods[i];
    }
  return gone;
}

const k8s_pod *k8s_api_by_container(const k8s_api *a, const char *id, const k8s_container **c) {
  for (size_t i = a->n_pods; i-- > 0;)
    for (size_t k = 0; k < a->pods[i]->n_containers; k++) {
      const k8s_container *kc = &a->pods[i]->containers[k];
      if (kc->id && !strcmp(kc->id, id)) {
        *c = kc;
        return a->pods[i];
      }
    }
  return NULL;
}

/* ---- connection ----------------------------------------------------------------------------- */

static void begin(k8s_api *a, int kind);
static void schedule(k8s_api *a, int kind, int delay_ms);

static void maybe_done(k8s_api *a) {
  if (!a->stopping || a->live || !a->done) return;
  void (*done)(void *) = a->done;
  a->done = NULL;
  done(a->done_arg);
}

/* The otlp_conn is freed: so is its owner. */
static void conn_freed(void *arg) {
  kconn *c = arg;
  k8s_api *a = c->a;
  sonde_buf_free(&c->body);
  free(c);
  maybe_done(a);
}

static void conn_close(kconn *c) {
  if (c->closing) return;
  c->closing = true;
  if (c->a->conn == c) c->a->conn = NULL;
  otlp_conn_close(c->oc); /* conn_freed follows once libuv let go */
}

/* The connection failed: close it and try the same request again later, with backoff. */
static void conn_fail(kconn *c, const char *what, const char *detail) {
  if (c->closing) return;
  k8s_api *a = c->a;
  sonde_log(a->h, SONDE_LOG_WARN, "Kubernetes API %s of %s %s:%s: %s: %s; retrying in %d ms",
            c->kind == REQ_LIST ? "list" : "watch", a->resource, a->host, a->port, what, detail,
            a->backoff_ms);
  metric_add(a, a->o.m_errors, 1);
  int kind = c->kind == REQ_WATCH && a->rv[0] ? REQ_WATCH : REQ_LIST;
  conn_close(c);
  schedule(a, kind, a->backoff_ms);
  a->backoff_ms = a->backoff_ms * 2 > 30000 ? 30000 : a->backoff_ms * 2;
}

static void send_request(kconn *c) {
  k8s_api *a = c->a;
  char path[1024], sel[400] = "";
  if (a->node[0]) snprintf(sel, sizeof sel, "fieldSelector=spec.nodeName%%3D%s&", a->node);
  if (c->kind == REQ_LIST)
    /* The first list may come from the API server's watch cache (resourceVersion=0, as client-go
     * does: no quorum read of etcd by every node at once); a list after 410 must not go back in
     * time, so it asks for the latest. */
    snprintf(path, sizeof path, "/api/v1/%s?%s%s", a->resource, sel,
             a->listed ? "" : "resourceVersion=0");
  else
    snprintf(path, sizeof path,
             "/api/v1/%s?%swatch=1&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%d",
             a->resource, sel, a->rv, 300 + (int)(uv_now(a->loop) % 300));
  sonde_buf req = {0};
  int rc = sonde_buf_printf(&req,
                            "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: sonde-k8sattributes\r\n"
                            "Accept: application/json\r\nConnection: close\r\n",
                            path, a->host, a->port);
  if (!rc && a->token && *a->token)
    rc = sonde_buf_printf(&req, "Authorization: Bearer %s\r\n", a->token);
  if (!rc) rc = sonde_buf_append(&req, "\r\n", 2);
  if (!rc) rc = otlp_conn_write(c->oc, req.data, req.len); /* sent once connected */
  sonde_buf_free(&req);
  if (rc) conn_fail(c, "cannot send the request", sonde_strerror(rc));
}

/* ---- responses ------------------------------------------------------------------------------ */

static void relist(k8s_api *a, const char *why) {
  sonde_log(a->h, SONDE_LOG_INFO, "Kubernetes API: %s; listing pods again", why);
  metric_add(a, a->o.m_relists, 1);
  a->rv[0] = 0;
  if (a->conn) conn_close(a->conn);
  schedule(a, REQ_LIST, 0);
}

static void set_rv(k8s_api *a, const kj_doc *d, int obj) {
  int t = kj_path(d, obj, "metadata.resourceVersion");
  char *rv = kj_str(d, t);
  if (!rv) return; /* absent or out of memory: the previous version still resumes correctly */
  if (strlen(rv) < sizeof a->rv && !strpbrk(rv, "&# \r\n")) snprintf(a->rv, sizeof a->rv, "%s", rv);
  free(rv);
}

static void handle_list(kconn *c) {
  k8s_api *a = c->a;
  kj_doc d;
  int rc = kj_parse((const char *)c->body.data, c->body.len, &d);
  if (rc) {
    conn_fail(c, "cannot decode the list", sonde_strerror(rc));
    return;
  }
  int items = kj_get(&d, 0, "items");
  cache_clear(a);
  size_t n = 0, bad = 0;
  for (int i = items >= 0 && d.t[items].type == KJ_ARRAY ? items + 1 : d.n;
       items >= 0 && i < d.t[items].next; i = d.t[i].next) {
    k8s_pod *p;
    int prc = k8s_pod_from_json(&d, i, &p);
    if (prc) {
      bad++;
      continue;
    }
    cache_put(a, p);
    n++;
  }
  set_rv(a, &d, 0);
  kj_free(&d);
  a->listed = true;
  pods_gauge(a);
  a->backoff_ms = 500;
  sonde_log(a->h, SONDE_LOG_INFO, "Kubernetes API: listed %zu %s%s%s (resourceVersion %s)%s", n,
            a->resource, a->node[0] ? " on node " : "", a->node, a->rv,
            bad ? "; some undecodable" : "");
  conn_close(c);
  begin(a, REQ_WATCH);
}

/* One watch event line. false when the watch must stop (c is closed). */
static bool handle_event(kconn *c, const char *line, size_t len) {
  k8s_api *a = c->a;
  kj_doc d;
  if (kj_parse(line, len, &d)) {
    sonde_log(a->h, SONDE_LOG_WARN, "Kubernetes API: undecodable watch event skipped");
    return true;
  }
  metric_add(a, a->o.m_events, 1);
  char *type = kj_str(&d, kj_get(&d, 0, "type"));
  int obj = kj_get(&d, 0, "object");
  if (!type) {
    /* no type, or out of memory */
  } else if (!strcmp(type, "ERROR")) {
    long long code = kj_int(&d, kj_get(&d, obj, "code"), 0);
    char *msg = kj_str(&d, kj_get(&d, obj, "message"));
    if (code == 410) {
      kj_free(&d);
      free(type);
      char why[300];
      snprintf(why, sizeof why, "watch expired (410 Gone: %s)", msg ? msg : "");
      free(msg);
      relist(a, why);
      return false;
    }
    sonde_log(a->h, SONDE_LOG_WARN, "Kubernetes API watch error %lld: %s", code, msg ? msg : "");
    free(msg);
  } else if (!strcmp(type, "BOOKMARK")) {
    set_rv(a, &d, obj);
  } else if (!strcmp(type, "ADDED") || !strcmp(type, "MODIFIED") || !strcmp(type, "DELETED")) {
    k8s_pod *p;
    int rc = k8s_pod_from_json(&d, obj, &p);
    if (!rc) {
      set_rv(a, &d, obj);
      if (type[0] == 'D') {
        cache_mark_deleted(a, p->uid);
        k8s_pod_free(p);
      } else {
        cache_put(a, p);
      }
      pods_gauge(a);
    } else if (rc == SONDE_ENOMEM) {
      /* The cache would miss this change for good: start over from a list. */
      kj_free(&d);
      free(type);
      relist(a, "out of memory while decoding a watch event");
      return false;
    }
  }
  kj_free(&d);
  free(type);
  return true;
}

static void watch_bytes(kconn *c, const char *at, size_t len) {
  while (len && !c->closing) {
    const char *nl = memchr(at, '\n', len);
    size_t take = nl ? (size_t)(nl - at) : len;
    if (c->body.len + take > MAX_EVENT) {
      conn_fail(c, "watch event too large", "over 16 MiB");
      return;
    }
    if (sonde_buf_append(&c->body, at, take)) {
      conn_fail(c, "watch", "out of memory");
      return;
    }
    if (!nl) return;
    at += take + 1;
    len -= take + 1;
    size_t n = c->body.len;
    c->body.len = 0;
    if (n && !handle_event(c, (const char *)c->body.data, n)) return;
  }
}

static int on_body(http_parser *p, const char *at, size_t len) {
  kconn *c = p->data;
  if (c->closing) return 1;
  if (c->kind == REQ_WATCH && p->status_code == 200) {
    watch_bytes(c, at, len);
    return c->closing ? 1 : 0;
  }
  if (c->body.len + len > MAX_LIST_BODY) {
    conn_fail(c, "response too large", "over 256 MiB");
    return 1;
  }
  if (sonde_buf_append(&c->body, at, len)) {
    conn_fail(c, "response", "out of memory");
    return 1;
  }
  return 0;
}

static int on_complete(http_parser *p) {
  kconn *c = p->data;
  c->complete = true;
  return 0;
}

static const http_parser_settings settings = {.on_body = on_body,
                                              .on_message_complete = on_complete};

/* A complete non-watch response, or a watch that ended. */
static void response_end(kconn *c) {
  k8s_api *a = c->a;
  int st = c->p.status_code;
  if (st == 200 && c->kind == REQ_LIST) {
    handle_list(c);
    return;
  }
  if (st == 200) {
    /* The server ended the watch (its timeout): resume where it stopped. */
    sonde_log(a->h, SONDE_LOG_DEBUG, "Kubernetes API: watch ended; resuming at resourceVersion %s",
              a->rv);
    /* A watch that ends at once, again and again (a proxy cutting it), backs off instead of
     * spinning; one that ran for a while resumes at once. */
    bool quick = uv_now(a->loop) - c->started_ms < 1000;
    conn_close(c);
    int delay = quick ? a->backoff_ms : 0;
    if (quick)
      a->backoff_ms = a->backoff_ms * 2 > 30000 ? 30000 : a->backoff_ms * 2;
    else
      a->backoff_ms = 500;
    schedule(a, a->rv[0] ? REQ_WATCH : REQ_LIST, delay);
    return;
  }
  if (st == 410) {
    conn_close(c);
    relist(a, "resourceVersion too old (HTTP 410 Gone)");
    return;
  }
  char detail[400];
  snprintf(detail, sizeof detail, "HTTP %d %.*s", st, (int)(c->body.len > 300 ? 300 : c->body.len),
           c->body.data ? (char *)c->body.data : "");
  for (char *q = detail; *q; q++)
    if (*q == '\n' || *q == '\r') *q = ' ';
  if (st == 401 || st == 403) {
    sonde_log(a->h, SONDE_LOG_ERROR,
              "Kubernetes API refused the credentials (%s): check auth_type, the service "
              "account token and its RBAC (get/list/watch %s); %s stay unknown and data "
              "passes through unchanged",
              detail, a->resource, a->resource);
    metric_add(a, a->o.m_errors, 1);
    int kind = c->kind;
    conn_close(c);
    schedule(a, kind == REQ_WATCH && a->rv[0] ? REQ_WATCH : REQ_LIST, a->backoff_ms);
    a->backoff_ms = a->backoff_ms * 2 > 30000 ? 30000 : a->backoff_ms * 2;
    return;
  }
  conn_fail(c, "unexpected answer", detail);
}

static void feed(kconn *c, const char *data, size_t n) {
  size_t done = http_parser_execute(&c->p, &settings, data, n);
  if (c->closing) return;
  if (c->complete) {
    response_end(c);
    return;
  }
  if (done != n || HTTP_PARSER_ERRNO(&c->p) != HPE_OK)
    conn_fail(c, "malformed HTTP response", http_errno_description(HTTP_PARSER_ERRNO(&c->p)));
}

static void on_eof(kconn *c, const char *why) {
  if (c->closing) return;
  if (c->p.status_code) {
    http_parser_execute(&c->p, &settings, NULL, 0); /* a body that ends with the connection */
    if (c->closing) return;
    if (c->complete || c->kind == REQ_WATCH) {
      response_end(c);
      return;
    }
  }
  conn_fail(c, "connection lost", why);
}

static void on_connected(void *arg, otlp_conn *oc) {
  (void)oc;
  send_request(arg);
}

static void on_data(void *arg, otlp_conn *oc, const uint8_t *p, size_t n) {
  (void)oc;
  feed(arg, (const char *)p, n);
}

/* The server closed the connection, or reading failed: either may end a response. */
static void on_ended(void *arg, otlp_conn *oc, bool clean, const char *why) {
  (void)oc;
  (void)clean;
  on_eof(arg, why);
}

static void on_closed(void *arg, otlp_conn *oc, const char *why) {
  (void)oc;
  conn_fail(arg, "connection", why);
}

static const otlp_conn_cbs conn_cbs = {.connected = on_connected,
                                       .data = on_data,
                                       .closed = on_closed,
                                       .ended = on_ended,
                                       .freed = conn_freed};

static char *read_file(const char *path, size_t *len);
static void trim(char *s);

/* The kubelet rotates projected service account tokens (about hourly): the file is read again
 * before each connection, as client-go does. A small file on a tmpfs, read in microseconds; kept
 * on the loop rather than paying a thread-pool round trip per connection. */
static void reread_token(k8s_api *a) {
  if (!a->token_path[0]) return;
  char *t = read_file(a->token_path, NULL);
  if (!t) return; /* keep the one we have */
  trim(t);
  free(a->token);
  a->token = t;
}

static void begin(k8s_api *a, int kind) {
  if (a->stopping) return;
  if (a->conn) conn_close(a->conn);
  kconn *c = calloc(1, sizeof(*c));
  if (!c) {
    schedule(a, kind, a->backoff_ms);
    return;
  }
  c->a = a;
  c->kind = kind;
  c->started_ms = uv_now(a->loop);
  reread_token(a);
  http_parser_init(&c->p, HTTP_RESPONSE);
  c->p.data = c;
  /* A watch is quiet for minutes: keepalive notices a peer that vanished without a FIN. */
  otlp_conn_target t = {.host = a->host,
                        .port = a->port,
                        .tls = a->tls ? a->ctx : NULL,
                        .sni = a->host,
                        .verify = true,
                        .keepalive_s = 30};
  if (otlp_conn_open(a->loop, &t, &conn_cbs, c, &a->live, &c->oc)) {
    free(c);
    schedule(a, kind, a->backoff_ms);
    return;
  }
  a->conn = c;
}

static void on_retry(uv_timer_t *t) {
  k8s_api *a = t->data;
  begin(a, a->want);
}

static void schedule(k8s_api *a, int kind, int delay_ms) {
  if (a->stopping || !a->retry_open) return;
  a->want = kind;
  uv_timer_start(&a->retry, on_retry, (uint64_t)delay_ms, 0);
}

/* ---- credentials ---------------------------------------------------------------------------- */

/* A small local file read whole (credentials, at start). NULL when unreadable. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  sonde_buf b = {0};
  char chunk[4096];
  size_t n;
  bool ok = true;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && ok)
    ok = !sonde_buf_append(&b, chunk, n) && b.len < (4u << 20);
  fclose(f);
  if (!ok || sonde_buf_append(&b, "", 1)) {
    sonde_buf_free(&b);
    return NULL;
  }
  if (len) *len = b.len - 1;
  return (char *)b.data;
}

static void trim(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
    s[--n] = 0;
}

static int load_ca_pem(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  if (!b) return SONDE_ENOMEM;
  X509_STORE *st = SSL_CTX_get_cert_store(ctx);
  int added = 0;
  X509 *x;
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
    if (X509_STORE_add_cert(st, x) == 1) added++;
    X509_free(x);
  }
  ERR_clear_error();
  BIO_free(b);
  return added ? 0 : SONDE_EPROTO;
}

/* "https://host:port/..." into a->host, a->port, a->tls. */
static int parse_server(k8s_api *a, const char *url) {
  const char *p = url;
  a->tls = true;
  if (!strncmp(p, "https://", 8)) {
    p += 8;
  } else if (!strncmp(p, "http://", 7)) {
    p += 7;
    a->tls = false;
  }
  size_t hl;
  const char *port = NULL;
  if (*p == '[') {
    const char *e = strchr(p, ']');
    if (!e) return SONDE_ECONFIG;
    hl = (size_t)(e - p - 1);
    p++;
    port = e[1] == ':' ? e + 2 : NULL;
  } else {
    hl = strcspn(p, ":/");
    port = p[hl] == ':' ? p + hl + 1 : NULL;
  }
  if (!hl || hl >= sizeof a->host) return SONDE_ECONFIG;
  memcpy(a->host, p, hl);
  a->host[hl] = 0;
  size_t pl = port ? strcspn(port, "/") : 0;
  if (pl >= sizeof a->port) return SONDE_ECONFIG;
  if (pl) {
    memcpy(a->port, port, pl);
    a->port[pl] = 0;
  } else {
    snprintf(a->port, sizeof a->port, "%s", a->tls ? "443" : "80");
  }
  return 0;
}

/* The value of the first "key: value" line of a kubeconfig (quotes removed), or NULL. A kubeconfig
 * is YAML; this reads the common single-cluster, single-user shape that kubectl and kind write
 * (block style, one value per line) and takes the first cluster and user. */
static char *kubeconfig_value(const char *text, const char *key) {
  size_t kl = strlen(key);
  for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
    const char *q = l;
    while (*q == ' ' || *q == '\t' || *q == '-')
      q++;
    if (strncmp(q, key, kl) || q[kl] != ':') continue;
    q += kl + 1;
    while (*q == ' ' || *q == '\t')
      q++;
    size_t n = strcspn(q, "\r\n");
    if (n && (*q == '"' || *q == '\'') && q[n - 1] == *q && n >= 2) {
      q++;
      n -= 2;
    }
    char *v = malloc(n + 1);
    if (!v) return NULL;
    memcpy(v, q, n);
    v[n] = 0;
    trim(v);
    return v;
  }
  return NULL;
}

/* base64 of a kubeconfig *-data field into a malloc'd buffer; NULL when bad or out of memory. */
static unsigned char *b64(const char *in, size_t *out_len) {
  size_t l = strlen(in);
  unsigned char *o = malloc(l / 4 * 3 + 4);
  if (!o) return NULL;
  int n = EVP_DecodeBlock(o, (const unsigned char *)in, (int)l);
  if (n < 0) {
    free(o);
    return NULL;
  }
  *out_len = (size_t)n;
  return o;
}

/* users[].user.client-certificate(-data) and client-key(-data): TLS client authentication, what
 * kind, minikube and kubeadm's admin.conf use. Returns 0 when neither is set. */
static int load_client_cert(k8s_api *a, const char *text, SSL_CTX *ctx, const char *path) {
  char *cd = kubeconfig_value(text, "client-certificate-data");
  char *kd = kubeconfig_value(text, "client-key-data");
  char *cf = kubeconfig_value(text, "client-certificate");
  char *kf = kubeconfig_value(text, "client-key");
  int rc = 0;
  unsigned char *cpem = NULL, *kpem = NULL;
  size_t cl = 0, kl = 0;
  if (!(cd || cf) && !(kd || kf)) goto out;
  if (!(cd || cf) || !(kd || kf)) {
    sonde_log(a->h, SONDE_LOG_ERROR, "kubeconfig %s: a client certificate needs its key", path);
    rc = SONDE_ECONFIG;
    goto out;
  }
  if (cd) {
    BIO *b = NULL;
    X509 *x = NULL;
    if (!(cpem = b64(cd, &cl)) || !(b = BIO_new_mem_buf(cpem, (int)cl)) ||
        !(x = PEM_read_bio_X509(b, NULL, NULL, NULL)) || SSL_CTX_use_certificate(ctx, x) != 1)
      rc = SONDE_ECONFIG;
    X509_free(x);
    /* The rest of the chain, if the file carries one. */
    while (!rc && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
      if (SSL_CTX_add_extra_chain_cert(ctx, x) != 1) X509_free(x);
    BIO_free(b);
  } else if (SSL_CTX_use_certificate_chain_file(ctx, cf) != 1) {
    rc = SONDE_ECONFIG;
  }
  if (!rc && kd) {
    BIO *b = NULL;
    EVP_PKEY *k = NULL;
    if (!(kpem = b64(kd, &kl)) || !(b = BIO_new_mem_buf(kpem, (int)kl)) ||
        !(k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) || SSL_CTX_use_PrivateKey(ctx, k) != 1)
      rc = SONDE_ECONFIG;
    EVP_PKEY_free(k);
    BIO_free(b);
  } else if (!rc && SSL_CTX_use_PrivateKey_file(ctx, kf, SSL_FILETYPE_PEM) != 1) {
    rc = SONDE_ECONFIG;
  }
  if (!rc && SSL_CTX_check_private_key(ctx) != 1) rc = SONDE_ECONFIG;
  ERR_clear_error();
  if (rc)
    sonde_log(a->h, SONDE_LOG_ERROR, "kubeconfig %s: cannot load the client certificate and key",
              path);
out:
  free(cpem);
  free(kpem);
  free(cd);
  free(kd);
  free(cf);
  free(kf);
  return rc;
}

static int setup_kubeconfig(k8s_api *a, const char *path, SSL_CTX *ctx) {
  char *text = read_file(path, NULL);
  if (!text) {
    sonde_log(a->h, SONDE_LOG_ERROR, "auth_type kubeConfig: cannot read %s: %s", path,
              strerror(errno));
    return SONDE_ECONFIG;
  }
  int rc = 0;
  char *server = kubeconfig_value(text, "server");
  char *cad = kubeconfig_value(text, "certificate-authority-data");
  char *caf = kubeconfig_value(text, "certificate-authority");
  char *skip = kubeconfig_value(text, "insecure-skip-tls-verify");
  a->token = kubeconfig_value(text, "token");
  if (!server || parse_server(a, server)) {
    sonde_log(a->h, SONDE_LOG_ERROR, "kubeconfig %s: no usable clusters[].cluster.server", path);
    rc = SONDE_ECONFIG;
  } else if (cad) {
    size_t l = strlen(cad);
    unsigned char *pem = malloc(l / 4 * 3 + 4);
    int n = pem ? EVP_DecodeBlock(pem, (const unsigned char *)cad, (int)l) : -1;
    if (!pem) {
      rc = SONDE_ENOMEM;
    } else if (n < 0 || load_ca_pem(ctx, (const char *)pem, (size_t)n)) {
      sonde_log(a->h, SONDE_LOG_ERROR, "kubeconfig %s: bad certificate-authority-data", path);
      rc = SONDE_ECONFIG;
    }
    free(pem);
  } else if (caf) {
    if (SSL_CTX_load_verify_locations(ctx, caf, NULL) != 1) {
      sonde_log(a->h, SONDE_LOG_ERROR, "kubeconfig %s: cannot load certificate-authority %s", path,
                caf);
      rc = SONDE_ECONFIG;
    }
  } else if (skip && !strcmp(skip, "true")) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    rc = SONDE_ECONFIG;
  }
  if (!rc) rc = load_client_cert(a, text, ctx, path);
  free(server);
  free(cad);
  free(caf);
  free(skip);
  free(text);
  return rc;
}

static int setup_in_cluster(k8s_api *a, SSL_CTX *ctx, bool with_token) {
  const char *host = getenv("KUBERNETES_SERVICE_HOST");
  const char *port = getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host) {
    sonde_log(a->h, SONDE_LOG_ERROR,
              "KUBERNETES_SERVICE_HOST is not set: not running in a pod? (auth_type %s)",
              with_token ? "serviceAccount" : "none");
    return SONDE_ECONFIG;
  }
  char url[400];
  snprintf(url, sizeof url, "https://%s%s%s:%s", strchr(host, ':') ? "[" : "", host,
           strchr(host, ':') ? "]" : "", port && *port ? port : "443");
  if (parse_server(a, url)) return SONDE_ECONFIG;
  const char *dir = getenv("SONDE_K8S_SERVICEACCOUNT_DIR");
  if (!dir || !*dir) dir = SA_DIR;
  char path[1024];
  snprintf(path, sizeof path, "%s/ca.crt", dir);
  if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
    sonde_log(a->h, SONDE_LOG_ERROR, "cannot load the cluster CA %s", path);
    return SONDE_ECONFIG;
  }
  if (!with_token) return 0;
  snprintf(path, sizeof path, "%s/token", dir);
  snprintf(a->token_path, sizeof a->token_path, "%s", path);
  a->token = read_file(path, NULL);
  if (!a->token) {
    sonde_log(a->h, SONDE_LOG_ERROR, "cannot read the service account token %s: %s", path,
              strerror(errno));
    return SONDE_ECONFIG;
  }
  trim(a->token);
  return 0;
}

int k8s_api_new(const sonde_host *h, const k8s_api_opts *o, k8s_api **out) {
  k8s_api *a = calloc(1, sizeof(*a));
  if (!a) return SONDE_ENOMEM;
  a->h = h;
  a->loop = h->api->loop(h);
  a->o = *o;
  a->backoff_ms = 500;
  a->resource = o->resource && !strcmp(o->resource, "namespaces") ? "namespaces" : "pods";
  /* Namespaces are cluster-wide: no node filter. */
  snprintf(a->node, sizeof a->node, "%s", o->node && a->resource[0] == 'p' ? o->node : "");
  a->pods = calloc(o->max_pods ? o->max_pods : 1, sizeof(*a->pods));
  a->ctx = SSL_CTX_new(TLS_client_method());
  int rc = 0;
  if (!a->pods || !a->ctx) {
    rc = SONDE_ENOMEM;
    goto fail;
  }
  SSL_CTX_set_min_proto_version(a->ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(a->ctx, SSL_VERIFY_PEER, NULL);
  if (o->auth_type == K8S_AUTH_KUBECONFIG)
    rc = setup_kubeconfig(a, o->kubeconfig, a->ctx);
  else
    rc = setup_in_cluster(a, a->ctx, o->auth_type == K8S_AUTH_SERVICE_ACCOUNT);
  if (rc) goto fail;
  /* The node name goes into a query: only the characters of a DNS subdomain pass. */
  for (const char *q = a->node; *q; q++)
    if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-' || *q == '.' ||
          (*q >= 'A' && *q <= 'Z'))) {
      sonde_log(h, SONDE_LOG_ERROR, "filter: node name \"%s\" is not a Kubernetes node name",
                a->node);
      rc = SONDE_ECONFIG;
      goto fail;
    }
  *out = a;
  return 0;
fail:
  k8s_api_free(a);
  return rc;
}

void k8s_api_start(k8s_api *a) {
  if (uv_timer_init(a->loop, &a->retry) == 0) {
    a->retry.data = a;
    a->retry_open = true;
    a->live++;
  }
  if (a->o.delete_grace_ns > 0 && uv_timer_init(a->loop, &a->sweep) == 0) {
    a->sweep.data = a;
    a->sweep_open = true;
    a->live++;
    /* A quarter of the grace period, between 50 ms and 10 s. */
    int64_t every = a->o.delete_grace_ns / 4000000;
    every = every < 50 ? 50 : every > 10000 ? 10000 : every;
    uv_timer_start(&a->sweep, on_sweep, (uint64_t)every, (uint64_t)every);
    uv_unref((uv_handle_t *)&a->sweep);
  }
  begin(a, REQ_LIST);
}

static void on_handle_closed(uv_handle_t *hd) {
  k8s_api *a = hd->data;
  a->live--;
  maybe_done(a);
}

void k8s_api_shutdown(k8s_api *a, void (*done)(void *), void *arg) {
  a->stopping = true;
  a->done = done;
  a->done_arg = arg;
  if (a->conn) conn_close(a->conn);
  if (a->retry_open) {
    a->retry_open = false;
    uv_close((uv_handle_t *)&a->retry, on_handle_closed);
  }
  if (a->sweep_open) {
    a->sweep_open = false;
    uv_close((uv_handle_t *)&a->sweep, on_handle_closed);
  }
  maybe_done(a);
}

void k8s_api_free(k8s_api *a) {
  if (!a) return;
  if (a->pods) cache_clear(a);
  free(a->pods);
  if (a->ctx) SSL_CTX_free(a->ctx);
  free(a->token);
  free(a);
}

/* The ebpf_http receiver: spans (and RED metrics) for the HTTP/1.x, HTTP/2 and gRPC requests every
 * process on the node serves or makes, from the bytes it reads and writes (bpf/http_tracer.bpf.c:
 * syscall raw tracepoints and libssl uprobes, no kprobes), with no change to the process.
 *
 * Everything but the TLS scan runs on the loop: the ring buffer's epoll fd is watched with uv_poll
 * and drained on a timer (BPF wakes us only when it fills up); the /proc scan that finds files
 * with SSL_read/SSL_write and reads their symbol tables runs on the host's thread pool. Each
 * connection (keyed by its struct sock address, checked against its addresses so a reused sock
 * starts afresh) is classified by its first bytes: an HTTP/1 request or status line (http1.c), the
 * HTTP/2 preface (h2.c), a TLS record (its plaintext comes from the uprobes), or nothing we know,
 * which tells BPF to stop sending it. The first bytes also tell the role, but for connections
 * opened before sonde: /proc/PID/net/tcp does (a local port that listens is the server side), and
 * their bytes may begin mid-message, so they wait for a start that fits the role. Finished
 * exchanges become spans, batched per process every flush_interval, and RED data points every
 * metrics_interval.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gelf.h>
#include <libelf.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "http1.h"
#include "http_tracer.h"
#include "hx.h"
#include "procsel.h"
#include "sonde/sonde.h"
#include "sonde_http_tracer.skel.h"

#define NS_PER_S 1000000000ull
#define CONN_BUCKETS 4096
#define PROC_BUCKETS 1024
#define TID_BUCKETS 1024
#define CONN_IDLE_NS (300 * NS_PER_S) /* a connection silent this long is forgotten */
#define SWEEP_NS (10 * NS_PER_S)
#define RESYNC_RECORDS 64 /* records a connection opened before sonde may be seen mid-message */
#define TLS_SCAN_NS (2 * NS_PER_S)
#define MAX_TLS_FILES 64 /* files with uprobes */
#define TLS_NFN 4
#define SPANS_PER_BATCH 2048

/* ---- configuration --------------------------------------------------------------------------- */

typedef struct eh_routes_cfg {
  sonde_strlist patterns;
  int64_t max_per_service;
} eh_routes_cfg;

typedef struct eh_config {
  char *open_ports;
  sonde__select include, exclude;
  eh_routes_cfg routes;
  uint64_t capture_bytes;
  int64_t flush_interval_ns;
  int64_t metrics_interval_ns;
  bool spans, metrics, tls;
} eh_config;

static const sonde_option routes_options[] = {
    SONDE_OPT("patterns", SONDE_OPT_STRLIST, eh_routes_cfg, patterns, NULL,
              "route patterns matched in order (\"/users/{id}\", \"/static/*\")"),
    SONDE_OPT_RANGE("max_per_service", SONDE_OPT_INT, eh_routes_cfg, max_per_service, "1000", 1,
                    1e6, "distinct routes per service; more fold into \"/**\" (counted)"),
    SONDE_OPT_END,
};

static const sonde_option eh_options[] = {
    SONDE_OPT("open_ports", SONDE_OPT_STRING, eh_config, open_ports, NULL,
              "trace only connections with a local or remote port here: \"80,443,8000-8999\" "
              "(unset: every port)"),
    SONDE_OPT_NESTED("include", eh_config, include, sonde__select_options,
                     "trace only processes matching one of these (empty: every process)"),
    SONDE_OPT_NESTED("exclude", eh_config, exclude, sonde__select_options,
                     "never trace processes matching one of these (sonde itself never is)"),
    SONDE_OPT_NESTED("routes", eh_config, routes, routes_options, "how paths become http.route"),
    SONDE_OPT_RANGE("capture_bytes", SONDE_OPT_BYTES, eh_config, capture_bytes, "1024", 64,
                    SONDE_HTTP_CAP_MAX,
                    "bytes of each read/write copied by BPF (headers must fit)"),
    SONDE_OPT_RANGE("flush_interval", SONDE_OPT_DURATION, eh_config, flush_interval_ns, "1s", 1e7,
                    3.6e12, "spans are sent in one batch per this interval"),
    SONDE_OPT_RANGE("metrics_interval", SONDE_OPT_DURATION, eh_config, metrics_interval_ns, "15s",
                    1e8, 3.6e12, "RED metrics are collected every this interval"),
    SONDE_OPT("spans", SONDE_OPT_BOOL, eh_config, spans, "true", "produce spans (traces signal)"),
    SONDE_OPT("metrics", SONDE_OPT_BOOL, eh_config, metrics, "true",
              "produce RED metrics (metrics signal)"),
    SONDE_OPT("tls", SONDE_OPT_BOOL, eh_config, tls, "true",
              "uprobes on SSL_read/SSL_write in libssl and in executables with OpenSSL inside"),
    SONDE_OPT_END,
};

/* "80,443,8000-8999" into bits (NULL: only checks). */
static int parse_ports(const char *s, uint64_t *bits, char *err, size_t errlen) {
  const char *p = s;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (!*p) break;
    char *end;
    long lo = strtol(p, &end, 10), hi = lo;
    if (end == p) goto bad;
    p = end;
    if (*p == '-') {
      const char *q = p + 1;
      hi = strtol(q, &end, 10);
      if (end == q) goto bad;
      p = end;
    }
    if (lo < 1 || hi > 65535 || lo > hi) goto bad;
    while (*p == ' ')
      p++;
    if (*p && *p != ',') goto bad;
    for (long v = lo; bits && v <= hi; v++)
      bits[v >> 6] |= 1ull << (v & 63);
  }
  return 0;
bad:
  snprintf(err, errlen,
           "open_ports: \"%s\" is not a list of ports and ranges (\"80,443,8000-8999\", 1-65535)",
           s);
  return SONDE_ECONFIG;
}

/* What loading the tracer needs of this process and kernel; `sonde validate` says it too. */
static int check_host(char *err, size_t errlen) {
  int rc = sonde__check_host("the eBPF HTTP tracer", 0, err, errlen);
  if (rc) return rc;
  return sonde__check_kfunc(NULL, "bpf_rdonly_cast", "6.2",
                            "by the HTTP tracer to find the socket behind a file descriptor", err,
                            errlen);
}

static int eh_validate(const void *config, char *err, size_t errlen) {
  const eh_config *c = config;
  int rc = sonde__select_validate(&c->include, &c->exclude, err, errlen);
  if (rc) return rc;
  if (c->open_ports && parse_ports(c->open_ports, NULL, err, errlen)) return SONDE_ECONFIG;
  if (!c->spans && !c->metrics) {
    snprintf(err, errlen, "spans and metrics are both off: nothing to produce");
    return SONDE_ECONFIG;
  }
  return check_host(err, errlen);
}

/* ---- state ----------------------------------------------------------------------------------- */

typedef Opentelemetry__Proto__Trace__V1__Span span_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;

typedef struct eh eh;

typedef struct eproc {
  uint32_t pid;
  struct eproc *next;
  bool excluded;
  sonde__proc_ident id; /* executable, name, cgroup, container id */
  char *service_name, *service_namespace;
  char **res_kv; /* extra OTEL_RESOURCE_ATTRIBUTES, key, value, key, value ... */
  size_t n_res_kv;
  span_t **spans; /* of the batch being filled */
  size_t nspans, capspans;
  uint64_t last_ns;
} eproc;

enum conn_state { C_NEW, C_H1, C_H2, C_TLSWAIT, C_SKIP };

typedef struct econn {
  uint64_t sock;
  struct econn *next;
  eh *owner;
  uint32_t pid;
  uint32_t tid; /* thread of the record being fed */
  uint8_t family, role;
  /* Opened before sonde: the role /proc gives (SONDE_HTTP_ROLE_*, UNKNOWN when it could not tell)
   * and how many more records may go by, unrecognised, before the next message start. */
  uint8_t proc_role, resync_left;
  uint16_t lport, rport;
  uint8_t laddr[16], raddr[16];
  char local[INET6_ADDRSTRLEN], peer[INET6_ADDRSTRLEN];
  enum conn_state state;
  bool tls, server;
  hx_h1 *h1;
  hx_h2 *h2;
  uint64_t last_ns;
  /* The first bytes, kept until they tell what the connection is (1-byte writes). */
  uint8_t pre[24];
  uint8_t npre, pre_dir;
  uint64_t pre_ts;
  /* An HTTP/2 server may send its SETTINGS before the client's preface is seen: kept aside. */
  uint8_t *defer;
  uint32_t ndefer;
  uint8_t defer_dir;
  uint64_t defer_ts, defer_total;
} econn;

/* A span's identity, chosen when its request is seen. */
typedef struct sctx {
  uint8_t trace[16], span[8], parent[8];
  bool has_parent;
  uint32_t tid;
} sctx;

/* tid -> the server span it is serving (owner), or the thread that created it (inherited). */
typedef struct tident {
  uint32_t tid;
  struct tident *next;
  const sctx *owner;
  uint32_t parent_tid; /* when owner is NULL */
} tident;

typedef struct tls_file {
  uint64_t dev, ino;
  bool attached;
} tls_file;

struct eh {
  const sonde_host *h;
  const eh_config *cfg;
  uint32_t self_pid;
  char hostname[256];
  struct sonde_http_tracer *skel;
  struct ring_buffer *rb;
  uv_poll_t *poll;
  sonde_timer *drain, *flush, *mtimer, *sweep, *tls_scan;
  bool stopping;
  econn *conns[CONN_BUCKETS];
  size_t nconns;
  eproc *procs[PROC_BUCKETS];
  tident *tids[TID_BUCKETS];
  sonde_batch *tb; /* spans of the interval being filled */
  size_t tb_spans;
  uint64_t mono_to_real;
  hx_routes *routes;
  hx_red *red;
  uint64_t lost_seen;
  /* TLS */
  struct bpf_link **links;
  size_t nlinks, caplinks;
  tls_file *files; /* every file a scan decided, sorted by (dev, ino) */
  size_t nfiles, capfiles;
  size_t ntls_files;       /* of them with uprobes */
  struct tls_job *tls_job; /* the scan running on the thread pool */
  uint32_t *seen_pids;
  size_t nseen;
  /* metrics */
  sonde_metric *m_events, *m_lost, *m_spans, *m_conns, *m_not_http, *m_batches, *m_refused,
      *m_unanswered, *m_tls_files;
};

static void madd(sonde_metric *m, const eh *e, double d) {
  if (m) e->h->api->metric_add(m, d);
}

static uint64_t now_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- processes ------------------------------------------------------------------------------- */

static void proc_read(eproc *q, const char *comm) {
  char path[64];
  sonde__proc_ident_read((int)q->pid, &q->id);
  /* Gone already: the thread name BPF saw. */
  if (!q->id.exe_name && comm && comm[0]) q->id.exe_name = strndup(comm, 16);
  size_t len = 0;
  snprintf(path, sizeof(path), "/proc/%u/environ", q->pid);
  char *env = sonde__read_small(path, &len);
  const char *attrs = NULL;
  for (size_t off = 0; env && off < len; off += strlen(env + off) + 1) {
    const char *v = env + off;
    if (!strncmp(v, "OTEL_SERVICE_NAME=", 18) && v[18])
      q->service_name = strdup(v + 18);
    else if (!strncmp(v, "OTEL_RESOURCE_ATTRIBUTES=", 25))
      attrs = v + 25;
  }
  /* key=value,key=value (values percent-encoded per the OTel spec; kept as written). */
  for (const char *p = attrs; p && *p;) {
    const char *end = strchr(p, ',');
    size_t l = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', l);
    if (eq && eq > p) {
      char *k = strndup(p, (size_t)(eq - p)), *v = strndup(eq + 1, l - (size_t)(eq - p) - 1);
      if (k && v && !strcmp(k, "service.name")) {
        if (!q->service_name) q->service_name = v, v = NULL;
      } else if (k && v && !strcmp(k, "service.namespace")) {
        free(q->service_namespace);
        q->service_namespace = v, v = NULL;
      } else if (k && v) {
        char **nk = realloc(q->res_kv, (q->n_res_kv + 2) * sizeof(*nk));
        if (nk) {
          q->res_kv = nk;
          nk[q->n_res_kv++] = k;
          nk[q->n_res_kv++] = v;
          k = v = NULL;
        }
      }
      free(k);
      free(v);
    }
    p = end ? end + 1 : NULL;
  }
  free(env);
  if (!q->service_name && q->id.exe_name) q->service_name = strdup(q->id.exe_name);
}

static eproc *proc_get(eh *e, uint32_t pid, const char *comm) {
  size_t b = pid % PROC_BUCKETS;
  for (eproc *q = e->procs[b]; q; q = q->next)
    if (q->pid == pid) return q;
  eproc *q = calloc(1, sizeof(*q));
  if (!q) return NULL;
  q->pid = pid;
  proc_read(q, comm);
  q->excluded = pid == e->self_pid || sonde__select_match(&e->cfg->exclude, pid, &q->id) ||
                (!sonde__select_empty(&e->cfg->include) &&
                 !sonde__select_match(&e->cfg->include, pid, &q->id));
  if (q->excluded && e->skel) {
    /* BPF stops sending this process's records. */
    uint32_t v = SONDE_HTTP_PID_EXCLUDE;
    bpf_map__update_elem(e->skel->maps.pid_filter, &pid, 4, &v, 4, BPF_ANY);
  }
  q->next = e->procs[b];
  e->procs[b] = q;
  return q;
}

static void proc_free(eproc *q) {
  free(q->service_name);
  free(q->service_namespace);
  sonde__proc_ident_free(&q->id);
  for (size_t i = 0; i < q->n_res_kv; i++)
    free(q->res_kv[i]);
  free(q->res_kv);
  free(q->spans);
  free(q);
}

static hx_resource proc_resource(const eh *e, const eproc *q) {
  return (hx_resource){.pid = q->pid,
                       .service_name = q->service_name ? q->service_name : "unknown_service",
                       .service_namespace = q->service_namespace,
                       .exe_name = q->id.exe_name,
                       .exe_path = q->id.exe_path,
                       .host_name = e->hostname,
                       .container_id = q->id.container_id[0] ? q->id.container_id : NULL};
}

/* ---- span context ---------------------------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static bool unhex(const char *s, uint8_t *out, size_t n) {
  bool nonzero = false;
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = (uint8_t)(hi << 4 | lo);
    nonzero |= out[i] != 0;
  }
  return nonzero;
}

/* W3C traceparent "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>". */
static bool parse_traceparent(const char *tp, uint8_t trace[16], uint8_t span[8]) {
  if (!tp || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return false;
  if (!strncmp(tp, "ff", 2) || hexval(tp[0]) < 0 || hexval(tp[1]) < 0) return false;
  return unhex(tp + 3, trace, 16) && unhex(tp + 36, span, 8);
}

static void random_id(uint8_t *p, size_t n) {
  do {
    if (getrandom(p, n, 0) != (ssize_t)n)
      for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rand();
  } while (!memcmp(p, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", n));
}

static tident *tid_find(eh *e, uint32_t tid) {
  for (tident *t = e->tids[tid % TID_BUCKETS]; t; t = t->next)
    if (t->tid == tid) return t;
  return NULL;
}

static tident *tid_get(eh *e, uint32_t tid) {
  tident *t = tid_find(e, tid);
  if (t) return t;
  if (!(t = calloc(1, sizeof(*t)))) return NULL;
  t->tid = tid;
  t->next = e->tids[tid % TID_BUCKETS];
  e->tids[tid % TID_BUCKETS] = t;
  return t;
}

static void tid_del(eh *e, uint32_t tid) {
  for (tident **pp = &e->tids[tid % TID_BUCKETS]; *pp; pp = &(*pp)->next) {
    if ((*pp)->tid == tid) {
      tident *t = *pp;
      *pp = t->next;
      free(t);
      return;
    }
  }
}

/* The server span thread tid (or the thread that created it, up the chain) is serving now. */
static const sctx *tid_serving(eh *e, uint32_t tid) {
  for (int hop = 0; hop < 4; hop++) {
    tident *t = tid_find(e, tid);
    if (!t) return NULL;
    if (t->owner) return t->owner;
    if (!t->parent_tid || t->parent_tid == tid) return NULL;
    tid = t->parent_tid;
  }
  return NULL;
}

static uint64_t h1_request(void *ud, const hx_exchange *ex) {
  econn *c = ud;
  eh *e = c->owner;
  sctx *s = calloc(1, sizeof(*s));
  if (!s) return 0;
  s->tid = c->tid;
  uint8_t tr[16], sp[8];
  bool tp = parse_traceparent(ex->traceparent, tr, sp);
  if (ex->server) {
    /* An incoming traceparent continues that trace. */
    if (tp) {
      memcpy(s->trace, tr, 16);
      memcpy(s->parent, sp, 8);
      s->has_parent = true;
    } else {
      random_id(s->trace, 16);
    }
    random_id(s->span, 8);
    tident *t = tid_get(e, c->tid);
    if (t) t->owner = s, t->parent_tid = 0;
  } else {
    const sctx *srv = tid_serving(e, c->tid);
    if (tp) {
      /* The process propagates context itself: its header names this client span. */
      memcpy(s->trace, tr, 16);
      memcpy(s->span, sp, 8);
      if (srv && !memcmp(srv->trace, tr, 16)) {
        memcpy(s->parent, srv->span, 8);
        s->has_parent = true;
      }
    } else {
      if (srv) {
        memcpy(s->trace, srv->trace, 16);
        memcpy(s->parent, srv->span, 8);
        s->has_parent = true;
      } else {
        random_id(s->trace, 16);
      }
      random_id(s->span, 8);
    }
  }
  return (uint64_t)(uintptr_t)s;
}

/* ---- spans ----------------------------------------------------------------------------------- */

static bool grpc_server_error(int st) {
  /* OTel semconv: server spans are errors for these codes only. */
  return st == 2 || st == 4 || st == 12 || st == 13 || st == 14 || st == 15;
}

static const char *host_part(const char *authority, char *buf, size_t len) {
  if (!authority) return NULL;
  if (authority[0] == '[') {
    const char *end = strchr(authority, ']');
    if (!end) return authority;
    snprintf(buf, len, "%.*s", (int)(end - authority - 1), authority + 1);
    return buf;
  }
  const char *colon = strrchr(authority, ':');
  if (!colon) return authority;
  snprintf(buf, len, "%.*s", (int)(colon - authority), authority);
  return buf;
}

static int span_push(eproc *q, span_t *s) {
  if (q->nspans == q->capspans) {
    size_t cap = q->capspans ? q->capspans * 2 : 64;
    span_t **n = realloc(q->spans, cap * sizeof(*n));
    if (!n) return SONDE_ENOMEM;
    q->spans = n;
    q->capspans = cap;
  }
  q->spans[q->nspans++] = s;
  return 0;
}

#define KV(expr)                                                                                   \
  do {                                                                                             \
    if (!(a[n++] = (expr))) return SONDE_ENOMEM;                                                   \
  } while (0)

static int build_span(eh *e, econn *c, eproc *q, const hx_exchange *ex, const sctx *s,
                      const char *route) {
  if (!e->tb && sonde_batch_new(SONDE_SIGNAL_TRACES, &e->tb)) return SONDE_ENOMEM;
  sonde_batch *b = e->tb;
  span_t *sp = sonde_batch_alloc(b, sizeof(*sp));
  kv_t **a = sonde_batch_alloc(b, 24 * sizeof(*a));
  uint8_t *ids = sonde_batch_alloc(b, 32);
  if (!sp || !a || !ids) return SONDE_ENOMEM;
  opentelemetry__proto__trace__v1__span__init(sp);
  memcpy(ids, s->trace, 16);
  memcpy(ids + 16, s->span, 8);
  memcpy(ids + 24, s->parent, 8);
  sp->trace_id = (ProtobufCBinaryData){16, ids};
  sp->span_id = (ProtobufCBinaryData){8, ids + 16};
  if (s->has_parent) sp->parent_span_id = (ProtobufCBinaryData){8, ids + 24};
  bool grpc = ex->proto == HX_GRPC;
  sp->kind = ex->server ? OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER
                        : OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_CLIENT;
  char name[600];
  if (grpc)
    snprintf(name, sizeof(name), "%s", ex->path ? ex->path : "grpc");
  else
    snprintf(name, sizeof(name), "%s %s", ex->method ? ex->method : "HTTP", route);
  if (!(sp->name = sonde_batch_strdup(b, name))) return SONDE_ENOMEM;
  sp->start_time_unix_nano = ex->start_ns + e->mono_to_real;
  sp->end_time_unix_nano =
      (ex->end_ns > ex->start_ns ? ex->end_ns : ex->start_ns) + e->mono_to_real;
  size_t n = 0;
  char hb[300];
  const char *host = host_part(ex->authority, hb, sizeof(hb));
  if (ex->method) KV(sonde_batch_kv_str(b, "http.request.method", ex->method));
  if (ex->path) KV(sonde_batch_kv_str(b, "url.path", ex->path));
  if (ex->query && ex->server) KV(sonde_batch_kv_str(b, "url.query", ex->query));
  KV(sonde_batch_kv_str(b, "url.scheme", ex->tls ? "https" : "http"));
  if (ex->status) KV(sonde_batch_kv_int(b, "http.response.status_code", ex->status));
  KV(sonde_batch_kv_str(b, "network.protocol.name", "http"));
  KV(sonde_batch_kv_str(b, "network.protocol.version", ex->version ? ex->version : "1.1"));
  KV(sonde_batch_kv_str(b, "network.peer.address", c->peer));
  KV(sonde_batch_kv_int(b, "network.peer.port", c->rport));
  if (ex->server) {
    KV(sonde_batch_kv_str(b, "http.route", route));
    KV(sonde_batch_kv_str(b, "server.address", host ? host : c->local));
    KV(sonde_batch_kv_int(b, "server.port", c->lport));
    KV(sonde_batch_kv_str(b, "client.address", c->peer));
  } else {
    KV(sonde_batch_kv_str(b, "server.address", host ? host : c->peer));
    KV(sonde_batch_kv_int(b, "server.port", c->rport));
    char url[1200];
    snprintf(url, sizeof(url), "%s://%s%s", c->tls ? "https" : "http",
             ex->authority ? ex->authority : c->peer, ex->path ? ex->path : "/");
    KV(sonde_batch_kv_str(b, "url.full", url));
  }
  if (ex->user_agent) KV(sonde_batch_kv_str(b, "user_agent.original", ex->user_agent));
  KV(sonde_batch_kv_int(b, "http.request.body.size", (int64_t)ex->req_body_bytes));
  KV(sonde_batch_kv_int(b, "http.response.body.size", (int64_t)ex->resp_body_bytes));
  KV(sonde_batch_kv_int(b, "thread.id", s->tid));
  if (grpc) {
    KV(sonde_batch_kv_str(b, "rpc.system", "grpc"));
    const char *p = ex->path ? ex->path : "";
    const char *slash = strrchr(p, '/');
    if (slash && slash > p) {
      char svc[512];
      snprintf(svc, sizeof(svc), "%.*s", (int)(slash - p - 1), p + 1);
      KV(sonde_batch_kv_str(b, "rpc.service", svc));
      KV(sonde_batch_kv_str(b, "rpc.method", slash + 1));
    }
    if (ex->grpc_status >= 0) KV(sonde_batch_kv_int(b, "rpc.grpc.status_code", ex->grpc_status));
  }
  const char *err = NULL;
  /* A gRPC status (from trailers, or from the RST_STREAM that ended the call) decides alone: a
   * call the client cancelled is an error for the client, not for the server (semconv). */
  if (grpc && ex->grpc_status >= 0) {
    if (ex->grpc_status > 0 && (!ex->server || grpc_server_error(ex->grpc_status)))
      err = ex->rst_code >= 0 ? "stream reset (RST_STREAM)" : "gRPC error status";
  } else if (ex->reset && ex->rst_code >= 0)
    err = "stream reset (RST_STREAM)";
  else if (ex->reset)
    err = "connection closed before the response completed";
  else if (!grpc && ex->status >= 500)
    err = "server error";
  else if (!grpc && !ex->server && ex->status >= 400)
    err = "client error";
  if (err) {
    Opentelemetry__Proto__Trace__V1__Status *st = sonde_batch_alloc(b, sizeof(*st));
    if (!st) return SONDE_ENOMEM;
    opentelemetry__proto__trace__v1__status__init(st);
    st->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
    if (!(st->message = sonde_batch_strdup(b, err))) return SONDE_ENOMEM;
    sp->status = st;
    /* gRPC: the status code's name (semconv), not the HTTP status, which is 200 for errors. */
    static const char *const grpc_names[] = {"OK",
                                             "CANCELLED",
                                             "UNKNOWN",
                                             "INVALID_ARGUMENT",
                                             "DEADLINE_EXCEEDED",
                                             "NOT_FOUND",
                                             "ALREADY_EXISTS",
                                             "PERMISSION_DENIED",
                                             "RESOURCE_EXHAUSTED",
                                             "FAILED_PRECONDITION",
                                             "ABORTED",
                                             "OUT_OF_RANGE",
                                             "UNIMPLEMENTED",
                                             "INTERNAL",
                                             "UNAVAILABLE",
                                             "DATA_LOSS",
                                             "UNAUTHENTICATED"};
    char et[24];
    if (grpc && ex->grpc_status >= 0 && ex->grpc_status < 17)
      snprintf(et, sizeof(et), "%s", grpc_names[ex->grpc_status]);
    else if (grpc && ex->grpc_status >= 0)
      snprintf(et, sizeof(et), "%d", ex->grpc_status);
    else if (ex->reset && ex->rst_code >= 0) /* the HTTP/2 error code's name: "CANCEL" */
      snprintf(et, sizeof(et), "%s", nghttp2_http2_strerror((uint32_t)ex->rst_code));
    else if (ex->reset)
      snprintf(et, sizeof(et), "connection_reset");
    else
      snprintf(et, sizeof(et), "%d", ex->status);
    KV(sonde_batch_kv_str(b, "error.type", et));
  }
  sp->attributes = a;
  sp->n_attributes = n;
  return span_push(q, sp);
}

static void flush_spans(eh *e);

/* One finished exchange of connection c. */
static void on_exchange(econn *c, const hx_exchange *dex, const sctx *s) {
  eh *e = c->owner;
  /* A request with no response makes no span: it may be a probe, or bytes we misread. An HTTP/2
   * stream that either side reset (RST_STREAM) did end, and makes one. */
  if (!dex->status && !(dex->proto != HX_HTTP1 && (dex->grpc_status >= 0 || dex->rst_code >= 0))) {
    madd(e->m_unanswered, e, 1);
    return;
  }
  hx_exchange x = *dex;
  x.tls = c->tls;
  const hx_exchange *ex = &x;
  eproc *q = proc_get(e, c->pid, NULL);
  if (!q || q->excluded) return;
  hx_resource res = proc_resource(e, q);
  char route[512];
  const char *path = ex->path ? ex->path : "/";
  if (ex->proto == HX_GRPC)
    snprintf(route, sizeof(route), "%s", path);
  else
    hx_routes_match(e->routes, res.service_name, path, route, sizeof(route));
  if (e->cfg->metrics && e->red) {
    char hb[300];
    const char *host = ex->server ? NULL : host_part(ex->authority, hb, sizeof(hb));
    hx_red_record(e->red, &res, ex, route, ex->server ? NULL : (host ? host : c->peer),
                  ex->server ? 0 : c->rport);
  }
  if (!e->cfg->spans) return;
  sctx tmp;
  if (!s) {
    /* HTTP/2 streams, with HTTP/1's rules: a server continues an incoming traceparent; a
     * client's own header names this client span; otherwise a client call made while its
     * thread serves a request is that request's child. */
    memset(&tmp, 0, sizeof(tmp));
    tmp.tid = c->tid;
    uint8_t tr[16], sp[8];
    bool tp = parse_traceparent(ex->traceparent, tr, sp);
    const sctx *srv = ex->server ? NULL : tid_serving(e, c->tid);
    if (tp) memcpy(tmp.trace, tr, 16);
    if (tp && ex->server) {
      memcpy(tmp.parent, sp, 8);
      tmp.has_parent = true;
      random_id(tmp.span, 8);
    } else if (tp) {
      memcpy(tmp.span, sp, 8);
      if (srv && !memcmp(srv->trace, tr, 16)) {
        memcpy(tmp.parent, srv->span, 8);
        tmp.has_parent = true;
      }
    } else {
      if (srv) {
        memcpy(tmp.trace, srv->trace, 16);
        memcpy(tmp.parent, srv->span, 8);
        tmp.has_parent = true;
      } else {
        random_id(tmp.trace, 16);
      }
      random_id(tmp.span, 8);
    }
    s = &tmp;
  }
  if (build_span(e, c, q, ex, s, route)) {
    sonde_log(e->h, SONDE_LOG_WARN, "out of memory building a span: dropped");
    return;
  }
  madd(e->m_spans, e, 1);
  /* A busy node fills batches before the interval ends: sent at once, they bound our memory. */
  if (++e->tb_spans >= SPANS_PER_BATCH) flush_spans(e);
}

static void h1_done(void *ud, const hx_exchange *ex, uint64_t tag) {
  econn *c = ud;
  sctx *s = (sctx *)(uintptr_t)tag;
  on_exchange(c, ex, s);
  if (s && ex->server) {
    tident *t = tid_find(c->owner, s->tid);
    if (t && t->owner == s) tid_del(c->owner, s->tid);
  }
  free(s);
}

static const hx_h1_hooks h1_hooks = {.request = h1_request, .done = h1_done};

static void h2_exchange(void *ud, const hx_exchange *ex) {
  on_exchange(ud, ex, NULL);
}

/* ---- connections ----------------------------------------------------------------------------- */

static void conn_drop_decoders(econn *c, uint64_t ts) {
  free(c->defer);
  c->defer = NULL;
  c->ndefer = 0;
  if (c->h1) {
    hx_h1_close(c->h1, ts);
    hx_h1_free(c->h1);
    c->h1 = NULL;
  }
  if (c->h2) {
    hx_h2_close(c->h2, ts);
    hx_h2_free(c->h2);
    c->h2 = NULL;
  }
}

static void conn_free(eh *e, econn *c, uint64_t ts) {
  conn_drop_decoders(c, ts);
  free(c);
  e->nconns--;
  madd(e->m_conns, e, -1);
}

static void conn_remove(eh *e, uint64_t sock, uint64_t ts) {
  for (econn **pp = &e->conns[(sock >> 6) % CONN_BUCKETS]; *pp; pp = &(*pp)->next) {
    if ((*pp)->sock == sock) {
      econn *c = *pp;
      *pp = c->next;
      conn_free(e, c, ts);
      return;
    }
  }
}

static void set_verdict(eh *e, econn *c, uint8_t verdict) {
  if (!e->skel) return;
  /* Only "skip" changes what BPF does. Read, modify, write: BPF keeps the connection's
   * addresses and HTTP/2 framing in the entry; never over BPF's own "skip" (a TLS connection:
   * its uprobes set it), which the write would undo, with framing state older than BPF's. */
  struct sonde_http_conn v;
  if (verdict != SONDE_HTTP_VERDICT_SKIP ||
      bpf_map__lookup_elem(e->skel->maps.conns, &c->sock, 8, &v, sizeof(v), 0) ||
      v.verdict == verdict)
    return;
  v.verdict = verdict;
  bpf_map__update_elem(e->skel->maps.conns, &c->sock, 8, &v, sizeof(v), BPF_EXIST);
}

/* The role of a connection opened before sonde, from /proc/PID/net/tcp and tcp6 (the process's
 * network namespace): a local port some socket listens on is the server side, any other the
 * client side. SONDE_HTTP_ROLE_UNKNOWN when neither file can be read. */
static uint8_t proc_role(uint32_t pid, uint16_t lport) {
  bool read = false;
  for (int v6 = 0; v6 < 2; v6++) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%u/net/tcp%s", pid, v6 ? "6" : "");
    size_t len;
    char *text = sonde__read_small(path, &len);
    if (!text) continue;
    read = true;
    bool listens = hx_tcp_listens(text, len, lport);
    free(text);
    if (listens) return SONDE_HTTP_ROLE_SERVER;
  }
  return read ? SONDE_HTTP_ROLE_CLIENT : SONDE_HTTP_ROLE_UNKNOWN;
}

static econn *conn_get(eh *e, const struct sonde_http_data *d) {
  size_t b = (d->sock >> 6) % CONN_BUCKETS;
  for (econn *c = e->conns[b]; c; c = c->next) {
    if (c->sock != d->sock) continue;
    if (c->pid == d->pid && c->lport == d->lport && c->rport == d->rport &&
        !memcmp(c->raddr, d->raddr, 16))
      return c;
    /* The sock was freed and reused for another connection without a close we saw. */
    conn_remove(e, d->sock, d->ktime_ns);
    break;
  }
  econn *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->sock = d->sock;
  c->owner = e;
  c->pid = d->pid;
  c->family = d->family;
  c->role = d->role;
  if (d->role == SONDE_HTTP_ROLE_UNKNOWN) {
    c->proc_role = proc_role(d->pid, d->lport);
    c->resync_left = c->proc_role ? RESYNC_RECORDS : 0;
  }
  c->lport = d->lport;
  c->rport = d->rport;
  memcpy(c->laddr, d->laddr, 16);
  memcpy(c->raddr, d->raddr, 16);
  int af = d->family == 10 ? AF_INET6 : AF_INET;
  /* An IPv4-mapped IPv6 address is written as IPv4. */
  const uint8_t *la = d->laddr, *ra = d->raddr;
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (af == AF_INET6 && !memcmp(la, mapped, 12) && !memcmp(ra, mapped, 12))
    af = AF_INET, la += 12, ra += 12;
  inet_ntop(af, la, c->local, sizeof(c->local));
  inet_ntop(af, ra, c->peer, sizeof(c->peer));
  c->next = e->conns[b];
  e->conns[b] = c;
  e->nconns++;
  madd(e->m_conns, e, 1);
  return c;
}

/* Whether p could still grow into something classify() knows. */
static bool maybe_prefix(const uint8_t *p, size_t n) {
  static const char *const starts[] = {"GET ",
                                       "POST ",
                                       "PUT ",
                                       "DELETE ",
                                       "HEAD ",
                                       "PATCH ",
                                       "OPTIONS ",
                                       "CONNECT ",
                                       "TRACE ",
                                       "HTTP/1.",
                                       "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"};
  for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
    size_t l = strlen(starts[i]);
    if (n < l && !memcmp(p, starts[i], n)) return true;
  }
  return false;
}

/* The first bytes of a connection decide what it is. */
static void classify(eh *e, econn *c, uint8_t dir, bool tls, const uint8_t *p, size_t n) {
  bool in = dir == HX_INGRESS;
  /* What the bytes say wins over the role BPF noted at accept/connect: a sock address can be
   * reused after a process exited without close(), leaving a stale role behind. A connection
   * opened before sonde has its role from /proc: it may be seen mid-message (a body), so the
   * bytes wait for a message start that fits that role, for RESYNC_RECORDS records. */
  bool srv = c->proc_role == SONDE_HTTP_ROLE_SERVER;
  bool req = hx_h1_is_request(p, n), resp = !req && hx_h1_is_response(p, n);
  if (c->proc_role && (req || resp) && (req == in) != srv) req = resp = false;
  if (req) {
    c->server = c->proc_role ? srv : in;
  } else if (resp) {
    c->server = c->proc_role ? srv : !in; /* seen mid-exchange: the next request starts a span */
  } else if (hx_h2_detect(p, n)) {
    c->server = c->proc_role ? srv : in;
    c->h2 = hx_h2_new(c->server, h2_exchange, c);
    if (!c->h2) return;
    c->state = C_H2;
    set_verdict(e, c, SONDE_HTTP_VERDICT_HTTP);
    return;
  } else if (!tls && n >= 3 && p[0] == 0x16 && p[1] == 0x03 && p[2] <= 0x04) {
    /* A TLS handshake: the plaintext comes from the SSL uprobes, if the process has them. */
    c->state = C_TLSWAIT;
    set_verdict(e, c, SONDE_HTTP_VERDICT_SKIP);
    return;
  } else if (c->resync_left) {
    c->resync_left--; /* still C_NEW: the next record is judged afresh */
    return;
  } else {
    c->state = C_SKIP;
    set_verdict(e, c, SONDE_HTTP_VERDICT_SKIP);
    madd(e->m_not_http, e, 1);
    if (e->h->api->log_enabled(e->h, SONDE_LOG_DEBUG)) {
      char hex[3 * 16 + 1] = "";
      for (size_t i = 0; i < n && i < 16; i++)
        snprintf(hex + 3 * i, 4, "%02x ", p[i]);
      sonde_log(e->h, SONDE_LOG_DEBUG, "not HTTP: pid %u, %s %zu bytes: %s", c->pid,
                in ? "read" : "wrote", n, hex);
    }
    return;
  }
  c->h1 = hx_h1_new(c->server, &h1_hooks, c);
  if (!c->h1) return;
  c->state = C_H1;
  set_verdict(e, c, SONDE_HTTP_VERDICT_HTTP);
}

static int feed(econn *c, uint8_t dir, const uint8_t *p, size_t n, uint64_t total, uint64_t ts) {
  if (c->state == C_H1) return hx_h1_feed(c->h1, dir, p, n, total, ts);
  if (c->state == C_H2) return hx_h2_feed(c->h2, dir, p, n, total, ts);
  return 0;
}

/* A SETTINGS frame on stream 0: what an HTTP/2 server writes first. */
static bool h2_settings_frame(const uint8_t *p, size_t n) {
  if (n < 9 || p[3] != 0x04 || (p[5] | p[6] | p[7] | p[8])) return false;
  uint32_t len = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
  return len % 6 == 0 && len <= 16384;
}

/* Feeds what was kept aside once the connection turned out HTTP/2, or drops it. */
static int feed_deferred(econn *c) {
  int rc = 0;
  if (c->defer && c->state == C_H2)
    rc = feed(c, c->defer_dir, c->defer, c->ndefer, c->defer_total, c->defer_ts);
  free(c->defer);
  c->defer = NULL;
  c->ndefer = 0;
  return rc;
}

static void on_data(eh *e, const struct sonde_http_data *d, const uint8_t *p) {
  eproc *q = proc_get(e, d->pid, d->comm);
  if (!q || q->excluded) return;
  q->last_ns = d->ktime_ns;
  econn *c = conn_get(e, d);
  if (!c) return;
  c->last_ns = d->ktime_ns;
  c->tid = d->tid;
  bool tls = d->flags & SONDE_HTTP_F_TLS;
  if (tls && !c->tls) {
    /* From now on this connection's bytes are the SSL plaintext; what came before was records. */
    conn_drop_decoders(c, d->ktime_ns);
    c->tls = true;
    c->state = C_NEW;
    c->npre = 0;
  } else if (!tls && c->tls) {
    return;
  }
  int rc = 0;
  if (c->state == C_NEW) {
    if (!d->captured) return; /* sendfile before any bytes: nothing to judge by */
    if (!c->npre && !c->defer && h2_settings_frame(p, d->captured)) {
      if ((c->defer = malloc(d->captured))) {
        memcpy(c->defer, p, d->captured);
        c->ndefer = d->captured;
        c->defer_dir = d->dir;
        c->defer_ts = d->ktime_ns;
        c->defer_total = d->total;
      }
      return;
    }
    if (c->npre && c->pre_dir != d->dir) {
      classify(e, c, c->pre_dir, c->tls, c->pre, c->npre);
      rc = feed(c, c->pre_dir, c->pre, c->npre, c->npre, c->pre_ts);
      c->npre = 0;
    } else {
      size_t take = sizeof(c->pre) - c->npre;
      if (take > d->captured) take = d->captured;
      if (!c->npre) c->pre_dir = d->dir, c->pre_ts = d->ktime_ns;
      memcpy(c->pre + c->npre, p, take);
      c->npre += take;
      if (take == d->captured && d->total == d->captured && maybe_prefix(c->pre, c->npre))
        return; /* too short to tell yet */
      classify(e, c, c->pre_dir, c->tls, c->pre, c->npre);
      rc = feed(c, c->pre_dir, c->pre, c->npre, c->npre, c->pre_ts);
      c->npre = 0;
      p += take;
      if (!rc && (d->captured > take || d->total > d->captured))
        rc = feed(c, d->dir, p, d->captured - take, d->total - take, d->ktime_ns);
      goto fed;
    }
  }
  if (!rc) rc = feed(c, d->dir, p, d->captured, d->total, d->ktime_ns);
fed:
  if (!rc && c->defer && c->state != C_NEW) rc = feed_deferred(c);
  if (rc) {
    if (e->h->api->log_enabled(e->h, SONDE_LOG_DEBUG))
      sonde_log(e->h, SONDE_LOG_DEBUG, "not HTTP after all: pid %u, %s %u of %llu bytes: %s: %.*s",
                c->pid, d->dir ? "wrote" : "read", d->captured, (unsigned long long)d->total,
                sonde_strerror(rc), (int)(d->captured > 60 ? 60 : d->captured), p);
    conn_drop_decoders(c, d->ktime_ns);
    c->state = C_SKIP;
    set_verdict(e, c, SONDE_HTTP_VERDICT_SKIP);
    madd(e->m_not_http, e, 1);
  }
}

static void on_close(eh *e, const struct sonde_http_data *d) {
  size_t b = (d->sock >> 6) % CONN_BUCKETS;
  for (econn *c = e->conns[b]; c; c = c->next) {
    if (c->sock == d->sock && c->pid == d->pid) {
      conn_remove(e, d->sock, d->ktime_ns);
      return;
    }
  }
}

static void on_fork(eh *e, const struct sonde_http_fork *f) {
  if (f->child_tid == f->parent_tid) return;
  /* A thread made by a thread that serves a request: its client calls are that request's
   * children while the request lasts (checked when they happen). */
  tident *pt = tid_find(e, f->parent_tid);
  if (!pt) return;
  tident *t = tid_get(e, f->child_tid);
  if (t && !t->owner) t->parent_tid = f->parent_tid;
}

static int rb_event(void *ctx, void *data, size_t size) {
  eh *e = ctx;
  if (size < 4 || e->stopping) return 0;
  uint32_t type;
  memcpy(&type, data, 4);
  madd(e->m_events, e, 1);
  if (type == SONDE_HTTP_REC_FORK && size >= sizeof(struct sonde_http_fork)) {
    on_fork(e, data);
    return 0;
  }
  if (size < sizeof(struct sonde_http_data)) return 0;
  const struct sonde_http_data *d = data;
  if (type == SONDE_HTTP_REC_CLOSE) {
    on_close(e, d);
  } else if (type == SONDE_HTTP_REC_DATA && sizeof(*d) + d->captured <= size) {
    on_data(e, d, (const uint8_t *)data + sizeof(*d));
  }
  return 0;
}

static void drain(eh *e) {
  if (!e->rb) return;
  e->mono_to_real = now_ns(CLOCK_REALTIME) - now_ns(CLOCK_MONOTONIC);
  int n = ring_buffer__consume(e->rb);
  if (n < 0) sonde_log(e->h, SONDE_LOG_WARN, "ring buffer: %s", strerror(-n));
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  eh *e = h->data;
  if (status < 0) {
    sonde_log(e->h, SONDE_LOG_ERROR, "ring buffer poll: %s", uv_strerror(status));
    return;
  }
  drain(e);
}

static void on_drain(void *arg) {
  drain(arg);
}

/* ---- batches --------------------------------------------------------------------------------- */

static Opentelemetry__Proto__Resource__V1__Resource *resource_new(eh *e, sonde_batch *b,
                                                                  const eproc *q) {
  Opentelemetry__Proto__Resource__V1__Resource *r = sonde_batch_alloc(b, sizeof(*r));
  kv_t **a = sonde_batch_alloc(b, (8 + q->n_res_kv / 2) * sizeof(*a));
  if (!r || !a) return NULL;
  opentelemetry__proto__resource__v1__resource__init(r);
  size_t n = 0;
  hx_resource res = proc_resource(e, q);
  if (!(a[n++] = sonde_batch_kv_str(b, "service.name", res.service_name))) return NULL;
  if (q->service_namespace &&
      !(a[n++] = sonde_batch_kv_str(b, "service.namespace", q->service_namespace)))
    return NULL;
  if (!(a[n++] = sonde_batch_kv_int(b, "process.pid", q->pid))) return NULL;
  if (res.exe_name && !(a[n++] = sonde_batch_kv_str(b, "process.executable.name", res.exe_name)))
    return NULL;
  if (res.exe_path && !(a[n++] = sonde_batch_kv_str(b, "process.executable.path", res.exe_path)))
    return NULL;
  if (!(a[n++] = sonde_batch_kv_str(b, "host.name", e->hostname))) return NULL;
  if (res.container_id && !(a[n++] = sonde_batch_kv_str(b, "container.id", res.container_id)))
    return NULL;
  if (!(a[n++] = sonde_batch_kv_str(b, "telemetry.distro.name", "sonde"))) return NULL;
  for (size_t i = 0; i + 1 < q->n_res_kv; i += 2)
    if (!(a[n++] = sonde_batch_kv_str(b, q->res_kv[i], q->res_kv[i + 1]))) return NULL;
  r->attributes = a;
  r->n_attributes = n;
  return r;
}

static int finish_traces(eh *e, sonde_batch *b) {
  sonde_traces *req = sonde_batch_traces(b);
  size_t nproc = 0;
  for (size_t i = 0; i < PROC_BUCKETS; i++)
    for (eproc *q = e->procs[i]; q; q = q->next)
      nproc += q->nspans > 0;
  Opentelemetry__Proto__Trace__V1__ResourceSpans **rs = sonde_batch_alloc(b, nproc * sizeof(*rs));
  if (!rs && nproc) return SONDE_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < PROC_BUCKETS; i++) {
    for (eproc *q = e->procs[i]; q; q = q->next) {
      if (!q->nspans) continue;
      Opentelemetry__Proto__Trace__V1__ResourceSpans *r = sonde_batch_alloc(b, sizeof(*r));
      Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = sonde_batch_alloc(b, sizeof(*ss));
      Opentelemetry__Proto__Common__V1__InstrumentationScope *sc =
          sonde_batch_alloc(b, sizeof(*sc));
      Opentelemetry__Proto__Trace__V1__ScopeSpans **ssv = sonde_batch_alloc(b, sizeof(*ssv));
      span_t **spans = sonde_batch_memdup(b, q->spans, q->nspans * sizeof(*spans));
      if (!r || !ss || !sc || !ssv || !spans) return SONDE_ENOMEM;
      opentelemetry__proto__trace__v1__resource_spans__init(r);
      opentelemetry__proto__trace__v1__scope_spans__init(ss);
      opentelemetry__proto__common__v1__instrumentation_scope__init(sc);
      sc->name = "sonde.ebpf_http";
      sc->version = SONDE_VERSION;
      ss->scope = sc;
      ss->spans = spans;
      ss->n_spans = q->nspans;
      ssv[0] = ss;
      r->scope_spans = ssv;
      r->n_scope_spans = 1;
      if (!(r->resource = resource_new(e, b, q))) return SONDE_ENOMEM;
      r->schema_url = "https://opentelemetry.io/schemas/1.26.0";
      rs[k++] = r;
      q->nspans = 0;
    }
  }
  req->resource_spans = rs;
  req->n_resource_spans = k;
  return 0;
}

static void read_lost(eh *e) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0 || !e->skel) return;
  uint64_t v[ncpu];
  uint32_t k = SONDE_HTTP_CNT_LOST;
  if (bpf_map__lookup_elem(e->skel->maps.counters, &k, sizeof(k), v, sizeof(v), 0)) return;
  uint64_t total = 0;
  for (int i = 0; i < ncpu; i++)
    total += v[i];
  if (total > e->lost_seen) {
    madd(e->m_lost, e, (double)(total - e->lost_seen));
    sonde_log(e->h, SONDE_LOG_WARN, "%" PRIu64 " records lost (ring buffer full)",
              total - e->lost_seen);
    e->lost_seen = total;
  }
}

static void send_batch(eh *e, sonde_batch *b, const char *what) {
  size_t items = sonde_batch_items(b);
  int rc = e->h->api->consume(e->h, b, "ebpf");
  madd(rc ? e->m_refused : e->m_batches, e, 1);
  if (rc)
    sonde_log(e->h, SONDE_LOG_WARN, "%zu %s refused downstream: %s", items, what,
              sonde_strerror(rc));
  sonde_batch_unref(b);
}

static void flush_spans(eh *e) {
  e->tb_spans = 0;
  sonde_batch *b = e->tb;
  e->tb = NULL;
  if (!b) return;
  if (finish_traces(e, b)) {
    sonde_log(e->h, SONDE_LOG_WARN, "out of memory: the last interval's spans are dropped");
    for (size_t i = 0; i < PROC_BUCKETS; i++)
      for (eproc *q = e->procs[i]; q; q = q->next)
        q->nspans = 0;
    sonde_batch_unref(b);
    return;
  }
  send_batch(e, b, "spans");
}

static void on_flush(void *arg) {
  eh *e = arg;
  drain(e);
  read_lost(e);
  flush_spans(e);
}

static void on_metrics(void *arg) {
  eh *e = arg;
  if (!e->red) return;
  drain(e);
  sonde_batch *b = NULL;
  int rc = hx_red_collect(e->red, now_ns(CLOCK_REALTIME), &b);
  if (rc) sonde_log(e->h, SONDE_LOG_WARN, "RED metrics dropped: %s", sonde_strerror(rc));
  if (b) send_batch(e, b, "RED data points");
}

/* Forgets connections silent for CONN_IDLE_NS (their close was not seen: the process exited) and
 * processes that exited. */
static void on_sweep(void *arg) {
  eh *e = arg;
  uint64_t now = now_ns(CLOCK_MONOTONIC);
  for (size_t i = 0; i < CONN_BUCKETS; i++) {
    for (econn **pp = &e->conns[i]; *pp;) {
      econn *c = *pp;
      if (now - c->last_ns > CONN_IDLE_NS || kill((pid_t)c->pid, 0)) {
        *pp = c->next;
        conn_free(e, c, c->last_ns);
      } else {
        pp = &c->next;
      }
    }
  }
  /* The RED series of an exited process go out in one last collection before they are forgotten
   * (else what it did since the last metrics_interval would be lost). */
  bool gone = false;
  for (size_t i = 0; e->red && !gone && i < PROC_BUCKETS; i++)
    for (eproc *q = e->procs[i]; q && !gone; q = q->next)
      gone = !q->nspans && kill((pid_t)q->pid, 0) && errno == ESRCH;
  if (gone) on_metrics(e);
  for (size_t i = 0; i < PROC_BUCKETS; i++) {
    for (eproc **pp = &e->procs[i]; *pp;) {
      eproc *q = *pp;
      if (!q->nspans && kill((pid_t)q->pid, 0) && errno == ESRCH) {
        *pp = q->next;
        if (e->red) hx_red_forget(e->red, q->pid);
        if (e->skel) bpf_map__delete_elem(e->skel->maps.pid_filter, &q->pid, 4, 0);
        proc_free(q);
      } else {
        pp = &q->next;
      }
    }
  }
  for (size_t i = 0; i < TID_BUCKETS; i++) {
    for (tident **pp = &e->tids[i]; *pp;) {
      tident *t = *pp;
      char path[64];
      snprintf(path, sizeof(path), "/proc/%u", t->tid);
      if (!t->owner && access(path, F_OK)) {
        *pp = t->next;
        free(t);
      } else {
        pp = &t->next;
      }
    }
  }
}

/* ---- TLS uprobes ----------------------------------------------------------------------------- */

/* Keeps l for teardown_bpf; destroys it when out of memory. */
static int keep_link(eh *e, struct bpf_link *l) {
  if (e->nlinks == e->caplinks) {
    size_t cap = e->caplinks ? e->caplinks * 2 : 32;
    struct bpf_link **n = realloc(e->links, cap * sizeof(*n));
    if (!n) {
      bpf_link__destroy(l);
      return SONDE_ENOMEM;
    }
    e->links = n;
    e->caplinks = cap;
  }
  e->links[e->nlinks++] = l;
  return 0;
}

/* The per-syscall tracepoints the tracer uses instead of the raw sys_enter/sys_exit ones when
 * tracefs is there: the other syscalls of the machine then do not run its programs. */
static const char *const syscall_exits[] = {
    "sys_exit_read",     "sys_exit_write",  "sys_exit_readv",   "sys_exit_writev",
    "sys_exit_recvfrom", "sys_exit_sendto", "sys_exit_recvmsg", "sys_exit_sendmsg",
    "sys_exit_connect",  "sys_exit_accept", "sys_exit_accept4", "sys_exit_sendfile64",
};

static bool tracefs_has_syscalls(const char *root) {
  char path[256];
  for (size_t i = 0; i < sizeof(syscall_exits) / sizeof(syscall_exits[0]); i++) {
    snprintf(path, sizeof(path), "%s/events/syscalls/%s/id", root, syscall_exits[i]);
    if (access(path, R_OK)) return false;
  }
  snprintf(path, sizeof(path), "%s/events/syscalls/sys_enter_close/id", root);
  return !access(path, R_OK);
}

/* Whether the syscall tracepoints can be used: tracefs where libbpf looks for it
 * (/sys/kernel/debug/tracing if that exists, else /sys/kernel/tracing), mounted at
 * /sys/kernel/tracing when nothing is (and sonde may). why says what failed otherwise. */
static bool syscall_tracepoints(char *why, size_t len) {
  const char *root = access("/sys/kernel/debug/tracing", F_OK) ? "/sys/kernel/tracing"
                                                               : "/sys/kernel/debug/tracing";
  if (tracefs_has_syscalls(root)) return true;
  struct stat st;
  if (!strcmp(root, "/sys/kernel/tracing") && access("/sys/kernel/tracing/events", F_OK) &&
      !stat(root, &st) && S_ISDIR(st.st_mode)) {
    if (mount("nodev", root, "tracefs", 0, NULL)) {
      snprintf(why, len, "tracefs is not mounted and mounting it at %s failed: %s", root,
               strerror(errno));
      return false;
    }
    if (tracefs_has_syscalls(root)) return true;
  }
  snprintf(why, len, "%s/events/syscalls has not the tracepoints needed (CONFIG_FTRACE_SYSCALLS)",
           root);
  return false;
}

static int attach_syscall_tracepoints(eh *e) {
  for (size_t i = 0; i < sizeof(syscall_exits) / sizeof(syscall_exits[0]) + 1; i++) {
    bool close = i == sizeof(syscall_exits) / sizeof(syscall_exits[0]);
    const char *tp = close ? "sys_enter_close" : syscall_exits[i];
    struct bpf_link *l = bpf_program__attach_tracepoint(
        close ? e->skel->progs.tp_enter_close : e->skel->progs.tp_exit, "syscalls", tp);
    if (!l) {
      sonde_log(e->h, SONDE_LOG_ERROR, "attaching to the tracepoint syscalls/%s: %s", tp,
                strerror(errno));
      return SONDE_EIO;
    }
    if (keep_link(e, l)) return SONDE_ENOMEM;
  }
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void *memdup(const void *p, size_t n) {
  void *q = malloc(n);
  return q ? memcpy(q, p, n) : NULL;
}

/* The probed functions, in the order of tls_cand.off. */
static const char *const tls_fns[TLS_NFN] = {"SSL_read", "SSL_write", "SSL_read_ex",
                                             "SSL_write_ex"};

static int cmp_file(const void *a, const void *b) {
  const tls_file *x = a, *y = b;
  if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Whether (dev, ino) is among the n sorted files (the ones decided before the scan). */
static bool file_known(const tls_file *v, size_t n, uint64_t dev, uint64_t ino) {
  tls_file k = {.dev = dev, .ino = ino};
  return v && bsearch(&k, v, n, sizeof(k), cmp_file);
}

/* File offsets of the functions tls_fns defines in the ELF file at path (0: not defined), from
 * .dynsym or, for executables and libraries that link OpenSSL or BoringSSL in without exporting
 * it, .symtab; what libbpf would find by name, without it reading the file on the loop. Returns
 * whether SSL_read and SSL_write are both there. */
static bool ssl_offsets(const char *path, uint64_t off[TLS_NFN]) {
  memset(off, 0, TLS_NFN * sizeof(off[0]));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
  size_t nph = 0;
  if (!elf || elf_kind(elf) != ELF_K_ELF || elf_getphdrnum(elf, &nph)) goto out;
  for (int pass = 0; pass < 2; pass++) { /* .dynsym first: what the file exports */
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(elf, scn))) {
      GElf_Shdr sh;
      if (!gelf_getshdr(scn, &sh) || sh.sh_type != (pass ? SHT_SYMTAB : SHT_DYNSYM) ||
          !sh.sh_entsize)
        continue;
      Elf_Data *d = elf_getdata(scn, NULL);
      size_t n = sh.sh_size / sh.sh_entsize;
      for (size_t i = 0; d && i < n; i++) {
        GElf_Sym sym;
        if (!gelf_getsym(d, (int)i, &sym) || GELF_ST_TYPE(sym.st_info) != STT_FUNC ||
            sym.st_shndx == SHN_UNDEF || !sym.st_value)
          continue;
        const char *name = elf_strptr(elf, sh.sh_link, sym.st_name);
        if (!name || strncmp(name, "SSL_", 4)) continue;
        for (int f = 0; f < TLS_NFN; f++) {
          if (off[f] || strcmp(name, tls_fns[f])) continue;
          /* The symbol's address to its offset in the file: through its executable segment. */
          for (size_t k = 0; k < nph; k++) {
            GElf_Phdr ph;
            if (gelf_getphdr(elf, (int)k, &ph) && ph.p_type == PT_LOAD && (ph.p_flags & PF_X) &&
                sym.st_value >= ph.p_vaddr && sym.st_value < ph.p_vaddr + ph.p_filesz) {
              off[f] = sym.st_value - ph.p_vaddr + ph.p_offset;
              break;
            }
          }
        }
      }
    }
  }
out:
  if (elf) elf_end(elf);
  close(fd);
  return off[0] && off[1];
}

/* One scan of /proc on the thread pool: the processes not seen by the previous scan, each
 * executable file they map (their executable, libssl, any library with OpenSSL or BoringSSL
 * inside) that no scan decided yet, looked up for SSL_read/SSL_write. The loop attaches. */
/* Paths kept per candidate file: each goes through one process's /proc entry, so each lasts only
 * as long as that process (a short-lived one may be gone by the attach). */
#define TLS_PATHS 4

typedef struct tls_cand {
  char *path[TLS_PATHS]; /* through /proc/PID/exe or /proc/PID/root */
  size_t npath;
  uint64_t dev, ino;
  uint64_t off[TLS_NFN];
} tls_cand;

typedef struct tls_job {
  eh *e;
  uint32_t self_pid;
  uint32_t *seen; /* sorted pids of the previous scan (the job's copy) */
  size_t nseen;
  tls_file *known; /* sorted files decided before (the job's copy) */
  size_t nknown;
  /* results */
  uint32_t *now;
  size_t nnow;
  tls_file *checked; /* files looked at by this scan */
  size_t nchecked, capchecked;
  tls_cand *cands; /* the ones with SSL_read and SSL_write */
  size_t ncands, capcands;
  size_t nnew;      /* processes looked at */
  uint64_t took_ns; /* on the thread pool */
} tls_job;

static void tls_job_free(tls_job *j) {
  free(j->seen);
  free(j->known);
  free(j->now);
  free(j->checked);
  for (size_t i = 0; i < j->ncands; i++)
    for (size_t k = 0; k < j->cands[i].npath; k++)
      free(j->cands[i].path[k]);
  free(j->cands);
  free(j);
}

static void tls_check_file(tls_job *j, const char *path) {
  struct stat st;
  if (stat(path, &st) || !S_ISREG(st.st_mode)) return;
  uint64_t dev = st.st_dev, ino = st.st_ino;
  if (file_known(j->known, j->nknown, dev, ino)) return;
  for (size_t i = 0; i < j->nchecked; i++) {
    if (j->checked[i].dev != dev || j->checked[i].ino != ino) continue;
    /* Another process maps a candidate: another way in, should the first one's be gone. */
    for (size_t k = 0; k < j->ncands; k++) {
      tls_cand *c = &j->cands[k];
      if (c->dev == dev && c->ino == ino && c->npath < TLS_PATHS &&
          (c->path[c->npath] = strdup(path)))
        c->npath++;
    }
    return;
  }
  if (j->nchecked == j->capchecked) {
    size_t cap = j->capchecked ? j->capchecked * 2 : 64;
    tls_file *n = realloc(j->checked, cap * sizeof(*n));
    if (!n) return;
    j->checked = n;
    j->capchecked = cap;
  }
  j->checked[j->nchecked++] = (tls_file){.dev = dev, .ino = ino};
  uint64_t off[TLS_NFN];
  if (!ssl_offsets(path, off)) return;
  if (j->ncands == j->capcands) {
    size_t cap = j->capcands ? j->capcands * 2 : 4;
    tls_cand *n = realloc(j->cands, cap * sizeof(*n));
    if (!n) return;
    j->cands = n;
    j->capcands = cap;
  }
  tls_cand *c = &j->cands[j->ncands];
  memset(c, 0, sizeof(*c));
  if (!(c->path[0] = strdup(path))) return;
  c->npath = 1;
  c->dev = dev;
  c->ino = ino;
  memcpy(c->off, off, sizeof(off));
  j->ncands++;
}

static void tls_scan_pid(tls_job *j, uint32_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%u/exe", pid);
  tls_check_file(j, path);
  snprintf(path, sizeof(path), "/proc/%u/maps", pid);
  FILE *f = fopen(path, "re");
  if (!f) return;
  char line[PATH_MAX + 128];
  while (fgets(line, sizeof(line), f)) {
    /* "start-end perms offset dev inode path": executable file mappings only */
    char perms[8];
    char *file = strchr(line, '/');
    if (!file || sscanf(line, "%*s %7s", perms) != 1 || !strchr(perms, 'x')) continue;
    file[strcspn(file, "\n")] = 0;
    if (strstr(file, " (deleted)")) continue;
    char rpath[PATH_MAX + 64];
    snprintf(rpath, sizeof(rpath), "/proc/%u/root%s", pid, file);
    tls_check_file(j, rpath);
  }
  fclose(f);
}

static void tls_scan_work(void *arg) {
  tls_job *j = arg;
  uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  DIR *d = opendir("/proc");
  if (!d) return;
  size_t cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    uint32_t pid;
    if (sonde__parse_pid(de->d_name, &pid)) continue;
    if (j->nnow == cap) {
      cap = cap ? cap * 2 : 512;
      uint32_t *nn = realloc(j->now, cap * sizeof(*nn));
      if (!nn) break;
      j->now = nn;
    }
    j->now[j->nnow++] = pid;
  }
  closedir(d);
  if (!j->now) return;
  qsort(j->now, j->nnow, sizeof(*j->now), cmp_u32);
  for (size_t i = 0; i < j->nnow; i++) {
    if (j->now[i] == j->self_pid) continue;
    if (j->seen && bsearch(&j->now[i], j->seen, j->nseen, sizeof(uint32_t), cmp_u32)) continue;
    tls_scan_pid(j, j->now[i]);
    j->nnew++;
  }
  j->took_ns = now_ns(CLOCK_MONOTONIC) - t0;
}

static bool file_add(eh *e, uint64_t dev, uint64_t ino, bool attached) {
  if (e->nfiles == e->capfiles) {
    size_t cap = e->capfiles ? e->capfiles * 2 : 256;
    tls_file *n = realloc(e->files, cap * sizeof(*n));
    if (!n) return false;
    e->files = n;
    e->capfiles = cap;
  }
  e->files[e->nfiles++] = (tls_file){.dev = dev, .ino = ino, .attached = attached};
  return true;
}

static void tls_attach(eh *e, const tls_cand *c) {
  struct bpf_program *progs[TLS_NFN][2] = {
      {e->skel->progs.ssl_read_enter, e->skel->progs.ssl_read_exit},
      {e->skel->progs.ssl_write_enter, e->skel->progs.ssl_write_exit},
      {e->skel->progs.ssl_read_ex_enter, e->skel->progs.ssl_read_ex_exit},
      {e->skel->progs.ssl_write_ex_enter, e->skel->progs.ssl_write_ex_exit},
  };
  int ok = 0, err = ENOENT;
  const char *path = c->path[0];
  for (size_t p = 0; !ok && p < c->npath; p++) {
    struct stat st;
    path = c->path[p];
    if (stat(path, &st) || (uint64_t)st.st_dev != c->dev || (uint64_t)st.st_ino != c->ino)
      continue; /* that process exited since the scan read it */
    for (int f = 0; f < TLS_NFN; f++) {
      for (int ret = 0; c->off[f] && ret < 2; ret++) {
        LIBBPF_OPTS(bpf_uprobe_opts, o, .retprobe = ret);
        struct bpf_link *l =
            bpf_program__attach_uprobe_opts(progs[f][ret], -1, path, (size_t)c->off[f], &o);
        if (l && !keep_link(e, l))
          ok++;
        else if (!l)
          err = errno;
      }
    }
  }
  if (!ok && (err == ENOENT || err == ESRCH)) {
    /* Every process it was seen in is gone: not decided, so the next process that maps the file
     * (a new pid, scanned) brings it back. Marking it done would leave e.g. every later node
     * untraced because a short-lived node ran during the scan. */
    sonde_log(e->h, SONDE_LOG_DEBUG, "TLS: %s is gone before its uprobes: left for a later scan",
              path);
    return;
  }
  file_add(e, c->dev, c->ino, ok > 0);
  if (ok) {
    e->ntls_files++;
    madd(e->m_tls_files, e, 1);
    sonde_log(e->h, SONDE_LOG_INFO, "TLS: %d uprobes on %s", ok, path);
  } else {
    sonde_log(e->h, SONDE_LOG_WARN, "TLS: no SSL_read/SSL_write uprobe could attach to %s: %s",
              path, strerror(err));
  }
}

static void tls_scan_done(void *arg, int status) {
  tls_job *j = arg;
  eh *e = j->e;
  e->tls_job = NULL;
  if (status || e->stopping || !e->skel || !j->now) {
    tls_job_free(j);
    return;
  }
  if (j->nnew && e->h->api->log_enabled(e->h, SONDE_LOG_DEBUG))
    sonde_log(e->h, SONDE_LOG_DEBUG,
              "TLS scan: %zu new processes, %zu files read, %zu with SSL_read/SSL_write, %.1f ms "
              "on the thread pool",
              j->nnew, j->nchecked, j->ncands, (double)j->took_ns / 1e6);
  for (size_t i = 0; i < j->ncands; i++)
    if (e->ntls_files < MAX_TLS_FILES) tls_attach(e, &j->cands[i]);
  /* The files without SSL functions are not read again; the candidates are in already. */
  for (size_t i = 0; i < j->nchecked; i++) {
    bool cand = false;
    for (size_t k = 0; k < j->ncands && !cand; k++)
      cand = j->cands[k].dev == j->checked[i].dev && j->cands[k].ino == j->checked[i].ino;
    if (!cand) file_add(e, j->checked[i].dev, j->checked[i].ino, false);
  }
  qsort(e->files, e->nfiles, sizeof(*e->files), cmp_file);
  free(e->seen_pids);
  e->seen_pids = j->now;
  e->nseen = j->nnow;
  j->now = NULL;
  tls_job_free(j);
}

/* New processes since the last scan: libssl they map, or OpenSSL inside their executable or
 * another library; read on the thread pool (a node executable is ~100 MB), attached here. */
static void on_tls_scan(void *arg) {
  eh *e = arg;
  if (e->tls_job || e->stopping) return; /* the previous scan is still running */
  tls_job *j = calloc(1, sizeof(*j));
  if (!j) return;
  j->e = e;
  j->self_pid = e->self_pid;
  if ((e->nseen && !(j->seen = memdup(e->seen_pids, e->nseen * sizeof(uint32_t)))) ||
      (e->nfiles && !(j->known = memdup(e->files, e->nfiles * sizeof(tls_file))))) {
    tls_job_free(j);
    return;
  }
  j->nseen = e->nseen;
  j->nknown = e->nfiles;
  if (e->h->api->queue_work(e->h, tls_scan_work, tls_scan_done, j)) {
    tls_job_free(j);
    return;
  }
  e->tls_job = j;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int eh_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  eh *e = calloc(1, sizeof(*e));
  if (!e) return SONDE_ENOMEM;
  e->h = h;
  e->cfg = config;
  e->self_pid = (uint32_t)getpid();
  elf_version(EV_CURRENT);
  if (gethostname(e->hostname, sizeof(e->hostname) - 1))
    snprintf(e->hostname, sizeof(e->hostname), "unknown");
  const eh_config *c = config;
  int rc = hx_routes_new((const char *const *)c->routes.patterns.v, c->routes.patterns.n,
                         (size_t)c->routes.max_per_service, &e->routes);
  if (rc) {
    sonde_log(h, SONDE_LOG_ERROR, "routes::patterns: %s", sonde_strerror(rc));
    free(e);
    return rc;
  }
  if (c->metrics && (rc = hx_red_new(&e->red))) {
    hx_routes_free(e->routes);
    free(e);
    return rc;
  }
  const sonde_host_api *a = h->api;
  /* Metrics are diagnostics: the receiver works without them. */
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_records", "records received from BPF", NULL,
            &e->m_events);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_records_lost",
            "records BPF dropped because the ring buffer was full", NULL, &e->m_lost);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_spans", "spans made", NULL, &e->m_spans);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_ebpf_http_connections", "connections followed", NULL,
            &e->m_conns);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_not_http",
            "connections found not to carry HTTP (BPF stops sending them)", NULL, &e->m_not_http);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_unanswered",
            "requests that got no response before their connection closed (no span)", NULL,
            &e->m_unanswered);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_batches", "batches accepted downstream", NULL,
            &e->m_batches);
  a->metric(h, SONDE_METRIC_COUNTER, "sonde_ebpf_http_batches_refused",
            "batches refused downstream (dropped)", NULL, &e->m_refused);
  a->metric(h, SONDE_METRIC_GAUGE, "sonde_ebpf_http_tls_files",
            "files (libssl, executables) with SSL uprobes", NULL, &e->m_tls_files);
  *inst = e;
  return 0;
}

static void teardown_bpf(eh *e) {
  for (size_t i = 0; i < e->nlinks; i++)
    bpf_link__destroy(e->links[i]);
  free(e->links);
  e->links = NULL;
  e->nlinks = e->caplinks = 0;
  ring_buffer__free(e->rb);
  e->rb = NULL;
  sonde_http_tracer__destroy(e->skel);
  e->skel = NULL;
}

static void poll_closed(uv_handle_t *h) {
  free(h);
}

static void stop_timers(eh *e) {
  sonde_timer **t[] = {&e->drain, &e->flush, &e->mtimer, &e->sweep, &e->tls_scan};
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    if (*t[i]) e->h->api->timer_stop(*t[i]);
    *t[i] = NULL;
  }
}

static int eh_start(void *inst) {
  eh *e = inst;
  char err[512];
  int rc = check_host(err, sizeof(err));
  if (rc) {
    sonde_log(e->h, SONDE_LOG_ERROR, "%s", err);
    return rc;
  }
  e->mono_to_real = now_ns(CLOCK_REALTIME) - now_ns(CLOCK_MONOTONIC);
  e->skel = sonde_http_tracer__open();
  if (!e->skel) {
    sonde_log(e->h, SONDE_LOG_ERROR, "opening the BPF HTTP tracer: %s", strerror(errno));
    return SONDE_EIO;
  }
  const sonde__select *inc = &e->cfg->include;
  e->skel->rodata->cfg.capture = (uint32_t)e->cfg->capture_bytes;
  e->skel->rodata->cfg.include_only = inc->pids.n && sonde__select_pids_only(inc);
  e->skel->rodata->cfg.port_filter = e->cfg->open_ports != NULL;
  e->skel->rodata->cfg.wakeup_bytes = SONDE_HTTP_RINGBUF_BYTES / 32;
  char why[256] = "";
  bool per_syscall = syscall_tracepoints(why, sizeof(why));
  struct bpf_program *off[] = {e->skel->progs.on_enter, e->skel->progs.on_exit,
                               e->skel->progs.tp_enter_close, e->skel->progs.tp_exit};
  for (int i = per_syscall ? 0 : 2, k = 0; k < 2; i++, k++)
    bpf_program__set_autoload(off[i], false);
  bpf_program__set_autoattach(e->skel->progs.tp_enter_close, false);
  bpf_program__set_autoattach(e->skel->progs.tp_exit, false);
  if (per_syscall) {
    sonde_log(e->h, SONDE_LOG_INFO, "per-syscall tracepoints (syscalls/sys_exit_read, ...)");
  } else {
    sonde_log(e->h, SONDE_LOG_WARN,
              "raw tracepoints sys_enter/sys_exit, which every syscall of the machine runs: %s",
              why);
  }
  if (sonde_http_tracer__load(e->skel)) {
    int er = errno;
    sonde_log(e->h, SONDE_LOG_ERROR, "loading the BPF HTTP tracer: %s%s", strerror(er),
              er == EPERM || er == EACCES ? " (the verifier rejected it: see the log above)" : "");
    rc = er == EPERM || er == EACCES ? SONDE_EPERM : SONDE_EIO;
    goto fail;
  }
  rc = SONDE_EIO;
  int ser = sonde__pid_filter_seed(e->skel->maps.pid_filter, e->self_pid, inc, &e->cfg->exclude,
                                   SONDE_HTTP_PID_INCLUDE, SONDE_HTTP_PID_EXCLUDE);
  if (ser) {
    errno = -ser;
    goto fail_errno;
  }
  if (e->cfg->open_ports) {
    static uint64_t bits[1024];
    memset(bits, 0, sizeof(bits));
    if (parse_ports(e->cfg->open_ports, bits, err, sizeof(err))) {
      sonde_log(e->h, SONDE_LOG_ERROR, "%s", err);
      rc = SONDE_ECONFIG;
      goto fail;
    }
    for (uint32_t k = 0; k < 1024; k++)
      if (bits[k] && bpf_map__update_elem(e->skel->maps.ports, &k, 4, &bits[k], 8, BPF_ANY))
        goto fail_errno;
  }
  if (sonde_http_tracer__attach(e->skel)) {
    sonde_log(e->h, SONDE_LOG_ERROR,
              "attaching to the raw tracepoints sys_enter/sys_exit/sched_process_fork: %s "
              "(kernel feature missing: raw tracepoints)",
              strerror(errno));
    goto fail;
  }
  if (per_syscall && (rc = attach_syscall_tracepoints(e))) goto fail;
  e->rb = ring_buffer__new(bpf_map__fd(e->skel->maps.events), rb_event, e, NULL);
  if (!e->rb) goto fail_errno;
  rc = SONDE_ENOMEM;
  if (!(e->poll = calloc(1, sizeof(*e->poll)))) goto fail;
  int urc = uv_poll_init(e->h->api->loop(e->h), e->poll, ring_buffer__epoll_fd(e->rb));
  if (urc) {
    sonde_log(e->h, SONDE_LOG_ERROR, "watching the ring buffer: %s", uv_strerror(urc));
    free(e->poll);
    e->poll = NULL;
    rc = SONDE_EIO;
    goto fail;
  }
  e->poll->data = e;
  uv_poll_start(e->poll, UV_READABLE, on_poll);
  const sonde_host_api *a = e->h->api;
  int64_t ms = 1000000;
  if ((rc = a->timer_start(e->h, SONDE_HTTP_DRAIN_MS * ms, SONDE_HTTP_DRAIN_MS * ms, on_drain, e,
                           &e->drain)) ||
      (rc = a->timer_start(e->h, e->cfg->flush_interval_ns, e->cfg->flush_interval_ns, on_flush, e,
                           &e->flush)) ||
      (rc = a->timer_start(e->h, SWEEP_NS, SWEEP_NS, on_sweep, e, &e->sweep)))
    goto fail;
  if (e->red && (rc = a->timer_start(e->h, e->cfg->metrics_interval_ns, e->cfg->metrics_interval_ns,
                                     on_metrics, e, &e->mtimer)))
    goto fail;
  if (e->cfg->tls &&
      (rc = a->timer_start(e->h, TLS_SCAN_NS, TLS_SCAN_NS, on_tls_scan, e, &e->tls_scan)))
    goto fail;
  /* Nothing fails after this: the first scan starts now (its result is attached when it ends). */
  if (e->cfg->tls) on_tls_scan(e);
  sonde_log(e->h, SONDE_LOG_INFO, "tracing HTTP on %s%s",
            e->cfg->open_ports ? e->cfg->open_ports : "every port",
            e->cfg->tls ? ", looking for SSL libraries and executables" : "");
  return 0;

fail_errno:
  sonde_log(e->h, SONDE_LOG_ERROR, "setting up the BPF HTTP tracer: %s", strerror(errno));
  rc = SONDE_EIO;
fail:
  stop_timers(e);
  if (e->poll) {
    uv_close((uv_handle_t *)e->poll, poll_closed);
    e->poll = NULL;
  }
  teardown_bpf(e);
  return rc;
}

static void eh_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  eh *e = inst;
  /* What is in the ring and the spans of the last partial interval are sent, then nothing more. */
  if (e->rb) {
    on_flush(e);
    on_metrics(e);
  }
  stop_timers(e);
  e->stopping = true;
  if (e->poll) {
    uv_poll_stop(e->poll);
    uv_close((uv_handle_t *)e->poll, poll_closed);
    e->poll = NULL;
  }
  teardown_bpf(e);
  done(arg);
}

static void eh_destroy(void *inst) {
  eh *e = inst;
  stop_timers(e);
  teardown_bpf(e);
  e->stopping = true;
  for (size_t i = 0; i < CONN_BUCKETS; i++) {
    for (econn *c = e->conns[i], *next; c; c = next) {
      next = c->next;
      conn_drop_decoders(c, c->last_ns);
      free(c);
    }
  }
  for (size_t i = 0; i < PROC_BUCKETS; i++) {
    for (eproc *q = e->procs[i], *next; q; q = next) {
      next = q->next;
      proc_free(q);
    }
  }
  for (size_t i = 0; i < TID_BUCKETS; i++) {
    for (tident *t = e->tids[i], *next; t; t = next) {
      next = t->next;
      free(t);
    }
  }
  if (e->tb) sonde_batch_unref(e->tb);
  hx_routes_free(e->routes);
  if (e->red) hx_red_free(e->red);
  free(e->seen_pids);
  free(e->files);
  free(e);
}

static const sonde_component ebpf_http = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_RECEIVER,
    .type = "ebpf_http",
    .doc = "spans and RED metrics of every HTTP/1.x, HTTP/2 and gRPC request on the node, from "
           "syscall tracepoints and SSL uprobes (no SDK, no kprobes)",
    .signals = SONDE_SIGNAL_TRACES | SONDE_SIGNAL_METRICS,
    .options = eh_options,
    .config_size = sizeof(eh_config),
    .validate = eh_validate,
    .create = eh_create,
    .start = eh_start,
    .shutdown = eh_shutdown,
    .destroy = eh_destroy,
};

SONDE_PLUGIN_DEFINE("ebpf_http", SONDE_VERSION, &ebpf_http);

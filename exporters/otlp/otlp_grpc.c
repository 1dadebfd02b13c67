/* The otlp_grpc exporter: OTLP/gRPC unary Export calls over one HTTP/2 connection (nghttp2 on the
 * loop), every concurrent send its own stream.
 *
 * A send is encoded and compressed on the thread pool, then submitted as a stream once the
 * connection is ready. Connection attempts are paced by a backoff (1 s, x1.6, up to 30 s, as gRPC's
 * connection backoff); while it runs, sends fail fast with SONDE_ERETRY as a gRPC client without
 * wait_for_ready does, and the core's retry takes them up again. The gRPC status of each stream
 * comes from its trailers (or, failing those, from the HTTP status or the RST_STREAM code, as
 * gRPC's own clients map them) and becomes 0, SONDE_ERETRY or SONDE_EPERMANENT by otelcol's
 * otlpexporter rules. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>

#include "otlp_common.h"
#include "otlp_exporters.h"

enum {
  GRPC_OK = 0,
  GRPC_CANCELLED = 1,
  GRPC_UNKNOWN = 2,
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_DEADLINE_EXCEEDED = 4,
  GRPC_NOT_FOUND = 5,
  GRPC_ALREADY_EXISTS = 6,
  GRPC_PERMISSION_DENIED = 7,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_FAILED_PRECONDITION = 9,
  GRPC_ABORTED = 10,
  GRPC_OUT_OF_RANGE = 11,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  GRPC_UNAVAILABLE = 14,
  GRPC_DATA_LOSS = 15,
  GRPC_UNAUTHENTICATED = 16,
};

static const char *const code_names[] = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

static const char *code_name(int code) {
  return code >= 0 && code <= 16 ? code_names[code] : "Unknown";
}

#define BACKOFF_BASE_MS 1000
#define BACKOFF_MAX_MS 30000
#define MAX_RESPONSE (4u << 20)

typedef struct greq greq;
typedef struct ogrpc ogrpc;

enum conn_state { C_IDLE, C_CONNECTING, C_READY, C_BACKOFF };

struct greq {
  greq *next, *prev; /* in g->all */
  greq *qnext;       /* in g->waiting */
  ogrpc *g;
  sonde_batch *b;
  sonde_signal sig;
  sonde_send_cb cb;
  void *arg;
  sonde_buf payload; /* 5-byte gRPC prefix + message */
  size_t off;
  int enc_status;
  int32_t stream_id; /* 0: not on the wire */
  uint64_t deadline_ms;
  int http_status, grpc_status;
  char grpc_message[256];
  int64_t retry_delay_ns; /* from RetryInfo; -1: none */
  char resp_encoding[16];
  sonde_buf resp;
  bool done, cancelled, waiting;
  /* otlp_grpc_call: not an OTLP export (no batch, no partial_success) */
  bool generic;
  char *path;
  char **hdrs; /* name, value, name, value...; names lower case */
  size_t nhdrs;
};

struct ogrpc {
  const sonde_host *h;
  const otlp_config *cfg;
  int64_t timeout_ns; /* request_timeout, or the core's timeout when unset */
  uv_loop_t *loop;
  otlp_url url;
  SSL_CTX *tls;
  otlp_metrics m;
  nghttp2_nv *extra; /* user headers, lower-cased */
  size_t nextra;
  char timeout_hdr[24];
  /* connection */
  enum conn_state state;
  otlp_conn *conn;
  nghttp2_session *sess;
  bool goaway;
  int live_conns;
  uv_timer_t backoff, tick;
  bool timers_open;
  int handles_open;
  uint64_t backoff_ms;
  uint64_t connect_start_ms, last_recv_ms;
  char last_error[256];
  greq *all;
  greq *wait_head, *wait_tail; /* encoded, waiting for the connection */
  int in_work;                 /* encode jobs on the thread pool */
  int in_nghttp2;              /* inside nghttp2_session_*: the session must not be freed */
  bool stopping;
  void (*stop_done)(void *);
  void *stop_arg;
};

static void kick(ogrpc *g);
static const otlp_conn_cbs ogrpc_conn_cbs;
static void drop_connection(ogrpc *g, const char *why, bool failed_connect);

/* ---- request completion --------------------------------------------------------------------- */

static void req_free(greq *r) {
  ogrpc *g = r->g;
  if (r->prev)
    r->prev->next = r->next;
  else if (g->all == r)
    g->all = r->next;
  if (r->next) r->next->prev = r->prev;
  sonde_batch_unref(r->b);
  sonde_buf_free(&r->payload);
  sonde_buf_free(&r->resp);
  for (size_t i = 0; i < r->nhdrs * 2; i++)
    free(r->hdrs[i]);
  free(r->hdrs);
  free(r->path);
  free(r);
}

static void maybe_stopped(ogrpc *g);

static void complete(greq *r, int status, int64_t retry_ns) {
  if (r->done) return;
  r->done = true;
  sonde_send_cb cb = r->cb;
  void *arg = r->arg;
  ogrpc *g = r->g;
  req_free(r);
  cb(arg, status, retry_ns);
  maybe_stopped(g);
}

static bool retryable(int code, bool has_retry_info) {
  switch (code) {
  case GRPC_CANCELLED:
  case GRPC_DEADLINE_EXCEEDED:
  case GRPC_ABORTED:
  case GRPC_OUT_OF_RANGE:
  case GRPC_UNAVAILABLE:
  case GRPC_DATA_LOSS:
    return true;
  case GRPC_RESOURCE_EXHAUSTED:
    return has_retry_info;
  default:
    return false;
  }
}

/* Ends a request with a gRPC status, as otelcol's otlpexporter processError does. */
static void finish_status(greq *r, int code, const char *msg) {
  ogrpc *g = r->g;
  if (code == GRPC_OK && r->generic) {
    complete(r, 0, 0);
    return;
  }
  if (code == GRPC_OK) {
    int64_t rejected = 0;
    char pmsg[256] = "";
    const uint8_t *p = r->resp.data;
    size_t n = r->resp.len;
    sonde_buf plain = {0};
    /* The reply message: 1 byte compressed flag, 4 bytes length, then the message. */
    if (n >= 5) {
      uint32_t ml = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
      if (ml <= n - 5) {
        if (p[0] & 1) {
          if (!otlp_decompress(r->resp_encoding, p + 5, ml, MAX_RESPONSE, &plain))
            otlp_decode_partial_success(plain.data, plain.len, &rejected, pmsg, sizeof pmsg);
        } else {
          otlp_decode_partial_success(p + 5, ml, &rejected, pmsg, sizeof pmsg);
        }
      }
    }
    sonde_buf_free(&plain);
    if (rejected || pmsg[0]) {
      sonde_log(g->h, SONDE_LOG_WARN,
                "Partial success response: message=\"%s\" dropped_%s=%" PRId64, pmsg,
                sonde_signal_item_name(r->sig), rejected);
      sonde_metric *mc = g->m.rejected[sonde_signal_index(r->sig)];
      if (mc && rejected > 0) g->h->api->metric_add(mc, (double)rejected);
    }
    complete(r, 0, 0);
    return;
  }
  bool has_ri = r->retry_delay_ns >= 0;
  if (retryable(code, has_ri)) {
    sonde_log(g->h, SONDE_LOG_WARN, "Exporting failed, will retry: rpc error: code = %s desc = %s",
              code_name(code), msg);
    complete(r, SONDE_ERETRY, has_ri ? r->retry_delay_ns : 0);
  } else {
    sonde_log(g->h, SONDE_LOG_ERROR,
              "Exporting failed, dropping data (permanent): rpc error: code = %s desc = %s",
              code_name(code), msg);
    complete(r, SONDE_EPERMANENT, 0);
  }
}

/* gRPC's HTTP-to-gRPC status mapping (doc/http-grpc-status-mapping.md). */
static int http_to_grpc(int st) {
  switch (st) {
  case 400:
    return GRPC_INTERNAL;
  case 401:
    return GRPC_UNAUTHENTICATED;
  case 403:
    return GRPC_PERMISSION_DENIED;
  case 404:
    return GRPC_UNIMPLEMENTED;
  case 429:
  case 502:
  case 503:
  case 504:
    return GRPC_UNAVAILABLE;
  default:
    return GRPC_UNKNOWN;
  }
}

/* RST_STREAM codes as grpc-go maps them. */
static int rst_to_grpc(uint32_t ec) {
  switch (ec) {
  case NGHTTP2_REFUSED_STREAM:
    return GRPC_UNAVAILABLE; /* never processed: safe to send again */
  case NGHTTP2_CANCEL:
    return GRPC_CANCELLED;
  case NGHTTP2_ENHANCE_YOUR_CALM:
    return GRPC_RESOURCE_EXHAUSTED;
  case NGHTTP2_INADEQUATE_SECURITY:
    return GRPC_PERMISSION_DENIED;
  default:
    return GRPC_INTERNAL;
  }
}

/* ---- nghttp2 callbacks ---------------------------------------------------------------------- */

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud) {
  ogrpc *g = ud;
  if (!g->conn || otlp_conn_write(g->conn, data, len)) return NGHTTP2_ERR_CALLBACK_FAILURE;
  return (ssize_t)len;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  greq *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!r) return 0;
  if (nl == 7 && !memcmp(name, ":status", 7)) {
    r->http_status = atoi((const char *)value);
  } else if (nl == 11 && !memcmp(name, "grpc-status", 11)) {
    r->grpc_status = atoi((const char *)value);
  } else if (nl == 12 && !memcmp(name, "grpc-message", 12)) {
    /* percent-encoded */
    size_t o = 0;
    for (size_t i = 0; i < vl && o + 1 < sizeof r->grpc_message; i++) {
      if (value[i] == '%' && i + 2 < vl) {
        char hx[3] = {(char)value[i + 1], (char)value[i + 2], 0};
        r->grpc_message[o++] = (char)strtol(hx, NULL, 16);
        i += 2;
      } else {
        r->grpc_message[o++] = (char)value[i];
      }
    }
    r->grpc_message[o] = 0;
  } else if (nl == 23 && !memcmp(name, "grpc-status-details-bin", 23)) {
    /* base64, padding optional */
    size_t cap = vl / 4 * 3 + 4;
    uint8_t *bin = malloc(cap + 4);
    char *txt = malloc(vl + 4);
    if (bin && txt) {
      memcpy(txt, value, vl);
      size_t tl = vl;
      while (tl % 4)
        txt[tl++] = '=';
      int n = EVP_DecodeBlock(bin, (const unsigned char *)txt, (int)tl);
      if (n > 0) {
        while (tl && txt[tl - 1] == '=' && n > 0) {
          tl--;
          n--;
        }
        char m[8];
        otlp_decode_rpc_status(bin, (size_t)n, m, 0, &r->retry_delay_ns);
      }
    }
    free(bin);
    free(txt);
  } else if (nl == 13 && !memcmp(name, "grpc-encoding", 13)) {
    snprintf(r->resp_encoding, sizeof r->resp_encoding, "%.*s", (int)vl, (const char *)value);
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud) {
  greq *r = nghttp2_session_get_stream_user_data(s, sid);
  if (!r || r->resp.len + len > MAX_RESPONSE) return 0;
  if (sonde_buf_append(&r->resp, data, len))
    return 0; /* the reply only carries partial_success: lose it rather than the stream */
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t ec, void *ud) {
  ogrpc *g = ud;
  greq *r = nghttp2_session_get_stream_user_data(s, sid);
  if (!r) return 0;
  nghttp2_session_set_stream_user_data(s, sid, NULL);
  r->stream_id = 0;
  char msg[320];
  int code;
  if (r->grpc_status >= 0) {
    code = r->grpc_status;
    snprintf(msg, sizeof msg, "%s", r->grpc_message);
  } else if (ec != NGHTTP2_NO_ERROR) {
    code = rst_to_grpc(ec);
    snprintf(msg, sizeof msg, "stream reset by %s: %s", g->url.authority,
             nghttp2_http2_strerror(ec));
  } else if (r->http_status && r->http_status != 200) {
    code = http_to_grpc(r->http_status);
    snprintf(msg, sizeof msg, "unexpected HTTP status code received from server: %d",
             r->http_status);
  } else {
    code = GRPC_INTERNAL;
    snprintf(msg, sizeof msg, "server closed the stream without sending trailers");
  }
  finish_status(r, code, msg);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  ogrpc *g = ud;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    /* No new streams here; streams above last_stream_id are closed by nghttp2 as refused. */
    g->goaway = true;
  }
  return 0;
}

static ssize_t read_payload(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud) {
  greq *r = src->ptr;
  size_t n = r->payload.len - r->off;
  if (n > len) n = len;
  memcpy(buf, r->payload.data + r->off, n);
  r->off += n;
  if (r->off == r->payload.len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* ---- connection ----------------------------------------------------------------------------- */

static bool streams_open(const ogrpc *g) {
  for (const greq *r = g->all; r; r = r->next)
    if (r->stream_id) return true;
  return false;
}

static void session_send(ogrpc *g) {
  /* Inside nghttp2 (a send completed from a stream callback): conn_data sends once it is out. */
  if (!g->sess || !g->conn || g->in_nghttp2) return;
  g->in_nghttp2++;
  int rv = nghttp2_session_send(g->sess);
  g->in_nghttp2--;
  if (rv) {
    drop_connection(g, nghttp2_strerror(rv), false);
    return;
  }
  if (otlp_conn_flush(g->conn)) {
    drop_connection(g, "write failed", false);
    return;
  }
  if ((g->goaway && !streams_open(g)) ||
      (!nghttp2_session_want_read(g->sess) && !nghttp2_session_want_write(g->sess))) {
    drop_connection(g, NULL, false); /* drained after GOAWAY: reconnect on demand */
    kick(g);
  }
}

static const char *const paths[4] = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
};

#define NV(n, v)                                                                                   \
  {                                                                                                \
    (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                                      \
        NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                               \
  }

static int submit(ogrpc *g, greq *r) {
  const char *enc = r->generic                              ? "identity"
                    : g->cfg->compression == OTLP_COMP_GZIP ? "gzip"
                    : g->cfg->compression == OTLP_COMP_ZSTD ? "zstd"
                                                            : "identity";
  nghttp2_nv fixed[] = {
      NV(":method", "POST"),
      NV(":scheme", g->url.tls ? "https" : "http"),
      NV(":path", r->path ? r->path : paths[sonde_signal_index(r->sig)]),
      NV(":authority", g->url.authority),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("user-agent",
         g->cfg->user_agent ? g->cfg->user_agent : "sonde-otlp-exporter/" SONDE_OTLP_VERSION),
      NV("grpc-encoding", enc),
      NV("grpc-accept-encoding", "identity,gzip,zstd"),
      NV("grpc-timeout", g->timeout_hdr),
  };
  size_t nf = sizeof fixed / sizeof fixed[0];
  if (!g->timeout_hdr[0]) nf--;
  nghttp2_nv *nva = malloc((nf + g->nextra + r->nhdrs) * sizeof *nva);
  if (!nva) return SONDE_ENOMEM;
  memcpy(nva, fixed, nf * sizeof *nva);
  if (g->nextra) memcpy(nva + nf, g->extra, g->nextra * sizeof *nva);
  for (size_t i = 0; i < r->nhdrs; i++) {
    char *k = r->hdrs[2 * i], *v = r->hdrs[2 * i + 1];
    nva[nf + g->nextra + i] =
        (nghttp2_nv){(uint8_t *)k, (uint8_t *)v, strlen(k), strlen(v),
                     NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  }
  nghttp2_data_provider dp = {.source.ptr = r, .read_callback = read_payload};
  r->off = 0;
  int32_t sid = nghttp2_submit_request(g->sess, NULL, nva, nf + g->nextra + r->nhdrs, &dp, r);
  free(nva);
  if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE || sid == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED)
    return SONDE_EFULL; /* this connection is used up (2^31 stream ids) or going away */
  if (sid < 0) return sid == NGHTTP2_ERR_NOMEM ? SONDE_ENOMEM : SONDE_ERETRY;
  r->stream_id = sid;
  return 0;
}

/* Submits what waits, fails it fast while backing off, or starts a connection. */
static void kick(ogrpc *g) {
  if (!g->wait_head) return;
  if (g->state == C_BACKOFF) {
    while (g->wait_head) {
      greq *r = g->wait_head;
      g->wait_head = r->qnext;
      r->waiting = false;
      if (!g->wait_head) g->wait_tail = NULL;
      sonde_log(g->h, SONDE_LOG_WARN,
                "Exporting failed, will retry: rpc error: code = Unavailable desc = %s",
                g->last_error);
      complete(r, SONDE_ERETRY, 0);
    }
    return;
  }
  if (g->state == C_IDLE) {
    drop_connection(g, NULL, false);
    g->state = C_CONNECTING;
    g->connect_start_ms = uv_now(g->loop);
    otlp_conn_target t = {
        .host = g->url.host,
        .port = g->url.port,
        .tls = g->tls,
        .sni = g->cfg->tls.server_name_override && *g->cfg->tls.server_name_override
                   ? g->cfg->tls.server_name_override
                   : g->url.host,
        .verify = !g->cfg->tls.insecure_skip_verify,
    };
    int rc = otlp_conn_open(g->loop, &t, &ogrpc_conn_cbs, g, &g->live_conns, &g->conn);
    if (rc) {
      g->conn = NULL;
      drop_connection(g, "cannot start a connection", true);
    }
    return;
  }
  if (g->state != C_READY || g->goaway) return;
  while (g->wait_head) {
    greq *r = g->wait_head;
    g->wait_head = r->qnext;
    r->waiting = false;
    if (!g->wait_head) g->wait_tail = NULL;
    int rc = submit(g, r);
    if (rc == SONDE_EFULL) {
      /* Back to the head of the line; a new connection takes over once this one's streams end
       * (session_send treats it as after a GOAWAY). */
      r->qnext = g->wait_head;
      g->wait_head = r;
      if (!g->wait_tail) g->wait_tail = r;
      r->waiting = true;
      g->goaway = true;
      break;
    }
    if (rc) {
      sonde_log(g->h, SONDE_LOG_WARN, "cannot start a stream: %s", sonde_strerror(rc));
      complete(r, SONDE_ERETRY, 0);
    }
  }
  session_send(g);
}

static void on_backoff_done(uv_timer_t *t) {
  ogrpc *g = t->data;
  if (g->state == C_BACKOFF) g->state = C_IDLE;
  kick(g);
}

/* Forgets the connection and fails what was on it. failed_connect: it never became ready. */
static void drop_connection(ogrpc *g, const char *why, bool failed_connect) {
  nghttp2_session *sess = g->sess;
  g->sess = NULL;
  otlp_conn *c = g->conn;
  g->conn = NULL;
  g->goaway = false;
  if (c) otlp_conn_close(c);
  if (why) snprintf(g->last_error, sizeof g->last_error, "connection error: %s", why);
  /* Streams on the lost connection: gRPC reports them UNAVAILABLE. */
  for (greq *r = g->all, *n; r; r = n) {
    n = r->next;
    if (r->stream_id) {
      r->stream_id = 0;
      char msg[300];
      snprintf(msg, sizeof msg, "%s", why ? why : "connection closed");
      finish_status(r, GRPC_UNAVAILABLE, msg);
    }
  }
  if (sess) nghttp2_session_del(sess);
  if (failed_connect) {
    g->state = C_BACKOFF;
    double jitter = 0.8 + 0.4 * ((double)rand() / RAND_MAX);
    uint64_t wait = (uint64_t)((double)g->backoff_ms * jitter);
    g->backoff_ms = (uint64_t)((double)g->backoff_ms * 1.6);
    if (g->backoff_ms > BACKOFF_MAX_MS) g->backoff_ms = BACKOFF_MAX_MS;
    if (g->timers_open && !g->stopping) uv_timer_start(&g->backoff, on_backoff_done, wait, 0);
    sonde_log(g->h, SONDE_LOG_WARN, "%s; reconnecting in %.1fs", g->last_error, (double)wait / 1e3);
    kick(g); /* fail what waited for this connection */
  } else {
    g->state = C_IDLE;
  }
}

static void conn_connected(void *arg, otlp_conn *c) {
  ogrpc *g = arg;
  if (g->tls && strcmp(otlp_conn_alpn(c), "h2") != 0) {
    drop_connection(g, "the server did not negotiate HTTP/2 (ALPN h2)", true);
    return;
  }
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs)) {
    drop_connection(g, "out of memory", true);
    return;
  }
  nghttp2_session_callbacks_set_send_callback(cbs, on_send);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  int rv = nghttp2_session_client_new(&g->sess, cbs, g);
  nghttp2_session_callbacks_del(cbs);
  if (rv) {
    g->sess = NULL;
    drop_connection(g, "out of memory", true);
    return;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
  };
  if (nghttp2_submit_settings(g->sess, NGHTTP2_FLAG_NONE, iv, 2)) {
    drop_connection(g, "out of memory", true);
    return;
  }
  g->state = C_READY;
  g->last_recv_ms = uv_now(g->loop);
  g->backoff_ms = BACKOFF_BASE_MS;
  sonde_log(g->h, SONDE_LOG_DEBUG, "connected to %s%s", g->url.authority, g->tls ? " (TLS)" : "");
  kick(g);
  session_send(g);
}

static void conn_data(void *arg, otlp_conn *c, const uint8_t *p, size_t n) {
  ogrpc *g = arg;
  if (!g->sess) return;
  g->last_recv_ms = uv_now(g->loop);
  g->in_nghttp2++;
  ssize_t rv = nghttp2_session_mem_recv(g->sess, p, n);
  g->in_nghttp2--;
  if (rv < 0) {
    drop_connection(g, nghttp2_strerror((int)rv), false);
    return;
  }
  session_send(g);
  maybe_stopped(g);
}

static void conn_closed(void *arg, otlp_conn *c, const char *why) {
  ogrpc *g = arg;
  bool was_ready = g->state == C_READY;
  drop_connection(g, why, !was_ready);
  if (was_ready && !g->stopping) kick(g);
}

static const otlp_conn_cbs ogrpc_conn_cbs = {
    .connected = conn_connected, .data = conn_data, .closed = conn_closed};

/* ---- deadlines ---------------------------------------------------------------------------- */

static void wait_remove(ogrpc *g, greq *r) {
  greq **pp = &g->wait_head, *prev = NULL;
  while (*pp && *pp != r) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  if (!*pp) return;
  *pp = r->qnext;
  if (g->wait_tail == r) g->wait_tail = prev;
  r->qnext = NULL;
  r->waiting = false;
}

static void on_tick(uv_timer_t *t) {
  ogrpc *g = t->data;
  uint64_t now = uv_now(g->loop);
  uint64_t limit = g->timeout_ns > 0 ? (uint64_t)(g->timeout_ns / 1000000)
                                     : 20000; /* gRPC's minimum connect timeout */
  /* A connection attempt that hangs (a black-holed address) ends like a refused one. */
  if (g->state == C_CONNECTING && now - g->connect_start_ms > limit)
    drop_connection(g, "connect timeout", true);
  bool sent = false;
  for (greq *r = g->all, *n; r; r = n) {
    n = r->next;
    if (!r->deadline_ms || now < r->deadline_ms) continue;
    if (r->stream_id && g->sess) {
      int32_t sid = r->stream_id;
      nghttp2_session_set_stream_user_data(g->sess, sid, NULL);
      r->stream_id = 0;
      nghttp2_submit_rst_stream(g->sess, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
      sent = true;
      finish_status(r, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
    } else if (r->waiting) {
      wait_remove(g, r);
      finish_status(r, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded (no connection)");
    }
  }
  if (sent && g->sess && now - g->last_recv_ms > limit) {
    /* Streams expire and the server has not sent a byte for as long: take the connection for
     * dead (gRPC finds this out with keepalive pings) and start afresh on the next send. */
    drop_connection(g, "no answer from the server within request_timeout", false);
  } else if (sent) {
    session_send(g);
  }
  maybe_stopped(g);
}

/* ---- send ----------------------------------------------------------------------------------- */

static void encode_work(void *arg) {
  greq *r = arg;
  int comp = r->g->cfg->compression;
  size_t n = sonde_batch_packed_size(r->b);
  if (comp == OTLP_COMP_NONE) { /* pack straight behind the 5-byte gRPC prefix */
    if ((r->enc_status = sonde_buf_reserve(&r->payload, n + 5))) return;
    r->payload.len = 5 + sonde_batch_pack(r->b, r->payload.data + 5);
  } else {
    sonde_buf raw = {0};
    if ((r->enc_status = sonde_buf_reserve(&raw, n ? n : 1))) return;
    raw.len = sonde_batch_pack(r->b, raw.data);
    sonde_buf z = {0};
    r->enc_status =
        otlp_compress(comp, (int)r->g->cfg->compression_params.level, raw.data, raw.len, &z);
    sonde_buf_free(&raw);
    if (!r->enc_status && !(r->enc_status = sonde_buf_reserve(&r->payload, z.len + 5))) {
      memcpy(r->payload.data + 5, z.data, z.len);
      r->payload.len = z.len + 5;
    }
    sonde_buf_free(&z);
  }
  if (r->enc_status) return;
  uint32_t ml = (uint32_t)(r->payload.len - 5);
  r->payload.data[0] = comp == OTLP_COMP_NONE ? 0 : 1;
  r->payload.data[1] = (uint8_t)(ml >> 24);
  r->payload.data[2] = (uint8_t)(ml >> 16);
  r->payload.data[3] = (uint8_t)(ml >> 8);
  r->payload.data[4] = (uint8_t)ml;
}

/* A request ready to go (exports once encoded, otlp_grpc_call at once): its deadline starts now
 * and it waits for the connection. */
static void enqueue(ogrpc *g, greq *r) {
  if (g->timeout_ns > 0) r->deadline_ms = uv_now(g->loop) + (uint64_t)(g->timeout_ns / 1000000);
  if (g->wait_tail)
    g->wait_tail->qnext = r;
  else
    g->wait_head = r;
  g->wait_tail = r;
  r->waiting = true;
  kick(g);
}

static void encode_done(void *arg, int status) {
  greq *r = arg;
  ogrpc *g = r->g;
  g->in_work--;
  if (status || r->enc_status) {
    int st = status ? status : r->enc_status;
    sonde_log(g->h, SONDE_LOG_ERROR, "cannot encode the request: %s", sonde_strerror(st));
    complete(r, st == SONDE_ENOMEM || st == SONDE_ECANCELED ? SONDE_ERETRY : SONDE_EPERMANENT, 0);
    return;
  }
  if (g->stopping) {
    complete(r, SONDE_ERETRY, 0);
    return;
  }
  enqueue(g, r);
}

/* A new request joins g->all (req_free leaves it), with its callback and no answer yet. */
static void track(ogrpc *g, greq *r, sonde_signal sig, sonde_send_cb cb, void *arg) {
  r->g = g;
  r->sig = sig;
  r->cb = cb;
  r->arg = arg;
  r->grpc_status = -1;
  r->retry_delay_ns = -1;
  r->next = g->all;
  if (g->all) g->all->prev = r;
  g->all = r;
}

int otlp_grpc_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  ogrpc *g = inst;
  if (g->stopping) return SONDE_ESHUTDOWN;
  greq *r = calloc(1, sizeof *r);
  if (!r) return SONDE_ENOMEM;
  r->b = sonde_batch_ref(b);
  track(g, r, sonde_batch_signal(b), cb, arg);
  int rc = g->h->api->queue_work(g->h, encode_work, encode_done, r);
  if (rc) {
    r->done = true;
    req_free(r);
    return rc;
  }
  g->in_work++;
  return 0;
}

int otlp_grpc_call(void *inst, otlp_call *c, sonde_send_cb cb, void *arg) {
  ogrpc *g = inst;
  int rc = 0;
  greq *r = NULL;
  if (g->stopping) {
    rc = SONDE_ESHUTDOWN;
    goto fail;
  }
  if (!c->path || c->body.len > UINT32_MAX) {
    rc = SONDE_EINVAL;
    goto fail;
  }
  if (!(r = calloc(1, sizeof *r)) || !(r->path = strdup(c->path)) ||
      (c->n_headers && !(r->hdrs = calloc(c->n_headers * 2, sizeof(char *))))) {
    rc = SONDE_ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < c->n_headers; i++) {
    const char *v = c->header_values[i] ? c->header_values[i] : "";
    if (!(r->hdrs[2 * i] = strdup(c->header_names[i])) || !(r->hdrs[2 * i + 1] = strdup(v))) {
      r->nhdrs = i + 1;
      rc = SONDE_ENOMEM;
      goto fail;
    }
    r->nhdrs = i + 1;
    for (char *p = r->hdrs[2 * i]; *p; p++)
      if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  }
  /* The gRPC frame: flag 0 (not compressed), 4 bytes of length, the message. */
  if ((rc = sonde_buf_reserve(&r->payload, c->body.len + 5))) goto fail;
  uint32_t ml = (uint32_t)c->body.len;
  uint8_t pre[5] = {0, (uint8_t)(ml >> 24), (uint8_t)(ml >> 16), (uint8_t)(ml >> 8), (uint8_t)ml};
  sonde_buf_append(&r->payload, pre, 5);
  sonde_buf_append(&r->payload, c->body.data, c->body.len);
  sonde_buf_free(&c->body);
  r->generic = true;
  track(g, r, SONDE_SIGNAL_PROFILES, cb, arg);
  enqueue(g, r);
  return 0;
fail:
  sonde_buf_free(&c->body);
  if (r) {
    r->g = g;
    r->done = true;
    req_free(r);
  }
  return rc;
}

/* ---- lifecycle --------------------------------------------------------------------------------
 */

int otlp_grpc_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const otlp_config *cfg = config;
  ogrpc *g = calloc(1, sizeof *g);
  if (!g) return SONDE_ENOMEM;
  g->h = h;
  g->cfg = cfg;
  g->timeout_ns = cfg->request_timeout_ns > 0 ? cfg->request_timeout_ns
                  : h->api->struct_size > offsetof(sonde_host_api, send_timeout)
                      ? h->api->send_timeout(h)
                      : 5000000000LL;
  g->loop = h->api->loop(h);
  g->backoff_ms = BACKOFF_BASE_MS;
  char err[512];
  int rc = otlp_parse_grpc_endpoint(cfg->endpoint, cfg->tls.insecure, &g->url, err, sizeof err);
  if (rc) {
    sonde_log(h, SONDE_LOG_ERROR, "%s", err);
    goto fail;
  }
  if (g->url.tls && (rc = otlp_tls_ctx(&cfg->tls, "h2", &g->tls, err, sizeof err))) {
    sonde_log(h, SONDE_LOG_ERROR, "%s", err);
    goto fail;
  }
  if ((rc = otlp_metrics_init(h, signals, &g->m))) goto fail;
  if (g->timeout_ns > 0) {
    int64_t ms = g->timeout_ns / 1000000;
    if (ms < 1) ms = 1;
    if (ms < 100000000)
      snprintf(g->timeout_hdr, sizeof g->timeout_hdr, "%" PRId64 "m", ms);
    else
      snprintf(g->timeout_hdr, sizeof g->timeout_hdr, "%" PRId64 "S", ms / 1000);
  }
  if (cfg->headers.n) {
    g->extra = calloc(cfg->headers.n, sizeof *g->extra);
    if (!g->extra) {
      rc = SONDE_ENOMEM;
      goto fail;
    }
    for (size_t i = 0; i < cfg->headers.n; i++) {
      char *k = strdup(cfg->headers.keys[i]);
      if (!k) {
        rc = SONDE_ENOMEM;
        goto fail;
      }
      for (char *p = k; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
          *p = (char)(*p - 'A' + 'a'); /* HTTP/2 header names are lower case */
      const char *v = cfg->headers.values[i] ? cfg->headers.values[i] : "";
      g->extra[i] = (nghttp2_nv){(uint8_t *)k, (uint8_t *)v, strlen(k), strlen(v),
                                 NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
      g->nextra++;
    }
  }
  *inst = g;
  return 0;
fail:
  otlp_grpc_destroy(g);
  return rc;
}

int otlp_grpc_start(void *inst) {
  ogrpc *g = inst;
  uv_timer_init(g->loop, &g->backoff);
  uv_timer_init(g->loop, &g->tick);
  g->backoff.data = g->tick.data = g;
  g->timers_open = true;
  g->handles_open = 2;
  uv_timer_start(&g->tick, on_tick, 100, 100);
  uv_unref((uv_handle_t *)&g->tick);
  return 0;
}

static void on_timer_closed(uv_handle_t *hd) {
  ogrpc *g = hd->data;
  if (--g->handles_open == 0 && g->stop_done) {
    void (*done)(void *) = g->stop_done;
    g->stop_done = NULL;
    done(g->stop_arg);
  }
}

/* Once stopping: every request answered and every connection freed (connections free themselves
 * when libuv has closed their socket, which the tick polls), the timers close and done runs. */
static void maybe_stopped(ogrpc *g) {
  if (!g->stopping || g->all || g->in_work || !g->stop_done) return;
  /* The last completion can come from a stream callback, and the core may shut down from its
   * send callback: the session must outlive nghttp2_session_mem_recv. conn_data (or the tick)
   * comes back here. */
  if (g->in_nghttp2) return;
  if (g->conn || g->sess) drop_connection(g, NULL, false);
  if (g->live_conns || !g->timers_open) return;
  g->timers_open = false;
  uv_close((uv_handle_t *)&g->backoff, on_timer_closed);
  uv_close((uv_handle_t *)&g->tick, on_timer_closed);
}

void otlp_grpc_shutdown(void *inst, void (*done)(void *), void *arg) {
  ogrpc *g = inst;
  g->stopping = true;
  g->stop_done = done;
  g->stop_arg = arg;
  /* The core calls this after draining its queue (or giving up at its deadline), so whatever is
   * still here has been abandoned: streams on the wire are reset and every send fails now. */
  while (g->wait_head) {
    greq *r = g->wait_head;
    g->wait_head = r->qnext;
    r->waiting = false;
    if (!g->wait_head) g->wait_tail = NULL;
    complete(r, SONDE_ERETRY, 0);
  }
  int cancelled = 0;
  for (greq *r = g->all; r; r = r->next) {
    if (!r->stream_id || !g->sess) continue;
    nghttp2_session_set_stream_user_data(g->sess, r->stream_id, NULL);
    nghttp2_submit_rst_stream(g->sess, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL);
    r->stream_id = 0;
    r->cancelled = true;
    cancelled++;
  }
  if (cancelled) {
    sonde_log(g->h, SONDE_LOG_WARN, "shutdown: cancelling %d export(s) still in flight", cancelled);
    session_send(g);
    for (greq *r = g->all, *n; r; r = n) {
      n = r->next;
      if (r->cancelled) complete(r, SONDE_ERETRY, 0);
    }
  }
  if (g->state != C_READY) drop_connection(g, NULL, false);
  if (!g->timers_open) { /* never started: nothing can be in flight */
    g->stop_done = NULL;
    done(arg);
    return;
  }
  uv_timer_stop(&g->backoff);
  uv_ref((uv_handle_t *)&g->tick);
  maybe_stopped(g);
}

void otlp_grpc_destroy(void *inst) {
  ogrpc *g = inst;
  if (!g) return;
  for (size_t i = 0; i < g->nextra; i++)
    free(g->extra[i].name);
  free(g->extra);
  if (g->tls) SSL_CTX_free(g->tls);
  free(g);
}

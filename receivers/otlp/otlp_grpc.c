/* The `otlp` receiver's gRPC listener: libuv TCP, optional TLS (OpenSSL over memory BIOs, so the
 * handshake and records never block the loop), and one otlp_h2 session per connection.
 *
 * Timers, per connection, on one repeating tick:
 *  - keepalive: after `time` without a byte from the client a PING is sent; no ACK within
 *    `timeout` closes the connection (grpc-go's server keepalive);
 *  - a request that stops arriving mid-way (an open stream, nothing read for read_timeout) closes
 *    the connection: HTTP/2 has no per-request read deadline of its own;
 *  - max_connection_idle: no open stream for that long sends GOAWAY;
 *  - a TLS handshake that does not progress for read_timeout closes the connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "otlp_grpc.h"

typedef struct gconn gconn;

struct otlp_grpc_server {
  const sonde_host *h;
  uv_loop_t *loop;
  otlp_grpc_opts opts;
  otlp_consume_fn consume;
  void *arg;
  SSL_CTX *ssl_ctx;
  uv_tcp_t tcp;
  bool listening;
  gconn *conns;
  unsigned handles; /* listener + 2 per connection, until their close callbacks ran */
  void (*closed)(void *arg);
  void *closed_arg;
};

struct gconn {
  otlp_grpc_server *srv;
  uv_tcp_t tcp;
  uv_timer_t timer;
  otlp_h2 *h2;
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  bool handshake_done;
  bool closing, close_after_write, read_stopped;
  uint64_t last_read_ms, last_busy_ms, ping_sent_ms;
  size_t write_bytes;
  unsigned writes;
  int close_pending;
  gconn *next, **pprev;
};

#define MAX_PENDING_WRITE (4u << 20)

static void handle_closed(uv_handle_t *hd) {
  otlp_grpc_server *srv = hd->data;
  if (--srv->handles == 0) {
    if (srv->ssl_ctx) SSL_CTX_free(srv->ssl_ctx);
    void (*cb)(void *) = srv->closed;
    void *arg = srv->closed_arg;
    free(srv);
    if (cb) cb(arg);
  }
}

static void conn_handle_closed(uv_handle_t *hd) {
  gconn *c = hd->data;
  otlp_grpc_server *srv = c->srv;
  if (--c->close_pending == 0) free(c); /* both handles are inside c */
  handle_closed((uv_handle_t *)&srv->tcp);
}

static void conn_close(gconn *c) {
  if (c->closing) return;
  c->closing = true;
  *c->pprev = c->next;
  if (c->next) c->next->pprev = c->pprev;
  otlp_h2_free(c->h2);
  c->h2 = NULL;
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = NULL;
  c->close_pending = 2;
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

typedef struct wreq {
  uv_write_t w;
  gconn *c;
  size_t len;
  uint8_t data[];
} wreq;

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *w, int status) {
  wreq *wr = (wreq *)w;
  gconn *c = wr->c;
  c->writes--;
  c->write_bytes -= wr->len;
  free(wr);
  if (c->closing) return;
  if (status < 0 || (c->close_after_write && !c->writes)) {
    conn_close(c);
    return;
  }
  if (c->read_stopped && c->write_bytes < MAX_PENDING_WRITE / 2) {
    c->read_stopped = false;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) conn_close(c);
  }
}

static int write_bytes(gconn *c, const uint8_t *p, size_t n) {
  if (!n) return 0;
  wreq *wr = malloc(sizeof *wr + n);
  if (!wr) return SONDE_ENOMEM;
  wr->c = c;
  wr->len = n;
  memcpy(wr->data, p, n);
  uv_buf_t b = uv_buf_init((char *)wr->data, (unsigned)n);
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
    free(wr);
    return SONDE_EIO;
  }
  c->writes++;
  c->write_bytes += n;
  return 0;
}

/* Moves TLS records the engine produced onto the socket. */
static int flush_tls(gconn *c) {
  uint8_t tmp[16384];
  int n;
  while ((n = BIO_read(c->wbio, tmp, sizeof tmp)) > 0) {
    int rc = write_bytes(c, tmp, (size_t)n);
    if (rc) return rc;
  }
  return 0;
}

/* Sends what the HTTP/2 session has queued; closes when the session is over. */
static void flush(gconn *c) {
  if (c->closing) return;
  sonde_buf out = {0};
  int rc = otlp_h2_pending(c->h2, &out);
  if (!rc && out.len) {
    if (c->ssl) {
      size_t off = 0;
      while (!rc && off < out.len) {
        size_t chunk = out.len - off > (1u << 30) ? (1u << 30) : out.len - off;
        int w = SSL_write(c->ssl, out.data + off, (int)chunk);
        if (w <= 0)
          rc = SONDE_EIO;
        else
          off += (size_t)w;
      }
      if (!rc) rc = flush_tls(c);
    } else {
      rc = write_bytes(c, out.data, out.len);
    }
  }
  sonde_buf_free(&out);
  if (rc) {
    conn_close(c);
    return;
  }
  if (otlp_h2_finished(c->h2)) {
    if (!c->writes)
      conn_close(c);
    else
      c->close_after_write = true;
    return;
  }
  if (c->write_bytes > MAX_PENDING_WRITE && !c->read_stopped) {
    c->read_stopped = true; /* the client does not read its answers: stop reading its requests */
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  buf->base = malloc(65536);
  buf->len = buf->base ? 65536 : 0;
}

static void feed(gconn *c, const uint8_t *p, size_t n) {
  if (otlp_h2_recv(c->h2, p, n)) c->close_after_write = true;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  gconn *c = s->data;
  if (nread == 0 || c->closing) {
    free(buf->base);
    return;
  }
  if (nread < 0) {
    free(buf->base);
    conn_close(c);
    return;
  }
  c->last_read_ms = uv_now(c->srv->loop);
  if (!c->ssl) {
    feed(c, (uint8_t *)buf->base, (size_t)nread);
    free(buf->base);
    flush(c);
    return;
  }
  int w = BIO_write(c->rbio, buf->base, (int)nread);
  free(buf->base);
  if (w != nread) {
    conn_close(c);
    return;
  }
  if (!c->handshake_done) {
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (flush_tls(c) || (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)) {
        unsigned long ossl = ERR_get_error();
        char why[256] = "";
        if (ossl) ERR_error_string_n(ossl, why, sizeof why);
        ERR_clear_error();
        sonde_log(c->srv->h, SONDE_LOG_DEBUG, "gRPC TLS handshake failed: %s", why);
        if (c->writes)
          c->close_after_write = true; /* the alert goes out first */
        else
          conn_close(c);
      }
      return;
    }
    c->handshake_done = true;
    if (flush_tls(c)) {
      conn_close(c);
      return;
    }
  }
  uint8_t tmp[16384];
  for (;;) {
    int r = SSL_read(c->ssl, tmp, sizeof tmp);
    if (r > 0) {
      feed(c, tmp, (size_t)r);
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      c->close_after_write = true; /* close_notify or a broken record */
    }
    break;
  }
  flush(c);
  if (!c->closing && c->close_after_write && !c->writes) conn_close(c);
}

static void on_tick(uv_timer_t *t) {
  gconn *c = t->data;
  const otlp_grpc_opts *o = &c->srv->opts;
  uint64_t now = uv_now(c->srv->loop);
  if (!c->handshake_done && o->read_timeout_ms && now - c->last_read_ms >= o->read_timeout_ms) {
    conn_close(c); /* a TLS handshake that stalls */
    return;
  }
  if (otlp_h2_open_requests(c->h2) > 0) {
    c->last_busy_ms = now;
    if (o->read_timeout_ms && now - c->last_read_ms >= o->read_timeout_ms) {
      sonde_log(c->srv->h, SONDE_LOG_DEBUG, "gRPC request not completed within %llu ms: closing",
                (unsigned long long)o->read_timeout_ms);
      conn_close(c);
      return;
    }
  }
  if (c->ping_sent_ms) {
    if (o->keepalive_timeout_ms && now - c->ping_sent_ms >= o->keepalive_timeout_ms &&
        now - c->last_read_ms >= o->keepalive_timeout_ms) {
      conn_close(c); /* no answer to the keepalive PING */
      return;
    }
    if (c->last_read_ms > c->ping_sent_ms) c->ping_sent_ms = 0;
  } else if (o->keepalive_time_ms && now - c->last_read_ms >= o->keepalive_time_ms &&
             c->handshake_done) {
    if (otlp_h2_ping(c->h2)) c->ping_sent_ms = now;
    flush(c);
    if (c->closing) return;
  }
  if (o->max_idle_ms && c->handshake_done && now - c->last_busy_ms >= o->max_idle_ms) {
    otlp_h2_goaway(c->h2);
    flush(c);
  }
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  for (unsigned i = 0; i < inlen; i += (unsigned)in[i] + 1) {
    if (in[i] == 2 && i + 3 <= inlen && !memcmp(in + i + 1, "h2", 2)) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL; /* gRPC needs HTTP/2 */
}

static void on_connection(uv_stream_t *server, int status) {
  otlp_grpc_server *srv = server->data;
  if (status < 0) return;
  gconn *c = calloc(1, sizeof *c);
  if (!c) return; /* the connection stays in the backlog until memory frees up */
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  srv->handles += 2;
  c->next = srv->conns;
  if (srv->conns) srv->conns->pprev = &c->next;
  srv->conns = c;
  c->pprev = &srv->conns;
  c->last_read_ms = c->last_busy_ms = uv_now(srv->loop);
  otlp_h2_limits lim = {srv->opts.max_msg, srv->opts.max_streams, srv->opts.signals};
  if (uv_accept(server, (uv_stream_t *)&c->tcp) ||
      otlp_h2_new(&lim, srv->consume, srv->arg, &c->h2)) {
    conn_close(c);
    return;
  }
  if (srv->ssl_ctx) {
    c->ssl = SSL_new(srv->ssl_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
      BIO_free(c->rbio);
      BIO_free(c->wbio);
      conn_close(c);
      return;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
  } else {
    c->handshake_done = true;
  }
  uint64_t tick = 1000;
  const otlp_grpc_opts *o = &srv->opts;
  uint64_t cand[] = {o->keepalive_time_ms, o->keepalive_timeout_ms, o->read_timeout_ms,
                     o->max_idle_ms};
  for (size_t i = 0; i < 4; i++)
    if (cand[i] && cand[i] / 4 < tick) tick = cand[i] / 4;
  if (tick < 10) tick = 10;
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) ||
      uv_timer_start(&c->timer, on_tick, tick, tick)) {
    conn_close(c);
    return;
  }
  if (!c->ssl) flush(c); /* our SETTINGS go out at once */
}

static int tls_setup(otlp_grpc_server *srv, char *err, size_t errlen) {
  const otlp_grpc_opts *o = &srv->opts;
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return SONDE_ENOMEM;
  srv->ssl_ctx = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  const char *what = NULL, *file = NULL;
  if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
    what = "cannot load tls::cert_file", file = o->cert_file;
  else if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
    what = "cannot load tls::key_file", file = o->key_file;
  else if (SSL_CTX_check_private_key(ctx) != 1)
    what = "tls::key_file does not match tls::cert_file", file = o->key_file;
  else if (o->client_ca_file) {
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca_file);
    if (!names || SSL_CTX_load_verify_locations(ctx, o->client_ca_file, NULL) != 1) {
      if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
      what = "cannot load tls::client_ca_file", file = o->client_ca_file;
    } else {
      SSL_CTX_set_client_CA_list(ctx, names);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
  }
  if (what) {
    char why[256] = "";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, file, why);
    return SONDE_ECONFIG;
  }
  return 0;
}

int otlp_grpc_listen(const sonde_host *h, const otlp_grpc_opts *opts, otlp_consume_fn consume,
                     void *arg, otlp_grpc_server **out, char *err, size_t errlen) {
  struct sockaddr_storage addr;
  int rc;
  if (sonde_endpoint_parse(opts->endpoint, &addr, err, errlen))
    return SONDE_ECONFIG; /* a bad endpoint is the config's fault */
  otlp_grpc_server *srv = calloc(1, sizeof *srv);
  if (!srv) return SONDE_ENOMEM;
  srv->h = h;
  srv->loop = h->api->loop(h);
  srv->opts = *opts;
  srv->consume = consume;
  srv->arg = arg;
  if (opts->cert_file || opts->key_file) {
    if (!opts->cert_file || !opts->key_file) {
      snprintf(err, errlen, "tls needs both cert_file and key_file");
      free(srv);
      return SONDE_ECONFIG;
    }
    if ((rc = tls_setup(srv, err, errlen))) {
      if (srv->ssl_ctx) SSL_CTX_free(srv->ssl_ctx);
      free(srv);
      return rc;
    }
  }
  uv_tcp_init(srv->loop, &srv->tcp);
  srv->tcp.data = srv;
  srv->handles = 1;
  int uerr = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&addr, 0);
  if (!uerr) uerr = uv_listen((uv_stream_t *)&srv->tcp, 511, on_connection);
  if (uerr) {
    snprintf(err, errlen, "cannot listen on %s: %s", opts->endpoint, uv_strerror(uerr));
    uv_close((uv_handle_t *)&srv->tcp, handle_closed);
    return uerr == UV_EADDRINUSE ? SONDE_EEXISTS : SONDE_EIO;
  }
  srv->listening = true;
  *out = srv;
  return 0;
}

void otlp_grpc_close(otlp_grpc_server *srv, void (*done)(void *arg), void *arg) {
  srv->closed = done;
  srv->closed_arg = arg;
  while (srv->conns)
    conn_close(srv->conns);
  uv_close((uv_handle_t *)&srv->tcp, handle_closed);
}

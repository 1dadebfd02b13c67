/* One client connection on the loop: uv_getaddrinfo (off the loop thread), uv_tcp connect to each
 * resolved address in turn, then TLS through OpenSSL memory BIOs so that every byte still moves
 * through libuv and nothing blocks. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "otlp_common.h"

typedef struct wreq {
  uv_write_t req;
  otlp_conn *c;
  sonde_buf buf;
} wreq;

struct otlp_conn {
  uv_loop_t *loop;
  uv_getaddrinfo_t gai;
  uv_tcp_t tcp;
  uv_connect_t creq;
  struct addrinfo *ai, *cur;
  otlp_conn_cbs cbs;
  void *arg;
  int *live;
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *rbio, *wbio; /* network side of the TLS engine: what came in / what goes out */
  bool verify;
  int keepalive_s;
  char host[256], port[8], sni[256], alpn[32];
  char lasterr[160];
  bool resolving, tcp_open, ready, closing;
  sonde_buf out;  /* plaintext queued by the owner */
  size_t pending; /* bytes in uv_write requests */
  uint8_t rbuf[64 * 1024];
  uint8_t plain[16 * 1024];
};

static void maybe_free(otlp_conn *c) {
  if (!c->closing || c->resolving || c->tcp_open) return;
  if (c->ai) uv_freeaddrinfo(c->ai);
  if (c->ssl) SSL_free(c->ssl); /* frees both BIOs */
  sonde_buf_free(&c->out);
  if (c->live) (*c->live)--;
  void (*freed)(void *) = c->cbs.freed;
  void *arg = c->arg;
  free(c);
  if (freed) freed(arg);
}

static void on_tcp_closed(uv_handle_t *h) {
  otlp_conn *c = h->data;
  c->tcp_open = false;
  maybe_free(c);
}

static void close_tcp(otlp_conn *c) {
  if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

void otlp_conn_close(otlp_conn *c) {
  if (!c || c->closing) return;
  c->closing = true;
  c->ready = false;
  if (c->resolving)
    uv_cancel((uv_req_t *)&c->gai); /* the callback still comes, with UV_ECANCELED */
  close_tcp(c);
  maybe_free(c);
}

/* The connection is gone: tell the owner once (ended: the read side ended, reported through
 * cbs.ended when the owner set it), then close. */
static void finish(otlp_conn *c, int ended, const char *fmt, const char *detail) {
  if (c->closing) return;
  char why[1024];
  snprintf(why, sizeof why, fmt, detail);
  c->closing = true;
  c->ready = false;
  if (ended && c->cbs.ended)
    c->cbs.ended(c->arg, c, ended > 0, why);
  else
    c->cbs.closed(c->arg, c, why);
  c->closing = false; /* let otlp_conn_close run its course once */
  otlp_conn_close(c);
}

static void fail(otlp_conn *c, const char *fmt, const char *detail) {
  finish(c, 0, fmt, detail);
}

static void on_written(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  otlp_conn *c = w->c;
  c->pending -= w->buf.len;
  sonde_buf_free(&w->buf);
  free(w);
  if (status < 0 && status != UV_ECANCELED) fail(c, "write: %s", uv_strerror(status));
}

static int send_buf(otlp_conn *c, sonde_buf *b) {
  wreq *w = calloc(1, sizeof *w);
  if (!w) return SONDE_ENOMEM;
  w->c = c;
  w->buf = *b;
  memset(b, 0, sizeof *b);
  uv_buf_t ub = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written);
  if (rc) {
    sonde_buf_free(&w->buf);
    free(w);
    return SONDE_EIO;
  }
  c->pending += ub.len;
  return 0;
}

/* Moves what the TLS engine produced to the socket. */
static int flush_tls(otlp_conn *c) {
  int n = BIO_pending(c->wbio);
  if (n <= 0) return 0;
  sonde_buf b = {0};
  if (sonde_buf_reserve(&b, (size_t)n)) return SONDE_ENOMEM;
  int r = BIO_read(c->wbio, b.data, n);
  if (r <= 0) {
    sonde_buf_free(&b);
    return SONDE_EIO;
  }
  b.len = (size_t)r;
  return send_buf(c, &b);
}

int otlp_conn_write(otlp_conn *c, const uint8_t *p, size_t n) {
  return sonde_buf_append(&c->out, p, n);
}

int otlp_conn_flush(otlp_conn *c) {
  if (!c->ready || !c->out.len) return 0;
  if (!c->ssl) return send_buf(c, &c->out);
  /* A memory BIO takes everything: SSL_write never wants to wait here. */
  int r = SSL_write(c->ssl, c->out.data, (int)c->out.len);
  if (r <= 0) return SONDE_EIO;
  c->out.len = 0;
  return flush_tls(c);
}

size_t otlp_conn_pending(const otlp_conn *c) {
  return c->pending + c->out.len;
}

const char *otlp_conn_alpn(const otlp_conn *c) {
  return c->alpn;
}

static void became_ready(otlp_conn *c) {
  c->ready = true;
  c->cbs.connected(c->arg, c);
  if (!c->closing && otlp_conn_flush(c)) fail(c, "%s", "write failed");
}

static void handshake(otlp_conn *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (flush_tls(c)) {
    fail(c, "%s", "TLS write failed");
    return;
  }
  if (r == 1) {
    const unsigned char *a = NULL;
    unsigned al = 0;
    SSL_get0_alpn_selected(c->ssl, &a, &al);
    if (a && al < sizeof c->alpn) {
      memcpy(c->alpn, a, al);
      c->alpn[al] = 0;
    }
    became_ready(c);
    return;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) return;
  long vr = SSL_get_verify_result(c->ssl);
  char detail[256];
  if (vr != X509_V_OK)
    snprintf(detail, sizeof detail, "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
  else
    ERR_error_string_n(ERR_get_error(), detail, sizeof detail);
  fail(c, "TLS handshake: %s", detail);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  otlp_conn *c = h->data;
  *buf = uv_buf_init((char *)c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  otlp_conn *c = s->data;
  if (c->closing) return;
  if (n < 0) {
    finish(c, n == UV_EOF ? 1 : -1, "%s",
           n == UV_EOF ? "connection closed by peer" : uv_strerror((int)n));
    return;
  }
  if (!n) return;
  if (!c->ssl) {
    c->cbs.data(c->arg, c, (const uint8_t *)buf->base, (size_t)n);
    return;
  }
  if (BIO_write(c->rbio, buf->base, (int)n) != (int)n) {
    fail(c, "%s", "TLS buffer");
    return;
  }
  if (!c->ready) {
    handshake(c);
    if (!c->ready) return;
  }
  for (;;) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, c->plain, sizeof c->plain);
    if (r > 0) {
      c->cbs.data(c->arg, c, c->plain, (size_t)r);
      if (c->closing) return;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    finish(c, e == SSL_ERROR_ZERO_RETURN ? 1 : -1, "%s",
           e == SSL_ERROR_ZERO_RETURN ? "TLS connection closed by peer" : "TLS read error");
    return;
  }
  if (flush_tls(c)) fail(c, "%s", "TLS write failed");
}

static void try_connect(otlp_conn *c);

static void on_retry_closed(uv_handle_t *h) {
  otlp_conn *c = h->data;
  c->tcp_open = false;
  if (c->closing) {
    maybe_free(c);
    return;
  }
  try_connect(c);
}

static void on_connect(uv_connect_t *req, int status) {
  otlp_conn *c = req->data;
  if (c->closing) return;
  if (status < 0) {
    snprintf(c->lasterr, sizeof c->lasterr, "%s", uv_strerror(status));
    c->cur = c->cur->ai_next;
    uv_close((uv_handle_t *)&c->tcp, on_retry_closed); /* then the next address */
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (c->keepalive_s > 0) uv_tcp_keepalive(&c->tcp, 1, (unsigned)c->keepalive_s);
  int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc) {
    fail(c, "read: %s", uv_strerror(rc));
    return;
  }
  if (!c->ctx) {
    became_ready(c);
    return;
  }
  c->ssl = SSL_new(c->ctx);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->rbio || !c->wbio) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    fail(c, "%s", "TLS: out of memory");
    return;
  }
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  SSL_set_connect_state(c->ssl);
  unsigned char ipbuf[16];
  bool is_ip = inet_pton(AF_INET, c->sni, ipbuf) == 1 || inet_pton(AF_INET6, c->sni, ipbuf) == 1;
  if (!is_ip) SSL_set_tlsext_host_name(c->ssl, c->sni);
  if (c->verify) {
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    if (is_ip)
      X509_VERIFY_PARAM_set1_ip_asc(vp, c->sni);
    else
      X509_VERIFY_PARAM_set1_host(vp, c->sni, 0);
  }
  handshake(c);
}

static void try_connect(otlp_conn *c) {
  while (c->cur) {
    int rc = uv_tcp_init(c->loop, &c->tcp);
    if (rc) {
      fail(c, "tcp: %s", uv_strerror(rc));
      return;
    }
    c->tcp.data = c;
    c->tcp_open = true;
    c->creq.data = c;
    rc = uv_tcp_connect(&c->creq, &c->tcp, c->cur->ai_addr, on_connect);
    if (!rc) return;
    snprintf(c->lasterr, sizeof c->lasterr, "%s", uv_strerror(rc));
    c->cur = c->cur->ai_next;
    uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
    return;
  }
  char d[512];
  snprintf(d, sizeof d, "%s:%s: %s", c->host, c->port, c->lasterr);
  fail(c, "connect %s", d);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  otlp_conn *c = req->data;
  c->resolving = false;
  c->ai = res;
  if (c->closing) {
    maybe_free(c);
    return;
  }
  if (status < 0 || !res) {
    char d[512];
    snprintf(d, sizeof d, "%s: %s", c->host, uv_strerror(status));
    fail(c, "resolve %s", d);
    return;
  }
  c->cur = res;
  snprintf(c->lasterr, sizeof c->lasterr, "no address");
  try_connect(c);
}

int otlp_conn_open(uv_loop_t *loop, const otlp_conn_target *t, const otlp_conn_cbs *cbs, void *arg,
                   int *live, otlp_conn **out) {
  otlp_conn *c = calloc(1, sizeof *c);
  if (!c) return SONDE_ENOMEM;
  c->loop = loop;
  c->cbs = *cbs;
  c->arg = arg;
  c->ctx = t->tls;
  c->verify = t->verify;
  c->keepalive_s = t->keepalive_s;
  snprintf(c->host, sizeof c->host, "%s", t->host);
  snprintf(c->port, sizeof c->port, "%s", t->port);
  snprintf(c->sni, sizeof c->sni, "%s", t->sni ? t->sni : t->host);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->gai.data = c;
  int rc = uv_getaddrinfo(loop, &c->gai, on_resolved, c->host, c->port, &hints);
  if (rc) {
    free(c);
    return SONDE_EIO;
  }
  c->resolving = true;
  c->live = live;
  if (live) (*live)++;
  *out = c;
  return 0;
}

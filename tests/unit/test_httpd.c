/* Unit tests for the HTTP/1.1 server (core/src/httpd.c): real loopback sockets, the server on a
 * libuv loop in the test thread, a blocking client in a second thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "sonde/net.h"

/* ---- fixture: the server side ------------------------------------------------------------- */

enum mode {
  M_SYNC,       /* answer 200 from inside the handler, body "<method> <path>?<query>|<len>" */
  M_ASYNC,      /* answer from a uv timer after delay_ms */
  M_ASYNC_FIRST /* the first request async after delay_ms, the others at once */,
  M_HOLD,       /* keep the request; the test answers it later */
};

#define MAXREQ 16

typedef struct fx fx;

typedef struct pend {
  uv_timer_t t;
  fx *f;
  sonde_http_request *req;
  char body[256];
} pend;

struct fx {
  uv_loop_t loop;
  sonde_http_server *srv;
  int port;
  enum mode mode;
  int delay_ms;
  int calls;
  char seen[MAXREQ][128]; /* "<method> <path>?<query>" of each handler call */
  char hdr[MAXREQ][64];   /* X-Test header of each call */
  uint8_t *body[MAXREQ];
  size_t body_len[MAXREQ];
  sonde_http_request *held[MAXREQ];
  int nheld;
  int respond_rc; /* of a late respond after the server closed */
  uv_timer_t poll;
  atomic_int client_done;
  bool closed;
};

static void pend_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_pend(uv_timer_t *t) {
  pend *p = t->data;
  sonde__http_respond(p->req, 200, "text/plain", "X-Async: yes\r\n", p->body, strlen(p->body));
  uv_close((uv_handle_t *)t, pend_closed);
}

static void handler(void *arg, sonde_http_request *req) {
  fx *f = arg;
  int i = f->calls++;
  if (i < MAXREQ) {
    snprintf(f->seen[i], sizeof f->seen[i], "%s %s?%s", sonde__http_method(req),
             sonde__http_path(req), sonde__http_query(req));
    const char *h = sonde__http_header(req, "x-test");
    snprintf(f->hdr[i], sizeof f->hdr[i], "%s", h ? h : "(none)");
    size_t len;
    const uint8_t *b = sonde__http_body(req, &len);
    f->body[i] = malloc(len + 1);
    memcpy(f->body[i], b, len);
    f->body_len[i] = len;
  }
  char body[256];
  size_t blen = 0;
  sonde__http_body(req, &blen);
  snprintf(body, sizeof body, "%s %s|%zu", sonde__http_method(req), sonde__http_path(req), blen);
  bool async = f->mode == M_ASYNC || (f->mode == M_ASYNC_FIRST && i == 0);
  if (f->mode == M_HOLD) {
    f->held[f->nheld++] = req;
  } else if (async) {
    pend *p = calloc(1, sizeof *p);
    p->f = f;
    p->req = req;
    snprintf(p->body, sizeof p->body, "%s", body);
    uv_timer_init(&f->loop, &p->t);
    p->t.data = p;
    uv_timer_start(&p->t, on_pend, (uint64_t)f->delay_ms, 0);
  } else {
    assert_int_equal(sonde__http_respond(req, 200, "text/plain", NULL, body, strlen(body)), 0);
  }
}

static void fx_start(fx *f, enum mode mode, const sonde_http_options *opts) {
  memset(f, 0, sizeof *f);
  f->mode = mode;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  char err[256] = "";
  int rc = sonde__http_listen(&f->loop, "127.0.0.1:0", opts, handler, f, &f->srv, err, sizeof err);
  if (rc)
    fail_msg("listen: %s", err);
  f->port = sonde__http_port(f->srv);
  assert_true(f->port > 0);
}

static void on_poll(uv_timer_t *t) {
  fx *f = t->data;
  if (atomic_load(&f->client_done))
    uv_stop(&f->loop);
}

typedef struct client_arg {
  fx *f;
  void (*fn)(fx *f, void *arg);
  void *arg;
} client_arg;

static void *client_main(void *p) {
  client_arg *ca = p;
  ca->fn(ca->f, ca->arg);
  atomic_store(&ca->f->client_done, 1);
  return NULL;
}

/* Runs the loop while fn(f, arg) runs as a client in another thread. */
static void fx_run_client(fx *f, void (*fn)(fx *, void *), void *arg) {
  client_arg ca = {f, fn, arg};
  atomic_store(&f->client_done, 0);
  pthread_t th;
  uv_timer_init(&f->loop, &f->poll);
  f->poll.data = f;
  uv_timer_start(&f->poll, on_poll, 2, 2);
  assert_int_equal(pthread_create(&th, NULL, client_main, &ca), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  uv_close((uv_handle_t *)&f->poll, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Closes the server; every handle must be gone afterwards. */
static void fx_stop(fx *f) {
  if (!f->closed)
    sonde__http_close(f->srv);
  f->closed = true;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  for (int i = 0; i < MAXREQ; i++)
    free(f->body[i]);
}

/* ---- a blocking client ---------------------------------------------------------------------- */

typedef struct cli {
  int fd;
  char buf[1 << 20];
  size_t len;
} cli;

typedef struct resp {
  int status; /* 0: connection closed before a full response; -1: timeout */
  char head[2048];
  char body[4096];
  size_t body_len;
} resp;

static int cli_connect(cli *c, int port) {
  c->len = 0;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static void cli_send(cli *c, const void *p, size_t len) {
  const char *s = p;
  while (len) {
    ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);
    if (n <= 0)
      return;
    s += n;
    len -= (size_t)n;
  }
}

static void cli_sends(cli *c, const char *s) {
  cli_send(c, s, strlen(s));
}

/* 1: more bytes, 0: EOF, -1: error/timeout */
static int cli_fill(cli *c) {
  if (c->len == sizeof c->buf)
    return -1;
  ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (n > 0) {
    c->len += (size_t)n;
    return 1;
  }
  return n == 0 ? 0 : -1;
}

/* Reads one response (Content-Length framed). */
static void cli_read(cli *c, resp *r) {
  memset(r, 0, sizeof *r);
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end) {
      size_t hl = (size_t)(end - c->buf) + 4;
      const char *cl = memmem(c->buf, hl, "Content-Length: ", 16);
      size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
      if (c->len >= hl + blen) {
        snprintf(r->head, sizeof r->head, "%.*s", (int)hl, c->buf);
        r->body_len = blen;
        memcpy(r->body, c->buf + hl, blen < sizeof r->body - 1 ? blen : sizeof r->body - 1);
        sscanf(c->buf, "HTTP/1.1 %d", &r->status);
        memmove(c->buf, c->buf + hl + blen, c->len - hl - blen);
        c->len -= hl + blen;
        return;
      }
    }
    int rc = cli_fill(c);
    if (rc <= 0) {
      r->status = rc;
      return;
    }
  }
}

/* After the responses read so far: 0 when the server closed the connection, -1 on timeout. */
static int cli_wait_eof(cli *c) {
  for (;;) {
    int rc = cli_fill(c);
    if (rc <= 0)
      return rc;
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- tests ---------------------------------------------------------------------------------- */

typedef struct two {
  resp r[4];
  int eof;
} two;

static void cl_keepalive(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "GET /v1/traces?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Test: first\r\n\r\n");
  cli_read(&c, &t->r[0]);
  cli_sends(&c, "GET /second HTTP/1.1\r\nHost: x\r\nx-TEST: again\r\n\r\n");
  cli_read(&c, &t->r[1]);
  /* the same connection answered both; now close it from the client side */
  close(c.fd);
}

static void test_get_keepalive(void **state) {
  fx f;
  two t;
  fx_start(&f, M_SYNC, NULL);
  fx_run_client(&f, cl_keepalive, &t);
  assert_int_equal(t.r[0].status, 200);
  assert_int_equal(t.r[1].status, 200);
  assert_null(strstr(t.r[0].head, "Connection: close"));
  assert_non_null(strstr(t.r[0].head, "Content-Type: text/plain\r\n"));
  assert_string_equal(t.r[0].body, "GET /v1/traces|0");
  assert_string_equal(t.r[1].body, "GET /second|0");
  assert_int_equal(f.calls, 2);
  assert_string_equal(f.seen[0], "GET /v1/traces?a=1&b=2");
  assert_string_equal(f.seen[1], "GET /second?");
  assert_string_equal(f.hdr[0], "first"); /* header names are case-insensitive */
  assert_string_equal(f.hdr[1], "again");
  fx_stop(&f);
}

static void cl_pipelined(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  /* three requests in one write; the first is answered late (async), the others at once */
  cli_sends(&c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
                "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_read(&c, &t->r[0]);
  cli_read(&c, &t->r[1]);
  cli_read(&c, &t->r[2]);
  close(c.fd);
}

static void test_pipelined_in_order(void **state) {
  fx f;
  two t;
  fx_start(&f, M_ASYNC_FIRST, NULL);
  f.delay_ms = 50;
  fx_run_client(&f, cl_pipelined, &t);
  assert_int_equal(t.r[0].status, 200);
  assert_int_equal(t.r[1].status, 200);
  assert_int_equal(t.r[2].status, 200);
  assert_string_equal(t.r[0].body, "GET /a|0");
  assert_non_null(strstr(t.r[0].head, "X-Async: yes\r\n"));
  assert_string_equal(t.r[1].body, "POST /b|3");
  assert_string_equal(t.r[2].body, "GET /c|0");
  assert_int_equal(f.calls, 3);
  assert_string_equal(f.seen[0], "GET /a?");
  assert_string_equal(f.seen[1], "POST /b?");
  assert_string_equal(f.seen[2], "GET /c?");
  fx_stop(&f);
}

/* A binary body of n bytes with every byte value, NULs included. */
static uint8_t *pattern(size_t n) {
  uint8_t *p = malloc(n);
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(i * 7 + i / 251);
  return p;
}

#define BIG 300000

static void cl_post_cl(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  uint8_t *body = pattern(BIG);
  char head[256];
  snprintf(head, sizeof head,
           "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
           "Content-Length: %d\r\n\r\n", BIG);
  cli_sends(&c, head);
  /* in pieces, so that the body arrives over several reads */
  cli_send(&c, body, 1000);
  msleep(5);
  cli_send(&c, body + 1000, BIG - 1000);
  free(body);
  cli_read(&c, &t->r[0]);
  close(c.fd);
}

static void test_post_content_length(void **state) {
  fx f;
  two t;
  fx_start(&f, M_SYNC, NULL);
  fx_run_client(&f, cl_post_cl, &t);
  assert_int_equal(t.r[0].status, 200);
  assert_int_equal(f.calls, 1);
  assert_int_equal(f.body_len[0], BIG);
  uint8_t *want = pattern(BIG);
  assert_memory_equal(f.body[0], want, BIG);
  free(want);
  fx_stop(&f);
}

static void cl_post_chunked(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  uint8_t *body = pattern(70000);
  cli_sends(&c, "POST /chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  size_t off = 0, sizes[] = {1, 4095, 0x10000, 70000 - 1 - 4095 - 0x10000};
  for (int i = 0; i < 4; i++) {
    char line[32];
    snprintf(line, sizeof line, "%zx;ext=1\r\n", sizes[i]);
    cli_sends(&c, line);
    cli_send(&c, body + off, sizes[i]);
    cli_sends(&c, "\r\n");
    off += sizes[i];
    msleep(2);
  }
  cli_sends(&c, "0\r\nX-Trailer: t\r\n\r\n");
  free(body);
  cli_read(&c, &t->r[0]);
  /* the connection stays usable after a chunked body */
  cli_sends(&c, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_read(&c, &t->r[1]);
  close(c.fd);
}

static void test_post_chunked(void **state) {
  fx f;
  two t;
  fx_start(&f, M_SYNC, NULL);
  fx_run_client(&f, cl_post_chunked, &t);
  assert_int_equal(t.r[0].status, 200);
  assert_string_equal(t.r[0].body, "POST /chunky|70000");
  assert_int_equal(t.r[1].status, 200);
  assert_int_equal(f.calls, 2);
  assert_int_equal(f.body_len[0], 70000);
  uint8_t *want = pattern(70000);
  assert_memory_equal(f.body[0], want, 70000);
  free(want);
  fx_stop(&f);
}

static void cl_oversize(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  /* declared too large */
  if (cli_connect(&c, f->port))
    return;
  uint8_t *body = pattern(5000);
  cli_sends(&c, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  cli_send(&c, body, 5000);
  cli_read(&c, &t->r[0]);
  t->eof = cli_wait_eof(&c);
  close(c.fd);
  /* chunked, growing past the limit */
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "POST /big2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 5; i++) {
    cli_sends(&c, "3e8\r\n");
    cli_send(&c, body, 1000);
    cli_sends(&c, "\r\n");
  }
  cli_sends(&c, "0\r\n\r\n");
  cli_read(&c, &t->r[1]);
  close(c.fd);
  /* exactly at the limit is fine */
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "POST /fits HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n");
  cli_send(&c, body, 1024);
  cli_read(&c, &t->r[2]);
  close(c.fd);
  free(body);
}

static void test_oversize_body_413(void **state) {
  fx f;
  two t;
  sonde_http_options o = {.max_body_size = 1024};
  fx_start(&f, M_SYNC, &o);
  fx_run_client(&f, cl_oversize, &t);
  assert_int_equal(t.r[0].status, 413);
  assert_non_null(strstr(t.r[0].head, "Connection: close"));
  assert_int_equal(t.eof, 0); /* closed after the 413 */
  assert_int_equal(t.r[1].status, 413);
  assert_int_equal(t.r[2].status, 200);
  assert_string_equal(t.r[2].body, "POST /fits|1024");
  assert_int_equal(f.calls, 1); /* only /fits reached the handler */
  assert_string_equal(f.seen[0], "POST /fits?");
  fx_stop(&f);
}

static void cl_garbage(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "HELLO THERE \x01\x02\r\n\r\n");
  cli_read(&c, &t->r[0]);
  t->eof = cli_wait_eof(&c);
  close(c.fd);
  /* a bad header line after a good request line */
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n");
  cli_read(&c, &t->r[1]);
  close(c.fd);
}

static void test_garbage_400(void **state) {
  fx f;
  two t;
  fx_start(&f, M_SYNC, NULL);
  fx_run_client(&f, cl_garbage, &t);
  assert_int_equal(t.r[0].status, 400);
  assert_non_null(strstr(t.r[0].head, "Connection: close"));
  assert_int_equal(t.eof, 0);
  assert_int_equal(t.r[1].status, 400);
  assert_int_equal(f.calls, 0);
  fx_stop(&f);
}

static void cl_close_then_more(fx *f, void *arg) {
  two *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                "POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
  cli_read(&c, &t->r[0]);
  cli_read(&c, &t->r[1]);
  close(c.fd);
}

/* A request after one that said "Connection: close" is never answered: it must not be handed to
 * the handler either (an OTLP client would resend data the pipeline already took). */
static void test_connection_close_stops_pipeline(void **state) {
  fx f;
  two t;
  fx_start(&f, M_SYNC, NULL);
  fx_run_client(&f, cl_close_then_more, &t);
  assert_int_equal(t.r[0].status, 200);
  assert_non_null(strstr(t.r[0].head, "Connection: close"));
  assert_int_equal(t.r[1].status, 0); /* EOF, no second response */
  assert_int_equal(f.calls, 1);
  fx_stop(&f);
}

typedef struct timing {
  int eof;
  double took;
  resp r;
} timing;

static void cl_stall(fx *f, void *arg) {
  timing *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  double t0 = now_s();
  cli_sends(&c, "POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
  t->eof = cli_wait_eof(&c);
  t->took = now_s() - t0;
  close(c.fd);
}

static void test_read_timeout_closes_stalled_client(void **state) {
  fx f;
  timing t = {0};
  sonde_http_options o = {.read_timeout_ns = 100 * 1000000LL};
  fx_start(&f, M_SYNC, &o);
  fx_run_client(&f, cl_stall, &t);
  assert_int_equal(t.eof, 0); /* closed by the server, not our 5 s receive timeout */
  assert_true(t.took >= 0.08);
  assert_true(t.took < 3.0);
  assert_int_equal(f.calls, 0);
  fx_stop(&f);
}

static void cl_idle(fx *f, void *arg) {
  timing *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_read(&c, &t->r);
  double t0 = now_s();
  t->eof = cli_wait_eof(&c); /* an idle keep-alive connection is closed too */
  t->took = now_s() - t0;
  close(c.fd);
}

static void test_idle_keepalive_closed(void **state) {
  fx f;
  timing t = {0};
  sonde_http_options o = {.read_timeout_ns = 100 * 1000000LL};
  fx_start(&f, M_SYNC, &o);
  fx_run_client(&f, cl_idle, &t);
  assert_int_equal(t.r.status, 200);
  assert_int_equal(t.eof, 0);
  assert_true(t.took < 3.0);
  fx_stop(&f);
}

static void cl_slow_handler(fx *f, void *arg) {
  timing *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  double t0 = now_s();
  cli_sends(&c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  cli_read(&c, &t->r);
  t->took = now_s() - t0;
  close(c.fd);
}

/* The handler answers after it returned (from a uv timer), later than read_timeout: the client
 * did not stall, so it gets its answer. */
static void test_async_respond_after_handler_returned(void **state) {
  fx f;
  timing t = {0};
  sonde_http_options o = {.read_timeout_ns = 60 * 1000000LL};
  fx_start(&f, M_ASYNC, &o);
  f.delay_ms = 200;
  fx_run_client(&f, cl_slow_handler, &t);
  assert_int_equal(t.r.status, 200);
  assert_string_equal(t.r.body, "GET /slow|0");
  assert_non_null(strstr(t.r.head, "X-Async: yes\r\n"));
  assert_true(t.took >= 0.15);
  fx_stop(&f);
}

/* ---- server close with a pending request ---------------------------------------------------- */

static void on_close_timer(uv_timer_t *t) {
  fx *f = t->data;
  if (f->nheld == 0)
    return; /* the request has not arrived yet */
  uv_timer_stop(t);
  sonde__http_close(f->srv);
  f->closed = true;
}

static void cl_pending(fx *f, void *arg) {
  timing *t = arg;
  static cli c;
  if (cli_connect(&c, f->port))
    return;
  cli_sends(&c, "POST /pending HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nwait");
  cli_read(&c, &t->r); /* no full response: the server closes */
  t->eof = cli_wait_eof(&c);
  close(c.fd);
  /* nobody listens anymore */
  t->took = cli_connect(&c, f->port) == 0 ? 1 : 0;
  close(c.fd);
}

static void test_close_with_pending_request(void **state) {
  fx f;
  timing t = {0};
  fx_start(&f, M_HOLD, NULL);
  uv_timer_t closer;
  uv_timer_init(&f.loop, &closer);
  closer.data = &f;
  uv_timer_start(&closer, on_close_timer, 5, 5);
  fx_run_client(&f, cl_pending, &t);
  assert_int_equal(f.calls, 1);
  assert_int_equal(f.nheld, 1);
  assert_true(f.closed);
  assert_true(t.r.status == 0 || t.r.status == 503);
  assert_true(t.eof <= 0);
  assert_int_equal(t.took, 0); /* the listener is gone */
  uv_close((uv_handle_t *)&closer, NULL);
  uv_run(&f.loop, UV_RUN_DEFAULT); /* every connection handle is closed now */
  /* The handler answers after the server and its connection are gone: no crash, request freed. */
  assert_int_equal(sonde__http_respond(f.held[0], 200, NULL, NULL, "late", 4), SONDE_ESHUTDOWN);
  fx_stop(&f);
}

static void on_close_and_respond(uv_timer_t *t) {
  fx *f = t->data;
  if (f->nheld == 0)
    return;
  uv_timer_stop(t);
  sonde__http_close(f->srv);
  f->closed = true;
  /* the connection is closing, its handles not closed yet */
  f->respond_rc = sonde__http_respond(f->held[0], 200, NULL, NULL, "late", 4);
}

/* The same, but the handler answers right after the close, in the same loop iteration. */
static void test_close_then_respond_at_once(void **state) {
  fx f;
  timing t = {0};
  fx_start(&f, M_HOLD, NULL);
  uv_timer_t closer;
  uv_timer_init(&f.loop, &closer);
  closer.data = &f;
  uv_timer_start(&closer, on_close_and_respond, 5, 5);
  fx_run_client(&f, cl_pending, &t);
  uv_close((uv_handle_t *)&closer, NULL);
  assert_int_equal(f.nheld, 1);
  assert_true(f.respond_rc < 0); /* not delivered: the connection is going away */
  assert_true(t.r.status == 0 || t.r.status == 503);
  fx_stop(&f);
}

static void test_close_idle_server_and_endpoint_errors(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sonde_http_server *a, *b;
  char err[256];
  assert_int_equal(sonde__http_listen(&loop, "127.0.0.1:0", NULL, handler, NULL, &a, err,
                                      sizeof err), 0);
  char ep[64];
  snprintf(ep, sizeof ep, "127.0.0.1:%d", sonde__http_port(a));
  assert_int_equal(sonde__http_listen(&loop, ep, NULL, handler, NULL, &b, err, sizeof err),
                   SONDE_EEXISTS);
  assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
  assert_int_equal(sonde__http_listen(&loop, "127.0.0.1", NULL, handler, NULL, &b, err,
                                      sizeof err), SONDE_EINVAL);
  assert_string_equal(err, "endpoint \"127.0.0.1\" has no port (use host:port)");
  assert_int_equal(sonde__http_listen(&loop, "127.0.0.1:99999", NULL, handler, NULL, &b, err,
                                      sizeof err), SONDE_EINVAL);
  assert_string_equal(err, "endpoint \"127.0.0.1:99999\": invalid port");
  struct sockaddr_storage ss;
  assert_int_equal(sonde_endpoint_parse(":4318", &ss, err, sizeof err), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 4318);
  assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  assert_int_equal(sonde_endpoint_parse("[::1]:4317", &ss, err, sizeof err), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  sonde__http_close(a);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_keepalive),
      cmocka_unit_test(test_pipelined_in_order),
      cmocka_unit_test(test_post_content_length),
      cmocka_unit_test(test_post_chunked),
      cmocka_unit_test(test_oversize_body_413),
      cmocka_unit_test(test_garbage_400),
      cmocka_unit_test(test_connection_close_stops_pipeline),
      cmocka_unit_test(test_read_timeout_closes_stalled_client),
      cmocka_unit_test(test_idle_keepalive_closed),
      cmocka_unit_test(test_async_respond_after_handler_returned),
      cmocka_unit_test(test_close_with_pending_request),
      cmocka_unit_test(test_close_then_respond_at_once),
      cmocka_unit_test(test_close_idle_server_and_endpoint_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "httpd.h"

#include "sonde/net.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 64
#define MAX_URL 8192

typedef struct conn conn;

struct sonde_http_request {
  conn *c; /* NULL once the connection is gone: respond then only frees */
  char method[16];
  sonde_buf url;
  char *path, *query;
  size_t nh;
  sonde_buf hname[MAX_HEADERS], hval[MAX_HEADERS];
  sonde_buf body;
  bool keep_alive;
};

struct sonde_http_server {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  sonde_http_handler handler;
  void *arg;
  sonde_http_options opts;
  conn *conns;
  void *user;
};

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  int closing_handles;
  sonde_http_server *srv;
  conn *next, **pprev;
  http_parser parser;
  sonde_buf in; /* bytes read and not parsed yet */
  size_t in_off;
  sonde_http_request *req;            /* being parsed */
  sonde_http_request *active;         /* handed to the handler, awaiting respond */
  bool header_value;                  /* last header callback was a value */
  bool too_big, closing, close_after; /* close_after: a "Connection: close" answer is out */
  int writes;
};

static void req_free(sonde_http_request *r) {
  if (!r) return;
  sonde_buf_free(&r->url);
  for (size_t i = 0; i < MAX_HEADERS; i++) {
    sonde_buf_free(&r->hname[i]);
    sonde_buf_free(&r->hval[i]);
  }
  sonde_buf_free(&r->body);
  free(r->path);
  free(r);
}

static void conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->closing_handles == 0) {
    req_free(c->req);
    if (c->active) c->active->c = NULL; /* the handler still holds it; respond() frees */
    sonde_buf_free(&c->in);
    free(c);
  }
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = true;
  if (c->pprev) {
    *c->pprev = c->next;
    if (c->next) c->next->pprev = c->pprev;
    c->pprev = NULL;
  }
  c->closing_handles = 2;
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static void on_timeout(uv_timer_t *t) {
  conn_close(t->data);
}

static void arm_timer(conn *c) {
  uint64_t ms = (uint64_t)(c->srv->opts.read_timeout_ns / 1000000);
  uv_timer_start(&c->timer, on_timeout, ms ? ms : 1, 0);
}

/* ---- parser callbacks ---------------------------------------------------------------------- */

static int on_message_begin(http_parser *p) {
  conn *c = p->data;
  req_free(c->req);
  c->req = calloc(1, sizeof *c->req);
  c->header_value = false;
  c->too_big = false;
  return c->req ? 0 : -1;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (c->req->url.len + len > MAX_URL) return -1;
  return sonde_buf_append(&c->req->url, at, len) ? -1 : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  sonde_http_request *r = c->req;
  if (c->header_value || r->nh == 0) {
    if (r->nh == MAX_HEADERS) return -1;
    r->nh++;
    c->header_value = false;
  }
  return sonde_buf_append(&r->hname[r->nh - 1], at, len) ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  sonde_http_request *r = c->req;
  c->header_value = true;
  if (r->nh == 0) return -1;
  return sonde_buf_append(&r->hval[r->nh - 1], at, len) ? -1 : 0;
}

static int on_headers_complete(http_parser *p) {
  conn *c = p->data;
  uint64_t max = c->srv->opts.max_body_size;
  if (p->content_length != ULLONG_MAX && p->content_length > max) c->too_big = true;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (c->too_big || c->req->body.len + len > c->srv->opts.max_body_size) {
    c->too_big = true;
    return 0; /* keep parsing to the end of the message, dropping the bytes */
  }
  return sonde_buf_append(&c->req->body, at, len) ? -1 : 0;
}

static int on_message_complete(http_parser *p) {
  conn *c = p->data;
  sonde_http_request *r = c->req;
  snprintf(r->method, sizeof r->method, "%s", http_method_str(p->method));
  r->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1); /* one request at a time: pipelined ones wait their turn */
  return 0;
}

static const http_parser_settings g_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void respond_error(conn *c, int status, const char *msg) {
  char body[128];
  int n = snprintf(body, sizeof body, "%s\n", msg);
  sonde_http_request *r = c->req ? c->req : calloc(1, sizeof *r);
  c->req = NULL;
  if (!r) {
    conn_close(c);
    return;
  }
  r->c = c;
  r->keep_alive = false;
  c->active = r;
  sonde__http_respond(r, status, "text/plain; charset=utf-8", NULL, body, (size_t)n);
}

static void dispatch(conn *c) {
  sonde_http_request *r = c->req;
  c->req = NULL;
  r->c = c;
  c->active = r;
  if (sonde_buf_append(&r->url, "", 0) || sonde_buf_append(&r->body, "", 0)) {
    c->req = r;
    c->active = NULL;
    respond_error(c, 500, "out of memory");
    return;
  }
  r->path = strdup((char *)r->url.data);
  if (!r->path) {
    c->req = r;
    c->active = NULL;
    respond_error(c, 500, "out of memory");
    return;
  }
  char *q = strchr(r->path, '?');
  if (q) {
    *q = 0;
    r->query = q + 1;
  } else {
    r->query = r->path + strlen(r->path);
  }
  for (size_t i = 0; i < r->nh; i++) {
    if (sonde_buf_append(&r->hname[i], "", 0) || sonde_buf_append(&r->hval[i], "", 0)) {
      c->req = r;
      c->active = NULL;
      respond_error(c, 500, "out of memory");
      return;
    }
  }
  uv_timer_stop(&c->timer); /* the client waits for us now: read_timeout is not its fault */
  c->srv->handler(c->srv->arg, r);
}

/* Parses buffered bytes until a whole request is ready (then dispatches it) or input runs out. */
static void process(conn *c) {
  while (!c->closing && !c->close_after && !c->active && c->in_off < c->in.len) {
    size_t avail = c->in.len - c->in_off;
    size_t n = http_parser_execute(&c->parser, &g_settings, (char *)c->in.data + c->in_off, avail);
    c->in_off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->parser, 0);
      if (c->too_big)
        respond_error(c, 413, "request body too large");
      else
        dispatch(c);
    } else if (e != HPE_OK) {
      respond_error(c, 400, http_errno_description(e));
      return;
    } else if (n < avail) {
      respond_error(c, 400, "malformed request");
      return;
    }
  }
  if (c->in_off == c->in.len) c->in.len = c->in_off = 0;
  if (!c->closing && !c->active)
    arm_timer(c); /* idle or mid-request: the client has read_timeout to go on */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  if (sonde_buf_reserve(&c->in, 65536)) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  buf->base = (char *)c->in.data + c->in.len;
  buf->len = c->in.cap - c->in.len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->in.len += (size_t)nread;
  if (c->close_after) { /* answered with Connection: close: nothing more is read */
    c->in.len = c->in_off = 0;
    return;
  }
  if (c->active) {
    /* Bound what a pipelining client can queue while we answer. */
    if (c->in.len - c->in_off > (1u << 20)) uv_read_stop(s);
    return;
  }
  process(c);
}

static void on_connection(uv_stream_t *server, int status) {
  sonde_http_server *srv = server->data;
  if (status < 0) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  uv_timer_init(srv->loop, &c->timer);
  c->timer.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->next = srv->conns;
  if (srv->conns) srv->conns->pprev = &c->next;
  srv->conns = c;
  c->pprev = &srv->conns;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  arm_timer(c);
}

int sonde__http_listen(uv_loop_t *loop, const char *endpoint, const sonde_http_options *opts,
                       sonde_http_handler handler, void *arg, sonde_http_server **out, char *err,
                       size_t errlen) {
  struct sockaddr_storage addr;
  int rc = sonde_endpoint_parse(endpoint, &addr, err, errlen);
  if (rc) return rc;
  sonde_http_server *srv = calloc(1, sizeof *srv);
  if (!srv) return SONDE_ENOMEM;
  srv->loop = loop;
  srv->handler = handler;
  srv->arg = arg;
  if (opts) srv->opts = *opts;
  if (!srv->opts.max_body_size) srv->opts.max_body_size = 20u << 20;
  if (!srv->opts.read_timeout_ns) srv->opts.read_timeout_ns = 30000000000LL;
  uv_tcp_init(loop, &srv->tcp);
  srv->tcp.data = srv;
  int uerr = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&addr, 0);
  if (!uerr) uerr = uv_listen((uv_stream_t *)&srv->tcp, 511, on_connection);
  if (uerr) {
    snprintf(err, errlen, "cannot listen on %s: %s", endpoint, uv_strerror(uerr));
    uv_close((uv_handle_t *)&srv->tcp, (uv_close_cb)free);
    return uerr == UV_EADDRINUSE ? SONDE_EEXISTS : SONDE_EIO;
  }
  *out = srv;
  return 0;
}

void sonde__http_set_user(sonde_http_server *srv, void *user) {
  srv->user = user;
}

void *sonde__http_user(const sonde_http_server *srv) {
  return srv->user;
}

int sonde__http_port(const sonde_http_server *srv) {
  struct sockaddr_storage a;
  int len = sizeof a;
  if (uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&a, &len)) return -1;
  return ntohs(a.ss_family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port
                                      : ((struct sockaddr_in6 *)&a)->sin6_port);
}

void sonde__http_close(sonde_http_server *srv) {
  if (!srv) return;
  /* The listener first: a client that sees its connection end must not get a new one. */
  uv_close((uv_handle_t *)&srv->tcp, (uv_close_cb)free);
  while (srv->conns)
    conn_close(srv->conns);
}

const char *sonde__http_method(const sonde_http_request *r) {
  return r->method;
}
const char *sonde__http_path(const sonde_http_request *r) {
  return r->path;
}
const char *sonde__http_query(const sonde_http_request *r) {
  return r->query;
}
const char *sonde__http_header(const sonde_http_request *r, const char *name) {
  for (size_t i = 0; i < r->nh; i++)
    if (strcasecmp((char *)r->hname[i].data, name) == 0) return (char *)r->hval[i].data;
  return NULL;
}
const uint8_t *sonde__http_body(const sonde_http_request *r, size_t *len) {
  *len = r->body.len;
  return r->body.data ? r->body.data : (const uint8_t *)"";
}

typedef struct {
  uv_write_t w;
  conn *c;
  bool close_after;
  char data[];
} wreq;

static void on_written(uv_write_t *w, int status) {
  wreq *wr = (wreq *)w;
  conn *c = wr->c;
  c->writes--;
  if (status < 0 || wr->close_after) {
    conn_close(c);
  } else if (!c->closing) {
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    process(c); /* the next pipelined request, if any */
  }
  free(wr);
}

static const char *reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 413:
    return "Payload Too Large";
  case 415:
    return "Unsupported Media Type";
  case 429:
    return "Too Many Requests";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Status";
  }
}

int sonde__http_respond(sonde_http_request *r, int status, const char *content_type,
                        const char *headers, const void *body, size_t len) {
  conn *c = r->c;
  bool keep = r->keep_alive;
  if (!c) {
    req_free(r);
    return SONDE_ESHUTDOWN;
  }
  c->active = NULL;
  req_free(r);
  char head[512];
  int hn =
      snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s",
               status, reason(status), content_type ? content_type : "text/plain", len,
               keep ? "" : "Connection: close\r\n");
  size_t extra = headers ? strlen(headers) : 0;
  wreq *wr = malloc(sizeof *wr + (size_t)hn + extra + 2 + len);
  if (!wr) {
    conn_close(c);
    return SONDE_ENOMEM;
  }
  char *p = wr->data;
  memcpy(p, head, (size_t)hn);
  p += hn;
  if (extra) memcpy(p, headers, extra), p += extra;
  memcpy(p, "\r\n", 2), p += 2;
  if (len) memcpy(p, body, len), p += len;
  wr->c = c;
  wr->close_after = !keep;
  if (!keep) c->close_after = true; /* later pipelined requests are not dispatched */
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)(p - wr->data));
  uv_timer_stop(&c->timer);
  c->writes++;
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
    c->writes--;
    free(wr);
    conn_close(c);
    return SONDE_EIO;
  }
  return 0;
}

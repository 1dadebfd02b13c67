/* HTTP/1.x exchanges of one connection (see http1.h).
 *
 * The BPF side captures only a prefix of each read/write; what it did not copy is body data in the
 * common cases (a large Content-Length or chunked response, sendfile), so it is fed to the parser
 * as filler bytes, which http_parser counts without looking at. When the missing bytes could hold
 * framing (a chunk-size line, headers longer than the capture), that direction loses sync and
 * waits for a read/write that starts a new message; a response lost that way ends at the last
 * transfer seen in its direction. */
#include "http1.h"

#include <http_parser.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define URL_MAX 2048
#define PEND_MAX 64 /* requests waiting for their response on one connection */

typedef struct pend {
  struct pend *next;
  uint64_t tag;
  uint64_t start_ns;
  uint64_t req_body;
  bool hooked; /* its headers were parsed and the request hook called */
  bool req_done;
  uint8_t minor; /* HTTP/1.minor of the request line */
  char method[24];
  char url[URL_MAX];
  size_t url_len;
  char authority[256], ua[256], tp[64], ctype[128];
} pend;

struct hx_h1 {
  bool server;
  const hx_h1_hooks *hooks;
  void *ud;
  http_parser req, resp;
  bool req_sync, resp_sync;
  bool ever_parsed;
  bool dead;       /* upgraded (101, CONNECT): no longer HTTP/1 */
  bool resp_body;  /* between a response's headers and its end */
  bool chunk_data; /* inside a chunk's data */
  bool resp_head;  /* the response answers a HEAD request */
  bool resp_lost;  /* the head request's response lost sync; it ends at lost_end */
  uint64_t lost_end;
  int status;
  uint64_t resp_bytes;
  bool req_body;
  pend *head, *tail, *cur; /* cur: the request being parsed (the tail) */
  size_t npend;
  char hname[32];
  size_t hname_len;
  char hval[512];
  size_t hval_len;
  bool in_value;
  uint64_t ts;
};

static const char filler[16384];

/* ---- the FIFO ---- */

static void fill_exchange(hx_h1 *h, pend *q, hx_exchange *ex) {
  memset(ex, 0, sizeof(*ex));
  ex->proto = HX_HTTP1;
  ex->server = h->server;
  ex->start_ns = q->start_ns;
  ex->method = q->method;
  q->url[q->url_len] = 0;
  char *qm = strchr(q->url, '?');
  if (qm) {
    *qm = 0;
    ex->query = qm + 1;
  }
  /* An absolute-form target (proxies): keep the path. */
  ex->path = q->url;
  if (!strncmp(q->url, "http://", 7) || !strncmp(q->url, "https://", 8)) {
    char *slash = strchr(strstr(q->url, "//") + 2, '/');
    ex->path = slash ? slash : "/";
  }
  ex->authority = q->authority[0] ? q->authority : NULL;
  ex->user_agent = q->ua[0] ? q->ua : NULL;
  ex->traceparent = q->tp[0] ? q->tp : NULL;
  ex->content_type = q->ctype[0] ? q->ctype : NULL;
  ex->grpc_status = -1;
  ex->rst_code = -1;
  ex->version = q->minor ? "1.1" : "1.0";
  ex->req_body_bytes = q->req_body;
}

static pend *pop_head(hx_h1 *h) {
  pend *q = h->head;
  if (!q) return NULL;
  h->head = q->next;
  if (!h->head) h->tail = NULL;
  if (h->cur == q) h->cur = NULL;
  h->npend--;
  return q;
}

/* The head request is answered (status != 0) or dropped. */
static void finish(hx_h1 *h, pend *q, int status, uint64_t resp_bytes, uint64_t end_ns,
                   bool reset) {
  if (!q->hooked) { /* cut before its headers ended: not a request we can name */
    free(q);
    return;
  }
  hx_exchange ex;
  fill_exchange(h, q, &ex);
  ex.status = status;
  ex.resp_body_bytes = resp_bytes;
  ex.end_ns = end_ns;
  ex.reset = reset;
  h->hooks->done(h->ud, &ex, q->tag);
  free(q);
}

static void drop_all(hx_h1 *h, uint64_t ts) {
  pend *q;
  while ((q = pop_head(h)))
    finish(h, q, 0, 0, ts, true);
}

/* The response of the head request whose stream was lost ends where its direction went quiet. */
static void finish_lost(hx_h1 *h) {
  if (!h->resp_lost) return;
  h->resp_lost = false;
  pend *q = pop_head(h);
  if (q) finish(h, q, h->status, h->resp_bytes, h->lost_end, false);
}

/* ---- request callbacks ---- */

static void header_done(hx_h1 *h) {
  if (!h->in_value || !h->cur) goto out;
  pend *q = h->cur;
  h->hval[h->hval_len] = 0;
  h->hname[h->hname_len] = 0;
  char *dst = NULL;
  size_t cap = 0;
  if (!strcasecmp(h->hname, "host"))
    dst = q->authority, cap = sizeof(q->authority);
  else if (!strcasecmp(h->hname, "user-agent"))
    dst = q->ua, cap = sizeof(q->ua);
  else if (!strcasecmp(h->hname, "traceparent"))
    dst = q->tp, cap = sizeof(q->tp);
  else if (!strcasecmp(h->hname, "content-type"))
    dst = q->ctype, cap = sizeof(q->ctype);
  if (dst) {
    size_t n = h->hval_len < cap - 1 ? h->hval_len : cap - 1;
    memcpy(dst, h->hval, n);
    dst[n] = 0;
  }
out:
  h->in_value = false;
  h->hname_len = h->hval_len = 0;
}

static int rq_begin(http_parser *p) {
  hx_h1 *h = p->data;
  pend *q = calloc(1, sizeof(*q));
  if (!q) return -1;
  q->start_ns = h->ts;
  if (h->tail)
    h->tail->next = q;
  else
    h->head = q;
  h->tail = h->cur = q;
  h->npend++;
  h->in_value = false;
  h->hname_len = h->hval_len = 0;
  return h->npend > PEND_MAX ? -1 : 0;
}

static int rq_url(http_parser *p, const char *at, size_t len) {
  hx_h1 *h = p->data;
  pend *q = h->cur;
  if (!q) return -1;
  size_t room = URL_MAX - 1 - q->url_len;
  if (len > room) len = room;
  memcpy(q->url + q->url_len, at, len);
  q->url_len += len;
  return 0;
}

static int rq_field(http_parser *p, const char *at, size_t len) {
  hx_h1 *h = p->data;
  if (h->in_value) header_done(h);
  size_t room = sizeof(h->hname) - 1 - h->hname_len;
  if (len > room) len = room;
  memcpy(h->hname + h->hname_len, at, len);
  h->hname_len += len;
  return 0;
}

static int rq_value(http_parser *p, const char *at, size_t len) {
  hx_h1 *h = p->data;
  h->in_value = true;
  size_t room = sizeof(h->hval) - 1 - h->hval_len;
  if (len > room) len = room;
  memcpy(h->hval + h->hval_len, at, len);
  h->hval_len += len;
  return 0;
}

static int rq_headers(http_parser *p) {
  hx_h1 *h = p->data;
  header_done(h);
  pend *q = h->cur;
  if (!q) return -1;
  snprintf(q->method, sizeof(q->method), "%s", http_method_str((enum http_method)p->method));
  q->minor = p->http_major == 1 && p->http_minor == 0 ? 0 : 1;
  q->hooked = true;
  if (h->hooks->request) {
    hx_exchange ex;
    fill_exchange(h, q, &ex);
    q->tag = h->hooks->request(h->ud, &ex);
    /* fill_exchange cut the query off in place: put the '?' back for the final exchange. */
    if (ex.query) ((char *)ex.query)[-1] = '?';
  }
  return 0;
}

static int rq_body(http_parser *p, const char *at, size_t len) {
  (void)at;
  hx_h1 *h = p->data;
  if (h->cur) h->cur->req_body += len;
  return 0;
}

static int rq_complete(http_parser *p) {
  hx_h1 *h = p->data;
  if (h->cur) h->cur->req_done = true;
  h->cur = NULL;
  return 0;
}

static const http_parser_settings req_settings = {
    .on_message_begin = rq_begin,
    .on_url = rq_url,
    .on_header_field = rq_field,
    .on_header_value = rq_value,
    .on_headers_complete = rq_headers,
    .on_body = rq_body,
    .on_message_complete = rq_complete,
};

/* ---- response callbacks ---- */

static int rs_begin(http_parser *p) {
  hx_h1 *h = p->data;
  h->status = 0;
  h->resp_bytes = 0;
  h->resp_body = false;
  h->chunk_data = false;
  h->resp_head = h->head && !strcmp(h->head->method, "HEAD");
  return 0;
}

static int rs_headers(http_parser *p) {
  hx_h1 *h = p->data;
  if (p->status_code < 100) return -1; /* "HTTP/1.1 000": not a response */
  h->status = p->status_code;
  h->resp_body = true;
  return h->resp_head ? 1 : 0; /* 1: no body follows */
}

static int rs_body(http_parser *p, const char *at, size_t len) {
  (void)at;
  hx_h1 *h = p->data;
  h->resp_bytes += len;
  return 0;
}

static int rs_chunk_header(http_parser *p) {
  hx_h1 *h = p->data;
  h->chunk_data = p->content_length > 0;
  return 0;
}

static int rs_chunk_complete(http_parser *p) {
  hx_h1 *h = p->data;
  h->chunk_data = false;
  return 0;
}

static int rs_complete(http_parser *p) {
  hx_h1 *h = p->data;
  h->resp_body = false;
  h->chunk_data = false;
  int st = p->status_code;
  if (st >= 100 && st < 200 && st != 101) return 0; /* interim: the final response follows */
  pend *q = h->head;
  /* A response with no request in hand (a connection seen mid-exchange) makes no span. */
  if (q && q->req_done) finish(h, pop_head(h), st, h->resp_bytes, h->ts, false);
  return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = rs_begin,
    .on_headers_complete = rs_headers,
    .on_body = rs_body,
    .on_chunk_header = rs_chunk_header,
    .on_chunk_complete = rs_chunk_complete,
    .on_message_complete = rs_complete,
};

/* ---- feeding ---- */

bool hx_h1_is_request(const uint8_t *p, size_t n) {
  static const char *const methods[] = {"GET ",   "POST ",    "PUT ",     "DELETE ", "HEAD ",
                                        "PATCH ", "OPTIONS ", "CONNECT ", "TRACE "};
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    size_t l = strlen(methods[i]);
    if (n >= l && !memcmp(p, methods[i], l)) return true;
  }
  return false;
}

bool hx_h1_is_response(const uint8_t *p, size_t n) {
  return n >= 9 && !memcmp(p, "HTTP/1.", 7) && (p[7] == '0' || p[7] == '1') && p[8] == ' ';
}

hx_h1 *hx_h1_new(bool server, const hx_h1_hooks *hooks, void *ud) {
  hx_h1 *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->server = server;
  h->hooks = hooks;
  h->ud = ud;
  return h;
}

static void req_desync(hx_h1 *h) {
  h->req_sync = false;
  /* The request being parsed is lost; the ones before it still wait for their responses. */
  if (h->cur && h->cur == h->tail) {
    pend *q = h->head, *prev = NULL;
    while (q && q != h->cur)
      prev = q, q = q->next;
    if (q) {
      if (prev)
        prev->next = NULL;
      else
        h->head = NULL;
      h->tail = prev;
      h->npend--;
      finish(h, q, 0, 0, h->ts, true);
    }
  }
  h->cur = NULL;
}

static void resp_desync(hx_h1 *h) {
  h->resp_sync = false;
  if (h->resp_body && h->status && h->head && h->head->req_done) {
    h->resp_lost = true;
    h->lost_end = h->ts;
  }
  h->resp_body = h->chunk_data = false;
}

/* Accounts `missing` uncaptured bytes of the response by length; false when they may hold framing
 * the parser needs. */
static bool resp_fill(hx_h1 *h, uint64_t missing) {
  while (missing) {
    if (!h->resp_body) return false;
    const char *bytes = filler;
    uint64_t k;
    bool chunked = h->resp.flags & F_CHUNKED;
    if (chunked && h->chunk_data && h->resp.content_length > 0) {
      k = h->resp.content_length;
    } else if (chunked && h->chunk_data && missing >= 2) {
      bytes = "\r\n"; /* the CRLF after a chunk's data */
      k = 2;
    } else if (!chunked && h->resp.content_length != ULLONG_MAX && h->resp.content_length > 0) {
      k = h->resp.content_length;
    } else if (!chunked && h->resp.content_length == ULLONG_MAX) {
      k = missing; /* read until the close */
    } else {
      return false;
    }
    if (k > missing) k = missing;
    while (k) {
      size_t c = k < sizeof(filler) ? (size_t)k : sizeof(filler);
      if (bytes != filler && c > 2) c = 2;
      size_t done = http_parser_execute(&h->resp, &resp_settings, bytes, c);
      if (HTTP_PARSER_ERRNO(&h->resp) != HPE_OK || done != c) return false;
      k -= c;
      missing -= c;
    }
  }
  return true;
}

static bool req_fill(hx_h1 *h, uint64_t missing) {
  while (missing) {
    /* Only a Content-Length body: a chunked request body's framing is not followed. */
    if (!h->cur || (h->req.flags & F_CHUNKED) || h->req.content_length == 0 ||
        h->req.content_length == ULLONG_MAX)
      return false;
    uint64_t k = h->req.content_length < missing ? h->req.content_length : missing;
    while (k) {
      size_t c = k < sizeof(filler) ? (size_t)k : sizeof(filler);
      size_t done = http_parser_execute(&h->req, &req_settings, filler, c);
      if (HTTP_PARSER_ERRNO(&h->req) != HPE_OK || done != c) return false;
      k -= c;
      missing -= c;
    }
  }
  return true;
}

int hx_h1_feed(hx_h1 *h, enum hx_dir dir, const uint8_t *p, size_t n, size_t total,
               uint64_t ts_ns) {
  if (h->dead) return 0;
  h->ts = ts_ns;
  bool is_req = (dir == HX_INGRESS) == h->server;
  uint64_t missing = total > n ? total - n : 0;
  if (is_req) {
    if (!h->req_sync) {
      if (!hx_h1_is_request(p, n)) return h->ever_parsed ? 0 : SONDE_EPROTO;
      http_parser_init(&h->req, HTTP_REQUEST);
      h->req.data = h;
      h->req_sync = true;
    }
    /* n == 0 (sendfile) must not reach http_parser: a zero-length execute means EOF to it. */
    size_t done = n ? http_parser_execute(&h->req, &req_settings, (const char *)p, n) : 0;
    if (h->req.upgrade) {
      h->dead = true; /* CONNECT or Upgrade: what follows is another protocol */
      return 0;
    }
    if (HTTP_PARSER_ERRNO(&h->req) != HPE_OK || done != n) {
      req_desync(h);
      return h->ever_parsed ? 0 : SONDE_EPROTO;
    }
    h->ever_parsed = true;
    if (missing && !req_fill(h, missing)) req_desync(h);
    return 0;
  }
  if (!h->resp_sync) {
    if (!hx_h1_is_response(p, n)) {
      if (h->resp_lost) h->lost_end = ts_ns;
      return h->ever_parsed ? 0 : SONDE_EPROTO;
    }
    finish_lost(h);
    http_parser_init(&h->resp, HTTP_RESPONSE);
    h->resp.data = h;
    h->resp_sync = true;
  }
  size_t done = n ? http_parser_execute(&h->resp, &resp_settings, (const char *)p, n) : 0;
  if (h->resp.upgrade) {
    h->dead = true; /* 101 Switching Protocols */
    return 0;
  }
  if (HTTP_PARSER_ERRNO(&h->resp) != HPE_OK || done != n) {
    resp_desync(h);
    return h->ever_parsed ? 0 : SONDE_EPROTO;
  }
  h->ever_parsed = true;
  if (missing && !resp_fill(h, missing)) resp_desync(h);
  return 0;
}

void hx_h1_close(hx_h1 *h, uint64_t ts_ns) {
  h->ts = ts_ns;
  finish_lost(h);
  /* A response delimited by the close ends here (http_parser: EOF is a zero-length execute). */
  if (h->resp_sync && !h->dead && h->resp_body) {
    bool eof_body = !(h->resp.flags & F_CHUNKED) && h->resp.content_length == ULLONG_MAX;
    if (eof_body) {
      http_parser_execute(&h->resp, &resp_settings, NULL, 0);
    } else if (h->head && h->head->req_done && h->status) {
      /* Cut before its last byte: answered, but reset. */
      finish(h, pop_head(h), h->status, h->resp_bytes, ts_ns, true);
    }
  }
  h->resp_body = false;
  h->resp_sync = false;
  drop_all(h, ts_ns);
}

void hx_h1_free(hx_h1 *h) {
  if (!h) return;
  drop_all(h, h->ts);
  free(h);
}

/* Unit tests of h2.c against bytes that nghttp2's own client and server sessions write to each
 * other (no hand-made frames): the capture is replayed into hx_h2 as the server's and as the
 * client's decoder, whole, cut into 1-byte feeds, truncated, and mixed with garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "hx.h"

/* ---- a client and a server session talking through buffers, the wire recorded ---- */

#define MAX_SEGS 8192
typedef struct seg {
  int from_client;
  size_t off, len;
} seg;

typedef struct wire {
  sonde_buf c2s, s2c; /* every byte each side wrote */
  seg segs[MAX_SEGS]; /* in the order written */
  size_t nseg;
  size_t c2s_read, s2c_read; /* how much the peer consumed */
} wire;

typedef struct srv_stream {
  char path[256];
  char code[8]; /* x-code request header: grpc-status to answer */
  size_t body;  /* response body bytes to send */
  size_t sent;
  bool grpc, reset;
} srv_stream;

typedef struct peer {
  wire *w;
  int is_client;
  srv_stream st[512];
  size_t pad; /* padding the server adds to each HEADERS/DATA frame */
} peer;

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud) {
  (void)s;
  (void)flags;
  peer *p = ud;
  wire *w = p->w;
  sonde_buf *b = p->is_client ? &w->c2s : &w->s2c;
  assert_true(w->nseg < MAX_SEGS);
  w->segs[w->nseg++] = (seg){p->is_client, b->len, len};
  assert_int_equal(sonde_buf_append(b, data, len), 0);
  return (ssize_t)len;
}

static srv_stream *sst(peer *p, int32_t id) {
  assert_true(id > 0 && (size_t)id < 2 * 512);
  return &p->st[id / 2];
}

static int begin_headers_cb(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)s;
  peer *p = ud;
  if (!p->is_client && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    memset(sst(p, f->hd.stream_id), 0, sizeof(srv_stream));
  return 0;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  (void)s;
  (void)flags;
  peer *p = ud;
  if (p->is_client || f->hd.type != NGHTTP2_HEADERS) return 0;
  srv_stream *st = sst(p, f->hd.stream_id);
  if (nl == 5 && !memcmp(name, ":path", 5) && vl < sizeof(st->path)) memcpy(st->path, value, vl);
  if (nl == 6 && !memcmp(name, "x-code", 6) && vl < sizeof(st->code)) memcpy(st->code, value, vl);
  if (nl == 12 && !memcmp(name, "content-type", 12)) st->grpc = true;
  return 0;
}

static ssize_t body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) {
  peer *p = ud;
  srv_stream *st = src->ptr;
  /* after the response headers went out: nghttp2 answers this with RST_STREAM */
  if (st->reset) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  size_t k = st->body - st->sent;
  if (k > len) k = len;
  memset(buf, 'x', k);
  st->sent += k;
  if (st->sent == st->body) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->grpc) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_nv tr[] = {{(uint8_t *)"grpc-status", (uint8_t *)st->code, 11, strlen(st->code),
                          NGHTTP2_NV_FLAG_NONE},
                         {(uint8_t *)"grpc-message", (uint8_t *)"m", 12, 1, NGHTTP2_NV_FLAG_NONE}};
      assert_int_equal(nghttp2_submit_trailer(s, id, tr, 2), 0);
    }
  }
  (void)p;
  return (ssize_t)k;
}

/* The server answers when a request ended: path "/s/<status>/<body bytes>[/reset]", or gRPC
 * (content-type set) with x-code as grpc-status in trailers and a 10-byte message. */
static int frame_recv_cb(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  peer *p = ud;
  if (p->is_client) return 0;
  if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
      !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  srv_stream *st = sst(p, f->hd.stream_id);
  char status[4] = "200";
  if (st->grpc) {
    st->body = 10;
  } else {
    int code = 200, n = 0;
    if (sscanf(st->path, "/s/%d/%d", &code, &n) < 1) code = 404;
    snprintf(status, sizeof(status), "%d", code);
    st->body = (size_t)n;
    st->reset = strstr(st->path, "/reset") != NULL;
  }
  nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE},
                     {(uint8_t *)"content-type",
                      (uint8_t *)(st->grpc ? "application/grpc" : "text/plain"), 12,
                      st->grpc ? 16 : 10, NGHTTP2_NV_FLAG_NONE},
                     {(uint8_t *)"server", (uint8_t *)"test/1.0", 6, 8, NGHTTP2_NV_FLAG_NONE}};
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = body_cb};
  assert_int_equal(nghttp2_submit_response(s, f->hd.stream_id, nv, 3,
                                           st->body || st->grpc || st->reset ? &dp : NULL),
                   0);
  return 0;
}

static ssize_t padding_cb(nghttp2_session *s, const nghttp2_frame *f, size_t max, void *ud) {
  (void)s;
  peer *p = ud;
  size_t want = f->hd.length + p->pad;
  return (ssize_t)(want < max ? want : max);
}

typedef struct pair {
  wire w;
  peer cp, sp;
  nghttp2_session *c, *s;
} pair;

static void pair_init(pair *pr, size_t pad, size_t client_table, size_t server_deflate_max) {
  memset(pr, 0, sizeof(*pr));
  pr->cp.w = pr->sp.w = &pr->w;
  pr->cp.is_client = 1;
  pr->sp.pad = pad;
  nghttp2_session_callbacks *cb;
  assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
  nghttp2_session_callbacks_set_send_callback(cb, send_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, begin_headers_cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, header_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, frame_recv_cb);
  if (pad) nghttp2_session_callbacks_set_select_padding_callback(cb, padding_cb);
  nghttp2_option *opt;
  assert_int_equal(nghttp2_option_new(&opt), 0);
  if (server_deflate_max)
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, server_deflate_max);
  nghttp2_option *copt;
  assert_int_equal(nghttp2_option_new(&copt), 0);
  nghttp2_option_set_peer_max_concurrent_streams(copt, 4000);
  assert_int_equal(nghttp2_session_client_new2(&pr->c, cb, &pr->cp, copt), 0);
  nghttp2_option_del(copt);
  assert_int_equal(nghttp2_session_server_new2(&pr->s, cb, &pr->sp, opt), 0);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry se[2] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
                                  {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, (uint32_t)client_table}};
  assert_int_equal(nghttp2_submit_settings(pr->c, NGHTTP2_FLAG_NONE, se, client_table ? 2 : 1), 0);
  nghttp2_settings_entry ss[1] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
  assert_int_equal(nghttp2_submit_settings(pr->s, NGHTTP2_FLAG_NONE, ss, 1), 0);
}

/* Runs both sessions until neither has anything to say. */
static void pump(pair *pr) {
  for (int i = 0; i < 10000; i++) {
    assert_int_equal(nghttp2_session_send(pr->c), 0);
    size_t k = pr->w.c2s.len - pr->w.c2s_read;
    if (k) {
      assert_int_equal(nghttp2_session_mem_recv(pr->s, pr->w.c2s.data + pr->w.c2s_read, k),
                       (ssize_t)k);
      pr->w.c2s_read += k;
    }
    assert_int_equal(nghttp2_session_send(pr->s), 0);
    size_t j = pr->w.s2c.len - pr->w.s2c_read;
    if (j) {
      assert_int_equal(nghttp2_session_mem_recv(pr->c, pr->w.s2c.data + pr->w.s2c_read, j),
                       (ssize_t)j);
      pr->w.s2c_read += j;
    }
    if (!k && !j && !nghttp2_session_want_write(pr->c) && !nghttp2_session_want_write(pr->s))
      return;
  }
  fail_msg("sessions did not settle");
}

static void pair_free(pair *pr) {
  nghttp2_session_del(pr->c);
  nghttp2_session_del(pr->s);
  sonde_buf_free(&pr->w.c2s);
  sonde_buf_free(&pr->w.s2c);
}

typedef struct reqbody {
  size_t len, sent;
} reqbody;

static ssize_t req_body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s;
  (void)id;
  (void)ud;
  reqbody *b = src->ptr;
  size_t k = b->len - b->sent;
  if (k > len) k = len;
  memset(buf, 'q', k);
  b->sent += k;
  if (b->sent == b->len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)k;
}

#define NV(n, v)                                                                                   \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

static unsigned n_requests;

static int32_t request(pair *pr, const char *method, const char *path, const char *extra_name,
                       const char *extra_value, reqbody *body) {
  nghttp2_nv nv[] = {
      NV(":method", method), NV(":scheme", "http"),         NV(":authority", "svc.local:8080"),
      NV(":path", path),     NV("user-agent", "h2-test/1"), NV("x", "")};
  size_t n = 5;
  if (extra_name) {
    nv[5].name = (uint8_t *)extra_name;
    nv[5].namelen = strlen(extra_name);
    nv[5].value = (uint8_t *)extra_value;
    nv[5].valuelen = strlen(extra_value);
    n = 6;
  }
  nghttp2_data_provider dp = {.source.ptr = body, .read_callback = req_body_cb};
  nghttp2_priority_spec ps; /* some requests carry a PRIORITY flag in their HEADERS */
  nghttp2_priority_spec_init(&ps, 0, 32 + (int32_t)n_requests++ % 2, 1);
  int32_t id =
      nghttp2_submit_request(pr->c, n_requests % 3 ? NULL : &ps, nv, n, body ? &dp : NULL, NULL);
  assert_true(id > 0);
  return id;
}

static int32_t grpc_request(pair *pr, const char *path, const char *code, reqbody *body) {
  nghttp2_nv nv[] = {NV(":method", "POST"),
                     NV(":scheme", "http"),
                     NV(":authority", "grpc.local:50051"),
                     NV(":path", path),
                     NV("content-type", "application/grpc+proto"),
                     NV("te", "trailers"),
                     NV("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                     NV("x-code", code)};
  nghttp2_data_provider dp = {.source.ptr = body, .read_callback = req_body_cb};
  int32_t id = nghttp2_submit_request(pr->c, NULL, nv, 8, &dp, NULL);
  assert_true(id > 0);
  return id;
}

/* ---- replaying the wire into the decoder ---- */

#define MAX_EX 2048
typedef struct got {
  size_t n;
  struct {
    hx_exchange ex;
    char method[16], path[256], query[64], authority[64], ua[64], tp[64], ct[64];
  } e[MAX_EX];
} got;

static void cp(char *dst, size_t cap, const char *s) {
  snprintf(dst, cap, "%s", s ? s : "-");
}

static void on_ex(void *ud, const hx_exchange *ex) {
  got *g = ud;
  assert_true(g->n < MAX_EX);
  g->e[g->n].ex = *ex;
  cp(g->e[g->n].method, 16, ex->method);
  cp(g->e[g->n].path, 256, ex->path);
  cp(g->e[g->n].query, 64, ex->query);
  cp(g->e[g->n].authority, 64, ex->authority);
  cp(g->e[g->n].ua, 64, ex->user_agent);
  cp(g->e[g->n].tp, 64, ex->traceparent);
  cp(g->e[g->n].ct, 64, ex->content_type);
  g->n++;
}

/* Feeds every segment in order (chunk: 0 whole, else that many bytes per feed); the timestamp
 * is the segment's index. Returns the first error. */
static int replay(const wire *w, bool server, size_t chunk, got *g) {
  hx_h2 *h = hx_h2_new(server, on_ex, g);
  assert_non_null(h);
  int rc = 0;
  for (size_t i = 0; i < w->nseg && !rc; i++) {
    const seg *s = &w->segs[i];
    const uint8_t *p = (s->from_client ? w->c2s.data : w->s2c.data) + s->off;
    enum hx_dir dir = (s->from_client == server) ? HX_INGRESS : HX_EGRESS;
    size_t step = chunk ? chunk : s->len;
    for (size_t o = 0; o < s->len && !rc; o += step) {
      size_t k = s->len - o < step ? s->len - o : step;
      rc = hx_h2_feed(h, dir, p + o, k, k, 1000 + i);
    }
  }
  if (!rc) hx_h2_close(h, 999999);
  hx_h2_free(h);
  return rc;
}

static int find(const got *g, uint32_t sid) {
  for (size_t i = 0; i < g->n; i++)
    if (g->e[i].ex.stream_id == sid) return (int)i;
  return -1;
}

/* Frames of `type` with `flag` in one direction's bytes (skip: the preface), to check that a
 * capture really exercises what a test is about. */
static size_t count_frames(const sonde_buf *b, size_t skip, int type, int flag) {
  size_t n = 0;
  for (size_t o = skip; o + 9 <= b->len;) {
    const uint8_t *p = b->data + o;
    size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
    if (p[3] == type && (p[4] & flag) == flag) n++;
    o += 9 + len;
  }
  return n;
}

static void test_detect(void **state) {
  (void)state;
  const char *pf = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  assert_true(hx_h2_detect((const uint8_t *)pf, 24));
  assert_true(hx_h2_detect((const uint8_t *)pf, 3));
  assert_false(hx_h2_detect((const uint8_t *)"GET / HTTP/1.1\r\n", 16));
  assert_false(hx_h2_detect((const uint8_t *)"PRX", 3));
  assert_false(hx_h2_detect((const uint8_t *)pf, 0));
}

/* Many requests multiplexed on one connection, in every feed size, from both sides. */
static void test_multiplexed(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 0, 0);
  reqbody b1 = {.len = 3000}, b2 = {.len = 70000};
  int32_t id1 = request(pr, "GET", "/s/200/5", NULL, NULL, NULL);
  int32_t id2 = request(pr, "POST", "/s/201/100000?x=1&y=2", NULL, NULL, &b1);
  int32_t id3 = request(pr, "GET", "/s/404/0", "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL);
  int32_t id4 = request(pr, "PUT", "/s/503/17", NULL, NULL, &b2);
  /* a 40 kB header (25 kB once huffman-coded): HEADERS and CONTINUATION */
  char *big = malloc(40001);
  memset(big, 'c', 40000);
  big[40000] = 0;
  int32_t id5 = request(pr, "GET", "/s/200/1", "cookie", big, NULL);
  pump(pr);
  free(big);
  assert_true(count_frames(&pr->w.c2s, 24, 9, 0) >= 1);
  assert_true(count_frames(&pr->w.c2s, 24, 1, 0x20) >= 1); /* HEADERS with PRIORITY */
  got *g = calloc(1, sizeof(*g));
  size_t chunks[] = {0, 1, 7, 4096};
  for (int side = 0; side < 2; side++) {
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
      memset(g, 0, sizeof(*g));
      assert_int_equal(replay(&pr->w, side == 0, chunks[c], g), 0);
      assert_int_equal(g->n, 5);
      int i5 = find(g, (uint32_t)id5);
      assert_true(i5 >= 0);
      assert_int_equal(g->e[i5].ex.status, 200);
      assert_string_equal(g->e[i5].authority, "svc.local:8080");
      int i1 = find(g, (uint32_t)id1), i2 = find(g, (uint32_t)id2), i3 = find(g, (uint32_t)id3),
          i4 = find(g, (uint32_t)id4);
      assert_true(i1 >= 0 && i2 >= 0 && i3 >= 0 && i4 >= 0);
      assert_int_equal(g->e[i1].ex.server, side == 0);
      assert_int_equal(g->e[i1].ex.proto, HX_HTTP2);
      assert_string_equal(g->e[i1].method, "GET");
      assert_string_equal(g->e[i1].path, "/s/200/5");
      assert_string_equal(g->e[i1].query, "-");
      assert_string_equal(g->e[i1].authority, "svc.local:8080");
      assert_string_equal(g->e[i1].ua, "h2-test/1");
      assert_int_equal(g->e[i1].ex.status, 200);
      assert_int_equal(g->e[i1].ex.resp_body_bytes, 5);
      assert_int_equal(g->e[i1].ex.req_body_bytes, 0);
      assert_int_equal(g->e[i1].ex.grpc_status, -1);
      assert_false(g->e[i1].ex.reset);
      assert_true(g->e[i1].ex.start_ns <= g->e[i1].ex.end_ns);
      assert_string_equal(g->e[i2].method, "POST");
      assert_string_equal(g->e[i2].path, "/s/201/100000");
      assert_string_equal(g->e[i2].query, "x=1&y=2");
      assert_int_equal(g->e[i2].ex.status, 201);
      assert_int_equal(g->e[i2].ex.req_body_bytes, 3000);
      assert_int_equal(g->e[i2].ex.resp_body_bytes, 100000);
      assert_int_equal(g->e[i3].ex.status, 404);
      assert_string_equal(g->e[i3].tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
      assert_int_equal(g->e[i4].ex.status, 503);
      assert_int_equal(g->e[i4].ex.req_body_bytes, 70000);
      assert_int_equal(g->e[i4].ex.resp_body_bytes, 17);
      /* the 100 kB answer needs several flow-control round trips: it ends after the small ones */
      assert_true(g->e[i2].ex.end_ns > g->e[i1].ex.end_ns);
    }
  }
  free(g);
  pair_free(pr);
  free(pr);
}

/* gRPC: trailers carry grpc-status; a server answering with padded frames. */
static void test_grpc_trailers_padding(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 13, 0, 0);
  reqbody b = {.len = 25}, b2 = {.len = 5};
  int32_t a = grpc_request(pr, "/helloworld.Greeter/SayHello", "0", &b);
  int32_t c = grpc_request(pr, "/helloworld.Greeter/SayHello", "14", &b2);
  pump(pr);
  assert_true(count_frames(&pr->w.s2c, 0, 0, 0x8) >= 2);       /* padded DATA */
  assert_true(count_frames(&pr->w.s2c, 0, 1, 0x8 | 0x1) >= 2); /* padded trailers */
  got *g = calloc(1, sizeof(*g));
  for (int side = 0; side < 2; side++) {
    for (size_t chunk = 0; chunk < 3; chunk++) {
      memset(g, 0, sizeof(*g));
      assert_int_equal(replay(&pr->w, side == 0, chunk, g), 0);
      assert_int_equal(g->n, 2);
      int ia = find(g, (uint32_t)a), ic = find(g, (uint32_t)c);
      assert_true(ia >= 0 && ic >= 0);
      assert_int_equal(g->e[ia].ex.proto, HX_GRPC);
      assert_string_equal(g->e[ia].method, "POST");
      assert_string_equal(g->e[ia].path, "/helloworld.Greeter/SayHello");
      assert_string_equal(g->e[ia].ct, "application/grpc+proto");
      assert_string_equal(g->e[ia].tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
      assert_int_equal(g->e[ia].ex.status, 200);
      assert_int_equal(g->e[ia].ex.grpc_status, 0);
      assert_int_equal(g->e[ic].ex.grpc_status, 14);
      /* padding is not body */
      assert_int_equal(g->e[ia].ex.req_body_bytes, 25);
      assert_int_equal(g->e[ia].ex.resp_body_bytes, 10);
      assert_int_equal(g->e[ic].ex.req_body_bytes, 5);
    }
  }
  free(g);
  pair_free(pr);
  free(pr);
}

/* The dynamic table carries headers from one request to the next, and a larger table announced
 * in SETTINGS is used by the peer's encoder after its ACK: both must be followed. */
static void test_dynamic_table_and_size(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 65536, 65536);
  char path[64];
  for (int i = 0; i < 40; i++) {
    snprintf(path, sizeof(path), "/s/%d/%d", 200 + i % 3, i);
    (void)request(pr, "GET", path, "x-long",
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL);
    pump(pr);
  }
  got *g = calloc(1, sizeof(*g));
  for (int side = 0; side < 2; side++) {
    memset(g, 0, sizeof(*g));
    assert_int_equal(replay(&pr->w, side == 0, 0, g), 0);
    assert_int_equal(g->n, 40);
    for (size_t i = 0; i < g->n; i++) {
      int k = (int)(g->e[i].ex.stream_id - 1) / 2;
      snprintf(path, sizeof(path), "/s/%d/%d", 200 + k % 3, k);
      assert_string_equal(g->e[i].path, path);
      assert_int_equal(g->e[i].ex.status, 200 + k % 3);
      assert_int_equal(g->e[i].ex.resp_body_bytes, (uint64_t)k);
      assert_string_equal(g->e[i].authority, "svc.local:8080");
    }
  }
  /* The server's dynamic table size update (65536) is refused by an inflater that was not told of
   * the client's SETTINGS: the same capture with that entry turned into 4096 must not decode. */
  uint8_t *c = pr->w.c2s.data + 24;
  assert_int_equal(c[3], 4); /* the client's first frame is its SETTINGS */
  size_t flen = (size_t)c[0] << 16 | (size_t)c[1] << 8 | c[2];
  bool patched = false;
  for (size_t o = 9; o + 6 <= 9 + flen; o += 6) {
    if (c[o] == 0 && c[o + 1] == 1) {
      c[o + 2] = 0, c[o + 3] = 0, c[o + 4] = 0x10, c[o + 5] = 0;
      patched = true;
    }
  }
  assert_true(patched);
  memset(g, 0, sizeof(*g));
  assert_int_equal(replay(&pr->w, true, 0, g), SONDE_EPROTO);
  free(g);
  pair_free(pr);
  free(pr);
}

/* RST_STREAM after the response headers: reported as reset with the status seen; a request
 * without an answer when the connection closes: reset, status 0. */
static void test_reset_and_close(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 0, 0);
  int32_t r = request(pr, "GET", "/s/200/50/reset", NULL, NULL, NULL);
  pump(pr);
  assert_int_equal(count_frames(&pr->w.s2c, 0, 3, 0), 1); /* RST_STREAM */
  /* a request the server never sees answered: only the client's bytes go into the decoder */
  reqbody big = {.len = 10};
  int32_t open_id = request(pr, "DELETE", "/pending", NULL, NULL, &big);
  assert_int_equal(nghttp2_session_send(pr->c), 0);
  got *g = calloc(1, sizeof(*g));
  assert_int_equal(replay(&pr->w, true, 0, g), 0);
  assert_int_equal(g->n, 2);
  int ir = find(g, (uint32_t)r), io = find(g, (uint32_t)open_id);
  assert_true(ir >= 0 && io >= 0);
  assert_true(g->e[ir].ex.reset);
  assert_int_equal(g->e[ir].ex.status, 200);
  assert_true(g->e[io].ex.reset);
  assert_int_equal(g->e[io].ex.status, 0);
  assert_string_equal(g->e[io].method, "DELETE");
  assert_int_equal(g->e[io].ex.end_ns, 999999);
  free(g);
  pair_free(pr);
  free(pr);
}

/* Calls the client cancels (RST_STREAM CANCEL before any response) are reported with the code;
 * a gRPC one gets the status gRPC maps it to: CANCELLED, or DEADLINE_EXCEEDED once its
 * grpc-timeout ran out (timestamps here are segment indexes: 1 ns apart, so "1n" has run out and
 * "99999999H" has not); REFUSED_STREAM is UNAVAILABLE. */
static void test_cancel(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 0, 0);
  const char *timeouts[] = {"99999999H", "1n", NULL}; /* the longest there is, and 1 ns */
  int32_t ids[4];
  reqbody bodies[3]; /* read by nghttp2_session_send after the loop */
  for (int i = 0; i < 3; i++) {
    nghttp2_nv nv[] = {NV(":method", "POST"),
                       NV(":scheme", "http"),
                       NV(":authority", "grpc.local:50051"),
                       NV(":path", "/pkg.Service/Slow"),
                       NV("content-type", "application/grpc"),
                       NV("grpc-timeout", timeouts[i] ? timeouts[i] : "")};
    bodies[i] = (reqbody){.len = 10};
    nghttp2_data_provider dp = {.source.ptr = &bodies[i], .read_callback = req_body_cb};
    ids[i] = nghttp2_submit_request(pr->c, NULL, nv, timeouts[i] ? 6 : 5, &dp, NULL);
    assert_true(ids[i] > 0);
  }
  ids[3] = request(pr, "GET", "/slow", NULL, NULL, NULL);
  assert_int_equal(nghttp2_session_send(pr->c), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(nghttp2_submit_rst_stream(pr->c, NGHTTP2_FLAG_NONE, ids[i],
                                               i == 2 ? NGHTTP2_REFUSED_STREAM : NGHTTP2_CANCEL),
                     0);
  assert_int_equal(nghttp2_session_send(pr->c), 0);
  assert_int_equal(count_frames(&pr->w.c2s, 24, 3, 0), 4); /* RST_STREAM */
  for (int side = 0; side < 2; side++) {
    got *g = calloc(1, sizeof(*g));
    assert_int_equal(replay(&pr->w, side, 0, g), 0);
    assert_int_equal(g->n, 4);
    int want_grpc[4] = {1, 4, 14, -1}, want_rst[4] = {8, 8, 7, 8};
    for (int i = 0; i < 4; i++) {
      int k = find(g, (uint32_t)ids[i]);
      assert_true(k >= 0);
      assert_true(g->e[k].ex.reset);
      assert_int_equal(g->e[k].ex.status, 0);
      assert_int_equal(g->e[k].ex.proto, i < 3 ? HX_GRPC : HX_HTTP2);
      assert_int_equal(g->e[k].ex.grpc_status, want_grpc[i]);
      assert_int_equal(g->e[k].ex.rst_code, want_rst[i]);
      assert_string_equal(g->e[k].ex.version, "2");
      assert_true(g->e[k].ex.end_ns < 999999); /* ended by the RST, not by the close */
    }
    free(g);
  }
  pair_free(pr);
  free(pr);
}

static size_t put_frame(uint8_t *out, int type, int flags, uint32_t sid, const uint8_t *p,
                        size_t n) {
  uint8_t h[9] = {(uint8_t)(n >> 16),   (uint8_t)(n >> 8),   (uint8_t)n,
                  (uint8_t)type,        (uint8_t)flags,      (uint8_t)(sid >> 24),
                  (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
  memcpy(out, h, 9);
  memcpy(out + 9, p, n);
  return 9 + n;
}

/* A closed stream id is not reopened (RFC 9113 5.1.1): HEADERS on stream 1 after stream 1 ended,
 * or after stream 3 opened, start no exchange; stream 3 (higher) does. Hand-made frames: no
 * conforming peer writes this. Header blocks use the static table only (":method GET",
 * ":scheme http", ":path /", ":status 200"), so HPACK state stays right whatever is dropped. */
static void test_stream_reopen(void **state) {
  (void)state;
  static const uint8_t req[] = {0x82, 0x86, 0x84}, resp[] = {0x88};
  const uint32_t order[] = {1, 1, 3, 1};
  for (int server = 0; server < 2; server++) {
    got *g = calloc(1, sizeof(*g));
    hx_h2 *h = hx_h2_new(server, on_ex, g);
    enum hx_dir cdir = server ? HX_INGRESS : HX_EGRESS, sdir = server ? HX_EGRESS : HX_INGRESS;
    assert_int_equal(
        hx_h2_feed(h, cdir, (const uint8_t *)"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, 24, 1), 0);
    uint64_t ts = 2;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
      uint8_t f[32];
      size_t n = put_frame(f, 1, 0x5, order[i], req, sizeof(req));
      assert_int_equal(hx_h2_feed(h, cdir, f, n, n, ts++), 0);
      n = put_frame(f, 1, 0x5, order[i], resp, sizeof(resp));
      assert_int_equal(hx_h2_feed(h, sdir, f, n, n, ts++), 0);
    }
    hx_h2_close(h, ts);
    hx_h2_free(h);
    assert_int_equal(g->n, 2);
    assert_int_equal(g->e[0].ex.stream_id, 1);
    assert_int_equal(g->e[1].ex.stream_id, 3);
    for (size_t i = 0; i < 2; i++) {
      assert_int_equal(g->e[i].ex.status, 200);
      assert_false(g->e[i].ex.reset);
      assert_int_equal(g->e[i].ex.rst_code, -1);
    }
    free(g);
  }
}

/* Bytes that were transferred but not captured: inside DATA they are skipped by length and the
 * exchange still completes with the right body size; inside a header block decoding stops with an
 * error and nothing is reported. */
static void test_truncation(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 0, 0);
  int32_t id = request(pr, "GET", "/s/200/40000", NULL, NULL, NULL);
  pump(pr);
  got *g = calloc(1, sizeof(*g));
  hx_h2 *h = hx_h2_new(true, on_ex, g);
  bool cut_data = false;
  for (size_t i = 0; i < pr->w.nseg; i++) {
    const seg *s = &pr->w.segs[i];
    const uint8_t *p = (s->from_client ? pr->w.c2s.data : pr->w.s2c.data) + s->off;
    enum hx_dir dir = s->from_client ? HX_INGRESS : HX_EGRESS;
    /* the first big server write starts with a DATA frame header: capture its header and 100
     * bytes of payload only */
    if (!s->from_client && !cut_data && s->len > 1000 && p[3] == 0 /* DATA */) {
      uint32_t flen = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
      if (flen + 9 <= s->len) {
        assert_int_equal(hx_h2_feed(h, dir, p, 109, flen + 9, i), 0);
        assert_int_equal(hx_h2_feed(h, dir, p + flen + 9, s->len - flen - 9, s->len - flen - 9, i),
                         0);
        cut_data = true;
        continue;
      }
    }
    assert_int_equal(hx_h2_feed(h, dir, p, s->len, s->len, i), 0);
  }
  assert_true(cut_data);
  assert_int_equal(g->n, 1);
  assert_int_equal(g->e[0].ex.stream_id, (uint32_t)id);
  assert_int_equal(g->e[0].ex.resp_body_bytes, 40000);
  assert_int_equal(g->e[0].ex.status, 200);
  hx_h2_free(h);

  /* Cut inside the request's HEADERS block: error, sticky, nothing reported even at close. */
  memset(g, 0, sizeof(*g));
  h = hx_h2_new(true, on_ex, g);
  int rc = 0;
  for (size_t i = 0; i < pr->w.nseg && !rc; i++) {
    const seg *s = &pr->w.segs[i];
    const uint8_t *p = (s->from_client ? pr->w.c2s.data : pr->w.s2c.data) + s->off;
    enum hx_dir dir = s->from_client ? HX_INGRESS : HX_EGRESS;
    if (s->from_client && s->len >= 9 && p[3] == 1 /* HEADERS */)
      rc = hx_h2_feed(h, dir, p, 12, s->len, i);
    else
      rc = hx_h2_feed(h, dir, p, s->len, s->len, i);
  }
  assert_int_equal(rc, SONDE_EPROTO);
  assert_int_equal(hx_h2_feed(h, HX_EGRESS, (const uint8_t *)"x", 1, 1, 0), SONDE_EPROTO);
  hx_h2_close(h, 5);
  assert_int_equal(g->n, 0);
  hx_h2_free(h);
  free(g);
  pair_free(pr);
  free(pr);
}

/* Not HTTP/2, or corrupt: an error and no exchange. */
static void test_garbage(void **state) {
  (void)state;
  got *g = calloc(1, sizeof(*g));
  hx_h2 *h = hx_h2_new(true, on_ex, g);
  const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(hx_h2_feed(h, HX_INGRESS, (const uint8_t *)get, strlen(get), strlen(get), 1),
                   SONDE_EPROTO);
  hx_h2_free(h);
  /* a valid preface then a HEADERS frame whose block is random bytes */
  srand(7);
  int errors = 0;
  for (int round = 0; round < 200; round++) {
    h = hx_h2_new(true, on_ex, g);
    uint8_t buf[24 + 9 + 64];
    memcpy(buf, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    uint8_t f[9] = {0, 0, 64, 1, 0x5, 0, 0, 0, 1};
    memcpy(buf + 24, f, 9);
    for (int i = 0; i < 64; i++)
      buf[33 + i] = (uint8_t)rand();
    int rc = hx_h2_feed(h, HX_INGRESS, buf, sizeof(buf), sizeof(buf), 1);
    if (rc) errors++;
    hx_h2_close(h, 2);
    hx_h2_free(h);
  }
  /* random blocks rarely decode to both :method and :path, and never become an exchange with
   * a response */
  for (size_t i = 0; i < g->n; i++) {
    assert_true(g->e[i].ex.reset);
    assert_int_equal(g->e[i].ex.status, 0);
  }
  assert_true(errors > 150);
  /* an empty header block after a pad length of 0: valid, decodes to nothing */
  h = hx_h2_new(true, on_ex, g);
  uint8_t empty[24 + 10];
  memcpy(empty, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
  memcpy(empty + 24, (uint8_t[]){0, 0, 1, 1, 0xC, 0, 0, 0, 1, 0}, 10);
  assert_int_equal(hx_h2_feed(h, HX_INGRESS, empty, sizeof(empty), sizeof(empty), 1), 0);
  hx_h2_free(h);
  /* CONTINUATION without a HEADERS before it */
  h = hx_h2_new(false, on_ex, g);
  uint8_t cont[9] = {0, 0, 0, 9, 0x4, 0, 0, 0, 1};
  assert_int_equal(hx_h2_feed(h, HX_INGRESS, cont, 9, 9, 1), SONDE_EPROTO);
  hx_h2_free(h);
  free(g);
}

/* The open-stream table is bounded: streams past the cap are not tracked, the others are. */
static void test_stream_cap(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 0, 0);
  /* 1100 requests reach the server before any answer goes back */
  reqbody bodies[1100];
  for (int i = 0; i < 1100; i++) {
    bodies[i] = (reqbody){.len = 1};
    (void)request(pr, "GET", "/s/200/1", NULL, NULL, &bodies[i]);
  }
  assert_int_equal(nghttp2_session_send(pr->c), 0);
  got *g = calloc(1, sizeof(*g));
  hx_h2 *h = hx_h2_new(true, on_ex, g);
  assert_int_equal(hx_h2_feed(h, HX_INGRESS, pr->w.c2s.data, pr->w.c2s.len, pr->w.c2s.len, 1), 0);
  assert_int_equal(hx_h2_refused(h), 1100 - 1024);
  hx_h2_close(h, 2);
  assert_int_equal(g->n, 1024);
  hx_h2_free(h);
  free(g);
  pair_free(pr);
  free(pr);
}

/* ---- sessions of real peers: the fuzz seeds recorded by tests/fuzz/corpus/h2/.record.py ---- */

typedef struct want {
  uint32_t sid;
  const char *method, *path, *query;
  int status, grpc_status;
  uint64_t req, resp;
  bool traceparent;
  int rst; /* the RST_STREAM code that ended it; 0: it was not reset */
} want;

/* Replays a seed (the fuzz target's record format) and returns the first error. */
static int replay_seed(const char *name, got *g) {
  char path[4096];
  const char *src = __FILE__; /* .../receivers/ebpf_http/h2_test.c */
  const char *cut = strstr(src, "receivers/ebpf_http/");
  assert_non_null(cut);
  snprintf(path, sizeof(path), "%.*stests/fuzz/corpus/h2/%s", (int)(cut - src), src, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static uint8_t d[1 << 20];
  size_t size = fread(d, 1, sizeof(d), f);
  fclose(f);
  assert_true(size > 1);
  bool server = d[0] & 1;
  hx_h2 *h = hx_h2_new(server, on_ex, g);
  size_t o = 1;
  int rc = 0;
  while (o + 3 <= size && !rc) {
    int fl = d[o];
    size_t len = (size_t)d[o + 1] << 8 | d[o + 2], lost = 0;
    o += 3;
    if (fl & 2) {
      lost = (size_t)d[o] << 8 | d[o + 1];
      o += 2;
    }
    assert_true(o + len <= size);
    enum hx_dir dir = ((fl & 1) == server) ? HX_EGRESS : HX_INGRESS;
    rc = hx_h2_feed(h, dir, d + o, len, len + lost, o);
    o += len;
  }
  if (!rc) hx_h2_close(h, 0);
  hx_h2_free(h);
  return rc;
}

static void check_seed(const char *name, const want *w, size_t n, size_t total) {
  got *g = calloc(1, sizeof(*g));
  assert_int_equal(replay_seed(name, g), 0);
  assert_int_equal(g->n, total);
  for (size_t i = 0; i < n; i++) {
    int k = find(g, w[i].sid);
    assert_true(k >= 0);
    assert_int_equal(g->e[k].ex.reset, w[i].rst != 0);
    assert_int_equal(g->e[k].ex.rst_code, w[i].rst ? w[i].rst : -1);
    assert_string_equal(g->e[k].method, w[i].method);
    assert_string_equal(g->e[k].path, w[i].path);
    assert_string_equal(g->e[k].query, w[i].query ? w[i].query : "-");
    assert_int_equal(g->e[k].ex.status, w[i].status);
    assert_int_equal(g->e[k].ex.grpc_status, w[i].grpc_status);
    assert_int_equal(g->e[k].ex.req_body_bytes, w[i].req);
    assert_int_equal(g->e[k].ex.resp_body_bytes, w[i].resp);
    assert_int_equal(strcmp(g->e[k].tp, "-") != 0, w[i].traceparent);
    assert_int_equal(g->e[k].ex.proto, w[i].grpc_status >= 0 ? HX_GRPC : HX_HTTP2);
  }
  free(g);
}

/* grpcio client and server (python3-grpcio): unary calls answered OK, UNAVAILABLE (abort) and
 * UNIMPLEMENTED (trailers-only), a server stream of three messages; bodies are the gRPC
 * length-prefixed messages (grpc-js below). nghttp against nghttpd: multiplexed GETs (a 404 with a
 * query), a 40 kB upload, padding with a 16 KiB header table, a 30 kB cookie in CONTINUATION;
 * h2load with 5 requests in flight. Each from the server's side, the client's and in 1-byte feeds.
 */
static void test_real_sessions(void **state) {
  (void)state;
  static const want grpc[] = {
      {1, "POST", "/helloworld.Greeter/SayHello", NULL, 200, 0, 10, 16, false, 0},
      {3, "POST", "/helloworld.Greeter/SayHello", NULL, 200, 0, 10, 16, true, 0},
      {5, "POST", "/helloworld.Greeter/SayHello", NULL, 200, 14, 9, 0, false, 0},
      {7, "POST", "/helloworld.Greeter/Stream", NULL, 200, 0, 6, 33, false, 0},
      {9, "POST", "/helloworld.Greeter/Missing", NULL, 200, 12, 6, 0, false, 0},
  };
  static const want mux[] = {
      {13, "GET", "/small", NULL, 200, -1, 0, 12, false, 0},
      {15, "GET", "/big", NULL, 200, -1, 0, 40000, false, 0},
      {17, "GET", "/index.html", NULL, 200, -1, 0, 700, false, 0},
      {19, "GET", "/missing", "q=1", 404, -1, 0, 148, false, 0},
  };
  static const want upload[] = {{13, "POST", "/small", NULL, 200, -1, 40000, 12, false, 0}};
  static const want padded[] = {{13, "GET", "/small", NULL, 200, -1, 0, 12, true, 0},
                                {15, "GET", "/index.html", NULL, 200, -1, 0, 700, true, 0}};
  static const want cont[] = {{13, "GET", "/small", NULL, 200, -1, 0, 12, false, 0}};
  static const want h2load[] = {{1, "GET", "/small", NULL, 200, -1, 0, 12, false, 0},
                                {39, "GET", "/small", NULL, 200, -1, 0, 12, false, 0}};
  /* @grpc/grpc-js (Node's HTTP/2): 10 concurrent unary calls, one answered NOT_FOUND, and a
   * bidirectional stream of 3 messages each way */
  static const want grpcjs[] = {
      {1, "POST", "/helloworld.Greeter/SayHello", NULL, 200, 0, 7, 10, false, 0},
      {7, "POST", "/helloworld.Greeter/SayHello", NULL, 200, 5, 9, 0, false, 0},
      {19, "POST", "/helloworld.Greeter/SayHello", NULL, 200, 0, 7, 10, false, 0},
      {21, "POST", "/helloworld.Greeter/Chat", NULL, 200, 0, 21, 27, false, 0},
  };
  /* grpcio: a call the client cancelled (RST_STREAM CANCEL: CANCELLED), one past its 100 ms
   * deadline (CANCEL too; the replay's timestamps are byte offsets, so it reads as CANCELLED
   * here), then one answered on the same connection */
  static const want cancel[] = {
      {1, "POST", "/pkg.Service/Slow", NULL, 0, 1, 14, 0, false, 8},
      {3, "POST", "/pkg.Service/Slow", NULL, 0, 1, 13, 0, false, 8},
      {5, "POST", "/pkg.Service/Slow", NULL, 200, 0, 7, 12, false, 0},
  };
  static const char *const sides[] = {"server", "client", "server-1byte"};
  char name[64];
  for (int i = 0; i < 3; i++) {
#define SEED(prefix, w, total)                                                                     \
  snprintf(name, sizeof(name), "%s-%s", prefix, sides[i]);                                         \
  check_seed(name, w, sizeof(w) / sizeof(w[0]), total)
    SEED("grpc", grpc, 5);
    SEED("grpc-js", grpcjs, 11);
    SEED("nghttp-multiplexed", mux, 4);
    SEED("nghttp-upload", upload, 1);
    SEED("nghttp-padded-table", padded, 2);
    SEED("nghttp-continuation", cont, 1);
    SEED("h2load", h2load, 20);
    SEED("grpc-cancel", cancel, 3);
#undef SEED
  }
  /* reads and writes cut to 4 KiB: the exchanges before the first lost frame header, then an
   * error */
  got *g = calloc(1, sizeof(*g));
  assert_int_equal(replay_seed("nghttp-multiplexed-truncated", g), SONDE_EPROTO);
  for (size_t i = 0; i < g->n; i++)
    assert_false(g->e[i].ex.reset);
  free(g);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Cost of decoding one typical unary gRPC call (both directions, steady dynamic table). */
static void test_bench(void **state) {
  (void)state;
  pair *pr = calloc(1, sizeof(*pr));
  pair_init(pr, 0, 0, 0);
  size_t start_seg = 0, start_c = 0, start_s = 0;
  reqbody b[201];
  for (int i = 0; i < 201; i++) {
    if (i == 1) {
      start_seg = pr->w.nseg;
      start_c = pr->w.c2s.len;
      start_s = pr->w.s2c.len;
    }
    b[i] = (reqbody){.len = 30};
    (void)grpc_request(pr, "/helloworld.Greeter/SayHello", "0", &b[i]);
    pump(pr);
  }
  got *g = calloc(1, sizeof(*g));
  const int reps = 50;
  double t0 = now_s();
  size_t feeds = 0;
  for (int r = 0; r < reps; r++) {
    g->n = 0;
    hx_h2 *h = hx_h2_new(true, on_ex, g);
    for (size_t i = 0; i < pr->w.nseg; i++) {
      const seg *s = &pr->w.segs[i];
      const uint8_t *p = (s->from_client ? pr->w.c2s.data : pr->w.s2c.data) + s->off;
      assert_int_equal(hx_h2_feed(h, s->from_client ? HX_INGRESS : HX_EGRESS, p, s->len, s->len, i),
                       0);
      if (i >= start_seg) feeds++;
    }
    assert_int_equal(g->n, 201);
    hx_h2_free(h);
  }
  double dt = now_s() - t0;
  printf("# h2: %.0f ns per gRPC call (%zu+%zu bytes, %.1f feeds), %.0f ns per feed\n",
         dt * 1e9 / (reps * 201.0), (pr->w.c2s.len - start_c) / 200,
         (pr->w.s2c.len - start_s) / 200, (double)feeds / (reps * 200.0), dt * 1e9 / (double)feeds);
  free(g);
  pair_free(pr);
  free(pr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_detect),
      cmocka_unit_test(test_multiplexed),
      cmocka_unit_test(test_grpc_trailers_padding),
      cmocka_unit_test(test_dynamic_table_and_size),
      cmocka_unit_test(test_reset_and_close),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_stream_reopen),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_stream_cap),
      cmocka_unit_test(test_real_sessions),
      cmocka_unit_test(test_bench),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

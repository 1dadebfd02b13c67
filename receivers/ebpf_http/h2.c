/* HTTP/2 and gRPC decoding of one connection from the bytes its process read and wrote (hx.h).
 *
 * Each direction has its own frame reader and its own HPACK inflater (nghttp2's), fed as the
 * bytes come, in any cut: frame headers and the fixed prefixes of HEADERS/PUSH_PROMISE are
 * reassembled across feeds, header block fragments are streamed into the inflater, DATA is only
 * counted. The request direction (the client's bytes) opens streams; the response direction's
 * END_STREAM (or a RST_STREAM from either side) finishes one and reports it. Bytes that were
 * transferred but not captured (total > n) are skipped by frame length while they fall inside a
 * DATA or control frame's payload; inside a header block, or across a frame header, the HPACK or
 * framing state is lost and the decoder fails for good (nothing is guessed). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "hx.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define H2_MAX_STREAMS 1024 /* open streams tracked per connection; more are ignored */
#define H2_STREAM_BUF 8192  /* bytes of kept header values per stream */
#define H2_MAX_VALUE 2048   /* one kept header value (longer ones are cut) */
#define H2_PENDING 16       /* SETTINGS frames awaiting their ACK, per direction */

enum {
  F_DATA = 0,
  F_HEADERS = 1,
  F_PRIORITY = 2,
  F_RST = 3,
  F_SETTINGS = 4,
  F_PUSH = 5,
  F_PING = 6,
  F_GOAWAY = 7,
  F_WINDOW = 8,
  F_CONT = 9
};
enum {
  FL_END_STREAM = 0x1,
  FL_ACK = 0x1,
  FL_END_HEADERS = 0x4,
  FL_PADDED = 0x8,
  FL_PRIORITY = 0x20
};

/* Kept header values of a stream, as offsets into buf (-1: absent). */
enum { V_METHOD, V_PATH, V_QUERY, V_AUTHORITY, V_UA, V_TRACEPARENT, V_CTYPE, V_TIMEOUT, V_N };

typedef struct h2_stream {
  uint32_t id;
  uint64_t start_ns;
  int status, grpc_status;
  int rst_code; /* of the RST_STREAM that ended it; -1: none */
  uint64_t req_bytes, resp_bytes;
  int32_t off[V_N];
  char *buf;
  size_t len, cap;
} h2_stream;

/* Reader state of one direction. */
typedef struct h2_dir {
  nghttp2_hd_inflater *inf;
  size_t preface; /* preface bytes still expected (client direction only) */
  uint8_t hdr[9];
  size_t hdr_have; /* bytes of the current frame header; 9 once it is complete */
  uint32_t flen, sid;
  uint8_t type, flags;
  size_t left;    /* payload bytes of the current frame not yet consumed */
  uint8_t pre[8]; /* fixed prefix: pad length, priority, promised id, or a control payload */
  size_t pre_want, pre_have;
  size_t pad;        /* trailing padding of the current frame */
  uint64_t frame_ts; /* when the current frame's header arrived */
  bool finaled;      /* the current frame's fragment was given to the inflater as final */
  /* header block in progress (HEADERS/PUSH_PROMISE then CONTINUATION) */
  bool in_block, block_end_stream, block_discard;
  uint32_t block_sid;
  uint8_t settings[6]; /* a SETTINGS entry being reassembled */
  size_t settings_have;
  uint32_t table_size; /* HEADER_TABLE_SIZE of the SETTINGS frame being read; UINT32_MAX: none */
  uint32_t pending[H2_PENDING]; /* this side's sent SETTINGS (their table size) awaiting ACK */
  size_t npending;
} h2_dir;

struct hx_h2 {
  bool server;
  hx_exchange_cb cb;
  void *ud;
  int err;
  h2_dir d[2];
  h2_stream **streams;
  size_t nstreams, streams_cap;
  uint32_t refused; /* streams not tracked because the table was full */
  uint32_t max_sid; /* the highest stream id the client opened: lower ids are closed for good */
};

static int client_dir(const hx_h2 *h) {
  return h->server ? HX_INGRESS : HX_EGRESS;
}

bool hx_h2_detect(const uint8_t *p, size_t n) {
  if (!p || n == 0) return false;
  return memcmp(p, H2_PREFACE, n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN) == 0;
}

hx_h2 *hx_h2_new(bool server, hx_exchange_cb cb, void *ud) {
  hx_h2 *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->server = server;
  h->cb = cb;
  h->ud = ud;
  for (int i = 0; i < 2; i++) {
    if (nghttp2_hd_inflate_new(&h->d[i].inf) != 0) {
      hx_h2_free(h);
      return NULL;
    }
    h->d[i].table_size = UINT32_MAX;
  }
  h->d[client_dir(h)].preface = H2_PREFACE_LEN;
  return h;
}

static void stream_free(h2_stream *s) {
  if (!s) return;
  free(s->buf);
  free(s);
}

void hx_h2_free(hx_h2 *h) {
  if (!h) return;
  for (int i = 0; i < 2; i++)
    if (h->d[i].inf) nghttp2_hd_inflate_del(h->d[i].inf);
  for (size_t i = 0; i < h->nstreams; i++)
    stream_free(h->streams[i]);
  free(h->streams);
  free(h);
}

static size_t stream_index(const hx_h2 *h, uint32_t id) {
  for (size_t i = h->nstreams; i-- > 0;)
    if (h->streams[i]->id == id) return i;
  return SIZE_MAX;
}

static h2_stream *stream_find(const hx_h2 *h, uint32_t id) {
  size_t i = stream_index(h, id);
  return i == SIZE_MAX ? NULL : h->streams[i];
}

static void stream_remove(hx_h2 *h, h2_stream *s) {
  size_t i = stream_index(h, s->id);
  if (i != SIZE_MAX) h->streams[i] = h->streams[--h->nstreams];
  stream_free(s);
}

/* A new request stream, or NULL when the table is full (the stream is then ignored). */
static h2_stream *stream_open(hx_h2 *h, uint32_t id, uint64_t ts) {
  if (h->nstreams >= H2_MAX_STREAMS) {
    h->refused++;
    return NULL;
  }
  if (h->nstreams == h->streams_cap) {
    size_t cap = h->streams_cap ? h->streams_cap * 2 : 8;
    h2_stream **v = realloc(h->streams, cap * sizeof(*v));
    if (!v) return NULL;
    h->streams = v;
    h->streams_cap = cap;
  }
  h2_stream *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->id = id;
  s->start_ns = ts;
  s->grpc_status = -1;
  s->rst_code = -1;
  for (int i = 0; i < V_N; i++)
    s->off[i] = -1;
  h->streams[h->nstreams++] = s;
  return s;
}

static void stream_keep(h2_stream *s, int which, const uint8_t *v, size_t n) {
  if (s->off[which] >= 0) return; /* the first value wins */
  if (n > H2_MAX_VALUE) n = H2_MAX_VALUE;
  if (s->len + n + 1 > H2_STREAM_BUF) return;
  if (s->len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->len + n + 1)
      cap *= 2;
    if (cap > H2_STREAM_BUF) cap = H2_STREAM_BUF;
    char *b = realloc(s->buf, cap);
    if (!b) return;
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, v, n);
  s->buf[s->len + n] = '\0';
  s->off[which] = (int32_t)s->len;
  s->len += n + 1;
}

static const char *sv(const h2_stream *s, int which) {
  return s->off[which] < 0 ? NULL : s->buf + s->off[which];
}

/* grpc-timeout "<1-8 digits><H|M|S|m|u|n>" in ns; -1 when absent or malformed. */
static int64_t grpc_timeout_ns(const char *v) {
  if (!v) return -1;
  size_t n = strlen(v);
  if (n < 2 || n > 9) return -1;
  int64_t x = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  switch (v[n - 1]) {
  case 'H': /* 8 digits of hours overflow int64 nanoseconds: a deadline nobody reaches */
    return x > INT64_MAX / 3600000000000 ? INT64_MAX : x * 3600000000000;
  case 'M':
    return x * 60000000000;
  case 'S':
    return x * 1000000000;
  case 'm':
    return x * 1000000;
  case 'u':
    return x * 1000;
  case 'n':
    return x;
  default:
    return -1;
  }
}

/* The gRPC status a call ended by RST_STREAM has, per gRPC's HTTP/2 protocol mapping: CANCEL is
 * CANCELLED, or DEADLINE_EXCEEDED when it came once the call's grpc-timeout had run out. */
static int grpc_status_of_rst(const h2_stream *s, uint64_t elapsed_ns) {
  switch (s->rst_code) {
  case 0x7:    /* REFUSED_STREAM */
    return 14; /* UNAVAILABLE */
  case 0x8: {  /* CANCEL */
    /* The caller's deadline runs from before its HEADERS went out: 1 ms and 2% of slack. */
    int64_t t = grpc_timeout_ns(sv(s, V_TIMEOUT));
    return t >= 0 && (int64_t)elapsed_ns + 1000000 + t / 50 >= t ? 4 : 1;
  }
  case 0xb:   /* ENHANCE_YOUR_CALM */
    return 8; /* RESOURCE_EXHAUSTED */
  case 0xc:   /* INADEQUATE_SECURITY */
    return 7; /* PERMISSION_DENIED */
  case 0x0:
  case 0x1:
  case 0x2:
  case 0x3:
  case 0x4:
  case 0x6:
  case 0x9:
  case 0xa:
    return 13; /* INTERNAL */
  default:     /* STREAM_CLOSED and codes gRPC does not map */
    return 2;  /* UNKNOWN */
  }
}

static void report(hx_h2 *h, h2_stream *s, bool reset, uint64_t ts) {
  hx_exchange ex = {0};
  const char *ct = sv(s, V_CTYPE);
  ex.proto = ct && strncmp(ct, "application/grpc", 16) == 0 ? HX_GRPC : HX_HTTP2;
  ex.server = h->server;
  ex.reset = reset;
  ex.start_ns = s->start_ns;
  ex.end_ns = ts >= s->start_ns ? ts : s->start_ns;
  ex.method = sv(s, V_METHOD);
  ex.path = sv(s, V_PATH);
  ex.query = sv(s, V_QUERY);
  ex.authority = sv(s, V_AUTHORITY);
  ex.user_agent = sv(s, V_UA);
  ex.traceparent = sv(s, V_TRACEPARENT);
  ex.content_type = ct;
  ex.status = s->status;
  ex.grpc_status = s->grpc_status;
  ex.rst_code = s->rst_code;
  ex.version = "2";
  if (ex.proto == HX_GRPC && ex.grpc_status < 0 && s->rst_code >= 0)
    ex.grpc_status = grpc_status_of_rst(s, ex.end_ns - ex.start_ns);
  ex.req_body_bytes = s->req_bytes;
  ex.resp_body_bytes = s->resp_bytes;
  ex.stream_id = s->id;
  /* A stream whose request headers never decoded into a method and path is not an exchange. */
  if (ex.method && ex.path && h->cb) h->cb(h->ud, &ex);
  stream_remove(h, s);
}

static int parse_int(const uint8_t *v, size_t n, int max) {
  if (n == 0 || n > 9) return -1;
  int x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x <= max ? x : -1;
}

static bool name_is(const nghttp2_nv *nv, const char *name) {
  size_t n = strlen(name);
  return nv->namelen == n && memcmp(nv->name, name, n) == 0;
}

/* One decoded header field of the block in progress in direction `dir`. */
static void on_header(hx_h2 *h, int dir, const nghttp2_nv *nv) {
  h2_dir *d = &h->d[dir];
  if (d->block_discard) return;
  h2_stream *s = stream_find(h, d->block_sid);
  if (!s) return;
  if (dir == client_dir(h)) {
    if (name_is(nv, ":method")) {
      stream_keep(s, V_METHOD, nv->value, nv->valuelen);
    } else if (name_is(nv, ":path")) {
      const uint8_t *q = memchr(nv->value, '?', nv->valuelen);
      size_t plen = q ? (size_t)(q - nv->value) : nv->valuelen;
      stream_keep(s, V_PATH, nv->value, plen);
      if (q) stream_keep(s, V_QUERY, q + 1, nv->valuelen - plen - 1);
    } else if (name_is(nv, ":authority") || name_is(nv, "host")) {
      stream_keep(s, V_AUTHORITY, nv->value, nv->valuelen);
    } else if (name_is(nv, "user-agent")) {
      stream_keep(s, V_UA, nv->value, nv->valuelen);
    } else if (name_is(nv, "traceparent")) {
      stream_keep(s, V_TRACEPARENT, nv->value, nv->valuelen);
    } else if (name_is(nv, "content-type")) {
      stream_keep(s, V_CTYPE, nv->value, nv->valuelen);
    } else if (name_is(nv, "grpc-timeout")) {
      stream_keep(s, V_TIMEOUT, nv->value, nv->valuelen);
    }
  } else {
    if (name_is(nv, ":status")) {
      int st = parse_int(nv->value, nv->valuelen, 999);
      if (st >= 200) s->status = st; /* 1xx are interim */
    } else if (name_is(nv, "grpc-status")) {
      s->grpc_status = parse_int(nv->value, nv->valuelen, 999);
    }
  }
}

/* Inflates `n` bytes of the header block fragment; `final`: they end the block. */
static int inflate(hx_h2 *h, int dir, const uint8_t *p, size_t n, bool final) {
  h2_dir *d = &h->d[dir];
  static const uint8_t none[1];
  if (!p) p = none; /* an empty final call */
  for (;;) {
    nghttp2_nv nv;
    int fl = 0;
    ssize_t rv = nghttp2_hd_inflate_hd2(d->inf, &nv, &fl, p, n, final);
    if (rv < 0) return rv == NGHTTP2_ERR_NOMEM ? SONDE_ENOMEM : SONDE_EPROTO;
    p += rv;
    n -= (size_t)rv;
    if (fl & NGHTTP2_HD_INFLATE_EMIT) on_header(h, dir, &nv);
    if (fl & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(d->inf);
      return 0;
    }
    if (!(fl & NGHTTP2_HD_INFLATE_EMIT) && n == 0) return 0;
  }
}

/* The header block of direction `dir` is complete. */
static void block_done(hx_h2 *h, int dir, uint64_t ts) {
  h2_dir *d = &h->d[dir];
  d->in_block = false;
  if (d->block_discard) return;
  h2_stream *s = stream_find(h, d->block_sid);
  if (!s || !d->block_end_stream) return;
  if (dir != client_dir(h)) report(h, s, false, ts);
}

/* The HEADERS (or PUSH_PROMISE) frame header of direction `dir` was read. */
static int block_start(hx_h2 *h, int dir) {
  h2_dir *d = &h->d[dir];
  if (d->sid == 0) return SONDE_EPROTO;
  d->in_block = true;
  d->block_sid = d->sid;
  d->block_end_stream = d->type == F_HEADERS && (d->flags & FL_END_STREAM);
  d->block_discard = d->type == F_PUSH; /* pushed requests are decoded for HPACK, not kept */
  /* A stream id at or below the highest one opened is closed (RFC 9113 5.1.1): HEADERS on it are
   * trailers of a stream still open, or a protocol error, never a new request. */
  if (d->type == F_HEADERS && dir == client_dir(h) && (d->sid & 1) && d->sid > h->max_sid) {
    h->max_sid = d->sid;
    (void)stream_open(h, d->sid, d->frame_ts);
  }
  return 0;
}

static void settings_entry(h2_dir *d, const uint8_t *e) {
  uint16_t id = (uint16_t)(e[0] << 8 | e[1]);
  uint32_t v = (uint32_t)e[2] << 24 | (uint32_t)e[3] << 16 | (uint32_t)e[4] << 8 | e[5];
  if (id == NGHTTP2_SETTINGS_HEADER_TABLE_SIZE) d->table_size = v;
}

/* A SETTINGS frame of direction `dir` ended (its payload was all read). */
static int settings_done(hx_h2 *h, int dir) {
  h2_dir *d = &h->d[dir];
  if (d->flags & FL_ACK) {
    /* This side acknowledges the other side's oldest SETTINGS: from here on its encoder uses the
     * table size the other side's decoder announced, so our inflater of this direction does. */
    h2_dir *o = &h->d[dir ^ 1];
    if (o->npending == 0) return 0;
    uint32_t v = o->pending[0];
    memmove(o->pending, o->pending + 1, (o->npending - 1) * sizeof(o->pending[0]));
    o->npending--;
    if (v != UINT32_MAX && nghttp2_hd_inflate_change_table_size(d->inf, v) != 0)
      return SONDE_EPROTO;
    return 0;
  }
  if (d->npending == H2_PENDING) return SONDE_EPROTO;
  d->pending[d->npending++] = d->table_size;
  d->table_size = UINT32_MAX;
  return 0;
}

static void rst_stream(hx_h2 *h, uint32_t sid, uint32_t code, uint64_t ts) {
  h2_stream *s = stream_find(h, sid);
  if (!s) return;
  s->rst_code = code > 0xffff ? 0xffff : (int)code;
  report(h, s, true, ts);
}

static void goaway(hx_h2 *h, int dir, uint32_t last) {
  /* Streams above the last one the GOAWAY's sender processed were never handled: the client
   * retries them elsewhere, so they are dropped, not reported. Only the server's GOAWAY says
   * anything about client streams. */
  if (dir == client_dir(h)) return;
  for (size_t i = h->nstreams; i-- > 0;)
    if (h->streams[i]->id > last) stream_remove(h, h->streams[i]);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The fixed prefix of the current frame's payload is complete: interpret it. */
static int prefix_done(hx_h2 *h, int dir) {
  h2_dir *d = &h->d[dir];
  size_t i = 0;
  if (d->type == F_DATA || d->type == F_HEADERS || d->type == F_PUSH) {
    if (d->flags & FL_PADDED) d->pad = d->pre[i++];
    /* pad counts from the payload left after the prefix */
    if (d->pad > d->left) return SONDE_EPROTO;
  }
  switch (d->type) {
  case F_DATA: {
    h2_stream *s = stream_find(h, d->sid);
    if (s) {
      uint64_t body = d->left - d->pad;
      if (dir == client_dir(h))
        s->req_bytes += body;
      else
        s->resp_bytes += body;
    }
    return 0;
  }
  case F_RST:
    rst_stream(h, d->sid, be32(d->pre), d->frame_ts);
    return 0;
  case F_GOAWAY:
    goaway(h, dir, be32(d->pre) & 0x7fffffffu);
    return 0;
  default:
    return 0;
  }
}

/* The current frame of direction `dir` ended at ts. */
static int frame_done(hx_h2 *h, int dir, uint64_t ts) {
  h2_dir *d = &h->d[dir];
  d->hdr_have = 0;
  switch (d->type) {
  case F_DATA:
    if ((d->flags & FL_END_STREAM) && dir != client_dir(h)) {
      h2_stream *s = stream_find(h, d->sid);
      if (s) report(h, s, false, ts);
    }
    return 0;
  case F_HEADERS:
  case F_PUSH:
  case F_CONT:
    if (d->flags & FL_END_HEADERS) block_done(h, dir, ts);
    return 0;
  case F_SETTINGS:
    return settings_done(h, dir);
  default:
    return 0;
  }
}

/* The 9-byte header of a frame in direction `dir` is complete. */
static int frame_start(hx_h2 *h, int dir, uint64_t ts) {
  h2_dir *d = &h->d[dir];
  d->flen = (uint32_t)d->hdr[0] << 16 | (uint32_t)d->hdr[1] << 8 | d->hdr[2];
  d->type = d->hdr[3];
  d->flags = d->hdr[4];
  d->sid = be32(d->hdr + 5) & 0x7fffffffu;
  d->left = d->flen;
  d->frame_ts = ts;
  d->pre_want = d->pre_have = 0;
  d->pad = 0;
  d->settings_have = 0;
  d->finaled = false;
  /* Between a HEADERS without END_HEADERS and its END_HEADERS only CONTINUATION of that stream. */
  if (d->in_block != (d->type == F_CONT)) return SONDE_EPROTO;
  if (d->type == F_CONT && d->sid != d->block_sid) return SONDE_EPROTO;
  switch (d->type) {
  case F_DATA:
    d->pre_want = (d->flags & FL_PADDED) ? 1 : 0;
    break;
  case F_HEADERS: {
    d->pre_want = ((d->flags & FL_PADDED) ? 1 : 0) + ((d->flags & FL_PRIORITY) ? 5 : 0);
    int rc = block_start(h, dir);
    if (rc) return rc;
    break;
  }
  case F_PUSH: {
    d->pre_want = ((d->flags & FL_PADDED) ? 1 : 0) + 4;
    int rc = block_start(h, dir);
    if (rc) return rc;
    break;
  }
  case F_PRIORITY:
    if (d->flen != 5) return SONDE_EPROTO;
    break;
  case F_RST:
    if (d->flen != 4 || d->sid == 0) return SONDE_EPROTO;
    d->pre_want = 4;
    break;
  case F_SETTINGS:
    if (d->sid != 0 || d->flen % 6 || ((d->flags & FL_ACK) && d->flen)) return SONDE_EPROTO;
    d->table_size = UINT32_MAX;
    break;
  case F_PING:
    if (d->flen != 8 || d->sid != 0) return SONDE_EPROTO;
    break;
  case F_GOAWAY:
    if (d->flen < 8 || d->sid != 0) return SONDE_EPROTO;
    d->pre_want = 4;
    break;
  case F_WINDOW:
    if (d->flen != 4) return SONDE_EPROTO;
    break;
  default: /* CONTINUATION, and unknown types which are skipped */
    break;
  }
  if (d->pre_want > d->flen) return SONDE_EPROTO;
  d->left = d->flen - d->pre_want;
  if (d->pre_want == 0) return prefix_done(h, dir);
  return 0;
}

/* The prefix of the current frame was not captured. */
static int prefix_lost(hx_h2 *h, int dir) {
  h2_dir *d = &h->d[dir];
  switch (d->type) {
  case F_DATA: /* padding unknown: counted as body */
    d->pre_have = d->pre_want;
    return prefix_done(h, dir);
  case F_RST: /* the reset is missed: the stream ends as reset at close */
  case F_GOAWAY:
    d->pre_have = d->pre_want;
    return 0;
  default: /* HEADERS, PUSH_PROMISE: HPACK state is lost */
    return SONDE_EPROTO;
  }
}

/* Consumes up to n bytes of the current frame after its header (p == NULL: not captured);
 * returns how many, or a negative error. */
static ssize_t advance(hx_h2 *h, int dir, const uint8_t *p, size_t n, uint64_t ts) {
  h2_dir *d = &h->d[dir];
  if (d->pre_have < d->pre_want) {
    size_t k = d->pre_want - d->pre_have;
    if (k > n) k = n;
    if (!p) {
      d->pre_have += k;
      if (d->pre_have == d->pre_want) {
        int rc = prefix_lost(h, dir);
        if (rc) return rc;
        if (d->left == 0) {
          ssize_t r = advance(h, dir, NULL, 0, ts);
          if (r < 0) return r;
        }
      }
      return (ssize_t)k;
    }
    memcpy(d->pre + d->pre_have, p, k);
    d->pre_have += k;
    if (d->pre_have == d->pre_want) {
      int rc = prefix_done(h, dir);
      if (rc) return rc;
      if (d->left == 0) { /* nothing after the prefix: the frame ends here */
        ssize_t r = advance(h, dir, NULL, 0, ts);
        if (r < 0) return r;
      }
    }
    return (ssize_t)k;
  }
  bool block = d->type == F_HEADERS || d->type == F_PUSH || d->type == F_CONT;
  size_t k = n < d->left ? n : d->left;
  size_t body = d->left > d->pad ? d->left - d->pad : 0; /* fragment bytes still to come */
  size_t kb = k < body ? k : body;
  if (block) {
    if (!p && kb) return SONDE_EPROTO; /* HPACK state would be lost */
    bool final = (d->flags & FL_END_HEADERS) && kb == body;
    if (kb || (final && !d->finaled)) {
      int rc = inflate(h, dir, p, kb, final);
      if (rc) return rc;
      d->finaled = final;
    }
  } else if (d->type == F_SETTINGS) {
    if (!p && kb) return SONDE_EPROTO; /* a HEADER_TABLE_SIZE may be in it */
    for (size_t i = 0; i < kb; i++) {
      d->settings[d->settings_have++] = p[i];
      if (d->settings_have == 6) {
        settings_entry(d, d->settings);
        d->settings_have = 0;
      }
    }
  }
  d->left -= k;
  if (d->left == 0) {
    int rc = frame_done(h, dir, ts);
    if (rc) return rc;
  }
  return (ssize_t)k;
}

/* Feeds bytes (p == NULL: n bytes that were not captured) to direction `dir`. */
static int feed(hx_h2 *h, int dir, const uint8_t *p, size_t n, uint64_t ts) {
  h2_dir *d = &h->d[dir];
  if (d->preface && n) {
    size_t k = n < d->preface ? n : d->preface;
    if (!p) return SONDE_EPROTO;
    if (memcmp(p, &H2_PREFACE[H2_PREFACE_LEN - d->preface], k) != 0) return SONDE_EPROTO;
    d->preface -= k;
    p += k;
    n -= k;
  }
  while (n > 0) {
    if (d->hdr_have < 9) {
      if (!p) return SONDE_EPROTO; /* frame boundaries would be lost */
      size_t k = 9 - d->hdr_have;
      if (k > n) k = n;
      memcpy(d->hdr + d->hdr_have, p, k);
      d->hdr_have += k;
      p += k;
      n -= k;
      if (d->hdr_have < 9) return 0;
      int rc = frame_start(h, dir, ts);
      if (rc) return rc;
      /* a frame without payload (or with nothing after its header) may end right here */
      if (d->pre_want == 0 && d->left == 0) {
        ssize_t r = advance(h, dir, p, 0, ts);
        if (r < 0) return (int)r;
      }
      continue;
    }
    ssize_t r = advance(h, dir, p, n, ts);
    if (r < 0) return (int)r;
    if (p) p += r;
    n -= (size_t)r;
  }
  return 0;
}

int hx_h2_feed(hx_h2 *h, enum hx_dir dir, const uint8_t *p, size_t n, size_t total,
               uint64_t ts_ns) {
  if (!h) return SONDE_EINVAL;
  if (h->err) return h->err;
  if ((dir != HX_INGRESS && dir != HX_EGRESS) || (n && !p) || total < n) return SONDE_EINVAL;
  int rc = feed(h, dir, p, n, ts_ns);
  if (!rc && total > n) rc = feed(h, dir, NULL, total - n, ts_ns);
  if (rc) h->err = rc;
  return rc;
}

uint32_t hx_h2_refused(const hx_h2 *h) {
  return h ? h->refused : 0;
}

void hx_h2_close(hx_h2 *h, uint64_t ts_ns) {
  if (!h || h->err) return;
  while (h->nstreams > 0)
    report(h, h->streams[0], true, ts_ns);
}

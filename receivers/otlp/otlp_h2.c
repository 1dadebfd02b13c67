/* The `otlp` receiver's OTLP/gRPC server session: nghttp2 in memory mode (bytes in, bytes out, no
 * socket), gRPC's length-prefixed messages, grpc-encoding gzip/zstd, status in trailers.
 *
 * Each stream buffers at most 5 + max_msg bytes: the length prefix is checked as soon as it has
 * arrived, so an oversize message is answered RESOURCE_EXHAUSTED before its body is read, and the
 * rest of it is dropped as it comes. Streams beyond max_concurrent_streams are refused by nghttp2
 * (RST_STREAM REFUSED_STREAM). Every export is unary and consume is synchronous, so a stream is
 * answered from within the callback that completes its request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "otlp_internal.h"

typedef struct h2_stream {
  int32_t id;
  sonde_signal sig;
  bool bad_method; /* :method is not POST, or :path not one of ours */
  bool bad_ctype;  /* content-type is not application/grpc[+proto|;...] */
  bool responded;  /* an answer was submitted (the rest of the request is dropped) */
  bool req_done;   /* END_STREAM received */
  int enc;         /* grpc-encoding, -1 unknown */
  char enc_name[32];
  uint8_t flags;    /* compressed flag of the message */
  uint32_t msg_len; /* from the prefix, once have >= 5 */
  sonde_buf in;     /* prefix + message */
  uint8_t out[5];   /* response message: the empty Export*ServiceResponse */
  size_t out_off;
  struct h2_stream *next, **pprev;
} h2_stream;

struct otlp_h2 {
  nghttp2_session *ng;
  otlp_h2_limits lim;
  otlp_consume_fn consume;
  void *arg;
  h2_stream *streams;
  size_t open_requests;
  bool ping_outstanding;
  bool fatal;
};

#define ACCEPT_ENC "identity,gzip,zstd"

#define NV(n, v)                                                                                   \
  {                                                                                                \
    (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                                      \
        NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                               \
  }

/* grpc-message is percent-encoded (gRPC over HTTP/2: "Percent-Encoded"). */
static void pct_encode(const char *in, char *out, size_t outlen) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < outlen; p++) {
    if (*p < 0x20 || *p > 0x7e || *p == '%') {
      out[o++] = '%';
      out[o++] = hex[*p >> 4];
      out[o++] = hex[*p & 15];
    } else {
      out[o++] = (char)*p;
    }
  }
  out[o] = 0;
}

/* Trailers-only answer: one HEADERS frame with END_STREAM. */
static int respond_error(otlp_h2 *s, h2_stream *st, int code, const char *msg) {
  char codes[12], pmsg[400];
  snprintf(codes, sizeof codes, "%d", code);
  pct_encode(msg, pmsg, sizeof pmsg);
  nghttp2_nv nva[] = {
      NV(":status", "200"),
      NV("content-type", "application/grpc"),
      NV("grpc-accept-encoding", ACCEPT_ENC),
      NV("grpc-status", codes),
      NV("grpc-message", pmsg),
  };
  st->responded = true;
  /* nghttp2 copies the values (no NO_COPY for them would matter: codes/pmsg are on the stack). */
  for (size_t i = 0; i < sizeof nva / sizeof nva[0]; i++)
    nva[i].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME;
  return nghttp2_submit_response(s->ng, st->id, nva, sizeof nva / sizeof nva[0], NULL);
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *data_flags, nghttp2_data_source *src, void *user) {
  h2_stream *st = src->ptr;
  size_t n = sizeof st->out - st->out_off;
  if (n > len) n = len;
  memcpy(buf, st->out + st->out_off, n);
  st->out_off += n;
  if (st->out_off == sizeof st->out) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv trailers[] = {NV("grpc-status", "0")};
    if (nghttp2_submit_trailer(ng, id, trailers, 1)) return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return (ssize_t)n;
}

static int respond_ok(otlp_h2 *s, h2_stream *st) {
  nghttp2_nv nva[] = {
      NV(":status", "200"),
      NV("content-type", "application/grpc"),
      NV("grpc-accept-encoding", ACCEPT_ENC),
  };
  memset(st->out, 0, sizeof st->out); /* uncompressed, length 0 */
  st->out_off = 0;
  st->responded = true;
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
  return nghttp2_submit_response(s->ng, st->id, nva, sizeof nva / sizeof nva[0], &prd);
}

static void request_finished(otlp_h2 *s, h2_stream *st) {
  if (!st->req_done) {
    st->req_done = true;
    s->open_requests--;
  }
}

/* The whole request is in: decode, consume, answer. */
static int complete(otlp_h2 *s, h2_stream *st) {
  char msg[300];
  if (st->responded) return 0;
  if (st->in.len < 5 || st->in.len < 5 + (size_t)st->msg_len)
    return respond_error(s, st, GRPC_INTERNAL,
                         st->in.len ? "grpc: request message truncated"
                                    : "grpc: no request message in a unary call");
  const uint8_t *m = st->in.data + 5;
  size_t mlen = st->msg_len;
  sonde_buf plain = {0};
  if (st->flags & 1) {
    int rc = otlp_decompress(st->enc, m, mlen, s->lim.max_msg, &plain);
    if (rc == SONDE_ETOOBIG) {
      snprintf(msg, sizeof msg, "grpc: received message after decompression larger than max %zu",
               s->lim.max_msg);
      sonde_buf_free(&plain);
      return respond_error(s, st, GRPC_RESOURCE_EXHAUSTED, msg);
    }
    if (rc) {
      snprintf(msg, sizeof msg, "grpc: failed to decompress the received message: %s",
               sonde_strerror(rc));
      sonde_buf_free(&plain);
      return respond_error(s, st, rc == SONDE_ENOMEM ? GRPC_UNAVAILABLE : GRPC_INTERNAL, msg);
    }
    m = plain.data ? plain.data : (const uint8_t *)"";
    mlen = plain.len;
  }
  msg[0] = 0;
  int code = otlp_decode_consume(st->sig, false, m, mlen, s->consume, s->arg, msg, sizeof msg);
  sonde_buf_free(&plain);
  sonde_buf_free(&st->in); /* the request is done with: free it before the answer goes out */
  st->in = (sonde_buf){0};
  if (code) return respond_error(s, st, code, msg);
  return respond_ok(s, st);
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user) {
  otlp_h2 *s = user;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  h2_stream *st = calloc(1, sizeof *st);
  if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
  st->id = f->hd.stream_id;
  st->bad_ctype = true;
  st->next = s->streams;
  if (s->streams) s->streams->pprev = &st->next;
  s->streams = st;
  st->pprev = &s->streams;
  s->open_requests++;
  if (nghttp2_session_set_stream_user_data(ng, st->id, st)) {
    *st->pprev = st->next;
    if (st->next) st->next->pprev = st->pprev;
    s->open_requests--;
    free(st);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return 0;
}

static bool eq(const uint8_t *a, size_t al, const char *b) {
  return al == strlen(b) && !memcmp(a, b, al);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
  if (!st) return 0;
  if (eq(name, namelen, ":path")) {
    st->sig = otlp_grpc_method_signal((const char *)value, valuelen);
  } else if (eq(name, namelen, ":method")) {
    st->bad_method = !eq(value, valuelen, "POST");
  } else if (eq(name, namelen, "content-type")) {
    /* application/grpc, application/grpc+proto, application/grpc;charset=... */
    st->bad_ctype = !(valuelen >= 16 && !memcmp(value, "application/grpc", 16) &&
                      (valuelen == 16 || value[16] == '+' || value[16] == ';'));
  } else if (eq(name, namelen, "grpc-encoding")) {
    size_t n = valuelen < sizeof st->enc_name - 1 ? valuelen : sizeof st->enc_name - 1;
    memcpy(st->enc_name, value, n);
    st->enc_name[n] = 0;
    st->enc = valuelen >= sizeof st->enc_name ? -1 : otlp_encoding_parse(st->enc_name);
  }
  return 0;
}

static int on_headers_done(otlp_h2 *s, h2_stream *st) {
  char msg[200];
  if (st->bad_method || st->bad_ctype) {
    /* Not a gRPC call: plain HTTP answers, as grpc-go gives (415 / 405). */
    nghttp2_nv nva[] = {NV(":status", st->bad_method ? "405" : "415"),
                        NV("content-type", "text/plain")};
    st->responded = true;
    return nghttp2_submit_response(s->ng, st->id, nva, 2, NULL);
  }
  /* Services of signals no pipeline takes are not offered, as otelcol registers none. */
  if (!st->sig || (s->lim.signals && !(s->lim.signals & st->sig)))
    return respond_error(s, st, GRPC_UNIMPLEMENTED, "unknown service or method");
  if (st->enc < 0) {
    snprintf(msg, sizeof msg, "grpc: Decompressor is not installed for grpc-encoding \"%s\"",
             st->enc_name);
    return respond_error(s, st, GRPC_UNIMPLEMENTED, msg);
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user) {
  otlp_h2 *s = user;
  if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
    s->ping_outstanding = false;
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
  if (!st) return 0;
  int rc = 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    rc = on_headers_done(s, st);
  if (!rc && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    request_finished(s, st);
    rc = complete(s, st);
  }
  if (rc == NGHTTP2_ERR_NOMEM) return NGHTTP2_ERR_CALLBACK_FAILURE;
  return 0; /* other submit errors: the stream is gone already */
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user) {
  otlp_h2 *s = user;
  h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
  if (!st || st->responded) return 0; /* answered early: the rest is dropped */
  /* The prefix first, byte by byte as it may be split across frames. */
  while (st->in.len < 5 && len) {
    if (sonde_buf_append(&st->in, data, 1)) return NGHTTP2_ERR_CALLBACK_FAILURE;
    data++;
    len--;
    if (st->in.len == 5) {
      st->flags = st->in.data[0];
      st->msg_len = (uint32_t)st->in.data[1] << 24 | (uint32_t)st->in.data[2] << 16 |
                    (uint32_t)st->in.data[3] << 8 | st->in.data[4];
      char msg[200];
      if (st->msg_len > s->lim.max_msg) {
        snprintf(msg, sizeof msg, "grpc: received message larger than max (%u vs. %zu)",
                 st->msg_len, s->lim.max_msg);
        sonde_buf_free(&st->in);
        return respond_error(s, st, GRPC_RESOURCE_EXHAUSTED, msg) == NGHTTP2_ERR_NOMEM
                   ? NGHTTP2_ERR_CALLBACK_FAILURE
                   : 0;
      }
      if ((st->flags & 1) && st->enc == OTLP_ENC_IDENTITY) {
        sonde_buf_free(&st->in);
        return respond_error(s, st, GRPC_INTERNAL,
                             "grpc: compressed flag set with identity or empty encoding") ==
                       NGHTTP2_ERR_NOMEM
                   ? NGHTTP2_ERR_CALLBACK_FAILURE
                   : 0;
      }
      if (st->flags & ~1u) {
        sonde_buf_free(&st->in);
        return respond_error(s, st, GRPC_INTERNAL, "grpc: invalid message flags") ==
                       NGHTTP2_ERR_NOMEM
                   ? NGHTTP2_ERR_CALLBACK_FAILURE
                   : 0;
      }
      /* No reservation of msg_len here: memory follows the bytes actually received. */
    }
  }
  if (!len) return 0;
  if (st->in.len + len > 5 + (size_t)st->msg_len) {
    sonde_buf_free(&st->in);
    return respond_error(s, st, GRPC_INTERNAL,
                         "grpc: server received more than one request message for unary") ==
                   NGHTTP2_ERR_NOMEM
               ? NGHTTP2_ERR_CALLBACK_FAILURE
               : 0;
  }
  return sonde_buf_append(&st->in, data, len) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *user) {
  /* Answered before the client finished sending: tell it to stop (what gRPC servers do). */
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st && !st->req_done) nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, 0);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user) {
  otlp_h2 *s = user;
  h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
  if (!st) return 0;
  request_finished(s, st);
  *st->pprev = st->next;
  if (st->next) st->next->pprev = st->pprev;
  sonde_buf_free(&st->in);
  free(st);
  nghttp2_session_set_stream_user_data(ng, id, NULL);
  return 0;
}

/* ---- API ----------------------------------------------------------------------------------- */

int otlp_h2_new(const otlp_h2_limits *lim, otlp_consume_fn consume, void *arg, otlp_h2 **out) {
  otlp_h2 *s = calloc(1, sizeof *s);
  nghttp2_session_callbacks *cb = NULL;
  nghttp2_option *opt = NULL;
  int rc = SONDE_ENOMEM;
  if (!s || nghttp2_session_callbacks_new(&cb) || nghttp2_option_new(&opt)) goto done;
  s->lim = *lim;
  s->consume = consume;
  s->arg = arg;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  /* Streams past the limit are refused even before the client has acknowledged our SETTINGS. */
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  if (nghttp2_session_server_new2(&s->ng, cb, s, opt)) goto done;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim->max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384},
  };
  if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
      nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, 8u << 20))
    goto done;
  rc = 0;
done:
  nghttp2_session_callbacks_del(cb);
  nghttp2_option_del(opt);
  if (rc) {
    otlp_h2_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void otlp_h2_free(otlp_h2 *s) {
  if (!s) return;
  if (s->ng) nghttp2_session_del(s->ng); /* closes every stream through on_stream_close */
  while (s->streams) {
    h2_stream *st = s->streams;
    s->streams = st->next;
    sonde_buf_free(&st->in);
    free(st);
  }
  free(s);
}

int otlp_h2_recv(otlp_h2 *s, const uint8_t *p, size_t n) {
  if (s->fatal) return SONDE_EPROTO;
  ssize_t r = nghttp2_session_mem_recv(s->ng, p, n);
  if (r < 0) {
    s->fatal = true;
    /* Tell the peer why when the session can still speak (bad preface, flow-control abuse). */
    if (r != NGHTTP2_ERR_NOMEM && r != NGHTTP2_ERR_CALLBACK_FAILURE)
      nghttp2_session_terminate_session(s->ng, NGHTTP2_PROTOCOL_ERROR);
    return r == NGHTTP2_ERR_NOMEM || r == NGHTTP2_ERR_CALLBACK_FAILURE ? SONDE_ENOMEM
                                                                       : SONDE_EPROTO;
  }
  return 0;
}

int otlp_h2_pending(otlp_h2 *s, sonde_buf *out) {
  for (;;) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(s->ng, &data);
    if (n < 0) {
      s->fatal = true;
      return n == NGHTTP2_ERR_NOMEM ? SONDE_ENOMEM : SONDE_EPROTO;
    }
    if (n == 0) return 0;
    if (sonde_buf_append(out, data, (size_t)n)) {
      s->fatal = true;
      return SONDE_ENOMEM;
    }
  }
}

bool otlp_h2_finished(const otlp_h2 *s) {
  return s->fatal || (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng));
}

size_t otlp_h2_open_requests(const otlp_h2 *s) {
  return s->open_requests;
}

bool otlp_h2_ping(otlp_h2 *s) {
  if (s->ping_outstanding) return false;
  if (nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL)) return false;
  s->ping_outstanding = true;
  return true;
}

void otlp_h2_goaway(otlp_h2 *s) {
  nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
}

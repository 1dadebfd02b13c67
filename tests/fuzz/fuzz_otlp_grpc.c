/* libFuzzer target: the otlp receiver's OTLP/gRPC input path without a socket.
 *
 * The first byte picks the mode and what the fake pipeline answers:
 *  - mode 0 (bit 7 clear): the rest is what a client writes on the connection after the HTTP/2
 *    preface (which is added), fed to an otlp_h2 server session in chunks whose sizes come from
 *    the low bits of the first byte: frames, HPACK, flow control, streams, gRPC framing;
 *  - mode 1 (bit 7 set): the rest is the body of one well-formed Export call (preface, SETTINGS,
 *    HEADERS encoded here with nghttp2's HPACK encoder, DATA with END_STREAM), with grpc-encoding
 *    identity, gzip or zstd from bits 4-5: gRPC message framing, decompression and decoding.
 * Checks: no crash, leak or undefined behaviour (ASan/UBSan), the fake pipeline only ever gets
 * a decoded batch, and what the session writes back is a whole sequence of frames. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "otlp_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int g_answer;

static int fake_consume(void *arg, sonde_batch *b) {
  (void)arg;
  if (!b || sonde_batch_signal(b) == 0) abort();
  (void)sonde_batch_items(b);
  return g_answer;
}

static const int answers[4] = {0, SONDE_EREFUSED, SONDE_EPERMANENT, SONDE_ETOOBIG};

/* Every frame the server wrote has a 9-byte header whose length fits in what was written. */
static void check_output(const sonde_buf *out) {
  size_t off = 0;
  while (off + 9 <= out->len) {
    size_t len =
        (size_t)out->data[off] << 16 | (size_t)out->data[off + 1] << 8 | out->data[off + 2];
    off += 9 + len;
  }
  if (off != out->len) abort();
}

static void frame(sonde_buf *b, uint8_t type, uint8_t flags, uint32_t id, const uint8_t *p,
                  size_t n) {
  uint8_t h[9] = {
      (uint8_t)(n >> 16),         (uint8_t)(n >> 8),   (uint8_t)n,         type,       flags,
      (uint8_t)(id >> 24 & 0x7f), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
  if (sonde_buf_append(b, h, 9) || sonde_buf_append(b, p, n)) abort();
}

#define MKNV(n, v)                                                                                 \
  { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE }

/* One Export call carrying body as its DATA. */
static void build_call(sonde_buf *b, int enc, const uint8_t *body, size_t n) {
  static const char *encs[] = {"identity", "gzip", "zstd", "br"};
  frame(b, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
  nghttp2_nv nva[] = {
      MKNV(":method", "POST"),
      MKNV(":scheme", "http"),
      MKNV(":path", "/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
      MKNV(":authority", "localhost"),
      MKNV("content-type", "application/grpc"),
      MKNV("te", "trailers"),
      MKNV("grpc-encoding", encs[enc & 3]),
  };
  nghttp2_hd_deflater *d;
  if (nghttp2_hd_deflate_new(&d, 4096)) abort();
  uint8_t hb[1024];
  ssize_t hl = nghttp2_hd_deflate_hd(d, hb, sizeof hb, nva, sizeof nva / sizeof nva[0]);
  nghttp2_hd_deflate_del(d);
  if (hl < 0) abort();
  frame(b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hb, (size_t)hl);
  /* DATA within the peer's initial window (64 KiB) and the default frame size (16 KiB). */
  if (n > 65535) n = 65535;
  size_t off = 0;
  do {
    size_t k = n - off > 16384 ? 16384 : n - off;
    frame(b, NGHTTP2_DATA, off + k == n ? NGHTTP2_FLAG_END_STREAM : 0, 1, body + off, k);
    off += k;
  } while (off < n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t ctl = data[0];
  data++;
  size--;
  g_answer = answers[(ctl >> 2) & 3];
  otlp_h2_limits lim = {.max_msg = 1u << 16, .max_streams = 8};
  otlp_h2 *s;
  if (otlp_h2_new(&lim, fake_consume, NULL, &s)) return 0;
  sonde_buf in = {0}, out = {0};
  if (sonde_buf_append(&in, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN)) abort();
  if (ctl & 0x80)
    build_call(&in, (ctl >> 4) & 3, data, size);
  else if (sonde_buf_append(&in, data, size))
    abort();
  size_t chunk = (size_t)1 << (ctl & 3) * 4; /* 1, 16, 256, 4096 bytes at a time */
  for (size_t off = 0; off < in.len; off += chunk) {
    size_t k = in.len - off < chunk ? in.len - off : chunk;
    int rc = otlp_h2_recv(s, in.data + off, k);
    if (otlp_h2_pending(s, &out)) break;
    if (rc) break;
  }
  check_output(&out);
  (void)otlp_h2_open_requests(s);
  (void)otlp_h2_finished(s);
  sonde_buf_free(&in);
  sonde_buf_free(&out);
  otlp_h2_free(s);
  return 0;
}

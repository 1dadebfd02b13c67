/* libFuzzer target: the ebpf_http receiver's HTTP/2 + gRPC decoder (receivers/ebpf_http/h2.c) on
 * both directions of one connection as a process read and wrote them, with every reported path
 * folded into a route (routes.c) and every exchange recorded into RED metrics (red.c). The decoder
 * sees whatever bytes any traced process exchanges.
 *
 * Input: byte 0 = mode (bit 0: the traced process is the server; bits 1-3: feed size, 0 and 7 =
 * whole records), then records: flags (bit 0: written by the server, bit 1: uncaptured bytes
 * follow), length (2 bytes, big endian), [uncaptured length (2 bytes)], the bytes. Seeds are real
 * sessions (nghttp <-> nghttpd, grpcio) recorded by tests/fuzz/corpus/h2/.record.py.
 *
 * Checks: no crash, leak or undefined behaviour; a reported exchange has a method and a path, a
 * status in 0..999, grpc-status -1..999, end >= start; after an error every feed returns it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hx_routes *g_routes;
static hx_red *g_red;

static void on_ex(void *ud, const hx_exchange *ex) {
  size_t *n = ud;
  (*n)++;
  if (!ex->method || !ex->path) abort();
  if (ex->status < 0 || ex->status > 999) abort();
  if (ex->grpc_status < -1 || ex->grpc_status > 999) abort();
  if (ex->rst_code < -1 || (ex->rst_code >= 0 && !ex->reset)) abort();
  if (ex->end_ns < ex->start_ns) abort();
  if (ex->proto != HX_HTTP2 && ex->proto != HX_GRPC) abort();
  char route[128];
  hx_routes_match(g_routes, ex->authority, ex->path, route, sizeof(route));
  if (route[0] != '/' && route[0] != '*') abort();
  if (!memchr(route, '\0', sizeof(route))) abort();
  hx_resource res = {.pid = 7, .exe_name = "fuzz", .host_name = "h"};
  hx_red_record(g_red, &res, ex, route, ex->authority, 443);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_routes) {
    static const char *const pats[] = {"/users/{id}", "/static/**", "/api/*/x"};
    if (hx_routes_new(pats, 3, 50, &g_routes)) abort();
  }
  if (!g_red && hx_red_new(&g_red)) abort();
  if (size < 1) return 0;
  static const size_t steps[8] = {0, 1, 2, 3, 5, 16, 100, 0};
  bool server = data[0] & 1;
  size_t step = steps[(data[0] >> 1) & 7];
  (void)hx_h2_detect(data + 1, size - 1);
  size_t reported = 0;
  hx_h2 *h = hx_h2_new(server, on_ex, &reported);
  if (!h) return 0;
  size_t o = 1;
  int err = 0;
  uint64_t ts = 1;
  while (o + 3 <= size) {
    uint8_t fl = data[o];
    size_t len = (size_t)data[o + 1] << 8 | data[o + 2];
    o += 3;
    size_t lost = 0;
    if (fl & 2) {
      if (o + 2 > size) break;
      lost = (size_t)data[o] << 8 | data[o + 1];
      o += 2;
    }
    if (len > size - o) len = size - o;
    bool from_server = fl & 1;
    enum hx_dir dir = from_server == server ? HX_EGRESS : HX_INGRESS;
    size_t s = step ? step : (len ? len : 1);
    for (size_t k = 0; k < len || (k == 0 && lost); k += s) {
      size_t n = len - k < s ? len - k : s;
      bool last = k + n >= len;
      int rc = hx_h2_feed(h, dir, data + o + k, n, n + (last ? lost : 0), ts++);
      if (err && rc != err) abort(); /* errors are sticky */
      if (rc) err = rc;
      if (rc > 0) abort();
      if (last) break;
    }
    o += len;
  }
  size_t before = reported;
  hx_h2_close(h, ts + 1);
  if (err && reported != before) abort(); /* nothing reported after an error */
  if (getenv("FUZZ_H2_VERBOSE"))          /* to check that the seeds decode */
    fprintf(stderr, "%zu exchanges, %zu more at close, error %d\n", before, reported - before, err);
  hx_h2_free(h);
  /* the RED batch of what was reported must encode */
  sonde_batch *b = NULL;
  if (hx_red_collect(g_red, 1, &b) == 0 && b) {
    uint8_t *buf = malloc(sonde_batch_packed_size(b) + 1);
    if (buf && sonde_batch_pack(b, buf) != sonde_batch_packed_size(b)) abort();
    free(buf);
    sonde_batch_unref(b);
  }
  hx_red_forget(g_red, 7);
  return 0;
}

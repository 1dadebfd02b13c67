/* libFuzzer target: the ebpf_http receiver's HTTP/1 decoder (receivers/ebpf_http/http1.c) on both
 * directions of one connection as a traced process read and wrote them. It sees whatever bytes any
 * process on the node exchanges on a traced port, including transfers BPF captured only in part.
 *
 * Input: byte 0 = mode (bit 0: the traced process is the server; bits 1-3: feed size, 0 and 7 =
 * whole records), then records: flags (bit 0: written by the server, bit 1: uncaptured bytes
 * follow), length (2 bytes, big endian), [uncaptured length (2 bytes)], the bytes. The input ends
 * with the connection closing, or (mode bit 4) with the decoder freed while open.
 *
 * Checks: no crash, leak or undefined behaviour; every request hook is matched by exactly one
 * done call; a done exchange has a method and a path, a status in 0..999, end >= start. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct counts {
  uint64_t requests, done;
} counts;

static uint64_t on_request(void *ud, const hx_exchange *ex) {
  counts *c = ud;
  if (!ex->method || !ex->path) abort();
  return ++c->requests;
}

static void on_done(void *ud, const hx_exchange *ex, uint64_t tag) {
  counts *c = ud;
  c->done++;
  if (tag == 0 || tag > c->requests) abort(); /* done without its request hook */
  if (!ex->method || !ex->path) abort();
  if (ex->status < 0 || ex->status > 999) abort();
  if (ex->end_ns < ex->start_ns) abort();
  if (ex->proto != HX_HTTP1) abort();
  if (ex->status == 0 && !ex->reset) abort();
}

static const hx_h1_hooks hooks = {.request = on_request, .done = on_done};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const size_t steps[8] = {0, 1, 2, 3, 5, 16, 100, 0};
  bool server = data[0] & 1;
  size_t step = steps[(data[0] >> 1) & 7];
  bool close_at_end = !(data[0] & 0x10);
  counts c = {0, 0};
  hx_h1 *h = hx_h1_new(server, &hooks, &c);
  if (!h) return 0;
  uint64_t ts = 1000;
  size_t off = 1;
  while (off + 3 <= size) {
    uint8_t flags = data[off];
    size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
    off += 3;
    size_t missing = 0;
    if (flags & 2) {
      if (off + 2 > size) break;
      missing = (size_t)data[off] << 8 | data[off + 1];
      off += 2;
    }
    if (len > size - off) len = size - off;
    /* Bytes the server wrote are read by the client, and the other way round. */
    bool by_server = flags & 1;
    enum hx_dir dir = by_server == server ? HX_EGRESS : HX_INGRESS;
    const uint8_t *p = data + off;
    size_t n = len;
    if (!step || step >= n) {
      hx_h1_feed(h, dir, p, n, n + missing, ts++);
    } else {
      /* Split into step-sized transfers; the uncaptured bytes trail the last one. */
      for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        hx_h1_feed(h, dir, p + i, k, k + (i + k == n ? missing : 0), ts++);
      }
    }
    off += len;
  }
  if (close_at_end) hx_h1_close(h, ts++);
  hx_h1_free(h);
  if (c.done != c.requests) abort();
  return 0;
}

/* libFuzzer target: the flamegraph exporter's history (exporters/flamegraph/fg_store.c) and its
 * HTTP helpers (fg_util.c). Input: a query string (also tried as a Host header), a NUL, then an
 * OTLP profiles request in protobuf. The request's indices come from any profiler or client, the
 * query from any local process: nothing may be read out of bounds, and the JSON written must stay
 * inlinable in the page's <script> (no '<', no raw control byte). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../exporters/flamegraph/fg_store.c"
#include "../../exporters/flamegraph/fg_util.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_json(const sonde_buf *b) {
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i] == '<' || b->data[i] < 0x20) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t qlen = nul ? (size_t)(nul - data) : size;
  char *qs = malloc(qlen + 1);
  if (!qs) return 0;
  memcpy(qs, data, qlen);
  qs[qlen] = 0;
  const int64_t now = 1700000000LL * 1000000000LL;
  fg_query q;
  fg_qbufs bufs;
  char err[256];
  if (fg_query_parse(qs, now, &q, &bufs, err, sizeof err)) q = (fg_query){.group = 4};
  /* the same text as a Host header, and as the endpoint */
  (void)fg_host_allowed("localhost:7070", qs);
  (void)fg_host_allowed(qs, "localhost");
  free(qs);
  sonde_batch *b = NULL;
  if (nul && sonde_batch_decode(SONDE_SIGNAL_PROFILES, nul + 1, size - qlen - 1, &b) == 0) {
    fg_limits lim = {.slot_ns = 10000000000LL, .history_ns = 3600000000000LL, .max_bytes = 1 << 20};
    fg_store *st = NULL;
    if (fg_store_new(&lim, &st) == 0) {
      uint64_t n;
      fg_store_add(st, sonde_batch_profiles(b), now, &n);
      sonde_buf out = {0};
      if (fg_store_query_json(st, &q, &out) == 0) check_json(&out);
      out.len = 0;
      fg_query all = {.group = 4, .from2_ns = 1, .to2_ns = now * 2};
      if (fg_store_query_json(st, &all, &out) == 0) check_json(&out);
      out.len = 0;
      if (fg_store_labels_json(st, q.from_ns, q.to_ns, &out) == 0) check_json(&out);
      sonde_buf_free(&out);
      fg_store_free(st);
    }
    sonde_batch_unref(b);
  }
  return 0;
}

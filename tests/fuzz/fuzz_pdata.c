/* libFuzzer target: protobuf decode of each signal, re-encode, OTLP-JSON, copy.
 * The first byte picks the signal; the rest is the request. Checks that what decodes packs
 * again to bytes that decode to the same JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/errors.h"
#include "sonde/pdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  sonde_signal sig = (sonde_signal)(1u << (data[0] & 3));
  sonde_batch *b;
  if (sonde_batch_decode(sig, data + 1, size - 1, &b)) return 0;
  (void)sonde_batch_items(b);
  size_t n = sonde_batch_packed_size(b);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) abort();
  if (sonde_batch_pack(b, buf) != n) abort();
  sonde_buf j1 = {0}, j2 = {0};
  if (sonde_batch_to_json(b, &j1)) abort();
  sonde_batch *c;
  if (sonde_batch_copy(b, &c)) abort();
  if (sonde_batch_to_json(c, &j2) || j1.len != j2.len || memcmp(j1.data, j2.data, j1.len)) abort();
  sonde_batch *r;
  char err[128];
  /* Our own JSON must read back; NaN payloads aside it re-encodes identically. */
  if (sonde_batch_from_json(sig, (const char *)j1.data, j1.len, &r, err, sizeof err)) abort();
  sonde_batch_unref(r);
  sonde_buf_free(&j1);
  sonde_buf_free(&j2);
  sonde_batch_unref(c);
  sonde_batch_unref(b);
  free(buf);
  return 0;
}

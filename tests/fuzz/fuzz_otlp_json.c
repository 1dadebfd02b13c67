/* libFuzzer target: OTLP-JSON decode of each signal, then encode, decode again, encode again.
 * The first byte picks the signal. The second encoding must equal the first. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/errors.h"
#include "sonde/pdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  sonde_signal sig = (sonde_signal)(1u << (data[0] & 3));
  sonde_batch *b, *r;
  char err[256];
  if (sonde_batch_from_json(sig, (const char *)data + 1, size - 1, &b, err, sizeof err)) {
    if (!err[0]) abort(); /* every failure explains itself */
    return 0;
  }
  sonde_buf j1 = {0}, j2 = {0};
  if (sonde_batch_to_json(b, &j1)) abort();
  if (sonde_batch_from_json(sig, (const char *)j1.data, j1.len, &r, err, sizeof err)) abort();
  if (sonde_batch_to_json(r, &j2) || j1.len != j2.len || memcmp(j1.data, j2.data, j1.len)) abort();
  size_t n = sonde_batch_packed_size(r);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf || sonde_batch_pack(r, buf) != n) abort();
  sonde_batch *d;
  if (sonde_batch_decode(sig, buf, n, &d)) abort();
  sonde_batch_unref(d);
  free(buf);
  sonde_buf_free(&j1);
  sonde_buf_free(&j2);
  sonde_batch_unref(r);
  sonde_batch_unref(b);
  return 0;
}

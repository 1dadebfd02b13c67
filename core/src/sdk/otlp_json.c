/* OTLP-JSON codec (placeholder until the real one lands). */
#include "sonde/errors.h"
#include "sonde/pdata.h"

int sonde_batch_to_json(const sonde_batch *b, sonde_buf *out) {
  (void)b;
  (void)out;
  return SONDE_EUNSUPPORTED;
}

int sonde_batch_from_json(sonde_signal sig, const char *json, size_t len, sonde_batch **out,
                          char *err, size_t errlen) {
  (void)sig;
  (void)json;
  (void)len;
  if (out) *out = NULL;
  if (err && errlen) err[0] = 0;
  return SONDE_EUNSUPPORTED;
}

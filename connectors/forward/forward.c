/* forward connector: joins pipelines of one signal, as otelcol's forwardconnector does. Used as
 * an exporter in one pipeline and a receiver in others; it passes each batch on unchanged. */
#include <stdlib.h>

#include "sonde/sonde.h"

typedef struct fwd {
  const sonde_host *host;
} fwd;

static int fwd_create(const sonde_host *h, const void *cfg, uint32_t signals, void **out) {
  fwd *f = calloc(1, sizeof *f);
  if (!f) return SONDE_ENOMEM;
  f->host = h;
  *out = f;
  return 0;
}

static int fwd_consume(void *inst, sonde_batch *b) {
  fwd *f = inst;
  return f->host->api->consume(f->host, b, NULL);
}

static void fwd_shutdown(void *inst, void (*done)(void *), void *arg) {
  done(arg);
}

static void fwd_destroy(void *inst) {
  free(inst);
}

static const sonde_component forward = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_CONNECTOR,
    .type = "forward",
    .doc = "Passes data from the pipelines it exports in to the pipelines it receives in",
    .signals = SONDE_SIGNAL_ALL,
    .create = fwd_create,
    .consume = fwd_consume,
    .shutdown = fwd_shutdown,
    .destroy = fwd_destroy,
};

SONDE_PLUGIN_DEFINE("forward", SONDE_VERSION, &forward);

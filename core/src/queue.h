/* The exporter sending queue and retry loop (otelcol's exporterhelper): one bounded queue per
 * exporter and signal, num_consumers sends in flight, exponential backoff with jitter, the
 * server's retry delay honoured, a per-send timeout, and a drain on shutdown. A full queue refuses
 * (counted in otelcol_exporter_enqueue_failed_*) and never blocks the producer. */
#ifndef SONDE_QUEUE_H
#define SONDE_QUEUE_H
#include <stdbool.h>
#include <uv.h>

#include "sonde/plugin.h"

/* The options the core adds to SONDE_COMP_QUEUED exporters. */
typedef struct sonde__qcfg {
  int64_t timeout;
  struct {
    bool enabled;
    int64_t num_consumers;
    int64_t queue_size;
    int sizer; /* 0 requests, 1 items */
    bool block_on_overflow;
  } sending_queue;
  struct {
    bool enabled;
    int64_t initial_interval;
    double randomization_factor;
    double multiplier;
    int64_t max_interval;
    int64_t max_elapsed_time;
  } retry;
} sonde__qcfg;

extern const sonde_option sonde__qcfg_options[];

typedef struct sonde__queue sonde__queue;

typedef struct sonde__queue_target {
  const sonde_component *comp;
  void *inst;
  const char *who; /* for log lines; kept */
} sonde__queue_target;

typedef struct sonde__queue_metrics {
  sonde_metric *sent, *send_failed, *enqueue_failed, *size, *capacity;
} sonde__queue_metrics;

/* cfg and target->who are kept. */
int sonde__queue_new(uv_loop_t *loop, const sonde__qcfg *cfg, sonde__queue_target target,
                     sonde_signal sig, sonde__queue_metrics metrics, sonde__queue **out);
/* Takes a reference on b when accepted. SONDE_EFULL when full, SONDE_ESHUTDOWN when draining. */
int sonde__queue_push(sonde__queue *q, sonde_batch *b);
/* Stops accepting; done(arg) once every item is sent or given up (possibly before returning). */
void sonde__queue_drain(sonde__queue *q, void (*done)(void *arg), void *arg);
/* Gives up what is still queued or waiting to retry (counted as send_failed, logged); in-flight
 * sends are forgotten: their late callbacks are ignored. */
void sonde__queue_abort(sonde__queue *q);
size_t sonde__queue_len(const sonde__queue *q);
/* Frees; the queue must be drained or aborted. Closes its timers (the loop must run once more). */
void sonde__queue_free(sonde__queue *q);
#endif

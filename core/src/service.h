/* The service: components instantiated from a config, wired into pipelines, started in
 * dependency order and stopped in reverse with a drain deadline. */
#ifndef SONDE_SERVICE_H
#define SONDE_SERVICE_H
#include <uv.h>

#include "cfg.h"
#include "loader.h"
#include "telemetry.h"

typedef struct sonde__service sonde__service;

/* Resolves types, binds and validates every option of every component, checks the pipelines.
 * Nothing is created or started; on error err says what and where (file:line:col: path: ...).
 * root and reg are kept (borrowed) for the service's life; metrics is kept. */
int sonde__service_build(const sonde__cfg_node *root, sonde__registry *reg, uv_loop_t *loop,
                         sonde__metrics *metrics, sonde__service **out, char *err, size_t errlen);
/* Creates and starts extensions, exporters, processors, receivers, in that order. On failure
 * err says which component and why; call sonde__service_stop then free. */
int sonde__service_start(sonde__service *s, char *err, size_t errlen);
/* Receivers stop first, processors flush, exporters drain until deadline_ns from now, then what
 * is left is dropped and counted; done(arg) when everything is shut down and destroyed. */
void sonde__service_stop(sonde__service *s, int64_t deadline_ns, void (*done)(void *arg),
                         void *arg);
void sonde__service_free(sonde__service *s);
/* The YAML of every component's effective options (print-config --mode=effective). */
int sonde__service_emit(const sonde__service *s, sonde_buf *out);
/* service::telemetry, parsed. */
typedef struct sonde__telemetry_cfg {
  struct {
    int level; /* sonde_log_level */
  } logs;
  struct {
    int level; /* 0 none, 1 basic, 2 normal, 3 detailed */
    char *address;
    sonde_tablelist readers;
  } metrics;
} sonde__telemetry_cfg;
const sonde__telemetry_cfg *sonde__service_telemetry(const sonde__service *s);
/* The Prometheus endpoint to serve self-metrics on, or NULL for none. */
const char *sonde__service_metrics_endpoint(const sonde__service *s, char *buf, size_t len);
#endif

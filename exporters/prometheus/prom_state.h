/* The prometheus exporter's state: the latest value of every series it was given (otelcol's
 * lastValueAccumulator: cumulative points replace older ones, monotonic delta sums and delta
 * histograms are added up when their start meets the previous end), expired after
 * metric_expiration without updates, and rendered on each scrape in the Prometheus text format
 * 0.0.4 or OpenMetrics 1.0.0. Not thread-safe: one thread at a time (the exporter renders on the
 * thread pool while the loop leaves the state alone); no I/O.
 */
#ifndef PROM_STATE_H
#define PROM_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/pdata.h"

typedef struct prom_opts {
  const char *namespace_; /* sanitised as a label name; NULL or "" for none */
  bool add_suffixes;      /* unit and type suffixes (otelcol's add_metric_suffixes) */
  bool send_timestamps;
  bool without_scope_info;             /* no otel_scope_* labels */
  bool resource_to_telemetry;          /* resource attributes become labels of every series */
  bool resource_exclude_service_attrs; /* ... except service.name/namespace/instance.id */
  /* resource_constant_labels (wins over resource_to_telemetry when set): resource attributes
   * whose key matches an `included` glob (all when only `excluded` is given) and no `excluded`
   * glob become labels of every series. */
  bool resource_labels_set;
  char **resource_include, **resource_exclude;
  size_t n_include, n_exclude;
  /* const_labels: names as given (sanitised here), added to every series but target_info. */
  char **const_keys;
  char **const_values;
  size_t n_const;
  int64_t expiration_ns; /* series not updated for this long are dropped */
} prom_opts;

/* What happened to the points of one consume (added to). */
typedef struct prom_stats {
  uint64_t stored;     /* points that updated a series */
  uint64_t stale;      /* older than the stored point: ignored, as otelcol does */
  uint64_t conflicts;  /* name already used with another Prometheus type */
  uint64_t invalid;    /* no valid name, malformed buckets, temporality that cannot be exposed */
  uint64_t misaligned; /* delta histograms whose start lies before the previous end */
  uint64_t nomem;
} prom_stats;

typedef struct prom_state prom_state;

/* opts is copied (strings too). */
int prom_state_new(const prom_opts *opts, prom_state **out);
void prom_state_free(prom_state *s);

/* Accumulates every data point of req (borrowed). now_ns is a monotonic clock. The first problem
 * met is described in err (left alone when there is none). */
void prom_state_consume(prom_state *s, const sonde_metrics *req, int64_t now_ns, prom_stats *st,
                        char *err, size_t errlen);

/* Drops series not updated since now_ns - expiration; returns how many. */
size_t prom_state_expire(prom_state *s, int64_t now_ns);
size_t prom_state_series(const prom_state *s);
/* Changes whenever a render would give another body (points stored, series removed, a target's
 * labels changed), so a rendered body can be reused until then. */
uint64_t prom_state_generation(const prom_state *s);

/* Appends the exposition of every live series: text format 0.0.4, or OpenMetrics 1.0.0 (ending
 * in "# EOF"). Returns 0 or SONDE_ENOMEM. */
int prom_state_render(prom_state *s, bool openmetrics, sonde_buf *out);

#endif

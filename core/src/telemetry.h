/* Self-telemetry: a registry of counters and gauges rendered as Prometheus text, with otelcol's
 * metric names. Loop thread only. */
#ifndef SONDE_TELEMETRY_H
#define SONDE_TELEMETRY_H
#include "sonde/plugin.h"

typedef struct sonde__metrics sonde__metrics;

int sonde__metrics_new(sonde__metrics **out);
void sonde__metrics_free(sonde__metrics *m);
/* Finds or creates the series name{labels}; labels "k=v,k=v" (values unquoted; may be NULL).
 * The same name must keep one kind. *out borrowed from the registry. */
int sonde__metrics_get(sonde__metrics *m, sonde_metric_kind kind, const char *name,
                       const char *help, const char *labels, sonde_metric **out);
void sonde__metric_add(sonde_metric *s, double delta);
void sonde__metric_set(sonde_metric *s, double v);
double sonde__metric_value(const sonde_metric *s);
/* Refreshes the process metrics and appends the exposition text. */
int sonde__metrics_render(sonde__metrics *m, sonde_buf *out);
#endif

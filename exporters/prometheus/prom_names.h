/* OTLP -> Prometheus names and text, as otelcol's prometheus exporter does it (the
 * prometheus/otlptranslator rules with UnderscoreEscaping): metric names with unit and type
 * suffixes, label names, sample values as Go's strconv formats them, escaping.
 *
 * Strings returned as char * are malloc'd and taken by the caller; NULL means out of memory or,
 * where said, a name that normalises to nothing.
 */
#ifndef PROM_NAMES_H
#define PROM_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "sonde/pdata.h"

/* The OTel shape that decides suffixes (otlptranslator.MetricType). */
typedef enum prom_otel_kind {
  PROM_OTEL_GAUGE,             /* Gauge: unit "1" gets _ratio */
  PROM_OTEL_MONOTONIC_COUNTER, /* monotonic Sum: _total */
  PROM_OTEL_NONMONOTONIC_SUM,
  PROM_OTEL_HISTOGRAM,
  PROM_OTEL_EXP_HISTOGRAM,
  PROM_OTEL_SUMMARY,
} prom_otel_kind;

/* The Prometheus metric name of an OTel metric. namespace may be NULL or "" (it is prepended
 * as given: sanitise it with prom_label_name first). With suffixes: tokens of [a-zA-Z0-9:],
 * unit words ("s" -> seconds, "By/s" -> bytes_per_second, "{requests}" dropped), _total for
 * counters, _ratio for gauges of unit "1". NULL also when the name normalises to nothing
 * (*empty set then). */
char *prom_metric_name(const char *name, const char *unit, prom_otel_kind kind,
                       const char *namespace_, bool add_suffixes, bool *empty);

/* A label name from an attribute key: invalid characters become '_', a leading digit gets "key_",
 * a single leading '_' gets "key". NULL with *empty set when nothing valid is left. */
char *prom_label_name(const char *key, bool *empty);

/* A value as Go's strconv.FormatFloat(v, 'g', -1, 64): "+Inf", "-Inf", "NaN", "1e+06", "0.25".
 * out must hold 32 bytes; returns its length. */
int prom_fmt_float(char *out, double v);
/* OpenMetrics float: as above, and integral values without exponent get ".0". */
int prom_fmt_om_float(char *out, double v);

/* pcommon Value.AsString(): strings as is, ints decimal, doubles as ES6 numbers, bools
 * true/false, bytes base64, arrays and maps as JSON (map keys sorted). NULL value: "". */
char *prom_any_string(const Opentelemetry__Proto__Common__V1__AnyValue *v);

/* Whether s is valid UTF-8 as Go's utf8.ValidString sees it (no overlong forms, surrogates or
 * code points past U+10FFFF). Prometheus refuses a whole scrape over one invalid label value. */
bool prom_utf8_valid(const char *s);
/* A copy of s with every invalid byte replaced by U+FFFD (strings.ToValidUTF8 per byte). */
char *prom_utf8_sanitize(const char *s);

/* Appends s escaped for a label value (\\, \", \n) or for HELP (\\, \n; also \" when quote). */
int prom_put_escaped(sonde_buf *out, const char *s, bool quote);

#endif

/* The `debug` exporter: otelcol's debugexporter, writing through the host logger (stderr).
 *
 * basic: one line per batch with counts; normal: about one line per item; detailed: every item
 * with all its fields, in the layout of otelcol's otlptext marshaler. Sampling follows zap's
 * sampler per signal: in each second the first sampling_initial batches are logged, then every
 * sampling_thereafter-th one (1: all).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sonde/sonde.h"

typedef struct debug_config {
  int verbosity; /* 0 basic, 1 normal, 2 detailed */
  int64_t sampling_initial;
  int64_t sampling_thereafter;
} debug_config;

static const char *const verbosities[] = {"basic", "normal", "detailed", NULL};

static const sonde_option debug_options[] = {
    SONDE_OPT_ENUMV("verbosity", debug_config, verbosity, "basic", verbosities,
                    "basic: counts per batch; normal: a line per item; detailed: every field"),
    SONDE_OPT_RANGE("sampling_initial", SONDE_OPT_INT, debug_config, sampling_initial, "2", 0, 1e9,
                    "batches logged each second before sampling starts"),
    SONDE_OPT_RANGE("sampling_thereafter", SONDE_OPT_INT, debug_config, sampling_thereafter, "1", 0,
                    1e9, "after that, every Nth batch is logged (1: no sampling)"),
    SONDE_OPT_END,
};

typedef struct debugexp {
  const sonde_host *h;
  const debug_config *cfg;
  int64_t window[4]; /* when the current sampling window ends (ns, monotonic), per signal */
  int64_t seen[4];   /* batches seen in it */
  sonde_buf out;
} debugexp;

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;

/* Output is best effort: a buffer that cannot grow (out of memory) only shortens the dump. */

/* ---- value formatting (pcommon's String / AsString) --------------------------------------------
 */

static void put_double(sonde_buf *o, double d) {
  /* The shortest text that reads back as the same double, like Go's strconv 'g' -1. */
  char tmp[64];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
    if (strtod(tmp, NULL) == d) break;
  }
  sonde_buf_printf(o, "%s", tmp);
}

static void put_hex(sonde_buf *o, ProtobufCBinaryData id) {
  for (size_t i = 0; i < id.len; i++)
    sonde_buf_printf(o, "%02x", id.data[i]);
}

static void put_json_str(sonde_buf *o, const char *s) {
  sonde_buf_append(o, "\"", 1);
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      sonde_buf_printf(o, "\\%c", c);
    else if (c < 0x20)
      sonde_buf_printf(o, "\\u%04x", c);
    else
      sonde_buf_append(o, s, 1);
  }
  sonde_buf_append(o, "\"", 1);
}

static void put_base64(sonde_buf *o, ProtobufCBinaryData b) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < b.len; i += 3) {
    uint32_t v = (uint32_t)b.data[i] << 16;
    if (i + 1 < b.len) v |= (uint32_t)b.data[i + 1] << 8;
    if (i + 2 < b.len) v |= b.data[i + 2];
    char q[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63], i + 1 < b.len ? tbl[(v >> 6) & 63] : '=',
                 i + 2 < b.len ? tbl[v & 63] : '='};
    sonde_buf_append(o, q, 4);
  }
}

static void put_as_string(sonde_buf *o, const any_t *v, bool json);

static void put_kvlist_json(sonde_buf *o, kv_t **kv, size_t n) {
  sonde_buf_append(o, "{", 1);
  for (size_t i = 0; i < n; i++) {
    if (i) sonde_buf_append(o, ",", 1);
    put_json_str(o, kv[i]->key);
    sonde_buf_append(o, ":", 1);
    put_as_string(o, kv[i]->value, true);
  }
  sonde_buf_append(o, "}", 1);
}

/* AsString; json: the value as it appears nested inside a map or slice. */
static void put_as_string(sonde_buf *o, const any_t *v, bool json) {
  if (!v) {
    if (json) sonde_buf_printf(o, "null");
    return;
  }
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    if (json)
      put_json_str(o, v->string_value);
    else
      sonde_buf_printf(o, "%s", v->string_value ? v->string_value : "");
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    sonde_buf_printf(o, "%s", v->bool_value ? "true" : "false");
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    sonde_buf_printf(o, "%" PRId64, v->int_value);
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    put_double(o, v->double_value);
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
    if (json) sonde_buf_append(o, "\"", 1);
    put_base64(o, v->bytes_value);
    if (json) sonde_buf_append(o, "\"", 1);
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
    sonde_buf_append(o, "[", 1);
    for (size_t i = 0; v->array_value && i < v->array_value->n_values; i++) {
      if (i) sonde_buf_append(o, ",", 1);
      put_as_string(o, v->array_value->values[i], true);
    }
    sonde_buf_append(o, "]", 1);
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
    put_kvlist_json(o, v->kvlist_value ? v->kvlist_value->values : NULL,
                    v->kvlist_value ? v->kvlist_value->n_values : 0);
    break;
  default:
    if (json) sonde_buf_printf(o, "null");
    break;
  }
}

static const char *type_name(const any_t *v) {
  switch (v ? v->value_case : 0) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    return "Str";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    return "Bool";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    return "Int";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    return "Double";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
    return "Bytes";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
    return "Slice";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
    return "Map";
  default:
    return "Empty";
  }
}

/* Go's time.Time.String() in UTC: "2023-11-11 04:49:03.509369393 +0000 UTC". */
static void put_ts(sonde_buf *o, uint64_t ns) {
  time_t sec = (time_t)(ns / 1000000000u);
  unsigned frac = (unsigned)(ns % 1000000000u);
  struct tm tm;
  gmtime_r(&sec, &tm);
  char t[64];
  strftime(t, sizeof(t), "%Y-%m-%d %H:%M:%S", &tm);
  sonde_buf_printf(o, "%s", t);
  if (frac) {
    char f[16];
    snprintf(f, sizeof(f), "%09u", frac);
    size_t l = strlen(f);
    while (l > 0 && f[l - 1] == '0')
      f[--l] = 0;
    sonde_buf_printf(o, ".%s", f);
  }
  sonde_buf_printf(o, " +0000 UTC");
}

/* "Header:" then "     -> k: Type(v)" lines; nothing when there are no attributes. */
static void put_attrs(sonde_buf *o, const char *indent, const char *header, kv_t **kv, size_t n) {
  if (!n) return;
  sonde_buf_printf(o, "%s%s:\n", indent, header);
  for (size_t i = 0; i < n; i++) {
    sonde_buf_printf(o, "%s     -> %s: %s(", indent, kv[i]->key, type_name(kv[i]->value));
    put_as_string(o, kv[i]->value, false);
    sonde_buf_printf(o, ")\n");
  }
}

/* " k=v k=v" (normal verbosity). */
static void put_flat_attrs(sonde_buf *o, const char *sep, kv_t **kv, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sonde_buf_printf(o, "%s%s=", i ? sep : "", kv[i]->key);
    put_as_string(o, kv[i]->value, false);
  }
}

static void put_scope(sonde_buf *o,
                      const Opentelemetry__Proto__Common__V1__InstrumentationScope *s) {
  sonde_buf_printf(o, "InstrumentationScope %s %s\n", s && s->name ? s->name : "",
                   s && s->version ? s->version : "");
  if (s) put_attrs(o, "", "InstrumentationScope attributes", s->attributes, s->n_attributes);
}

static void put_resource(sonde_buf *o, const Opentelemetry__Proto__Resource__V1__Resource *r,
                         const char *schema) {
  sonde_buf_printf(o, "Resource SchemaURL: %s\n", schema ? schema : "");
  if (r) put_attrs(o, "", "Resource attributes", r->attributes, r->n_attributes);
}

/* ---- traces -----------------------------------------------------------------------------------
 */

static const char *span_kind(int k) {
  static const char *const n[] = {"Unspecified", "Internal", "Server",
                                  "Client",      "Producer", "Consumer"};
  return k >= 0 && k < 6 ? n[k] : "Unspecified";
}

static const char *status_code(int c) {
  return c == 1 ? "Ok" : c == 2 ? "Error" : "Unset";
}

static void traces_detailed(sonde_buf *o, const sonde_traces *t) {
  for (size_t i = 0; i < t->n_resource_spans; i++) {
    const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = t->resource_spans[i];
    sonde_buf_printf(o, "ResourceSpans #%zu\n", i);
    put_resource(o, rs->resource, rs->schema_url);
    for (size_t j = 0; j < rs->n_scope_spans; j++) {
      const Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = rs->scope_spans[j];
      sonde_buf_printf(o, "ScopeSpans #%zu\nScopeSpans SchemaURL: %s\n", j,
                       ss->schema_url ? ss->schema_url : "");
      put_scope(o, ss->scope);
      for (size_t k = 0; k < ss->n_spans; k++) {
        const Opentelemetry__Proto__Trace__V1__Span *sp = ss->spans[k];
        sonde_buf_printf(o, "Span #%zu\n    %-15s: ", k, "Trace ID");
        put_hex(o, sp->trace_id);
        sonde_buf_printf(o, "\n    %-15s: ", "Parent ID");
        put_hex(o, sp->parent_span_id);
        sonde_buf_printf(o, "\n    %-15s: ", "ID");
        put_hex(o, sp->span_id);
        sonde_buf_printf(o, "\n    %-15s: %s\n    %-15s: %s\n", "Name", sp->name ? sp->name : "",
                         "Kind", span_kind(sp->kind));
        if (sp->trace_state && sp->trace_state[0])
          sonde_buf_printf(o, "    %-15s: %s\n", "TraceState", sp->trace_state);
        sonde_buf_printf(o, "    %-15s: ", "Start time");
        put_ts(o, sp->start_time_unix_nano);
        sonde_buf_printf(o, "\n    %-15s: ", "End time");
        put_ts(o, sp->end_time_unix_nano);
        sonde_buf_printf(o, "\n    %-15s: %s\n    %-15s: %s\n", "Status code",
                         status_code(sp->status ? sp->status->code : 0), "Status message",
                         sp->status && sp->status->message ? sp->status->message : "");
        put_attrs(o, "", "Attributes", sp->attributes, sp->n_attributes);
        if (sp->n_events) sonde_buf_printf(o, "Events:\n");
        for (size_t e = 0; e < sp->n_events; e++) {
          const Opentelemetry__Proto__Trace__V1__Span__Event *ev = sp->events[e];
          sonde_buf_printf(o, "SpanEvent #%zu\n     -> Name: %s\n     -> Timestamp: ", e,
                           ev->name ? ev->name : "");
          put_ts(o, ev->time_unix_nano);
          sonde_buf_printf(o, "\n     -> DroppedAttributesCount: %u\n",
                           ev->dropped_attributes_count);
          put_attrs(o, "", "     -> Attributes:", ev->attributes, ev->n_attributes);
        }
        if (sp->n_links) sonde_buf_printf(o, "Links:\n");
        for (size_t l = 0; l < sp->n_links; l++) {
          const Opentelemetry__Proto__Trace__V1__Span__Link *ln = sp->links[l];
          sonde_buf_printf(o, "SpanLink #%zu\n     -> Trace ID: ", l);
          put_hex(o, ln->trace_id);
          sonde_buf_printf(o, "\n     -> ID: ");
          put_hex(o, ln->span_id);
          sonde_buf_printf(o, "\n     -> TraceState: %s\n     -> DroppedAttributesCount: %u\n",
                           ln->trace_state ? ln->trace_state : "", ln->dropped_attributes_count);
          put_attrs(o, "", "     -> Attributes:", ln->attributes, ln->n_attributes);
        }
      }
    }
  }
}

static void traces_normal(sonde_buf *o, const sonde_traces *t) {
  for (size_t i = 0; i < t->n_resource_spans; i++)
    for (size_t j = 0; j < t->resource_spans[i]->n_scope_spans; j++) {
      const Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = t->resource_spans[i]->scope_spans[j];
      for (size_t k = 0; k < ss->n_spans; k++) {
        const Opentelemetry__Proto__Trace__V1__Span *sp = ss->spans[k];
        sonde_buf_printf(o, "%s ", sp->name ? sp->name : "");
        put_hex(o, sp->trace_id);
        sonde_buf_printf(o, " ");
        put_hex(o, sp->span_id);
        if (sp->n_attributes) {
          sonde_buf_printf(o, " ");
          put_flat_attrs(o, " ", sp->attributes, sp->n_attributes);
        }
        sonde_buf_printf(o, "\n");
      }
    }
}

/* ---- metrics ----------------------------------------------------------------------------------
 */

typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint ndp_t;

static const char *temporality(int t) {
  return t == 1 ? "Delta" : t == 2 ? "Cumulative" : "Unspecified";
}

static void number_points_detailed(sonde_buf *o, ndp_t **p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sonde_buf_printf(o, "NumberDataPoints #%zu\n", i);
    put_attrs(o, "", "Data point attributes", p[i]->attributes, p[i]->n_attributes);
    sonde_buf_printf(o, "StartTimestamp: ");
    put_ts(o, p[i]->start_time_unix_nano);
    sonde_buf_printf(o, "\nTimestamp: ");
    put_ts(o, p[i]->time_unix_nano);
    sonde_buf_printf(o, "\n");
    if (p[i]->value_case == OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT)
      sonde_buf_printf(o, "Value: %" PRId64 "\n", p[i]->as_int);
    else if (p[i]->value_case ==
             OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE)
      sonde_buf_printf(o, "Value: %f\n", p[i]->as_double);
  }
}

static void metric_detailed(sonde_buf *o, const metric_t *m) {
  static const char *const types[] = {[5] = "Gauge",
                                      [7] = "Sum",
                                      [9] = "Histogram",
                                      [10] = "ExponentialHistogram",
                                      [11] = "Summary"};
  const char *ty =
      m->data_case > 0 && m->data_case <= 11 && types[m->data_case] ? types[m->data_case] : "Empty";
  sonde_buf_printf(o,
                   "Descriptor:\n     -> Name: %s\n     -> Description: %s\n     -> Unit: %s\n"
                   "     -> DataType: %s\n",
                   m->name ? m->name : "", m->description ? m->description : "",
                   m->unit ? m->unit : "", ty);
  switch (m->data_case) {
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    number_points_detailed(o, m->gauge->data_points, m->gauge->n_data_points);
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
    sonde_buf_printf(o, "     -> IsMonotonic: %s\n     -> AggregationTemporality: %s\n",
                     m->sum->is_monotonic ? "true" : "false",
                     temporality(m->sum->aggregation_temporality));
    number_points_detailed(o, m->sum->data_points, m->sum->n_data_points);
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
    sonde_buf_printf(o, "     -> AggregationTemporality: %s\n",
                     temporality(m->histogram->aggregation_temporality));
    for (size_t i = 0; i < m->histogram->n_data_points; i++) {
      const Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *p = m->histogram->data_points[i];
      sonde_buf_printf(o, "HistogramDataPoints #%zu\n", i);
      put_attrs(o, "", "Data point attributes", p->attributes, p->n_attributes);
      sonde_buf_printf(o, "StartTimestamp: ");
      put_ts(o, p->start_time_unix_nano);
      sonde_buf_printf(o, "\nTimestamp: ");
      put_ts(o, p->time_unix_nano);
      sonde_buf_printf(o, "\nCount: %" PRIu64 "\n", p->count);
      if (p->_sum_case) sonde_buf_printf(o, "Sum: %f\n", p->sum);
      if (p->_min_case) sonde_buf_printf(o, "Min: %f\n", p->min);
      if (p->_max_case) sonde_buf_printf(o, "Max: %f\n", p->max);
      for (size_t b = 0; b < p->n_explicit_bounds; b++)
        sonde_buf_printf(o, "ExplicitBounds #%zu: %f\n", b, p->explicit_bounds[b]);
      for (size_t b = 0; b < p->n_bucket_counts; b++)
        sonde_buf_printf(o, "Buckets #%zu, Count: %" PRIu64 "\n", b, p->bucket_counts[b]);
    }
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    sonde_buf_printf(o, "     -> AggregationTemporality: %s\n",
                     temporality(m->exponential_histogram->aggregation_temporality));
    for (size_t i = 0; i < m->exponential_histogram->n_data_points; i++) {
      const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint *p =
          m->exponential_histogram->data_points[i];
      sonde_buf_printf(o, "ExponentialHistogramDataPoints #%zu\n", i);
      put_attrs(o, "", "Data point attributes", p->attributes, p->n_attributes);
      sonde_buf_printf(o, "StartTimestamp: ");
      put_ts(o, p->start_time_unix_nano);
      sonde_buf_printf(o, "\nTimestamp: ");
      put_ts(o, p->time_unix_nano);
      sonde_buf_printf(o, "\nCount: %" PRIu64 "\nScale: %d\nZeroCount: %" PRIu64 "\n", p->count,
                       p->scale, p->zero_count);
      if (p->_sum_case) sonde_buf_printf(o, "Sum: %f\n", p->sum);
    }
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
    for (size_t i = 0; i < m->summary->n_data_points; i++) {
      const Opentelemetry__Proto__Metrics__V1__SummaryDataPoint *p = m->summary->data_points[i];
      sonde_buf_printf(o, "SummaryDataPoints #%zu\n", i);
      put_attrs(o, "", "Data point attributes", p->attributes, p->n_attributes);
      sonde_buf_printf(o, "StartTimestamp: ");
      put_ts(o, p->start_time_unix_nano);
      sonde_buf_printf(o, "\nTimestamp: ");
      put_ts(o, p->time_unix_nano);
      sonde_buf_printf(o, "\nCount: %" PRIu64 "\nSum: %f\n", p->count, p->sum);
      for (size_t q = 0; q < p->n_quantile_values; q++)
        sonde_buf_printf(o, "QuantileValue #%zu: Quantile %f, Value %f\n", q,
                         p->quantile_values[q]->quantile, p->quantile_values[q]->value);
    }
    break;
  default:
    break;
  }
}

static void metrics_detailed(sonde_buf *o, const sonde_metrics *md) {
  for (size_t i = 0; i < md->n_resource_metrics; i++) {
    const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = md->resource_metrics[i];
    sonde_buf_printf(o, "ResourceMetrics #%zu\n", i);
    put_resource(o, rm->resource, rm->schema_url);
    for (size_t j = 0; j < rm->n_scope_metrics; j++) {
      const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[j];
      sonde_buf_printf(o, "ScopeMetrics #%zu\nScopeMetrics SchemaURL: %s\n", j,
                       sm->schema_url ? sm->schema_url : "");
      put_scope(o, sm->scope);
      for (size_t k = 0; k < sm->n_metrics; k++) {
        sonde_buf_printf(o, "Metric #%zu\n", k);
        metric_detailed(o, sm->metrics[k]);
      }
    }
  }
}

static void number_points_normal(sonde_buf *o, const char *name, ndp_t **p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sonde_buf_printf(o, "%s{", name);
    put_flat_attrs(o, ",", p[i]->attributes, p[i]->n_attributes);
    sonde_buf_printf(o, "} ");
    if (p[i]->value_case == OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT)
      sonde_buf_printf(o, "%" PRId64, p[i]->as_int);
    else
      put_double(o, p[i]->as_double);
    sonde_buf_printf(o, "\n");
  }
}

static void metrics_normal(sonde_buf *o, const sonde_metrics *md) {
  for (size_t i = 0; i < md->n_resource_metrics; i++) {
    const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = md->resource_metrics[i];
    sonde_buf_printf(o, "ResourceMetrics #%zu", i);
    if (rm->schema_url && rm->schema_url[0]) sonde_buf_printf(o, " [%s]", rm->schema_url);
    if (rm->resource && rm->resource->n_attributes) {
      sonde_buf_printf(o, " ");
      put_flat_attrs(o, " ", rm->resource->attributes, rm->resource->n_attributes);
    }
    sonde_buf_printf(o, "\n");
    for (size_t j = 0; j < rm->n_scope_metrics; j++) {
      const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[j];
      const char *sn = sm->scope && sm->scope->name ? sm->scope->name : "";
      const char *sv = sm->scope && sm->scope->version ? sm->scope->version : "";
      sonde_buf_printf(o, "ScopeMetrics #%zu %s%s%s\n", j, sn, sv[0] ? "@" : "", sv);
      for (size_t k = 0; k < sm->n_metrics; k++) {
        const metric_t *m = sm->metrics[k];
        const char *name = m->name ? m->name : "";
        if (m->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE)
          number_points_normal(o, name, m->gauge->data_points, m->gauge->n_data_points);
        else if (m->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM)
          number_points_normal(o, name, m->sum->data_points, m->sum->n_data_points);
        else if (m->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM)
          for (size_t p = 0; p < m->histogram->n_data_points; p++) {
            const Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *dp =
                m->histogram->data_points[p];
            sonde_buf_printf(o, "%s{", name);
            put_flat_attrs(o, ",", dp->attributes, dp->n_attributes);
            sonde_buf_printf(o, "} count=%" PRIu64, dp->count);
            if (dp->_sum_case) {
              sonde_buf_printf(o, " sum=");
              put_double(o, dp->sum);
            }
            for (size_t b = 0; b < dp->n_bucket_counts; b++) {
              sonde_buf_printf(o, " ");
              if (b < dp->n_explicit_bounds) {
                sonde_buf_printf(o, "le");
                put_double(o, dp->explicit_bounds[b]);
                sonde_buf_printf(o, "=");
              }
              sonde_buf_printf(o, "%" PRIu64, dp->bucket_counts[b]);
            }
            sonde_buf_printf(o, "\n");
          }
        else
          sonde_buf_printf(o, "%s (%s)\n", name, "points not shown at normal verbosity");
      }
    }
  }
}

/* ---- logs -------------------------------------------------------------------------------------
 */

static const char *severity(int s) {
  static const char *const base[] = {"Trace", "Debug", "Info", "Warn", "Error", "Fatal"};
  static char buf[16]; /* loop thread only */
  if (s <= 0 || s > 24) return "Unspecified";
  int b = (s - 1) / 4, k = (s - 1) % 4;
  if (k == 0) return base[b];
  snprintf(buf, sizeof(buf), "%s%d", base[b], k + 1);
  return buf;
}

static void logs_detailed(sonde_buf *o, const sonde_logs *ld) {
  for (size_t i = 0; i < ld->n_resource_logs; i++) {
    const Opentelemetry__Proto__Logs__V1__ResourceLogs *rl = ld->resource_logs[i];
    sonde_buf_printf(o, "ResourceLog #%zu\n", i);
    put_resource(o, rl->resource, rl->schema_url);
    for (size_t j = 0; j < rl->n_scope_logs; j++) {
      const Opentelemetry__Proto__Logs__V1__ScopeLogs *sl = rl->scope_logs[j];
      sonde_buf_printf(o, "ScopeLogs #%zu\nScopeLogs SchemaURL: %s\n", j,
                       sl->schema_url ? sl->schema_url : "");
      put_scope(o, sl->scope);
      for (size_t k = 0; k < sl->n_log_records; k++) {
        const Opentelemetry__Proto__Logs__V1__LogRecord *lr = sl->log_records[k];
        sonde_buf_printf(o, "LogRecord #%zu\nObservedTimestamp: ", k);
        put_ts(o, lr->observed_time_unix_nano);
        sonde_buf_printf(o, "\nTimestamp: ");
        put_ts(o, lr->time_unix_nano);
        sonde_buf_printf(o, "\nSeverityText: %s\nSeverityNumber: %s(%d)\n",
                         lr->severity_text ? lr->severity_text : "", severity(lr->severity_number),
                         (int)lr->severity_number);
        if (lr->event_name && lr->event_name[0])
          sonde_buf_printf(o, "EventName: %s\n", lr->event_name);
        sonde_buf_printf(o, "Body: %s(", type_name(lr->body));
        put_as_string(o, lr->body, false);
        sonde_buf_printf(o, ")\n");
        put_attrs(o, "", "Attributes", lr->attributes, lr->n_attributes);
        sonde_buf_printf(o, "Trace ID: ");
        put_hex(o, lr->trace_id);
        sonde_buf_printf(o, "\nSpan ID: ");
        put_hex(o, lr->span_id);
        sonde_buf_printf(o, "\nFlags: %u\n", lr->flags);
      }
    }
  }
}

static void logs_normal(sonde_buf *o, const sonde_logs *ld) {
  for (size_t i = 0; i < ld->n_resource_logs; i++)
    for (size_t j = 0; j < ld->resource_logs[i]->n_scope_logs; j++) {
      const Opentelemetry__Proto__Logs__V1__ScopeLogs *sl = ld->resource_logs[i]->scope_logs[j];
      for (size_t k = 0; k < sl->n_log_records; k++) {
        const Opentelemetry__Proto__Logs__V1__LogRecord *lr = sl->log_records[k];
        put_as_string(o, lr->body, false);
        sonde_buf_printf(o, " ");
        put_flat_attrs(o, " ", lr->attributes, lr->n_attributes);
        sonde_buf_printf(o, "\n");
      }
    }
}

/* ---- component --------------------------------------------------------------------------------
 */

#define CHUNK 1600 /* bytes of dump per log entry */

/* zap's sampler: per one-second window, the first `initial` pass, then every `thereafter`th. As
 * in zap, a window starts at the first entry after the previous one ended (not on a whole second),
 * so a burst is never split in two windows by the clock. */
static bool sampled(debugexp *d, int si) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  if (now >= d->window[si]) {
    d->window[si] = now + 1000000000;
    d->seen[si] = 0;
  }
  int64_t n = ++d->seen[si];
  if (n <= d->cfg->sampling_initial) return true;
  int64_t t = d->cfg->sampling_thereafter;
  return t > 0 && (n - d->cfg->sampling_initial) % t == 0;
}

static size_t metric_count(const sonde_metrics *m) {
  size_t c = 0;
  for (size_t i = 0; i < m->n_resource_metrics; i++)
    for (size_t j = 0; j < m->resource_metrics[i]->n_scope_metrics; j++)
      c += m->resource_metrics[i]->scope_metrics[j]->n_metrics;
  return c;
}

static int debug_consume(void *inst, sonde_batch *b) {
  debugexp *d = inst;
  sonde_signal sig = sonde_batch_signal(b);
  if (!sampled(d, sonde_signal_index(sig))) return 0;
  size_t items = sonde_batch_items(b);
  int verbosity = d->cfg->verbosity;
  sonde_buf *o = &d->out;
  o->len = 0;
  switch (sig) {
  case SONDE_SIGNAL_TRACES: {
    const sonde_traces *t = sonde_batch_traces(b);
    sonde_log(d->h, SONDE_LOG_INFO, "Traces {\"resource spans\": %zu, \"spans\": %zu}",
              t->n_resource_spans, items);
    if (verbosity == 2)
      traces_detailed(o, t);
    else if (verbosity == 1)
      traces_normal(o, t);
    break;
  }
  case SONDE_SIGNAL_METRICS: {
    const sonde_metrics *m = sonde_batch_metrics(b);
    sonde_log(d->h, SONDE_LOG_INFO,
              "Metrics {\"resource metrics\": %zu, \"metrics\": %zu, \"data points\": %zu}",
              m->n_resource_metrics, metric_count(m), items);
    if (verbosity == 2)
      metrics_detailed(o, m);
    else if (verbosity == 1)
      metrics_normal(o, m);
    break;
  }
  case SONDE_SIGNAL_LOGS: {
    const sonde_logs *l = sonde_batch_logs(b);
    sonde_log(d->h, SONDE_LOG_INFO, "Logs {\"resource logs\": %zu, \"log records\": %zu}",
              l->n_resource_logs, items);
    if (verbosity == 2)
      logs_detailed(o, l);
    else if (verbosity == 1)
      logs_normal(o, l);
    break;
  }
  case SONDE_SIGNAL_PROFILES: {
    const sonde_profiles *p = sonde_batch_profiles(b);
    sonde_log(d->h, SONDE_LOG_INFO,
              "Profiles {\"resource profiles\": %zu, \"sample records\": %zu}",
              p->n_resource_profiles, items);
    break;
  }
  }
  /* otelcol writes the dump as one entry; the host logger caps an entry at a couple of KiB, so
   * the dump goes out in entries of whole lines below that. */
  size_t off = 0;
  while (off < o->len) {
    size_t end = off + CHUNK < o->len ? off + CHUNK : o->len;
    if (end < o->len) {
      size_t nl = end;
      while (nl > off && o->data[nl - 1] != '\n')
        nl--;
      if (nl > off) end = nl;
    }
    size_t len = end - off;
    if (len && o->data[off + len - 1] == '\n') len--;
    sonde_log(d->h, SONDE_LOG_INFO, "%.*s", (int)len, (const char *)o->data + off);
    off = end;
  }
  return 0;
}

static int debug_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  debugexp *d = calloc(1, sizeof(*d));
  if (!d) return SONDE_ENOMEM;
  d->h = h;
  d->cfg = config;
  *inst = d;
  return 0;
}

static int debug_start(void *inst) {
  return 0;
}

static void debug_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  done(arg);
}

static void debug_destroy(void *inst) {
  debugexp *d = inst;
  if (!d) return;
  sonde_buf_free(&d->out);
  free(d);
}

static const sonde_component debug_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "debug",
    .doc = "logs what it receives: counts, one line per item, or every field",
    .signals = SONDE_SIGNAL_ALL,
    .options = debug_options,
    .config_size = sizeof(debug_config),
    .create = debug_create,
    .start = debug_start,
    .consume = debug_consume,
    .shutdown = debug_shutdown,
    .destroy = debug_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-debug", "1.0", &debug_component);

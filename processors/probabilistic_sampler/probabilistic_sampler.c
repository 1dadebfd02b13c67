/* The `probabilistic_sampler` processor: otelcol's probabilisticsamplerprocessor for traces and
 * logs. The decision per span / log record is psampler_logic.c; this file walks batches, removes
 * what is not sampled and writes the updated tracestate or sampling.* attributes, copy-on-write:
 * new arrays and new nodes in the batch arena, nothing written into nodes it did not allocate
 * except the request's resource array of its private batch. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psampler_logic.h"
#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans rspans_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans sspans_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;
typedef Opentelemetry__Proto__Logs__V1__ResourceLogs rlogs_t;
typedef Opentelemetry__Proto__Logs__V1__ScopeLogs slogs_t;
typedef Opentelemetry__Proto__Logs__V1__LogRecord log_t;

typedef struct ps_config {
  double sampling_percentage;
  int64_t hash_seed;
  int mode; /* ps_mode */
  bool fail_closed;
  int64_t sampling_precision;
  int attribute_source; /* 0 traceID, 1 record */
  char *from_attribute;
  char *sampling_priority;
  int hash; /* 0 fnv (otelcol >= 0.70), 1 murmur3 (before) */
} ps_config;

static const char *const mode_values[] = {"hash_seed", "proportional", "equalizing", NULL};
static const char *const source_values[] = {"traceID", "record", NULL};
static const char *const hash_values[] = {"fnv", "murmur3", NULL};

static const sonde_option ps_options[] = {
    SONDE_OPT("sampling_percentage", SONDE_OPT_DOUBLE, ps_config, sampling_percentage, "0",
              "percentage of traces or logs kept; 100 and above keep everything"),
    SONDE_OPT_RANGE("hash_seed", SONDE_OPT_INT, ps_config, hash_seed, "0", 0, 4294967295.0,
                    "seed of the hash (hash_seed mode); equal seeds make equal decisions"),
    SONDE_OPT_ENUMV("mode", ps_config, mode, "hash_seed", mode_values,
                    "hash_seed (FNV hash of the trace id), proportional or equalizing (OTEP 235)"),
    SONDE_OPT("fail_closed", SONDE_OPT_BOOL, ps_config, fail_closed, "true",
              "drop items whose sampling state is missing or invalid (else keep them)"),
    SONDE_OPT_RANGE("sampling_precision", SONDE_OPT_INT, ps_config, sampling_precision, "4", 1, 14,
                    "hex digits of the threshold written to tracestate th"),
    SONDE_OPT_ENUMV("attribute_source", ps_config, attribute_source, "traceID", source_values,
                    "logs: hash the trace id (traceID) or only from_attribute (record)"),
    SONDE_OPT("from_attribute", SONDE_OPT_STRING, ps_config, from_attribute, NULL,
              "logs: record attribute hashed when there is no trace id (or with record)"),
    SONDE_OPT("sampling_priority", SONDE_OPT_STRING, ps_config, sampling_priority, NULL,
              "logs: record attribute holding a percentage that overrides the decision"),
    SONDE_OPT_ENUMV("hash", ps_config, hash, "fnv", hash_values,
                    "sonde: fnv as otelcol >= v0.70, murmur3 as older otelcol"),
    SONDE_OPT_END,
};

static int ps_validate(const void *config, char *err, size_t errlen) {
  const ps_config *c = config;
  double ratio = c->sampling_percentage / 100.0;
  if (isnan(ratio) || isinf(ratio)) {
    snprintf(err, errlen, "sampling rate is invalid: %.2f%%", c->sampling_percentage);
    return SONDE_ECONFIG;
  }
  if (ratio < 0) {
    snprintf(err, errlen, "negative sampling rate: %.2f%%", c->sampling_percentage);
    return SONDE_ECONFIG;
  }
  if (ratio != 0 && ratio < 0x1p-56) {
    snprintf(err, errlen, "sampling rate is too small: %.2f%%", c->sampling_percentage);
    return SONDE_ECONFIG;
  }
  if (c->attribute_source == 1 && (!c->from_attribute || !*c->from_attribute)) {
    snprintf(err, errlen, "attribute_source record needs from_attribute");
    return SONDE_ECONFIG;
  }
  return 0;
}

/* ---- the processor -------------------------------------------------------------------------- */

typedef struct psp {
  const sonde_host *h;
  const ps_config *cfg;
  ps_sampler s;
  /* otelcol_processor_probabilistic_sampler_count_{traces,logs}_sampled{policy,sampled},
   * registered when first used. */
  sonde_metric *m[2][PS_POL_N][2];
  bool m_failed[2][PS_POL_N][2];
} psp;

static void count(psp *p, int logs, ps_policy pol, bool sampled) {
  sonde_metric **m = &p->m[logs][pol][sampled];
  if (!*m && !p->m_failed[logs][pol][sampled]) {
    char labels[320];
    const char *name = pol == PS_POL_ATTRIBUTE && p->cfg->from_attribute ? p->cfg->from_attribute
                                                                         : ps_policy_names[pol];
    snprintf(labels, sizeof labels, "policy=%s,sampled=%s", name, sampled ? "true" : "false");
    if (p->h->api->metric(p->h, SONDE_METRIC_COUNTER,
                          logs ? "otelcol_processor_probabilistic_sampler_count_logs_sampled"
                               : "otelcol_processor_probabilistic_sampler_count_traces_sampled",
                          logs ? "Count of logs that were sampled or not"
                               : "Count of traces that were sampled or not",
                          labels, m))
      p->m_failed[logs][pol][sampled] = true; /* uncounted rather than failing the data */
  }
  if (*m) p->h->api->metric_add(*m, 1);
}

static const kv_t *attr(kv_t *const *a, size_t n, const char *key) {
  for (size_t i = 0; key && i < n; i++)
    if (a[i] && a[i]->key && !strcmp(a[i]->key, key) && a[i]->value) return a[i];
  return NULL;
}

/* sampling.priority of a span, as OpenTracing's convention: 0 never, > 0 always, else defer. */
static int span_priority(const span_t *sp) {
  const kv_t *kv = attr(sp->attributes, sp->n_attributes, "sampling.priority");
  if (!kv) return -1;
  const any_t *v = kv->value;
  double x;
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    x = (double)v->int_value;
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    x = v->double_value;
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE: {
    char *end;
    if (!v->string_value || !*v->string_value) return -1;
    x = strtod(v->string_value, &end);
    if (*end) return -1;
    break;
  }
  default:
    return -1;
  }
  return x == 0 ? 0 : x > 0 ? 1 : -1;
}

static int decide_span(psp *p, sonde_batch *b, const span_t *sp, span_t **out) {
  ps_item it = {.trace_id = sp->trace_id.data,
                .trace_id_len = sp->trace_id.len,
                .tracestate = sp->trace_state,
                .span_priority = span_priority(sp)};
  ps_result r;
  ps_decide(&p->s, &it, &r);
  count(p, 0, r.policy, r.sampled);
  if (r.error && p->h->api->log_enabled(p->h, SONDE_LOG_DEBUG))
    sonde_log(p->h, SONDE_LOG_DEBUG, "traces sampler: %s", r.error);
  *out = NULL;
  if (!r.sampled) return 0;
  if (!r.tracestate_changed) {
    *out = (span_t *)sp;
    return 0;
  }
  span_t *c = sonde_batch_memdup(b, sp, sizeof(*sp));
  if (!c || !(c->trace_state = sonde_batch_strdup(b, r.tracestate))) return SONDE_ENOMEM;
  *out = c;
  return 0;
}

/* The bytes otelcol hashes for from_attribute: raw bytes, or the value as text. */
static const uint8_t *attr_bytes(const any_t *v, char *buf, size_t len, size_t *n) {
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    *n = v->string_value ? strlen(v->string_value) : 0;
    return (const uint8_t *)v->string_value;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
    *n = v->bytes_value.len;
    return v->bytes_value.data;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    *n = (size_t)snprintf(buf, len, "%" PRId64, v->int_value);
    return (const uint8_t *)buf;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    *n = (size_t)snprintf(buf, len, "%s", v->bool_value ? "true" : "false");
    return (const uint8_t *)buf;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    *n = (size_t)snprintf(buf, len, "%.17g", v->double_value);
    return (const uint8_t *)buf;
  default:
    *n = 0;
    return NULL;
  }
}

static const char *str_attr(const log_t *lr, const char *key) {
  const kv_t *kv = attr(lr->attributes, lr->n_attributes, key);
  return kv && kv->value->value_case ==
                     OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE
             ? kv->value->string_value
             : NULL;
}

/* A copy of lr with sampling.randomness / sampling.threshold set or removed. */
static log_t *log_with(sonde_batch *b, const log_t *lr, const ps_result *r) {
  log_t *c = sonde_batch_memdup(b, lr, sizeof(*lr));
  kv_t **a = sonde_batch_alloc(b, (lr->n_attributes + 2) * sizeof(*a));
  if (!c || !a) return NULL;
  size_t n = 0;
  for (size_t i = 0; i < lr->n_attributes; i++) {
    const kv_t *kv = lr->attributes[i];
    bool is_rv = kv && kv->key && !strcmp(kv->key, "sampling.randomness");
    bool is_th = kv && kv->key && !strcmp(kv->key, "sampling.threshold");
    if ((is_rv && r->set_rv) || (is_th && (r->set_th || r->remove_th))) continue;
    a[n++] = (kv_t *)kv;
  }
  if (r->set_rv && !(a[n++] = sonde_batch_kv_str(b, "sampling.randomness", r->rv))) return NULL;
  if (r->set_th && !(a[n++] = sonde_batch_kv_str(b, "sampling.threshold", r->th))) return NULL;
  c->attributes = a;
  c->n_attributes = n;
  return c;
}

static int decide_log(psp *p, sonde_batch *b, const log_t *lr, log_t **out) {
  const ps_config *cfg = p->cfg;
  ps_item it = {.trace_id = lr->trace_id.data,
                .trace_id_len = lr->trace_id.len,
                .is_log = true,
                .use_trace_id = cfg->attribute_source == 0,
                .log_th = str_attr(lr, "sampling.threshold"),
                .log_rv = str_attr(lr, "sampling.randomness")};
  char buf[40];
  const kv_t *src = attr(lr->attributes, lr->n_attributes, cfg->from_attribute);
  if (src) it.attr_bytes = attr_bytes(src->value, buf, sizeof buf, &it.attr_len);
  const kv_t *prio = attr(lr->attributes, lr->n_attributes, cfg->sampling_priority);
  if (prio) {
    /* A percentage that replaces the threshold (logs only, as otelcol). */
    double min_prob = 0;
    if (prio->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE)
      min_prob = prio->value->double_value / 100.0;
    else if (prio->value->value_case ==
             OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE)
      min_prob = (double)prio->value->int_value / 100.0;
    if (min_prob != 0 && ps_prob_to_threshold(min_prob, (int)cfg->sampling_precision, &it.prio_th))
      it.has_prio_th = true;
  }
  ps_result r;
  ps_decide(&p->s, &it, &r);
  count(p, 1, r.policy, r.sampled);
  if (r.error && p->h->api->log_enabled(p->h, SONDE_LOG_DEBUG))
    sonde_log(p->h, SONDE_LOG_DEBUG, "logs sampler: %s", r.error);
  *out = NULL;
  if (!r.sampled) return 0;
  if (!r.set_rv && !r.set_th && !r.remove_th) {
    *out = (log_t *)lr;
    return 0;
  }
  return (*out = log_with(b, lr, &r)) ? 0 : SONDE_ENOMEM;
}

/* Keeps the sampled spans: new scope and resource entries only where something changed. */
static int sample_traces(psp *p, sonde_batch *b, size_t *left) {
  sonde_traces *req = sonde_batch_traces(b);
  size_t nres = 0, kept_total = 0;
  rspans_t **res = sonde_batch_alloc(b, (req->n_resource_spans + 1) * sizeof(*res));
  if (!res) return SONDE_ENOMEM;
  for (size_t i = 0; i < req->n_resource_spans; i++) {
    rspans_t *rs = req->resource_spans[i];
    if (!rs) continue;
    sspans_t **scopes = sonde_batch_alloc(b, (rs->n_scope_spans + 1) * sizeof(*scopes));
    if (!scopes) return SONDE_ENOMEM;
    size_t nsc = 0;
    bool rs_changed = false;
    for (size_t k = 0; k < rs->n_scope_spans; k++) {
      sspans_t *ss = rs->scope_spans[k];
      if (!ss) {
        rs_changed = true;
        continue;
      }
      span_t **spans = sonde_batch_alloc(b, (ss->n_spans + 1) * sizeof(*spans));
      if (!spans) return SONDE_ENOMEM;
      size_t n = 0;
      bool changed = false;
      for (size_t s = 0; s < ss->n_spans; s++) {
        span_t *out = NULL;
        if (!ss->spans[s]) {
          changed = true;
          continue;
        }
        int rc = decide_span(p, b, ss->spans[s], &out);
        if (rc) return rc;
        if (out != ss->spans[s]) changed = true;
        if (out) spans[n++] = out;
      }
      kept_total += n;
      if (!changed) {
        scopes[nsc++] = ss;
        continue;
      }
      rs_changed = true;
      if (!n) continue; /* an empty scope goes, as otelcol removes it */
      sspans_t *c = sonde_batch_memdup(b, ss, sizeof(*ss));
      if (!c) return SONDE_ENOMEM;
      c->spans = spans;
      c->n_spans = n;
      scopes[nsc++] = c;
    }
    if (!rs_changed) {
      res[nres++] = rs;
      continue;
    }
    if (!nsc) continue;
    rspans_t *c = sonde_batch_memdup(b, rs, sizeof(*rs));
    if (!c) return SONDE_ENOMEM;
    c->scope_spans = scopes;
    c->n_scope_spans = nsc;
    res[nres++] = c;
  }
  /* The one write into memory this stage did not allocate: the request of its private batch. */
  req->resource_spans = res;
  req->n_resource_spans = nres;
  *left = kept_total;
  return 0;
}

static int sample_logs(psp *p, sonde_batch *b, size_t *left) {
  sonde_logs *req = sonde_batch_logs(b);
  size_t nres = 0, kept_total = 0;
  rlogs_t **res = sonde_batch_alloc(b, (req->n_resource_logs + 1) * sizeof(*res));
  if (!res) return SONDE_ENOMEM;
  for (size_t i = 0; i < req->n_resource_logs; i++) {
    rlogs_t *rl = req->resource_logs[i];
    if (!rl) continue;
    slogs_t **scopes = sonde_batch_alloc(b, (rl->n_scope_logs + 1) * sizeof(*scopes));
    if (!scopes) return SONDE_ENOMEM;
    size_t nsc = 0;
    bool rl_changed = false;
    for (size_t k = 0; k < rl->n_scope_logs; k++) {
      slogs_t *sl = rl->scope_logs[k];
      if (!sl) {
        rl_changed = true;
        continue;
      }
      log_t **recs = sonde_batch_alloc(b, (sl->n_log_records + 1) * sizeof(*recs));
      if (!recs) return SONDE_ENOMEM;
      size_t n = 0;
      bool changed = false;
      for (size_t s = 0; s < sl->n_log_records; s++) {
        log_t *out = NULL;
        if (!sl->log_records[s]) {
          changed = true;
          continue;
        }
        int rc = decide_log(p, b, sl->log_records[s], &out);
        if (rc) return rc;
        if (out != sl->log_records[s]) changed = true;
        if (out) recs[n++] = out;
      }
      kept_total += n;
      if (!changed) {
        scopes[nsc++] = sl;
        continue;
      }
      rl_changed = true;
      if (!n) continue;
      slogs_t *c = sonde_batch_memdup(b, sl, sizeof(*sl));
      if (!c) return SONDE_ENOMEM;
      c->log_records = recs;
      c->n_log_records = n;
      scopes[nsc++] = c;
    }
    if (!rl_changed) {
      res[nres++] = rl;
      continue;
    }
    if (!nsc) continue;
    rlogs_t *c = sonde_batch_memdup(b, rl, sizeof(*rl));
    if (!c) return SONDE_ENOMEM;
    c->scope_logs = scopes;
    c->n_scope_logs = nsc;
    res[nres++] = c;
  }
  req->resource_logs = res;
  req->n_resource_logs = nres;
  *left = kept_total;
  return 0;
}

static int ps_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const ps_config *c = config;
  psp *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = c;
  ps_make(&p->s, (ps_mode)c->mode, (float)c->sampling_percentage, (uint32_t)c->hash_seed,
          (int)c->sampling_precision, c->fail_closed, c->hash == 1);
  *inst = p;
  return 0;
}

static int ps_consume(void *inst, sonde_batch *b) {
  psp *p = inst;
  size_t left = 0;
  sonde_signal sig = sonde_batch_signal(b);
  int rc = sig == SONDE_SIGNAL_TRACES ? sample_traces(p, b, &left)
           : sig == SONDE_SIGNAL_LOGS ? sample_logs(p, b, &left)
                                      : SONDE_EINVAL;
  if (rc) {
    /* A failure half-way leaves the request as it came (arrays are swapped in at the end). */
    sonde_log(p->h, SONDE_LOG_WARN, "cannot sample a %s batch: %s", sonde_signal_name(sig),
              sonde_strerror(rc));
    return rc;
  }
  if (!left) return 0; /* nothing sampled: nothing passed on, as otelcol's ErrSkipProcessingData */
  return p->h->api->consume(p->h, b, NULL);
}

static void ps_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  done(arg);
}

static void ps_destroy(void *inst) {
  free(inst);
}

static const sonde_component ps_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "probabilistic_sampler",
    .doc = "otelcol's probabilistic sampler: hash_seed, proportional and equalizing modes",
    .signals = SONDE_SIGNAL_TRACES | SONDE_SIGNAL_LOGS,
    .flags = SONDE_COMP_MUTATES,
    .options = ps_options,
    .config_size = sizeof(ps_config),
    .validate = ps_validate,
    .create = ps_create,
    .consume = ps_consume,
    .shutdown = ps_shutdown,
    .destroy = ps_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-probabilistic-sampler", "1.0", &ps_component);

/* The `tail_sampling` processor: otelcol's tailsamplingprocessor on the loop thread.
 *
 * Spans are grouped by trace id without copying: the processor keeps a reference to every batch
 * that still has undecided spans, and each trace keeps pointers (batch, resource, scope, span) to
 * its spans. decision_wait after a trace's first span, the policies are evaluated; a sampled
 * trace is sent as a new batch whose request points into the held batches (sonde_batch_hold).
 *
 * Memory is bounded by num_traces: traces sit in a ring in arrival order; when it is full the
 * oldest is evicted. Unlike otelcol, an undecided trace evicted early is decided at once on the
 * spans it has (counted), so errors and slow requests survive a load above num_traces per
 * decision_wait. Decided traces stay in the ring (without spans) so that late spans follow the
 * decision.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <inttypes.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans rspans_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans sspans_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;

/* ---- options -------------------------------------------------------------------------------- */

enum { P_ALWAYS, P_LATENCY, P_STATUS, P_PROB, P_STRATTR, P_RATE, P_AND };
static const char *const type_values[] = {
    "always_sample",    "latency",       "status_code", "probabilistic",
    "string_attribute", "rate_limiting", "and",         NULL};

typedef struct latency_cfg {
  int64_t threshold_ms, upper_threshold_ms;
} latency_cfg;
typedef struct status_cfg {
  sonde_strlist status_codes;
} status_cfg;
typedef struct prob_cfg {
  char *hash_salt;
  double sampling_percentage;
} prob_cfg;
typedef struct strattr_cfg {
  char *key;
  sonde_strlist values;
  bool enabled_regex_matching, invert_match;
  int64_t cache_max_size;
} strattr_cfg;
typedef struct rate_cfg {
  int64_t spans_per_second;
} rate_cfg;
typedef struct and_cfg {
  sonde_tablelist and_sub_policy; /* policy_cfg, without `and` */
} and_cfg;

typedef struct policy_cfg {
  char *name;
  int type;
  latency_cfg latency;
  status_cfg status_code;
  prob_cfg probabilistic;
  strattr_cfg string_attribute;
  rate_cfg rate_limiting;
  and_cfg and_;
} policy_cfg;

typedef struct ts_config {
  int64_t decision_wait_ns;
  int64_t num_traces;
  int64_t expected_new_traces_per_sec;
  sonde_tablelist policies;
} ts_config;

static const sonde_option latency_opts[] = {
    SONDE_OPT_RANGE("threshold_ms", SONDE_OPT_INT, latency_cfg, threshold_ms, "0", 0, -1,
                    "traces lasting at least this long are sampled"),
    SONDE_OPT_RANGE("upper_threshold_ms", SONDE_OPT_INT, latency_cfg, upper_threshold_ms, "0", 0,
                    -1, "when set: only traces up to this long (0: no upper bound)"),
    SONDE_OPT_END,
};
static const sonde_option status_opts[] = {
    SONDE_OPT("status_codes", SONDE_OPT_STRLIST, status_cfg, status_codes, NULL,
              "OK, ERROR, UNSET: a trace with a span of one of them is sampled"),
    SONDE_OPT_END,
};
static const sonde_option prob_opts[] = {
    SONDE_OPT("hash_salt", SONDE_OPT_STRING, prob_cfg, hash_salt, "default-hash-seed",
              "mixed into the FNV-64a hash of the trace id"),
    SONDE_OPT_RANGE("sampling_percentage", SONDE_OPT_DOUBLE, prob_cfg, sampling_percentage, "0", 0,
                    100, "percentage of traces sampled"),
    SONDE_OPT_END,
};
static const sonde_option strattr_opts[] = {
    SONDE_OPT("key", SONDE_OPT_STRING, strattr_cfg, key, NULL, "resource or span attribute"),
    SONDE_OPT("values", SONDE_OPT_STRLIST, strattr_cfg, values, NULL,
              "values (or regexes) that sample the trace"),
    SONDE_OPT("enabled_regex_matching", SONDE_OPT_BOOL, strattr_cfg, enabled_regex_matching,
              "false", "values are regular expressions (matching anywhere in the value)"),
    SONDE_OPT("invert_match", SONDE_OPT_BOOL, strattr_cfg, invert_match, "false",
              "sample traces where no span matches"),
    SONDE_OPT_RANGE("cache_max_size", SONDE_OPT_INT, strattr_cfg, cache_max_size, "0", 0, -1,
                    "accepted for otelcol compatibility; unused"),
    SONDE_OPT_END,
};
static const sonde_option rate_opts[] = {
    SONDE_OPT_RANGE("spans_per_second", SONDE_OPT_INT, rate_cfg, spans_per_second, "0", 0, -1,
                    "spans per wall-clock second this policy samples"),
    SONDE_OPT_END,
};

#define POLICY_COMMON_OPTS                                                                         \
  {.name = "name",                                                                                 \
   .type = SONDE_OPT_STRING,                                                                       \
   .offset = offsetof(policy_cfg, name),                                                           \
   .doc = "policy name (metrics label)",                                                           \
   .flags = SONDE_OPT_REQUIRED},                                                                   \
      {.name = "type",                                                                             \
       .type = SONDE_OPT_ENUM,                                                                     \
       .offset = offsetof(policy_cfg, type),                                                       \
       .doc = "policy type",                                                                       \
       .enum_values = type_values,                                                                 \
       .flags = SONDE_OPT_REQUIRED},                                                               \
      SONDE_OPT_NESTED("latency", policy_cfg, latency, latency_opts, "latency policy"),            \
      SONDE_OPT_NESTED("status_code", policy_cfg, status_code, status_opts, "status_code policy"), \
      SONDE_OPT_NESTED("probabilistic", policy_cfg, probabilistic, prob_opts,                      \
                       "probabilistic policy"),                                                    \
      SONDE_OPT_NESTED("string_attribute", policy_cfg, string_attribute, strattr_opts,             \
                       "string_attribute policy"),                                                 \
      SONDE_OPT_NESTED("rate_limiting", policy_cfg, rate_limiting, rate_opts,                      \
                       "rate_limiting policy")

static const sonde_option sub_policy_opts[] = {POLICY_COMMON_OPTS, SONDE_OPT_END};
static const sonde_option and_opts[] = {
    SONDE_OPT_ROWS("and_sub_policy", and_cfg, and_sub_policy, policy_cfg, sub_policy_opts,
                   "policies that must all sample"),
    SONDE_OPT_END,
};
static const sonde_option policy_opts[] = {
    POLICY_COMMON_OPTS,
    SONDE_OPT_NESTED("and", policy_cfg, and_, and_opts, "and policy"),
    SONDE_OPT_END,
};

static const sonde_option ts_options[] = {
    SONDE_OPT("decision_wait", SONDE_OPT_DURATION, ts_config, decision_wait_ns, "30s",
              "time from a trace's first span to its decision"),
    SONDE_OPT_RANGE("num_traces", SONDE_OPT_INT, ts_config, num_traces, "50000", 1, 1e9,
                    "traces kept in memory; the oldest is decided early when full"),
    SONDE_OPT_RANGE("expected_new_traces_per_sec", SONDE_OPT_INT, ts_config,
                    expected_new_traces_per_sec, "0", 0, 1e9, "sizes the trace table up front"),
    SONDE_OPT_ROWS("policies", ts_config, policies, policy_cfg, policy_opts,
                   "sampling policies; a trace any of them samples is kept"),
    SONDE_OPT_END,
};

/* ---- policies ------------------------------------------------------------------------------- */

typedef struct policy {
  const policy_cfg *cfg;
  int status_mask; /* bit per status code */
  uint64_t prob_threshold;
  pcre2_code **re;
  size_t nre;
  pcre2_match_data *md;
  int64_t rl_second, rl_spans;
  struct policy *subs;
  size_t nsubs;
  sonde_metric *m[2]; /* count_traces_sampled{policy, sampled=false|true} */
} policy;

static void policy_free(policy *p) {
  for (size_t i = 0; i < p->nre; i++)
    pcre2_code_free(p->re[i]);
  free(p->re);
  pcre2_match_data_free(p->md);
  for (size_t i = 0; i < p->nsubs; i++)
    policy_free(&p->subs[i]);
  free(p->subs);
}

/* floor(MaxUint64 * ratio) with a 64-bit mantissa, as otelcol's big.Float calculateThreshold. */
static uint64_t prob_threshold(double pct) {
  if (pct >= 100) return UINT64_MAX;
  long double x = (long double)UINT64_MAX * (long double)(pct / 100);
  return x <= 0 ? 0 : (uint64_t)x;
}

static int policy_init(policy *p, const policy_cfg *c, bool nested, char *err, size_t errlen) {
  memset(p, 0, sizeof(*p));
  p->cfg = c;
  const char *name = c->name ? c->name : "?";
  if (!c->name || !*c->name) {
    snprintf(err, errlen, "every policy needs a name");
    return SONDE_ECONFIG;
  }
  switch (c->type) {
  case P_STATUS:
    for (size_t i = 0; i < c->status_code.status_codes.n; i++) {
      const char *s = c->status_code.status_codes.v[i];
      int bit = !strcmp(s, "UNSET") ? 0 : !strcmp(s, "OK") ? 1 : !strcmp(s, "ERROR") ? 2 : -1;
      if (bit < 0) {
        snprintf(err, errlen, "policy %s: unknown status code \"%s\"", name, s);
        return SONDE_ECONFIG;
      }
      p->status_mask |= 1 << bit;
    }
    if (!p->status_mask) {
      snprintf(err, errlen, "policy %s: status_codes must not be empty", name);
      return SONDE_ECONFIG;
    }
    break;
  case P_PROB:
    p->prob_threshold = prob_threshold(c->probabilistic.sampling_percentage);
    break;
  case P_STRATTR: {
    const strattr_cfg *s = &c->string_attribute;
    if (!s->key || !*s->key || !s->values.n) {
      snprintf(err, errlen, "policy %s: string_attribute needs key and values", name);
      return SONDE_ECONFIG;
    }
    if (!s->enabled_regex_matching) break;
    if (!(p->re = calloc(s->values.n, sizeof(*p->re)))) return SONDE_ENOMEM;
    for (size_t i = 0; i < s->values.n; i++, p->nre++) {
      int ec;
      PCRE2_SIZE off;
      p->re[i] = pcre2_compile((PCRE2_SPTR)s->values.v[i], PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &off, NULL);
      if (!p->re[i]) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, errlen, "policy %s: invalid regex \"%s\": %s", name, s->values.v[i],
                 (const char *)msg);
        return SONDE_ECONFIG;
      }
      if (!p->md && !(p->md = pcre2_match_data_create(4, NULL))) return SONDE_ENOMEM;
    }
    break;
  }
  case P_RATE:
    if (c->rate_limiting.spans_per_second <= 0) {
      snprintf(err, errlen, "policy %s: rate_limiting needs spans_per_second", name);
      return SONDE_ECONFIG;
    }
    break;
  case P_AND: {
    if (nested) {
      snprintf(err, errlen, "policy %s: and cannot be nested", name);
      return SONDE_ECONFIG;
    }
    const sonde_tablelist *l = &c->and_.and_sub_policy;
    if (!l->n) {
      snprintf(err, errlen, "policy %s: and needs and_sub_policy", name);
      return SONDE_ECONFIG;
    }
    if (!(p->subs = calloc(l->n, sizeof(*p->subs)))) return SONDE_ENOMEM;
    for (size_t i = 0; i < l->n; i++, p->nsubs++) {
      int rc = policy_init(&p->subs[i], (const policy_cfg *)l->items + i, true, err, errlen);
      if (rc) {
        policy_free(&p->subs[i]);
        return rc;
      }
    }
    break;
  }
  default:
    break;
  }
  return 0;
}

/* ---- traces --------------------------------------------------------------------------------- */

/* A batch with undecided spans: referenced until none is left. */
typedef struct held {
  sonde_batch *b;
  size_t pending;
  uint64_t stamp; /* dedup while emitting */
} held;

typedef struct spanref {
  held *h;
  rspans_t *rs;
  sspans_t *ss;
  span_t *sp;
} spanref;

enum { T_PENDING, T_SAMPLED, T_DROPPED };

typedef struct trace {
  uint8_t id[16];
  int64_t first_ns;
  int state;
  uint64_t span_count;
  spanref *refs;
  size_t n, cap;
  struct trace *hnext;
} trace;

typedef struct tsp {
  const sonde_host *h;
  const ts_config *cfg;
  policy *pol;
  size_t npol;
  trace **buckets;
  size_t nbuckets;
  trace **ring; /* arrival order; ring[(start + k) % cap] */
  size_t cap, start, count, decided_prefix;
  sonde_timer *timer;
  uint64_t stamp;
  bool stopping;
  sonde_metric *m_global[2], *m_on_memory, *m_early, *m_late, *m_new, *m_dropped_spans;
} tsp;

static uint64_t fnv64a(const void *salt, size_t sn, const uint8_t *b, size_t n) {
  uint64_t h = 14695981039346656037ull;
  const uint8_t *s = salt;
  for (size_t i = 0; i < sn; i++)
    h = (h ^ s[i]) * 1099511628211ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static size_t bucket_of(const tsp *p, const uint8_t id[16]) {
  return (size_t)(fnv64a(NULL, 0, id, 16) & (p->nbuckets - 1));
}

static trace *lookup(const tsp *p, const uint8_t id[16]) {
  for (trace *t = p->buckets[bucket_of(p, id)]; t; t = t->hnext)
    if (!memcmp(t->id, id, 16)) return t;
  return NULL;
}

static void unlink_trace(tsp *p, trace *t) {
  trace **pp = &p->buckets[bucket_of(p, t->id)];
  while (*pp && *pp != t)
    pp = &(*pp)->hnext;
  if (*pp) *pp = t->hnext;
}

static void release_refs(trace *t) {
  for (size_t i = 0; i < t->n; i++) {
    held *h = t->refs[i].h;
    if (--h->pending == 0) {
      sonde_batch_unref(h->b);
      free(h);
    }
  }
  free(t->refs);
  t->refs = NULL;
  t->n = t->cap = 0;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void metric_add(tsp *p, sonde_metric *m, double d) {
  if (m) p->h->api->metric_add(m, d);
}

/* ---- evaluation ----------------------------------------------------------------------------- */

static bool str_match(policy *p, const char *v) {
  const strattr_cfg *s = &p->cfg->string_attribute;
  for (size_t i = 0; i < s->values.n; i++) {
    if (p->nre) {
      if (pcre2_match(p->re[i], (PCRE2_SPTR)v, strlen(v), 0, 0, p->md, NULL) > 0) return true;
    } else if (!strcmp(v, s->values.v[i])) {
      return true;
    }
  }
  return false;
}

static bool attrs_match(policy *p, kv_t *const *a, size_t n) {
  const char *key = p->cfg->string_attribute.key;
  for (size_t i = 0; i < n; i++)
    if (a[i] && a[i]->key && !strcmp(a[i]->key, key) && a[i]->value &&
        a[i]->value->value_case ==
            OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
        a[i]->value->string_value && str_match(p, a[i]->value->string_value))
      return true;
  return false;
}

static bool evaluate(policy *p, const trace *t) {
  switch (p->cfg->type) {
  case P_ALWAYS:
    return true;
  case P_LATENCY: {
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < t->n; i++) {
      const span_t *sp = t->refs[i].sp;
      if (sp->start_time_unix_nano < lo) lo = sp->start_time_unix_nano;
      if (sp->end_time_unix_nano > hi) hi = sp->end_time_unix_nano;
    }
    if (!t->n || hi < lo) return false;
    int64_t ms = (int64_t)((hi - lo) / 1000000);
    const latency_cfg *l = &p->cfg->latency;
    return l->upper_threshold_ms ? ms >= l->threshold_ms && ms <= l->upper_threshold_ms
                                 : ms >= l->threshold_ms;
  }
  case P_STATUS:
    for (size_t i = 0; i < t->n; i++) {
      const span_t *sp = t->refs[i].sp;
      int code = sp->status ? (int)sp->status->code : 0;
      if (code >= 0 && code <= 2 && (p->status_mask & (1 << code))) return true;
    }
    return false;
  case P_PROB: {
    const char *salt = p->cfg->probabilistic.hash_salt;
    if (!salt || !*salt) salt = "default-hash-seed";
    return fnv64a(salt, strlen(salt), t->id, 16) <= p->prob_threshold;
  }
  case P_STRATTR: {
    bool m = false;
    for (size_t i = 0; i < t->n && !m; i++) {
      const spanref *r = &t->refs[i];
      m = (r->rs->resource &&
           attrs_match(p, r->rs->resource->attributes, r->rs->resource->n_attributes)) ||
          attrs_match(p, r->sp->attributes, r->sp->n_attributes);
    }
    return p->cfg->string_attribute.invert_match ? !m : m;
  }
  case P_RATE: {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != p->rl_second) {
      p->rl_second = ts.tv_sec;
      p->rl_spans = 0;
    }
    int64_t if_sampled = p->rl_spans + (int64_t)t->span_count;
    if (if_sampled < p->cfg->rate_limiting.spans_per_second) {
      p->rl_spans = if_sampled;
      return true;
    }
    return false;
  }
  case P_AND:
    for (size_t i = 0; i < p->nsubs; i++)
      if (!evaluate(&p->subs[i], t)) return false;
    return true;
  }
  return false;
}

/* ---- emitting ------------------------------------------------------------------------------- */

/* One batch with the given spans, grouped by resource and scope entry, pointing into the held
 * batches. Errors are logged and the spans counted as dropped (nobody upstream to tell). */
static void emit(tsp *p, spanref *const *refs, const size_t *nrefs, size_t ntraces) {
  size_t total = 0;
  for (size_t k = 0; k < ntraces; k++)
    total += nrefs[k];
  if (!total) return;
  /* Pass 1: how many scopes each resource group gets and how many spans each scope group. */
  size_t *nsc = calloc(total, sizeof(*nsc)), *nsp = calloc(total, sizeof(*nsp));
  size_t ngr = 0, ngs = 0;
  const rspans_t *src_rs = NULL;
  const sspans_t *src_ss = NULL;
  for (size_t k = 0; nsc && nsp && k < ntraces; k++)
    for (size_t i = 0; i < nrefs[k]; i++) {
      const spanref *r = &refs[k][i];
      if (r->rs != src_rs || !ngr) src_rs = r->rs, src_ss = NULL, ngr++;
      if (r->ss != src_ss) src_ss = r->ss, ngs++, nsc[ngr - 1]++;
      nsp[ngs - 1]++;
    }
  sonde_batch *out = NULL;
  int rc = nsc && nsp ? sonde_batch_new(SONDE_SIGNAL_TRACES, &out) : SONDE_ENOMEM;
  sonde_traces *req = out ? sonde_batch_traces(out) : NULL;
  rspans_t **res = req ? sonde_batch_alloc(out, ngr * sizeof(*res)) : NULL;
  if (!rc && !res) rc = SONDE_ENOMEM;
  /* Pass 2: shallow copies of the resource and scope entries with new arrays. */
  p->stamp++;
  rspans_t *cur_rs = NULL;
  sspans_t *cur_ss = NULL;
  size_t gr = 0, gs = 0;
  src_rs = NULL, src_ss = NULL;
  for (size_t k = 0; k < ntraces && !rc; k++) {
    for (size_t i = 0; i < nrefs[k] && !rc; i++) {
      const spanref *r = &refs[k][i];
      if (r->h->stamp != p->stamp) {
        r->h->stamp = p->stamp;
        if ((rc = sonde_batch_hold(out, r->h->b))) break;
      }
      if (r->rs != src_rs || !cur_rs) {
        src_rs = r->rs, src_ss = NULL;
        cur_rs = sonde_batch_memdup(out, r->rs, sizeof(*r->rs));
        if (!cur_rs ||
            !(cur_rs->scope_spans = sonde_batch_alloc(out, nsc[gr++] * sizeof(void *)))) {
          rc = SONDE_ENOMEM;
          break;
        }
        cur_rs->n_scope_spans = 0;
        res[req->n_resource_spans++] = cur_rs;
      }
      if (r->ss != src_ss) {
        src_ss = r->ss;
        cur_ss = sonde_batch_memdup(out, r->ss, sizeof(*r->ss));
        if (!cur_ss || !(cur_ss->spans = sonde_batch_alloc(out, nsp[gs++] * sizeof(void *)))) {
          rc = SONDE_ENOMEM;
          break;
        }
        cur_ss->n_spans = 0;
        cur_rs->scope_spans[cur_rs->n_scope_spans++] = cur_ss;
      }
      cur_ss->spans[cur_ss->n_spans++] = r->sp;
    }
  }
  free(nsc);
  free(nsp);
  if (!rc) {
    req->resource_spans = res;
    rc = p->h->api->consume(p->h, out, NULL);
    if (rc)
      sonde_log(p->h, SONDE_LOG_WARN, "%zu sampled spans not accepted downstream: %s", total,
                sonde_strerror(rc));
  } else {
    sonde_log(p->h, SONDE_LOG_ERROR, "cannot build a batch of %zu sampled spans: %s", total,
              sonde_strerror(rc));
  }
  if (rc) metric_add(p, p->m_dropped_spans, (double)total);
  if (out) sonde_batch_unref(out);
}

/* Decides t (pending): evaluates every policy in order (as otelcol, so that rate limits see every
 * trace), records the decision and frees its span references once sent. */
static void decide(tsp *p, trace *t, trace **sampled, size_t *nsampled) {
  bool any = false;
  for (size_t i = 0; i < p->npol; i++) {
    bool s = evaluate(&p->pol[i], t);
    metric_add(p, p->pol[i].m[s], 1);
    any |= s;
  }
  metric_add(p, p->m_global[any], 1);
  t->state = any ? T_SAMPLED : T_DROPPED;
  if (any)
    sampled[(*nsampled)++] = t;
  else
    release_refs(t);
}

/* Sends the decided-sampled traces, then drops their references. */
static void flush_sampled(tsp *p, trace **sampled, size_t n) {
  if (!n) return;
  spanref **refs = malloc(n * sizeof(*refs));
  size_t *nrefs = malloc(n * sizeof(*nrefs));
  if (refs && nrefs) {
    for (size_t i = 0; i < n; i++)
      refs[i] = sampled[i]->refs, nrefs[i] = sampled[i]->n;
    emit(p, refs, nrefs, n);
  } else {
    sonde_log(p->h, SONDE_LOG_ERROR, "out of memory: %zu sampled traces dropped", n);
  }
  free(refs);
  free(nrefs);
  for (size_t i = 0; i < n; i++)
    release_refs(sampled[i]);
}

static void free_trace(tsp *p, trace *t) {
  unlink_trace(p, t);
  release_refs(t);
  free(t);
}

/* Makes room for one more trace: the oldest goes, decided now if it was not yet. */
static void evict_oldest(tsp *p) {
  trace *t = p->ring[p->start];
  if (t->state == T_PENDING) {
    trace *one[1];
    size_t n = 0;
    metric_add(p, p->m_early, 1);
    decide(p, t, one, &n);
    flush_sampled(p, one, n);
  }
  if (p->decided_prefix) p->decided_prefix--;
  p->ring[p->start] = NULL;
  p->start = (p->start + 1) % p->cap;
  p->count--;
  free_trace(p, t);
}

/* Decides every trace older than decision_wait (all of them when stopping). */
static void tick(void *arg) {
  tsp *p = arg;
  int64_t now = now_ns();
  size_t cap = 256, n = 0;
  trace **sampled = malloc(cap * sizeof(*sampled));
  while (p->decided_prefix < p->count) {
    trace *t = p->ring[(p->start + p->decided_prefix) % p->cap];
    if (!p->stopping && t->first_ns + p->cfg->decision_wait_ns > now) break;
    if (t->state == T_PENDING) {
      if (n == cap || !sampled) {
        trace **g = sampled ? realloc(sampled, 2 * cap * sizeof(*g)) : NULL;
        if (!g) { /* send what is gathered, then go on one by one */
          flush_sampled(p, sampled, n);
          n = 0;
          if (!sampled) {
            trace *one[1];
            size_t k = 0;
            decide(p, t, one, &k);
            flush_sampled(p, one, k);
            p->decided_prefix++;
            continue;
          }
        } else {
          sampled = g;
          cap *= 2;
        }
      }
      decide(p, t, sampled, &n);
    }
    p->decided_prefix++;
  }
  flush_sampled(p, sampled, n);
  free(sampled);
  if (p->m_on_memory) p->h->api->metric_set(p->m_on_memory, (double)p->count);
}

/* ---- consume -------------------------------------------------------------------------------- */

static int add_ref(trace *t, const spanref *r) {
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 4;
    spanref *n = realloc(t->refs, cap * sizeof(*n));
    if (!n) return SONDE_ENOMEM;
    t->refs = n;
    t->cap = cap;
  }
  t->refs[t->n++] = *r;
  r->h->pending++;
  return 0;
}

static int ts_consume(void *inst, sonde_batch *b) {
  tsp *p = inst;
  sonde_traces *req = sonde_batch_traces(b);
  if (!req) return SONDE_EINVAL;
  held *h = calloc(1, sizeof(*h));
  if (!h) return SONDE_ENOMEM;
  h->b = sonde_batch_ref(b);
  h->pending = 1; /* this function's own hold, dropped at the end */
  int64_t now = now_ns();
  size_t late_n = 0, late_cap = 0, dropped_late = 0;
  spanref *late = NULL;
  int rc = 0;
  for (size_t i = 0; i < req->n_resource_spans && !rc; i++) {
    rspans_t *rs = req->resource_spans[i];
    for (size_t k = 0; rs && k < rs->n_scope_spans && !rc; k++) {
      sspans_t *ss = rs->scope_spans[k];
      for (size_t s = 0; ss && s < ss->n_spans && !rc; s++) {
        span_t *sp = ss->spans[s];
        if (!sp || sp->trace_id.len != 16) continue; /* not a valid span: nothing to group by */
        spanref r = {h, rs, ss, sp};
        trace *t = lookup(p, sp->trace_id.data);
        if (!t) {
          if (p->count == p->cap) evict_oldest(p);
          if (!(t = calloc(1, sizeof(*t)))) {
            rc = SONDE_ENOMEM;
            break;
          }
          memcpy(t->id, sp->trace_id.data, 16);
          t->first_ns = now;
          size_t bk = bucket_of(p, t->id);
          t->hnext = p->buckets[bk];
          p->buckets[bk] = t;
          p->ring[(p->start + p->count) % p->cap] = t;
          p->count++;
          metric_add(p, p->m_new, 1);
        }
        t->span_count++;
        if (t->state == T_PENDING) {
          rc = add_ref(t, &r);
        } else if (t->state == T_SAMPLED) {
          /* A late span of a sampled trace follows it at once. */
          if (late_n == late_cap) {
            size_t cap = late_cap ? late_cap * 2 : 16;
            spanref *g = realloc(late, cap * sizeof(*g));
            if (!g) {
              rc = SONDE_ENOMEM;
              break;
            }
            late = g;
            late_cap = cap;
          }
          late[late_n++] = r;
        } else {
          dropped_late++;
        }
      }
    }
  }
  if (late_n) {
    spanref *refs[1] = {late};
    size_t nrefs[1] = {late_n};
    emit(p, refs, nrefs, 1);
    metric_add(p, p->m_late, (double)late_n);
  }
  metric_add(p, p->m_late, (double)dropped_late);
  free(late);
  if (--h->pending == 0) {
    sonde_batch_unref(h->b);
    free(h);
  }
  if (p->m_on_memory) p->h->api->metric_set(p->m_on_memory, (double)p->count);
  /* On out of memory the spans already grouped stay; the rest of the batch is refused. */
  return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void ts_destroy(void *inst);

static int ts_validate(const void *config, char *err, size_t errlen) {
  const ts_config *c = config;
  if (c->decision_wait_ns <= 0) {
    snprintf(err, errlen, "decision_wait must be positive");
    return SONDE_ECONFIG;
  }
  if (!c->policies.n) {
    snprintf(err, errlen, "no policies configured");
    return SONDE_ECONFIG;
  }
  for (size_t i = 0; i < c->policies.n; i++) {
    policy p;
    int rc = policy_init(&p, (const policy_cfg *)c->policies.items + i, false, err, errlen);
    policy_free(&p);
    if (rc) return rc;
  }
  return 0;
}

static int ts_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const ts_config *c = config;
  tsp *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = c;
  p->cap = (size_t)c->num_traces;
  size_t want = p->cap;
  if (c->expected_new_traces_per_sec > 0) {
    size_t per_wait =
        (size_t)c->expected_new_traces_per_sec * (size_t)(c->decision_wait_ns / 1000000000 + 1);
    if (per_wait < want) want = per_wait;
  }
  p->nbuckets = 16;
  while (p->nbuckets < want * 2 && p->nbuckets < (1u << 26))
    p->nbuckets *= 2;
  char err[512];
  int rc = SONDE_ENOMEM;
  if (!(p->ring = calloc(p->cap, sizeof(*p->ring))) ||
      !(p->buckets = calloc(p->nbuckets, sizeof(*p->buckets))) ||
      !(p->pol = calloc(c->policies.n, sizeof(*p->pol))))
    goto fail;
  for (size_t i = 0; i < c->policies.n; i++, p->npol++) {
    if ((rc = policy_init(&p->pol[i], (const policy_cfg *)c->policies.items + i, false, err,
                          sizeof err))) {
      policy_free(&p->pol[i]);
      sonde_log(h, SONDE_LOG_ERROR, "%s", err);
      goto fail;
    }
    char labels[300];
    for (int s = 0; s < 2; s++) {
      snprintf(labels, sizeof labels, "policy=%s,sampled=%s", p->pol[i].cfg->name,
               s ? "true" : "false");
      h->api->metric(
          h, SONDE_METRIC_COUNTER, "otelcol_processor_tail_sampling_count_traces_sampled",
          "Count of traces that were sampled or not per sampling policy", labels, &p->pol[i].m[s]);
    }
  }
  /* Self-metrics are best effort: one that cannot be registered stays NULL and uncounted. */
  h->api->metric(
      h, SONDE_METRIC_COUNTER, "otelcol_processor_tail_sampling_global_count_traces_sampled",
      "Global count of traces sampled by at least one policy", "sampled=false", &p->m_global[0]);
  h->api->metric(
      h, SONDE_METRIC_COUNTER, "otelcol_processor_tail_sampling_global_count_traces_sampled",
      "Global count of traces sampled by at least one policy", "sampled=true", &p->m_global[1]);
  h->api->metric(h, SONDE_METRIC_GAUGE, "otelcol_processor_tail_sampling_sampling_traces_on_memory",
                 "Tracks the number of traces current on memory", NULL, &p->m_on_memory);
  h->api->metric(h, SONDE_METRIC_COUNTER, "otelcol_processor_tail_sampling_new_trace_id_received",
                 "Counts the arrival of new traces", NULL, &p->m_new);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_tail_sampling_early_decisions",
                 "Traces decided before decision_wait because num_traces was reached", NULL,
                 &p->m_early);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_tail_sampling_late_spans",
                 "Spans that arrived after their trace was decided (and followed the decision)",
                 NULL, &p->m_late);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_tail_sampling_dropped_spans",
                 "Sampled spans that could not be sent on", NULL, &p->m_dropped_spans);
  *inst = p;
  return 0;
fail:
  ts_destroy(p);
  return rc;
}

static int ts_start(void *inst) {
  tsp *p = inst;
  int64_t every = p->cfg->decision_wait_ns / 10;
  if (every < 10000000) every = 10000000;
  if (every > 1000000000) every = 1000000000;
  return p->h->api->timer_start(p->h, every, every, tick, p, &p->timer);
}

static void ts_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  tsp *p = inst;
  if (p->timer) {
    p->h->api->timer_stop(p->timer);
    p->timer = NULL;
  }
  p->stopping = true;
  tick(p); /* decides and sends everything still waiting */
  done(arg);
}

static void ts_destroy(void *inst) {
  tsp *p = inst;
  if (!p) return;
  if (p->timer) p->h->api->timer_stop(p->timer);
  for (size_t k = 0; p->ring && k < p->count; k++) {
    trace *t = p->ring[(p->start + k) % p->cap];
    release_refs(t);
    free(t);
  }
  for (size_t i = 0; i < p->npol; i++)
    policy_free(&p->pol[i]);
  free(p->pol);
  free(p->ring);
  free(p->buckets);
  free(p);
}

static const sonde_component ts_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "tail_sampling",
    .doc = "otelcol's tail sampling: whole traces kept by latency, status, attribute, rate...",
    .signals = SONDE_SIGNAL_TRACES,
    .options = ts_options,
    .config_size = sizeof(ts_config),
    .validate = ts_validate,
    .create = ts_create,
    .start = ts_start,
    .consume = ts_consume,
    .shutdown = ts_shutdown,
    .destroy = ts_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-tail-sampling", "1.0", &ts_component);

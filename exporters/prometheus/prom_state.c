/* The prometheus exporter's series store and renderer; see prom_state.h.
 *
 * A series is keyed, as in otelcol's accumulator, by the OTel metric name and type, the scope
 * (name, version, schema URL, attributes), the point's attributes and the job/instance of its
 * resource. Its Prometheus labels are computed once, when it is created. Families (one
 * Prometheus name, one type, the first description) and target_info entries (one per
 * job+instance) are reference counted by the series that use them, so they go when the last of
 * their series expires.
 */
#include "prom_state.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom_names.h"
#include "sonde/errors.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint num_dp;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint hist_dp;
typedef Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint exp_dp;
typedef Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint__Buckets exp_buckets;
typedef Opentelemetry__Proto__Metrics__V1__SummaryDataPoint sum_dp;

#define T_DELTA                                                                                    \
  OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_DELTA
#define T_CUMUL                                                                                    \
  OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE
#define NO_RECORDED_VALUE 1u

enum { PT_COUNTER, PT_GAUGE, PT_HISTOGRAM, PT_SUMMARY };
static const char *const pt_names[] = {"counter", "gauge", "histogram", "summary"};
enum { SK_NUMBER, SK_HIST, SK_EXP, SK_SUMMARY };

/* ---- a chained hash table of objects that start with an hentry ------------------------------- */

typedef struct hentry {
  struct hentry *next;
  uint64_t hash;
  char *key;
} hentry;

typedef struct htab {
  hentry **b;
  size_t nb, n;
} htab;

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static hentry *ht_get(const htab *t, const char *key, uint64_t h) {
  if (!t->nb) return NULL;
  for (hentry *e = t->b[h & (t->nb - 1)]; e; e = e->next)
    if (e->hash == h && strcmp(e->key, key) == 0) return e;
  return NULL;
}

static int ht_put(htab *t, hentry *e) {
  if (t->n + 1 > t->nb) {
    size_t nb = t->nb ? t->nb * 2 : 64;
    hentry **b = calloc(nb, sizeof(*b));
    if (!b) return SONDE_ENOMEM;
    for (size_t i = 0; i < t->nb; i++)
      for (hentry *x = t->b[i], *nx; x; x = nx) {
        nx = x->next;
        x->next = b[x->hash & (nb - 1)];
        b[x->hash & (nb - 1)] = x;
      }
    free(t->b);
    t->b = b;
    t->nb = nb;
  }
  hentry **slot = &t->b[e->hash & (t->nb - 1)];
  e->next = *slot;
  *slot = e;
  t->n++;
  return 0;
}

static void ht_del(htab *t, hentry *e) {
  for (hentry **p = &t->b[e->hash & (t->nb - 1)]; *p; p = &(*p)->next)
    if (*p == e) {
      *p = e->next;
      t->n--;
      return;
    }
}

/* ---- objects --------------------------------------------------------------------------------- */

typedef struct family {
  hentry h; /* key: the Prometheus name */
  int type;
  char *help;
  size_t refs;
} family;

typedef struct target {
  hentry h;     /* key: job \x1f instance */
  char *labels; /* rendered, sorted, with job and instance */
  size_t refs;
} target;

typedef struct series {
  hentry h; /* key: the signature */
  family *fam;
  target *tgt;
  char *labels; /* rendered `a="x",b="y"`, sorted by name */
  int kind;
  uint64_t start, ts;
  int64_t updated;
  double value;
  uint64_t count;
  double sum;
  /* histogram: nb bounds as received, nc counts (nb + 1, or 0) */
  size_t nb, nc;
  double *bounds;
  uint64_t *counts;
  /* exponential histogram */
  int32_t scale, pos_off, neg_off;
  uint64_t zero_count;
  double zero_threshold;
  size_t npos, nneg;
  uint64_t *pos, *neg;
  /* summary */
  size_t nq;
  double *q, *qv;
  /* exemplars of the latest point (counters and explicit histograms; OpenMetrics only) */
  struct exemplar *ex;
  size_t nex;
} series;

typedef struct exemplar {
  double value;
  uint64_t ts;
  char trace_id[33], span_id[17]; /* hex, "" when absent */
} exemplar;

struct prom_state {
  prom_opts o;
  char *target_name;
  htab series, families, targets;
  uint64_t gen; /* bumped by every change of what a render would show */
};

/* ---- labels ---------------------------------------------------------------------------------- */

typedef struct lbl {
  char *name, *value;
} lbl;

typedef struct lbls {
  lbl *v;
  size_t n, cap;
  bool oom;
} lbls;

static void lbls_free(lbls *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].name);
    free(l->v[i].value);
  }
  free(l->v);
  memset(l, 0, sizeof(*l));
}

/* Adds name=value (both taken). An existing name is replaced, or with merge gets ";value". */
static void lbls_set(lbls *l, char *name, char *value, bool merge) {
  if (l->oom || !name || !value) {
    if (!name || !value) l->oom = true;
    free(name);
    free(value);
    return;
  }
  for (size_t i = 0; i < l->n; i++) {
    if (strcmp(l->v[i].name, name) != 0) continue;
    free(name);
    if (merge) {
      size_t a = strlen(l->v[i].value), b = strlen(value);
      char *m = malloc(a + b + 2);
      if (!m) {
        l->oom = true;
        free(value);
        return;
      }
      memcpy(m, l->v[i].value, a);
      m[a] = ';';
      memcpy(m + a + 1, value, b + 1);
      free(value);
      value = m;
    }
    free(l->v[i].value);
    l->v[i].value = value;
    return;
  }
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 8;
    lbl *nv = realloc(l->v, nc * sizeof(*nv));
    if (!nv) {
      l->oom = true;
      free(name);
      free(value);
      return;
    }
    l->v = nv;
    l->cap = nc;
  }
  l->v[l->n].name = name;
  l->v[l->n].value = value;
  l->n++;
}

/* Sets a label whose name is an attribute key to normalise (prefix: "otel_scope_" or ""). */
static void lbls_set_attr(lbls *l, const char *prefix, const char *key, char *value, bool merge) {
  char buf[512];
  const char *k = key;
  char *heap = NULL;
  if (prefix[0]) {
    size_t pl = strlen(prefix), kl = strlen(key);
    char *dst = pl + kl + 1 <= sizeof(buf) ? buf : (heap = malloc(pl + kl + 1));
    if (dst) {
      memcpy(dst, prefix, pl);
      memcpy(dst + pl, key, kl + 1);
      k = dst;
    } else {
      l->oom = true;
      free(value);
      return;
    }
  }
  bool empty;
  char *name = prom_label_name(k, &empty);
  free(heap);
  if (!name) {
    if (!empty) l->oom = true;
    free(value); /* a key with nothing valid in it names no label */
    return;
  }
  lbls_set(l, name, value, merge);
}

static int cmp_lbl(const void *a, const void *b) {
  return strcmp(((const lbl *)a)->name, ((const lbl *)b)->name);
}

/* Sorted and rendered as `a="x",b="y"`; NULL when out of memory, or with *bad set when a value
 * is not valid UTF-8 (client_golang refuses such a series; Prometheus would refuse the scrape). */
static char *lbls_render(lbls *l, bool *bad) {
  *bad = false;
  if (l->oom) return NULL;
  for (size_t i = 0; i < l->n; i++)
    if (!prom_utf8_valid(l->v[i].value)) {
      *bad = true;
      return NULL;
    }
  if (l->n) qsort(l->v, l->n, sizeof(lbl), cmp_lbl);
  sonde_buf b = {0};
  int rc = 0;
  for (size_t i = 0; !rc && i < l->n; i++) {
    rc = sonde_buf_printf(&b, "%s%s=\"", i ? "," : "", l->v[i].name);
    if (!rc) rc = prom_put_escaped(&b, l->v[i].value, true);
    if (!rc) rc = sonde_buf_append(&b, "\"", 1);
  }
  if (!rc) rc = sonde_buf_append(&b, "", 1);
  if (rc) {
    sonde_buf_free(&b);
    return NULL;
  }
  return (char *)b.data;
}

/* ---- attribute sets (key, AsString value), sorted by key ------------------------------------- */

typedef struct attr {
  const char *key;
  char *value;
} attr;

typedef struct attrs {
  attr *v;
  size_t n;
} attrs;

static void attrs_free(attrs *a) {
  for (size_t i = 0; i < a->n; i++)
    free(a->v[i].value);
  free(a->v);
  a->v = NULL;
  a->n = 0;
}

static int cmp_attr(const void *a, const void *b) {
  return strcmp(((const attr *)a)->key, ((const attr *)b)->key);
}

/* Adds kvs to a (later keys replace earlier ones with the same key), skipping keys in skip. */
static int attrs_add(attrs *a, kv_t *const *kvs, size_t n, const char *const *skip) {
  if (!n) return 0;
  attr *nv = realloc(a->v, (a->n + n) * sizeof(*nv));
  if (!nv) return SONDE_ENOMEM;
  a->v = nv;
  for (size_t i = 0; i < n; i++) {
    if (!kvs[i]) continue;
    const char *k = kvs[i]->key ? kvs[i]->key : "";
    bool skipped = false;
    for (const char *const *s = skip; s && *s; s++)
      if (strcmp(*s, k) == 0) skipped = true;
    if (skipped) continue;
    char *v = prom_any_string(kvs[i]->value);
    if (!v) return SONDE_ENOMEM;
    size_t j = 0;
    while (j < a->n && strcmp(a->v[j].key, k) != 0)
      j++;
    if (j < a->n) {
      free(a->v[j].value);
      a->v[j].value = v;
    } else {
      a->v[a->n].key = k;
      a->v[a->n].value = v;
      a->n++;
    }
  }
  if (a->n) qsort(a->v, a->n, sizeof(attr), cmp_attr);
  return 0;
}

static int put_attrs_sig(sonde_buf *b, const attrs *a) {
  for (size_t i = 0; i < a->n; i++)
    if (sonde_buf_printf(b, "%s\x1f%s\x1f", a->v[i].key, a->v[i].value)) return SONDE_ENOMEM;
  return sonde_buf_append(b, "\x1e", 1);
}

/* ---- the per-resource and per-scope context of a consume ------------------------------------- */

typedef struct rctx {
  char *job, *instance; /* NULL when absent */
  attrs extra;          /* resource_to_telemetry: attributes added to every point */
  target *tgt;          /* when job and instance are both known */
} rctx;

typedef struct sctx {
  const char *name, *version, *schema;
  attrs attrs;
} sctx;

static const kv_t *find_kv(kv_t *const *kvs, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (kvs[i] && kvs[i]->key && strcmp(kvs[i]->key, key) == 0) return kvs[i];
  return NULL;
}

static const char *const service_keys[] = {"service.name", "service.namespace",
                                           "service.instance.id", NULL};

static void target_unref(prom_state *s, target *t) {
  if (!t || --t->refs) return;
  ht_del(&s->targets, &t->h);
  free(t->h.key);
  free(t->labels);
  free(t);
}

static void family_unref(prom_state *s, family *f) {
  if (!f || --f->refs) return;
  ht_del(&s->families, &f->h);
  free(f->h.key);
  free(f->help);
  free(f);
}

/* The target_info labels of a resource: its attributes but the service ones, job, instance. */
static int rctx_target(prom_state *s, rctx *r, kv_t *const *kvs, size_t n) {
  lbls l = {0};
  for (size_t i = 0; i < n; i++) {
    if (!kvs[i] || !kvs[i]->key) continue;
    bool svc = false;
    for (const char *const *k = service_keys; *k; k++)
      if (strcmp(*k, kvs[i]->key) == 0) svc = true;
    if (svc) continue;
    lbls_set_attr(&l, "", kvs[i]->key, prom_any_string(kvs[i]->value), true);
  }
  lbls_set(&l, strdup("job"), strdup(r->job), false);
  lbls_set(&l, strdup("instance"), strdup(r->instance), false);
  bool bad;
  char *labels = lbls_render(&l, &bad);
  lbls_free(&l);
  if (bad) return 0; /* no target_info for this resource */
  size_t kl = strlen(r->job) + strlen(r->instance) + 2;
  char *key = malloc(kl);
  if (!labels || !key) {
    free(labels);
    free(key);
    return SONDE_ENOMEM;
  }
  snprintf(key, kl, "%s\x1f%s", r->job, r->instance);
  uint64_t h = fnv1a(key);
  target *t = (target *)ht_get(&s->targets, key, h);
  if (t) {
    free(key);
    /* The latest resource with this job and instance describes it. */
    if (strcmp(t->labels, labels) != 0) s->gen++;
    free(t->labels);
    t->labels = labels;
  } else {
    t = calloc(1, sizeof(*t));
    if (!t) {
      free(key);
      free(labels);
      return SONDE_ENOMEM;
    }
    t->h.key = key;
    t->h.hash = h;
    t->labels = labels;
    if (ht_put(&s->targets, &t->h)) {
      free(key);
      free(labels);
      free(t);
      return SONDE_ENOMEM;
    }
  }
  /* Held by the context until the resource is done, so an unused one goes then. */
  t->refs++;
  r->tgt = t;
  return 0;
}

static bool glob_any(char *const *pats, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (fnmatch(pats[i], key, FNM_NOESCAPE) == 0) return true;
  return false;
}

static bool resource_label_wanted(const prom_opts *o, const char *key) {
  bool in = o->n_include ? glob_any(o->resource_include, o->n_include, key) : o->n_exclude > 0;
  return in && !glob_any(o->resource_exclude, o->n_exclude, key);
}

static int rctx_init(prom_state *s, rctx *r,
                     const Opentelemetry__Proto__Resource__V1__Resource *res) {
  memset(r, 0, sizeof(*r));
  kv_t *const *kvs = res ? res->attributes : NULL;
  size_t n = res ? res->n_attributes : 0;
  const kv_t *name = find_kv(kvs, n, "service.name");
  const kv_t *ns = find_kv(kvs, n, "service.namespace");
  const kv_t *inst = find_kv(kvs, n, "service.instance.id");
  if (name) {
    char *nm = prom_any_string(name->value);
    if (!nm) return SONDE_ENOMEM;
    if (ns) {
      char *nss = prom_any_string(ns->value);
      size_t l = (nss ? strlen(nss) : 0) + strlen(nm) + 2;
      r->job = nss ? malloc(l) : NULL;
      if (r->job) snprintf(r->job, l, "%s/%s", nss, nm);
      free(nss);
      free(nm);
    } else {
      r->job = nm;
    }
    if (!r->job) return SONDE_ENOMEM;
  }
  if (inst && !(r->instance = prom_any_string(inst->value))) return SONDE_ENOMEM;
  if (s->o.resource_labels_set) {
    for (size_t i = 0; i < n; i++)
      if (kvs[i] && kvs[i]->key && resource_label_wanted(&s->o, kvs[i]->key) &&
          attrs_add(&r->extra, &kvs[i], 1, NULL))
        return SONDE_ENOMEM;
  } else if (s->o.resource_to_telemetry &&
             attrs_add(&r->extra, kvs, n,
                       s->o.resource_exclude_service_attrs ? service_keys : NULL)) {
    return SONDE_ENOMEM;
  }
  if (r->job && r->instance) return rctx_target(s, r, kvs, n);
  return 0;
}

static void rctx_free(prom_state *s, rctx *r) {
  free(r->job);
  free(r->instance);
  attrs_free(&r->extra);
  target_unref(s, r->tgt);
}

/* ---- series ---------------------------------------------------------------------------------- */

static void series_free_values(series *x) {
  free(x->bounds);
  free(x->counts);
  free(x->pos);
  free(x->neg);
  free(x->q);
  free(x->qv);
  x->bounds = x->q = x->qv = NULL;
  x->counts = x->pos = x->neg = NULL;
  x->nb = x->nc = x->npos = x->nneg = x->nq = 0;
}

static void series_remove(prom_state *s, series *x) {
  s->gen++;
  ht_del(&s->series, &x->h);
  free(x->ex);
  family_unref(s, x->fam);
  target_unref(s, x->tgt);
  series_free_values(x);
  free(x->labels);
  free(x->h.key);
  free(x);
}

/* The labels of a new series. */
static char *series_labels(prom_state *s, const attrs *pa, const sctx *sc, const rctx *r,
                           bool *bad) {
  lbls l = {0};
  for (size_t i = 0; i < pa->n; i++)
    lbls_set_attr(&l, "", pa->v[i].key, strdup(pa->v[i].value), true);
  if (!s->o.without_scope_info) {
    for (size_t i = 0; i < sc->attrs.n; i++)
      lbls_set_attr(&l, "otel_scope_", sc->attrs.v[i].key, strdup(sc->attrs.v[i].value), true);
    lbls_set(&l, strdup("otel_scope_name"), strdup(sc->name), false);
    lbls_set(&l, strdup("otel_scope_version"), strdup(sc->version), false);
    lbls_set(&l, strdup("otel_scope_schema_url"), strdup(sc->schema), false);
  }
  if (r->job) lbls_set(&l, strdup("job"), strdup(r->job), false);
  if (r->instance) lbls_set(&l, strdup("instance"), strdup(r->instance), false);
  for (size_t i = 0; i < s->o.n_const; i++)
    lbls_set_attr(&l, "", s->o.const_keys[i], strdup(s->o.const_values[i]), false);
  char *out = lbls_render(&l, bad);
  lbls_free(&l);
  return out;
}

typedef struct mctx {
  const metric_t *m;
  int kind, ptype;
  char *name; /* Prometheus name */
  family *fam;
  const char *help;
} mctx;

/* Finds or creates the series of a point: NULL with *rc set on failure. */
static series *series_get(prom_state *s, const mctx *mc, const sctx *sc, const rctx *r,
                          kv_t *const *kvs, size_t n, bool create, int *rc) {
  *rc = 0;
  attrs pa = {0};
  sonde_buf sig = {0};
  series *x = NULL;
  if (attrs_add(&pa, kvs, n, NULL)) goto oom;
  /* resource_to_telemetry: the resource's attributes win over the point's, as otelcol's
   * resourcetotelemetry wrapper copies them over. */
  for (size_t i = 0; i < r->extra.n; i++) {
    size_t j = 0;
    while (j < pa.n && strcmp(pa.v[j].key, r->extra.v[i].key) != 0)
      j++;
    char *v = strdup(r->extra.v[i].value);
    if (!v) goto oom;
    if (j < pa.n) {
      free(pa.v[j].value);
      pa.v[j].value = v;
    } else {
      attr *nv = realloc(pa.v, (pa.n + 1) * sizeof(*nv));
      if (!nv) {
        free(v);
        goto oom;
      }
      pa.v = nv;
      pa.v[pa.n].key = r->extra.v[i].key;
      pa.v[pa.n].value = v;
      pa.n++;
    }
  }
  if (pa.n) qsort(pa.v, pa.n, sizeof(attr), cmp_attr);
  if (sonde_buf_printf(&sig, "%s\x1e%d\x1e%s\x1e%s\x1e%s\x1e", mc->m->name ? mc->m->name : "",
                       mc->kind, sc->name, sc->version, sc->schema) ||
      put_attrs_sig(&sig, &sc->attrs) || put_attrs_sig(&sig, &pa) ||
      sonde_buf_printf(&sig, "%s\x1e%s", r->job ? r->job : "\x02",
                       r->instance ? r->instance : "\x02") ||
      sonde_buf_append(&sig, "", 1))
    goto oom;
  uint64_t h = fnv1a((char *)sig.data);
  x = (series *)ht_get(&s->series, (char *)sig.data, h);
  if (x || !create) {
    sonde_buf_free(&sig);
    attrs_free(&pa);
    return x;
  }
  x = calloc(1, sizeof(*x));
  if (!x) goto oom;
  x->kind = mc->kind;
  x->h.hash = h;
  x->h.key = (char *)sig.data;
  sig.data = NULL;
  bool bad = false;
  if (!(x->labels = series_labels(s, &pa, sc, r, &bad)) || ht_put(&s->series, &x->h)) {
    free(x->labels);
    free(x->h.key);
    free(x);
    attrs_free(&pa);
    *rc = bad ? SONDE_EINVAL : SONDE_ENOMEM;
    return NULL;
  }
  attrs_free(&pa);
  return x;
oom:
  sonde_buf_free(&sig);
  attrs_free(&pa);
  *rc = SONDE_ENOMEM;
  return NULL;
}

/* Points a stored series at its family and target. */
static int series_bind(prom_state *s, series *x, mctx *mc, const rctx *r) {
  if (!x->fam) {
    /* Looked up again: a point without value may have removed the family's last series. */
    mc->fam = (family *)ht_get(&s->families, mc->name, fnv1a(mc->name));
    if (!mc->fam) {
      family *f = calloc(1, sizeof(*f));
      if (!f || !(f->h.key = strdup(mc->name)) || !(f->help = prom_utf8_sanitize(mc->help))) {
        if (f) free(f->h.key);
        free(f);
        return SONDE_ENOMEM;
      }
      f->h.hash = fnv1a(f->h.key);
      f->type = mc->ptype;
      if (ht_put(&s->families, &f->h)) {
        free(f->h.key);
        free(f->help);
        free(f);
        return SONDE_ENOMEM;
      }
      mc->fam = f;
    }
    x->fam = mc->fam;
    x->fam->refs++;
  }
  if (x->tgt != r->tgt) {
    target_unref(s, x->tgt);
    x->tgt = r->tgt;
    if (x->tgt) x->tgt->refs++;
  }
  return 0;
}

/* ---- accumulation ---------------------------------------------------------------------------- */

static double num_value(const num_dp *p) {
  return p->value_case == OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT
             ? (double)p->as_int
         : p->value_case == OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE
             ? p->as_double
             : 0;
}

static int copy_u64(uint64_t **dst, const uint64_t *src, size_t n) {
  *dst = NULL;
  if (!n) return 0;
  if (!(*dst = malloc(n * sizeof(uint64_t)))) return SONDE_ENOMEM;
  memcpy(*dst, src, n * sizeof(uint64_t));
  return 0;
}

static int copy_f64(double **dst, const double *src, size_t n) {
  *dst = NULL;
  if (!n) return 0;
  if (!(*dst = malloc(n * sizeof(double)))) return SONDE_ENOMEM;
  memcpy(*dst, src, n * sizeof(double));
  return 0;
}

static int hist_set(series *x, const hist_dp *p) {
  double *b;
  uint64_t *c;
  if (copy_f64(&b, p->explicit_bounds, p->n_explicit_bounds)) return SONDE_ENOMEM;
  if (copy_u64(&c, p->bucket_counts, p->n_bucket_counts)) {
    free(b);
    return SONDE_ENOMEM;
  }
  series_free_values(x);
  x->bounds = b;
  x->counts = c;
  x->nb = p->n_explicit_bounds;
  x->nc = p->n_bucket_counts;
  x->count = p->count;
  x->sum = p->_sum_case ? p->sum : 0;
  return 0;
}

/* otelcol's accumulateHistogramValues: counts added when the bounds match, else the newer wins. */
static int hist_merge(series *x, const hist_dp *p) {
  bool newer = p->time_unix_nano >= x->ts;
  bool match = x->nb == p->n_explicit_bounds && x->nc == p->n_bucket_counts;
  for (size_t i = 0; match && i < x->nb; i++)
    match = x->bounds[i] == p->explicit_bounds[i];
  if (!match) {
    if (!newer) return 0;
    uint64_t start = x->start;
    int rc = hist_set(x, p);
    x->start = start;
    return rc;
  }
  for (size_t i = 0; i < x->nc; i++)
    x->counts[i] += p->bucket_counts[i];
  x->count += p->count;
  x->sum += p->_sum_case ? p->sum : 0;
  return 0;
}

static int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Merging never makes more buckets than this on a side: two points far apart (a hostile or
 * broken sender) would otherwise ask for gigabytes. Such a merge is refused. */
#define EXP_MAX_SPAN 16384

/* Re-buckets one side of an exponential histogram (off/counts/n at scale `from`) down to `to`
 * and adds the other side (`add`, at `add_from`) into it; the result goes to the out
 * parameters, the inputs are left alone. */
static int exp_merge_side(int32_t off, const uint64_t *counts, size_t n, int32_t from,
                          const exp_buckets *add, int32_t add_from, int32_t to, int32_t *out_off,
                          uint64_t **out_counts, size_t *out_n) {
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  int sh1 = from - to, sh2 = add_from - to;
  size_t an = add ? add->n_bucket_counts : 0;
  *out_counts = NULL;
  *out_n = 0;
  *out_off = 0;
  if (n) {
    lo = floor_div(off, (int64_t)1 << sh1);
    hi = floor_div(off + (int64_t)n - 1, (int64_t)1 << sh1);
  }
  if (an) {
    int64_t l2 = floor_div(add->offset, (int64_t)1 << sh2);
    int64_t h2 = floor_div(add->offset + (int64_t)an - 1, (int64_t)1 << sh2);
    lo = l2 < lo ? l2 : lo;
    hi = h2 > hi ? h2 : hi;
  }
  if (lo > hi) return 0;
  if (hi - lo + 1 > EXP_MAX_SPAN) return SONDE_EINVAL;
  size_t nn = (size_t)(hi - lo + 1);
  uint64_t *out = calloc(nn, sizeof(uint64_t));
  if (!out) return SONDE_ENOMEM;
  for (size_t i = 0; i < n; i++)
    out[floor_div(off + (int64_t)i, (int64_t)1 << sh1) - lo] += counts[i];
  for (size_t i = 0; i < an; i++)
    out[floor_div(add->offset + (int64_t)i, (int64_t)1 << sh2) - lo] += add->bucket_counts[i];
  *out_counts = out;
  *out_n = nn;
  *out_off = (int32_t)lo;
  return 0;
}

static int exp_set(series *x, const exp_dp *p) {
  uint64_t *pos = NULL, *neg = NULL;
  size_t np = p->positive ? p->positive->n_bucket_counts : 0;
  size_t nn = p->negative ? p->negative->n_bucket_counts : 0;
  if (copy_u64(&pos, np ? p->positive->bucket_counts : NULL, np) ||
      copy_u64(&neg, nn ? p->negative->bucket_counts : NULL, nn)) {
    free(pos);
    return SONDE_ENOMEM;
  }
  series_free_values(x);
  x->pos = pos;
  x->neg = neg;
  x->npos = np;
  x->nneg = nn;
  x->pos_off = p->positive ? p->positive->offset : 0;
  x->neg_off = p->negative ? p->negative->offset : 0;
  x->scale = p->scale;
  x->zero_count = p->zero_count;
  x->zero_threshold = p->zero_threshold;
  x->count = p->count;
  x->sum = p->_sum_case ? p->sum : 0;
  return 0;
}

static int exp_merge(series *x, const exp_dp *p) {
  int32_t to = p->scale < x->scale ? p->scale : x->scale;
  if (x->scale - to > 62 || p->scale - to > 62) return SONDE_EINVAL;
  int32_t po, no;
  uint64_t *pc, *nc;
  size_t pn, nn;
  int rc = exp_merge_side(x->pos_off, x->pos, x->npos, x->scale, p->positive, p->scale, to, &po,
                          &pc, &pn);
  if (rc) return rc;
  rc = exp_merge_side(x->neg_off, x->neg, x->nneg, x->scale, p->negative, p->scale, to, &no, &nc,
                      &nn);
  if (rc) {
    free(pc);
    return rc;
  }
  /* Both sides made: only now is the series changed, so a failure leaves it as it was. */
  free(x->pos);
  free(x->neg);
  x->pos = pc, x->npos = pn, x->pos_off = po;
  x->neg = nc, x->nneg = nn, x->neg_off = no;
  x->scale = to;
  x->zero_count += p->zero_count;
  x->count += p->count;
  x->sum += p->_sum_case ? p->sum : 0;
  if (p->zero_threshold > x->zero_threshold) x->zero_threshold = p->zero_threshold;
  return 0;
}

static int summary_set(series *x, const sum_dp *p) {
  double *q = NULL, *v = NULL;
  if (p->n_quantile_values) {
    q = malloc(p->n_quantile_values * sizeof(double));
    v = malloc(p->n_quantile_values * sizeof(double));
    if (!q || !v) {
      free(q);
      free(v);
      return SONDE_ENOMEM;
    }
  }
  /* Sorted by quantile, the later of equal ones kept: client_golang keeps them in a map. */
  size_t n = 0;
  for (size_t i = 0; i < p->n_quantile_values; i++) {
    if (!p->quantile_values[i]) continue;
    double qi = p->quantile_values[i]->quantile, vi = p->quantile_values[i]->value;
    size_t j = 0;
    while (j < n && q[j] < qi)
      j++;
    if (j < n && q[j] == qi) {
      v[j] = vi;
      continue;
    }
    memmove(q + j + 1, q + j, (n - j) * sizeof(double));
    memmove(v + j + 1, v + j, (n - j) * sizeof(double));
    q[j] = qi;
    v[j] = vi;
    n++;
  }
  series_free_values(x);
  x->q = q;
  x->qv = v;
  x->nq = n;
  x->count = p->count;
  x->sum = p->sum;
  return 0;
}

static void hex_id(char *out, ProtobufCBinaryData id, size_t want) {
  out[0] = 0;
  if (id.len != want || !id.data) return;
  for (size_t i = 0; i < want; i++)
    sprintf(out + 2 * i, "%02x", id.data[i]);
}

/* The latest point's exemplars replace the stored ones (otelcol passes the point's own). An
 * exemplar that cannot be kept is not worth failing the point for. */
static void set_exemplars(series *x, int kind, const void *p) {
  Opentelemetry__Proto__Metrics__V1__Exemplar *const *in;
  size_t n;
  if (kind == SK_HIST) {
    in = ((const hist_dp *)p)->exemplars;
    n = ((const hist_dp *)p)->n_exemplars;
  } else {
    in = ((const num_dp *)p)->exemplars;
    n = ((const num_dp *)p)->n_exemplars;
  }
  free(x->ex);
  x->ex = NULL;
  x->nex = 0;
  if (!n || !(x->ex = calloc(n, sizeof(exemplar)))) return;
  for (size_t i = 0; i < n; i++) {
    if (!in[i]) continue;
    exemplar *e = &x->ex[x->nex++];
    e->value = in[i]->value_case == OPENTELEMETRY__PROTO__METRICS__V1__EXEMPLAR__VALUE_AS_INT
                   ? (double)in[i]->as_int
                   : in[i]->as_double;
    e->ts = in[i]->time_unix_nano;
    hex_id(e->trace_id, in[i]->trace_id, 16);
    hex_id(e->span_id, in[i]->span_id, 8);
  }
}

typedef struct cctx {
  prom_state *s;
  prom_stats *st;
  char *err;
  size_t errlen;
  int64_t now;
} cctx;

static void problem(cctx *c, const char *fmt, const char *name, const char *extra) {
  if (c->err && c->errlen && !c->err[0])
    snprintf(c->err, c->errlen, fmt, name ? name : "", extra ? extra : "");
}

/* One data point: flags, attributes and the timestamps every kind has. */
typedef struct dpv {
  kv_t **attrs;
  size_t nattrs;
  uint64_t start, ts;
  uint32_t flags;
  const void *p;
} dpv;

static void accumulate(cctx *c, mctx *mc, const sctx *sc, const rctx *r, const dpv *d,
                       int temporality) {
  prom_state *s = c->s;
  int rc;
  if (d->flags & NO_RECORDED_VALUE) {
    series *x = series_get(s, mc, sc, r, d->attrs, d->nattrs, false, &rc);
    if (x) series_remove(s, x);
    if (rc) c->st->nomem++;
    return;
  }
  series *x = series_get(s, mc, sc, r, d->attrs, d->nattrs, true, &rc);
  if (!x) {
    if (rc == SONDE_EINVAL) {
      c->st->invalid++;
      problem(c, "%s: %s", mc->m->name, "a label value is not valid UTF-8: dropped");
    } else {
      c->st->nomem++;
    }
    return;
  }
  bool fresh = !x->fam;
  if (!fresh && mc->kind != SK_HIST && mc->kind != SK_EXP && d->ts < x->ts) {
    c->st->stale++;
    return;
  }
  rc = 0;
  uint64_t start = x->start; /* changed with the values only */
  switch (mc->kind) {
  case SK_NUMBER: {
    double v = num_value(d->p);
    start = d->start;
    if (!fresh && temporality == T_DELTA && d->start == x->ts) {
      v += x->value;
      start = x->start;
    }
    x->value = v;
    break;
  }
  case SK_HIST:
  case SK_EXP: {
    const hist_dp *hp = d->p;
    const exp_dp *ep = d->p;
    if (mc->kind == SK_HIST && hp->n_bucket_counts &&
        hp->n_bucket_counts != hp->n_explicit_bounds + 1) {
      c->st->invalid++;
      problem(c, "%s: %s", mc->m->name, "bucket_counts must be one more than explicit_bounds");
      if (fresh) series_remove(s, x);
      return;
    }
    if (fresh || temporality == T_CUMUL) {
      if (!fresh && d->ts < x->ts) {
        c->st->stale++;
        return;
      }
      rc = mc->kind == SK_HIST ? hist_set(x, hp) : exp_set(x, ep);
      start = d->start;
      break;
    }
    if (d->start != x->ts) {
      /* A gap is a restart; an overlap breaks the single-writer rule and is dropped. */
      if (d->start <= x->ts) {
        c->st->misaligned++;
        problem(c, "%s: %s", mc->m->name,
                "delta histogram point starts before the previous one ended: dropped");
        return;
      }
      rc = mc->kind == SK_HIST ? hist_set(x, hp) : exp_set(x, ep);
      start = d->start;
      break;
    }
    rc = mc->kind == SK_HIST ? hist_merge(x, hp) : exp_merge(x, ep);
    break;
  }
  case SK_SUMMARY:
    rc = summary_set(x, d->p);
    start = d->start;
    break;
  }
  if (!rc) rc = series_bind(s, x, mc, r);
  if (rc) {
    if (rc == SONDE_ENOMEM)
      c->st->nomem++;
    else
      c->st->invalid++;
    if (fresh) series_remove(s, x);
    return;
  }
  x->start = start;
  if (d->ts > x->ts || fresh) x->ts = d->ts;
  if (mc->ptype == PT_COUNTER || mc->kind == SK_HIST) set_exemplars(x, mc->kind, d->p);
  x->updated = c->now;
  s->gen++;
  c->st->stored++;
}

static void consume_metric(cctx *c, const metric_t *m, const sctx *sc, const rctx *r) {
  prom_state *s = c->s;
  mctx mc = {.m = m, .help = m->description ? m->description : ""};
  prom_otel_kind ok;
  int temporality = T_CUMUL;
  size_t n = 0;
  switch (m->data_case) {
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    if (!m->gauge) return;
    mc.kind = SK_NUMBER, mc.ptype = PT_GAUGE, ok = PROM_OTEL_GAUGE, n = m->gauge->n_data_points;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
    if (!m->sum) return;
    mc.kind = SK_NUMBER;
    mc.ptype = m->sum->is_monotonic ? PT_COUNTER : PT_GAUGE;
    ok = m->sum->is_monotonic ? PROM_OTEL_MONOTONIC_COUNTER : PROM_OTEL_NONMONOTONIC_SUM;
    n = m->sum->n_data_points;
    temporality = m->sum->aggregation_temporality;
    if (temporality != T_CUMUL && !(temporality == T_DELTA && m->sum->is_monotonic)) {
      c->st->invalid += n;
      problem(c, "%s: %s", m->name,
              temporality == T_DELTA ? "a non-monotonic delta sum cannot be exposed: dropped"
                                     : "sum without aggregation temporality: dropped");
      return;
    }
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
    if (!m->histogram) return;
    mc.kind = SK_HIST, mc.ptype = PT_HISTOGRAM, ok = PROM_OTEL_HISTOGRAM;
    n = m->histogram->n_data_points;
    temporality = m->histogram->aggregation_temporality;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    if (!m->exponential_histogram) return;
    mc.kind = SK_EXP, mc.ptype = PT_HISTOGRAM, ok = PROM_OTEL_EXP_HISTOGRAM;
    n = m->exponential_histogram->n_data_points;
    temporality = m->exponential_histogram->aggregation_temporality;
    break;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
    if (!m->summary) return;
    mc.kind = SK_SUMMARY, mc.ptype = PT_SUMMARY, ok = PROM_OTEL_SUMMARY;
    n = m->summary->n_data_points;
    break;
  default:
    return;
  }
  if ((mc.kind == SK_HIST || mc.kind == SK_EXP) && temporality != T_CUMUL &&
      temporality != T_DELTA) {
    c->st->invalid += n;
    problem(c, "%s: %s", m->name, "histogram without aggregation temporality: dropped");
    return;
  }
  bool empty;
  mc.name = prom_metric_name(m->name, m->unit, ok, s->o.namespace_, s->o.add_suffixes, &empty);
  if (!mc.name) {
    if (empty) {
      c->st->invalid += n;
      problem(c, "%s%s: the name has no character valid in Prometheus: dropped", m->name, "");
    } else {
      c->st->nomem += n;
    }
    return;
  }
  mc.fam = (family *)ht_get(&s->families, mc.name, fnv1a(mc.name));
  if (mc.fam && mc.fam->type != mc.ptype) {
    c->st->conflicts += n;
    char why[160];
    snprintf(why, sizeof(why), "is already a %s, this %s is dropped", pt_names[mc.fam->type],
             pt_names[mc.ptype]);
    problem(c, "%s: %s", mc.name, why);
    free(mc.name);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    dpv d = {0};
    switch (m->data_case) {
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM: {
      const num_dp *p = m->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE
                            ? m->gauge->data_points[i]
                            : m->sum->data_points[i];
      if (!p) continue;
      d = (dpv){p->attributes,     p->n_attributes, p->start_time_unix_nano,
                p->time_unix_nano, p->flags,        p};
      break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM: {
      const hist_dp *p = m->histogram->data_points[i];
      if (!p) continue;
      d = (dpv){p->attributes,     p->n_attributes, p->start_time_unix_nano,
                p->time_unix_nano, p->flags,        p};
      break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM: {
      const exp_dp *p = m->exponential_histogram->data_points[i];
      if (!p) continue;
      d = (dpv){p->attributes,     p->n_attributes, p->start_time_unix_nano,
                p->time_unix_nano, p->flags,        p};
      break;
    }
    default: {
      const sum_dp *p = m->summary->data_points[i];
      if (!p) continue;
      d = (dpv){p->attributes,     p->n_attributes, p->start_time_unix_nano,
                p->time_unix_nano, p->flags,        p};
    }
    }
    accumulate(c, &mc, sc, r, &d, temporality);
  }
  free(mc.name);
}

void prom_state_consume(prom_state *s, const sonde_metrics *req, int64_t now_ns, prom_stats *st,
                        char *err, size_t errlen) {
  cctx c = {s, st, err, errlen, now_ns};
  for (size_t i = 0; req && i < req->n_resource_metrics; i++) {
    const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = req->resource_metrics[i];
    if (!rm) continue;
    rctx r;
    if (rctx_init(s, &r, rm->resource)) {
      st->nomem += 1;
      rctx_free(s, &r);
      continue;
    }
    for (size_t j = 0; j < rm->n_scope_metrics; j++) {
      const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[j];
      if (!sm) continue;
      const Opentelemetry__Proto__Common__V1__InstrumentationScope *scope = sm->scope;
      sctx sc = {.name = scope && scope->name ? scope->name : "",
                 .version = scope && scope->version ? scope->version : "",
                 .schema = sm->schema_url ? sm->schema_url : ""};
      if (scope && attrs_add(&sc.attrs, scope->attributes, scope->n_attributes, NULL)) {
        st->nomem++;
        attrs_free(&sc.attrs);
        continue;
      }
      for (size_t k = 0; k < sm->n_metrics; k++)
        if (sm->metrics[k]) consume_metric(&c, sm->metrics[k], &sc, &r);
      attrs_free(&sc.attrs);
    }
    rctx_free(s, &r);
  }
}

/* ---- life ------------------------------------------------------------------------------------ */

int prom_state_new(const prom_opts *o, prom_state **out) {
  prom_state *s = calloc(1, sizeof(*s));
  if (!s) return SONDE_ENOMEM;
  s->o = *o;
  s->o.namespace_ = NULL;
  s->o.const_keys = s->o.const_values = NULL;
  s->o.n_const = 0;
  s->o.resource_include = s->o.resource_exclude = NULL;
  s->o.n_include = s->o.n_exclude = 0;
  bool ok = true;
  if (o->namespace_ && o->namespace_[0]) ok = (s->o.namespace_ = strdup(o->namespace_)) != NULL;
  if (ok && o->n_const) {
    s->o.const_keys = calloc(o->n_const, sizeof(char *));
    s->o.const_values = calloc(o->n_const, sizeof(char *));
    ok = s->o.const_keys && s->o.const_values;
    for (size_t i = 0; ok && i < o->n_const; i++) {
      s->o.const_keys[i] = strdup(o->const_keys[i]);
      s->o.const_values[i] = strdup(o->const_values[i] ? o->const_values[i] : "");
      s->o.n_const = i + 1;
      ok = s->o.const_keys[i] && s->o.const_values[i];
    }
  }
  for (int w = 0; ok && w < 2; w++) {
    char **src = w ? o->resource_exclude : o->resource_include;
    size_t n = w ? o->n_exclude : o->n_include;
    char ***dst = w ? &s->o.resource_exclude : &s->o.resource_include;
    size_t *dn = w ? &s->o.n_exclude : &s->o.n_include;
    if (!n) continue;
    if (!(*dst = calloc(n, sizeof(char *)))) ok = false;
    for (size_t i = 0; ok && i < n; i++) {
      if (!((*dst)[i] = strdup(src[i]))) ok = false;
      *dn = i + 1;
    }
  }
  if (ok) {
    size_t l = (s->o.namespace_ ? strlen(s->o.namespace_) + 1 : 0) + sizeof("target_info");
    if ((s->target_name = malloc(l)))
      snprintf(s->target_name, l, "%s%starget_info", s->o.namespace_ ? s->o.namespace_ : "",
               s->o.namespace_ ? "_" : "");
    ok = s->target_name != NULL;
  }
  if (!ok) {
    prom_state_free(s);
    return SONDE_ENOMEM;
  }
  *out = s;
  return 0;
}

void prom_state_free(prom_state *s) {
  if (!s) return;
  for (size_t i = 0; i < s->series.nb; i++)
    while (s->series.b[i])
      series_remove(s, (series *)s->series.b[i]);
  free(s->series.b);
  free(s->families.b);
  free(s->targets.b);
  for (size_t i = 0; i < s->o.n_const; i++) {
    free(s->o.const_keys[i]);
    free(s->o.const_values[i]);
  }
  free(s->o.const_keys);
  free(s->o.const_values);
  for (size_t i = 0; i < s->o.n_include; i++)
    free(s->o.resource_include[i]);
  for (size_t i = 0; i < s->o.n_exclude; i++)
    free(s->o.resource_exclude[i]);
  free(s->o.resource_include);
  free(s->o.resource_exclude);
  free((char *)s->o.namespace_);
  free(s->target_name);
  free(s);
}

size_t prom_state_expire(prom_state *s, int64_t now_ns) {
  size_t n = 0;
  for (size_t i = 0; i < s->series.nb; i++) {
    hentry *e = s->series.b[i];
    while (e) {
      hentry *next = e->next;
      series *x = (series *)e;
      if (now_ns - x->updated > s->o.expiration_ns) {
        series_remove(s, x);
        n++;
      }
      e = next;
    }
  }
  return n;
}

uint64_t prom_state_generation(const prom_state *s) {
  return s->gen;
}

size_t prom_state_series(const prom_state *s) {
  return s->series.n;
}

/* ---- rendering ------------------------------------------------------------------------------- */

typedef struct rend {
  sonde_buf *o;
  bool om;
  bool ts;
  int rc;
  const exemplar *ex; /* written after the next sample line (OpenMetrics), then cleared */
} rend;

static int cmp_series(const void *a, const void *b) {
  const series *x = *(const series *const *)a, *y = *(const series *const *)b;
  int c = strcmp(x->fam->h.key, y->fam->h.key);
  return c ? c : strcmp(x->labels, y->labels);
}

static int cmp_target(const void *a, const void *b) {
  return strcmp((*(const target *const *)a)->labels, (*(const target *const *)b)->labels);
}

static void fmt_val(const rend *r, char *out, double v) {
  if (r->om)
    prom_fmt_om_float(out, v);
  else
    prom_fmt_float(out, v);
}

static void fmt_uint(const rend *r, char *out, uint64_t v) {
  if (r->om)
    sprintf(out, "%" PRIu64, v);
  else
    prom_fmt_float(out, (double)v);
}

static void put(rend *r, const char *s) {
  if (!r->rc) r->rc = sonde_buf_append(r->o, s, strlen(s));
}

/* One sample line: name+suffix{labels[,extra="ev"]} value[ timestamp]. */
static void sample(rend *r, const char *name, const char *suffix, const char *labels,
                   const char *extra, const char *ev, const char *value, uint64_t ts) {
  bool any = labels[0] || extra;
  put(r, name);
  put(r, suffix);
  if (any) put(r, "{");
  put(r, labels);
  if (extra) {
    if (labels[0]) put(r, ",");
    put(r, extra);
    put(r, "=\"");
    put(r, ev);
    put(r, "\"");
  }
  put(r, any ? "} " : " ");
  put(r, value);
  if (r->ts) {
    char t[40];
    if (r->om)
      prom_fmt_om_float(t, (double)ts / 1e9);
    else
      snprintf(t, sizeof(t), "%" PRIu64, ts / 1000000);
    put(r, " ");
    put(r, t);
  }
  if (r->ex && r->om) {
    const exemplar *e = r->ex;
    char t[40];
    put(r, " # {");
    if (e->trace_id[0]) {
      put(r, "trace_id=\"");
      put(r, e->trace_id);
      put(r, "\"");
    }
    if (e->span_id[0]) {
      put(r, e->trace_id[0] ? ",span_id=\"" : "span_id=\"");
      put(r, e->span_id);
      put(r, "\"");
    }
    put(r, "} ");
    prom_fmt_om_float(t, e->value);
    put(r, t);
    if (e->ts) {
      prom_fmt_om_float(t, (double)e->ts / 1e9);
      put(r, " ");
      put(r, t);
    }
  }
  r->ex = NULL;
  put(r, "\n");
}

static void header(rend *r, const char *name, const char *help, const char *type) {
  if (r->rc) return;
  r->rc = sonde_buf_printf(r->o, "# HELP %s ", name);
  if (!r->rc) r->rc = prom_put_escaped(r->o, help, r->om);
  if (!r->rc) r->rc = sonde_buf_printf(r->o, "\n# TYPE %s %s\n", name, type);
}

typedef struct bkt {
  double le;
  size_t idx;
} bkt;

static int cmp_bkt(const void *a, const void *b) {
  double x = ((const bkt *)a)->le, y = ((const bkt *)b)->le;
  if (x != y) return x < y ? -1 : 1;
  return ((const bkt *)a)->idx < ((const bkt *)b)->idx ? -1 : 1;
}

static void bucket(rend *r, const char *name, const series *x, double le, uint64_t cum) {
  char lev[40], v[40];
  fmt_val(r, lev, le);
  fmt_uint(r, v, cum);
  sample(r, name, "_bucket", x->labels, "le", lev, v, x->ts);
}

/* The upper bound of exponential bucket `index` at `scale`: base^(index+1), base = 2^(2^-scale). */
static double exp_bound(int32_t scale, int64_t index) {
  if (scale <= 0) {
    int64_t e = (index + 1) * ((int64_t)1 << -scale);
    return e > 2000 ? INFINITY : e < -2000 ? 0 : ldexp(1.0, (int)e);
  }
  return exp2((double)(index + 1) / (double)((int64_t)1 << scale));
}

/* The last exemplar in (lower, upper], as client_golang places them in buckets. */
static const exemplar *bucket_exemplar(const series *x, double lower, double upper) {
  const exemplar *found = NULL;
  for (size_t i = 0; i < x->nex; i++)
    if (x->ex[i].value > lower && x->ex[i].value <= upper) found = &x->ex[i];
  return found;
}

static void render_hist(rend *r, const char *name, const series *x) {
  char v[40];
  uint64_t cum = 0;
  if (x->kind == SK_HIST && x->nc) {
    bkt *b = x->nb ? malloc(x->nb * sizeof(*b)) : NULL;
    if (x->nb && !b) {
      r->rc = SONDE_ENOMEM;
      return;
    }
    size_t n = 0;
    for (size_t i = 0; i < x->nb; i++)
      if (!isnan(x->bounds[i])) b[n++] = (bkt){x->bounds[i], i};
    if (n) qsort(b, n, sizeof(*b), cmp_bkt);
    double lower = -INFINITY;
    for (size_t i = 0; i < n; i++) {
      if (i && b[i].le == b[i - 1].le) continue; /* the first of equal bounds counts */
      cum += x->counts[b[i].idx];
      if (isinf(b[i].le) && b[i].le > 0) break;
      r->ex = bucket_exemplar(x, lower, b[i].le);
      bucket(r, name, x, b[i].le, cum);
      lower = b[i].le;
    }
    free(b);
    r->ex = bucket_exemplar(x, lower, INFINITY);
  } else if (x->kind == SK_EXP) {
    /* Text has no native histograms: the exponential buckets become classic ones at their
     * bounds, negative ones first, then the zero bucket, then the positive ones. */
    if (x->scale > 20 || x->scale < -10) goto tail;
    for (size_t i = x->nneg; i-- > 0;) {
      cum += x->neg[i];
      bucket(r, name, x, -exp_bound(x->scale, (int64_t)x->neg_off + (int64_t)i - 1), cum);
    }
    cum += x->zero_count;
    double first_pos = x->npos ? exp_bound(x->scale, x->pos_off) : INFINITY;
    if (x->zero_threshold < first_pos) bucket(r, name, x, x->zero_threshold, cum);
    for (size_t i = 0; i < x->npos; i++) {
      cum += x->pos[i];
      double le = exp_bound(x->scale, (int64_t)x->pos_off + (int64_t)i);
      if (isinf(le)) break;
      bucket(r, name, x, le, cum);
    }
  }
tail:
  fmt_uint(r, v, x->count);
  sample(r, name, "_bucket", x->labels, "le", "+Inf", v, x->ts);
  fmt_val(r, v, x->sum);
  sample(r, name, "_sum", x->labels, NULL, NULL, v, x->ts);
  fmt_uint(r, v, x->count);
  sample(r, name, "_count", x->labels, NULL, NULL, v, x->ts);
}

static void render_series(rend *r, const char *name, const series *x) {
  char v[40], q[40];
  switch (x->fam->type) {
  case PT_COUNTER:
  case PT_GAUGE:
    fmt_val(r, v, x->value);
    if (x->fam->type == PT_COUNTER && x->nex) r->ex = &x->ex[x->nex - 1]; /* the last one */
    sample(r, name, r->om && x->fam->type == PT_COUNTER ? "_total" : "", x->labels, NULL, NULL, v,
           x->ts);
    break;
  case PT_HISTOGRAM:
    render_hist(r, name, x);
    break;
  case PT_SUMMARY:
    for (size_t i = 0; i < x->nq; i++) {
      fmt_val(r, q, x->q[i]);
      fmt_val(r, v, x->qv[i]);
      sample(r, name, "", x->labels, "quantile", q, v, x->ts);
    }
    fmt_val(r, v, x->sum);
    sample(r, name, "_sum", x->labels, NULL, NULL, v, x->ts);
    fmt_uint(r, v, x->count);
    sample(r, name, "_count", x->labels, NULL, NULL, v, x->ts);
    break;
  }
}

static void render_targets(prom_state *s, rend *r) {
  if (!s->targets.n || r->rc) return;
  target **t = malloc(s->targets.n * sizeof(*t));
  if (!t) {
    r->rc = SONDE_ENOMEM;
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < s->targets.nb; i++)
    for (hentry *e = s->targets.b[i]; e; e = e->next)
      t[n++] = (target *)e;
  qsort(t, n, sizeof(*t), cmp_target);
  header(r, s->target_name, "Target metadata", "gauge");
  for (size_t i = 0; i < n; i++) {
    bool save = r->ts;
    r->ts = false;
    sample(r, s->target_name, "", t[i]->labels, NULL, NULL, r->om ? "1.0" : "1", 0);
    r->ts = save;
  }
  free(t);
}

int prom_state_render(prom_state *s, bool openmetrics, sonde_buf *out) {
  rend r = {.o = out, .om = openmetrics, .ts = s->o.send_timestamps};
  size_t n = 0;
  series **v = s->series.n ? malloc(s->series.n * sizeof(*v)) : NULL;
  if (s->series.n && !v) return SONDE_ENOMEM;
  for (size_t i = 0; i < s->series.nb; i++)
    for (hentry *e = s->series.b[i]; e; e = e->next)
      v[n++] = (series *)e;
  if (n) qsort(v, n, sizeof(*v), cmp_series);
  bool targets_done = ht_get(&s->families, s->target_name, fnv1a(s->target_name)) != NULL;
  char omname[512];
  for (size_t i = 0; i < n && !r.rc; i++) {
    const family *f = v[i]->fam;
    const char *name = f->h.key;
    bool first = i == 0 || v[i - 1]->fam != f;
    if (!first && strcmp(v[i - 1]->labels, v[i]->labels) == 0) continue; /* a duplicate */
    if (!first) {
      render_series(&r, r.om && f->type == PT_COUNTER ? omname : name, v[i]);
      continue;
    }
    if (!targets_done && strcmp(s->target_name, name) < 0) {
      render_targets(s, &r);
      targets_done = true;
    }
    const char *hname = name;
    if (r.om && f->type == PT_COUNTER) {
      /* OpenMetrics names the counter family without _total; its sample carries it. */
      size_t l = strlen(name);
      if (l > 6 && strcmp(name + l - 6, "_total") == 0) l -= 6;
      snprintf(omname, sizeof(omname), "%.*s", (int)l, name);
      hname = omname;
    }
    header(&r, hname, f->help, pt_names[f->type]);
    render_series(&r, hname, v[i]);
  }
  if (!targets_done) render_targets(s, &r);
  if (!r.rc && openmetrics) r.rc = sonde_buf_append(out, "# EOF\n", 6);
  free(v);
  return r.rc ? SONDE_ENOMEM : 0;
}

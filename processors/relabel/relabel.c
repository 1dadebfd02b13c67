/* The `relabel` processor: Prometheus relabel_configs over the resource of each ResourceSpans /
 * ResourceProfiles.
 *
 * The labels of a resource are its scalar attributes (key as the label name, value as text) plus
 * the discovery labels Parca Agent users write rules against (__meta_process_*,
 * __meta_kubernetes_*), derived from the attributes. After the rules, labels starting with "__" are
 * dropped and the rest become the resource's attributes again: an attribute whose label kept its
 * text keeps its original node (and type), a changed one becomes a string, a new label is appended
 * as a string, a removed label removes the attribute. keep/drop remove the whole resource entry and
 * its spans or profiles. The rules themselves live in relabel_rules.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relabel_rules.h"
#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Resource__V1__Resource resource_t;

typedef struct relabel_config {
  sonde_tablelist rules; /* rl_rule_cfg */
  int names;             /* rl_names */
  char *proc_root;       /* where /proc is; tests point it elsewhere */
} relabel_config;

static const sonde_option rule_options[] = {
    SONDE_OPT("source_labels", SONDE_OPT_STRLIST, rl_rule_cfg, source_labels, NULL,
              "labels whose values are joined with separator and matched against regex"),
    SONDE_OPT("separator", SONDE_OPT_STRING, rl_rule_cfg, separator, RL_DEFAULT_SEPARATOR,
              "placed between the joined source label values"),
    SONDE_OPT("regex", SONDE_OPT_STRING, rl_rule_cfg, regex, RL_DEFAULT_REGEX,
              "regular expression (anchored at both ends) the joined value must match"),
    SONDE_OPT_RANGE("modulus", SONDE_OPT_INT, rl_rule_cfg, modulus, "0", 0, 9.2e18,
                    "hashmod: modulus taken of the hash of the joined value"),
    SONDE_OPT("target_label", SONDE_OPT_STRING, rl_rule_cfg, target_label, NULL,
              "label written by replace, hashmod, lowercase, uppercase; compared by *equal"),
    SONDE_OPT("replacement", SONDE_OPT_STRING, rl_rule_cfg, replacement, RL_DEFAULT_REPLACEMENT,
              "value written by replace ($1, ${name} refer to regex groups); labelmap's new name"),
    SONDE_OPT_ENUMV("action", rl_rule_cfg, action, "replace", rl_action_names,
                    "what the rule does (Prometheus's relabel actions)"),
    SONDE_OPT_END,
};

static const char *const names_values[] = {"legacy", "utf8", NULL};

static const sonde_option relabel_options[] = {
    SONDE_OPT_ROWS("relabel_configs", relabel_config, rules, rl_rule_cfg, rule_options,
                   "Prometheus relabel_configs, applied in order to each resource's labels"),
    SONDE_OPT_ENUMV("label_name_validation", relabel_config, names, "legacy", names_values,
                    "target label names: legacy [a-zA-Z_][a-zA-Z0-9_]* (Prometheus 2) or utf8 "
                    "(Prometheus 3)"),
    SONDE_OPT("proc_root", SONDE_OPT_STRING, relabel_config, proc_root, "/proc",
              "procfs mount read for __meta_process_cgroup"),
    SONDE_OPT_END,
};

static int relabel_validate(const void *config, char *err, size_t errlen) {
  const relabel_config *c = config;
  rl_rules *r = NULL;
  int rc = rl_compile(c->rules.items, c->rules.n, (rl_names)c->names, &r, err, errlen);
  rl_free(r);
  return rc;
}

/* ---- attributes <-> labels ------------------------------------------------------------------ */

/* The text of a scalar attribute value, as a label value; false for values that are not labels
 * (arrays, maps, bytes, unset) and stay as they are. */
static bool value_text(const any_t *v, char *buf, size_t len, const char **out) {
  if (!v) return false;
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    *out = v->string_value ? v->string_value : "";
    return true;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    snprintf(buf, len, "%" PRId64, v->int_value);
    *out = buf;
    return true;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    *out = v->bool_value ? "true" : "false";
    return true;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    /* The shortest text that reads back as the same double. */
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, len, "%.*g", prec, v->double_value);
      if (strtod(buf, NULL) == v->double_value) break;
    }
    *out = buf;
    return true;
  default:
    return false;
  }
}

static const char *attr_text(const resource_t *r, const char *key, char *buf, size_t len) {
  for (size_t i = 0; r && i < r->n_attributes; i++) {
    const kv_t *kv = r->attributes[i];
    const char *t;
    if (kv && kv->key && !strcmp(kv->key, key) && value_text(kv->value, buf, len, &t)) return t;
  }
  return NULL;
}

/* Prometheus's strutil.SanitizeLabelName: every byte outside [a-zA-Z0-9_] becomes '_'. */
static void sanitize(char *s) {
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
      *s = '_';
}

typedef struct relabel {
  const sonde_host *h;
  const relabel_config *cfg;
  rl_rules *rules;
  bool want_cgroup;
  sonde_metric *m_res_dropped, *m_items_dropped, *m_res_changed;
} relabel;

/* First line of PROC/pid/cgroup, or NULL. */
static char *read_cgroup(const relabel *p, const char *pid, char *buf, size_t len) {
  for (const char *c = pid; *c; c++)
    if (*c < '0' || *c > '9') return NULL;
  char path[512];
  snprintf(path, sizeof path, "%s/%s/cgroup", p->cfg->proc_root, pid);
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char *line = fgets(buf, (int)len, f);
  fclose(f);
  if (!line) return NULL;
  line[strcspn(line, "\n")] = 0;
  return line;
}

/* The k8s.* attribute families that become per-key discovery labels. */
static const struct {
  const char *prefix, *label;
} k8s_families[] = {
    {"k8s.pod.labels.", "__meta_kubernetes_pod_label_"},
    {"k8s.pod.label.", "__meta_kubernetes_pod_label_"},
    {"k8s.pod.annotations.", "__meta_kubernetes_pod_annotation_"},
    {"k8s.pod.annotation.", "__meta_kubernetes_pod_annotation_"},
};

static const struct {
  const char *attr, *label;
} k8s_single[] = {
    {"k8s.namespace.name", "__meta_kubernetes_namespace"},
    {"k8s.pod.name", "__meta_kubernetes_pod_name"},
    {"k8s.pod.uid", "__meta_kubernetes_pod_uid"},
    {"k8s.node.name", "__meta_kubernetes_pod_node_name"},
    {"k8s.container.name", "__meta_kubernetes_pod_container_name"},
    {"process.pid", "__meta_process_pid"},
    {"process.executable.name", "__meta_process_executable_name"},
};

/* Sets a discovery label unless an attribute of that name is already a label (it wins). */
static int set_derived(rl_labels *ls, const char *name, const char *value) {
  return *rl_labels_get(ls, name) ? 0 : rl_labels_set(ls, name, value);
}

/* The labels of a resource: its scalar attributes, then the discovery labels. */
static int labels_of(const relabel *p, const resource_t *r, rl_labels *ls) {
  char buf[64];
  int rc = 0;
  for (size_t i = 0; r && i < r->n_attributes && !rc; i++) {
    const kv_t *kv = r->attributes[i];
    const char *t;
    if (kv && kv->key && *kv->key && value_text(kv->value, buf, sizeof buf, &t))
      rc = rl_labels_set(ls, kv->key, t);
  }
  for (size_t k = 0; k < sizeof k8s_single / sizeof k8s_single[0] && !rc; k++) {
    const char *t = attr_text(r, k8s_single[k].attr, buf, sizeof buf);
    if (t) rc = set_derived(ls, k8s_single[k].label, t);
  }
  for (size_t i = 0; r && i < r->n_attributes && !rc; i++) {
    const kv_t *kv = r->attributes[i];
    const char *t;
    if (!kv || !kv->key || !value_text(kv->value, buf, sizeof buf, &t)) continue;
    for (size_t k = 0; k < sizeof k8s_families / sizeof k8s_families[0] && !rc; k++) {
      size_t pl = strlen(k8s_families[k].prefix);
      if (strncmp(kv->key, k8s_families[k].prefix, pl) || !kv->key[pl]) continue;
      size_t ll = strlen(k8s_families[k].label);
      size_t n = ll + strlen(kv->key + pl) + 16;
      char *name = malloc(n);
      if (!name) return SONDE_ENOMEM;
      snprintf(name, n, "%s%s", k8s_families[k].label, kv->key + pl);
      sanitize(name + ll);
      rc = set_derived(ls, name, t);
      if (!rc && strstr(k8s_families[k].label, "_label_")) {
        /* __meta_kubernetes_pod_labelpresent_<name>, as Prometheus's pod discovery adds. */
        snprintf(name, n, "__meta_kubernetes_pod_labelpresent_%s", kv->key + pl);
        sanitize(name + strlen("__meta_kubernetes_pod_labelpresent_"));
        rc = set_derived(ls, name, "true");
      }
      free(name);
    }
  }
  if (!rc && p->want_cgroup) {
    char line[1024];
    const char *pid = rl_labels_get(ls, "__meta_process_pid");
    const char *cg = *pid ? read_cgroup(p, pid, line, sizeof line) : NULL;
    if (!cg) cg = attr_text(r, "container.id", buf, sizeof buf);
    if (cg) rc = set_derived(ls, "__meta_process_cgroup", cg);
  }
  return rc;
}

/* The resource for the final labels: NULL in *out when nothing changed (the old one stands).
 * New nodes only; old is not written. */
static int resource_for(sonde_batch *b, const resource_t *old, const rl_labels *ls,
                        resource_t **out) {
  *out = NULL;
  size_t nold = old ? old->n_attributes : 0;
  bool *used = calloc(ls->n ? ls->n : 1, sizeof(*used));
  kv_t **attrs = sonde_batch_alloc(b, (nold + ls->n + 1) * sizeof(*attrs));
  if (!used || !attrs) {
    free(used);
    return SONDE_ENOMEM;
  }
  size_t n = 0;
  bool changed = false;
  char buf[64];
  for (size_t i = 0; i < nold; i++) {
    kv_t *kv = old->attributes[i];
    const char *t;
    bool scalar = kv && kv->key && *kv->key && value_text(kv->value, buf, sizeof buf, &t);
    size_t li = ls->n;
    for (size_t k = 0; kv && kv->key && k < ls->n; k++)
      if (!used[k] && !strcmp(ls->v[k].name, kv->key)) {
        li = k;
        break;
      }
    if (li == ls->n) {
      /* Not a label now: an empty string or a non-scalar never was one and stays; a label that a
       * rule removed goes. */
      if (!scalar || !*t) {
        attrs[n++] = kv;
      } else {
        changed = true;
      }
      continue;
    }
    used[li] = true;
    if (scalar && !strcmp(t, ls->v[li].value)) {
      attrs[n++] = kv;
      continue;
    }
    changed = true;
    if (!(attrs[n++] = sonde_batch_kv_str(b, ls->v[li].name, ls->v[li].value))) {
      free(used);
      return SONDE_ENOMEM;
    }
  }
  for (size_t k = 0; k < ls->n; k++) {
    if (used[k]) continue;
    changed = true;
    if (!(attrs[n++] = sonde_batch_kv_str(b, ls->v[k].name, ls->v[k].value))) {
      free(used);
      return SONDE_ENOMEM;
    }
  }
  free(used);
  if (!changed) return 0;
  resource_t *r = sonde_batch_alloc(b, sizeof(*r));
  if (!r) return SONDE_ENOMEM;
  if (old)
    *r = *old;
  else
    opentelemetry__proto__resource__v1__resource__init(r);
  r->attributes = attrs;
  r->n_attributes = n;
  *out = r;
  return 0;
}

/* ---- batches -------------------------------------------------------------------------------- */

typedef struct shape {
  size_t req_n, req_arr;      /* request: n_resource_x, resource_x */
  size_t entry_size, res_off; /* entry: sizeof(ResourceX), offsetof(ResourceX, resource) */
} shape;

#define SHAPE(Req, Entry, n, arr)                                                                  \
  { offsetof(Req, n), offsetof(Req, arr), sizeof(Entry), offsetof(Entry, resource) }
#define FIELD(T, p, off) (*(T *)(void *)((char *)(p) + (off)))

static const shape trace_shape = SHAPE(sonde_traces, Opentelemetry__Proto__Trace__V1__ResourceSpans,
                                       n_resource_spans, resource_spans);
static const shape profile_shape =
    SHAPE(sonde_profiles, Opentelemetry__Proto__Profiles__V1development__ResourceProfiles,
          n_resource_profiles, resource_profiles);

/* Spans or profile samples under one resource entry, for the drop counter. */
static size_t entry_items(sonde_signal sig, const void *e) {
  size_t c = 0;
  if (sig == SONDE_SIGNAL_TRACES) {
    const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = e;
    for (size_t i = 0; i < rs->n_scope_spans; i++)
      c += rs->scope_spans[i] ? rs->scope_spans[i]->n_spans : 0;
  } else {
    const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *rp = e;
    for (size_t i = 0; i < rp->n_scope_profiles; i++)
      for (size_t k = 0; rp->scope_profiles[i] && k < rp->scope_profiles[i]->n_profiles; k++)
        c += rp->scope_profiles[i]->profiles[k] ? rp->scope_profiles[i]->profiles[k]->n_samples : 0;
  }
  return c;
}

/* Relabels every resource of b; *left gets the entries that remain. On error b is as it came. */
static int apply(relabel *p, sonde_batch *b, size_t *left) {
  sonde_signal sig = sonde_batch_signal(b);
  const shape *sh = sig == SONDE_SIGNAL_TRACES     ? &trace_shape
                    : sig == SONDE_SIGNAL_PROFILES ? &profile_shape
                                                   : NULL;
  ProtobufCMessage *req = sonde_batch_msg(b);
  if (!sh || !req) return SONDE_EINVAL;
  size_t n = FIELD(size_t, req, sh->req_n);
  void **entries = FIELD(void **, req, sh->req_arr);
  *left = n;
  if (n == 0) return 0;
  void **fresh = sonde_batch_alloc(b, n * sizeof(*fresh));
  if (!fresh) return SONDE_ENOMEM;
  size_t k = 0, dropped = 0, items = 0, changed = 0;
  for (size_t i = 0; i < n; i++) {
    if (!entries[i]) continue; /* not valid OTLP; nothing to carry */
    const resource_t *old = FIELD(resource_t *, entries[i], sh->res_off);
    rl_labels ls = {0};
    bool keep = true;
    resource_t *nr = NULL;
    int rc = labels_of(p, old, &ls);
    if (!rc) rc = rl_apply(p->rules, &ls, &keep);
    if (!rc && keep) {
      rl_drop_internal(&ls);
      rc = resource_for(b, old, &ls, &nr);
    }
    rl_labels_free(&ls);
    if (rc) return rc;
    if (!keep) {
      dropped++;
      items += entry_items(sig, entries[i]);
      continue;
    }
    if (!nr) {
      fresh[k++] = entries[i];
      continue;
    }
    void *e = sonde_batch_memdup(b, entries[i], sh->entry_size);
    if (!e) return SONDE_ENOMEM;
    FIELD(resource_t *, e, sh->res_off) = nr;
    fresh[k++] = e;
    changed++;
  }
  /* The one write into memory this stage did not allocate: the request of its private batch. */
  FIELD(void **, req, sh->req_arr) = fresh;
  FIELD(size_t, req, sh->req_n) = k;
  *left = k;
  if (p->m_res_dropped && dropped) p->h->api->metric_add(p->m_res_dropped, (double)dropped);
  if (p->m_items_dropped && items) p->h->api->metric_add(p->m_items_dropped, (double)items);
  if (p->m_res_changed && changed) p->h->api->metric_add(p->m_res_changed, (double)changed);
  return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static int relabel_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const relabel_config *c = config;
  relabel *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = c;
  char err[512];
  int rc = rl_compile(c->rules.items, c->rules.n, (rl_names)c->names, &p->rules, err, sizeof err);
  if (rc) {
    sonde_log(h, SONDE_LOG_ERROR, "%s", err);
    free(p);
    return rc;
  }
  p->want_cgroup = rl_reads(p->rules, "__meta_process_cgroup");
  /* Self-metrics are nice to have: a failure to register one leaves it NULL and uncounted. */
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_relabel_dropped_resources",
                 "Resources removed by keep/drop rules.", NULL, &p->m_res_dropped);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_relabel_dropped_items",
                 "Spans or profile samples removed with their resource by keep/drop rules.", NULL,
                 &p->m_items_dropped);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_relabel_changed_resources",
                 "Resources whose attributes the rules changed.", NULL, &p->m_res_changed);
  *inst = p;
  return 0;
}

static int relabel_consume(void *inst, sonde_batch *b) {
  relabel *p = inst;
  size_t left = 0;
  int rc = apply(p, b, &left);
  if (rc) {
    sonde_log(p->h, SONDE_LOG_WARN, "cannot relabel a %s batch: %s",
              sonde_signal_name(sonde_batch_signal(b)), sonde_strerror(rc));
    return rc;
  }
  if (left == 0) return 0; /* everything dropped: nothing to pass on */
  return p->h->api->consume(p->h, b, NULL);
}

static void relabel_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  done(arg);
}

static void relabel_destroy(void *inst) {
  relabel *p = inst;
  if (!p) return;
  rl_free(p->rules);
  free(p);
}

static const sonde_component relabel_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "relabel",
    .doc = "Prometheus relabel_configs over resource attributes and discovery labels",
    .signals = SONDE_SIGNAL_TRACES | SONDE_SIGNAL_PROFILES,
    .flags = SONDE_COMP_MUTATES,
    .options = relabel_options,
    .config_size = sizeof(relabel_config),
    .validate = relabel_validate,
    .create = relabel_create,
    .consume = relabel_consume,
    .shutdown = relabel_shutdown,
    .destroy = relabel_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-relabel", "1.0", &relabel_component);

/* The `k8sattributes` processor: adds Kubernetes pod metadata to the resources of every signal.
 *
 * A resource is associated with a pod by the pod_association rules (otelcol's): a resource
 * attribute naming the pod's IP, UID or a container id, a process.pid whose /proc/PID/cgroup names
 * a container (or the pod's cgroup), or the connection's IP. The pods come from a list + watch of
 * the Kubernetes API (k8s_api.c). Attributes already on the resource win over the pod's. A resource
 * with no association passes through unchanged; a changed one is copied on write, as relabel does:
 * the only write into memory this stage did not allocate is the request's entry array.
 */
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_api.h"
#include "k8s_meta.h"
#include "sonde/sonde.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;
typedef Opentelemetry__Proto__Resource__V1__Resource resource_t;

/* ---- options -------------------------------------------------------------------------------- */

typedef struct k8s_rule_cfg {
  char *tag_name, *key, *key_regex;
  int from;
} k8s_rule_cfg;

typedef struct k8s_src_cfg {
  int from;
  char *name;
} k8s_src_cfg;

typedef struct k8s_assoc_cfg {
  sonde_tablelist sources; /* k8s_src_cfg */
} k8s_assoc_cfg;

typedef struct k8s_filter_cfg {
  char *node_from_env_var, *node;
} k8s_filter_cfg;

typedef struct k8s_extract_cfg {
  sonde_strlist metadata;
  sonde_tablelist labels, annotations; /* k8s_rule_cfg */
} k8s_extract_cfg;

typedef struct k8s_config {
  int auth_type;
  char *kube_config_path;
  bool passthrough;
  k8s_filter_cfg filter;
  bool extract_set;
  k8s_extract_cfg extract;
  sonde_tablelist pod_association; /* k8s_assoc_cfg */
  int64_t max_pods;
  int64_t pod_delete_grace;
  char *proc_root;
} k8s_config;

static const char *const auth_types[] = {"serviceAccount", "kubeConfig", "none", NULL};
static const char *const rule_froms[] = {"pod", "namespace", NULL};
static const char *const src_froms[] = {"resource_attribute", "connection", NULL};

static const sonde_option rule_options[] = {
    SONDE_OPT("tag_name", SONDE_OPT_STRING, k8s_rule_cfg, tag_name, NULL,
              "attribute written (default k8s.pod.labels.<key> / k8s.pod.annotations.<key>); "
              "with key_regex, $1.. name its groups"),
    SONDE_OPT("key", SONDE_OPT_STRING, k8s_rule_cfg, key, NULL, "the label or annotation key"),
    SONDE_OPT("key_regex", SONDE_OPT_STRING, k8s_rule_cfg, key_regex, NULL,
              "extended regular expression (anchored) matched against every key"),
    SONDE_OPT_ENUMV("from", k8s_rule_cfg, from, "pod", rule_froms,
                    "where the labels are read: pod, or the pod's namespace"),
    SONDE_OPT_END,
};

static const sonde_option src_options[] = {
    SONDE_OPT_ENUMV("from", k8s_src_cfg, from, "resource_attribute", src_froms,
                    "resource_attribute (name says which) or connection (the peer IP)"),
    SONDE_OPT("name", SONDE_OPT_STRING, k8s_src_cfg, name, NULL,
              "resource_attribute: k8s.pod.ip, k8s.pod.uid, container.id, process.pid or any "
              "attribute holding the pod IP"),
    SONDE_OPT_END,
};

static const sonde_option assoc_options[] = {
    SONDE_OPT_ROWS("sources", k8s_assoc_cfg, sources, k8s_src_cfg, src_options,
                   "every source must name the same pod"),
    SONDE_OPT_END,
};

static const sonde_option filter_options[] = {
    SONDE_OPT("node_from_env_var", SONDE_OPT_STRING, k8s_filter_cfg, node_from_env_var, NULL,
              "environment variable holding this node's name (Downward API spec.nodeName)"),
    SONDE_OPT("node", SONDE_OPT_STRING, k8s_filter_cfg, node, NULL,
              "this node's name; only its pods are watched"),
    SONDE_OPT_END,
};

static const sonde_option extract_options[] = {
    SONDE_OPT("metadata", SONDE_OPT_STRLIST, k8s_extract_cfg, metadata, NULL,
              "attributes to add (default: k8s.namespace.name, k8s.pod.name, k8s.pod.uid, "
              "k8s.pod.start_time, k8s.deployment.name, k8s.node.name)"),
    SONDE_OPT_ROWS("labels", k8s_extract_cfg, labels, k8s_rule_cfg, rule_options,
                   "pod labels to copy into attributes"),
    SONDE_OPT_ROWS("annotations", k8s_extract_cfg, annotations, k8s_rule_cfg, rule_options,
                   "pod annotations to copy into attributes"),
    SONDE_OPT_END,
};

static const sonde_option k8s_options[] = {
    SONDE_OPT_ENUMV("auth_type", k8s_config, auth_type, "serviceAccount", auth_types,
                    "how to reach the API: serviceAccount (in-cluster), kubeConfig or none"),
    SONDE_OPT("kube_config_path", SONDE_OPT_STRING, k8s_config, kube_config_path, NULL,
              "kubeConfig: the file (default $KUBECONFIG, then ~/.kube/config)"),
    SONDE_OPT("passthrough", SONDE_OPT_BOOL, k8s_config, passthrough, "false",
              "only add k8s.pod.ip from the association; no API access"),
    SONDE_OPT_NESTED("filter", k8s_config, filter, filter_options, "which pods are watched"),
    SONDE_OPT_NESTED_P("extract", k8s_config, extract, extract_set, extract_options,
                       "what is added to resources"),
    SONDE_OPT_ROWS("pod_association", k8s_config, pod_association, k8s_assoc_cfg, assoc_options,
                   "how a resource names its pod, tried in order"),
    SONDE_OPT_RANGE("max_pods", SONDE_OPT_INT, k8s_config, max_pods, "10000", 1, 10000000,
                    "pods kept in the cache; more evict the oldest (counted)"),
    SONDE_OPT("pod_delete_grace", SONDE_OPT_DURATION, k8s_config, pod_delete_grace, "2m",
              "a deleted pod still associates this long (late exports of its data)"),
    SONDE_OPT("proc_root", SONDE_OPT_STRING, k8s_config, proc_root, "/proc",
              "procfs mount read for process.pid -> cgroup"),
    SONDE_OPT_END,
};

/* The metadata names otelcol knows. */
enum {
  MD_NS,
  MD_POD,
  MD_UID,
  MD_START,
  MD_CONTAINER,
  MD_NODE,
  MD_DEPLOY,
  MD_RS,
  MD_STS,
  MD_DS,
  MD_JOB,
  MD_IMAGE,
  MD_TAG,
  MD_COUNT
};
static const char *const md_names[MD_COUNT] = {
    "k8s.namespace.name",   "k8s.pod.name",       "k8s.pod.uid",         "k8s.pod.start_time",
    "k8s.container.name",   "k8s.node.name",      "k8s.deployment.name", "k8s.replicaset.name",
    "k8s.statefulset.name", "k8s.daemonset.name", "k8s.job.name",        "container.image.name",
    "container.image.tag"};
static const int md_default[] = {MD_NS, MD_POD, MD_UID, MD_START, MD_DEPLOY, MD_NODE};

static int md_index(const char *name) {
  for (int i = 0; i < MD_COUNT; i++)
    if (!strcmp(md_names[i], name)) return i;
  return -1;
}

static int check_rules(const sonde_tablelist *l, const char *what, char *err, size_t errlen) {
  const k8s_rule_cfg *r = l->items;
  for (size_t i = 0; i < l->n; i++) {
    if (!(r[i].key && *r[i].key) == !(r[i].key_regex && *r[i].key_regex)) {
      snprintf(err, errlen, "extract::%s[%zu]: exactly one of key and key_regex is needed", what,
               i);
      return SONDE_ECONFIG;
    }
    if (r[i].key_regex) {
      regex_t re;
      if (regcomp(&re, r[i].key_regex, REG_EXTENDED)) {
        snprintf(err, errlen, "extract::%s[%zu]::key_regex: invalid regular expression \"%s\"",
                 what, i, r[i].key_regex);
        return SONDE_ECONFIG;
      }
      regfree(&re);
    }
  }
  return 0;
}

static int k8s_validate(const void *config, char *err, size_t errlen) {
  const k8s_config *c = config;
  for (size_t i = 0; i < c->extract.metadata.n; i++)
    if (md_index(c->extract.metadata.v[i]) < 0) {
      snprintf(err, errlen, "extract::metadata: unknown \"%s\"", c->extract.metadata.v[i]);
      return SONDE_ECONFIG;
    }
  int rc = check_rules(&c->extract.labels, "labels", err, errlen);
  if (!rc) rc = check_rules(&c->extract.annotations, "annotations", err, errlen);
  const k8s_assoc_cfg *as = c->pod_association.items;
  for (size_t i = 0; !rc && i < c->pod_association.n; i++) {
    const k8s_src_cfg *s = as[i].sources.items;
    if (!as[i].sources.n) {
      snprintf(err, errlen, "pod_association[%zu]: sources is empty", i);
      return SONDE_ECONFIG;
    }
    for (size_t k = 0; k < as[i].sources.n; k++)
      if (s[k].from == 0 && !(s[k].name && *s[k].name)) {
        snprintf(err, errlen, "pod_association[%zu]::sources[%zu]: resource_attribute needs name",
                 i, k);
        return SONDE_ECONFIG;
      }
  }
  return rc;
}

/* ---- instance ------------------------------------------------------------------------------- */

typedef struct rule {
  const k8s_rule_cfg *cfg;
  regex_t re;
  bool has_re;
} rule;

/* One API client per configured processor, shared by the pipelines that use it (the core makes an
 * instance per pipeline, all with the one config struct of that processor): one list + watch per
 * node, as otelcol's shared component does. Keyed by that config, so a reloaded configuration
 * (a new struct) never joins the client of the old one. All on the loop thread, so no lock. The
 * client logs and counts through the first instance's host, which the core destroys only after
 * every instance has shut down. */
typedef struct shared_api {
  struct shared_api *next;
  const void *config;
  k8s_api *api;
  k8s_api *ns_api; /* namespaces, when a rule reads from: namespace */
  int refs, started, stopping;
  int pending; /* clients still shutting down */
  void (*done)(void *);
  void *done_arg;
} shared_api;
static shared_api *shared_list;

typedef struct k8sp {
  const sonde_host *h;
  const k8s_config *cfg;
  k8s_api *api, *ns_api;
  shared_api *shared;
  bool md[MD_COUNT];
  rule *labels, *annotations;
  size_t n_labels, n_annotations;
  sonde_metric *m_pods, *m_evictions, *m_relists, *m_events, *m_errors, *m_assoc, *m_unassoc;
} k8sp;

/* The attributes that name the connection's peer, as receivers and the eBPF tracer write them:
 * batches carry no transport context, so "from: connection" reads these. */
static const char *const conn_attrs[] = {"k8s.pod.ip",  "net.sock.peer.addr", "client.address",
                                         "net.peer.ip", "source.address",     NULL};

static const char *attr_str(const resource_t *r, const char *key, char *buf, size_t len) {
  for (size_t i = 0; r && i < r->n_attributes; i++) {
    const kv_t *kv = r->attributes[i];
    if (!kv || !kv->key || strcmp(kv->key, key) || !kv->value) continue;
    if (kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE)
      return kv->value->string_value && *kv->value->string_value ? kv->value->string_value : NULL;
    if (kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE) {
      snprintf(buf, len, "%" PRId64, kv->value->int_value);
      return buf;
    }
  }
  return NULL;
}

typedef struct match {
  const k8s_pod *pod;
  const k8s_container *cont;
  const char *ip; /* passthrough: the associating IP */
} match;

/* The pod of a process: its cgroup names a container (or at least the pod). */
static const k8s_pod *pod_of_pid(k8sp *p, const char *pid, const k8s_container **cont) {
  for (const char *c = pid; *c; c++)
    if (*c < '0' || *c > '9') return NULL;
  char path[1024];
  snprintf(path, sizeof path, "%s/%s/cgroup", p->cfg->proc_root, pid);
  /* procfs reads do not block on I/O: the kernel formats the text on the spot. */
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char text[8192];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char id[65], uid[37];
  if (!k8s_cgroup_ids(text, n, id, uid)) return NULL;
  const k8s_pod *pod = id[0] && p->api ? k8s_api_by_container(p->api, id, cont) : NULL;
  if (!pod && uid[0] && p->api) pod = k8s_api_by_uid(p->api, uid);
  return pod;
}

/* One source: the pod it names, or NULL. */
static const k8s_pod *resolve(k8sp *p, const resource_t *r, const k8s_src_cfg *s,
                              const k8s_container **cont, const char **ip) {
  char buf[32];
  if (s->from == 1) {
    for (size_t i = 0; conn_attrs[i]; i++) {
      const char *v = attr_str(r, conn_attrs[i], buf, sizeof buf);
      if (!v) continue;
      *ip = v;
      return p->api ? k8s_api_by_ip(p->api, v) : NULL;
    }
    return NULL;
  }
  const char *v = attr_str(r, s->name, buf, sizeof buf);
  if (!v || !p->api) return NULL;
  if (!strcmp(s->name, "k8s.pod.uid")) return k8s_api_by_uid(p->api, v);
  if (!strcmp(s->name, "container.id")) return k8s_api_by_container(p->api, v, cont);
  if (!strcmp(s->name, "process.pid")) return pod_of_pid(p, v, cont);
  *ip = v;
  return k8s_api_by_ip(p->api, v);
}

static const k8s_src_cfg default_sources[] = {
    {0, "k8s.pod.uid"}, {0, "container.id"}, {0, "process.pid"}, {0, "k8s.pod.ip"}, {1, NULL}};

static bool associate(k8sp *p, const resource_t *r, match *m) {
  memset(m, 0, sizeof(*m));
  const k8s_assoc_cfg *as = p->cfg->pod_association.items;
  size_t na = p->cfg->pod_association.n;
  size_t rounds = na ? na : sizeof default_sources / sizeof default_sources[0];
  for (size_t i = 0; i < rounds; i++) {
    const k8s_src_cfg *srcs = na ? as[i].sources.items : &default_sources[i];
    size_t ns = na ? as[i].sources.n : 1;
    const k8s_pod *pod = NULL;
    const k8s_container *cont = NULL;
    const char *ip = NULL;
    bool ok = true;
    for (size_t k = 0; k < ns && ok; k++) {
      const k8s_container *c = NULL;
      const k8s_pod *q = resolve(p, r, &srcs[k], &c, &ip);
      if (p->cfg->passthrough) continue;
      ok = q && (!pod || q == pod);
      pod = q;
      if (c) cont = c;
    }
    if (p->cfg->passthrough && ip) {
      m->ip = ip;
      return true;
    }
    if (ok && pod) {
      m->pod = pod;
      m->cont = cont;
      return true;
    }
  }
  return false;
}

/* ---- writing attributes --------------------------------------------------------------------- */

typedef struct attrs {
  sonde_batch *b;
  const resource_t *old;
  kv_t **v;
  size_t n, cap;
  bool oom;
} attrs;

static bool has_attr(const attrs *a, const char *key) {
  for (size_t i = 0; i < a->n; i++)
    if (a->v[i] && a->v[i]->key && !strcmp(a->v[i]->key, key)) {
      const any_t *v = a->v[i]->value;
      /* An empty string is as good as absent, as in otelcol. */
      return !(v &&
               v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
               (!v->string_value || !*v->string_value));
    }
  return false;
}

static void put(attrs *a, const char *key, const char *value) {
  if (a->oom || !value || has_attr(a, key)) return;
  if (a->n == a->cap) {
    size_t nc = a->cap * 2 + 8;
    kv_t **nv = sonde_batch_alloc(a->b, nc * sizeof(*nv));
    if (!nv) {
      a->oom = true;
      return;
    }
    if (a->n) memcpy(nv, a->v, a->n * sizeof(*nv));
    a->v = nv;
    a->cap = nc;
  }
  kv_t *kv = sonde_batch_alloc(a->b, sizeof(*kv));
  any_t *v = sonde_batch_alloc(a->b, sizeof(*v));
  if (!kv || !v) {
    a->oom = true;
    return;
  }
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  kv->key = sonde_batch_strdup(a->b, key);
  v->string_value = sonde_batch_strdup(a->b, value);
  if (!kv->key || !v->string_value) {
    a->oom = true;
    return;
  }
  kv->value = v;
  /* An empty string attribute of the same key is replaced in place. */
  for (size_t i = 0; i < a->n; i++)
    if (a->v[i] && a->v[i]->key && !strcmp(a->v[i]->key, key)) {
      a->v[i] = kv;
      return;
    }
  a->v[a->n++] = kv;
}

/* "$1" in tag_name from the regex groups. */
static void expand(char *out, size_t len, const char *tmpl, const char *key, const regmatch_t *g) {
  size_t k = 0;
  for (const char *q = tmpl; *q && k + 1 < len; q++) {
    if (q[0] == '$' && q[1] >= '0' && q[1] <= '9' && g) {
      int gi = q[1] - '0';
      if (g[gi].rm_so >= 0) {
        size_t gl = (size_t)(g[gi].rm_eo - g[gi].rm_so);
        if (k + gl >= len) gl = len - k - 1;
        memcpy(out + k, key + g[gi].rm_so, gl);
        k += gl;
      }
      q++;
      continue;
    }
    out[k++] = *q;
  }
  out[k] = 0;
}

/* The rules whose from is `from` (0 pod, 1 namespace) over one object's labels or annotations. */
static void put_rules(attrs *a, const rule *rs, size_t n, int from, const k8s_kv *kvs, size_t nkv,
                      const char *prefix) {
  char name[512];
  for (size_t i = 0; i < n; i++) {
    const rule *r = &rs[i];
    if (r->cfg->from != from) continue;
    for (size_t k = 0; k < nkv; k++) {
      regmatch_t g[10];
      if (r->has_re) {
        if (regexec(&r->re, kvs[k].k, 10, g, 0) || g[0].rm_so != 0 ||
            (size_t)g[0].rm_eo != strlen(kvs[k].k))
          continue;
      } else if (strcmp(kvs[k].k, r->cfg->key)) {
        continue;
      }
      if (r->cfg->tag_name && *r->cfg->tag_name)
        expand(name, sizeof name, r->cfg->tag_name, kvs[k].k, r->has_re ? g : NULL);
      else
        snprintf(name, sizeof name, "%s%s", prefix, kvs[k].k);
      put(a, name, kvs[k].v);
    }
  }
}

static void put_pod(k8sp *p, attrs *a, const match *m, const resource_t *r) {
  const k8s_pod *pod = m->pod;
  const k8s_container *c = m->cont;
  char buf[32];
  if (!c) {
    /* A resource that says its container by name. */
    const char *cn = attr_str(r, "k8s.container.name", buf, sizeof buf);
    for (size_t i = 0; cn && i < pod->n_containers; i++)
      if (pod->containers[i].name && !strcmp(pod->containers[i].name, cn)) c = &pod->containers[i];
  }
  char dep[256];
  const char *ok = pod->owner_kind;
  for (int i = 0; i < MD_COUNT; i++) {
    if (!p->md[i]) continue;
    switch (i) {
    case MD_NS:
      put(a, md_names[i], pod->ns);
      break;
    case MD_POD:
      put(a, md_names[i], pod->name);
      break;
    case MD_UID:
      put(a, md_names[i], pod->uid);
      break;
    case MD_START:
      put(a, md_names[i], pod->start_time);
      break;
    case MD_NODE:
      put(a, md_names[i], pod->node);
      break;
    case MD_CONTAINER:
      put(a, md_names[i], c ? c->name : NULL);
      break;
    case MD_DEPLOY:
      put(a, md_names[i], k8s_deployment_of(pod, dep, sizeof dep));
      break;
    case MD_RS:
      put(a, md_names[i], ok && !strcmp(ok, "ReplicaSet") ? pod->owner_name : NULL);
      break;
    case MD_STS:
      put(a, md_names[i], ok && !strcmp(ok, "StatefulSet") ? pod->owner_name : NULL);
      break;
    case MD_DS:
      put(a, md_names[i], ok && !strcmp(ok, "DaemonSet") ? pod->owner_name : NULL);
      break;
    case MD_JOB:
      put(a, md_names[i], ok && !strcmp(ok, "Job") ? pod->owner_name : NULL);
      break;
    case MD_IMAGE:
    case MD_TAG: {
      if (!c || !c->image) break;
      /* repo[:tag][@digest]: the tag is after the last ':' that follows the last '/'. */
      char img[512];
      snprintf(img, sizeof img, "%s", c->image);
      char *at = strchr(img, '@');
      if (at) *at = 0;
      char *slash = strrchr(img, '/');
      char *colon = strrchr(slash ? slash : img, ':');
      const char *tag = "latest";
      if (colon) {
        *colon = 0;
        tag = colon + 1;
      }
      put(a, md_names[i], i == MD_IMAGE ? img : (at && !colon ? NULL : tag));
      break;
    }
    }
  }
  put_rules(a, p->labels, p->n_labels, 0, pod->labels, pod->n_labels, "k8s.pod.labels.");
  put_rules(a, p->annotations, p->n_annotations, 0, pod->annotations, pod->n_annotations,
            "k8s.pod.annotations.");
  const k8s_pod *ns = p->ns_api && pod->ns ? k8s_api_by_name(p->ns_api, pod->ns) : NULL;
  if (ns) {
    put_rules(a, p->labels, p->n_labels, 1, ns->labels, ns->n_labels, "k8s.namespace.labels.");
    put_rules(a, p->annotations, p->n_annotations, 1, ns->annotations, ns->n_annotations,
              "k8s.namespace.annotations.");
  }
}

/* ---- batches -------------------------------------------------------------------------------- */

typedef struct shape {
  size_t req_n, req_arr;
  size_t entry_size, res_off;
} shape;

#define SHAPE(Req, Entry, n, arr)                                                                  \
  { offsetof(Req, n), offsetof(Req, arr), sizeof(Entry), offsetof(Entry, resource) }
#define FIELD(T, p, off) (*(T *)(void *)((char *)(p) + (off)))

static const shape shapes[4] = {
    SHAPE(sonde_traces, Opentelemetry__Proto__Trace__V1__ResourceSpans, n_resource_spans,
          resource_spans),
    SHAPE(sonde_metrics, Opentelemetry__Proto__Metrics__V1__ResourceMetrics, n_resource_metrics,
          resource_metrics),
    SHAPE(sonde_logs, Opentelemetry__Proto__Logs__V1__ResourceLogs, n_resource_logs, resource_logs),
    SHAPE(sonde_profiles, Opentelemetry__Proto__Profiles__V1development__ResourceProfiles,
          n_resource_profiles, resource_profiles),
};

static int apply(k8sp *p, sonde_batch *b) {
  sonde_signal sig = sonde_batch_signal(b);
  int si = sig == SONDE_SIGNAL_TRACES    ? 0
           : sig == SONDE_SIGNAL_METRICS ? 1
           : sig == SONDE_SIGNAL_LOGS    ? 2
                                         : 3;
  const shape *sh = &shapes[si];
  ProtobufCMessage *req = sonde_batch_msg(b);
  if (!req) return SONDE_EINVAL;
  size_t n = FIELD(size_t, req, sh->req_n);
  void **entries = FIELD(void **, req, sh->req_arr);
  void **fresh = NULL;
  size_t assoc = 0, unassoc = 0;
  for (size_t i = 0; i < n; i++) {
    if (!entries[i]) continue;
    const resource_t *old = FIELD(resource_t *, entries[i], sh->res_off);
    match m;
    if (!associate(p, old, &m)) {
      unassoc++;
      continue;
    }
    assoc++;
    attrs a = {.b = b, .old = old};
    size_t nold = old ? old->n_attributes : 0;
    a.cap = nold + 16;
    a.v = sonde_batch_alloc(b, a.cap * sizeof(*a.v));
    if (!a.v) return SONDE_ENOMEM;
    if (nold) memcpy(a.v, old->attributes, nold * sizeof(*a.v));
    a.n = nold;
    if (m.pod)
      put_pod(p, &a, &m, old);
    else
      put(&a, "k8s.pod.ip", m.ip);
    if (a.oom) return SONDE_ENOMEM;
    if (a.n == nold && !memcmp(a.v, old ? old->attributes : a.v, nold * sizeof(*a.v))) continue;
    resource_t *nr = sonde_batch_alloc(b, sizeof(*nr));
    void *e = sonde_batch_memdup(b, entries[i], sh->entry_size);
    if (!fresh && (fresh = sonde_batch_alloc(b, n * sizeof(*fresh))))
      memcpy(fresh, entries, n * sizeof(*fresh));
    if (!nr || !e || !fresh) return SONDE_ENOMEM;
    if (old)
      *nr = *old;
    else
      opentelemetry__proto__resource__v1__resource__init(nr);
    nr->attributes = a.v;
    nr->n_attributes = a.n;
    FIELD(resource_t *, e, sh->res_off) = nr;
    fresh[i] = e;
  }
  if (fresh) {
    /* The one write into memory this stage did not allocate: its private batch's request. */
    FIELD(void **, req, sh->req_arr) = fresh;
  }
  if (p->m_assoc && assoc) p->h->api->metric_add(p->m_assoc, (double)assoc);
  if (p->m_unassoc && unassoc) p->h->api->metric_add(p->m_unassoc, (double)unassoc);
  return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void free_rules(rule *r, size_t n) {
  for (size_t i = 0; r && i < n; i++)
    if (r[i].has_re) regfree(&r[i].re);
  free(r);
}

static int make_rules(const sonde_tablelist *l, rule **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (!l->n) return 0;
  rule *r = calloc(l->n, sizeof(*r));
  if (!r) return SONDE_ENOMEM;
  const k8s_rule_cfg *c = l->items;
  for (size_t i = 0; i < l->n; i++) {
    r[i].cfg = &c[i];
    if (c[i].key_regex && *c[i].key_regex) {
      if (regcomp(&r[i].re, c[i].key_regex, REG_EXTENDED)) {
        free_rules(r, i);
        return SONDE_ECONFIG;
      }
      r[i].has_re = true;
    }
  }
  *out = r;
  *n = l->n;
  return 0;
}

static void shared_put(shared_api *sh) {
  if (!sh || --sh->refs > 0) return;
  for (shared_api **pp = &shared_list; *pp; pp = &(*pp)->next)
    if (*pp == sh) {
      *pp = sh->next;
      break;
    }
  k8s_api_free(sh->api);
  k8s_api_free(sh->ns_api);
  free(sh);
}

static void k8s_destroy(void *inst) {
  k8sp *p = inst;
  if (!p) return;
  shared_put(p->shared);
  free_rules(p->labels, p->n_labels);
  free_rules(p->annotations, p->n_annotations);
  free(p);
}

static int k8s_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  const k8s_config *c = config;
  k8sp *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  p->h = h;
  p->cfg = c;
  if (c->extract.metadata.n) {
    for (size_t i = 0; i < c->extract.metadata.n; i++) {
      int k = md_index(c->extract.metadata.v[i]);
      if (k >= 0) p->md[k] = true;
    }
  } else {
    for (size_t i = 0; i < sizeof md_default / sizeof md_default[0]; i++)
      p->md[md_default[i]] = true;
  }
  int rc = make_rules(&c->extract.labels, &p->labels, &p->n_labels);
  if (!rc) rc = make_rules(&c->extract.annotations, &p->annotations, &p->n_annotations);
  if (rc) goto fail;
  /* Self-metrics are nice to have: one that cannot register stays NULL and uncounted. */
  h->api->metric(h, SONDE_METRIC_GAUGE, "sonde_processor_k8sattributes_pods", "Pods in the cache.",
                 NULL, &p->m_pods);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_k8sattributes_pod_evictions",
                 "Pods evicted because the cache held max_pods.", NULL, &p->m_evictions);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_k8sattributes_relists",
                 "Pod lists repeated after 410 Gone.", NULL, &p->m_relists);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_k8sattributes_watch_events",
                 "Watch events received.", NULL, &p->m_events);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_k8sattributes_api_errors",
                 "Failed requests to the Kubernetes API.", NULL, &p->m_errors);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_k8sattributes_associated_resources",
                 "Resources associated with a pod.", NULL, &p->m_assoc);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_processor_k8sattributes_unassociated_resources",
                 "Resources that passed through without a pod.", NULL, &p->m_unassoc);
  if (!c->passthrough) {
    const char *node = c->filter.node;
    if ((!node || !*node) && c->filter.node_from_env_var && *c->filter.node_from_env_var)
      node = getenv(c->filter.node_from_env_var);
    if (!node || !*node)
      sonde_log(h, SONDE_LOG_WARN,
                "no node filter (filter::node / filter::node_from_env_var): watching every pod of "
                "the cluster");
    char kc[1024] = "";
    if (c->kube_config_path && *c->kube_config_path)
      snprintf(kc, sizeof kc, "%s", c->kube_config_path);
    else if (getenv("KUBECONFIG") && *getenv("KUBECONFIG"))
      snprintf(kc, sizeof kc, "%s", getenv("KUBECONFIG"));
    else
      snprintf(kc, sizeof kc, "%s/.kube/config", getenv("HOME") ? getenv("HOME") : "");
    k8s_api_opts o = {
        .auth_type = c->auth_type,
        .kubeconfig = kc,
        .node = node,
        .max_pods = (size_t)c->max_pods,
        .delete_grace_ns = c->pod_delete_grace,
        .m_pods = p->m_pods,
        .m_evictions = p->m_evictions,
        .m_relists = p->m_relists,
        .m_events = p->m_events,
        .m_errors = p->m_errors,
    };
    for (shared_api *sh = shared_list; sh && !p->shared; sh = sh->next)
      if (sh->config == config && !sh->stopping) p->shared = sh;
    if (!p->shared) {
      shared_api *sh = calloc(1, sizeof(*sh));
      if (!sh) {
        rc = SONDE_ENOMEM;
        goto fail;
      }
      sh->config = config;
      if ((rc = k8s_api_new(h, &o, &sh->api))) {
        free(sh);
        goto fail;
      }
      bool want_ns = false;
      for (size_t i = 0; i < p->n_labels; i++)
        want_ns |= p->labels[i].cfg->from == 1;
      for (size_t i = 0; i < p->n_annotations; i++)
        want_ns |= p->annotations[i].cfg->from == 1;
      k8s_api_opts no = o;
      no.resource = "namespaces";
      no.delete_grace_ns = 0;
      no.m_pods = no.m_evictions = NULL; /* those count pods */
      if (want_ns && (rc = k8s_api_new(h, &no, &sh->ns_api))) {
        k8s_api_free(sh->api);
        free(sh);
        goto fail;
      }
      sh->next = shared_list;
      shared_list = sh;
      p->shared = sh;
    }
    p->shared->refs++;
    p->api = p->shared->api;
    p->ns_api = p->shared->ns_api;
  }
  *inst = p;
  return 0;
fail:
  k8s_destroy(p);
  return rc;
}

static int k8s_start(void *inst) {
  k8sp *p = inst;
  if (p->shared && !p->shared->started++) {
    k8s_api_start(p->api);
    if (p->ns_api) k8s_api_start(p->ns_api);
  }
  return 0;
}

static int k8s_consume(void *inst, sonde_batch *b) {
  k8sp *p = inst;
  int rc = apply(p, b);
  if (rc) {
    /* Out of memory mid-way: b's request is untouched (fresh is only linked at the end). */
    sonde_log(p->h, SONDE_LOG_WARN, "cannot add pod attributes to a %s batch: %s",
              sonde_signal_name(sonde_batch_signal(b)), sonde_strerror(rc));
  }
  return p->h->api->consume(p->h, b, NULL);
}

static void client_stopped(void *arg) {
  shared_api *sh = arg;
  if (--sh->pending == 0) sh->done(sh->done_arg);
}

static void k8s_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  k8sp *p = inst;
  /* The last pipeline to shut down stops the shared clients; the others are done at once. */
  shared_api *sh = p->shared;
  if (!sh || ++sh->stopping < sh->started) {
    done(arg);
    return;
  }
  sh->done = done;
  sh->done_arg = arg;
  sh->pending = sh->ns_api ? 2 : 1;
  k8s_api_shutdown(sh->api, client_stopped, sh);
  if (sh->ns_api) k8s_api_shutdown(sh->ns_api, client_stopped, sh);
}

static const sonde_component k8s_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "k8sattributes",
    .doc = "adds Kubernetes pod metadata (from the API's list+watch) to resources",
    .signals = SONDE_SIGNAL_ALL,
    .flags = SONDE_COMP_MUTATES,
    .options = k8s_options,
    .config_size = sizeof(k8s_config),
    .validate = k8s_validate,
    .create = k8s_create,
    .start = k8s_start,
    .consume = k8s_consume,
    .shutdown = k8s_shutdown,
    .destroy = k8s_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-k8sattributes", "1.0", &k8s_component);

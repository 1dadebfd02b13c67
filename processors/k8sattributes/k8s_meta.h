/* Pod metadata for the k8sattributes processor: a compact JSON tokenizer, pod objects decoded from
 * Kubernetes API JSON, and container ids found in /proc/PID/cgroup lines. No libuv, no sonde host:
 * the fuzzer links this file alone. */
#ifndef K8S_META_H
#define K8S_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- JSON tokens (jsmn-like: a flat array, each container followed by its children) ---------- */
typedef enum kj_type { KJ_OBJECT = 1, KJ_ARRAY, KJ_STRING, KJ_PRIMITIVE } kj_type;

typedef struct kj_tok {
  kj_type type;
  int start, end; /* byte range in the text; strings without their quotes */
  int size;       /* objects: keys; arrays: elements */
  int next;       /* index of the token after this one and all its children */
} kj_tok;

typedef struct kj_doc {
  const char *text;
  kj_tok *t;
  int n;
} kj_doc;

/* Tokenizes one JSON value (anything after it but whitespace is an error). Nesting deeper than 64
 * and inputs over 2^30 bytes are refused. Returns 0, SONDE_EPROTO or SONDE_ENOMEM. */
int kj_parse(const char *text, size_t len, kj_doc *out);
void kj_free(kj_doc *d);
/* Value token of key in the object at index obj, or -1. */
int kj_get(const kj_doc *d, int obj, const char *key);
/* Follows a dotted path of keys ("metadata.name"); -1 if any step is missing. */
int kj_path(const kj_doc *d, int obj, const char *path);
/* A malloc'd, unescaped copy of a string (or primitive) token; NULL on error or bad index. */
char *kj_str(const kj_doc *d, int tok);
/* The integer of a primitive token, or def. */
long long kj_int(const kj_doc *d, int tok, long long def);

/* ---- pods ---------------------------------------------------------------------------------- */
typedef struct k8s_kv {
  char *k, *v;
} k8s_kv;

typedef struct k8s_container {
  char *id;   /* the runtime's id without the "containerd://" scheme */
  char *name; /* container name in the pod spec */
  char *image;
} k8s_container;

typedef struct k8s_pod {
  char *uid, *name, *ns, *node, *ip, *start_time, *rv;
  char *owner_kind, *owner_name; /* the controller owner reference */
  k8s_kv *labels, *annotations;
  size_t n_labels, n_annotations;
  k8s_container *containers;
  size_t n_containers;
  bool host_network;
  uint64_t deleted_ms; /* set by the cache: when a DELETED event came (0: alive) */
} k8s_pod;

/* Decodes the pod object at token obj. *out is malloc'd (free with k8s_pod_free). SONDE_EPROTO
 * when it has no metadata.uid. */
int k8s_pod_from_json(const kj_doc *d, int obj, k8s_pod **out);
void k8s_pod_free(k8s_pod *p);
const char *k8s_pod_label(const k8s_pod *p, const char *key);
/* The Deployment behind a ReplicaSet name: the name minus its "-<pod-template-hash>" suffix
 * (the pod's label when present, else the last dash-separated part). Writes into buf. */
const char *k8s_deployment_of(const k8s_pod *p, char *buf, size_t len);

/* ---- cgroups ------------------------------------------------------------------------------- */
/* From the text of /proc/PID/cgroup (v1: many lines, v2: "0::/path"), the 64-hex container id of
 * the last path component that carries one (cri-containerd-<id>.scope, crio-<id>.scope,
 * docker-<id>.scope, /docker/<id>, kubepods/.../pod<uid>/<id>) into id[65], and the pod uid
 * (kubepods "pod<uid>" component, '_' turned back into '-') into uid[37] when present. */
bool k8s_cgroup_ids(const char *text, size_t len, char id[65], char uid[37]);

#endif

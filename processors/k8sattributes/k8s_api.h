/* The k8sattributes processor's client of the Kubernetes API: list + watch of this node's pods on
 * the loop, into a bounded cache. */
#ifndef K8S_API_H
#define K8S_API_H

#include <stdbool.h>
#include <stdint.h>

#include "k8s_meta.h"
#include "sonde/sonde.h"

typedef struct k8s_api k8s_api;

typedef struct k8s_api_opts {
  const char *resource;   /* "pods" (default) or "namespaces" (for from: namespace rules) */
  int auth_type;          /* K8S_AUTH_* */
  const char *kubeconfig; /* kubeConfig: the file */
  const char *node;       /* NULL or "": every pod */
  size_t max_pods;
  int64_t delete_grace_ns; /* a deleted pod still associates this long */
  sonde_metric *m_pods, *m_evictions, *m_relists, *m_events, *m_errors;
} k8s_api_opts;

enum { K8S_AUTH_SERVICE_ACCOUNT = 0, K8S_AUTH_KUBECONFIG = 1, K8S_AUTH_NONE = 2 };

/* Reads the credentials (small local files, once, before the loop runs the pipeline). */
int k8s_api_new(const sonde_host *h, const k8s_api_opts *o, k8s_api **out);
void k8s_api_start(k8s_api *a);
/* Closes the connection and timers; done(arg) once libuv let go of every handle. */
void k8s_api_shutdown(k8s_api *a, void (*done)(void *), void *arg);
void k8s_api_free(k8s_api *a);

/* namespaces: the object (decoded like a pod: name, uid, labels, annotations) of that name. */
const k8s_pod *k8s_api_by_name(const k8s_api *a, const char *name);
const k8s_pod *k8s_api_by_uid(const k8s_api *a, const char *uid);
const k8s_pod *k8s_api_by_ip(const k8s_api *a, const char *ip);
const k8s_pod *k8s_api_by_container(const k8s_api *a, const char *id, const k8s_container **c);

#endif

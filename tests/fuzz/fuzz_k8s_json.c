/* libFuzzer target: the k8sattributes processor's JSON tokenizer and pod decoder on Kubernetes API
 * bodies (PodList, watch events, Status), and its /proc/PID/cgroup parser on the same bytes.
 * The processor's k8s_meta.c is compiled into this file: it needs libc only, so the fuzz folder's
 * "link sonde_core" rule is enough. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../processors/k8sattributes/k8s_meta.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void pods_in(const kj_doc *d, int arr) {
  if (arr < 0 || d->t[arr].type != KJ_ARRAY) return;
  for (int i = arr + 1; i < d->t[arr].next; i = d->t[i].next) {
    k8s_pod *p;
    if (k8s_pod_from_json(d, i, &p)) continue;
    char buf[256];
    const char *dep = k8s_deployment_of(p, buf, sizeof buf);
    if (dep && strlen(dep) >= sizeof buf) abort();
    if (!p->uid) abort(); /* a decoded pod always has its uid */
    k8s_pod_free(p);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char id[65], uid[37];
  if (k8s_cgroup_ids((const char *)data, size, id, uid)) {
    if (id[0] && strlen(id) != 64) abort();
    if (uid[0] && strlen(uid) != 36) abort();
  }
  kj_doc d;
  if (kj_parse((const char *)data, size, &d)) return 0;
  for (int i = 0; i < d.n; i++) {
    if (d.t[i].next <= i || d.t[i].next > d.n || d.t[i].start < 0 || d.t[i].end > (int)size)
      abort(); /* the token tree stays inside the array and the text */
    char *s = kj_str(&d, i);
    if (s && strlen(s) > (size_t)(d.t[i].end - d.t[i].start)) abort(); /* unescaping shrinks */
    free(s);
    (void)kj_int(&d, i, 0);
  }
  pods_in(&d, kj_get(&d, 0, "items"));
  k8s_pod *p;
  if (!k8s_pod_from_json(&d, kj_get(&d, 0, "object"), &p)) k8s_pod_free(p);
  if (!k8s_pod_from_json(&d, 0, &p)) k8s_pod_free(p);
  (void)kj_path(&d, 0, "object.metadata.resourceVersion");
  kj_free(&d);
  return 0;
}

/* Unit test of k8s_meta.c: every cgroup path shape the issue names, pod decoding from the API's
 * JSON (owner, deployment, images, escapes) and tokenizer refusals. Plain asserts: no cmocka. */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_meta.h"
#include "sonde/errors.h"

/* Allocation failure injection (linked with --wrap): the nth allocation of k8s_meta.c fails. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
static long fail_at = -1, allocs;
static bool fail_now(void) {
  return fail_at >= 0 && allocs++ == fail_at;
}
void *__wrap_malloc(size_t n) {
  return fail_now() ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
  return fail_now() ? NULL : __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
  return fail_now() ? NULL : __real_realloc(p, n);
}

#define ID64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define UID "5f0c3a8e-1b2d-4c6e-9f7a-0d1e2f3a4b5c"
#define UIDU "5f0c3a8e_1b2d_4c6e_9f7a_0d1e2f3a4b5c"

static void cgroup(const char *text, const char *want_id, const char *want_uid) {
  char id[65], uid[37];
  bool ok = k8s_cgroup_ids(text, strlen(text), id, uid);
  if (strcmp(id, want_id) || strcmp(uid, want_uid) || ok != (*want_id || *want_uid)) {
    fprintf(stderr, "cgroup %s: got id=%s uid=%s\n", text, id, uid);
    abort();
  }
}

static void test_cgroups(void) {
  /* cgroup v2, systemd driver: containerd, CRI-O, docker */
  cgroup("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UIDU
         ".slice/cri-containerd-" ID64 ".scope\n",
         ID64, UID);
  cgroup("0::/kubepods.slice/kubepods-pod" UIDU ".slice/crio-" ID64 ".scope", ID64, UID);
  cgroup("0::/system.slice/docker-" ID64 ".scope\n", ID64, "");
  /* CRI-O's monitor is not the container */
  cgroup("0::/kubepods.slice/kubepods-pod" UIDU ".slice/crio-conmon-" ID64 ".scope", "", UID);
  /* cgroup v1, cgroupfs driver: kubepods/<qos>/pod<uid>/<id>, plain docker */
  cgroup("12:pids:/kubepods/besteffort/pod" UID "/" ID64 "\n11:memory:/kubepods/besteffort/pod" UID
         "/" ID64 "\n1:name=systemd:/kubepods/besteffort/pod" UID "/" ID64 "\n",
         ID64, UID);
  cgroup("4:cpu:/docker/" ID64 "\n", ID64, "");
  /* nothing container-like */
  cgroup("0::/user.slice/user-1000.slice/session-2.scope\n", "", "");
  cgroup("0::/\n", "", "");
  cgroup("", "", "");
  /* a 65-hex run is no id */
  cgroup("0::/docker/" ID64 "0\n", "", "");
}

static const char pod_json[] =
    "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web-5d4b9c7f6-abcde\","
    "\"namespace\":\"shop\",\"uid\":\"" UID "\",\"resourceVersion\":\"42\","
    "\"labels\":{\"app\":\"web\",\"pod-template-hash\":\"5d4b9c7f6\"},"
    "\"annotations\":{\"note\":\"caf\\u00e9 \\\"q\\\" \\ud83d\\ude00\"},"
    "\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"name\":\"n\"},"
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\",\"name\":\"web-5d4b9c7f6\","
    "\"controller\":true}]},"
    "\"spec\":{\"nodeName\":\"node-1\",\"containers\":[{\"name\":\"app\",\"image\":"
    "\"reg:5000/web:2.1\"}]},"
    "\"status\":{\"podIP\":\"10.1.2.3\",\"startTime\":\"2026-01-01T00:00:00Z\","
    "\"containerStatuses\":[{\"name\":\"app\",\"image\":\"sha256:ff\",\"containerID\":"
    "\"containerd://" ID64 "\"}]}}";

static void test_pod(void) {
  kj_doc d;
  assert(kj_parse(pod_json, strlen(pod_json), &d) == 0);
  k8s_pod *p;
  assert(k8s_pod_from_json(&d, 0, &p) == 0);
  assert(!strcmp(p->uid, UID) && !strcmp(p->name, "web-5d4b9c7f6-abcde"));
  assert(!strcmp(p->ns, "shop") && !strcmp(p->node, "node-1") && !strcmp(p->ip, "10.1.2.3"));
  assert(!strcmp(p->owner_kind, "ReplicaSet") && !strcmp(p->owner_name, "web-5d4b9c7f6"));
  char buf[64];
  assert(!strcmp(k8s_deployment_of(p, buf, sizeof buf), "web"));
  assert(p->n_containers == 1 && !strcmp(p->containers[0].id, ID64));
  assert(!strcmp(p->containers[0].image, "reg:5000/web:2.1")); /* the spec's, not the digest */
  assert(p->n_annotations == 1 &&
         !strcmp(p->annotations[0].v, "caf\xc3\xa9 \"q\" \xf0\x9f\x98\x80"));
  k8s_pod_free(p);
  kj_free(&d);
  /* no uid: refused */
  const char *nouid = "{\"metadata\":{\"name\":\"x\"}}";
  assert(kj_parse(nouid, strlen(nouid), &d) == 0);
  assert(k8s_pod_from_json(&d, 0, &p) != 0);
  kj_free(&d);
}

static void test_refusals(void) {
  const char *bad[] = {"",        "{",         "{\"a\"}",       "[1,]",  "{\"a\":1,}",
                       "\"\\x\"", "\"\\u12\"", "tru",           "[1] 2", "{\"a\":\"\x01\"}",
                       "nul",     "{1:2}",     "[\"a\" \"b\"]", "-",     NULL};
  for (int i = 0; bad[i]; i++) {
    kj_doc d;
    if (kj_parse(bad[i], strlen(bad[i]), &d) == 0) {
      fprintf(stderr, "accepted %s\n", bad[i]);
      abort();
    }
  }
  char deep[200];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  kj_doc d;
  assert(kj_parse(deep, 200, &d) != 0); /* deeper than 64 */
  assert(kj_parse(deep + 40, 120, &d) == 0);
  kj_free(&d);
}

/* Every allocation of parsing and decoding a pod fails in turn: SONDE_ENOMEM, nothing leaked
 * (the sanitizer build checks), and success once no allocation fails. */
static void test_alloc_failures(void) {
  for (long n = 0;; n++) {
    fail_at = n;
    allocs = 0;
    kj_doc d;
    k8s_pod *p = NULL;
    int rc = kj_parse(pod_json, strlen(pod_json), &d);
    if (!rc) {
      rc = k8s_pod_from_json(&d, 0, &p);
      kj_free(&d);
    }
    bool failed = allocs > n;
    fail_at = -1;
    if (!failed) {
      assert(rc == 0 && p && !strcmp(p->uid, UID));
      k8s_pod_free(p);
      printf("alloc failures: %ld allocations each failed once\n", n);
      return;
    }
    assert(rc == SONDE_ENOMEM && !p);
  }
}

int main(void) {
  test_cgroups();
  test_pod();
  test_refusals();
  test_alloc_failures();
  puts("k8s_meta: ok");
  return 0;
}

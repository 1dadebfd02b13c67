/* Stress figures of the flamegraph history (docs/components/flamegraph.md): a synthetic host of
 * P processes, each with K distinct stacks of depth D (the outer 17 frames shared, the 8 inner
 * ones drawn from 2 000 names), one batch per 10 s slot for an hour, into a store bounded by
 * max_bytes; then the queries the page makes. Not a test: prints figures.
 *   bench_flamegraph_store [max_mib (64)] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_store.h"

enum { SLOTS = 360, P = 60, K = 40, D = 25, F = 2000 };

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static sonde_batch *make_batch(void) {
  size_t cap = 1 << 24, n = 0;
  char *j = malloc(cap);
  if (!j) return NULL;
#define W(...) n += (size_t)snprintf(j + n, cap - n, __VA_ARGS__)
  W("{\"dictionary\":{\"stringTable\":[\"\"");
  for (int f = 0; f < F; f++)
    W(",\"some_namespace::function_%d(int, char const*)\"", f);
  W("],\"functionTable\":[{}");
  for (int f = 0; f < F; f++)
    W(",{\"nameStrindex\":%d}", f + 1);
  W("],\"locationTable\":[{}");
  for (int f = 0; f < F; f++)
    W(",{\"lines\":[{\"functionIndex\":%d}]}", f + 1);
  W("],\"stackTable\":[{}");
  srand(1);
  for (int k = 0; k < K * 4; k++) {
    W(",{\"locationIndices\":[");
    for (int d = 0; d < D; d++)
      W("%s%d", d ? "," : "", d < D - 8 ? (d * 7 % 50) + 1 : rand() % F + 1);
    W("]}");
  }
  W("]},\"resourceProfiles\":[");
  for (int p = 0; p < P; p++) {
    W("%s{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
      "\"svc%d\"}},{\"key\":\"process.pid\",\"value\":{\"intValue\":\"%d\"}},{\"key\":"
      "\"process.executable.name\",\"value\":{\"stringValue\":\"exe%d\"}}]},\"scopeProfiles\":"
      "[{\"profiles\":[{\"samples\":[",
      p ? "," : "", p % 10, 1000 + p, p);
    for (int k = 0; k < K; k++)
      W("%s{\"stackIndex\":%d,\"values\":[\"%d\"]}", k ? "," : "", (p * K + k) % (K * 4) + 1,
        1 + k % 3);
    W("]}]}]}");
  }
  W("]}");
#undef W
  sonde_batch *b = NULL;
  char err[256];
  if (sonde_batch_from_json(SONDE_SIGNAL_PROFILES, j, n, &b, err, sizeof err))
    fprintf(stderr, "%s\n", err);
  free(j);
  return b;
}

int main(int argc, char **argv) {
  uint64_t max_mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 64;
  sonde_batch *b = make_batch();
  if (!b) return 1;
  fg_limits lim = {
      .slot_ns = 10000000000LL, .history_ns = 3600000000000LL, .max_bytes = max_mib << 20};
  fg_store *st = NULL;
  if (fg_store_new(&lim, &st)) return 1;
  const int64_t t0 = 1700000000LL * 1000000000LL;
  double a = now_s();
  for (int i = 0; i < SLOTS; i++) {
    uint64_t n;
    if (fg_store_add(st, sonde_batch_profiles(b), t0 + i * lim.slot_ns, &n)) return 1;
  }
  double z = now_s();
  int64_t end = t0 + SLOTS * lim.slot_ns;
  printf("add: %.2f ms per batch (%d processes x %d stacks, depth %d); history %.1f MB in %zu "
         "slots (max %llu MiB)\n",
         (z - a) * 1000 / SLOTS, P, K, D, (double)fg_store_bytes(st) / 1e6, fg_store_slots(st),
         (unsigned long long)max_mib);
  const char *qs[] = {"group=all&min_share_ppm=20", "group=all&min_share_ppm=20&from=-300000",
                      "group=all&from=-300000&from2=-600000&to2=-300000"};
  for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
    fg_query q;
    fg_qbufs bufs;
    char err[256];
    if (fg_query_parse(qs[i], end, &q, &bufs, err, sizeof err)) return 1;
    sonde_buf out = {0};
    a = now_s();
    if (fg_store_query_json(st, &q, &out)) return 1;
    z = now_s();
    printf("%s: %.1f ms, %zu bytes of JSON\n", qs[i], (z - a) * 1000, out.len);
    sonde_buf_free(&out);
  }
  fg_store_free(st);
  sonde_batch_unref(b);
  return 0;
}

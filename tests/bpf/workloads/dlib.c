/* The library `chains dlopen` opens once it runs (tests/bpf/test_profiler_workloads.py):
 * lib_a -> lib_b -> lib_c, called from the program's d_b through a pointer from dlsym. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

volatile unsigned long lib_sink;

static inline __attribute__((always_inline)) unsigned long lcg(unsigned long x, int n) {
  for (int i = 0; i < n; i++)
    x = x * 6364136223846793005ul + 1442695040888963407ul;
  return x;
}

/* Hidden: called directly, not through the PLT. */
__attribute__((noinline, visibility("hidden"))) unsigned long lib_c(unsigned long x) {
  return lcg(x, 200000);
}

__attribute__((noinline, visibility("hidden"))) unsigned long lib_b(unsigned long x) {
  unsigned long r = lib_c(x + 1);
  lib_sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long lib_a(unsigned long x) {
  unsigned long r = lib_b(x + 2);
  lib_sink += r;
  return r ^ x;
}

/* Outside the chain: spins SECONDS so that the profiler sees the new mapping first. */
__attribute__((noinline)) void lib_warm(double seconds) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double end = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + seconds, t;
  unsigned long x = 1;
  do {
    x = lcg(x, 10000);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
  } while (t < end);
  lib_sink += x;
}

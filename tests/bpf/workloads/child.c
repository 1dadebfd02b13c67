/* The short-lived child of `chains spawn` and the second executable of the pid-reuse case
 * (tests/bpf/test_profiler_workloads.py): `child run MS [WARM_MS]` spins MS ms of its own CPU
 * time in main -> k_a -> k_b -> k_c, after WARM_MS ms of CPU time in `warm`. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

volatile unsigned long sink;

static inline __attribute__((always_inline)) unsigned long lcg(unsigned long x, int n) {
  for (int i = 0; i < n; i++)
    x = x * 6364136223846793005ul + 1442695040888963407ul;
  return x;
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double deadline;

__attribute__((noinline)) void warm(double seconds) {
  double end = cpu_now() + seconds;
  unsigned long x = 1;
  while (cpu_now() < end)
    x = lcg(x, 10000);
  sink += x;
}

__attribute__((noinline)) unsigned long k_c(unsigned long x) {
  return lcg(x, 100000);
}

__attribute__((noinline)) unsigned long k_b(unsigned long x) {
  unsigned long r = k_c(x + 1);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long k_a(unsigned long x) {
  unsigned long r = 0;
  while (cpu_now() < deadline)
    r += k_b(x + r);
  sink += r;
  return r;
}

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "run")) {
    fprintf(stderr, "usage: child run MS [WARM_MS]\n");
    return 2;
  }
  if (argc >= 4) warm(atof(argv[3]) / 1000);
  deadline = cpu_now() + atof(argv[2]) / 1000;
  sink += k_a(1);
  return 0;
}

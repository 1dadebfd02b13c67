// C++ workload of tests/bpf/test_profiler_workloads.py: `throw S` throws from c_c and catches
// in c_a in a loop for S seconds of CPU time (after one second of warm-up), so that many samples
// land in the unwinder (libgcc_s, libstdc++) and in the cleanups of c_b and c_c.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <time.h>

volatile unsigned long sink;

static double clock_s(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct Guard { // a destructor per frame: the unwinder runs a cleanup in each
  unsigned long v;
  ~Guard() {
    sink += v;
  }
};

__attribute__((noinline)) void warm(double seconds) {
  double end = clock_s(CLOCK_MONOTONIC) + seconds;
  unsigned long x = 1;
  while (clock_s(CLOCK_MONOTONIC) < end)
    for (int i = 0; i < 10000; i++)
      x = x * 6364136223846793005ul + 1;
  sink += x;
}

__attribute__((noinline)) unsigned long c_c(unsigned long x) {
  Guard g{x};
  if (x != 0xdeadbeef) // always, but the compiler cannot tell
    throw std::runtime_error("c_c");
  return x;
}

__attribute__((noinline)) unsigned long c_b(unsigned long x) {
  Guard g{x};
  unsigned long r = c_c(x + 1);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long c_a(double deadline) {
  unsigned long n = 0;
  while (clock_s(CLOCK_PROCESS_CPUTIME_ID) < deadline) {
    for (int i = 0; i < 100; i++) {
      try {
        n += c_b(n);
      } catch (const std::runtime_error &e) {
        n += e.what()[0];
      }
    }
  }
  return n;
}

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "throw")) {
    std::fprintf(stderr, "usage: throw throw SECONDS\n");
    return 2;
  }
  warm(1.0);
  sink += c_a(clock_s(CLOCK_PROCESS_CPUTIME_ID) + std::atof(argv[2]));
  return 0;
}

/* Workloads of tests/bpf/test_profiler_workloads.py, built by the test with
 * -O2 -fomit-frame-pointer: known call chains the test finds again in the profile by this
 * binary's ELF symbol ranges.
 *
 * S is CPU seconds of the process (both threads in `main`).
 *
 *   chains main S      main -> m_a .. m_e (spins), and a second thread
 *                      start_thread -> t_entry -> t_a -> t_b -> t_c -> libm exp/log
 *   chains chain S W   main -> m_a .. m_e only, after W seconds of warm-up (W may be 0)
 *   chains qsort S     main -> q_a -> q_b -> qsort (libc) -> q_cmp (callback)
 *   chains deep D S    main -> r_top -> rec (D + 1 frames) -> r_leaf
 *   chains dlopen L S  main -> d_a -> d_b -> lib_a -> lib_b -> lib_c in L, opened after warm-up
 *   chains signal S    main -> s_a -> s_b -> s_c, interrupted every 10 ms by SIGALRM:
 *                      on_sig -> h_a -> h_b spin in the handler
 *   chains noreturn S  main -> n_a -> n_b -> n_die: n_a and n_b end with their call to a noreturn
 *                      function, so their return addresses are one past their last byte
 *   chains spawn N MS CHILD   N children one after the other, each `CHILD run MS` (fork + exec)
 *
 * Modes but `chain` first spin one second in `warm` (no known function): the profiler learns of
 * a process (or a new mapping) from a sample and needs a moment to read /proc and build tables.
 * Every known function calls the next one and then works with its result, so the compiler
 * neither inlines it (noinline) nor turns the call into a jump (no sibling call); the test checks
 * both in the disassembly.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double deadline;
static volatile int stop;
volatile unsigned long sink;
volatile double dsink;

static double clock_s(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Warm-ups are in wall time (what the profiler needs is time); the work is in CPU time of the
 * process, so that a loaded machine stretches the run instead of thinning the samples. */
static double now(void) {
  return clock_s(CLOCK_MONOTONIC);
}

static double cpu_now(void) {
  return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* Inlined everywhere: the known functions themselves are the leaves. */
static inline __attribute__((always_inline)) unsigned long lcg(unsigned long x, int n) {
  for (int i = 0; i < n; i++)
    x = x * 6364136223846793005ul + 1442695040888963407ul;
  return x;
}

__attribute__((noinline)) void warm(double seconds) {
  double end = now() + seconds;
  unsigned long x = 1;
  while (now() < end)
    x = lcg(x, 10000);
  sink += x;
}

/* ---- main chain ---------------------------------------------------------------------------- */

__attribute__((noinline)) unsigned long m_e(unsigned long x) {
  return lcg(x, 200000);
}

__attribute__((noinline)) unsigned long m_d(unsigned long x) {
  unsigned long r = m_e(x + 1);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long m_c(unsigned long x) {
  unsigned long r = m_d(x + 2);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long m_b(unsigned long x) {
  unsigned long r = m_c(x + 3);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long m_a(unsigned long x) {
  unsigned long r = 0;
  while (cpu_now() < deadline)
    r += m_b(x + r);
  sink += r;
  return r;
}

/* ---- second thread through libm ------------------------------------------------------------ */

__attribute__((noinline)) double t_c(double x) {
  double acc = 0;
  for (int i = 0; i < 20000; i++)
    acc += exp(x + i * 1e-6) + log(x + i);
  dsink += acc;
  return acc * 0.5;
}

__attribute__((noinline)) double t_b(double x) {
  double r = t_c(x + 0.25);
  dsink += r;
  return r - x;
}

__attribute__((noinline)) double t_a(double x) {
  double r = 0;
  while (!stop)
    r += t_b(x + 1.5);
  dsink += r;
  return r;
}

__attribute__((noinline)) void *t_entry(void *arg) {
  double r = t_a(arg ? 2.0 : 1.0);
  dsink += r;
  return arg;
}

/* ---- qsort callback ------------------------------------------------------------------------ */

#define QN 4096
static unsigned long qarr[QN];

__attribute__((noinline)) int q_cmp(const void *a, const void *b) {
  /* Some work per comparison so that samples land here rather than in msort. */
  unsigned long x = lcg(*(const unsigned long *)a, 40), y = lcg(*(const unsigned long *)b, 40);
  return x < y ? -1 : x > y;
}

__attribute__((noinline)) unsigned long q_b(unsigned long seed) {
  for (int i = 0; i < QN; i++)
    qarr[i] = seed = lcg(seed, 1);
  qsort(qarr, QN, sizeof qarr[0], q_cmp);
  sink += qarr[0];
  return qarr[QN / 2] ^ seed;
}

__attribute__((noinline)) unsigned long q_a(unsigned long seed) {
  unsigned long r = 0;
  while (cpu_now() < deadline)
    r += q_b(seed + r);
  sink += r;
  return r;
}

/* ---- deep recursion ------------------------------------------------------------------------ */

__attribute__((noinline)) unsigned long r_leaf(unsigned long x) {
  return lcg(x, 200000);
}

__attribute__((noinline)) unsigned long rec(int depth, unsigned long x) {
  unsigned long r = depth > 0 ? rec(depth - 1, x + 1) : r_leaf(x);
  sink += r;
  return r ^ (unsigned long)depth;
}

__attribute__((noinline)) unsigned long r_top(int depth) {
  unsigned long r = 0;
  while (cpu_now() < deadline)
    r += rec(depth, r);
  sink += r;
  return r;
}

/* ---- dlopen'd library ---------------------------------------------------------------------- */

typedef unsigned long (*lib_fn)(unsigned long);

__attribute__((noinline)) unsigned long d_b(lib_fn f, unsigned long x) {
  unsigned long r = f(x + 1);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long d_a(lib_fn f) {
  unsigned long r = 0;
  while (cpu_now() < deadline)
    r += d_b(f, r);
  sink += r;
  return r;
}

/* ---- signal handler ------------------------------------------------------------------------ */

__attribute__((noinline)) unsigned long h_b(unsigned long x) {
  return lcg(x, 5000000);
}

__attribute__((noinline)) unsigned long h_a(unsigned long x) {
  unsigned long r = h_b(x + 7);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) void on_sig(int sig) {
  unsigned long r = h_a((unsigned long)sig);
  sink += r;
}

__attribute__((noinline)) unsigned long s_c(unsigned long x) {
  return lcg(x, 200000) + sink;
}

__attribute__((noinline)) unsigned long s_b(unsigned long x) {
  unsigned long r = s_c(x + 1);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long s_a(unsigned long x) {
  unsigned long r = 0;
  while (cpu_now() < deadline)
    r += s_b(x + r);
  sink += r;
  return r;
}

/* ---- noreturn calls ------------------------------------------------------------------------ */

__attribute__((noinline, noreturn)) void n_die(unsigned long x) {
  for (;;) {
    x = lcg(x, 200000);
    sink += x;
    if (cpu_now() >= deadline) exit(0);
  }
}

/* The call is the last instruction: nothing follows a call to a noreturn function. */
__attribute__((noinline, noreturn)) void n_b(unsigned long x) {
  sink += x;
  n_die(x + 1);
}

__attribute__((noinline, noreturn)) void n_a(unsigned long x) {
  sink += x;
  n_b(x * 3);
}

/* ---- children ------------------------------------------------------------------------------ */

static int spawn(int n, const char *ms, const char *child) {
  for (int i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      execl(child, child, "run", ms, (char *)NULL);
      perror(child);
      _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "child %d failed\n", (int)pid);
      return 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc >= 2 ? argv[1] : "";
  if (!strcmp(mode, "main") && argc >= 3) {
    warm(1.0);
    deadline = cpu_now() + atof(argv[2]);
    pthread_t th;
    if (pthread_create(&th, NULL, t_entry, NULL) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 1;
    }
    sink += m_a(1);
    stop = 1;
    pthread_join(th, NULL);
    return 0;
  }
  if (!strcmp(mode, "chain") && argc >= 4) {
    warm(atof(argv[3]));
    deadline = cpu_now() + atof(argv[2]);
    sink += m_a(1);
    return 0;
  }
  if (!strcmp(mode, "qsort") && argc >= 3) {
    warm(1.0);
    deadline = cpu_now() + atof(argv[2]);
    sink += q_a(12345);
    return 0;
  }
  if (!strcmp(mode, "deep") && argc >= 4) {
    warm(1.0);
    deadline = cpu_now() + atof(argv[3]);
    sink += r_top(atoi(argv[2]));
    return 0;
  }
  if (!strcmp(mode, "dlopen") && argc >= 4) {
    warm(1.0);
    void *h = dlopen(argv[2], RTLD_NOW);
    if (!h) {
      fprintf(stderr, "dlopen: %s\n", dlerror());
      return 1;
    }
    lib_fn f = (lib_fn)(unsigned long)dlsym(h, "lib_a");
    void (*lib_warm)(double) = (void (*)(double))(unsigned long)dlsym(h, "lib_warm");
    if (!f || !lib_warm) {
      fprintf(stderr, "dlsym: %s\n", dlerror());
      return 1;
    }
    lib_warm(1.0); /* samples in the new mapping make the profiler read the maps again */
    deadline = cpu_now() + atof(argv[3]);
    sink += d_a(f);
    return 0;
  }
  if (!strcmp(mode, "signal") && argc >= 3) {
    warm(1.0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    timer_t t;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGALRM;
    /* CPU time of the process: the handler gets its share however loaded the machine is. */
    if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &t) != 0) {
      perror("timer_create");
      return 1;
    }
    struct itimerspec its = {{0, 10 * 1000 * 1000}, {0, 10 * 1000 * 1000}};
    timer_settime(t, 0, &its, NULL);
    deadline = cpu_now() + atof(argv[2]);
    sink += s_a(1);
    return 0;
  }
  if (!strcmp(mode, "noreturn") && argc >= 3) {
    warm(1.0);
    deadline = cpu_now() + atof(argv[2]);
    n_a(sink);
  }
  if (!strcmp(mode, "spawn") && argc >= 5) return spawn(atoi(argv[2]), argv[3], argv[4]);
  fprintf(stderr, "usage: chains main S | chain S W | qsort S | deep D S | dlopen LIB S | "
                  "signal S | noreturn S | spawn N MS CHILD\n");
  return 2;
}

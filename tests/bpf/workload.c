/* Workload for the profiler tests: known call chains the test finds again in the profile by the
 * ELF symbol ranges of this binary.
 *
 *   workload cpu SECONDS    main -> chain_a -> chain_b -> chain_c -> chain_d -> chain_e (spins)
 *   workload sys SECONDS    main -> chain_a -> ... -> chain_e -> getppid() in a loop (kernel time)
 *                           (cpu, sys and cold: SECONDS of CPU time, however loaded the machine)
 *   workload spawn N MS     N short-lived children one after the other, each spinning MS ms
 *   workload deep D SECONDS main -> recurse (D frames) -> chain_a -> ... (deep stacks, benchmarks)
 *   workload cold SECONDS   straight into the chain for SECONDS of CPU time (cold start: the first
 *                           samples of a process whose unwind tables are not loaded yet)
 *
 * Every chain function calls the next one and then does work with its result, so the compiler
 * neither inlines them (noinline) nor turns the call into a jump (no sibling call).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double deadline;
static int use_syscalls, use_cputime;
volatile unsigned long sink;

static double now(void) {
  struct timespec ts;
  clock_gettime(use_cputime ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long chain_e(unsigned long x) {
  for (int i = 0; i < 200000; i++) {
    if (use_syscalls)
      x += (unsigned long)syscall(SYS_getppid);
    else
      x = x * 6364136223846793005ul + 1442695040888963407ul;
  }
  return x;
}

__attribute__((noinline)) unsigned long chain_d(unsigned long x) {
  unsigned long r = chain_e(x + 1);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long chain_c(unsigned long x) {
  unsigned long r = chain_d(x + 2);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long chain_b(unsigned long x) {
  unsigned long r = chain_c(x + 3);
  sink += r;
  return r ^ x;
}

__attribute__((noinline)) unsigned long chain_a(unsigned long x) {
  unsigned long r = 0;
  while (now() < deadline)
    r += chain_b(x + r);
  sink += r;
  return r;
}

__attribute__((noinline)) unsigned long recurse(int depth, unsigned long x) {
  unsigned long r = depth > 0 ? recurse(depth - 1, x + 1) : chain_a(x);
  sink += r;
  return r ^ (unsigned long)depth;
}

static void spin_ms(int ms) {
  double end = now() + ms / 1000.0;
  unsigned long x = 1;
  while (now() < end)
    for (int i = 0; i < 10000; i++)
      x = x * 6364136223846793005ul + 1;
  sink += x;
}

int main(int argc, char **argv) {
  if (argc >= 3 && (!strcmp(argv[1], "cpu") || !strcmp(argv[1], "sys"))) {
    use_syscalls = !strcmp(argv[1], "sys");
    /* Outside the chain first: the profiler learns of the process at its first sample and needs
     * a moment to load its unwind tables; the chain's samples all come after. */
    spin_ms(1000);
    use_cputime = 1; /* SECONDS of CPU time: as many samples on a loaded machine */
    deadline = now() + atof(argv[2]);
    unsigned long r = chain_a(1);
    sink += r;
    return 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "cold")) {
    use_cputime = 1;
    deadline = now() + atof(argv[2]);
    sink += chain_a(1);
    return 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "deep")) {
    deadline = now() + atof(argv[3]);
    sink += recurse(atoi(argv[2]), 1);
    return 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "spawn")) {
    int n = atoi(argv[2]), ms = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
      pid_t pid = fork();
      if (pid < 0) {
        perror("fork");
        return 1;
      }
      if (pid == 0) {
        spin_ms(ms);
        _exit(0);
      }
      int st;
      waitpid(pid, &st, 0);
    }
    return 0;
  }
  fprintf(stderr, "usage: workload cpu|sys|cold SECONDS | spawn N MS | deep D SECONDS\n");
  return 2;
}

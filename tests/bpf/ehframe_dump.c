/* Prints the compact unwind table receivers/ebpf_profiler/ehframe.c builds for an ELF file, one
 * row per line ("pc cfa rbp ra", readelf -wF's notation), and the build time on stderr. The test
 * compares it with binutils' readelf; the benchmark uses the time. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ehframe.h"

static void rule(char *out, size_t n, uint8_t kind, int32_t off) {
  if (kind == UW_REG_SAME)
    snprintf(out, n, "u");
  else if (kind == UW_REG_OFFSET)
    snprintf(out, n, "c%+d", off);
  else
    snprintf(out, n, "x");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: ehframe_dump ELF\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) {
    perror(argv[1]);
    return 1;
  }
  const uint8_t *buf = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (buf == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uw_table t = {0};
  int rc = uw_table_build(buf, (size_t)st.st_size, &t);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc) {
    fprintf(stderr, "%s: error %d\n", argv[1], rc);
    uw_table_free(&t);
    return 1;
  }
  for (size_t i = 0; i < t.n; i++) {
    const uw_row *r = &t.rows[i];
    char cfa[32], rbp[16], ra[16];
    switch (r->cfa_type) {
    case UW_CFA_RSP:
      snprintf(cfa, sizeof(cfa), "rsp+%d", r->cfa_off);
      break;
    case UW_CFA_RBP:
      snprintf(cfa, sizeof(cfa), "rbp+%d", r->cfa_off);
      break;
    case UW_CFA_EXPR:
    case UW_CFA_PLT:
    case UW_CFA_SIGNAL:
      snprintf(cfa, sizeof(cfa), "exp");
      break;
    case UW_CFA_NONE:
      snprintf(cfa, sizeof(cfa), "none");
      break;
    default:
      snprintf(cfa, sizeof(cfa), "other");
      break;
    }
    rule(rbp, sizeof(rbp), r->rbp_rule, r->rbp_off);
    rule(ra, sizeof(ra), r->ra_rule, r->ra_off);
    printf("%016" PRIx64 " %s %s %s\n", r->pc, cfa, rbp, ra);
  }
  size_t plt = 0, sig = 0;
  for (size_t i = 0; i < t.n; i++) {
    plt += t.rows[i].cfa_type == UW_CFA_PLT;
    sig += t.rows[i].cfa_type == UW_CFA_SIGNAL;
  }
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  fprintf(stderr,
          "%s: %lld bytes, %zu FDEs (%zu skipped), %zu rows in %.2f ms; %zu PLT, %zu signal\n",
          argv[1], (long long)st.st_size, t.fdes, t.skipped, t.n, ms, plt, sig);
  uw_table_free(&t);
  munmap((void *)buf, (size_t)st.st_size);
  close(fd);
  return 0;
}

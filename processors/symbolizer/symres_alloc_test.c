/* Allocation failures in the resolver (symres.c): the k-th malloc/calloc/realloc/strdup of
 * symres.c fails, for every k up to where a whole run needs no more; each run must end with
 * -ENOMEM or the right answer, never a crash or a wrong name (libdw's own allocations are not
 * wrapped: --wrap only reaches calls made from the objects linked here). Run under ASan for leaks.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "symres.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static long countdown = -1; /* the allocation that fails when it reaches 0; -1: none */

static int fail_now(void) {
  return countdown >= 0 && countdown-- == 0;
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
char *__wrap_strdup(const char *s) {
  return fail_now() ? NULL : __real_strdup(s);
}

__attribute__((noinline)) int target_fn(int n) {
  return n * 3 + 1;
}

/* One run: -ENOMEM somewhere, or every answer right. */
static int run(const char *self, uint64_t off, const char *ks) {
  const char *dirs[] = {"/nonexistent-debug"};
  symres_opts o = {.debug_dirs = dirs,
                   .n_debug_dirs = 1,
                   .cache_bytes = 64u << 20,
                   .demangle = 1,
                   .kallsyms_path = ks,
                   .perf_map_dir = "/tmp",
                   .proc_root = "/nonexistent"};
  symres *r = NULL;
  if (symres_new(&o, &r)) return -ENOMEM;
  int rc = 0;
  for (int i = 0; i < 3 && !rc; i++) {
    const sym_frame *f;
    size_t n;
    rc = symres_elf(r, self, 0, NULL, 0, off + (uint64_t)i, &f, &n);
    if (!rc && (n != 1 || strcmp(f[0].name, "target_fn"))) {
      /* A failed allocation inside libdwfl's reading is not ours to see; but never a wrong name. */
      if (n) {
        fprintf(stderr, "wrong name %s\n", f[0].name);
        abort();
      }
    }
    if (!rc) rc = symres_kernel(r, 0xffffffff81000010, &f, &n);
    if (!rc && n && strcmp(f[0].name, "first_fn")) abort();
    if (!rc) rc = symres_perfmap(r, 4000001, 0x1000, &f, &n);
  }
  symres_free(r);
  return rc;
}

int main(void) {
  char self[4096];
  ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
  if (l <= 0) return 1;
  self[l] = 0;
  FILE *m = fopen("/proc/self/maps", "r");
  char line[4400];
  uint64_t a = (uint64_t)(uintptr_t)target_fn, off = 0;
  while (m && fgets(line, sizeof line, m)) {
    unsigned long lo, hi, fo;
    if (sscanf(line, "%lx-%lx %*s %lx", &lo, &hi, &fo) == 3 && a >= lo && a < hi) off = a - lo + fo;
  }
  if (m) fclose(m);
  char ks[] = "/tmp/symres-alloc-XXXXXX";
  int fd = mkstemp(ks);
  const char *kt = "ffffffff81000000 T first_fn\nffffffff81000100 T second_fn\n";
  if (fd < 0 || write(fd, kt, strlen(kt)) != (ssize_t)strlen(kt)) return 1;
  close(fd);
  int k = 0, ok = 0;
  for (;; k++) {
    countdown = k;
    int rc = run(self, off, ks);
    bool reached = countdown >= 0; /* the k-th allocation never happened: all paths covered */
    countdown = -1;
    if (rc && rc != -ENOMEM) {
      fprintf(stderr, "run %d: %d\n", k, rc);
      return 1;
    }
    ok += rc == 0;
    if (reached) break;
  }
  unlink(ks);
  printf("symres alloc failures: %d allocation points, %d runs succeeded anyway\n", k, ok);
  return 0;
}

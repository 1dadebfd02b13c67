/* Unit test of the resolver (symres.c) on this test program itself (built -g with an inlined
 * static function): names and inlined frames, the same answers with a cache budget so small that
 * every lookup evicts the other files, missing files and wrong build ids, kallsyms and perf maps
 * from files the test writes, and the fuzz entry point on a truncated copy of itself. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "symres.h"

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c);                                      \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

static inline __attribute__((always_inline)) int twice(int x) {
  return x * 2 + (x >> 3);
}

__attribute__((noinline)) int work_here(int n) {
  int s = 0;
  for (int i = 0; i < n; i++)
    s += twice(i ^ s);
  return s;
}

/* The file offset of a code address of this process (from /proc/self/maps). */
static uint64_t offset_of(const void *p, char *path, size_t len) {
  FILE *f = fopen("/proc/self/maps", "r");
  CHECK(f);
  char line[4400];
  uint64_t a = (uint64_t)(uintptr_t)p, out = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi, off;
    char perm[8], file[4096] = "";
    if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &lo, &hi, perm, &off, file) < 4) continue;
    if (a >= lo && a < hi) {
      out = a - lo + off;
      snprintf(path, len, "%s", file);
      break;
    }
  }
  fclose(f);
  return out;
}

static void names(symres *r, const char *path, uint64_t off, char *out, size_t len) {
  const sym_frame *f;
  size_t n;
  CHECK(symres_elf(r, path, 0, NULL, 0, off, &f, &n) == 0);
  out[0] = 0;
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(out);
    snprintf(out + l, len - l, "%s%s", i ? "," : "", f[i].name);
  }
}

int main(void) {
  char self[4096], other[4096];
  uint64_t off_work = offset_of((void *)work_here, self, sizeof self);
  uint64_t off_main = offset_of((void *)main, self, sizeof self);
  uint64_t off_libc = offset_of((void *)fopen, other, sizeof other);
  const char *dirs[] = {"/nonexistent-debug"};
  symres_opts big = {
      .debug_dirs = dirs, .n_debug_dirs = 1, .cache_bytes = 64u << 20, .demangle = 1};
  symres_opts tiny = big;
  tiny.cache_bytes = 1; /* every insert evicts every other file */
  symres *a, *b;
  CHECK(symres_new(&big, &a) == 0 && symres_new(&tiny, &b) == 0);

  char x[1024], y[1024];
  names(a, self, off_main, x, sizeof x);
  CHECK(!strcmp(x, "main"));
  /* Some address of work_here is inside the inlined twice(). */
  int inl = 0;
  for (uint64_t o = off_work; o < off_work + 64; o++) {
    names(a, self, o, x, sizeof x);
    if (!strcmp(x, "twice,work_here")) inl = 1;
    CHECK(!strcmp(x, "work_here") || !strcmp(x, "twice,work_here") || !x[0]);
  }
  CHECK(inl);
  /* The tiny cache alternates between two files and answers the same. */
  for (int round = 0; round < 3; round++) {
    for (uint64_t o = off_work; o < off_work + 32; o++) {
      names(a, self, o, x, sizeof x);
      names(b, self, o, y, sizeof y);
      CHECK(!strcmp(x, y));
      names(a, other, off_libc, x, sizeof x);
      names(b, other, off_libc, y, sizeof y);
      CHECK(!strcmp(x, y));
    }
  }
  symres_stats st;
  symres_stats_get(b, &st);
  CHECK(st.files == 1);
  symres_stats_get(a, &st);
  CHECK(st.files == 2 && st.hits > 0);

  /* Unknown: missing file, wrong build id, offset past the file. */
  const sym_frame *f;
  size_t n;
  CHECK(symres_elf(a, "/nonexistent/bin", 0, NULL, 0, 0x1000, &f, &n) == 0 && n == 0);
  uint8_t bad[20] = {1, 2, 3};
  CHECK(symres_elf(a, self, 0, bad, sizeof bad, off_main, &f, &n) == 0 && n == 0);
  CHECK(symres_elf(a, self, 0, NULL, 0, (uint64_t)1 << 40, &f, &n) == 0 && n == 0);

  /* kallsyms and a perf map written here. */
  char ks[] = "/tmp/symres-test-XXXXXX";
  int fd = mkstemp(ks);
  CHECK(fd >= 0);
  const char *kt = "ffffffff81000000 T _stext\nffffffff81000100 t first_fn\n"
                   "ffffffff81000200 T second_fn\nffffffffc0000000 t mod_fn\t[mymod]\n"
                   "ffffffffc0000100 t mod_end\t[mymod]\n";
  CHECK(write(fd, kt, strlen(kt)) == (ssize_t)strlen(kt));
  close(fd);
  char dir[] = "/tmp/symres-pm-XXXXXX";
  CHECK(mkdtemp(dir));
  char pm[4200];
  snprintf(pm, sizeof pm, "%s/perf-77.map", dir);
  FILE *pf = fopen(pm, "w");
  CHECK(pf);
  fputs("1000 10 jit_a\n2000 20 jit_b\n", pf);
  fclose(pf);
  symres_opts ko = big;
  ko.kallsyms_path = ks;
  ko.perf_map_dir = dir;
  ko.proc_root = "/nonexistent-proc";
  symres *k;
  CHECK(symres_new(&ko, &k) == 0);
  CHECK(symres_kernel(k, 0xffffffff81000150, &f, &n) == 0 && n == 1 &&
        !strcmp(f[0].name, "first_fn"));
  CHECK(symres_kernel(k, 0xffffffffc0000010, &f, &n) == 0 && n == 1 &&
        !strcmp(f[0].name, "mod_fn") && !strcmp(f[0].file, "[mymod]"));
  CHECK(symres_kernel(k, 0xffffffffc0000200, &f, &n) == 0 && n == 0); /* past the last */
  CHECK(symres_kernel(k, 0x1000, &f, &n) == 0 && n == 0);
  CHECK(symres_perfmap(k, 77, 0x2010, &f, &n) == 0 && n == 1 && !strcmp(f[0].name, "jit_b"));
  CHECK(symres_perfmap(k, 77, 0x1010, &f, &n) == 0 && n == 0); /* between symbols */
  CHECK(symres_perfmap(k, 78, 0x2010, &f, &n) == 0 && n == 0); /* no map */
  /* The map grows (a JIT adds code): read again on the next batch. */
  pf = fopen(pm, "a");
  CHECK(pf);
  fputs("3000 10 jit_c_longer_name\n", pf);
  fclose(pf);
  symres_tick(k);
  CHECK(symres_perfmap(k, 77, 0x3004, &f, &n) == 0 && n == 1 &&
        !strcmp(f[0].name, "jit_c_longer_name"));
  unlink(pm);
  rmdir(dir);
  unlink(ks);

  /* The fuzz entry point: this file whole, then cut short. */
  FILE *sf = fopen(self, "rb");
  CHECK(sf);
  fseek(sf, 0, SEEK_END);
  long sz = ftell(sf);
  fseek(sf, 0, SEEK_SET);
  char *img = malloc((size_t)sz);
  CHECK(img && fread(img, 1, (size_t)sz, sf) == (size_t)sz);
  fclose(sf);
  CHECK(symres_elf_memory(img, (size_t)sz, off_main, x, sizeof x) == 0 && !strncmp(x, "main:", 5));
  for (long cut = sz; cut > 0; cut = cut * 7 / 8)
    CHECK(symres_elf_memory(img, (size_t)cut, off_work + 8, x, sizeof x) == 0);
  free(img);

  symres_free(a);
  symres_free(b);
  symres_free(k);
  puts("symres: ok");
  return 0;
}

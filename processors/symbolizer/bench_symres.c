/* Symbolization throughput of the resolver (symres.c): cold (a new cache: file open, symbol and
 * DWARF parsing on first use) and warm (every address already resolved once), and the cache's
 * bytes. Addresses: up to N per function symbol of the target ELF file (default: this program),
 * spread over each function, as file offsets.
 *   bench_symres [elf-file] [addresses-per-function] [warm-rounds]
 */
#include <fcntl.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "symres.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "/proc/self/exe";
  int per = argc > 2 ? atoi(argv[2]) : 4;
  int rounds = argc > 3 ? atoi(argv[3]) : 20;
  char real[4096];
  if (!realpath(path, real)) {
    perror(path);
    return 1;
  }
  elf_version(EV_CURRENT);
  int fd = open(real, O_RDONLY);
  Elf *elf = fd >= 0 ? elf_begin(fd, ELF_C_READ, NULL) : NULL;
  if (!elf) {
    fprintf(stderr, "%s: not an ELF file\n", real);
    return 1;
  }
  size_t nph = 0, cap = 1 << 16, n = 0;
  uint64_t *offs = malloc(cap * sizeof(*offs));
  if (!offs || elf_getphdrnum(elf, &nph)) return 1;
  Elf_Scn *scn = NULL;
  while ((scn = elf_nextscn(elf, scn))) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM)) continue;
    Elf_Data *d = elf_getdata(scn, NULL);
    for (size_t i = 0; d && i < sh.sh_size / sh.sh_entsize; i++) {
      GElf_Sym s;
      if (!gelf_getsym(d, (int)i, &s) || GELF_ST_TYPE(s.st_info) != STT_FUNC || !s.st_size)
        continue;
      for (int k = 0; k < per; k++) {
        uint64_t va = s.st_value + s.st_size * (uint64_t)k / (uint64_t)per;
        for (size_t p = 0; p < nph; p++) {
          GElf_Phdr ph;
          if (!gelf_getphdr(elf, (int)p, &ph) || ph.p_type != PT_LOAD) continue;
          if (va < ph.p_vaddr || va >= ph.p_vaddr + ph.p_filesz) continue;
          if (n == cap) {
            uint64_t *no = realloc(offs, (cap *= 2) * sizeof(*offs));
            if (!no) return 1;
            offs = no;
          }
          offs[n++] = va - ph.p_vaddr + ph.p_offset;
          break;
        }
      }
    }
    if (sh.sh_type == SHT_SYMTAB) break; /* .symtab has everything .dynsym has */
  }
  elf_end(elf);
  close(fd);
  const char *dirs[] = {"/usr/lib/debug"};
  symres_opts o = {.debug_dirs = dirs, .n_debug_dirs = 1, .cache_bytes = 64u << 20, .demangle = 1};
  symres *r;
  if (symres_new(&o, &r)) return 1;
  size_t named = 0, frames = 0;
  double t0 = now();
  for (size_t i = 0; i < n; i++) {
    const sym_frame *f;
    size_t k;
    if (symres_elf(r, real, 0, NULL, 0, offs[i], &f, &k)) return 1;
    named += k > 0;
    frames += k;
  }
  double cold = now() - t0;
  t0 = now();
  for (int rd = 0; rd < rounds; rd++)
    for (size_t i = 0; i < n; i++) {
      const sym_frame *f;
      size_t k;
      if (symres_elf(r, real, 0, NULL, 0, offs[i], &f, &k)) return 1;
    }
  double warm = now() - t0;
  /* As if every location came from another mapping than the one before: the file entry is found
   * by key (build id or path) each time. */
  t0 = now();
  for (int rd = 0; rd < rounds; rd++)
    for (size_t i = 0; i < n; i++) {
      const sym_frame *f;
      size_t k;
      symres_tick(r);
      if (symres_elf(r, real, 0, NULL, 0, offs[i], &f, &k)) return 1;
    }
  double mixed = now() - t0;
  symres_stats st;
  symres_stats_get(r, &st);
  printf("file %s\nlocations %zu (named %zu, frames %zu incl. inlined)\n", real, n, named, frames);
  printf("cold %.0f locations/s (%.2f us/location, %.3f s)\n", (double)n / cold,
         cold * 1e6 / (double)n, cold);
  printf("warm, same file as the previous location %.0f locations/s (%.3f us/location)\n",
         (double)n * rounds / warm, warm * 1e6 / ((double)n * rounds));
  printf("warm, file looked up per location %.0f locations/s (%.3f us/location)\n",
         (double)n * rounds / mixed, mixed * 1e6 / ((double)n * rounds));
  printf("cache %.1f MiB (%llu bytes, %llu files)\n", (double)st.bytes / 1048576.0,
         (unsigned long long)st.bytes, (unsigned long long)st.files);
  symres_free(r);
  free(offs);
  return 0;
}

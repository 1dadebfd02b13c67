/* libFuzzer target: the .eh_frame -> unwind table builder of the ebpf_profiler receiver
 * (receivers/ebpf_profiler/ehframe.c) and its program-header reader on arbitrary ELF images. It
 * reads files of every process on the node, so a malformed file must be skipped, never read out of
 * bounds. Checks the table's invariants: rows strictly sorted by pc, no two neighbours alike,
 * lookups inside the table. Then walks the input as a stack copy (another process's bytes) with
 * those rows: the walk must stay inside the copy and the frame array. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../receivers/ebpf_profiler/ehframe.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The page index as BPF uses it must give the row bisection gives, at every row's pc and the
 * address before it. */
static void check_index(const struct sonde_uw_row *rows, size_t n) {
  uw_index ix;
  size_t nslots = uw_index_plan(rows, n, &ix);
  if (!nslots) return;
  struct sonde_uw_row *slots = malloc(nslots * sizeof(*slots));
  if (!slots) return;
  uw_index_fill(rows, n, &ix, slots);
  const uint32_t *e = (const uint32_t *)slots;
  for (size_t i = 0; i < 2 * n; i++) {
    if ((i & 1) && rows[i / 2].pc == rows[0].pc) continue; /* before the first row */
    uint64_t va = (uint64_t)rows[i / 2].pc - (i & 1);
    uint64_t j = (va - rows[0].pc) >> ix.shift;
    if (j >= ix.n) abort(); /* the index covers every row */
    size_t lo = e[j], hi = j + 1 < ix.n ? e[j + 1] + 1 : n;
    if (lo >= n || hi > n || lo >= hi || rows[lo].pc > va) abort();
    while (hi - lo > 1) {
      size_t mid = lo + (hi - lo) / 2;
      if (rows[mid].pc <= va)
        lo = mid;
      else
        hi = mid;
    }
    if (lo != (i & 1 ? i / 2 - 1 : i / 2)) abort();
  }
  free(slots);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uw_table t = {0};
  int rc = uw_table_build(data, size, &t);
  if (rc == 0) {
    for (size_t i = 1; i < t.n; i++) {
      if (t.rows[i - 1].pc >= t.rows[i].pc || same_rule(&t.rows[i - 1], &t.rows[i])) abort();
    }
    for (size_t i = 0; i < t.n; i++) {
      const uw_row *r = uw_table_find(&t, t.rows[i].pc);
      if (r && r != &t.rows[i]) abort();
      if (t.rows[i].pc) (void)uw_table_find(&t, t.rows[i].pc - 1);
    }
  }
  if (rc == 0 && size >= 24) {
    size_t nb = uw_bpf_rows_count(&t);
    struct sonde_uw_row *rows = nb ? malloc(nb * sizeof(*rows)) : NULL;
    for (size_t i = 0; rows && i < nb; i++)
      rows[i] = uw_bpf_row(&t.rows[i], t.rows[0].pc);
    if (rows) check_index(rows, nb);
    uint64_t regs[3];
    memcpy(regs, data, sizeof(regs));
    const uint64_t base = 0x7ff000000000ull;
    /* [0, 2^46): the file, with its rows; above it a file without rows yet (need). */
    uw_walk_map maps[2] = {{.start = 0,
                            .end = 1ull << 46,
                            .rows = rows,
                            .base = rows ? t.rows[0].pc : 0,
                            .n_rows = rows ? (uint32_t)nb : 0},
                           {.start = 1ull << 46, .end = 1ull << 47, .need = 1}};
    uint64_t frames[SONDE_PROF_USTACK_MAX];
    size_t n = 1;
    frames[0] = regs[0];
    int w = uw_walk(maps, 2, regs[0], base + (regs[1] & 0xfff), base + (regs[2] & 0x1fff),
                    (int)(regs[1] >> 63), data, size, base, (int)(regs[2] >> 63),
                    (int)(regs[0] & 1), frames, &n, SONDE_PROF_USTACK_MAX);
    if (n > SONDE_PROF_USTACK_MAX || w < UW_WALK_END || w > UW_WALK_DEPTH) abort();
    free(rows);
  }
  uw_table_free(&t);
  uw_load loads[8];
  size_t n = uw_elf_loads(data, size, loads, 8);
  if (n > 8) abort();
  return 0;
}

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
    struct sonde_uw_row *rows = t.n ? malloc(t.n * sizeof(*rows)) : NULL;
    for (size_t i = 0; rows && i < t.n; i++)
      rows[i] = uw_bpf_row(&t.rows[i]);
    uint64_t regs[3];
    memcpy(regs, data, sizeof(regs));
    const uint64_t base = 0x7ff000000000ull;
    /* [0, 2^46): the file, with its rows; above it a file without rows yet (need). */
    uw_walk_map maps[2] = {
        {.start = 0, .end = 1ull << 46, .rows = rows, .n_rows = rows ? (uint32_t)t.n : 0},
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

/* libFuzzer target: the .eh_frame -> unwind table builder of the ebpf_profiler receiver
 * (receivers/ebpf_profiler/ehframe.c) and its program-header reader on arbitrary ELF images. It
 * reads files of every process on the node, so a malformed file must be skipped, never read out of
 * bounds. Checks the table's invariants: rows strictly sorted by pc, no two neighbours alike,
 * lookups inside the table. */
#include <stdint.h>
#include <stdlib.h>

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
  uw_table_free(&t);
  uw_load loads[8];
  size_t n = uw_elf_loads(data, size, loads, 8);
  if (n > 8) abort();
  return 0;
}

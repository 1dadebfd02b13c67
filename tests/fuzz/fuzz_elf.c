/* libFuzzer target: the symbolizer's ELF/DWARF resolver (processors/symbolizer/symres.c) on
 * arbitrary bytes as an ELF file. Input: 8 bytes of file offset (little endian), then the image.
 * The symbolizer opens every binary it is told about; a corrupt ELF or truncated DWARF must give
 * no frames (an address), never a crash or a read out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../processors/symbolizer/symres.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8) return 0;
  uint64_t off = 0;
  for (int i = 0; i < 8; i++)
    off |= (uint64_t)data[i] << (8 * i);
  char out[4096];
  int rc = symres_elf_memory(data + 8, size - 8, off, out, sizeof out);
  if (rc && rc != -ENOMEM && rc != -EIO && rc != -EMFILE && rc != -ENFILE) abort();
  if (strlen(out) >= sizeof out) abort();
  return 0;
}

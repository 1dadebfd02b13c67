/* .eh_frame -> compact unwind table (x86-64), the user-space half of DWARF unwinding.
 *
 * The table is a step function over the file's virtual addresses: row i applies to
 * [rows[i].pc, rows[i + 1].pc). Each row says how to find the caller's frame from the registers
 * the BPF walker has (rip, rsp, rbp): CFA = cfa_reg + cfa_off; the return address is at
 * CFA + ra_off; the caller's rbp at CFA + rbp_off (or rbp is unchanged). Rows the walker cannot
 * use say so (UW_CFA_NONE: no FDE covers the range; UW_CFA_EXPR: a DWARF expression, e.g. PLT
 * stubs; UW_RA_UNDEFINED: the outermost frame, _start or a thread's start).
 *
 * Self-contained (no libelf/libdw) so the parser that eats untrusted files is the code that is
 * fuzzed (tests/fuzz/fuzz_ehframe.c). Never reads outside the buffer it is given.
 */
#ifndef SONDE_EBPF_PROFILER_EHFRAME_H
#define SONDE_EBPF_PROFILER_EHFRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
  UW_CFA_NONE = 0, /* no unwind information for this range */
  UW_CFA_RSP = 1,
  UW_CFA_RBP = 2,
  UW_CFA_EXPR = 3,  /* DW_CFA_def_cfa_expression (PLT stubs, signal frames) */
  UW_CFA_OTHER = 4, /* CFA on another register: not walkable with rip/rsp/rbp */
  /* Two expressions recognised among UW_CFA_EXPR ones: */
  UW_CFA_PLT = 5, /* gcc's PLT stubs: CFA = rsp + 8 + ((rip & 15) >= cfa_off ? 8 : 0) */
  UW_CFA_SIGNAL =
      6, /* glibc's __restore_rt: CFA = *(rsp + 160), registers in the ucontext at rsp */
};

enum {
  UW_REG_SAME = 0,   /* rbp: unchanged (undefined or same value) */
  UW_REG_OFFSET = 1, /* saved at CFA + off */
  UW_REG_OTHER = 2,  /* expression, register, val_offset...: not supported */
};

#define UW_RA_UNDEFINED UW_REG_SAME /* for ra: the end of the stack */

typedef struct uw_row {
  uint64_t pc; /* file virtual address where the row starts */
  int32_t cfa_off;
  int32_t rbp_off;
  int32_t ra_off;
  uint8_t cfa_type; /* UW_CFA_* */
  uint8_t rbp_rule; /* UW_REG_* */
  uint8_t ra_rule;  /* UW_REG_*; UW_RA_UNDEFINED: outermost frame */
  uint8_t pad;
} uw_row;

typedef struct uw_table {
  uw_row *rows; /* sorted by pc, consecutive rows differ */
  size_t n, cap;
  size_t fdes;    /* FDEs used */
  size_t skipped; /* FDEs skipped (unsupported encoding, bad CIE, unknown instruction) */
} uw_table;

/* Builds the table of the ELF64 little-endian x86-64 image buf[0..len) from its .eh_frame.
 * Returns 0; SONDE_ENOTFOUND when there is no .eh_frame; SONDE_EPROTO when the image is not an
 * ELF64 x86-64 file; SONDE_ENOMEM. Malformed entries are skipped and counted. t must be zeroed or
 * freed before; free it with uw_table_free either way. */
int uw_table_build(const uint8_t *buf, size_t len, uw_table *t);
void uw_table_free(uw_table *t);
/* A PT_LOAD segment: file [offset, offset + filesz) is mapped at virtual address vaddr. */
typedef struct uw_load {
  uint64_t offset, vaddr, filesz;
} uw_load;
/* The PT_LOAD segments of an ELF64 image, at most max; returns how many were written. */
size_t uw_elf_loads(const uint8_t *buf, size_t len, uw_load *out, size_t max);

/* The row covering pc, or NULL. */
const uw_row *uw_table_find(const uw_table *t, uint64_t pc);

/* ---- the walk in user space
 * ---------------------------------------------------------------------- BPF walks a stack with the
 * rows of struct sonde_uw_row (bpf/profiler.h); where it meets a pc in a mapping it does not know
 * yet (cold start, dlopen) it stops and sends a copy of the stack, and uw_walk continues with the
 * same rules over that copy. The copy's bytes come from another process: every read is
 * bounds-checked. */
struct sonde_uw_row;
/* The BPF form of a row; SONDE_UW_CFA_UNSUPPORTED when the walker cannot follow it. */
struct sonde_uw_row uw_bpf_row(const uw_row *r, uint64_t base);
/* How many of t's rows have a BPF form: those within 4 GiB of the first (the base). */
size_t uw_bpf_rows_count(const uw_table *t);

/* The page index of a file's BPF rows (see SONDE_UW_INDEX_PER_SLOT). */
typedef struct uw_index {
  uint32_t n, shift;
} uw_index;

/* Chooses the index of rows[0..n) (sorted by pc); returns how many row slots it takes after them
 * (0: no index). */
size_t uw_index_plan(const struct sonde_uw_row *rows, size_t n, uw_index *ix);
/* Writes the index into slots[0..uw_index_plan's count). */
void uw_index_fill(const struct sonde_uw_row *rows, size_t n, const uw_index *ix,
                   struct sonde_uw_row *slots);

typedef struct uw_walk_map {
  uint64_t start, end; /* runtime range, sorted, non-overlapping */
  uint64_t bias;       /* runtime address - file virtual address */
  const struct sonde_uw_row *rows;
  uint64_t base;   /* file address the rows' pc count from */
  uint32_t n_rows; /* 0: frame pointers */
  uint8_t need;    /* a file whose rows are not built yet: the walk cannot go on here */
} uw_walk_map;

enum {
  UW_WALK_END = 0,   /* the outermost frame, or the end of the frame-pointer chain */
  UW_WALK_NEED = 1,  /* stopped at a pc in a map with need set: build its rows and walk again */
  UW_WALK_CUT = 2,   /* the stack goes on beyond the copy */
  UW_WALK_DEPTH = 3, /* max frames */
};

/* Continues a walk from (pc, sp, fp) (exact: pc is an interrupted instruction, not a return
 * address) over stack[0..len), a copy of the memory at stack_addr; whole: len ends where the
 * stack ends. Appends caller frames to frames[*n..max), each a return address - 1 (inside the
 * call) but the pc a signal interrupted and a signal trampoline's as they are (the trampoline's
 * frames[*n - 1] is rewritten so). A pc in no map is NEED when unknown_need
 * (the maps may be older than the stack), else walked with frame pointers. Returns UW_WALK_*. */
int uw_walk(const uw_walk_map *maps, size_t nmaps, uint64_t pc, uint64_t sp, uint64_t fp, int exact,
            const uint8_t *stack, size_t len, uint64_t stack_addr, int whole, int unknown_need,
            uint64_t *frames, size_t *n, size_t max);

#endif

/* Shared between bpf/profiler.bpf.c and receivers/ebpf_profiler: the records the profiler's BPF
 * programs put in its ring buffer, and its tunables. Fixed-width types only; every record starts
 * with a __u32 type so user space can tell them apart, and sizes are asserted so a change on one
 * side cannot silently misread the other.
 */
#ifndef SONDE_BPF_PROFILER_H
#define SONDE_BPF_PROFILER_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* Frames kept per stack. Kernel: the kernel's own default perf_event_max_stack is 127. User: the
 * walk stops at this depth (a 200-deep recursion fits). */
#define SONDE_PROF_KSTACK_MAX 128
#define SONDE_PROF_USTACK_MAX 256

enum sonde_prof_rec_type {
  SONDE_PROF_REC_SAMPLE = 1, /* struct sonde_prof_sample */
  SONDE_PROF_REC_EXIT = 2,   /* struct sonde_prof_exit: last thread of a sampled process exited */
  SONDE_PROF_REC_EXEC = 3,   /* struct sonde_prof_exit: a sampled process called exec */
};

/* sonde_prof_sample.flags */
#define SONDE_PROF_F_USER_REGS 0x1u    /* pc/sp/fp hold the user registers at the sample */
#define SONDE_PROF_F_KERNEL 0x2u       /* the sample interrupted kernel code */
#define SONDE_PROF_F_USTACK_TRUNC 0x4u /* the frame-pointer walk hit SONDE_PROF_USTACK_MAX */
#define SONDE_PROF_F_KSTACK_ERR 0x8u   /* bpf_get_stack failed for the kernel stack */
#define SONDE_PROF_F_DWARF 0x10u       /* the user stack was walked with unwind tables */
/* The walk stopped at a pc in no mapping BPF knows (a process or a dlopen'd file user space has
 * not read yet): the record is a struct sonde_prof_sample_stack, and user space continues the walk
 * from (pc, sp, fp), which are then the registers of the frame ustack[n_ustack - 1], over the copy
 * of the stack. */
#define SONDE_PROF_F_STACK_COPY 0x20u
/* with STACK_COPY: pc is not a return address (look it up as is) */
#define SONDE_PROF_F_EXACT_PC 0x40u
#define SONDE_PROF_F_EXE 0x80u /* exe_dev/exe_ino are set (the first sample of a process image) */

struct sonde_prof_sample {
  __u32 type; /* SONDE_PROF_REC_SAMPLE */
  __u32 flags;
  __u64 ktime_ns;  /* bpf_ktime_get_ns (CLOCK_MONOTONIC) at the sample */
  __u64 cgroup_id; /* cgroup v2 id of the task */
  __u32 pid;       /* thread-group id, as user space says pid */
  __u32 tid;
  __u32 cpu;
  __u16 n_kstack; /* valid entries in kstack */
  __u16 n_ustack; /* valid entries in ustack; ustack[0] is the user pc */
  /* User registers at the sample (or at the last kernel entry when the sample hit the kernel),
   * kept for the DWARF unwinder. */
  __u64 pc, sp, fp;
  /* With SONDE_PROF_F_EXE: the executable (task->mm->exe_file), so that a process gone before
   * user space read /proc is still attributed. exe_dev is the kernel's dev_t (major << 20 |
   * minor). */
  __u64 exe_ino;
  __u32 exe_dev;
  /* With SONDE_PROF_F_EXE: the process's start (group leader's start_time, in ms since boot,
   * low 32 bits): a pid whose first sample names another start is another process, even when the
   * exit record of the one before was lost. */
  __u32 start_ms;
  char comm[16];                       /* thread name (task->comm) */
  __u64 kstack[SONDE_PROF_KSTACK_MAX]; /* leaf first */
  /* Leaf first: the pc, then each caller's return address - 1 (inside its call instruction, as
   * pprof and symbolizers expect), but as is for an exact pc (the one a signal interrupted) and
   * for a signal trampoline's frame. */
  __u64 ustack[SONDE_PROF_USTACK_MAX];
};
_Static_assert(sizeof(struct sonde_prof_sample) ==
                   96 + 8 * SONDE_PROF_KSTACK_MAX + 8 * SONDE_PROF_USTACK_MAX,
               "struct sonde_prof_sample layout");

/* The user stack from the page of the sp where the BPF walk stopped, for user space to continue
 * it: 12-16 KiB above sp hold ~100 frames of C code. Records of this size are sent only until user
 * space has read the process's mappings (cold start, new mappings). */
#define SONDE_PROF_STACK_COPY 16384
struct sonde_prof_sample_stack {
  struct sonde_prof_sample s; /* s.flags has SONDE_PROF_F_STACK_COPY */
  __u64 stack_addr;           /* the page of s.sp: whole pages are copied */
  __u32 stack_len;            /* valid bytes of stack, from stack_addr */
  __u32 pad;
  __u8 stack[SONDE_PROF_STACK_COPY];
};
_Static_assert(sizeof(struct sonde_prof_sample_stack) ==
                   sizeof(struct sonde_prof_sample) + 16 + SONDE_PROF_STACK_COPY,
               "struct sonde_prof_sample_stack layout");

struct sonde_prof_exit {
  __u32 type; /* SONDE_PROF_REC_EXIT */
  __u32 pid;
  __u64 ktime_ns;
};
_Static_assert(sizeof(struct sonde_prof_exit) == 16, "struct sonde_prof_exit layout");

/* Value of the `execs` map (pid -> the last exec): names the executable of a process that is gone
 * before user space could read /proc. */
#define SONDE_PROF_EXEC_PATH 240
struct sonde_prof_exec {
  __u64 ktime_ns;
  char path[SONDE_PROF_EXEC_PATH]; /* as given to execve: absolute or relative to its cwd */
};
_Static_assert(sizeof(struct sonde_prof_exec) == 8 + SONDE_PROF_EXEC_PATH,
               "struct sonde_prof_exec layout");

/* Values of the `pid_filter` map: why a pid is listed. */
#define SONDE_PROF_PID_EXCLUDE 1
#define SONDE_PROF_PID_INCLUDE 2

/* Read-only configuration, set before load. */
struct sonde_prof_config {
  __u32 include_only; /* 1: sample only pids marked INCLUDE in pid_filter */
  __u32 wakeup_bytes; /* wake user space only when this much is waiting in the ring buffer */
  __u32 timing;       /* 1: measure each sample's run time into `timing` (else no cost at all) */
  __u32 pad;
};
_Static_assert(sizeof(struct sonde_prof_config) == 16, "struct sonde_prof_config layout");

/* Run-time histograms of sample() (cfg.timing), per CPU: key = kind * 2 + part, where part 0 is
 * the whole program (entry to exit) and part 1 the user stack walk alone. Buckets are
 * log-linear: 8 per power of two, bucket 0 below 16 ns, the last one everything from 2^20 ns. */
enum sonde_prof_time_kind {
  SONDE_PROF_TIME_DWARF = 0, /* walked in BPF, at least one frame from unwind rows */
  SONDE_PROF_TIME_COPY = 1,  /* the walk stopped: the record carries a 16 KiB stack copy */
  SONDE_PROF_TIME_FP = 2,    /* frame pointers only (no row used) */
  SONDE_PROF_TIME_KINDS = 3,
};
#define SONDE_PROF_TIME_BUCKETS 128
struct sonde_prof_time_hist {
  __u64 n[SONDE_PROF_TIME_BUCKETS];
};
/* Bucket i >= 1 covers [lo, lo + w): o = 4 + (i - 1) / 8, w = 2^(o - 3), lo = 2^o + ((i-1) % 8) w.
 */
static inline __u32 sonde_prof_time_bucket(__u64 ns) {
  if (ns < 16) return 0;
  __u32 o = 0;
  __u64 v = ns;
  if (v >> 32) {
    v >>= 32;
    o += 32;
  }
  if (v >> 16) {
    v >>= 16;
    o += 16;
  }
  if (v >> 8) {
    v >>= 8;
    o += 8;
  }
  if (v >> 4) {
    v >>= 4;
    o += 4;
  }
  if (v >> 2) {
    v >>= 2;
    o += 2;
  }
  if (v >> 1) o += 1;
  __u32 i = 1 + (o - 4) * 8 + (__u32)((ns >> (o - 3)) & 7);
  return i < SONDE_PROF_TIME_BUCKETS ? i : SONDE_PROF_TIME_BUCKETS - 1;
}

/* The ring buffer, at most: ~1900 samples, or ~220 with stack copies. User space sizes it to the
 * sampling rate (SONDE_PROF_RINGBUF_MIN at 19 Hz on a few CPUs; it is mapped twice, so it counts
 * twice in RSS), drains it every SONDE_PROF_DRAIN_MS and is woken early when it is half full. */
#define SONDE_PROF_RINGBUF_BYTES (4u << 20)
#define SONDE_PROF_RINGBUF_MIN (1u << 20)
#define SONDE_PROF_DRAIN_MS 250

/* ---- DWARF unwinding: tables built from .eh_frame (receivers/ebpf_profiler/ehframe.c) ---- */

/* One row of a file's unwind table: applies from pc (file virtual address - the file's base, the
 * first row's address) to the next row's pc. The return address is at CFA - 8 (x86-64); rows
 * where it is not, or whose offsets do not fit, are UNSUPPORTED. 8 bytes: 2^20 rows in 8 MiB. */
#define SONDE_UW_CFA_NONE 0 /* no information: fall back to frame pointers */
#define SONDE_UW_CFA_RSP 1
#define SONDE_UW_CFA_RBP 2
#define SONDE_UW_CFA_UNSUPPORTED 3
#define SONDE_UW_CFA_PLT 4       /* CFA = rsp + 8 + ((pc & 15) >= cfa_off ? 8 : 0) */
#define SONDE_UW_CFA_SIGNAL 5    /* signal trampoline: rsp points at the ucontext */
#define SONDE_UW_F_RBP_SAVED 0x1 /* caller's rbp at CFA + rbp_off */
#define SONDE_UW_F_END 0x2       /* outermost frame: return address undefined */
struct sonde_uw_row {
  __u32 pc;
  __s16 cfa_off;
  __s8 rbp_off8; /* the caller's rbp at CFA + 8 * rbp_off8 */
  __u8 cfa_type : 4;
  __u8 flags : 4;
};
_Static_assert(sizeof(struct sonde_uw_row) == 8, "struct sonde_uw_row layout");

/* Rows of every file, in one mmap-able array; a file owns [first_row, first_row + n_rows). */
#define SONDE_UW_ROWS (1u << 20)
/* Executable mappings per process that the walker knows, searched by bisection. A process with
 * more has SONDE_UW_PROC_PARTIAL set: a pc in none of them is then walked with frame pointers. */
#define SONDE_UW_MAPS 64
#define SONDE_UW_MAP_STEPS 6
/* Binary search steps: 2^20 rows per file at most. */
#define SONDE_UW_SEARCH_STEPS 20

/* A file's page index, stored in the row slots right after its rows (2 __u32 entries per slot):
 * entry j is the row (from first_row) in effect at file address base + (j << shift), so a pc's row
 * lies between entries j and j + 1 and is found in 1-3 probes instead of ~log2(n_rows). shift is
 * chosen for ~SONDE_UW_INDEX_ROWS rows per entry. */
#define SONDE_UW_INDEX_PER_SLOT 2
#define SONDE_UW_INDEX_ROWS 4

/* Every executable mapping is listed; n_rows 0 (anonymous memory, JIT, a file without tables):
 * frame pointers. */
struct sonde_uw_map {
  __u64 start, end; /* runtime range */
  __u64 bias;       /* runtime address - file virtual address */
  __u32 first_row, n_rows;
  __u64 base;    /* file address the rows' pc count from (the first row's) */
  __u32 index_n; /* index entries (0: none, bisect all rows) */
  __u32 index_shift;
};
_Static_assert(sizeof(struct sonde_uw_map) == 48, "struct sonde_uw_map layout");

#define SONDE_UW_PROC_PARTIAL 0x1u
struct sonde_uw_proc {
  __u32 n; /* valid entries of m, sorted by start */
  __u32 flags;
  struct sonde_uw_map m[SONDE_UW_MAPS];
};
_Static_assert(sizeof(struct sonde_uw_proc) == 8 + 48 * SONDE_UW_MAPS,
               "struct sonde_uw_proc layout");

#endif

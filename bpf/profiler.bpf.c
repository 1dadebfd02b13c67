// SPDX-License-Identifier: GPL-2.0
/* The CPU profiler's BPF side.
 *
 * sample(): attached to one CPU-clock perf_event per CPU. For every sample of a user process it
 * walks the user stack with the unwind rows user space published for the process's files
 * (walk_step in a bpf_loop; frame pointers where a mapping has no rows), records the kernel stack
 * (bpf_get_stack), the task's ids and, for a process image's first sample, its executable's
 * inode, and sends it all as one record over the `events` ring buffer. Where the walk meets a pc
 * in no mapping it knows, it stops and the record carries a copy of the stack for user space to
 * finish the walk (struct sonde_prof_sample_stack).
 *
 * on_exit(): raw tracepoint sched_process_exit. When the last thread of a process that was ever
 * sampled exits, it tells user space so the process's state can be dropped. Processes never sampled
 * produce nothing (the `sampled` LRU map is how we know).
 *
 * on_exec(): raw tracepoint sched_process_exec. Remembers every exec's path (`execs`) and tells
 * user space when a sampled process starts a new image.
 *
 * bpf_probe_read_user may fail on pages not present (it cannot fault them in from this context):
 * the walk then just stops there, and user space sees a shorter stack.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "profiler.h"

char LICENSE[] SEC("license") = "GPL";

#define PF_KTHREAD 0x00200000

const volatile struct sonde_prof_config cfg = {0};

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, SONDE_PROF_RINGBUF_BYTES);
} events SEC(".maps");

/* pid -> SONDE_PROF_PID_EXCLUDE / SONDE_PROF_PID_INCLUDE, written by user space. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u32);
  __type(value, __u32);
} pid_filter SEC(".maps");

/* pids that produced a sample; an LRU so it is bounded even if exit records are lost. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, __u8);
} sampled SEC(".maps");

/* pid -> its last exec, for every exec on the node (an LRU: bounded, the oldest go). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 4096);
  __type(key, __u32);
  __type(value, struct sonde_prof_exec);
} execs SEC(".maps");

/* on_exec's scratch (the value is too big for the BPF stack); not walk_state, which a sample
 * interrupting on_exec on this CPU would overwrite. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct sonde_prof_exec);
} exec_scratch SEC(".maps");

/* Unwind rows of every file (user space writes them through mmap). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SONDE_UW_ROWS);
  __uint(map_flags, BPF_F_MMAPABLE);
  __type(key, __u32);
  __type(value, struct sonde_uw_row);
} uw_rows SEC(".maps");

/* pid -> the executable mappings that have unwind rows. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 8192);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct sonde_uw_proc);
} uw_procs SEC(".maps");

/* The walk's state, per CPU (too big for the BPF stack). */
struct walk {
  __u64 pc, sp, fp;
  __u32 pid, n;
  __u32 dwarf_frames;
  __u8 stop;   /* 1: stopped at a pc in no known mapping: user space continues from a stack copy */
  __u8 exact;  /* pc is an interrupted instruction (leaf, signal), not a return address */
  __u8 via_fp; /* pc came from a frame-pointer step: maybe garbage, not worth a stack copy */
  __u8 pad;
  __u64 frames[SONDE_PROF_USTACK_MAX];
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct walk);
} walk_state SEC(".maps");

/* Drops: [0] ring buffer full, [1] filtered out (diagnostics). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

/* Run-time histograms (cfg.timing only; see struct sonde_prof_time_hist). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2 * SONDE_PROF_TIME_KINDS);
  __type(key, __u32);
  __type(value, struct sonde_prof_time_hist);
} timing SEC(".maps");

static __always_inline void time_add(__u32 key, __u64 ns) {
  struct sonde_prof_time_hist *h = bpf_map_lookup_elem(&timing, &key);
  __u32 b = sonde_prof_time_bucket(ns);
  barrier_var(b); /* keeps clang from bounding a copy of b that is not the one used */
  if (h && b < SONDE_PROF_TIME_BUCKETS) h->n[b] += 1;
}

/* Called on the way out of a sample that walked the stack (cfg.timing only). */
static __always_inline void time_sample(struct walk *w, __u64 t0, __u64 tw0, __u64 tw1) {
  __u32 kind = w->stop           ? SONDE_PROF_TIME_COPY
               : w->dwarf_frames ? SONDE_PROF_TIME_DWARF
                                 : SONDE_PROF_TIME_FP;
  time_add(kind * 2, bpf_ktime_get_ns() - t0);
  time_add(kind * 2 + 1, tw1 - tw0);
}

static __always_inline void count(__u32 k) {
  __u64 *v = bpf_map_lookup_elem(&counters, &k);
  if (v) *v += 1;
}

/* The sample's registers are read as ctx fields (the verifier rewrites those loads to the real
 * pt_regs); &ctx->regs is not a kernel address that could be read through. */
static __always_inline int sample_in_user_mode(struct bpf_perf_event_data *ctx) {
  /* The verifier only takes whole 8-byte loads of ctx->regs: volatile keeps clang from
   * narrowing this one to the 2-byte cs field. */
#if defined(__TARGET_ARCH_x86)
  __u64 cs = *(volatile __u64 *)((char *)&ctx->regs + __builtin_offsetof(struct pt_regs, cs));
  return (cs & 3) == 3;
#elif defined(__TARGET_ARCH_arm64)
  __u64 pstate =
      *(volatile __u64 *)((char *)&ctx->regs + __builtin_offsetof(struct user_pt_regs, pstate));
  return (pstate & 0xf) == 0;
#endif
}

/* x86-64 signal frame: at the trampoline rsp points at the ucontext; its uc_mcontext (at 40)
 * holds the interrupted registers (struct sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx,
 * rsp, rip). */
#define UC_RBP (40 + 10 * 8)
#define UC_RSP (40 + 15 * 8)
#define UC_RIP (40 + 16 * 8)

/* One frame of the walk: from (pc, sp, fp) of a frame to its caller's. Uses the unwind row of pc
 * when its file has a table, else frame pointers. Returns 1 to stop. */
struct walk_ctx {
  struct walk *w;
  struct sonde_uw_proc *proc;
};

static long walk_step(__u32 i, struct walk_ctx *c) {
  /* Looked up once per sample, not per frame (a hash lookup is most of a frame's cost). */
  struct walk *w = c->w;
  struct sonde_uw_proc *proc = c->proc;
  if (!w || !proc) return 1;
  /* A return address points after the call, maybe past the function's end: look up pc - 1. */
  __u64 at = w->exact ? w->pc : w->pc - 1;
  /* The last mapping starting at or below at (mappings are sorted and do not overlap). */
  __u32 lo = 0, hi = proc->n;
  if (hi > SONDE_UW_MAPS) hi = SONDE_UW_MAPS;
  for (int k = 0; k < SONDE_UW_MAP_STEPS && hi - lo > 1; k++) {
    __u32 mid = (lo + hi) / 2;
    if (proc->m[mid & (SONDE_UW_MAPS - 1)].start <= at)
      lo = mid;
    else
      hi = mid;
  }
  struct sonde_uw_map *m = &proc->m[lo & (SONDE_UW_MAPS - 1)];
  if (!proc->n || at < m->start || at >= m->end) {
    m = NULL;
    if (!(proc->flags & SONDE_UW_PROC_PARTIAL)) {
      /* Mapped since user space read the maps: it finishes from a stack copy. Unless a
       * frame-pointer step (JIT code, no tables) led here: then it is most likely not code, and
       * a copy per sample would be paid for nothing; the stack ends. */
      if (!w->via_fp) w->stop = 1;
      return 1;
    }
  }
  __u8 type = SONDE_UW_CFA_NONE, rflags = 0;
  w->via_fp = 0;
  __s32 cfa_off = 0;
  __s16 rbp_off = 0;
  if (m && m->n_rows) {
    __u64 va = at - m->bias - m->base; /* below base: huge, past the last row */
    if (va > 0xffffffffull) va = 0xffffffffull;
    __u32 lo = m->first_row, hi = m->first_row + m->n_rows;
    __u64 j = va >> (m->index_shift & 63);
    if (m->index_n && j < m->index_n) {
      __u32 slot = hi + (__u32)(j / SONDE_UW_INDEX_PER_SLOT);
      __u32 *e = bpf_map_lookup_elem(&uw_rows, &slot);
      if (!e) return 1;
      lo = m->first_row + e[j & (SONDE_UW_INDEX_PER_SLOT - 1)];
      if (j + 1 < m->index_n) {
        j++;
        slot = hi + (__u32)(j / SONDE_UW_INDEX_PER_SLOT);
        e = bpf_map_lookup_elem(&uw_rows, &slot);
        if (!e) return 1;
        hi = m->first_row + e[j & (SONDE_UW_INDEX_PER_SLOT - 1)] + 1;
      }
    }
    for (int k = 0; k < SONDE_UW_SEARCH_STEPS && hi - lo > 1; k++) {
      __u32 mid = lo + (hi - lo) / 2;
      struct sonde_uw_row *r = bpf_map_lookup_elem(&uw_rows, &mid);
      if (!r) return 1;
      if (r->pc <= va)
        lo = mid;
      else
        hi = mid;
    }
    struct sonde_uw_row *r = bpf_map_lookup_elem(&uw_rows, &lo);
    if (r && r->pc <= va && at - m->bias >= m->base) {
      type = r->cfa_type;
      cfa_off = r->cfa_off;
      rbp_off = (__s16)r->rbp_off8 * 8;
      rflags = r->flags;
    }
  }
  w->exact = 0;
  if (type == SONDE_UW_CFA_RSP || type == SONDE_UW_CFA_RBP || type == SONDE_UW_CFA_PLT) {
    if (rflags & SONDE_UW_F_END) return 1; /* _start, thread start: the stack is complete */
    __u64 cfa;
    if (type == SONDE_UW_CFA_PLT) /* the second push of a lazy PLT entry is at offset 11 */
      cfa = w->sp + 8 + ((w->pc & 15) >= (__u64)cfa_off ? 8 : 0);
    else
      cfa = (type == SONDE_UW_CFA_RSP ? w->sp : w->fp) + (__s64)cfa_off;
    __u64 ra;
    if ((rflags & SONDE_UW_F_RBP_SAVED) && rbp_off == -16) {
      /* rbp pushed right after the call (the usual prologue): one read for both, as each
       * bpf_probe_read_user costs ~65 ns here whatever its size. */
      __u64 pair[2];
      if (bpf_probe_read_user(pair, sizeof(pair), (const void *)(cfa - 16))) return 1;
      w->fp = pair[0];
      ra = pair[1];
    } else {
      if (bpf_probe_read_user(&ra, sizeof(ra), (const void *)(cfa - 8))) return 1;
      if (rflags & SONDE_UW_F_RBP_SAVED) {
        __u64 fp;
        if (bpf_probe_read_user(&fp, sizeof(fp), (const void *)(cfa + (__s64)rbp_off))) return 1;
        w->fp = fp;
      }
    }
    w->sp = cfa;
    w->pc = ra;
    w->dwarf_frames++;
  } else if (type == SONDE_UW_CFA_SIGNAL) {
    __u64 regs[3];
    if (bpf_probe_read_user(&regs[0], 8, (const void *)(w->sp + UC_RBP)) ||
        bpf_probe_read_user(&regs[1], 8, (const void *)(w->sp + UC_RSP)) ||
        bpf_probe_read_user(&regs[2], 8, (const void *)(w->sp + UC_RIP)))
      return 1;
    /* The trampoline's own frame holds the address the kernel pushed, not a call's: as is. */
    w->frames[(w->n - 1) & (SONDE_PROF_USTACK_MAX - 1)] = w->pc;
    w->fp = regs[0];
    w->sp = regs[1];
    w->pc = regs[2];
    w->exact = 1; /* the interrupted instruction itself */
    w->dwarf_frames++;
  } else {
    /* No table for this pc: frame pointers, as in the plain walk. */
    __u64 fp = w->fp;
    if (!fp || (fp & 7) || fp < w->sp) return 1;
    __u64 frame[2];
    if (bpf_probe_read_user(frame, sizeof(frame), (const void *)fp)) return 1;
    w->sp = fp + 16;
    w->fp = frame[0];
    w->pc = frame[1];
    w->via_fp = 1;
  }
  if (!w->pc) return 1;
  __u32 idx = w->n;
  if (idx >= SONDE_PROF_USTACK_MAX) return 1;
  /* A return address points after its call, maybe past the caller's end (a noreturn call
   * last): the frame is reported at ra - 1, inside the call. */
  w->frames[idx] = w->exact ? w->pc : w->pc - 1;
  w->n = idx + 1;
  return 0;
}

SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx) {
  /* cfg.timing is read-only data: when 0 the verifier drops every use of t0 and friends. */
  __u64 t0 = cfg.timing ? bpf_ktime_get_ns() : 0, tw0 = 0, tw1 = 0;
  __u64 id = bpf_get_current_pid_tgid();
  __u32 pid = id >> 32, tid = (__u32)id;
  if (pid == 0) /* idle */
    return 0;
  struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
  if (task->flags & PF_KTHREAD) return 0;
  __u32 *f = bpf_map_lookup_elem(&pid_filter, &pid);
  if ((f && *f == SONDE_PROF_PID_EXCLUDE) ||
      (cfg.include_only && !(f && *f == SONDE_PROF_PID_INCLUDE))) {
    count(1);
    return 0;
  }

  /* User registers: from the sample, or saved at the last entry into the kernel. */
  __u64 pc, sp, fp;
  __u32 flags = SONDE_PROF_F_USER_REGS;
  if (sample_in_user_mode(ctx)) {
    pc = PT_REGS_IP(&ctx->regs);
    sp = PT_REGS_SP(&ctx->regs);
    fp = PT_REGS_FP(&ctx->regs);
  } else {
    flags |= SONDE_PROF_F_KERNEL;
    struct pt_regs *uregs = (struct pt_regs *)bpf_task_pt_regs(task);
    pc = PT_REGS_IP_CORE(uregs);
    sp = PT_REGS_SP_CORE(uregs);
    fp = PT_REGS_FP_CORE(uregs);
  }

  /* The user stack, walked before the record is reserved: its size depends on the walk. */
  __u32 zero = 0;
  struct walk *w = bpf_map_lookup_elem(&walk_state, &zero);
  if (!w) return 0;
  w->pc = pc;
  w->sp = sp;
  w->fp = fp;
  w->pid = pid;
  w->n = pc ? 1 : 0;
  w->dwarf_frames = 0;
  w->stop = 0;
  w->exact = 1;
  w->via_fp = 0;
  w->frames[0] = pc;
  if (cfg.timing) tw0 = bpf_ktime_get_ns();
  if (pc) {
    struct walk_ctx c = {w, bpf_map_lookup_elem(&uw_procs, &pid)};
    if (c.proc)
      bpf_loop(SONDE_PROF_USTACK_MAX - 1, walk_step, &c, 0);
    else
      w->stop = 1; /* user space has not read this process yet: it walks the copy */
  }
  if (cfg.timing) tw1 = bpf_ktime_get_ns();

  struct sonde_prof_sample *s;
  struct sonde_prof_sample_stack *big = NULL;
  if (w->stop) {
    big = bpf_ringbuf_reserve(&events, sizeof(*big), 0);
    s = big ? &big->s : NULL;
  } else {
    s = bpf_ringbuf_reserve(&events, sizeof(*s), 0);
  }
  if (!s) {
    count(0);
    if (cfg.timing) time_sample(w, t0, tw0, tw1);
    return 0;
  }
  s->type = SONDE_PROF_REC_SAMPLE;
  s->ktime_ns = bpf_ktime_get_ns();
  s->cgroup_id = bpf_get_current_cgroup_id();
  s->pid = pid;
  s->tid = tid;
  s->cpu = bpf_get_smp_processor_id();
  bpf_get_current_comm(s->comm, sizeof(s->comm));
  /* The first sample of a process (or of its image since exec: on_exec forgets the pid) names
   * its executable file. */
  bool first = !bpf_map_lookup_elem(&sampled, &pid);
  s->exe_ino = 0;
  s->exe_dev = 0;
  s->start_ms = 0;
  if (first) {
    struct inode *ino = BPF_CORE_READ(task, mm, exe_file, f_inode);
    if (ino) {
      s->exe_ino = BPF_CORE_READ(ino, i_ino);
      s->exe_dev = BPF_CORE_READ(ino, i_sb, s_dev);
      s->start_ms = (__u32)(BPF_CORE_READ(task, group_leader, start_time) / 1000000);
      flags |= SONDE_PROF_F_EXE;
    }
  }
  s->n_kstack = 0;
  if (flags & SONDE_PROF_F_KERNEL) {
    long n = bpf_get_stack(ctx, s->kstack, sizeof(s->kstack), 0);
    if (n > 0)
      s->n_kstack = (__u16)(n / 8);
    else
      flags |= SONDE_PROF_F_KSTACK_ERR;
  }
  __u32 n = w->n <= SONDE_PROF_USTACK_MAX ? w->n : SONDE_PROF_USTACK_MAX;
  /* Only the frames found (the record's tail is left as reserved: user space reads n_ustack). */
  bpf_probe_read_kernel(s->ustack,
                        (n & (2 * SONDE_PROF_USTACK_MAX - 1)) * 8 <= sizeof(s->ustack)
                            ? (n & (2 * SONDE_PROF_USTACK_MAX - 1)) * 8
                            : sizeof(s->ustack),
                        w->frames);
  s->n_ustack = (__u16)n;
  if (w->dwarf_frames) flags |= SONDE_PROF_F_DWARF;
  if (n == SONDE_PROF_USTACK_MAX) flags |= SONDE_PROF_F_USTACK_TRUNC;
  /* pc/sp/fp: where the walk stopped when user space is to continue it, else the sample's. */
  s->pc = big ? w->pc : pc;
  s->sp = big ? w->sp : sp;
  s->fp = big ? w->fp : fp;
  if (big) {
    flags |= SONDE_PROF_F_STACK_COPY;
    if (w->exact) flags |= SONDE_PROF_F_EXACT_PC;
    /* Whole pages from sp's (constant offsets for the verifier): a read fails as a whole when a
     * page is missing (the top of the stack), and the copy keeps the pages read before. */
    __u64 a = w->sp & ~4095ull;
    __u32 len = 0;
    big->stack_addr = a;
    if (!bpf_probe_read_user(big->stack, 4096, (const void *)a)) {
      len = 4096;
      if (!bpf_probe_read_user(big->stack + 4096, 4096, (const void *)(a + 4096))) {
        len = 8192;
        if (!bpf_probe_read_user(big->stack + 8192, 4096, (const void *)(a + 8192))) {
          len = 12288;
          if (!bpf_probe_read_user(big->stack + 12288, 4096, (const void *)(a + 12288)))
            len = 16384;
        }
      }
    }
    big->stack_len = len;
  }
  s->flags = flags;

  /* An LRU update costs several times a lookup: only the first sample of a process writes.
   * Waking user space is an IPI (a VM exit under virtualisation, measured at ~6 us of the
   * ~15 us this program took): user space drains the ring on a timer instead, and is only woken
   * for a process's first sample (so it reads /proc/PID while the process is still there) or when
   * the ring is filling up. */
  __u64 wake = BPF_RB_NO_WAKEUP;
  if (first) {
    __u8 one = 1;
    bpf_map_update_elem(&sampled, &pid, &one, BPF_ANY);
    wake = BPF_RB_FORCE_WAKEUP;
  } else if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > cfg.wakeup_bytes) {
    wake = BPF_RB_FORCE_WAKEUP;
  }
  bpf_ringbuf_submit(s, wake);
  if (cfg.timing) time_sample(w, t0, tw0, tw1);
  return 0;
}

/* An excluded process is never sampled, yet user space must hear of its exit (its pid_filter
 * entry must not outlive it) and exec (the verdict was on the old executable). */
static __always_inline bool excluded(__u32 pid) {
  __u32 *f = bpf_map_lookup_elem(&pid_filter, &pid);
  return f && *f == SONDE_PROF_PID_EXCLUDE;
}

SEC("raw_tp/sched_process_exit")
int on_exit(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
  /* signal->live drops to 0 when the last thread of the group is on its way out. */
  if (BPF_CORE_READ(task, signal, live.counter) != 0) return 0;
  __u32 pid = task->tgid;
  bool ex = excluded(pid);
  /* The verdict dies with the process here, not when user space reads the record below: a lost
   * record (ring buffer full) would otherwise exclude the next process given this pid. */
  bpf_map_delete_elem(&pid_filter, &pid);
  if (!bpf_map_lookup_elem(&sampled, &pid) && !ex) return 0;
  bpf_map_delete_elem(&sampled, &pid);
  struct sonde_prof_exit *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) return 0;
  e->type = SONDE_PROF_REC_EXIT;
  e->pid = pid;
  e->ktime_ns = bpf_ktime_get_ns();
  bpf_ringbuf_submit(e, 0);
  return 0;
}

/* sched_process_exec(task, old_pid, bprm): remembers the path of every exec (a process may be gone
 * before user space reads /proc), and tells user space when a sampled process starts a new image,
 * so its samples before and after are attributed to the right executable and its maps are read
 * again at once. */
SEC("raw_tp/sched_process_exec")
int on_exec(struct bpf_raw_tracepoint_args *ctx) {
  struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
  __u32 pid = bpf_get_current_pid_tgid() >> 32;
  __u32 zero = 0;
  struct sonde_prof_exec *x = bpf_map_lookup_elem(&exec_scratch, &zero);
  if (!x) return 0;
  x->ktime_ns = bpf_ktime_get_ns();
  const char *filename = BPF_CORE_READ(bprm, filename);
  if (bpf_probe_read_kernel_str(x->path, sizeof(x->path), filename) < 0) x->path[0] = 0;
  bpf_map_update_elem(&execs, &pid, x, BPF_ANY);
  if (!bpf_map_lookup_elem(&sampled, &pid) && !excluded(pid)) return 0;
  /* The next sample is the new image's first: it names the new executable. */
  bpf_map_delete_elem(&sampled, &pid);
  struct sonde_prof_exit *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) return 0;
  e->type = SONDE_PROF_REC_EXEC;
  e->pid = pid;
  e->ktime_ns = x->ktime_ns;
  bpf_ringbuf_submit(e, 0);
  return 0;
}

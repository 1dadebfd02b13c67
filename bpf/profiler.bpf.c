// SPDX-License-Identifier: GPL-2.0
/* The CPU profiler's BPF side.
 *
 * sample(): attached to one CPU-clock perf_event per CPU. For every sample of a user process it
 * records the kernel stack (bpf_get_stack), the user stack by walking frame pointers with
 * bpf_probe_read_user, the user registers (for the DWARF unwinder to come), and the task's ids,
 * and sends it all as one record over the `events` ring buffer.
 *
 * on_exit(): raw tracepoint sched_process_exit. When the last thread of a process that was ever
 * sampled exits, it tells user space so the process's state can be dropped. Processes never sampled
 * produce nothing (the `sampled` LRU map is how we know).
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

/* Drops: [0] ring buffer full, [1] filtered out (diagnostics). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

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

SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx) {
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

  struct sonde_prof_sample *s = bpf_ringbuf_reserve(&events, sizeof(*s), 0);
  if (!s) {
    count(0);
    return 0;
  }
  s->type = SONDE_PROF_REC_SAMPLE;
  s->flags = 0;
  s->ktime_ns = bpf_ktime_get_ns();
  s->cgroup_id = bpf_get_current_cgroup_id();
  s->pid = pid;
  s->tid = tid;
  s->cpu = bpf_get_smp_processor_id();
  bpf_get_current_comm(s->comm, sizeof(s->comm));

  /* Kernel stack: empty when the sample hit user code. */
  s->n_kstack = 0;
  __u64 pc, sp, fp;
  if (sample_in_user_mode(ctx)) {
    pc = PT_REGS_IP(&ctx->regs);
    sp = PT_REGS_SP(&ctx->regs);
    fp = PT_REGS_FP(&ctx->regs);
  } else {
    s->flags |= SONDE_PROF_F_KERNEL;
    long n = bpf_get_stack(ctx, s->kstack, sizeof(s->kstack), 0);
    if (n > 0)
      s->n_kstack = (__u16)(n / 8);
    else
      s->flags |= SONDE_PROF_F_KSTACK_ERR;
    /* The user registers saved at the last entry into the kernel. */
    struct pt_regs *uregs = (struct pt_regs *)bpf_task_pt_regs(task);
    pc = PT_REGS_IP_CORE(uregs);
    sp = PT_REGS_SP_CORE(uregs);
    fp = PT_REGS_FP_CORE(uregs);
  }

  s->pc = pc;
  s->sp = sp;
  s->fp = fp;
  s->flags |= SONDE_PROF_F_USER_REGS;

  /* Frame pointers: [fp] is the caller's fp, [fp + 8] the return address. A frame must be above
   * the previous one and 8-byte aligned, or the chain is broken (code without frame pointers
   * leaves whatever it uses rbp for). */
  __u32 n = 0;
  if (pc) {
    s->ustack[0] = pc;
    n = 1;
  }
  __u64 last = sp;
  for (int i = 1; i < SONDE_PROF_USTACK_MAX; i++) {
    if (!pc || !fp || (fp & 7) || fp < last) break;
    __u64 frame[2];
    if (bpf_probe_read_user(frame, sizeof(frame), (const void *)fp)) break;
    if (!frame[1]) break;
    s->ustack[i] = frame[1];
    n = i + 1;
    last = fp + 16;
    fp = frame[0];
  }
  if (n == SONDE_PROF_USTACK_MAX && fp) s->flags |= SONDE_PROF_F_USTACK_TRUNC;
  s->n_ustack = (__u16)n;

  /* An LRU update costs several times a lookup: only the first sample of a process writes.
   * Waking user space is an IPI (a VM exit under virtualisation, measured at ~6 us of the
   * ~15 us this program took): user space drains the ring on a timer instead, and is only woken
   * for a process's first sample (so it reads /proc/PID while the process is still there) or when
   * the ring is filling up. */
  __u64 flags = BPF_RB_NO_WAKEUP;
  if (!bpf_map_lookup_elem(&sampled, &pid)) {
    __u8 one = 1;
    bpf_map_update_elem(&sampled, &pid, &one, BPF_ANY);
    flags = BPF_RB_FORCE_WAKEUP;
  } else if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > cfg.wakeup_bytes) {
    flags = BPF_RB_FORCE_WAKEUP;
  }
  bpf_ringbuf_submit(s, flags);
  return 0;
}

SEC("raw_tp/sched_process_exit")
int on_exit(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
  /* signal->live drops to 0 when the last thread of the group is on its way out. */
  if (BPF_CORE_READ(task, signal, live.counter) != 0) return 0;
  __u32 pid = task->tgid;
  if (!bpf_map_lookup_elem(&sampled, &pid)) return 0;
  bpf_map_delete_elem(&sampled, &pid);
  struct sonde_prof_exit *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) return 0;
  e->type = SONDE_PROF_REC_EXIT;
  e->pid = pid;
  e->ktime_ns = bpf_ktime_get_ns();
  bpf_ringbuf_submit(e, 0);
  return 0;
}

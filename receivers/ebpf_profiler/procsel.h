/* What the eBPF receivers (ebpf_profiler, ebpf_http) share: the privilege and kernel-feature
 * checks, the process selection options (include/exclude by pid, executable, cgroup, container id)
 * and the reading of a process's identity from /proc. The static library sonde_ebpf_proc, linked
 * into both plug-ins. */
#ifndef SONDE_EBPF_PROCSEL_H
#define SONDE_EBPF_PROCSEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/sonde.h"

struct bpf_map;

/* ---- privileges and kernel features ---------------------------------------------------------- */

#define SONDE__NEED_PERF_EVENT 1u /* BPF program type perf_event (sampling) */

/* 0 when this process can load and attach CO-RE BPF programs of raw_tracepoint type (plus what
 * needs asks for) with a ring buffer; otherwise a message naming what is missing, with who ("the
 * eBPF profiler") as the subject. */
int sonde__check_host(const char *who, unsigned needs, char *err, size_t errlen);

/* 0 when the kernel whose BTF is at btf_path (NULL: /sys/kernel/btf/vmlinux, the running one)
 * has the kfunc name; otherwise SONDE_EUNSUPPORTED and a message naming the kfunc, since (the
 * first kernel release that has it), what needs it (why) and the running kernel's release. */
int sonde__check_kfunc(const char *btf_path, const char *name, const char *since, const char *why,
                       char *err, size_t errlen);

/* ---- process selection ----------------------------------------------------------------------- */

typedef struct sonde__select {
  sonde_strlist pids;
  sonde_strlist executables;
  sonde_strlist cgroups;
  sonde_strlist container_ids;
} sonde__select;

/* The options of one include or exclude list (SONDE_OPT_NESTED on a sonde__select field). */
extern const sonde_option sonde__select_options[];

int sonde__parse_pid(const char *s, uint32_t *out); /* SONDE_EINVAL unless a pid 1..2^31-1 */
/* The configuration errors of include and exclude (a pid that is not one). */
int sonde__select_validate(const sonde__select *include, const sonde__select *exclude, char *err,
                           size_t errlen);
bool sonde__select_empty(const sonde__select *s);
/* True when s selects by pid alone (nothing that needs /proc). */
bool sonde__select_pids_only(const sonde__select *s);

/* Writes the verdicts known before any process is seen into a BPF hash pid -> verdict: self and
 * the excluded pids get exclude_v, the included pids include_v. Returns 0 or -errno. */
int sonde__pid_filter_seed(struct bpf_map *pid_filter, uint32_t self, const sonde__select *include,
                           const sonde__select *exclude, uint32_t include_v, uint32_t exclude_v);

/* ---- a process's identity -------------------------------------------------------------------- */

typedef struct sonde__proc_ident {
  char *exe_path;        /* readlink /proc/PID/exe; NULL if the process was gone */
  char *exe_name;        /* basename of exe_path, or /proc/PID/comm */
  char *cgroup;          /* the cgroup v2 path ("0::" line), NULL if unknown */
  char container_id[65]; /* "" when the cgroup names no container */
} sonde__proc_ident;

/* Reads pid's executable, name and cgroup (blocking). Returns 0, SONDE_ENOTFOUND when the process
 * is gone, or SONDE_ENOMEM; *out is filled as far as it got and must be freed either way. */
int sonde__proc_ident_read(int pid, sonde__proc_ident *out);
void sonde__proc_ident_free(sonde__proc_ident *id);

/* Whether s names the process pid (id: NULL when /proc was not read yet: pids only). */
bool sonde__select_match(const sonde__select *s, uint32_t pid, const sonde__proc_ident *id);

/* The container id in a cgroup path (docker, containerd, cri-o, podman naming): the last run of 64
 * hex digits. Writes "" when there is none. */
void sonde__container_id(const char *cgroup_path, char out[65]);

/* The contents of a small file (a /proc file), NUL-terminated; NULL (errno set) on failure. */
char *sonde__read_small(const char *path, size_t *len);

#endif

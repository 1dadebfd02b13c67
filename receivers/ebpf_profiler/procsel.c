/* The privilege checks, process selection and /proc identity reading of the eBPF receivers. */
#include "procsel.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

/* ---- privileges and kernel features ---------------------------------------------------------- */

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static bool cap_effective(const struct __user_cap_data_struct d[2], int cap) {
  return d[cap / 32].effective & (1u << (cap % 32));
}

int sonde__check_host(const char *who, unsigned needs, char *err, size_t errlen) {
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2] = {0};
  if (syscall(SYS_capget, &hdr, d)) {
    snprintf(err, errlen, "cannot read this process's capabilities: %s", strerror(errno));
    return SONDE_EPERM;
  }
  bool admin = cap_effective(d, CAP_SYS_ADMIN);
  if (!admin && !(cap_effective(d, CAP_BPF) && cap_effective(d, CAP_PERFMON))) {
    snprintf(err, errlen,
             "%s needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); this process lacks %s%s%s", who,
             cap_effective(d, CAP_BPF) ? "" : "CAP_BPF",
             !cap_effective(d, CAP_BPF) && !cap_effective(d, CAP_PERFMON) ? " and " : "",
             cap_effective(d, CAP_PERFMON) ? "" : "CAP_PERFMON");
    return SONDE_EPERM;
  }
  if (access("/sys/kernel/btf/vmlinux", R_OK)) {
    snprintf(err, errlen,
             "kernel feature missing: BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF), "
             "needed to load CO-RE BPF programs");
    return SONDE_EUNSUPPORTED;
  }
  static const struct {
    enum bpf_prog_type t;
    unsigned need; /* 0: always */
    const char *name;
  } progs[] = {{BPF_PROG_TYPE_PERF_EVENT, SONDE__NEED_PERF_EVENT, "BPF program type perf_event"},
               {BPF_PROG_TYPE_RAW_TRACEPOINT, 0, "BPF program type raw_tracepoint"}};
  for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
    if (progs[i].need && !(needs & progs[i].need)) continue;
    if (libbpf_probe_bpf_prog_type(progs[i].t, NULL) != 1) {
      snprintf(err, errlen, "kernel feature missing: %s", progs[i].name);
      return SONDE_EUNSUPPORTED;
    }
  }
  if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1) {
    snprintf(err, errlen, "kernel feature missing: BPF ring buffer (map type ringbuf, Linux 5.8)");
    return SONDE_EUNSUPPORTED;
  }
  return 0;
}

int sonde__check_kfunc(const char *btf_path, const char *name, const char *since, const char *why,
                       char *err, size_t errlen) {
  const char *path = btf_path ? btf_path : "/sys/kernel/btf/vmlinux";
  struct btf *btf = btf__parse(path, NULL);
  if (!btf) {
    snprintf(err, errlen, "kernel feature missing: BTF (%s: %s), needed to find the %s kfunc", path,
             strerror(errno), name);
    return SONDE_EUNSUPPORTED;
  }
  int id = btf__find_by_name_kind(btf, name, BTF_KIND_FUNC);
  btf__free(btf);
  if (id > 0) return 0;
  struct utsname u;
  snprintf(err, errlen,
           "kernel feature missing: the %s kfunc (Linux %s or later), needed %s; this kernel is %s",
           name, since, why, uname(&u) ? "unknown" : u.release);
  return SONDE_EUNSUPPORTED;
}

/* ---- process selection ----------------------------------------------------------------------- */

const sonde_option sonde__select_options[] = {
    SONDE_OPT("pids", SONDE_OPT_STRLIST, sonde__select, pids, NULL, "process ids"),
    SONDE_OPT("executables", SONDE_OPT_STRLIST, sonde__select, executables, NULL,
              "globs (fnmatch) on the executable's path or, without a '/', its name"),
    SONDE_OPT("cgroups", SONDE_OPT_STRLIST, sonde__select, cgroups, NULL,
              "globs on the cgroup v2 path (/proc/PID/cgroup)"),
    SONDE_OPT("container_ids", SONDE_OPT_STRLIST, sonde__select, container_ids, NULL,
              "container ids, or <runtime>://<id> as Kubernetes shows them (a prefix of 12 or more "
              "hex digits is enough)"),
    SONDE_OPT_END,
};

int sonde__parse_pid(const char *s, uint32_t *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v <= 0 || v > 0x7fffffff) return SONDE_EINVAL;
  *out = (uint32_t)v;
  return 0;
}

/* The id part of a configured container id: Kubernetes reports "containerd://<id>" (also docker://,
 * cri-o://). */
static const char *cid_of(const char *s) {
  const char *p = strstr(s, "://");
  return p ? p + 3 : s;
}

/* Whether a configured container id can match one read from a cgroup path (lowercase hex). */
static bool cid_valid(const char *s) {
  size_t n = strspn(s, "0123456789abcdef");
  return n && n <= 64 && !s[n];
}

int sonde__select_validate(const sonde__select *include, const sonde__select *exclude, char *err,
                           size_t errlen) {
  const sonde__select *sel[2] = {include, exclude};
  for (int s = 0; s < 2; s++) {
    for (size_t i = 0; i < sel[s]->pids.n; i++) {
      uint32_t pid;
      if (sonde__parse_pid(sel[s]->pids.v[i], &pid)) {
        snprintf(err, errlen, "%s::pids: \"%s\" is not a process id", s ? "exclude" : "include",
                 sel[s]->pids.v[i]);
        return SONDE_ECONFIG;
      }
    }
    for (size_t i = 0; i < sel[s]->container_ids.n; i++) {
      if (!cid_valid(cid_of(sel[s]->container_ids.v[i]))) {
        snprintf(err, errlen,
                 "%s::container_ids: \"%s\" is not a container id (up to 64 lowercase hex digits, "
                 "optionally after \"<runtime>://\"; a prefix of 12 or more is enough)",
                 s ? "exclude" : "include", sel[s]->container_ids.v[i]);
        return SONDE_ECONFIG;
      }
    }
  }
  return 0;
}

bool sonde__select_empty(const sonde__select *s) {
  return !s->pids.n && !s->executables.n && !s->cgroups.n && !s->container_ids.n;
}

bool sonde__select_pids_only(const sonde__select *s) {
  return !s->executables.n && !s->cgroups.n && !s->container_ids.n;
}

int sonde__pid_filter_seed(struct bpf_map *pid_filter, uint32_t self, const sonde__select *include,
                           const sonde__select *exclude, uint32_t include_v, uint32_t exclude_v) {
  if (bpf_map__update_elem(pid_filter, &self, 4, &exclude_v, 4, BPF_ANY)) return -errno;
  for (size_t i = 0; i < include->pids.n; i++) {
    uint32_t pid;
    if (!sonde__parse_pid(include->pids.v[i], &pid) && pid != self &&
        bpf_map__update_elem(pid_filter, &pid, 4, &include_v, 4, BPF_ANY))
      return -errno;
  }
  for (size_t i = 0; i < exclude->pids.n; i++) {
    uint32_t pid;
    if (!sonde__parse_pid(exclude->pids.v[i], &pid) &&
        bpf_map__update_elem(pid_filter, &pid, 4, &exclude_v, 4, BPF_ANY))
      return -errno;
  }
  return 0;
}

bool sonde__select_match(const sonde__select *s, uint32_t qpid, const sonde__proc_ident *id) {
  for (size_t i = 0; i < s->pids.n; i++) {
    uint32_t pid;
    if (!sonde__parse_pid(s->pids.v[i], &pid) && pid == qpid) return true;
  }
  if (!id) return false;
  for (size_t i = 0; i < s->executables.n; i++) {
    const char *g = s->executables.v[i];
    const char *subject = strchr(g, '/') ? id->exe_path : id->exe_name;
    if (subject && !fnmatch(g, subject, 0)) return true;
  }
  for (size_t i = 0; i < s->cgroups.n; i++)
    if (id->cgroup && !fnmatch(s->cgroups.v[i], id->cgroup, 0)) return true;
  for (size_t i = 0; i < s->container_ids.n; i++) {
    const char *c = cid_of(s->container_ids.v[i]);
    size_t n = strlen(c);
    if (id->container_id[0] && n && !strncmp(id->container_id, c, n)) return true;
  }
  return false;
}

/* ---- a process's identity -------------------------------------------------------------------- */

void sonde__container_id(const char *p, char out[65]) {
  out[0] = 0;
  if (!p) return;
  size_t run = 0;
  const char *best = NULL;
  for (const char *c = p;; c++) {
    if (*c && isxdigit((unsigned char)*c) && !isupper((unsigned char)*c)) {
      run++;
      continue;
    }
    if (run == 64) best = c - 64;
    run = 0;
    if (!*c) break;
  }
  if (best) {
    memcpy(out, best, 64);
    out[64] = 0;
  }
}

char *sonde__read_small(const char *path, size_t *len) {
  FILE *f = fopen(path, "re");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
    if (n < cap - 1) break;
    char *nb = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  fclose(f);
  if (buf) {
    buf[n] = 0;
    if (len) *len = n;
  }
  return buf;
}

int sonde__proc_ident_read(int pid, sonde__proc_ident *id) {
  char path[64], link[PATH_MAX];
  memset(id, 0, sizeof(*id));
  snprintf(path, sizeof(path), "/proc/%d/exe", pid);
  ssize_t n = readlink(path, link, sizeof(link) - 1);
  if (n > 0) {
    link[n] = 0;
    /* The name the executable had: an upgraded package's old binary still runs. */
    char *del = strstr(link, " (deleted)");
    if (del && !del[10]) *del = 0;
    if (!(id->exe_path = strdup(link))) return SONDE_ENOMEM;
    const char *slash = strrchr(id->exe_path, '/');
    if (!(id->exe_name = strdup(slash ? slash + 1 : id->exe_path))) return SONDE_ENOMEM;
  } else {
    snprintf(path, sizeof(path), "/proc/%d/comm", pid);
    char *comm = sonde__read_small(path, NULL);
    if (!comm) return errno == ENOMEM ? SONDE_ENOMEM : SONDE_ENOTFOUND;
    comm[strcspn(comm, "\n")] = 0;
    id->exe_name = comm;
  }

  snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
  char *cg = sonde__read_small(path, NULL);
  if (cg) {
    char *save = NULL;
    for (char *line = strtok_r(cg, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      if (!strncmp(line, "0::", 3) && !id->cgroup) {
        if (!(id->cgroup = strdup(line + 3))) {
          free(cg);
          return SONDE_ENOMEM;
        }
      }
      if (!id->container_id[0]) {
        const char *p = strchr(line, ':');
        p = p ? strchr(p + 1, ':') : NULL;
        if (p) sonde__container_id(p + 1, id->container_id);
      }
    }
    free(cg);
  }
  return 0;
}

void sonde__proc_ident_free(sonde__proc_ident *id) {
  if (!id) return;
  free(id->exe_path);
  free(id->exe_name);
  free(id->cgroup);
  memset(id, 0, sizeof(*id));
}

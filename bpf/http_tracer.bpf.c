// SPDX-License-Identifier: GPL-2.0
/* The HTTP tracer's BPF side: the bytes processes read and write on TCP sockets, without kprobes.
 *
 * on_enter/on_exit: raw tracepoints sys_enter/sys_exit (one program each, a switch on the syscall
 * number: no tracefs needed). At exit (close: at entry), with the arguments read from the saved
 * registers, if the fd is a TCP socket (task->files->fdt->fd[fd] -> struct socket -> sock,
 * read with CO-RE), one record goes to the ring buffer with the connection's addresses, the byte
 * count and the first `capture` bytes (the first iovecs for readv/writev/recvmsg/sendmsg).
 * accept/accept4/connect only note the connection's role; close() sends a close record for
 * connections that sent data. A connection user space judged "not HTTP" (or TLS, whose bytes come
 * from the uprobes instead) costs one map lookup per call.
 *
 * ssl_*: uprobes on SSL_read/SSL_write(_ex) in libssl and in executables with OpenSSL inside. The
 * SSL object is bound to its socket by the socket syscall the thread makes inside the SSL call
 * (libssl doing socket I/O itself), or else by the last socket the thread read (memory-BIO users
 * like Node.js read the socket, then call SSL_read on the same thread).
 *
 * on_fork: raw tracepoint sched_process_fork, for processes that sent records: user space follows
 * threads to parent client spans made by a worker thread to the server span it serves.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "http_tracer.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115
#define MSG_PEEK 2

#if defined(__TARGET_ARCH_x86)
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_ACCEPT4 288
#elif defined(__TARGET_ARCH_arm64)
#define NR_READ 63
#define NR_WRITE 64
#define NR_CLOSE 57
#define NR_READV 65
#define NR_WRITEV 66
#define NR_SENDFILE 71
#define NR_CONNECT 203
#define NR_ACCEPT 202
#define NR_SENDTO 206
#define NR_RECVFROM 207
#define NR_SENDMSG 211
#define NR_RECVMSG 212
#define NR_ACCEPT4 242
#else
#error "http_tracer: syscall numbers for this architecture"
#endif

const volatile struct sonde_http_config cfg = {0};

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, SONDE_HTTP_RINGBUF_BYTES);
} events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SONDE_HTTP_CNT_N);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

/* pid -> SONDE_HTTP_PID_EXCLUDE / SONDE_HTTP_PID_INCLUDE, written by user space. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, __u32);
} pid_filter SEC(".maps");

/* open_ports as a bitmap: bit (port & 63) of entry port >> 6. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, __u64);
} ports SEC(".maps");

/* struct sock address -> role and user space's verdict. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct sonde_http_conn);
} conns SEC(".maps");

enum { K_BUF = 1, K_IOV, K_MSG };

struct args {
  __u64 buf; /* buffer, iovec array or msghdr */
  __u64 cnt; /* iovec count (K_IOV) */
  __s32 fd;
  __u8 kind, dir;
  __u8 pad[2];
};

struct ssl_call {
  __u64 ssl, buf, outlen; /* outlen: SSL_*_ex's size_t * (0 for SSL_read/SSL_write) */
  __u64 sock;             /* socket the thread touched inside the call */
  __u8 dir;
  __u8 pad[7];
};

/* tid -> the SSL_read/SSL_write it is in. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct ssl_call);
} ssl_calls SEC(".maps");

/* (pid, SSL *) -> struct sock address. The pid is part of the key: SSL * values of different
 * processes collide. */
struct ssl_key {
  __u64 pid;
  __u64 ssl;
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct ssl_key);
  __type(value, __u64);
} ssl_sock SEC(".maps");

/* tid -> the socket it read last (binding for memory-BIO TLS). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, __u64);
} last_read SEC(".maps");

/* pids that sent records (for fork records). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, __u8);
} active SEC(".maps");

/* The state of a walk through HTTP/2 frames (see h2_step), in the per-CPU scratch rather than
 * on the stack: the verifier then sees the same unknown values at every bpf_loop step and
 * verifies the step once instead of following values from step to step. */
struct walk {
  struct sonde_http_h2dir st; /* the direction's framing, copied in and back */
  __u64 base;                 /* user address of the buffer */
  __u32 len, pos;
  __u32 sn;   /* bytes in buf not sent yet */
  __u32 wake; /* the next record wakes user space */
  __u64 hole; /* bytes skipped after those */
};

struct scratch {
  struct sonde_http_data h;
  /* Three times the capture so the verifier can bound (offset + length) of each copy with
   * masks: offset < SONDE_HTTP_CAP_MAX, length < 2 * SONDE_HTTP_CAP_MAX. */
  char buf[3 * SONDE_HTTP_CAP_MAX];
  struct walk w;
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline void count(__u32 idx, __u64 n) {
  __u64 *v = bpf_map_lookup_elem(&counters, &idx);
  if (v) *v += n;
}

static __always_inline bool pid_wanted(__u32 pid) {
  __u32 *v = bpf_map_lookup_elem(&pid_filter, &pid);
  if (v) return *v == SONDE_HTTP_PID_INCLUDE;
  return !cfg.include_only;
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* The TCP sock behind fd in the current task, or NULL. Direct loads through BTF pointers (the
 * task, and the file made one with bpf_rdonly_cast) instead of a probe-read helper call per
 * field: this walk runs for every read and write on a socket of the machine. */
static __always_inline struct sock *fd_sock(int fd) {
  struct task_struct *task = bpf_get_current_task_btf();
  struct fdtable *fdt = task->files->fdt;
  if (fd < 0 || (unsigned)fd >= fdt->max_fds) return NULL;
  struct file *fp = NULL;
  bpf_probe_read_kernel(&fp, sizeof(fp), (void *)((__u64)fdt->fd + (__u64)fd * sizeof(fp)));
  if (!fp) return NULL;
  struct file *f = bpf_rdonly_cast(fp, bpf_core_type_id_kernel(struct file));
  if ((f->f_inode->i_mode & S_IFMT) != S_IFSOCK) return NULL;
  struct socket *so = bpf_rdonly_cast(f->private_data, bpf_core_type_id_kernel(struct socket));
  if (!so || so->type != 1 /* SOCK_STREAM */) return NULL;
  struct sock *sk = so->sk;
  if (!sk) return NULL;
  __u16 fam = sk->__sk_common.skc_family;
  if (fam != AF_INET && fam != AF_INET6) return NULL;
  return sk;
}

static __always_inline bool port_set(__u16 port) {
  __u32 k = port >> 6;
  __u64 *v = bpf_map_lookup_elem(&ports, &k);
  return v && (*v >> (port & 63)) & 1;
}

/* Fills the connection part of h from sk; false when the port filter rejects it. */
static __always_inline bool fill_conn(struct sonde_http_data *h, struct sock *sk) {
  h->family = BPF_CORE_READ(sk, __sk_common.skc_family);
  h->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
  h->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (cfg.port_filter && !port_set(h->lport) && !port_set(h->rport)) return false;
  if (h->family == AF_INET) {
    __u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
    __u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
    __builtin_memset(h->laddr, 0, 16);
    __builtin_memset(h->raddr, 0, 16);
    __builtin_memcpy(h->laddr, &l, 4);
    __builtin_memcpy(h->raddr, &r, 4);
  } else {
    bpf_core_read(h->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
    bpf_core_read(h->raddr, 16, &sk->__sk_common.skc_v6_daddr);
  }
  return true;
}

static __always_inline void submit(struct scratch *s, __u32 n, bool wake) {
  /* n <= SONDE_HTTP_CAP_MAX already; the mask is what the verifier can follow. */
  n &= 2 * SONDE_HTTP_CAP_MAX - 1;
  s->h.captured = n;
  /* Waking user space costs an IPI per record: it drains on a timer and is woken each time the
   * waiting data crosses a multiple of wakeup_bytes (a power of two), so at most once per that
   * many bytes however fast records come; and for a process's first record (so it reads
   * /proc/PID while the process is still there). */
  __u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
  __u64 mask = ~((__u64)cfg.wakeup_bytes - 1);
  __u64 flags = wake || (waiting & mask) != ((waiting + sizeof(s->h) + n) & mask)
                    ? BPF_RB_FORCE_WAKEUP
                    : BPF_RB_NO_WAKEUP;
  if (bpf_ringbuf_output(&events, s, sizeof(s->h) + n, flags))
    count(SONDE_HTTP_CNT_LOST, 1);
  else
    count(SONDE_HTTP_CNT_BYTES, sizeof(s->h) + n);
}

/* The record header in the per-CPU scratch; NULL when the port filter rejects the connection.
 * cache (the connection's `conns` entry, may be NULL) provides the addresses once filled. */
static __always_inline struct scratch *start_rec(__u32 type, __u64 id, int fd, struct sock *sk,
                                                 __u8 dir, __u64 total, bool comm,
                                                 struct sonde_http_conn *cache) {
  __u32 zero = 0;
  struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
  if (!s) return NULL;
  s->h.type = type;
  s->h.pid = id >> 32;
  s->h.tid = (__u32)id;
  s->h.fd = fd;
  s->h.ktime_ns = bpf_ktime_get_ns();
  s->h.sock = (__u64)sk;
  s->h.total = total;
  s->h.captured = 0;
  s->h.dir = dir;
  s->h.flags = 0;
  s->h.role = SONDE_HTTP_ROLE_UNKNOWN;
  /* The thread name names a process gone before user space read /proc: its first record has it. */
  if (comm)
    bpf_get_current_comm(s->h.comm, sizeof(s->h.comm));
  else
    s->h.comm[0] = 0;
  if (cache && cache->cached) {
    s->h.family = cache->family;
    s->h.lport = cache->lport;
    s->h.rport = cache->rport;
    __builtin_memcpy(s->h.laddr, cache->laddr, 16);
    __builtin_memcpy(s->h.raddr, cache->raddr, 16);
    return s;
  }
  if (!fill_conn(&s->h, sk)) return NULL;
  if (cache) {
    cache->family = s->h.family;
    cache->lport = s->h.lport;
    cache->rport = s->h.rport;
    __builtin_memcpy(cache->laddr, s->h.laddr, 16);
    __builtin_memcpy(cache->raddr, s->h.raddr, 16);
    cache->cached = 1;
  }
  return s;
}

/* Copies the first bytes of up to SONDE_HTTP_IOV_MAX iovecs; returns the bytes copied. */
static __always_inline __u32 copy_iov(struct scratch *s, const struct iovec *iov, __u64 cnt,
                                      __u64 want) {
  __u32 n = 0;
  /* A bounded loop, not unrolled: gRPC writes a frame as many small iovecs. */
  for (int i = 0; i < SONDE_HTTP_IOV_MAX; i++) {
    if (i >= cnt || n >= want) break;
    struct iovec v;
    if (bpf_probe_read_user(&v, sizeof(v), &iov[i])) break;
    __u64 chunk = v.iov_len;
    if (chunk > want - n) chunk = want - n;
    if (chunk > SONDE_HTTP_CAP_MAX) chunk = SONDE_HTTP_CAP_MAX;
    __u32 off = n;
    if (off > SONDE_HTTP_CAP_MAX) break;
    if (bpf_probe_read_user(s->buf + off, chunk, v.iov_base)) break;
    n += chunk;
    if (chunk < v.iov_len) break; /* what follows is not contiguous with what we have */
  }
  return n;
}

/* ---- HTTP/2 framing ---- */

#define H2_STEPS 1024 /* bpf_loop steps per buffer: 3 per frame at most */

/* Sends what was copied and the DATA bytes skipped after it as one record. */
static __always_inline void walk_flush(struct scratch *s) {
  struct walk *w = &s->w;
  if (!w->sn && !w->hole) return;
  s->h.total = w->sn + w->hole;
  submit(s, w->sn, w->wake);
  w->wake = 0;
  w->sn = 0;
  w->hole = 0;
}

/* One step through the buffer: a frame header (or the part of it in this buffer), a payload
 * part that is copied, or DATA bytes that are skipped. */
static long h2_step(__u64 i, void *ctx) {
  __u32 zero = 0;
  struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
  if (!s) return 1;
  struct walk *w = &s->w;
  struct sonde_http_h2dir *st = &w->st;
  if (w->pos >= w->len) return 1;
  __u32 room = w->len - w->pos;
  if (st->skip) {
    __u32 n = st->skip < room ? st->skip : room;
    st->skip -= n;
    w->pos += n;
    w->hole += n;
    return 0;
  }
  if (w->hole || w->sn >= SONDE_HTTP_CAP_MAX) walk_flush(s);
  __u32 sn = w->sn;
  if (sn >= SONDE_HTTP_CAP_MAX) return 1;
  if (st->hn > 8) return 1;
  __u32 n = st->keep ? st->keep : 9 - st->hn;
  if (n > room) n = room;
  if (n > SONDE_HTTP_CAP_MAX - sn) n = SONDE_HTTP_CAP_MAX - sn;
  barrier_var(n); /* else the compiler drops the mask below, which the verifier needs */
  barrier_var(sn);
  if (bpf_probe_read_user(s->buf + (sn & (SONDE_HTTP_CAP_MAX - 1)),
                          n & (2 * SONDE_HTTP_CAP_MAX - 1), (const void *)(w->base + w->pos)))
    return 1;
  w->sn = sn + n;
  w->pos += n;
  if (st->keep) {
    st->keep -= n;
    return 0;
  }
  /* Header positions 0-4 (length, type, flags) among the n bytes copied from position hn. */
  __u32 hn = st->hn, end = hn + n;
#define HB(p) ((__u8)s->buf[(sn + (p)-hn) & (2 * SONDE_HTTP_CAP_MAX - 1)])
  if (hn == 0) st->flen = HB(0);
  if (hn <= 1 && end > 1) st->flen = st->flen << 8 | HB(1);
  if (hn <= 2 && end > 2) st->flen = st->flen << 8 | HB(2);
  if (hn <= 3 && end > 3) st->type = HB(3);
  if (hn <= 4 && end > 4) st->flags = HB(4);
#undef HB
  st->hn += n;
  if (st->hn < 9) return 0;
  st->hn = 0;
  /* DATA: only the pad length (PADDED) is copied; the decoder counts the rest by length. */
  st->keep = st->type == 0 ? ((st->flags & 0x8) && st->flen ? 1 : 0) : st->flen;
  st->skip = st->flen - st->keep;
  st->flen = 0;
  return 0;
}

/* Walks one buffer of the transfer; false once framing is lost (a read fault, or more frames
 * than H2_STEPS): the direction is then no longer followed. */
static __always_inline bool h2_buf(struct scratch *s, __u64 base, __u64 len) {
  struct walk *w = &s->w;
  w->base = base;
  w->len = len > 0x7fffffff ? 0x7fffffff : len;
  w->pos = 0;
  bpf_loop(H2_STEPS, h2_step, NULL, 0);
  if (w->pos >= w->len) return true;
  w->hole += w->len - w->pos;
  w->st.on = 0;
  return false;
}

/* The client preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" as little-endian words. */
#define H2_PREFACE0 0x5448202a20495250ull
#define H2_PREFACE1 0x0a0d302e322f5054ull
#define H2_PREFACE2 0x0a0d0a0d4d530a0dull

/* The first bytes of a direction: the client preface, or a SETTINGS frame (a server's first),
 * start HTTP/2 framing. */
static __always_inline void h2_detect(struct sonde_http_h2dir *st, const struct args *a,
                                      __u64 total) {
  __u64 p = a->buf, len = total;
  if (a->kind == K_MSG) {
    struct user_msghdr m;
    if (bpf_probe_read_user(&m, sizeof(m), (const void *)p)) return;
    p = (__u64)m.msg_iov;
  }
  if (a->kind == K_IOV || a->kind == K_MSG) {
    struct iovec v;
    if (bpf_probe_read_user(&v, sizeof(v), (const void *)p)) return;
    p = (__u64)v.iov_base;
    if (v.iov_len < len) len = v.iov_len;
  } else if (a->kind != K_BUF) {
    return;
  }
  __u64 w[3] = {0};
  __u8 *b = (__u8 *)w;
  if (len < 9 || bpf_probe_read_user(w, len < 24 ? 9 : 24, (const void *)p)) return;
  if (len >= 24 && w[0] == H2_PREFACE0 && w[1] == H2_PREFACE1 && w[2] == H2_PREFACE2) {
    __builtin_memset(st, 0, sizeof(*st));
    st->on = 1;
    st->keep = 24; /* the preface as if it were a payload */
    return;
  }
  __u32 flen = (__u32)b[0] << 16 | (__u32)b[1] << 8 | b[2];
  if (b[3] == 4 && !(b[4] | b[5] | b[6] | b[7] | b[8]) && flen % 6 == 0 && flen <= 16384) {
    __builtin_memset(st, 0, sizeof(*st));
    st->on = 1;
  }
}

/* The bytes of a transfer of `total` bytes into records: the first `capture` bytes, or on a
 * framed HTTP/2 direction everything but DATA payloads (one record per hole, or per
 * SONDE_HTTP_CAP_MAX bytes). s->h is filled but for captured and total. */
static __always_inline void capture(struct scratch *s, struct sonde_http_conn *c, struct args *a,
                                    __u64 total, bool wake) {
  struct sonde_http_h2dir *st = NULL;
  if (c) {
    __u8 bit = 1 << (a->dir & 1);
    st = &c->h2[a->dir & 1];
    if (!(c->seen & bit)) {
      c->seen |= bit;
      h2_detect(st, a, total);
    }
    if (!st->on) st = NULL;
  }
  if (st) {
    struct walk *w = &s->w;
    w->st = *st;
    w->sn = 0;
    w->hole = 0;
    w->wake = wake;
    __u64 left = total;
    if (a->kind == K_BUF) {
      h2_buf(s, a->buf, left);
      left = 0;
    } else if (a->kind == K_IOV || a->kind == K_MSG) {
      __u64 iov = a->buf, cnt = a->cnt;
      if (a->kind == K_MSG) {
        struct user_msghdr m;
        if (bpf_probe_read_user(&m, sizeof(m), (const void *)a->buf)) m.msg_iovlen = 0;
        iov = (__u64)m.msg_iov;
        cnt = m.msg_iovlen;
      }
      for (int i = 0; i < SONDE_HTTP_IOV_MAX; i++) {
        struct iovec v;
        if (i >= cnt || !left ||
            bpf_probe_read_user(&v, sizeof(v), (const void *)(iov + i * sizeof(v))))
          break;
        __u64 len = v.iov_len < left ? v.iov_len : left;
        if (!h2_buf(s, (__u64)v.iov_base, len)) break;
        left -= len;
      }
    } else if (w->st.skip >= left) { /* sendfile inside a DATA payload */
      w->st.skip -= left;
      w->hole = left;
      left = 0;
    }
    if (left) w->st.on = 0; /* bytes not walked: framing lost */
    w->hole += left;
    walk_flush(s);
    *st = w->st;
    return;
  }
  __u64 want = cfg.capture;
  if (want > SONDE_HTTP_CAP_MAX) want = SONDE_HTTP_CAP_MAX;
  if (want > total) want = total;
  __u32 n = 0;
  if (a->kind == K_BUF) {
    n = want;
    if (n > SONDE_HTTP_CAP_MAX) n = SONDE_HTTP_CAP_MAX;
    if (bpf_probe_read_user(s->buf, n, (const void *)a->buf)) n = 0;
  } else if (a->kind == K_IOV) {
    n = copy_iov(s, (const struct iovec *)a->buf, a->cnt, want);
  } else if (a->kind == K_MSG) {
    struct user_msghdr m;
    if (!bpf_probe_read_user(&m, sizeof(m), (const void *)a->buf))
      n = copy_iov(s, m.msg_iov, m.msg_iovlen, want);
  }
  submit(s, n, wake);
}

static __always_inline void emit_data(__u64 id, struct args *a, long ret) {
  struct sock *sk = fd_sock(a->fd);
  if (!sk) return;
  __u32 tid = (__u32)id;
  __u64 skv = (__u64)sk;
  if (a->dir == 0) {
    /* An LRU update takes a lock: only when the thread moved to another socket. */
    __u64 *lr = bpf_map_lookup_elem(&last_read, &tid);
    if (!lr || *lr != skv) bpf_map_update_elem(&last_read, &tid, &skv, BPF_ANY);
  }
  /* Inside SSL_read/SSL_write: these are TLS records; the uprobe sends the plaintext. */
  struct ssl_call *sc = bpf_map_lookup_elem(&ssl_calls, &tid);
  if (sc) {
    sc->sock = skv;
    return;
  }
  struct sonde_http_conn *c = bpf_map_lookup_elem(&conns, &skv);
  if (c && c->verdict == SONDE_HTTP_VERDICT_SKIP) return;
  if (!c) {
    struct sonde_http_conn nc = {0};
    bpf_map_update_elem(&conns, &skv, &nc, BPF_NOEXIST);
    c = bpf_map_lookup_elem(&conns, &skv);
  }
  __u32 pid = id >> 32;
  bool first = !bpf_map_lookup_elem(&active, &pid);
  struct scratch *s = start_rec(SONDE_HTTP_REC_DATA, id, a->fd, sk, a->dir, (__u64)ret, first, c);
  if (!s) {
    /* Not on an open port: from now on this connection costs one lookup. */
    if (c) c->verdict = SONDE_HTTP_VERDICT_SKIP;
    return;
  }
  if (first) {
    __u8 one = 1;
    bpf_map_update_elem(&active, &pid, &one, BPF_ANY);
  }
  if (c) s->h.role = c->role;
  capture(s, c, a, (__u64)ret, first);
}

static __always_inline void set_role(int fd, __u8 role) {
  struct sock *sk = fd_sock(fd);
  if (!sk) return;
  __u64 skv = (__u64)sk;
  struct sonde_http_conn c = {.role = role};
  bpf_map_update_elem(&conns, &skv, &c, BPF_ANY);
}

/* close() is seen at entry: at exit the fd no longer names the socket. */
static __always_inline void on_close(int fd) {
  __u64 id = bpf_get_current_pid_tgid();
  if (!pid_wanted(id >> 32)) return;
  struct sock *sk = fd_sock(fd);
  if (!sk) return;
  __u64 skv = (__u64)sk;
  struct sonde_http_conn *c = bpf_map_lookup_elem(&conns, &skv);
  if (!c) return;
  __u8 verdict = c->verdict;
  bpf_map_delete_elem(&conns, &skv);
  if (verdict == SONDE_HTTP_VERDICT_SKIP) return;
  struct scratch *s = start_rec(SONDE_HTTP_REC_CLOSE, id, fd, sk, 0, 0, false, NULL);
  if (s) submit(s, 0, false);
}

SEC("raw_tp/sys_enter")
int on_enter(struct bpf_raw_tracepoint_args *ctx) {
  if (ctx->args[1] != NR_CLOSE) return 0;
  struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
  on_close(PT_REGS_PARM1_CORE_SYSCALL(regs));
  return 0;
}

/* Everything else at exit, where the return value is known. The arguments are read from the
 * registers saved at entry, which these syscalls leave as they were (the *_CORE_SYSCALL macros
 * read orig_x0 on arm64, where x0 holds the return value by now): no per-thread map, so a
 * read or write on anything but a traced socket costs a switch and a few reads. */
static __always_inline void on_sys_exit(long nr, long ret, struct pt_regs *regs) {
  struct args a = {0};
  switch (nr) {
  case NR_READ:
  case NR_RECVFROM:
    a.kind = K_BUF, a.dir = 0;
    break;
  case NR_WRITE:
  case NR_SENDTO:
    a.kind = K_BUF, a.dir = 1;
    break;
  case NR_READV:
    a.kind = K_IOV, a.dir = 0;
    break;
  case NR_WRITEV:
    a.kind = K_IOV, a.dir = 1;
    break;
  case NR_RECVMSG:
    a.kind = K_MSG, a.dir = 0;
    break;
  case NR_SENDMSG:
    a.kind = K_MSG, a.dir = 1;
    break;
  case NR_SENDFILE:
    a.kind = 0, a.dir = 1; /* counted, nothing to copy */
    break;
  case NR_CONNECT:
    if (ret != 0 && ret != -EINPROGRESS) return;
    break;
  case NR_ACCEPT:
  case NR_ACCEPT4:
    if (ret < 0) return;
    break;
  default:
    return;
  }
  if (nr != NR_CONNECT && ret <= 0) return;
  __u64 id = bpf_get_current_pid_tgid();
  if (!pid_wanted(id >> 32)) return;
  if (nr == NR_ACCEPT || nr == NR_ACCEPT4) {
    set_role(ret, SONDE_HTTP_ROLE_SERVER);
    return;
  }
  a.fd = PT_REGS_PARM1_CORE_SYSCALL(regs);
  if (nr == NR_CONNECT) {
    set_role(a.fd, SONDE_HTTP_ROLE_CLIENT);
    return;
  }
  if (nr == NR_RECVFROM && (PT_REGS_PARM4_CORE_SYSCALL(regs) & MSG_PEEK)) return;
  if (nr == NR_RECVMSG && (PT_REGS_PARM3_CORE_SYSCALL(regs) & MSG_PEEK)) return;
  if (nr != NR_SENDFILE) {
    a.buf = PT_REGS_PARM2_CORE_SYSCALL(regs);
    a.cnt = PT_REGS_PARM3_CORE_SYSCALL(regs);
  }
  emit_data(id, &a, ret);
}

SEC("raw_tp/sys_exit")
int on_exit(struct bpf_raw_tracepoint_args *ctx) {
  struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
#if defined(__TARGET_ARCH_x86)
  long nr = BPF_CORE_READ(regs, orig_ax);
#else
  long nr = BPF_CORE_READ((struct user_pt_regs *)regs, regs[8]);
#endif
  on_sys_exit(nr, ctx->args[1], regs);
  return 0;
}

/* The same through the per-syscall tracepoints (syscalls/sys_exit_read, ...; tracefs), which
 * run only for the syscalls attached: user space attaches these instead of the raw ones when it
 * can. Their records have the syscall number and return value (and the entry ones the
 * arguments); the registers are the task's, saved at entry. */
struct sys_enter_tp {
  __u64 common;
  __s32 nr;
  __u32 pad;
  __u64 args[6];
};
struct sys_exit_tp {
  __u64 common;
  __s32 nr;
  __u32 pad;
  __s64 ret;
};

SEC("tp")
int tp_enter_close(struct sys_enter_tp *ctx) {
  on_close((int)ctx->args[0]);
  return 0;
}

SEC("tp")
int tp_exit(struct sys_exit_tp *ctx) {
  struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
  on_sys_exit(ctx->nr, ctx->ret, regs);
  return 0;
}

/* ---- TLS ---- */

static __always_inline int ssl_enter(void *ssl, void *buf, void *outlen, __u8 dir) {
  __u64 id = bpf_get_current_pid_tgid();
  if (!pid_wanted(id >> 32)) return 0;
  __u32 tid = (__u32)id;
  struct ssl_call c = {.ssl = (__u64)ssl, .buf = (__u64)buf, .outlen = (__u64)outlen, .dir = dir};
  bpf_map_update_elem(&ssl_calls, &tid, &c, BPF_ANY);
  return 0;
}

static __always_inline int ssl_exit(long rc, bool ex) {
  __u64 id = bpf_get_current_pid_tgid();
  __u32 tid = (__u32)id;
  struct ssl_call *cp = bpf_map_lookup_elem(&ssl_calls, &tid);
  if (!cp) return 0;
  struct ssl_call c = *cp;
  bpf_map_delete_elem(&ssl_calls, &tid);
  __u64 total = 0;
  if (ex) {
    if (rc != 1 || !c.outlen) return 0;
    bpf_probe_read_user(&total, sizeof(total), (const void *)c.outlen);
  } else if (rc > 0) {
    total = rc;
  }
  if (!total) return 0;
  __u64 skv = c.sock;
  struct ssl_key sk = {.pid = id >> 32, .ssl = c.ssl};
  if (skv) {
    bpf_map_update_elem(&ssl_sock, &sk, &skv, BPF_ANY);
  } else {
    __u64 *b = bpf_map_lookup_elem(&ssl_sock, &sk);
    if (!b) b = bpf_map_lookup_elem(&last_read, &tid);
    if (!b) return 0;
    skv = *b;
    bpf_map_update_elem(&ssl_sock, &sk, &skv, BPF_ANY);
  }
  /* The socket's own bytes are TLS records from now on; HTTP/2 framing follows the plaintext. */
  struct sonde_http_conn *cn = bpf_map_lookup_elem(&conns, &skv);
  if (!cn) {
    struct sonde_http_conn nc = {.verdict = SONDE_HTTP_VERDICT_SKIP};
    bpf_map_update_elem(&conns, &skv, &nc, BPF_ANY);
    cn = bpf_map_lookup_elem(&conns, &skv);
    if (!cn) return 0;
  }
  cn->verdict = SONDE_HTTP_VERDICT_SKIP;
  if (!cn->tls) {
    cn->tls = 1;
    cn->seen = 0;
    __builtin_memset(cn->h2, 0, sizeof(cn->h2));
  }
  struct scratch *s =
      start_rec(SONDE_HTTP_REC_DATA, id, -1, (struct sock *)skv, c.dir, total, false, cn);
  if (!s) return 0;
  s->h.role = cn->role;
  s->h.flags = SONDE_HTTP_F_TLS;
  struct args a = {.buf = c.buf, .kind = K_BUF, .dir = c.dir};
  capture(s, cn, &a, total, false);
  return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_enter, void *ssl, void *buf, int num) {
  return ssl_enter(ssl, buf, NULL, 0);
}
SEC("uretprobe")
int BPF_KRETPROBE(ssl_read_exit, int rc) {
  return ssl_exit(rc, false);
}
SEC("uprobe")
int BPF_KPROBE(ssl_write_enter, void *ssl, void *buf, int num) {
  return ssl_enter(ssl, buf, NULL, 1);
}
SEC("uretprobe")
int BPF_KRETPROBE(ssl_write_exit, int rc) {
  return ssl_exit(rc, false);
}
SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_enter, void *ssl, void *buf, __u64 num, void *readbytes) {
  return ssl_enter(ssl, buf, readbytes, 0);
}
SEC("uretprobe")
int BPF_KRETPROBE(ssl_read_ex_exit, int rc) {
  return ssl_exit(rc, true);
}
SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_enter, void *ssl, void *buf, __u64 num, void *written) {
  return ssl_enter(ssl, buf, written, 1);
}
SEC("uretprobe")
int BPF_KRETPROBE(ssl_write_ex_exit, int rc) {
  return ssl_exit(rc, true);
}

/* ---- threads ---- */

SEC("raw_tp/sched_process_fork")
int on_fork(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *parent = (struct task_struct *)ctx->args[0];
  struct task_struct *child = (struct task_struct *)ctx->args[1];
  __u32 ppid = BPF_CORE_READ(parent, tgid);
  if (!bpf_map_lookup_elem(&active, &ppid)) return 0;
  struct sonde_http_fork *f = bpf_ringbuf_reserve(&events, sizeof(*f), 0);
  if (!f) {
    count(SONDE_HTTP_CNT_LOST, 1);
    return 0;
  }
  f->type = SONDE_HTTP_REC_FORK;
  f->parent_pid = ppid;
  f->parent_tid = BPF_CORE_READ(parent, pid);
  f->child_pid = BPF_CORE_READ(child, tgid);
  f->child_tid = BPF_CORE_READ(child, pid);
  f->pad = 0;
  bpf_ringbuf_submit(f, BPF_RB_NO_WAKEUP);
  return 0;
}

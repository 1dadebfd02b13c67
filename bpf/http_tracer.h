/* Shared between bpf/http_tracer.bpf.c and receivers/ebpf_http: the records the HTTP tracer's BPF
 * programs put in its ring buffer, the values of the maps user space writes, and the tunables.
 * Fixed-width types only; every record starts with a __u32 type, and sizes are asserted so a
 * change on one side cannot silently misread the other.
 */
#ifndef SONDE_BPF_HTTP_TRACER_H
#define SONDE_BPF_HTTP_TRACER_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* Bytes of one transfer the BPF side can copy (capture_bytes is at most this). */
#define SONDE_HTTP_CAP_MAX 4096
/* iovecs of one readv/writev/recvmsg/sendmsg copied into the capture, in order. */
#define SONDE_HTTP_IOV_MAX 64

enum sonde_http_rec_type {
  SONDE_HTTP_REC_DATA = 1,  /* struct sonde_http_data (+ captured bytes) */
  SONDE_HTTP_REC_CLOSE = 2, /* struct sonde_http_data without bytes: the fd was closed */
  SONDE_HTTP_REC_FORK = 3,  /* struct sonde_http_fork: a traced process made a thread/process */
};

/* sonde_http_data.role: how the connection was opened, as seen by the tracer. */
#define SONDE_HTTP_ROLE_UNKNOWN 0 /* opened before the tracer started */
#define SONDE_HTTP_ROLE_SERVER 1  /* accept()ed by this process */
#define SONDE_HTTP_ROLE_CLIENT 2  /* connect()ed by this process */

/* sonde_http_data.flags */
#define SONDE_HTTP_F_TLS 0x1u /* plaintext of SSL_read/SSL_write, not the socket's bytes */

struct sonde_http_data {
  __u32 type; /* SONDE_HTTP_REC_DATA or SONDE_HTTP_REC_CLOSE */
  __u32 pid;  /* thread-group id */
  __u32 tid;
  __s32 fd;
  __u64 ktime_ns;     /* bpf_ktime_get_ns at the syscall's (or SSL call's) return */
  __u64 sock;         /* struct sock address: the connection while it is open */
  __u64 total;        /* bytes transferred by the call (the captured ones are a prefix) */
  __u32 captured;     /* bytes following this header */
  __u8 dir;           /* 0: the process read them, 1: it wrote them (enum hx_dir) */
  __u8 role;          /* SONDE_HTTP_ROLE_* */
  __u8 flags;         /* SONDE_HTTP_F_* */
  __u8 family;        /* AF_INET or AF_INET6 */
  __u16 lport, rport; /* host byte order */
  __u16 pad[2];
  __u8 laddr[16], raddr[16]; /* network byte order; IPv4 in the first 4 bytes */
  char comm[16];             /* thread name, in a process's first record only ("" otherwise) */
};
_Static_assert(sizeof(struct sonde_http_data) == 104, "struct sonde_http_data layout");

struct sonde_http_fork {
  __u32 type; /* SONDE_HTTP_REC_FORK */
  __u32 parent_pid, parent_tid;
  __u32 child_pid, child_tid;
  __u32 pad;
};
_Static_assert(sizeof(struct sonde_http_fork) == 24, "struct sonde_http_fork layout");

/* Values of the `conns` map's verdict, written by user space. */
#define SONDE_HTTP_VERDICT_UNKNOWN 0
#define SONDE_HTTP_VERDICT_HTTP 1
#define SONDE_HTTP_VERDICT_SKIP 2 /* not HTTP, or TLS: the socket's own bytes are not sent */

/* HTTP/2 framing of one direction of a connection, followed by BPF so that it copies frame
 * headers and every payload but DATA's: large DATA reads and writes then leave holes only inside
 * DATA payloads, which the decoder skips by frame length. */
struct sonde_http_h2dir {
  __u32 keep; /* bytes of the current frame's payload still to copy */
  __u32 skip; /* then bytes still to skip (DATA) */
  __u32 flen; /* length field of the frame header being read */
  __u8 hn;    /* bytes of that header read (0-8) */
  __u8 type;  /* its type, flags */
  __u8 flags;
  __u8 on; /* 1: this direction is framed HTTP/2 (preface or SETTINGS seen first) */
};

/* The `conns` map: struct sock address -> this. User space writes only the verdict (read,
 * modify, write); BPF caches the connection's addresses so later records skip reading them. */
struct sonde_http_conn {
  __u8 role;    /* SONDE_HTTP_ROLE_* */
  __u8 verdict; /* SONDE_HTTP_VERDICT_* */
  __u8 cached;  /* 1: the fields below are filled (and passed the port filter) */
  __u8 family;
  __u16 lport, rport;
  __u8 laddr[16], raddr[16];
  __u8 seen; /* bit dir: bytes went that way (the socket's, or the plaintext once tls is set) */
  __u8 tls;  /* 1: bound to an SSL object; h2 follows its plaintext */
  __u8 pad[6];
  struct sonde_http_h2dir h2[2]; /* by dir */
};
_Static_assert(sizeof(struct sonde_http_conn) == 80, "struct sonde_http_conn layout");

/* Values of the `pid_filter` map. */
#define SONDE_HTTP_PID_EXCLUDE 1
#define SONDE_HTTP_PID_INCLUDE 2

/* Read-only configuration, set before load. */
struct sonde_http_config {
  __u32 capture;      /* bytes copied per call, <= SONDE_HTTP_CAP_MAX */
  __u32 include_only; /* 1: only pids marked INCLUDE in pid_filter */
  __u32 port_filter;  /* 1: only connections with a local or remote port set in `ports` */
  __u32 wakeup_bytes; /* wake user space each time this much more is waiting (a power of 2) */
};
_Static_assert(sizeof(struct sonde_http_config) == 16, "struct sonde_http_config layout");

/* `counters` (per-CPU array) indices. */
#define SONDE_HTTP_CNT_LOST 0  /* records dropped: ring buffer full */
#define SONDE_HTTP_CNT_BYTES 1 /* bytes of the records sent (tests/bpf/bench_http.sh reads it) */
#define SONDE_HTTP_CNT_N 2

#define SONDE_HTTP_RINGBUF_BYTES (8u << 20)
/* User space drains the ring every SONDE_HTTP_DRAIN_MS, and is woken each time another 1/32 of
 * it fills (256 KiB: ~700 records of a small request or response). The ring's pages count twice in
 * RSS (the kernel maps the data area twice). */
#define SONDE_HTTP_DRAIN_MS 100

#endif

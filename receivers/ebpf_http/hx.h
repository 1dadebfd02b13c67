/* The ebpf_http receiver's internal interfaces: what its protocol decoders produce (one
 * hx_exchange per request/response) and the modules that turn exchanges into routes and RED
 * metrics. The BPF side and the event loop (ebpf_http.c, http1.c) feed bytes; h2.c decodes
 * HTTP/2 and gRPC; routes.c folds paths into routes; red.c aggregates the metrics. Internal to
 * this stage: nothing here is SDK. */
#ifndef SONDE_HX_H
#define SONDE_HX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/sonde.h"

enum hx_proto { HX_HTTP1 = 1, HX_HTTP2 = 2, HX_GRPC = 3 };
/* Direction of bytes as seen by the traced process. */
enum hx_dir { HX_INGRESS = 0 /* it read them */, HX_EGRESS = 1 /* it wrote them */ };

/* One finished request/response exchange seen from one process. Strings are NUL-terminated, may be
 * NULL where noted, and are valid only during the callback. */
typedef struct hx_exchange {
  enum hx_proto proto;
  bool server;               /* the process answered (SERVER span) or asked (CLIENT span) */
  bool reset;                /* connection or stream ended before the response completed */
  uint64_t start_ns, end_ns; /* bpf_ktime_get_ns clock: first request byte .. last response byte */
  const char *method;        /* "GET"; gRPC requests are "POST" */
  const char *path;          /* without query: "/users/42", "/pkg.Service/Method" */
  const char *query;         /* NULL when none */
  const char *authority;     /* Host or :authority; NULL when none */
  const char *user_agent;    /* NULL when none */
  const char *traceparent;   /* the request's W3C traceparent header; NULL when none */
  const char *content_type;  /* request content-type; NULL when none */
  int status;                /* HTTP status; 0 when no response came */
  int grpc_status;           /* grpc-status from trailers (or headers); -1 when absent */
  uint64_t req_body_bytes, resp_body_bytes;
  uint32_t stream_id;  /* HTTP/2 stream id; 0 for HTTP/1 */
  int rst_code;        /* the HTTP/2 RST_STREAM error code that ended the stream; -1 when none */
  const char *version; /* the request's protocol version: "1.0", "1.1", "2" */
  bool tls;            /* not set by the decoders: the receiver's (bytes from the SSL uprobes) */
} hx_exchange;

typedef void (*hx_exchange_cb)(void *ud, const hx_exchange *ex);

/* ---- HTTP/2 and gRPC (h2.c): one decoder per connection, both directions ---- */
typedef struct hx_h2 hx_h2;
/* server: the traced process is the server side of this connection (it reads the client preface).
 */
hx_h2 *hx_h2_new(bool server, hx_exchange_cb cb, void *ud);
/* Feeds one read (INGRESS) or write (EGRESS) in order. `n` bytes were captured out of `total`
 * transferred; when total > n the missing bytes directly follow the captured ones (they are skipped
 * by frame length; a HEADERS block that is cut breaks HPACK state and ends decoding). Returns 0, or
 * a negative sonde_err when the bytes are not HTTP/2 or are corrupt; after an error every call
 * returns that error and the caller drops the connection's decoder. */
int hx_h2_feed(hx_h2 *h, enum hx_dir dir, const uint8_t *p, size_t n, size_t total, uint64_t ts_ns);
/* The connection closed at ts_ns: streams still open are reported with reset = true. */
void hx_h2_close(hx_h2 *h, uint64_t ts_ns);
/* Streams not tracked because 1024 were already open on the connection (for self-metrics). */
uint32_t hx_h2_refused(const hx_h2 *h);
void hx_h2_free(hx_h2 *h);
/* Whether the first bytes one side of a new connection sent look like HTTP/2: the client connection
 * preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (or a prefix of it when n is short). */
bool hx_h2_detect(const uint8_t *p, size_t n);

/* ---- Routes (routes.c) ---- */
typedef struct hx_routes hx_routes;
/* patterns: "/users/{id}", "/api/" "*" ... matched in order; per_service_cap bounds the number of
 * distinct routes per service (0: 1000). */
int hx_routes_new(const char *const *patterns, size_t n, size_t per_service_cap, hx_routes **out);
/* Writes the route of `path` to out (len >= 2): the first configured pattern that matches, else
 * the path with ids, numbers, uuids, hex hashes and long random segments folded to "{id}"
 * ("/users/42/orders/9f8e..." -> "/users/{id}/orders/{id}"). When the service already has
 * per_service_cap routes and this one is new, "/" "**" (counted in hx_routes_overflows). Returns
 * out. */
const char *hx_routes_match(hx_routes *r, const char *service, const char *path, char *out,
                            size_t len);
uint64_t hx_routes_overflows(const hx_routes *r);
void hx_routes_free(hx_routes *r);

/* ---- RED metrics (red.c) ---- */
/* The process an exchange belongs to: becomes the metric's resource. */
typedef struct hx_resource {
  uint32_t pid;
  const char *service_name;      /* OTEL_SERVICE_NAME, else executable name */
  const char *service_namespace; /* NULL when none */
  const char *exe_name, *exe_path, *host_name;
  const char *container_id; /* NULL when none */
} hx_resource;

typedef struct hx_red hx_red;
int hx_red_new(hx_red **out);
/* Records one exchange under its route. server_address/port: the server side's host and port
 * (client spans), NULL/0 when unknown. Durations in seconds into the OTel default buckets
 * (0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10); body sizes in
 * bytes. */
void hx_red_record(hx_red *r, const hx_resource *res, const hx_exchange *ex, const char *route,
                   const char *server_address, int server_port);
/* Forgets a process's series (it exited; after its last collect). */
void hx_red_forget(hx_red *r, uint32_t pid);
/* One OTLP metrics batch, cumulative temporality since each series' start, of every series
 * recorded so far; *out = NULL when there is none. */
int hx_red_collect(hx_red *r, uint64_t now_unix_ns, sonde_batch **out);
/* Self-metrics: live series, exchanges that went into an overflow series, exchanges dropped
 * (too many processes, out of memory). Any pointer may be NULL. */
void hx_red_stats(const hx_red *r, size_t *series, uint64_t *overflowed, uint64_t *dropped);
void hx_red_free(hx_red *r);

/* ---- /proc/PID/net/tcp{,6} (proc_tcp.c) ---- */

/* Whether the table text (len bytes, as the kernel writes /proc/net/tcp: a header line, then
 * "sl: local_hex_addr:PORT remote:port st ..." lines) has a socket in LISTEN on local port. Lines
 * that do not parse are skipped. */
bool hx_tcp_listens(const char *text, size_t len, uint16_t port);

#endif

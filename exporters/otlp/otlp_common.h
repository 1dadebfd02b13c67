/* Shared parts of the otlp_grpc and otlp_http exporters: configuration, endpoint parsing, payload
 * encoding and compression, TLS contexts, response decoding, and the connection transport. */
#ifndef SONDE_OTLP_COMMON_H
#define SONDE_OTLP_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "sonde/sonde.h"

/* ---- configuration ------------------------------------------------------------------------- */

typedef struct otlp_tls_config {
  bool insecure;
  char *ca_file;
  char *cert_file;
  char *key_file;
  bool insecure_skip_verify;
  char *server_name_override;
} otlp_tls_config;

enum { OTLP_COMP_GZIP = 0, OTLP_COMP_ZSTD = 1, OTLP_COMP_NONE = 2 };
enum { OTLP_ENC_PROTO = 0, OTLP_ENC_JSON = 1 };

typedef struct otlp_config {
  char *endpoint;
  otlp_tls_config tls;
  sonde_strmap headers;
  int compression;
  struct {
    int64_t level;
  } compression_params;
  int64_t request_timeout_ns;
  /* otlp_http only */
  char *traces_endpoint, *metrics_endpoint, *logs_endpoint, *profiles_endpoint;
  int encoding;
  int64_t max_conns;
  /* Not options: set by exporters that reuse the client (pyroscope, parca). NULL: the OTLP
   * exporter's User-Agent. */
  const char *user_agent;
} otlp_config;

/* The tls: table (binds an otlp_tls_config), for exporters that embed one. */
extern const sonde_option otlp_tls_options[];
extern const sonde_option otlp_grpc_options[];
extern const sonde_option otlp_http_options[];
/* A header (gRPC metadata) name must be an HTTP token and its value one line; these say which
 * one is not, for the exporters' validate. */
int otlp_header_validate(const char *name, const char *value, char *err, size_t errlen);
int otlp_headers_validate(const sonde_strmap *h, char *err, size_t errlen);
int otlp_grpc_validate(const void *config, char *err, size_t errlen);
int otlp_http_validate(const void *config, char *err, size_t errlen);

/* ---- endpoints ------------------------------------------------------------------------------ */

typedef struct otlp_url {
  bool tls;
  char host[256]; /* without IPv6 brackets */
  char port[8];
  char path[1024]; /* "" or starting with '/' */
  char authority[300];
} otlp_url;

/* gRPC: "host:port", optionally with http:// (cleartext) or https:// (TLS); without a scheme, TLS
 * unless tls.insecure, as otelcol's configgrpc does. */
int otlp_parse_grpc_endpoint(const char *ep, bool insecure, otlp_url *u, char *err, size_t errlen);
/* HTTP: a URL with scheme http or https, optional port and path. */
int otlp_parse_http_url(const char *url, otlp_url *u, char *err, size_t errlen);

/* ---- payloads ------------------------------------------------------------------------------- */

/* Compresses in into out (replacing its contents) at level (0: the codec's default). Thread-safe;
 * for work callbacks. */
int otlp_compress(int comp, int level, const uint8_t *in, size_t len, sonde_buf *out);
/* Decompresses a small response body ("gzip" / "zstd"), at most max bytes. */
int otlp_decompress(const char *enc, const uint8_t *in, size_t len, size_t max, sonde_buf *out);

/* Reads an ExportXServiceResponse (protobuf): partial_success.rejected_* and error_message. */
void otlp_decode_partial_success(const uint8_t *p, size_t n, int64_t *rejected, char *msg,
                                 size_t msglen);
/* The same from an OTLP-JSON response body. */
void otlp_json_partial_success(const char *p, size_t n, int64_t *rejected, char *msg,
                               size_t msglen);
/* google.rpc.Status (protobuf): message, and the retry delay of a RetryInfo detail (-1: none). */
void otlp_decode_rpc_status(const uint8_t *p, size_t n, char *msg, size_t msglen,
                            int64_t *retry_delay_ns);

/* ---- TLS ------------------------------------------------------------------------------------- */

/* A client context from the tls options; alpn is "h2" or "http/1.1". */
int otlp_tls_ctx(const otlp_tls_config *t, const char *alpn, SSL_CTX **out, char *err,
                 size_t errlen);

/* ---- transport: TCP (+TLS) connection on the loop -------------------------------------------- */

typedef struct otlp_conn otlp_conn;

typedef struct otlp_conn_cbs {
  /* TCP connected and, with TLS, the handshake done. */
  void (*connected)(void *arg, otlp_conn *c);
  /* Plaintext bytes from the peer (borrowed). */
  void (*data)(void *arg, otlp_conn *c, const uint8_t *p, size_t n);
  /* The connection failed or the peer closed it; no callback follows. why is borrowed. */
  void (*closed)(void *arg, otlp_conn *c, const char *why);
  /* Optional. Once connected, the read side ended: the peer closed the stream (clean: EOF or TLS
   * close_notify) or reading failed. Called instead of closed, so an owner can end a response
   * delimited by the connection's end; no callback follows. */
  void (*ended)(void *arg, otlp_conn *c, bool clean, const char *why);
  /* Optional. The connection's memory is freed and live decremented: arg may go now. */
  void (*freed)(void *arg);
} otlp_conn_cbs;

typedef struct otlp_conn_target {
  const char *host, *port;
  SSL_CTX *tls;    /* NULL: cleartext; borrowed, must outlive the connection */
  const char *sni; /* server name to send and verify; borrowed */
  bool verify;
  int keepalive_s; /* > 0: TCP keepalive probes after this many idle seconds */
} otlp_conn_target;

/* Starts resolving (uv_getaddrinfo) and connecting. live is incremented now and decremented when
 * the connection's memory is freed (so an owner can wait for every connection at shutdown). */
int otlp_conn_open(uv_loop_t *loop, const otlp_conn_target *t, const otlp_conn_cbs *cbs, void *arg,
                   int *live, otlp_conn **out);
/* Queues plaintext bytes (copied); otlp_conn_flush sends what is queued. */
int otlp_conn_write(otlp_conn *c, const uint8_t *p, size_t n);
int otlp_conn_flush(otlp_conn *c);
/* Bytes handed to the kernel but not yet written. */
size_t otlp_conn_pending(const otlp_conn *c);
/* The negotiated ALPN protocol ("" if none). */
const char *otlp_conn_alpn(const otlp_conn *c);
/* Closes; no callback is called after this. Frees once libuv is done with the handles. */
void otlp_conn_close(otlp_conn *c);

/* ---- calls of other APIs over the same clients ------------------------------------------------
 * The otlp_grpc and otlp_http instances (otlp_exporters.h) also carry requests that are not OTLP
 * exports, for the pyroscope and parca exporters: same connections, deadlines, and the same
 * classification of the outcome into 0 / SONDE_ERETRY / SONDE_EPERMANENT (otelcol's rules for
 * gRPC codes and HTTP statuses). */

typedef struct otlp_call {
  const char *path;         /* path (and query) of the request; copied */
  const char *content_type; /* HTTP only; NULL: application/octet-stream */
  /* Extra headers of this request (copied), after the configured ones. */
  const char *const *header_names, *const *header_values;
  size_t n_headers;
  sonde_buf body; /* the request body (gRPC: the message, unframed); taken, also on error */
} otlp_call;

/* Queues a call on the loop; cb(arg, status, retry_after_ns) follows exactly once unless this
 * returns non-zero. The endpoint is the instance's profiles URL (otlp_http) or its endpoint
 * (otlp_grpc); the call is sent uncompressed. */
int otlp_http_call(void *inst, otlp_call *c, sonde_send_cb cb, void *arg);
int otlp_grpc_call(void *inst, otlp_call *c, sonde_send_cb cb, void *arg);

/* ---- metrics -------------------------------------------------------------------------------- */

typedef struct otlp_metrics {
  sonde_metric *rejected[4]; /* partial_success rejected items, by signal index */
} otlp_metrics;
int otlp_metrics_init(const sonde_host *h, uint32_t signals, otlp_metrics *m);

#endif

/* The `otlp` receiver's internals, split so that the protocol logic runs without sockets (the fuzz
 * targets in tests/fuzz drive otlp_h2 and otlp_http_handle directly with a fake consume). */
#ifndef SONDE_OTLP_INTERNAL_H
#define SONDE_OTLP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/sonde.h"

/* ---- codec: compression, status mapping, response bodies ------------------------------------ */

enum { OTLP_ENC_IDENTITY = 0, OTLP_ENC_GZIP = 1, OTLP_ENC_ZSTD = 2 };

/* Parses a Content-Encoding / grpc-encoding value (NULL or "" is identity); -1 if unsupported. */
int otlp_encoding_parse(const char *s);

/* Decompresses in into out (emptied first), never growing it beyond max bytes: SONDE_ETOOBIG
 * when the content is larger (a zip bomb stops there), SONDE_EPROTO on corrupt data, SONDE_ENOMEM.
 * Identity copies. out is owned by the caller, also on error. */
int otlp_decompress(int enc, const uint8_t *in, size_t len, size_t max, sonde_buf *out);

/* gRPC status codes used here. */
enum {
  GRPC_OK = 0,
  GRPC_UNKNOWN = 2,
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  GRPC_UNAVAILABLE = 14,
};

/* The gRPC code for what host->api->consume returned (0 -> OK). */
int otlp_consume_grpc_code(int rc);
/* otelcol's GetHTTPStatusCodeFromStatus. */
int otlp_grpc_to_http(int grpc_code);

/* Signal of an OTLP/gRPC method path ("/opentelemetry.proto.collector.trace.v1.TraceService/
 * Export"); 0 when unknown. */
sonde_signal otlp_grpc_method_signal(const char *path, size_t len);

/* Appends a google.rpc.Status {code, message} as protobuf or as JSON. */
int otlp_status_encode(int code, const char *msg, bool json, sonde_buf *out);

/* The fake-able pipeline: what a decoded request is handed to. Returns what host consume does. */
typedef int (*otlp_consume_fn)(void *arg, sonde_batch *b);

/* Decodes body (already decompressed) as sig's export request (protobuf, or OTLP-JSON when json)
 * and consumes it. Returns the gRPC code and writes a message for non-OK codes. */
int otlp_decode_consume(sonde_signal sig, bool json, const uint8_t *body, size_t len,
                        otlp_consume_fn consume, void *arg, char *msg, size_t msglen);

/* ---- HTTP/2 + gRPC session without a socket ------------------------------------------------- */

typedef struct otlp_h2 otlp_h2;

typedef struct otlp_h2_limits {
  size_t max_msg;       /* max_recv_msg_size_mib in bytes (decompressed and on the wire) */
  uint32_t max_streams; /* max_concurrent_streams */
  uint32_t signals;     /* sonde_signal mask of the services offered; 0: all */
} otlp_h2_limits;

/* A server session; *out is taken by the caller (otlp_h2_free). */
int otlp_h2_new(const otlp_h2_limits *lim, otlp_consume_fn consume, void *arg, otlp_h2 **out);
void otlp_h2_free(otlp_h2 *s);
/* Feeds received bytes (not kept). Negative: the connection must be closed (after flushing what
 * otlp_h2_pending gives, e.g. a GOAWAY). */
int otlp_h2_recv(otlp_h2 *s, const uint8_t *p, size_t n);
/* Appends every frame waiting to be sent to out. */
int otlp_h2_pending(otlp_h2 *s, sonde_buf *out);
/* Neither side wants the connection any more (GOAWAY done, or a fatal error). */
bool otlp_h2_finished(const otlp_h2 *s);
/* Streams whose request has not been read completely. */
size_t otlp_h2_open_requests(const otlp_h2 *s);
/* Sends a keepalive PING; returns false when the previous one is still unanswered. */
bool otlp_h2_ping(otlp_h2 *s);
/* Starts a graceful close (GOAWAY). */
void otlp_h2_goaway(otlp_h2 *s);

/* ---- OTLP/HTTP request handling without a socket -------------------------------------------- */

typedef struct otlp_http_paths {
  const char *traces, *metrics, *logs, *profiles;
} otlp_http_paths;

typedef struct otlp_http_reply {
  int status;
  const char *content_type; /* static */
  const char *headers;      /* static "Name: v\r\n..." or NULL */
  sonde_buf body;           /* owned; freed by the caller */
} otlp_http_reply;

/* Handles one request. ctype/cenc may be NULL. Never fails: out of memory becomes a 500. */
void otlp_http_handle(const otlp_http_paths *paths, uint64_t max_body, const char *method,
                      const char *path, const char *ctype, const char *cenc, const uint8_t *body,
                      size_t len, otlp_consume_fn consume, void *arg, otlp_http_reply *out);

#endif

/* The `otlp` receiver's gRPC listener (libuv + optional TLS around otlp_h2). */
#ifndef SONDE_OTLP_GRPC_H
#define SONDE_OTLP_GRPC_H

#include "otlp_internal.h"

typedef struct otlp_grpc_opts {
  const char *endpoint; /* borrowed: kept until otlp_grpc_close */
  size_t max_msg;
  uint32_t max_streams;
  uint32_t signals;                                  /* services offered (sonde_signal mask) */
  const char *cert_file, *key_file, *client_ca_file; /* NULL: cleartext / no client auth */
  uint64_t keepalive_time_ms, keepalive_timeout_ms, read_timeout_ms, max_idle_ms; /* 0: off */
} otlp_grpc_opts;

typedef struct otlp_grpc_server otlp_grpc_server;

/* Listens at once; *out is taken by the caller (otlp_grpc_close). */
int otlp_grpc_listen(const sonde_host *h, const otlp_grpc_opts *opts, otlp_consume_fn consume,
                     void *arg, otlp_grpc_server **out, char *err, size_t errlen);
/* Closes the listener and every connection; done(arg) once all handles are closed. */
void otlp_grpc_close(otlp_grpc_server *srv, void (*done)(void *arg), void *arg);

#endif

/* The two exporters' lifecycle functions, tied to component types in otlp_plugin.c. */
#ifndef SONDE_OTLP_EXPORTERS_H
#define SONDE_OTLP_EXPORTERS_H

#include "sonde/sonde.h"

#define SONDE_OTLP_VERSION "0.1.0"

int otlp_grpc_create(const sonde_host *h, const void *config, uint32_t signals, void **inst);
int otlp_grpc_start(void *inst);
int otlp_grpc_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg);
void otlp_grpc_shutdown(void *inst, void (*done)(void *), void *arg);
void otlp_grpc_destroy(void *inst);

int otlp_http_create(const sonde_host *h, const void *config, uint32_t signals, void **inst);
int otlp_http_start(void *inst);
int otlp_http_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg);
void otlp_http_shutdown(void *inst, void (*done)(void *), void *arg);
void otlp_http_destroy(void *inst);

#endif

/* sonde public SDK: the data model.
 *
 * A batch holds one signal as the OTLP export request message (protobuf-c structures generated from
 * proto/), allocated in an arena owned by the batch. Batches are reference counted and shared
 * read-only among consumers; a stage that mutates data declares SONDE_COMP_MUTATES and the core
 * hands it a private copy when the batch is shared. A batch is only touched on the loop thread,
 * except that a work callback may read a batch it holds a reference to.
 */
#ifndef SONDE_PDATA_H
#define SONDE_PDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "opentelemetry/proto/collector/logs/v1/logs_service.pb-c.h"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "opentelemetry/proto/collector/profiles/v1development/profiles_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sonde_signal {
  SONDE_SIGNAL_TRACES = 1u << 0,
  SONDE_SIGNAL_METRICS = 1u << 1,
  SONDE_SIGNAL_LOGS = 1u << 2,
  SONDE_SIGNAL_PROFILES = 1u << 3,
} sonde_signal;
#define SONDE_SIGNAL_ALL 0xfu

/* Short names used in configs: "traces", "metrics", "logs", "profiles"; "unknown" otherwise. */
const char *sonde_signal_name(sonde_signal sig);
/* 0 traces, 1 metrics, 2 logs, 3 profiles (for per-signal arrays); -1 for anything else. */
int sonde_signal_index(sonde_signal sig);
/* Parses a signal name; returns 0 if unknown. */
sonde_signal sonde_signal_parse(const char *name, size_t len);
/* What one item is for this signal, as otelcol's metric names say it:
 * "spans", "metric_points", "log_records", "profiles" (profiles count samples). */
const char *sonde_signal_item_name(sonde_signal sig);

typedef struct sonde_batch sonde_batch;

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest sonde_traces;
typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest sonde_metrics;
typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest sonde_logs;
typedef Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest
    sonde_profiles;

/* New empty batch with an initialised, empty request message for sig. *out is taken by the caller
 * with one reference. */
int sonde_batch_new(sonde_signal sig, sonde_batch **out);
/* Decodes a protobuf export request of signal sig. The batch owns a copy of nothing: the decoded
 * message lives in the batch arena and buf is not kept after return. SONDE_EPROTO on bad bytes. */
int sonde_batch_decode(sonde_signal sig, const uint8_t *buf, size_t len, sonde_batch **out);
/* A deep, private copy (new arena); *out has one reference. */
int sonde_batch_copy(const sonde_batch *b, sonde_batch **out);

sonde_batch *sonde_batch_ref(sonde_batch *b);
/* Drops a reference; the last one frees the arena and every batch held by sonde_batch_hold. */
void sonde_batch_unref(sonde_batch *b);
unsigned sonde_batch_refcount(const sonde_batch *b);

sonde_signal sonde_batch_signal(const sonde_batch *b);
/* The request message; its concrete type follows the signal. Typed accessors return NULL when the
 * signal differs. */
ProtobufCMessage *sonde_batch_msg(const sonde_batch *b);
sonde_traces *sonde_batch_traces(const sonde_batch *b);
sonde_metrics *sonde_batch_metrics(const sonde_batch *b);
sonde_logs *sonde_batch_logs(const sonde_batch *b);
sonde_profiles *sonde_batch_profiles(const sonde_batch *b);

/* Arena allocation, zeroed, 16-byte aligned, freed with the batch. NULL when out of memory. */
void *sonde_batch_alloc(sonde_batch *b, size_t size);
char *sonde_batch_strdup(sonde_batch *b, const char *s);
void *sonde_batch_memdup(sonde_batch *b, const void *p, size_t len);
/* A protobuf-c allocator that allocates from the arena (free is a no-op). Borrowed. */
ProtobufCAllocator *sonde_batch_allocator(sonde_batch *b);
/* Makes b keep a reference to other until b is freed, so b's message may point into other's arena
 * (zero-copy merge and split). */
int sonde_batch_hold(sonde_batch *b, sonde_batch *other);
/* True when nobody else can see b's data: one reference, and every batch it holds (and points
 * into) exclusive too. Only then may b be changed in place. */
bool sonde_batch_exclusive(const sonde_batch *b);
/* Bytes allocated in the arena (and held batches' arenas are not counted). */
size_t sonde_batch_arena_bytes(const sonde_batch *b);

/* Attribute builders: a KeyValue in b's arena, key (and string value) copied. NULL when out of
 * memory. */
typedef Opentelemetry__Proto__Common__V1__KeyValue sonde_kv;
sonde_kv *sonde_batch_kv_str(sonde_batch *b, const char *key, const char *value);
sonde_kv *sonde_batch_kv_int(sonde_batch *b, const char *key, int64_t value);
sonde_kv *sonde_batch_kv_bool(sonde_batch *b, const char *key, bool value);
sonde_kv *sonde_batch_kv_double(sonde_batch *b, const char *key, double value);

/* Items in the batch: spans, metric data points, log records, profile samples. Recomputed. */
size_t sonde_batch_items(const sonde_batch *b);

/* Protobuf encoding of the request message. */
size_t sonde_batch_packed_size(const sonde_batch *b);
size_t sonde_batch_pack(const sonde_batch *b, uint8_t *out);

/* A growable byte buffer, used by encoders. */
typedef struct sonde_buf {
  uint8_t *data;
  size_t len, cap;
} sonde_buf;
int sonde_buf_reserve(sonde_buf *buf, size_t extra);
int sonde_buf_append(sonde_buf *buf, const void *p, size_t len);
int sonde_buf_printf(sonde_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sonde_buf_free(sonde_buf *buf);

/* OTLP-JSON encoding of the request (the OTLP/HTTP JSON rules: lowerCamelCase keys, trace and span
 * ids as hex, enums as integers, 64-bit integers as decimal strings, bytes as base64), appended to
 * out without a trailing newline. */
int sonde_batch_to_json(const sonde_batch *b, sonde_buf *out);
/* OTLP-JSON decoding (accepts what sonde_batch_to_json writes and what OTel SDKs send: camelCase or
 * snake_case keys, enums as int or name, 64-bit ints as string or number). SONDE_EPROTO with a
 * message in err on bad input. */
int sonde_batch_from_json(sonde_signal sig, const char *json, size_t len, sonde_batch **out,
                          char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif

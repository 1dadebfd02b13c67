/* The decisions of otelcol's probabilisticsamplerprocessor (hash_seed, proportional and equalizing
 * modes, OTEP 235 thresholds in the W3C tracestate) without batches, so unit tests drive it. */
#ifndef SONDE_PSAMPLER_LOGIC_H
#define SONDE_PSAMPLER_LOGIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS_MAX_ADJUSTED_COUNT (1ull << 56) /* thresholds and randomness are 56-bit */
#define PS_ALWAYS_SAMPLE 0ull
#define PS_NEVER_SAMPLE PS_MAX_ADJUSTED_COUNT
#define PS_ALL_PROBABILITIES                                                                       \
  (PS_MAX_ADJUSTED_COUNT - 1) /* randomness sampled at every threshold                             \
                               */

typedef enum ps_mode { PS_MODE_HASH_SEED = 0, PS_MODE_PROPORTIONAL, PS_MODE_EQUALIZING } ps_mode;

/* FNV-1a 32 over the seed (4 bytes little-endian) then b: otelcol's computeHash since v0.70. */
uint32_t ps_fnv1a32(uint32_t seed, const uint8_t *b, size_t n);
/* murmur3 x86 32-bit with seed: otelcol's hash before v0.70 (mode hash_seed, hash: murmur3). */
uint32_t ps_murmur3_32(uint32_t seed, const uint8_t *b, size_t n);
/* 56-bit randomness made from a 32-bit hash as otelcol's randomnessFromBytes: the top 14 bits are
 * 16383 - (h & 0x3fff), so that threshold <= randomness iff (h & 0x3fff) < scaled rate. */
uint64_t ps_hash_randomness(uint32_t h);

/* sampling.ProbabilityToThresholdWithPrecision; false when p is outside [2^-56, 1]. */
bool ps_prob_to_threshold(double p, int precision, uint64_t *th);
double ps_threshold_prob(uint64_t th);
/* T-value text ("0" for always, "" for never, else up to 14 hex digits without trailing zeros). */
void ps_tvalue(uint64_t th, char out[16]);
bool ps_parse_tvalue(const char *s, size_t n, uint64_t *th);
void ps_rvalue(uint64_t rnd, char out[16]); /* 14 hex digits */
bool ps_parse_rvalue(const char *s, size_t n, uint64_t *rnd);

/* The sampler built from the options (otelcol's makeSampler). */
typedef struct ps_sampler {
  enum { PS_NEVER, PS_HASH, PS_EQUALIZING, PS_PROPORTIONAL } kind;
  uint64_t threshold; /* hash and equalizing */
  double ratio;       /* proportional */
  int precision;
  uint32_t seed;
  bool murmur3; /* legacy hash */
  bool fail_closed;
} ps_sampler;

/* pct is sampling_percentage (float32 in otelcol: the arithmetic is done in float). */
void ps_make(ps_sampler *s, ps_mode mode, float pct, uint32_t seed, int precision, bool fail_closed,
             bool murmur3);

/* Where the sampling state of an item lives: the W3C tracestate of a span, or the
 * sampling.threshold / sampling.randomness attributes of a log record. */
typedef struct ps_item {
  const uint8_t *trace_id; /* 16 bytes or NULL/empty */
  size_t trace_id_len;
  /* Logs in hash_seed mode: bytes of from_attribute, used when the trace id gives nothing. */
  const uint8_t *attr_bytes;
  size_t attr_len;
  bool use_trace_id; /* logs: attribute_source traceID */
  bool is_log;
  const char *tracestate;      /* spans: may be NULL */
  const char *log_th, *log_rv; /* logs: string attributes or NULL */
  /* Priority: spans -1 defer, 0 never, 1 always. Logs: has_prio_th with the threshold. */
  int span_priority;
  bool has_prio_th;
  uint64_t prio_th;
} ps_item;

/* Policy names of otelcol's count_*_sampled metric. */
typedef enum ps_policy {
  PS_POL_MISSING = 0,
  PS_POL_TRACE_ID_HASH,
  PS_POL_TRACE_ID_W3C,
  PS_POL_RANDOMNESS,
  PS_POL_PRIORITY,
  PS_POL_ATTRIBUTE,
  PS_POL_N
} ps_policy;
extern const char *const ps_policy_names[PS_POL_N]; /* PS_POL_ATTRIBUTE: the attribute's name */

typedef struct ps_result {
  bool sampled;
  ps_policy policy;
  const char *error; /* why the decision fell back to fail_closed, or NULL */
  /* Spans: the new tracestate when sampled and it changed (NUL-terminated). */
  bool tracestate_changed;
  char tracestate[1100];
  /* Logs, when sampled: attribute values to set ("" th: remove sampling.threshold). */
  bool set_rv, set_th, remove_th;
  char rv[16], th[16];
} ps_result;

void ps_decide(const ps_sampler *s, const ps_item *it, ps_result *r);

#endif

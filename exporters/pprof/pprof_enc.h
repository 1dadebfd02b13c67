/* OTLP profiles (v1development dictionary form) -> pprof (perftools.profiles.Profile), one profile
 * per service (or per service and label set) of a batch. Internal to the pprof, pyroscope and parca
 * exporters (static library sonde_pprof_enc). Thread-safe: meant for work callbacks; every result
 * owns its memory.
 *
 * Service: the resource's service.name, else process.executable.name, else "unknown_service";
 * characters other than [A-Za-z0-9._-] become '_'. All profiles of a service go into one pprof:
 * the sample types are the union of their (type, unit) pairs and each sample has a value in its
 * own profile's column (0 elsewhere), so every sample has one value per sample type. A
 * "samples"/"count" profile with a "cpu"/"nanoseconds" period also gets a "cpu"/"nanoseconds"
 * column (count x period), as Go's CPU profiles have.
 *
 * Ids: mapping, location and function ids are their position in the written table + 1 (what
 * Parca's normalizer requires; go tool pprof accepts any ids); only what samples reference is
 * written; string 0 is "". Location.address is turned back into a runtime address
 * (memory_start + address - file_offset) for mappings with a range, as pprof expects addresses
 * within [memory_start, memory_limit). Labels come from sample attributes (string values as str,
 * integers as num with their unit). */
#ifndef SONDE_PPROF_ENC_H
#define SONDE_PPROF_ENC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/sonde.h"

typedef struct pprof_enc_svc {
  char service[128]; /* sanitized as above */
  /* The first resource of the group (borrowed from the batch: valid while it is referenced). */
  const Opentelemetry__Proto__Resource__V1__Resource *resource;
  int64_t time_ns, duration_ns; /* the span covered by its profiles */
  int64_t period;               /* of the first profile with a period type, else 0 */
  char period_type[32], period_unit[32];
  char sample_type[32], sample_unit[32]; /* of the first profile */
  size_t n_samples;
  sonde_buf pprof; /* packed Profile, gzipped when asked */
} pprof_enc_svc;

/* Encodes every service of req with at least one sample; with by_labels, every distinct (service,
 * resource labels as pprof_enc_res_labels gives them) pair instead, so that each result is one
 * series of a labelled backend (Pyroscope, Parca) and its resource's labels are true of all its
 * samples. gzip_level 0: plain protobuf, else gzip at that level (1-9). *out is an array of *n
 * results (NULL, 0 when nothing was sampled); free it with pprof_enc_free. Returns 0,
 * SONDE_ENOMEM or SONDE_EIO (gzip). */
int pprof_enc_batch(const sonde_profiles *req, int gzip_level, bool by_labels, pprof_enc_svc **out,
                    size_t *n);
void pprof_enc_free(pprof_enc_svc *v, size_t n);

/* A string resource attribute ("" values count as missing), or NULL. */
const char *pprof_enc_res_attr(const Opentelemetry__Proto__Resource__V1__Resource *r,
                               const char *key);

/* The resource's attributes other than service.name as Prometheus labels: the name sanitized to
 * [a-zA-Z_][a-zA-Z0-9_]* (others become '_'), scalar values as text (longer ones cut). Names that
 * come out as service_name, start with "__" or repeat an earlier one are skipped. Fills at most
 * max, returns how many. */
typedef struct pprof_enc_label {
  char name[128];
  char value[256];
} pprof_enc_label;
size_t pprof_enc_res_labels(const Opentelemetry__Proto__Resource__V1__Resource *r,
                            pprof_enc_label *out, size_t max);

/* A Prometheus label name from any text, as above, into out (len >= 2). */
void pprof_enc_label_name(const char *s, char *out, size_t len);

/* The labels of one series of a labelled backend (Pyroscope, Parca), in this order: __name__
 * (name), service_name (the group's service), the resource's (pprof_enc_res_labels), then the
 * configured ones (extra: names sanitized as above, values cut like the resource's). A configured
 * label whose name is reserved ("__" prefix, service_name) or already there is left out:
 * backends refuse duplicate label names, and the resource's value wins. Fills at most max (>= 2),
 * returns how many. */
size_t pprof_enc_series_labels(const pprof_enc_svc *s, const char *name, const sonde_strmap *extra,
                               pprof_enc_label *out, size_t max);

/* Whether the group is CPU time (a "cpu"/"nanoseconds" period). */
bool pprof_enc_is_cpu(const pprof_enc_svc *s);

/* A backend's profile name: prefix + cpu for CPU time, else prefix + the sample type as a label
 * name (Pyroscope: "", "cpu"; Parca: "parca_agent_", "cpu"). */
void pprof_enc_profile_name(const pprof_enc_svc *s, const char *cpu, const char *prefix, char *out,
                            size_t len);

#endif

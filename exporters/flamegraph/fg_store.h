/* The flamegraph exporter's bounded history (fg_store.c) and the helpers of its HTTP side
 * (fg_util.c). No host calls here, so the fuzz target and the unit test link it alone. */
#ifndef SONDE_FG_STORE_H
#define SONDE_FG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/pdata.h"

typedef struct fg_store fg_store;

typedef struct fg_limits {
  int64_t slot_ns;    /* width of one time slot */
  int64_t history_ns; /* slots ending before now - history_ns are dropped */
  uint64_t max_bytes; /* oldest slots dropped while the history is larger (the newest stays) */
} fg_limits;

int fg_store_new(const fg_limits *lim, fg_store **out);
void fg_store_free(fg_store *s);

/* Adds every sample of a profiles request; now_ns is the wall clock (samples without a time are
 * put there; slots older than the history are dropped). Returns 0 or SONDE_ENOMEM (what was added
 * before stays). *samples gets the number of samples taken. */
int fg_store_add(
    fg_store *s,
    const Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest
        *req,
    int64_t now_ns, uint64_t *samples);
/* Drops what is older than the history or over the byte budget. */
void fg_store_prune(fg_store *s, int64_t now_ns);

uint64_t fg_store_bytes(const fg_store *s);
size_t fg_store_slots(const fg_store *s);
uint64_t fg_store_dropped_slots(const fg_store *s);
/* Samples not kept because their slot alone had reached max_bytes. */
uint64_t fg_store_dropped_samples(const fg_store *s);

typedef struct fg_query {
  int64_t from_ns, to_ns;                    /* slots overlapping [from, to); 0 / 0: everything */
  int64_t from2_ns, to2_ns;                  /* the baseline window of a diff; both 0: no diff */
  const char *service, *process, *container; /* exact match; NULL or "": any */
  /* Synthetic frames above the stacks: 0 none, 1 service, 2 container, 3 process, 4 all three
   * (service > container > process, each node marked with "k":"s"/"c"/"p"). */
  int group;
  int64_t min_share_ppm; /* children with less than this share of the total are merged out */
} fg_query;

/* The merged tree as JSON: {"from":..,"to":..,"unit":..,"total":N[,"base":M],"tree":node}, node =
 * {"n":name,"v":value[,"b":baseline][,"k":kind][,"c":[nodes]]}, children by value, largest first.
 * Names are JSON-escaped (invalid UTF-8 becomes U+FFFD, '<' is \u003c so the text can be inlined
 * in a <script>). */
int fg_store_query_json(fg_store *s, const fg_query *q, sonde_buf *out);
/* The same in two steps, so the merge and the JSON can run on another thread: job_new (on the
 * thread that owns the store) takes the slots of the windows, which nothing changes or frees until
 * fg_job_free (on that thread again); fg_job_run only reads them. */
typedef struct fg_job fg_job;
int fg_store_job_new(fg_store *s, const fg_query *q, fg_job **out);
int fg_job_run(const fg_job *j, sonde_buf *out);
void fg_job_free(fg_job *j);
/* {"slots":[[start_ms,value],...],"services":[...],"containers":[...],"processes":[...],
 *  "slot_ms":N,"unit":..} for the page's pickers. */
int fg_store_labels_json(fg_store *s, int64_t from_ns, int64_t to_ns, sonde_buf *out);

/* ---- fg_util.c ---------------------------------------------------------------------------- */

/* Appends s as a JSON string (quoted). */
int fg_json_str(sonde_buf *b, const char *s, size_t len);
/* The value of key in an application/x-www-form-urlencoded query, percent-decoded into out
 * (NUL-terminated, cut at outlen - 1). Returns true when the key is present. */
bool fg_query_get(const char *query, const char *key, char *out, size_t outlen);
/* Parses a query string into q (strings point into bufs, which must outlive q). Times are
 * milliseconds since the epoch, or negative: relative to now_ns ("from=-300000" = 5 min ago).
 * Returns 0 or SONDE_EINVAL with a reason in err. */
typedef struct fg_qbufs {
  char service[256], process[256], container[256];
} fg_qbufs;
int fg_query_parse(const char *query, int64_t now_ns, fg_query *q, fg_qbufs *bufs, char *err,
                   size_t errlen);

/* Whether a request's Host header names the listener on endpoint ("host:port"): a loopback name
 * or the endpoint's host; any Host when it listens on every address. Keeps pages of other sites
 * from reading profiles through DNS rebinding. */
bool fg_host_allowed(const char *endpoint, const char *host);

#endif

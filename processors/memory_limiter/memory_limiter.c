/* The `memory_limiter` processor: otelcol's memorylimiterprocessor.
 *
 * Every check_interval the process's resident set (/proc/self/statm) is compared with the limits.
 * At or above the soft limit (limit - spike) every incoming batch is refused with SONDE_EREFUSED,
 * which receivers turn into a retryable error; below it, data flows again. Where otelcol forces a
 * Go GC above the hard limit, sonde asks glibc to return free heap pages (malloc_trim) and
 * measures again.
 */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sonde/sonde.h"

#define MIB ((uint64_t)1024 * 1024)

typedef struct ml_config {
  int64_t check_interval_ns;
  int64_t limit_mib;
  int64_t spike_limit_mib;
  int64_t limit_percentage;
  int64_t spike_limit_percentage;
} ml_config;

static const sonde_option ml_options[] = {
    SONDE_OPT("check_interval", SONDE_OPT_DURATION, ml_config, check_interval_ns, "0s",
              "time between measurements of memory usage (must be > 0; 1s is a good start)"),
    SONDE_OPT_RANGE("limit_mib", SONDE_OPT_INT, ml_config, limit_mib, "0", 0, 4294967295.0,
                    "hard limit of the process's resident memory in MiB"),
    SONDE_OPT_RANGE("spike_limit_mib", SONDE_OPT_INT, ml_config, spike_limit_mib, "0", 0,
                    4294967295.0,
                    "expected growth between checks; soft limit = limit - spike "
                    "(0: 20% of the limit)"),
    SONDE_OPT_RANGE("limit_percentage", SONDE_OPT_INT, ml_config, limit_percentage, "0", 0,
                    4294967295.0,
                    "hard limit in % of total memory (cgroup limit or MemTotal); "
                    "limit_mib takes precedence"),
    SONDE_OPT_RANGE("spike_limit_percentage", SONDE_OPT_INT, ml_config, spike_limit_percentage, "0",
                    0, 4294967295.0, "spike limit in % of total memory"),
    SONDE_OPT_END,
};

/* otelcol's checks and messages, in its order. */
static int ml_validate(const void *config, char *err, size_t errlen) {
  const ml_config *c = config;
  const char *msg = NULL;
  if (c->check_interval_ns <= 0)
    msg = "'check_interval' must be greater than zero";
  else if (c->limit_mib == 0 && c->limit_percentage == 0)
    msg = "'limit_mib' or 'limit_percentage' must be greater than zero";
  else if (c->limit_percentage > 100 || c->spike_limit_percentage > 100)
    msg = "'limit_percentage' and 'spike_limit_percentage' must be greater than zero and less "
          "than or equal to hundred";
  else if (c->limit_mib > 0 && c->limit_mib <= c->spike_limit_mib)
    msg = "'spike_limit_mib' must be smaller than 'limit_mib'";
  else if (c->limit_percentage > 0 && c->limit_percentage <= c->spike_limit_percentage)
    msg = "'spike_limit_percentage' must be smaller than 'limit_percentage'";
  if (!msg) return 0;
  snprintf(err, errlen, "%s", msg);
  return SONDE_ECONFIG;
}

typedef struct memlimiter {
  const sonde_host *h;
  const ml_config *cfg;
  uint64_t limit, spike; /* bytes */
  sonde_timer *timer;
  bool refusing;
} memlimiter;

/* ---- measurements ------------------------------------------------------------------------------
 */

static int read_rss(uint64_t *out) {
  FILE *f = fopen("/proc/self/statm", "re");
  if (!f) return SONDE_EIO;
  unsigned long long size, rss;
  int n = fscanf(f, "%llu %llu", &size, &rss);
  fclose(f);
  if (n != 2) return SONDE_EIO;
  *out = (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
  return 0;
}

static uint64_t read_u64_file(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  unsigned long long v = 0;
  int n = fscanf(f, "%llu", &v); /* "max" (no limit) does not parse: 0 */
  fclose(f);
  return n == 1 ? (uint64_t)v : 0;
}

/* The cgroup memory limit of this process, 0 when none (v2 memory.max, else v1). */
static uint64_t cgroup_limit(void) {
  FILE *f = fopen("/proc/self/cgroup", "re");
  char line[4096], path[4200];
  uint64_t lim = 0;
  while (f && fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\n")] = 0;
    if (strncmp(line, "0::", 3) == 0) {
      snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
      lim = read_u64_file(path);
      break;
    }
  }
  if (f) fclose(f);
  if (!lim) lim = read_u64_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  return lim;
}

static int total_memory(uint64_t *out) {
  FILE *f = fopen("/proc/meminfo", "re");
  if (!f) return SONDE_EIO;
  char line[256];
  unsigned long long kib = 0;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) break;
  fclose(f);
  if (!kib) return SONDE_EIO;
  uint64_t total = (uint64_t)kib * 1024, cg = cgroup_limit();
  *out = cg && cg < total ? cg : total;
  return 0;
}

/* ---- the check ------------------------------------------------------------------------------- */

static void check(void *arg) {
  memlimiter *ml = arg;
  const sonde_host *h = ml->h;
  uint64_t rss;
  if (read_rss(&rss)) {
    sonde_log(h, SONDE_LOG_ERROR, "cannot read /proc/self/statm; memory not checked");
    return;
  }
  if (h->api->log_enabled(h, SONDE_LOG_DEBUG))
    sonde_log(h, SONDE_LOG_DEBUG, "Currently used memory. {\"cur_mem_mib\": %" PRIu64 "}",
              rss / MIB);
  if (rss >= ml->limit) {
    sonde_log(h, SONDE_LOG_WARN,
              "Memory usage is above hard limit. Trimming the heap. {\"cur_mem_mib\": %" PRIu64 "}",
              rss / MIB);
    malloc_trim(0);
    if (read_rss(&rss) == 0)
      sonde_log(h, SONDE_LOG_INFO, "Memory usage after trim. {\"cur_mem_mib\": %" PRIu64 "}",
                rss / MIB);
  }
  bool refuse = rss >= ml->limit - ml->spike;
  if (ml->refusing && !refuse)
    sonde_log(h, SONDE_LOG_INFO,
              "Memory usage back within limits. Resuming normal operation. {\"cur_mem_mib\": "
              "%" PRIu64 "}",
              rss / MIB);
  if (!ml->refusing && refuse)
    sonde_log(h, SONDE_LOG_WARN,
              "Memory usage is above soft limit. Refusing data. {\"cur_mem_mib\": %" PRIu64 "}",
              rss / MIB);
  ml->refusing = refuse;
}

static int ml_consume(void *inst, sonde_batch *b) {
  memlimiter *ml = inst;
  if (ml->refusing) return SONDE_EREFUSED;
  return ml->h->api->consume(ml->h, b, NULL);
}

static int ml_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const ml_config *c = config;
  uint64_t limit = (uint64_t)c->limit_mib * MIB, spike = (uint64_t)c->spike_limit_mib * MIB;
  if (!c->limit_mib) {
    uint64_t total;
    if (total_memory(&total)) {
      sonde_log(h, SONDE_LOG_ERROR,
                "failed to get total memory, use fixed memory settings (limit_mib)");
      return SONDE_ECONFIG;
    }
    sonde_log(h, SONDE_LOG_INFO,
              "Using percentage memory limiter {\"total_memory_mib\": %" PRIu64
              ", \"limit_percentage\": %" PRId64 ", \"spike_limit_percentage\": %" PRId64 "}",
              total / MIB, c->limit_percentage, c->spike_limit_percentage);
    limit = (uint64_t)c->limit_percentage * total / 100;
    spike = (uint64_t)c->spike_limit_percentage * total / 100;
  }
  if (!spike) spike = limit / 5;
  memlimiter *ml = calloc(1, sizeof(*ml));
  if (!ml) return SONDE_ENOMEM;
  ml->h = h;
  ml->cfg = c;
  ml->limit = limit;
  ml->spike = spike;
  sonde_log(h, SONDE_LOG_INFO,
            "Memory limiter configured {\"limit_mib\": %" PRIu64 ", \"spike_limit_mib\": %" PRIu64
            ", \"check_interval\": \"%" PRId64 "ms\"}",
            limit / MIB, spike / MIB, c->check_interval_ns / 1000000);
  *inst = ml;
  return 0;
}

static int ml_start(void *inst) {
  memlimiter *ml = inst;
  /* A first measurement right away: otelcol would let data in until the first tick. */
  check(ml);
  int rc = ml->h->api->timer_start(ml->h, ml->cfg->check_interval_ns, ml->cfg->check_interval_ns,
                                   check, ml, &ml->timer);
  if (rc) ml->timer = NULL;
  return rc;
}

static void ml_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  memlimiter *ml = inst;
  if (ml->timer) {
    ml->h->api->timer_stop(ml->timer);
    ml->timer = NULL;
  }
  done(arg);
}

static void ml_destroy(void *inst) {
  memlimiter *ml = inst;
  if (!ml) return;
  if (ml->timer) ml->h->api->timer_stop(ml->timer);
  free(ml);
}

static const sonde_component ml_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_PROCESSOR,
    .type = "memory_limiter",
    .doc = "refuses data while the process's memory is above the soft limit",
    .signals = SONDE_SIGNAL_ALL,
    .options = ml_options,
    .config_size = sizeof(ml_config),
    .validate = ml_validate,
    .create = ml_create,
    .start = ml_start,
    .consume = ml_consume,
    .shutdown = ml_shutdown,
    .destroy = ml_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-memory-limiter", "1.0", &ml_component);

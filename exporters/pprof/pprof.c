/* The `pprof` exporter: writes each batch of profiles as gzipped pprof files
 * (perftools.profiles.Profile, proto/perftools/profiles/profile.proto) that `go tool pprof` reads,
 * one file per service per batch (a batch is one reporting interval of the receiver or of the batch
 * processor): <directory>/<service>-<unix time>.pb.gz, "-<n>" added before ".pb.gz" when the name
 * is taken.
 *
 * The conversion (which profiles share a file, sample type columns, ids, addresses, labels) is
 * pprof_enc.c's, shared with the pyroscope and parca exporters.
 *
 * Rotation (the `rotation` section, as otelcol's file exporter has one, adapted to a directory):
 * after each batch's files are written, the directory's pprof files (names of the form above)
 * beyond max_files, older than max_days (by the time in their name) or past max_megabytes in
 * total are removed, oldest first; the newest file always stays.
 *
 * Threads: encoding, gzip, the file writes and the removals run on host->api->queue_work, the batch
 * referenced; sends may run concurrently (each writes its own files; a file appears complete, by
 * link(2) from a temporary name; removals are serialized by a mutex).
 */
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file_prune.h"
#include "pprof_enc.h"
#include "pprof_exp.h"
#include "sonde/sonde.h"

typedef struct pp_rotation {
  int64_t max_megabytes, max_days, max_files;
} pp_rotation;

typedef struct pp_config {
  char *directory;
  int64_t gzip_level;
  pp_rotation rotation;
  bool has_rotation; /* the rotation section was written: on, as in otelcol's file exporter */
} pp_config;

static const sonde_option rotation_options[] = {
    SONDE_OPT_RANGE("max_megabytes", SONDE_OPT_INT, pp_rotation, max_megabytes, "100", 0, 1e9,
                    "total MiB of pprof files kept in the directory (0: no size bound)"),
    SONDE_OPT_RANGE("max_days", SONDE_OPT_INT, pp_rotation, max_days, "0", 0, 1e6,
                    "days a file is kept, by the time in its name (0: no age bound)"),
    SONDE_OPT_RANGE("max_files", SONDE_OPT_INT, pp_rotation, max_files, "0", 0, 1e9,
                    "pprof files kept in the directory (0: any number)"),
    SONDE_OPT_END,
};

static const sonde_option pp_options[] = {
    {.name = "directory",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(pp_config, directory),
     .doc = "where the .pb.gz files are written (created if missing)",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT_RANGE("gzip_level", SONDE_OPT_INT, pp_config, gzip_level, "6", 1, 9,
                    "gzip compression level of the files"),
    SONDE_OPT_NESTED_P("rotation", pp_config, rotation, has_rotation, rotation_options,
                       "remove the oldest files beyond a total size, age or count"),
    SONDE_OPT_END,
};

typedef struct ppexp {
  pprof_exp x; /* first: the scaffolding's callbacks get it */
  const sonde_host *h;
  const pp_config *cfg;
  atomic_uint seq; /* of the temporary names (work items run concurrently) */
  pthread_mutex_t prune_mu;
  sonde_metric *m_files, *m_bytes, *m_removed;
} ppexp;

typedef struct job {
  pprof_job base; /* first */
  int status;
  size_t files, bytes;
  size_t removed;  /* by rotation */
  int prune_errno; /* the first removal that failed */
  char err[4400];  /* a path and a reason */
} job;

static int write_file(job *j, const char *service, const sonde_buf *gz) {
  ppexp *e = (ppexp *)j->base.x;
  const char *dir = e->cfg->directory;
  char tmp[4200], name[4200];
  snprintf(tmp, sizeof tmp, "%s/.%s.%d.%u.tmp", dir, service, (int)getpid(),
           atomic_fetch_add(&e->seq, 1));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(j->err, sizeof j->err, "%s: %s", tmp, strerror(errno));
    return SONDE_ERETRY;
  }
  size_t off = 0;
  while (off < gz->len) {
    ssize_t n = write(fd, gz->data + off, gz->len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      snprintf(j->err, sizeof j->err, "%s: %s", tmp, strerror(errno));
      close(fd);
      unlink(tmp);
      return SONDE_ERETRY;
    }
    off += (size_t)n;
  }
  if (close(fd) != 0) {
    snprintf(j->err, sizeof j->err, "%s: %s", tmp, strerror(errno));
    unlink(tmp);
    return SONDE_ERETRY;
  }
  long now = (long)time(NULL);
  int rc = SONDE_ERETRY;
  for (int k = 0; k < 1000; k++) {
    if (k)
      snprintf(name, sizeof name, "%s/%s-%ld-%d.pb.gz", dir, service, now, k);
    else
      snprintf(name, sizeof name, "%s/%s-%ld.pb.gz", dir, service, now);
    if (link(tmp, name) == 0) {
      rc = 0;
      break;
    }
    if (errno != EEXIST) {
      snprintf(j->err, sizeof j->err, "%s: %s", name, strerror(errno));
      break;
    }
  }
  unlink(tmp);
  if (!rc) {
    j->files++;
    j->bytes += gz->len;
  }
  return rc;
}

/* The time of one of our files (<service>-<unix seconds>[-<k>].pb.gz) in ms, the k-th of a second
 * k ms later so that it sorts after the first; -1 for any other name. A service may itself end in
 * -<digits>: the time is the last run of at least 9 digits. */
static int64_t file_time(const char *name, void *arg) {
  (void)arg;
  size_t l = strlen(name), sl = strlen(".pb.gz");
  if (name[0] == '.' || l <= sl || strcmp(name + l - sl, ".pb.gz") != 0) return -1;
  int64_t num[2] = {0, 0};
  size_t digits[2] = {0, 0}, end = l - sl;
  for (int r = 0; r < 2; r++) {
    size_t b = end;
    while (b > 0 && isdigit((unsigned char)name[b - 1]))
      b--;
    if (b == end || b == 0 || name[b - 1] != '-' || end - b > 12) break;
    digits[r] = end - b;
    for (size_t i = b; i < end; i++)
      num[r] = num[r] * 10 + (name[i] - '0');
    end = b - 1;
  }
  if (digits[0] >= 9) return num[0] * 1000;
  if (digits[1] >= 9 && digits[0] && num[0] < 1000) return num[1] * 1000 + num[0];
  return -1;
}

static void prune(job *j) {
  ppexp *e = (ppexp *)j->base.x;
  const pp_rotation *r = &e->cfg->rotation;
  file_prune_limits lim = {.max_files = r->max_files,
                           .max_days = r->max_days,
                           .max_bytes = (uint64_t)r->max_megabytes << 20};
  file_prune_result res;
  pthread_mutex_lock(&e->prune_mu);
  file_prune(e->cfg->directory, file_time, NULL, &lim, &res);
  pthread_mutex_unlock(&e->prune_mu);
  j->removed = res.removed;
  j->prune_errno = res.err;
}

static void job_work(void *arg) {
  job *j = arg;
  pprof_enc_svc *v;
  size_t n;
  int rc = pprof_enc_batch(sonde_batch_profiles(j->base.b),
                           (int)((ppexp *)j->base.x)->cfg->gzip_level, false, &v, &n);
  if (rc) {
    snprintf(j->err, sizeof j->err, "cannot encode: %s", sonde_strerror(rc));
    j->status = SONDE_ERETRY;
    return;
  }
  /* Files already written stay when a later one fails: a retry writes them again under a new
   * name, which is better than losing the others. */
  for (size_t i = 0; i < n && !j->status; i++)
    j->status = write_file(j, v[i].service, &v[i].pprof);
  pprof_enc_free(v, n);
  if (((ppexp *)j->base.x)->cfg->has_rotation && j->files) prune(j);
}

static void job_done(void *arg, int status) {
  job *j = arg;
  ppexp *e = (ppexp *)j->base.x;
  if (status) j->status = SONDE_ERETRY; /* cancelled: the core keeps or drops it */
  if (j->err[0]) sonde_log(e->h, SONDE_LOG_ERROR, "pprof: %s", j->err);
  if (e->m_files && j->files) e->h->api->metric_add(e->m_files, (double)j->files);
  if (e->m_bytes && j->bytes) e->h->api->metric_add(e->m_bytes, (double)j->bytes);
  if (e->m_removed && j->removed) e->h->api->metric_add(e->m_removed, (double)j->removed);
  if (j->prune_errno)
    sonde_log(e->h, SONDE_LOG_WARN, "pprof: removing old files of %s: %s", e->cfg->directory,
              strerror(j->prune_errno));
  j->base.cb(j->base.arg, j->status, 0);
  pprof_job_free(&j->base);
  pprof_exp_work_done(&e->x);
}

/* ---- component ------------------------------------------------------------------------------ */

static int pp_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  ppexp *e = inst;
  return pprof_exp_send(&e->x, b, cb, arg, sizeof(job), job_work, job_done);
}

static int pp_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  ppexp *e = calloc(1, sizeof(*e));
  if (!e) return SONDE_ENOMEM;
  e->h = e->x.h = h;
  e->cfg = config;
  if (pthread_mutex_init(&e->prune_mu, NULL) != 0) {
    free(e);
    return SONDE_ENOMEM;
  }
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_pprof_files", "pprof files written.",
                 NULL, &e->m_files);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_pprof_bytes",
                 "Bytes of pprof files written (gzipped).", NULL, &e->m_bytes);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_pprof_removed_files",
                 "pprof files removed by rotation.", NULL, &e->m_removed);
  *inst = e;
  return 0;
}

static int pp_start(void *inst) {
  ppexp *e = inst;
  /* One level is created; a missing parent is a configuration error worth a clear message. */
  if (mkdir(e->cfg->directory, 0755) != 0 && errno != EEXIST) {
    sonde_log(e->h, SONDE_LOG_ERROR, "pprof: cannot create %s: %s", e->cfg->directory,
              strerror(errno));
    return SONDE_EIO;
  }
  return 0;
}

static void pp_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  pprof_exp_shutdown(&((ppexp *)inst)->x, done, arg);
}

static void pp_destroy(void *inst) {
  ppexp *e = inst;
  if (!e) return;
  pthread_mutex_destroy(&e->prune_mu);
  free(e);
}

static const sonde_component pp_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "pprof",
    .doc = "gzipped pprof files, one per service and batch, that go tool pprof reads",
    .signals = SONDE_SIGNAL_PROFILES,
    .flags = SONDE_COMP_QUEUED,
    .options = pp_options,
    .config_size = sizeof(pp_config),
    .create = pp_create,
    .start = pp_start,
    .send = pp_send,
    .shutdown = pp_shutdown,
    .destroy = pp_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-pprof", "1.0", &pp_component);

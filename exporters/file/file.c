/* The `file` exporter: otelcol-contrib's fileexporter.
 *
 * Records: format json writes one OTLP-JSON request per line; format proto, and any format with
 * compression, writes each request as a 4-byte big-endian length followed by the bytes (with zstd,
 * one complete zstd frame per record: otelcol's default, message-level compression).
 * Rotation follows lumberjack: before a record would push the file past max_megabytes the file is
 * renamed to name-<time>.ext and a new one started; old backups beyond max_backups or older than
 * max_days are removed. A record never spans two files.
 *
 * Threads: encoding, compression and every write(2) run on host->api->queue_work, one job at a time
 * in arrival order (sends, periodic flushes, the final close), so the writer state below is only
 * ever touched by the job in flight. The loop thread only keeps the job list.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "file_prune.h"
#include "sonde/sonde.h"

typedef struct file_rotation {
  int64_t max_megabytes;
  int64_t max_days;
  int64_t max_backups;
  bool localtime;
} file_rotation;

typedef struct file_config {
  char *path;
  int format; /* 0 json, 1 proto */
  bool append;
  char *compression;
  int64_t flush_interval_ns;
  file_rotation rotation;
  bool has_rotation; /* the rotation section was written */
} file_config;

static const char *const formats[] = {"json", "proto", NULL};

/* Rotation is on when the `rotation` section is written (even empty), as in otelcol. */
static const sonde_option rotation_options[] = {
    SONDE_OPT_RANGE("max_megabytes", SONDE_OPT_INT, file_rotation, max_megabytes, "100", 1, 1e9,
                    "size in MiB after which the file is rotated"),
    SONDE_OPT_RANGE("max_days", SONDE_OPT_INT, file_rotation, max_days, NULL, 0, 1e6,
                    "days to keep rotated files, by the time in their name (0: forever)"),
    SONDE_OPT_RANGE("max_backups", SONDE_OPT_INT, file_rotation, max_backups, "100", 0, 1e9,
                    "rotated files to keep (0: all)"),
    SONDE_OPT("localtime", SONDE_OPT_BOOL, file_rotation, localtime, NULL,
              "local time instead of UTC in rotated file names"),
    SONDE_OPT_END,
};

static const sonde_option file_options[] = {
    {.name = "path",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(file_config, path),
     .doc = "file to write to",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT_ENUMV("format", file_config, format, "json", formats,
                    "json: one OTLP-JSON request per line; proto: length-prefixed protobuf"),
    SONDE_OPT("append", SONDE_OPT_BOOL, file_config, append, "false",
              "append to an existing file instead of truncating it at start"),
    SONDE_OPT("compression", SONDE_OPT_STRING, file_config, compression, NULL,
              "zstd: each record is one zstd frame (length-prefixed); unset: none"),
    SONDE_OPT("flush_interval", SONDE_OPT_DURATION, file_config, flush_interval_ns, "1s",
              "time between flushes of the write buffer to the file"),
    SONDE_OPT_NESTED_P("rotation", file_config, rotation, has_rotation, rotation_options,
                       "rotate the file by size (lumberjack semantics); on when written"),
    SONDE_OPT_END,
};

static bool rotation_set(const file_config *c) {
  return c->has_rotation;
}

static bool compressed(const file_config *c) {
  return c->compression && c->compression[0];
}

static int file_validate(const void *config, char *err, size_t errlen) {
  const file_config *c = config;
  if (!c->path || !c->path[0]) {
    snprintf(err, errlen, "path must be non-empty");
    return SONDE_ECONFIG;
  }
  if (compressed(c) && strcmp(c->compression, "zstd") != 0) {
    snprintf(err, errlen, "compression is not supported (only \"zstd\")");
    return SONDE_ECONFIG;
  }
  if (c->append && compressed(c)) {
    snprintf(err, errlen, "append and compression enabled at the same time is not supported");
    return SONDE_ECONFIG;
  }
  if (c->append && rotation_set(c)) {
    snprintf(err, errlen, "append and rotation enabled at the same time is not supported");
    return SONDE_ECONFIG;
  }
  if (c->flush_interval_ns < 0) {
    snprintf(err, errlen, "flush_interval must be larger than zero");
    return SONDE_ECONFIG;
  }
  return 0;
}

/* ---- the writer (job thread only) ------------------------------------------------------------ */

#define WRITE_AT (64u * 1024)           /* write the buffer out once it holds this much */
#define BACKLOG_MAX (16u * 1024 * 1024) /* refuse new records while this much cannot be written */

typedef struct writer {
  int fd;
  uint64_t size;     /* bytes in the file */
  sonde_buf pending; /* bytes accepted but not yet written */
  sonde_buf rec;     /* scratch: the encoded record */
  sonde_buf framed;  /* scratch: compressed / framed record */
  ZSTD_CCtx *zctx;
  char err[256]; /* the last failure, for the loop to log */
} writer;

typedef struct fileexp fileexp;

enum job_kind { JOB_SEND, JOB_FLUSH, JOB_CLOSE };

typedef struct job {
  struct job *next;
  fileexp *fe;
  enum job_kind kind;
  sonde_batch *b;
  sonde_send_cb cb;
  void *arg;
  int status;
} job;

struct fileexp {
  const sonde_host *h;
  const file_config *cfg;
  uint64_t max_bytes; /* 0: no rotation */
  int64_t max_backups, max_days;
  char *dir, *prefix, *ext; /* rotated names: dir/prefix<time>ext */
  writer w;
  sonde_timer *flush_timer;
  job *head, *tail; /* waiting jobs, in order */
  bool busy;        /* a job is on the thread pool */
  bool flush_queued;
  bool stopping;
  job *close_job;
  void (*done)(void *arg);
  void *done_arg;
};

static int write_all(writer *w) {
  size_t off = 0;
  while (off < w->pending.len) {
    ssize_t n = write(w->fd, w->pending.data + off, w->pending.len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      snprintf(w->err, sizeof(w->err), "write: %s", strerror(errno));
      /* Keep what was not written, for the next attempt. */
      memmove(w->pending.data, w->pending.data + off, w->pending.len - off);
      w->pending.len -= off;
      w->size += off;
      return SONDE_EIO;
    }
    off += (size_t)n;
  }
  w->size += off;
  w->pending.len = 0;
  return 0;
}

static void backup_name(const fileexp *fe, time_t sec, long ms, char *out, size_t len) {
  struct tm tm;
  if (fe->cfg->rotation.localtime)
    localtime_r(&sec, &tm);
  else
    gmtime_r(&sec, &tm);
  char ts[64];
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H-%M-%S", &tm);
  snprintf(out, len, "%s%s%s.%03ld%s", fe->dir, fe->prefix, ts, ms, fe->ext);
}

/* The time in a backup's name, in ms (rotations come faster than once a second), or -1. */
static int64_t backup_time(const char *name, void *arg) {
  const fileexp *fe = arg;
  size_t l = strlen(name), lp = strlen(fe->prefix), le = strlen(fe->ext);
  if (l <= lp + le || strncmp(name, fe->prefix, lp) != 0 || strcmp(name + l - le, fe->ext) != 0)
    return -1;
  struct tm tm = {0};
  char ts[64];
  size_t tl = l - lp - le;
  if (tl >= sizeof(ts)) return -1;
  memcpy(ts, name + lp, tl);
  ts[tl] = 0;
  const char *rest = strptime(ts, "%Y-%m-%dT%H-%M-%S", &tm);
  if (!rest || rest[0] != '.' || strlen(rest) != 4) return -1;
  /* lumberjack parses the name as UTC either way */
  return (int64_t)timegm(&tm) * 1000 + atoi(rest + 1);
}

/* lumberjack's mill: removes backups beyond max_backups and older than max_days. */
static void remove_old_backups(fileexp *fe) {
  file_prune_limits lim = {.max_files = fe->max_backups, .max_days = fe->max_days};
  file_prune_result res;
  file_prune(fe->dir, backup_time, fe, &lim, &res);
}

static int open_file(fileexp *fe, bool truncate) {
  writer *w = &fe->w;
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND);
  w->fd = open(fe->cfg->path, flags, 0644);
  if (w->fd < 0) {
    snprintf(w->err, sizeof(w->err), "open %s: %s", fe->cfg->path, strerror(errno));
    return SONDE_EIO;
  }
  struct stat st;
  w->size = fstat(w->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
  return 0;
}

static int rotate(fileexp *fe) {
  writer *w = &fe->w;
  int rc = write_all(w);
  if (rc) return rc;
  close(w->fd);
  w->fd = -1;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  char name[4096];
  long ms = now.tv_nsec / 1000000;
  /* Two rotations within one millisecond would reuse a name; lumberjack would overwrite. */
  for (int k = 0; k < 1000; k++, ms++) {
    backup_name(fe, now.tv_sec + ms / 1000, ms % 1000, name, sizeof(name));
    if (access(name, F_OK) != 0) break;
  }
  if (rename(fe->cfg->path, name) != 0) {
    snprintf(w->err, sizeof(w->err), "rotate %s: %s", fe->cfg->path, strerror(errno));
    open_file(fe, false);
    return SONDE_EIO;
  }
  if ((rc = open_file(fe, true))) return rc;
  remove_old_backups(fe);
  return 0;
}

/* Encodes b into w->framed as one complete record. */
static int encode(fileexp *fe, sonde_batch *b) {
  writer *w = &fe->w;
  int rc;
  w->rec.len = w->framed.len = 0;
  if (fe->cfg->format == 0) {
    if ((rc = sonde_batch_to_json(b, &w->rec))) return rc;
  } else {
    size_t n = sonde_batch_packed_size(b);
    if ((rc = sonde_buf_reserve(&w->rec, n))) return rc;
    w->rec.len = sonde_batch_pack(b, w->rec.data);
  }
  const uint8_t *data = w->rec.data;
  size_t len = w->rec.len;
  if (compressed(fe->cfg)) {
    if (!w->zctx && !(w->zctx = ZSTD_createCCtx())) return SONDE_ENOMEM;
    size_t bound = ZSTD_compressBound(len);
    if ((rc = sonde_buf_reserve(&w->framed, 4 + bound))) return rc;
    size_t z =
        ZSTD_compressCCtx(w->zctx, w->framed.data + 4, bound, data, len, ZSTD_CLEVEL_DEFAULT);
    if (ZSTD_isError(z)) {
      snprintf(w->err, sizeof(w->err), "zstd: %s", ZSTD_getErrorName(z));
      return SONDE_EIO;
    }
    len = z;
  } else if (fe->cfg->format == 0) {
    if ((rc = sonde_buf_append(&w->framed, data, len)) ||
        (rc = sonde_buf_append(&w->framed, "\n", 1)))
      return rc;
    return 0;
  } else {
    if ((rc = sonde_buf_reserve(&w->framed, 4 + len))) return rc;
    memcpy(w->framed.data + 4, data, len);
  }
  if (len > UINT32_MAX) return SONDE_ETOOBIG;
  w->framed.data[0] = (uint8_t)(len >> 24);
  w->framed.data[1] = (uint8_t)(len >> 16);
  w->framed.data[2] = (uint8_t)(len >> 8);
  w->framed.data[3] = (uint8_t)len;
  w->framed.len = 4 + len;
  return 0;
}

static int do_send(fileexp *fe, sonde_batch *b) {
  writer *w = &fe->w;
  if (w->fd < 0) return SONDE_ERETRY;
  if (w->pending.len >= BACKLOG_MAX && write_all(w)) return SONDE_ERETRY;
  int rc = encode(fe, b);
  if (rc) return rc == SONDE_ENOMEM ? SONDE_ERETRY : SONDE_EPERMANENT;
  size_t n = w->framed.len;
  if (fe->max_bytes) {
    if (n > fe->max_bytes) {
      snprintf(w->err, sizeof(w->err), "write length %zu exceeds maximum file size %llu", n,
               (unsigned long long)fe->max_bytes);
      return SONDE_EPERMANENT;
    }
    if (w->size + w->pending.len + n > fe->max_bytes && (rc = rotate(fe))) return SONDE_ERETRY;
  }
  if (sonde_buf_append(&w->pending, w->framed.data, n)) return SONDE_ERETRY;
  /* A failed write keeps the bytes buffered for the next attempt; the record counts as taken. */
  if (w->pending.len >= WRITE_AT) write_all(w);
  return 0;
}

static void job_work(void *arg) {
  job *j = arg;
  fileexp *fe = j->fe;
  fe->w.err[0] = 0;
  switch (j->kind) {
  case JOB_SEND:
    j->status = do_send(fe, j->b);
    break;
  case JOB_FLUSH:
    j->status = fe->w.fd >= 0 ? write_all(&fe->w) : 0;
    break;
  case JOB_CLOSE:
    j->status = fe->w.fd >= 0 ? write_all(&fe->w) : 0;
    if (fe->w.fd >= 0 && close(fe->w.fd) != 0 && !j->status) {
      snprintf(fe->w.err, sizeof(fe->w.err), "close: %s", strerror(errno));
      j->status = SONDE_EIO;
    }
    fe->w.fd = -1;
    break;
  }
}

/* ---- the job list (loop thread) ----------------------------------------------------------------
 */

static void job_done(void *arg, int status);

static void run_next(fileexp *fe) {
  while (!fe->busy && fe->head) {
    job *j = fe->head;
    fe->head = j->next;
    if (!fe->head) fe->tail = NULL;
    fe->busy = true;
    int rc = fe->h->api->queue_work(fe->h, job_work, job_done, j);
    if (rc) {
      fe->busy = false;
      /* No thread pool: the final close must still happen, so it runs here (once, at exit);
       * sends are handed back to the queue to retry. */
      if (j->kind == JOB_CLOSE) job_work(j);
      job_done(j, j->kind == JOB_CLOSE ? 0 : rc);
    }
  }
}

static void job_done(void *arg, int status) {
  job *j = arg;
  fileexp *fe = j->fe;
  fe->busy = false;
  if (status == SONDE_ECANCELED && j->kind == JOB_CLOSE)
    job_work(j); /* the pool is gone: close here so buffered records reach the file */
  else if (status)
    j->status = status == SONDE_ECANCELED ? SONDE_ERETRY : status;
  if (fe->w.err[0]) sonde_log(fe->h, j->status ? SONDE_LOG_ERROR : SONDE_LOG_WARN, "%s", fe->w.err);
  switch (j->kind) {
  case JOB_SEND:
    j->cb(j->arg, j->status, 0);
    sonde_batch_unref(j->b);
    break;
  case JOB_FLUSH:
    fe->flush_queued = false;
    break;
  case JOB_CLOSE:
    if (fe->done) {
      void (*done)(void *) = fe->done;
      fe->done = NULL;
      free(j);
      done(fe->done_arg);
      return;
    }
    break;
  }
  free(j);
  run_next(fe);
}

static void append_job(fileexp *fe, job *j) {
  if (fe->tail)
    fe->tail->next = j;
  else
    fe->head = j;
  fe->tail = j;
  run_next(fe);
}

static int enqueue(fileexp *fe, enum job_kind kind, sonde_batch *b, sonde_send_cb cb, void *arg) {
  job *j = calloc(1, sizeof(*j));
  if (!j) return SONDE_ENOMEM;
  *j = (job){.fe = fe, .kind = kind, .b = b, .cb = cb, .arg = arg};
  append_job(fe, j);
  return 0;
}

static void flush_tick(void *arg) {
  fileexp *fe = arg;
  if (fe->flush_queued || fe->stopping) return;
  if (enqueue(fe, JOB_FLUSH, NULL, NULL, NULL) == 0) fe->flush_queued = true;
}

/* ---- component ------------------------------------------------------------------------------- */

static int file_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  fileexp *fe = inst;
  if (fe->stopping) return SONDE_ESHUTDOWN;
  int rc = enqueue(fe, JOB_SEND, sonde_batch_ref(b), cb, arg);
  if (rc) sonde_batch_unref(b);
  return rc;
}

static int split_path(fileexp *fe) {
  const char *path = fe->cfg->path;
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  const char *dot = strrchr(base, '.');
  size_t dl = (size_t)(base - path);
  size_t bl = dot ? (size_t)(dot - base) : strlen(base);
  fe->dir = strndup(path, dl);
  fe->ext = strdup(dot ? dot : "");
  fe->prefix = malloc(bl + 2);
  if (!fe->dir || !fe->ext || !fe->prefix) return SONDE_ENOMEM;
  memcpy(fe->prefix, base, bl);
  fe->prefix[bl] = '-';
  fe->prefix[bl + 1] = 0;
  return 0;
}

static void file_destroy(void *inst);

static int file_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  fileexp *fe = calloc(1, sizeof(*fe));
  if (!fe) return SONDE_ENOMEM;
  fe->h = h;
  fe->cfg = config;
  fe->w.fd = -1;
  const file_rotation *r = &fe->cfg->rotation;
  if (rotation_set(fe->cfg)) {
    fe->max_bytes = (uint64_t)r->max_megabytes * 1024 * 1024;
    fe->max_backups = r->max_backups;
    fe->max_days = r->max_days;
  }
  fe->close_job = calloc(1, sizeof(job));
  if (fe->close_job) *fe->close_job = (job){.fe = fe, .kind = JOB_CLOSE};
  if (!fe->close_job || split_path(fe)) {
    file_destroy(fe);
    return SONDE_ENOMEM;
  }
  *inst = fe;
  return 0;
}

static int file_start(void *inst) {
  fileexp *fe = inst;
  /* Opening (and truncating) happens here, on the loop, so a bad path fails the start as in
   * otelcol; it is one open(2) and one directory scan, before any data flows. */
  if (open_file(fe, !fe->cfg->append)) {
    sonde_log(fe->h, SONDE_LOG_ERROR, "%s", fe->w.err);
    return SONDE_EIO;
  }
  if (fe->max_bytes) remove_old_backups(fe);
  int64_t every = fe->cfg->flush_interval_ns > 0 ? fe->cfg->flush_interval_ns : 1000000000;
  int rc = fe->h->api->timer_start(fe->h, every, every, flush_tick, fe, &fe->flush_timer);
  if (rc) {
    fe->flush_timer = NULL;
    close(fe->w.fd);
    fe->w.fd = -1;
  }
  return rc;
}

static void file_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  fileexp *fe = inst;
  fe->stopping = true;
  if (fe->flush_timer) {
    fe->h->api->timer_stop(fe->flush_timer);
    fe->flush_timer = NULL;
  }
  fe->done = done;
  fe->done_arg = arg;
  /* Allocated at create, so shutdown cannot fail for want of memory. */
  job *j = fe->close_job;
  fe->close_job = NULL;
  append_job(fe, j);
}

static void file_destroy(void *inst) {
  fileexp *fe = inst;
  if (!fe) return;
  if (fe->flush_timer) fe->h->api->timer_stop(fe->flush_timer);
  while (fe->head) {
    job *j = fe->head;
    fe->head = j->next;
    if (j->b) sonde_batch_unref(j->b);
    free(j);
  }
  free(fe->close_job);
  if (fe->w.fd >= 0) {
    write_all(&fe->w);
    close(fe->w.fd);
  }
  sonde_buf_free(&fe->w.pending);
  sonde_buf_free(&fe->w.rec);
  sonde_buf_free(&fe->w.framed);
  ZSTD_freeCCtx(fe->w.zctx);
  free(fe->dir);
  free(fe->prefix);
  free(fe->ext);
  free(fe);
}

static const sonde_component file_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "file",
    .doc = "writes OTLP JSON or protobuf records to a file, with rotation and zstd",
    .signals = SONDE_SIGNAL_ALL,
    .flags = SONDE_COMP_QUEUED,
    .options = file_options,
    .config_size = sizeof(file_config),
    .validate = file_validate,
    .create = file_create,
    .start = file_start,
    .send = file_send,
    .shutdown = file_shutdown,
    .destroy = file_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-file", "1.0", &file_component);

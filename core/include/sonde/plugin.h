/* sonde public SDK: plug-in descriptor, components, option tables and the host vtable.
 *
 * A plug-in is a shared object that exports one symbol, SONDE_PLUGIN_SYMBOL, a const sonde_plugin.
 * Every callback runs on the loop thread unless it says otherwise. Pointer parameters are borrowed
 * (not kept after return) unless their comment says "taken" or "kept".
 */
#ifndef SONDE_PLUGIN_H
#define SONDE_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sonde/errors.h"
#include "sonde/pdata.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SONDE_ABI_MAJOR 1
#define SONDE_ABI_MINOR 0
/* Catches plug-ins built for another data model or word size. */
#define SONDE_BUILD_SIGNATURE "sonde-abi-1;pdata-otlp-1.9;" SONDE__LP

#if defined(__LP64__)
#define SONDE__LP "lp64"
#else
#define SONDE__LP "ilp32"
#endif

/* ---- options -------------------------------------------------------------------------------- */

typedef enum sonde_opt_type {
  SONDE_OPT_STRING,     /* char *, NULL when unset without default */
  SONDE_OPT_INT,        /* int64_t */
  SONDE_OPT_BOOL,       /* bool */
  SONDE_OPT_DOUBLE,     /* double */
  SONDE_OPT_DURATION,   /* int64_t nanoseconds; "250ms", "1m30s", "2h"; a bare 0 is allowed */
  SONDE_OPT_BYTES,      /* uint64_t bytes; "64MiB", "512KB", "1024" */
  SONDE_OPT_ENUM,       /* int: index into enum_values */
  SONDE_OPT_STRLIST,    /* sonde_strlist: a sequence of scalars */
  SONDE_OPT_STRMAP,     /* sonde_strmap: a map of scalar to scalar, in file order */
  SONDE_OPT_TABLE,      /* nested struct at offset, described by sub */
  SONDE_OPT_TABLE_LIST, /* sonde_tablelist: a sequence of maps, each a struct of sub_size */
} sonde_opt_type;

#define SONDE_OPT_REQUIRED (1u << 0) /* must be set by the user */
#define SONDE_OPT_SECRET (1u << 1)   /* shown as [REDACTED] by print-config */
/* TABLE only: the bool at present_offset (in the enclosing struct) tells whether the key was
 * written at all (`grpc:` with nothing under it counts); the table is bound with its defaults
 * either way. For otelcol's "configured or not" sections (protocols, tls, rotation). */
#define SONDE_OPT_PRESENCE (1u << 2)

typedef struct sonde_strlist {
  char **v;
  size_t n;
} sonde_strlist;

typedef struct sonde_strmap {
  char **keys;
  char **values;
  size_t n;
} sonde_strmap;

typedef struct sonde_tablelist {
  void *items; /* n elements of the row's sub_size bytes */
  size_t n;
} sonde_tablelist;

typedef struct sonde_option {
  const char *name;
  sonde_opt_type type;
  size_t offset;   /* into the config struct (or into the enclosing TABLE's struct) */
  const char *def; /* default in config syntax ("5s", "8192", "gzip"); NULL: none */
  const char *doc; /* one line */
  double min, max; /* inclusive bounds for numeric types, in the stored unit (ns, bytes); both 0:
                    * unbounded; max < min: no upper bound */
  const char *const *enum_values; /* NULL-terminated, for SONDE_OPT_ENUM */
  const struct sonde_option *sub; /* TABLE / TABLE_LIST: the nested table, {0}-terminated */
  size_t sub_size;                /* TABLE_LIST: size of one element */
  uint32_t flags;
  size_t present_offset; /* TABLE with SONDE_OPT_PRESENCE: offset of a bool */
} sonde_option;

/* Table rows. S is the config struct type, F its field. */
#define SONDE_OPT(n, t, S, F, d, doc_)                                                             \
  { .name = (n), .type = (t), .offset = offsetof(S, F), .def = (d), .doc = (doc_) }
#define SONDE_OPT_RANGE(n, t, S, F, d, lo, hi, doc_)                                               \
  {                                                                                                \
    .name = (n), .type = (t), .offset = offsetof(S, F), .def = (d), .doc = (doc_), .min = (lo),    \
    .max = (hi)                                                                                    \
  }
#define SONDE_OPT_ENUMV(n, S, F, d, vals, doc_)                                                    \
  {                                                                                                \
    .name = (n), .type = SONDE_OPT_ENUM, .offset = offsetof(S, F), .def = (d), .doc = (doc_),      \
    .enum_values = (vals)                                                                          \
  }
#define SONDE_OPT_NESTED(n, S, F, table, doc_)                                                     \
  { .name = (n), .type = SONDE_OPT_TABLE, .offset = offsetof(S, F), .doc = (doc_), .sub = (table) }
/* A nested table whose presence is recorded in the bool field P of S. */
#define SONDE_OPT_NESTED_P(n, S, F, P, table, doc_)                                                \
  {                                                                                                \
    .name = (n), .type = SONDE_OPT_TABLE, .offset = offsetof(S, F), .doc = (doc_), .sub = (table), \
    .flags = SONDE_OPT_PRESENCE, .present_offset = offsetof(S, P)                                  \
  }
#define SONDE_OPT_ROWS(n, S, F, Elem, table, doc_)                                                 \
  {                                                                                                \
    .name = (n), .type = SONDE_OPT_TABLE_LIST, .offset = offsetof(S, F), .doc = (doc_),            \
    .sub = (table), .sub_size = sizeof(Elem)                                                       \
  }
#define SONDE_OPT_END                                                                              \
  { 0 }

/* ---- host services ------------------------------------------------------------------------- */

typedef struct sonde_host sonde_host; /* one per component instance; opaque */
typedef struct uv_loop_s uv_loop_t;

typedef enum sonde_log_level {
  SONDE_LOG_DEBUG = 0,
  SONDE_LOG_INFO = 1,
  SONDE_LOG_WARN = 2,
  SONDE_LOG_ERROR = 3,
} sonde_log_level;

typedef enum sonde_metric_kind {
  SONDE_METRIC_COUNTER = 0, /* monotonic; exposed with a _total suffix */
  SONDE_METRIC_GAUGE = 1,
} sonde_metric_kind;

typedef struct sonde_metric sonde_metric; /* owned by the core, valid until destroy */
typedef struct sonde_timer sonde_timer;
typedef struct sonde_http_server sonde_http_server;
typedef struct sonde_http_request sonde_http_request;

/* A request handler; req stays valid until sonde_http_respond is called on it (which may happen
 * after the handler returns). */
typedef void (*sonde_http_handler)(void *arg, sonde_http_request *req);

typedef struct sonde_http_options {
  uint64_t max_body_size;  /* 0: 20 MiB. Larger bodies get 413 without calling the handler. */
  int64_t read_timeout_ns; /* 0: 30 s. A client that stalls mid-request is closed. */
} sonde_http_options;

typedef void (*sonde_send_cb)(void *arg, int status, int64_t retry_after_ns);

typedef struct sonde_host_api {
  uint32_t struct_size; /* sizeof(sonde_host_api) of the core; check before using later fields */

  /* "otlp/tempo" */
  const char *(*id)(const sonde_host *h);
  void (*vlog)(const sonde_host *h, sonde_log_level lvl, const char *fmt, va_list ap);
  bool (*log_enabled)(const sonde_host *h, sonde_log_level lvl);
  uv_loop_t *(*loop)(const sonde_host *h);

  /* Hands a batch to whatever follows this component (next processor, or fan-out to exporters).
   * b is borrowed: take a reference to keep it. Returns 0 (accepted), SONDE_EREFUSED (over
   * capacity: tell the client to retry later) or another error (rejected). Receivers pass their
   * transport ("grpc", "http") for the otelcol_receiver_* metrics; others pass NULL. */
  int (*consume)(const sonde_host *h, sonde_batch *b, const char *transport);

  /* Metrics in the core's registry, exposed on service::telemetry::metrics. name is the full
   * Prometheus name without _total; labels is "k=v,k=v" (may be NULL). The component's own label
   * (receiver=/processor=/exporter=) is added. *out is owned by the core. */
  int (*metric)(const sonde_host *h, sonde_metric_kind kind, const char *name, const char *help,
                const char *labels, sonde_metric **out);
  void (*metric_add)(sonde_metric *m, double delta);
  void (*metric_set)(sonde_metric *m, double value);

  /* One-shot (repeat_ns 0) or repeating timer on the loop. *out is taken by the caller and must be
   * stopped with timer_stop (which frees it; cb is never called after). */
  int (*timer_start)(const sonde_host *h, int64_t after_ns, int64_t repeat_ns,
                     void (*cb)(void *arg), void *arg, sonde_timer **out);
  void (*timer_stop)(sonde_timer *t);

  /* Runs work(arg) on the thread pool, then done(arg, status) on the loop (status is
   * SONDE_ECANCELED when shut down first). Returns an error (and never calls done) if it cannot. */
  int (*queue_work)(const sonde_host *h, void (*work)(void *arg),
                    void (*done)(void *arg, int status), void *arg);

  /* Minimal HTTP/1.1 server (keep-alive, Content-Length and chunked bodies) on "host:port"; a
   * bare ":port" binds localhost. handler is kept until http_close. */
  int (*http_listen)(const sonde_host *h, const char *endpoint, const sonde_http_options *opts,
                     sonde_http_handler handler, void *arg, sonde_http_server **out);
  /* Stops listening and closes every connection. A request still held by the handler is not
   * answered; its later http_respond frees it and returns SONDE_ESHUTDOWN. */
  void (*http_close)(sonde_http_server *srv);
  /* Request accessors: borrowed, valid until respond. */
  const char *(*http_method)(const sonde_http_request *r);
  const char *(*http_path)(const sonde_http_request *r);                     /* without the query */
  const char *(*http_query)(const sonde_http_request *r);                    /* after '?', or "" */
  const char *(*http_header)(const sonde_http_request *r, const char *name); /* case-insensitive */
  const uint8_t *(*http_body)(const sonde_http_request *r, size_t *len);
  /* Answers and releases req. headers is "Name: value\r\n..." or NULL; body is copied. */
  int (*http_respond)(sonde_http_request *r, int status, const char *content_type,
                      const char *headers, const void *body, size_t len);

  /* 0 when every component of the service started and none reported a fatal error; for
   * health checks. */
  int (*service_status)(const sonde_host *h);
  /* A component reports that it cannot go on (the service status turns unhealthy). */
  void (*report_fatal)(const sonde_host *h, int err, const char *msg);

  /* Queued exporters: the core's `timeout` option for one send, in ns (0: none), so the exporter
   * can put the same deadline on the wire (grpc-timeout). 0 for other components. */
  int64_t (*send_timeout)(const sonde_host *h);
} sonde_host_api;

struct sonde_host {
  const sonde_host_api *api;
};

static inline void sonde_log(const sonde_host *h, sonde_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void sonde_log(const sonde_host *h, sonde_log_level lvl, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  h->api->vlog(h, lvl, fmt, ap);
  va_end(ap);
}

/* ---- components ---------------------------------------------------------------------------- */

typedef enum sonde_kind {
  SONDE_KIND_RECEIVER = 1,
  SONDE_KIND_PROCESSOR = 2,
  SONDE_KIND_EXPORTER = 3,
  SONDE_KIND_CONNECTOR = 4,
  SONDE_KIND_EXTENSION = 5,
} sonde_kind;

/* The component changes batches it is given: the core hands it a private copy when shared. */
#define SONDE_COMP_MUTATES (1u << 0)
/* Exporter: the core adds otelcol's `timeout`, `sending_queue` and `retry_on_failure` options
 * and runs the queue and retries; the exporter only implements send(). */
#define SONDE_COMP_QUEUED (1u << 1)

typedef struct sonde_component {
  uint32_t struct_size; /* sizeof(sonde_component) */
  sonde_kind kind;
  const char *type;            /* config type name: [a-z0-9_]+ */
  const char *doc;             /* one line */
  uint32_t signals;            /* sonde_signal mask */
  uint32_t flags;              /* SONDE_COMP_* */
  const sonde_option *options; /* {0}-terminated; may be NULL */
  size_t config_size;          /* the struct the options fill */

  /* Optional cross-field validation after options parsed; writes a message to err. */
  int (*validate)(const void *config, char *err, size_t errlen);
  /* config is kept by the core until destroy and may be kept by the instance. h is kept. When
   * create fails, destroy is not called: free what was allocated before returning. */
  int (*create)(const sonde_host *h, const void *config, uint32_t signals, void **inst);
  int (*start)(void *inst);
  /* Processors (and exporters without SONDE_COMP_QUEUED): b is borrowed; ref to keep. Returns 0,
   * SONDE_EREFUSED, or another error. */
  int (*consume)(void *inst, sonde_batch *b);
  /* Queued exporters: send b (borrowed; ref to keep) and call cb exactly once, possibly before
   * send returns, with 0, SONDE_ERETRY (retry_after_ns > 0 to honour the server's word) or
   * SONDE_EPERMANENT. A non-zero return means cb will not be called; SONDE_EPERMANENT drops the
   * batch, anything else is retried. When the core's `timeout` passes first the batch is retried
   * by a new send() while the old one may still be in flight; the old one's cb is then ignored.
   * Before shutdown's done, every pending cb must have been called. */
  int (*send)(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg);
  /* Stop taking work and flush; call done(arg) once finished (possibly before returning).
   * Receivers stop producing; processors forward what they hold; exporters finish in-flight. */
  void (*shutdown)(void *inst, void (*done)(void *arg), void *arg);
  /* Frees the instance; only after shutdown completed, or after a failed start, or instead of
   * start. */
  void (*destroy)(void *inst);
} sonde_component;

typedef struct sonde_plugin {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size;        /* sizeof(sonde_plugin) */
  const char *build_signature; /* SONDE_BUILD_SIGNATURE */
  const char *name;
  const char *version;
  const sonde_component *const *components;
  size_t n_components;
} sonde_plugin;

#define SONDE_PLUGIN_SYMBOL sonde_plugin_descriptor
#define SONDE_PLUGIN_SYMBOL_NAME "sonde_plugin_descriptor"

/* Defines the descriptor:  SONDE_PLUGIN_DEFINE("my-plugin", "1.0", &comp_a, &comp_b); */
#define SONDE_PLUGIN_DEFINE(pname, pversion, ...)                                                  \
  static const sonde_component *const sonde__plugin_components[] = {__VA_ARGS__};                  \
  __attribute__((visibility("default"))) const sonde_plugin SONDE_PLUGIN_SYMBOL = {                \
      .abi_major = SONDE_ABI_MAJOR,                                                                \
      .abi_minor = SONDE_ABI_MINOR,                                                                \
      .struct_size = sizeof(sonde_plugin),                                                         \
      .build_signature = SONDE_BUILD_SIGNATURE,                                                    \
      .name = (pname),                                                                             \
      .version = (pversion),                                                                       \
      .components = sonde__plugin_components,                                                      \
      .n_components = sizeof(sonde__plugin_components) / sizeof(sonde__plugin_components[0]),      \
  }

#ifdef __cplusplus
}
#endif
#endif

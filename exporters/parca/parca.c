/* The `parca` exporter: profiles to Parca (or anything serving Parca's profile store) with
 * parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw over gRPC, h2c or TLS.
 *
 * One WriteRaw per batch: a series per (service, resource labels) (pprof_enc.h groups the
 * profiles), its labels
 * __name__ (profile_name, or parca_agent_cpu for CPU profiles and parca_agent_<sample type>
 * otherwise), service_name, the resource's attributes (sanitized to Prometheus names) and the
 * configured labels, sorted by name; one RawSample with the gzipped pprof. The pprof follows what
 * Parca's normalizer checks: string 0 is "", mapping/location/function ids are their position +
 * 1, one value per sample type. Addresses are runtime addresses (normalized: false) and no
 * executable_info is sent, so Parca adjusts them with the mappings, as it does for pprof uploads.
 *
 * The transport is the otlp_grpc client (exporters/otlp, otlp_grpc_call): one HTTP/2 connection,
 * connection backoff, grpc-timeout, and otelcol's gRPC code rules (UNAVAILABLE and the like
 * retried, INVALID_ARGUMENT and the like permanent). The bearer token goes in every call's
 * authorization header; bearer_token_file is read again for every call, so a rotated token is
 * picked up without a restart. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otlp_common.h"
#include "otlp_exporters.h"
#include "parca/profilestore/v1alpha1/profilestore.pb-c.h"
#include "pprof_enc.h"
#include "pprof_exp.h"
#include "sonde/sonde.h"

#define MAX_LABELS 64
#define WRITE_RAW "/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw"

typedef struct pa_config {
  char *endpoint;
  bool insecure;
  otlp_tls_config tls;
  char *bearer_token;
  char *bearer_token_file;
  sonde_strmap headers;
  sonde_strmap labels;
  char *profile_name;
  int64_t gzip_level;
} pa_config;

static const sonde_option pa_options[] = {
    {.name = "endpoint",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(pa_config, endpoint),
     .doc = "host:port of Parca's gRPC API (http:// or https:// prefix sets h2c or TLS)",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT("insecure", SONDE_OPT_BOOL, pa_config, insecure, "false",
              "cleartext HTTP/2 (h2c) instead of TLS"),
    SONDE_OPT_NESTED("tls", pa_config, tls, otlp_tls_options, "TLS client settings"),
    {.name = "bearer_token",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(pa_config, bearer_token),
     .doc = "sent as authorization: Bearer <token>",
     .flags = SONDE_OPT_SECRET},
    SONDE_OPT("bearer_token_file", SONDE_OPT_STRING, pa_config, bearer_token_file, NULL,
              "file holding the bearer token, read for every request"),
    SONDE_OPT("headers", SONDE_OPT_STRMAP, pa_config, headers, NULL,
              "headers (gRPC metadata) added to every request"),
    SONDE_OPT("labels", SONDE_OPT_STRMAP, pa_config, labels, NULL, "labels added to every series"),
    SONDE_OPT("profile_name", SONDE_OPT_STRING, pa_config, profile_name, NULL,
              "__name__ of every series; unset: parca_agent_cpu for CPU profiles, else "
              "parca_agent_<sample type>"),
    SONDE_OPT_RANGE("gzip_level", SONDE_OPT_INT, pa_config, gzip_level, "6", 1, 9,
                    "gzip level of the pprof payloads"),
    SONDE_OPT_END,
};

typedef struct paexp {
  pprof_exp x; /* first: the scaffolding's callbacks get it */
  const sonde_host *h;
  const pa_config *cfg;
  otlp_config oc; /* the client's configuration, kept for its lifetime */
  sonde_metric *m_series, *m_bytes;
} paexp;

typedef struct job {
  pprof_job base; /* first */
  int enc_status;
  sonde_buf body;
  size_t series, bytes;
  /* the bearer token, read with the encoding (thread pool): a file read does not block the loop */
  int tok_status, tok_errno;
  char tok[4096], tok_err[160];
} job;

/* ---- encoding (thread pool) ------------------------------------------------------------------ */

typedef struct lbl {
  const char *name, *value;
} lbl;

static int lbl_cmp(const void *a, const void *b) {
  return strcmp(((const lbl *)a)->name, ((const lbl *)b)->name);
}

static void encode_series(const paexp *e, const pprof_enc_svc *s,
                          Parca__Profilestore__V1alpha1__RawProfileSeries *ser, pprof_enc_label *sl,
                          size_t nl, lbl *tmp, Parca__Profilestore__V1alpha1__Label *L,
                          Parca__Profilestore__V1alpha1__Label **LP) {
  char name[128];
  if (e->cfg->profile_name && *e->cfg->profile_name)
    snprintf(name, sizeof name, "%s", e->cfg->profile_name);
  else
    pprof_enc_profile_name(s, "cpu", "parca_agent_", name, sizeof name);
  size_t m = pprof_enc_series_labels(s, name, &e->cfg->labels, sl, nl);
  for (size_t k = 0; k < m; k++)
    tmp[k] = (lbl){sl[k].name, sl[k].value};
  qsort(tmp, m, sizeof *tmp, lbl_cmp);
  for (size_t k = 0; k < m; k++) {
    parca__profilestore__v1alpha1__label__init(&L[k]);
    L[k].name = (char *)tmp[k].name;
    L[k].value = (char *)tmp[k].value;
    LP[k] = &L[k];
  }
  ser->labels->labels = LP;
  ser->labels->n_labels = m;
}

/* The token, from the option or the file (read for every call, so a rotated token is taken),
 * into j->tok ("" when neither is set). Runs on the thread pool: a failure is described in
 * j->tok_err (and j->tok_errno) for encode_done to log. */
static int bearer(const paexp *e, job *j) {
  char *out = j->tok;
  size_t len = sizeof j->tok;
  const pa_config *c = e->cfg;
  const char *src = c->bearer_token_file && *c->bearer_token_file ? c->bearer_token_file : NULL;
  out[0] = 0;
  if (c->bearer_token && *c->bearer_token) {
    src = NULL;
    snprintf(out, len, "%s", c->bearer_token);
  } else if (src) {
    FILE *f = fopen(src, "re");
    if (!f) {
      j->tok_errno = errno;
      snprintf(j->tok_err, sizeof j->tok_err, "bearer_token_file %s", src);
      return SONDE_ERETRY; /* a token being rotated may be back soon */
    }
    size_t n = fread(out, 1, len - 1, f);
    bool more = n == len - 1 && fgetc(f) != EOF;
    fclose(f);
    out[n] = 0;
    if (more) {
      snprintf(j->tok_err, sizeof j->tok_err, "bearer_token_file %s: longer than %zu bytes", src,
               len - 1);
      return SONDE_EPERMANENT;
    }
  }
  size_t l = strlen(out);
  while (l && strchr(" \t\r\n", out[l - 1]))
    out[--l] = 0;
  if (strpbrk(out, "\r\n")) {
    snprintf(j->tok_err, sizeof j->tok_err,
             "%s%s: the token holds a line break (it must be one line)",
             src ? "bearer_token_file " : "bearer_token", src ? src : "");
    return SONDE_EPERMANENT;
  }
  return 0;
}

static void encode_work(void *arg) {
  job *j = arg;
  const paexp *e = (const paexp *)j->base.x;
  pprof_enc_svc *v;
  size_t n;
  int rc = pprof_enc_batch(sonde_batch_profiles(j->base.b), (int)e->cfg->gzip_level, true, &v, &n);
  if (rc || !n) {
    j->enc_status = rc;
    return;
  }
  size_t nl = MAX_LABELS + 2 + e->cfg->labels.n;
  Parca__Profilestore__V1alpha1__RawProfileSeries *ser = calloc(n, sizeof *ser);
  Parca__Profilestore__V1alpha1__RawProfileSeries **serp = calloc(n, sizeof *serp);
  Parca__Profilestore__V1alpha1__LabelSet *ls = calloc(n, sizeof *ls);
  Parca__Profilestore__V1alpha1__RawSample *smp = calloc(n, sizeof *smp);
  Parca__Profilestore__V1alpha1__RawSample **smpp = calloc(n, sizeof *smpp);
  Parca__Profilestore__V1alpha1__Label *L = calloc(n * nl, sizeof *L);
  Parca__Profilestore__V1alpha1__Label **LP = calloc(n * nl, sizeof *LP);
  pprof_enc_label *sl = calloc(n * nl, sizeof *sl);
  lbl *tmp = calloc(n * nl, sizeof *tmp);
  rc = SONDE_ENOMEM;
  if (!ser || !serp || !ls || !smp || !smpp || !L || !LP || !sl || !tmp) goto out;
  for (size_t i = 0; i < n; i++) {
    parca__profilestore__v1alpha1__raw_profile_series__init(&ser[i]);
    parca__profilestore__v1alpha1__label_set__init(&ls[i]);
    parca__profilestore__v1alpha1__raw_sample__init(&smp[i]);
    ser[i].labels = &ls[i];
    encode_series(e, &v[i], &ser[i], &sl[i * nl], nl, &tmp[i * nl], &L[i * nl], &LP[i * nl]);
    smp[i].raw_profile.data = v[i].pprof.data;
    smp[i].raw_profile.len = v[i].pprof.len;
    smpp[i] = &smp[i];
    ser[i].samples = &smpp[i];
    ser[i].n_samples = 1;
    serp[i] = &ser[i];
    j->bytes += v[i].pprof.len;
  }
  Parca__Profilestore__V1alpha1__WriteRawRequest req =
      PARCA__PROFILESTORE__V1ALPHA1__WRITE_RAW_REQUEST__INIT;
  req.series = serp;
  req.n_series = n;
  req.normalized = false;
  size_t len = parca__profilestore__v1alpha1__write_raw_request__get_packed_size(&req);
  if (sonde_buf_reserve(&j->body, len ? len : 1)) goto out;
  j->body.len = parca__profilestore__v1alpha1__write_raw_request__pack(&req, j->body.data);
  j->series = n;
  j->tok_status = bearer(e, j);
  rc = 0;
out:
  free(ser);
  free(serp);
  free(ls);
  free(smp);
  free(smpp);
  free(L);
  free(LP);
  free(sl);
  free(tmp);
  pprof_enc_free(v, n);
  j->enc_status = rc;
}

/* ---- sending (loop) -------------------------------------------------------------------------- */

static void call_done(void *arg, int status, int64_t retry_ns) {
  job *j = arg;
  paexp *e = (paexp *)j->base.x;
  if (!status) {
    if (e->m_series) e->h->api->metric_add(e->m_series, (double)j->series);
    if (e->m_bytes) e->h->api->metric_add(e->m_bytes, (double)j->bytes);
  }
  j->base.cb(j->base.arg, status, retry_ns);
  sonde_buf_free(&j->body);
  pprof_job_free(&j->base);
}

static void encode_done(void *arg, int status) {
  job *j = arg;
  paexp *e = (paexp *)j->base.x;
  int st = status ? status : j->enc_status;
  char auth[4200];
  if (st) {
    sonde_log(e->h, SONDE_LOG_ERROR, "cannot encode the profiles: %s", sonde_strerror(st));
    call_done(j, pprof_exp_encode_status(st), 0);
  } else if (!j->series) {
    call_done(j, 0, 0); /* nothing sampled: nothing to send */
  } else if (j->tok_status) {
    if (j->tok_errno)
      sonde_log(e->h, SONDE_LOG_ERROR, "%s: %s", j->tok_err, strerror(j->tok_errno));
    else
      sonde_log(e->h, SONDE_LOG_ERROR, "%s", j->tok_err);
    call_done(j, j->tok_status, 0);
  } else {
    const char *hn[] = {"authorization"};
    const char *hv[] = {auth};
    snprintf(auth, sizeof auth, "Bearer %s", j->tok);
    otlp_call c = {.path = WRITE_RAW,
                   .header_names = hn,
                   .header_values = hv,
                   .n_headers = j->tok[0] ? 1 : 0,
                   .body = j->body};
    memset(&j->body, 0, sizeof j->body); /* taken by the call */
    int rc = otlp_grpc_call(e->x.client, &c, call_done, j);
    if (rc) call_done(j, pprof_exp_call_status(rc), 0);
  }
  pprof_exp_work_done(&e->x);
}

static int pa_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  paexp *e = inst;
  return pprof_exp_send(&e->x, b, cb, arg, sizeof(job), encode_work, encode_done);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int pa_validate(const void *config, char *err, size_t errlen) {
  const pa_config *c = config;
  otlp_url u;
  if (otlp_parse_grpc_endpoint(c->endpoint, c->insecure || c->tls.insecure, &u, err, errlen))
    return SONDE_ECONFIG;
  if (otlp_headers_validate(&c->headers, err, errlen)) return SONDE_ECONFIG;
  if (c->bearer_token && *c->bearer_token && c->bearer_token_file && *c->bearer_token_file) {
    snprintf(err, errlen, "set bearer_token or bearer_token_file, not both");
    return SONDE_ECONFIG;
  }
  /* Parca's profile types are name:sample_type:sample_unit:period_type:period_unit[:delta], so the
   * name must be a metric name without ':' (a bad one was refused with every batch). */
  const char *pn = c->profile_name;
  for (size_t i = 0; pn && pn[i]; i++) {
    char ch = pn[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
          (i && ch >= '0' && ch <= '9'))) {
      snprintf(err, errlen,
               "profile_name \"%s\": use letters, digits and '_' only, not starting with a digit "
               "(it is the name part of Parca's name:type:unit:... profile types)",
               pn);
      return SONDE_ECONFIG;
    }
  }
  if (c->bearer_token && strlen(c->bearer_token) >= sizeof(((job *)0)->tok)) {
    snprintf(err, errlen, "bearer_token: longer than %zu bytes", sizeof(((job *)0)->tok) - 1);
    return SONDE_ECONFIG;
  }
  return 0;
}

static void pa_destroy(void *inst) {
  paexp *e = inst;
  if (!e) return;
  if (e->x.client) otlp_grpc_destroy(e->x.client);
  free(e);
}

static int pa_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  const pa_config *cfg = config;
  paexp *e = calloc(1, sizeof *e);
  if (!e) return SONDE_ENOMEM;
  e->h = e->x.h = h;
  e->x.client_shutdown = otlp_grpc_shutdown;
  e->cfg = cfg;
  e->oc.endpoint = cfg->endpoint;
  e->oc.tls = cfg->tls;
  e->oc.tls.insecure = cfg->insecure || cfg->tls.insecure;
  e->oc.headers = cfg->headers;
  e->oc.compression = OTLP_COMP_NONE; /* the pprof inside is gzipped */
  e->oc.user_agent = "sonde-parca-exporter/" SONDE_OTLP_VERSION;
  int rc = otlp_grpc_create(h, &e->oc, 0, &e->x.client);
  if (rc) {
    e->x.client = NULL;
    pa_destroy(e);
    return rc;
  }
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_parca_series",
                 "Series (one pprof per service and label set of a batch) Parca accepted.", NULL,
                 &e->m_series);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_parca_bytes",
                 "Bytes of gzipped pprof Parca accepted.", NULL, &e->m_bytes);
  *inst = e;
  return 0;
}

static int pa_start(void *inst) {
  paexp *e = inst;
  int rc = otlp_grpc_start(e->x.client);
  if (!rc) e->x.started = true;
  return rc;
}

static void pa_shutdown(void *inst, void (*done)(void *), void *arg) {
  pprof_exp_shutdown(&((paexp *)inst)->x, done, arg);
}

static const sonde_component pa_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "parca",
    .doc = "profiles to Parca (ProfileStoreService/WriteRaw over gRPC)",
    .signals = SONDE_SIGNAL_PROFILES,
    .flags = SONDE_COMP_QUEUED,
    .options = pa_options,
    .config_size = sizeof(pa_config),
    .validate = pa_validate,
    .create = pa_create,
    .start = pa_start,
    .send = pa_send,
    .shutdown = pa_shutdown,
    .destroy = pa_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-parca", "1.0", &pa_component);

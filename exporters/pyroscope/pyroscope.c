/* The `pyroscope` exporter: profiles to Grafana Pyroscope, one pprof per series, i.e. per
 * (service, resource labels) of a batch (pprof_enc.h), over one of Pyroscope's ingestion APIs:
 *
 * - api: ingest (default): POST <endpoint>/ingest?name=<app>.<type>{k=v,...}&from=&until=
 *   &format=pprof&sampleRate=&spyName=, the pprof (gzipped) as the "profile" part of a
 *   multipart/form-data body, as Pyroscope's own SDKs send it; one request per series.
 * - api: push: POST <endpoint>/push.v1.PusherService/Push, a push.v1.PushRequest
 *   (proto/push/v1/push.proto) as application/proto over HTTP/1.1 (Pyroscope serves connect-go,
 *   which takes unary calls that way); one request per batch, a RawProfileSeries per series with
 *   the labels __name__ (process_cpu for CPU profiles), service_name and the resource's.
 * - api: push_grpc: the same call over gRPC.
 *
 * The transport is the otlp_http client (exporters/otlp, otlp_http_call), or for push_grpc the
 * otlp_grpc one (otlp_grpc_call): connections, TLS, deadlines, and otelcol's status rules
 * (429/502/503/504 or UNAVAILABLE and the like retried, Retry-After honoured, others permanent).
 * basic_auth, tenant_id (X-Scope-OrgID) and headers go on every request. With the ingest API a
 * batch's series are sent at most max_conns at a time and the batch is done once every one is
 * answered: any retryable failure retries the whole batch (series already accepted are sent
 * again). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "otlp_common.h"
#include "otlp_exporters.h"
#include "pprof_enc.h"
#include "pprof_exp.h"
#include "push/v1/push.pb-c.h"
#include "sonde/sonde.h"

enum { API_INGEST = 0, API_PUSH = 1, API_PUSH_GRPC = 2 };
static const char *const apis[] = {"ingest", "push", "push_grpc", NULL};

#define MAX_LABELS 64

typedef struct py_auth {
  char *username, *password;
} py_auth;

typedef struct py_config {
  char *endpoint;
  int api;
  py_auth basic_auth;
  char *tenant_id;
  sonde_strmap headers;
  sonde_strmap labels;
  otlp_tls_config tls;
  char *spy_name;
  int64_t gzip_level;
  int64_t max_conns;
} py_config;

static const sonde_option auth_options[] = {
    SONDE_OPT("username", SONDE_OPT_STRING, py_auth, username, NULL, "basic auth user"),
    {.name = "password",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(py_auth, password),
     .doc = "basic auth password",
     .flags = SONDE_OPT_SECRET},
    SONDE_OPT_END,
};

static const sonde_option py_options[] = {
    {.name = "endpoint",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(py_config, endpoint),
     .doc = "base URL of Pyroscope (http:// or https://), e.g. http://pyroscope:4040",
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT_ENUMV("api", py_config, api, "ingest", apis,
                    "ingest: /ingest, pprof per series; push: push.v1.PusherService/Push over "
                    "HTTP/1.1 (connect); push_grpc: the same over gRPC"),
    SONDE_OPT_NESTED("basic_auth", py_config, basic_auth, auth_options,
                     "HTTP basic authentication (Authorization: Basic)"),
    SONDE_OPT("tenant_id", SONDE_OPT_STRING, py_config, tenant_id, NULL,
              "sent as X-Scope-OrgID (multi-tenant Pyroscope)"),
    SONDE_OPT("headers", SONDE_OPT_STRMAP, py_config, headers, NULL,
              "headers added to every request"),
    SONDE_OPT("labels", SONDE_OPT_STRMAP, py_config, labels, NULL,
              "labels added to every profile (after the resource's)"),
    SONDE_OPT_NESTED("tls", py_config, tls, otlp_tls_options, "TLS client settings (https://)"),
    SONDE_OPT("spy_name", SONDE_OPT_STRING, py_config, spy_name, "ebpfspy",
              "ingest API: spyName, the agent Pyroscope shows as the source"),
    SONDE_OPT_RANGE("gzip_level", SONDE_OPT_INT, py_config, gzip_level, "6", 1, 9,
                    "gzip level of the pprof payloads"),
    SONDE_OPT_RANGE("max_conns", SONDE_OPT_INT, py_config, max_conns, "4", 1, 64,
                    "HTTP/1.1 connections (one request in flight on each)"),
    SONDE_OPT_END,
};

typedef struct pyexp {
  pprof_exp x; /* first: the scaffolding's callbacks get it */
  const sonde_host *h;
  const py_config *cfg;
  otlp_config oc; /* the client's configuration, kept for its lifetime */
  char **hk, **hv;
  char base[1024]; /* the endpoint's path, without a trailing '/' */
  bool grpc;       /* api: push_grpc: an otlp_grpc client, else otlp_http */
  char grpc_ep[320];
  sonde_metric *m_profiles, *m_bytes;
} pyexp;

/* One request, built on the thread pool. */
typedef struct preq {
  char *path;
  char ctype[96];
  sonde_buf body;
} preq;

typedef struct job {
  pprof_job base; /* first */
  pyexp *e;
  int enc_status;
  preq *reqs;
  size_t nreqs, profiles, bytes;
  size_t next;    /* the next request to issue */
  size_t pending; /* calls issued and not answered yet */
  bool pumping;   /* inside pump (a call may be answered before it returns) */
  int worst;
  int64_t retry_ns;
} job;

/* ---- encoding (thread pool) ------------------------------------------------------------------ */

static int url_escape(sonde_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    int rc;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~')
      rc = sonde_buf_append(b, s, 1);
    else
      rc = sonde_buf_printf(b, "%%%c%c", hex[c >> 4], hex[c & 15]);
    if (rc) return rc;
  }
  return 0;
}

/* The segment key syntax of the ingest API reserves {}=, and whitespace. */
static void key_value(const char *s, char *out, size_t len) {
  size_t o = 0;
  for (; *s && o + 1 < len; s++)
    out[o++] = strchr("{}=,\" \t\r\n", *s) ? '_' : *s;
  out[o] = 0;
}

/* Labels a series can have: MAX_LABELS of its resource, __name__, service_name, the configured. */
static size_t max_labels(const pyexp *e) {
  return MAX_LABELS + 2 + e->cfg->labels.n;
}

/* name{labels} for the ingest API: the series' labels but __name__ and service_name, which the
 * name part carries. */
static int ingest_key(const pyexp *e, const pprof_enc_svc *s, sonde_buf *k) {
  char ty[64], v[256];
  pprof_enc_profile_name(s, "cpu", "", ty, sizeof ty); /* app.cpu for CPU time */
  key_value(s->service, v, sizeof v);
  size_t nl = max_labels(e);
  pprof_enc_label *l = malloc(nl * sizeof *l);
  if (!l) return SONDE_ENOMEM;
  size_t n = pprof_enc_series_labels(s, ty, &e->cfg->labels, l, nl);
  int rc = sonde_buf_printf(k, "%s.%s{", v, ty);
  for (size_t i = 2; !rc && i < n; i++) {
    key_value(l[i].value, v, sizeof v);
    rc = sonde_buf_printf(k, "%s%s=%s", i == 2 ? "" : ",", l[i].name, v);
  }
  free(l);
  if (!rc) rc = sonde_buf_append(k, "}", 1);
  return rc;
}

static int build_ingest(job *j, const pprof_enc_svc *s, preq *r) {
  const pyexp *e = j->e;
  sonde_buf key = {0}, path = {0};
  int rc = ingest_key(e, s, &key);
  if (!rc) rc = sonde_buf_printf(&path, "%s/ingest?name=", e->base);
  if (!rc) rc = sonde_buf_append(&key, "", 1);
  if (!rc) rc = url_escape(&path, (const char *)key.data);
  int64_t from = s->time_ns / 1000000000,
          until = (s->time_ns + s->duration_ns + 999999999) / 1000000000;
  if (until <= from) until = from + 1;
  if (!rc)
    rc = sonde_buf_printf(&path, "&from=%" PRId64 "&until=%" PRId64 "&format=pprof&spyName=", from,
                          until);
  if (!rc) rc = url_escape(&path, e->cfg->spy_name ? e->cfg->spy_name : "");
  if (!rc && pprof_enc_is_cpu(s) && s->period > 0)
    rc = sonde_buf_printf(&path, "&sampleRate=%" PRId64, (1000000000 + s->period / 2) / s->period);
  if (!rc) rc = sonde_buf_append(&path, "", 1);
  /* multipart/form-data with the profile as the "profile" part, as the SDKs send it */
  uint8_t rnd[12];
  char bnd[40];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) memset(rnd, 0x5a, sizeof rnd);
  int bl = snprintf(bnd, sizeof bnd, "sonde-");
  for (size_t i = 0; i < sizeof rnd; i++)
    bl += snprintf(bnd + bl, sizeof bnd - (size_t)bl, "%02x", rnd[i]);
  snprintf(r->ctype, sizeof r->ctype, "multipart/form-data; boundary=%s", bnd);
  if (!rc)
    rc = sonde_buf_printf(&r->body,
                          "--%s\r\nContent-Disposition: form-data; name=\"profile\"; "
                          "filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream"
                          "\r\n\r\n",
                          bnd);
  if (!rc) rc = sonde_buf_append(&r->body, s->pprof.data, s->pprof.len);
  if (!rc) rc = sonde_buf_printf(&r->body, "\r\n--%s--\r\n", bnd);
  sonde_buf_free(&key);
  if (rc) {
    sonde_buf_free(&path);
    return rc;
  }
  r->path = (char *)path.data;
  return 0;
}

static int build_push(job *j, const pprof_enc_svc *v, size_t n, preq *r) {
  const pyexp *e = j->e;
  int rc = SONDE_ENOMEM;
  Push__V1__PushRequest req = PUSH__V1__PUSH_REQUEST__INIT;
  Push__V1__RawProfileSeries *series = calloc(n, sizeof *series);
  Push__V1__RawProfileSeries **sp = calloc(n, sizeof *sp);
  Push__V1__RawSample *samples = calloc(n, sizeof *samples);
  Push__V1__RawSample **smp = calloc(n, sizeof *smp);
  size_t nl = max_labels(e);
  Types__V1__LabelPair *lp = calloc(n * nl, sizeof *lp);
  Types__V1__LabelPair **lpp = calloc(n * nl, sizeof *lpp);
  pprof_enc_label *lab = calloc(n * nl, sizeof *lab);
  char(*ids)[40] = calloc(n, sizeof *ids);
  if (!series || !sp || !samples || !smp || !lp || !lpp || !lab || !ids) goto out;
  for (size_t i = 0; i < n; i++) {
    const pprof_enc_svc *s = &v[i];
    push__v1__raw_profile_series__init(&series[i]);
    push__v1__raw_sample__init(&samples[i]);
    Types__V1__LabelPair *L = &lp[i * nl];
    Types__V1__LabelPair **LP = &lpp[i * nl];
    pprof_enc_label *sl = &lab[i * nl];
    char name[128];
    pprof_enc_profile_name(s, "process_cpu", "", name, sizeof name);
    size_t m = pprof_enc_series_labels(s, name, &e->cfg->labels, sl, nl);
    for (size_t k = 0; k < m; k++) {
      types__v1__label_pair__init(&L[k]);
      L[k].name = sl[k].name;
      L[k].value = sl[k].value;
      LP[k] = &L[k];
    }
    series[i].labels = LP;
    series[i].n_labels = m;
    /* a random (version 4) UUID per profile */
    uint8_t u[16];
    if (getrandom(u, sizeof u, 0) != (ssize_t)sizeof u) memset(u, (int)i, sizeof u);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    snprintf(ids[i], sizeof ids[i],
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    samples[i].raw_profile.data = s->pprof.data;
    samples[i].raw_profile.len = s->pprof.len;
    samples[i].id = ids[i];
    smp[i] = &samples[i];
    series[i].samples = &smp[i];
    series[i].n_samples = 1;
    sp[i] = &series[i];
  }
  req.series = sp;
  req.n_series = n;
  size_t len = push__v1__push_request__get_packed_size(&req);
  if (sonde_buf_reserve(&r->body, len ? len : 1)) goto out;
  r->body.len = push__v1__push_request__pack(&req, r->body.data);
  snprintf(r->ctype, sizeof r->ctype, "application/proto");
  char path[1200];
  /* gRPC paths are the method's alone; over HTTP the endpoint's path prefixes it */
  snprintf(path, sizeof path, "%s/push.v1.PusherService/Push", e->grpc ? "" : e->base);
  if (!(r->path = strdup(path))) goto out;
  rc = 0;
out:
  free(series);
  free(sp);
  free(samples);
  free(smp);
  free(lp);
  free(lpp);
  free(lab);
  free(ids);
  return rc;
}

static void encode_work(void *arg) {
  job *j = arg;
  j->e = (pyexp *)j->base.x;
  pprof_enc_svc *v;
  size_t n;
  int rc =
      pprof_enc_batch(sonde_batch_profiles(j->base.b), (int)j->e->cfg->gzip_level, true, &v, &n);
  if (rc || !n) {
    j->enc_status = rc;
    return;
  }
  bool push = j->e->cfg->api != API_INGEST;
  size_t nr = push ? 1 : n;
  if (!(j->reqs = calloc(nr, sizeof *j->reqs))) {
    rc = SONDE_ENOMEM;
  } else if (push) {
    rc = build_push(j, v, n, &j->reqs[0]);
    j->nreqs = 1;
  } else {
    for (size_t i = 0; i < n && !rc; i++) {
      rc = build_ingest(j, &v[i], &j->reqs[i]);
      j->nreqs = i + 1;
    }
  }
  j->profiles = n;
  for (size_t i = 0; i < n; i++)
    j->bytes += v[i].pprof.len;
  pprof_enc_free(v, n);
  j->enc_status = rc;
}

/* ---- sending (loop) -------------------------------------------------------------------------- */

static void job_free(job *j) {
  for (size_t i = 0; i < j->nreqs; i++) {
    free(j->reqs[i].path);
    sonde_buf_free(&j->reqs[i].body);
  }
  free(j->reqs);
  pprof_job_free(&j->base);
}

/* Worst outcome wins: a retry over a permanent failure (the batch goes again as a whole). */
static void merge(job *j, int status, int64_t retry_ns) {
  if (status == SONDE_ERETRY) {
    j->worst = SONDE_ERETRY;
    if (retry_ns > j->retry_ns) j->retry_ns = retry_ns;
  } else if (status && j->worst != SONDE_ERETRY) {
    j->worst = SONDE_EPERMANENT;
  }
}

static void finish(job *j) {
  pyexp *e = j->e;
  if (!j->worst) {
    if (e->m_profiles) e->h->api->metric_add(e->m_profiles, (double)j->profiles);
    if (e->m_bytes) e->h->api->metric_add(e->m_bytes, (double)j->bytes);
  }
  j->base.cb(j->base.arg, j->worst, j->worst == SONDE_ERETRY ? j->retry_ns : 0);
  job_free(j);
}

static void call_done(void *arg, int status, int64_t retry_ns);

/* Issues the job's next calls, at most max_conns in flight (more would only wait for a
 * connection in the client). After a retryable failure the rest is not sent: the whole batch goes
 * again, and its series were sent twice. After a permanent one it is (its series may be good).
 * Finishes the job once nothing is in flight and nothing more is to be sent. */
static void pump(job *j) {
  pyexp *e = j->e;
  if (j->pumping) return;
  j->pumping = true;
  while (j->next < j->nreqs && j->worst != SONDE_ERETRY && j->pending < (size_t)e->cfg->max_conns) {
    preq *r = &j->reqs[j->next++];
    /* connect's unary protocol version (servers that require it refuse calls without) */
    static const char *const hn[] = {"Connect-Protocol-Version"}, *const hv[] = {"1"};
    bool push = e->cfg->api == API_PUSH; /* connect over HTTP/1.1 */
    otlp_call c = {.path = r->path,
                   .content_type = r->ctype,
                   .header_names = hn,
                   .header_values = hv,
                   .n_headers = push ? 1 : 0,
                   .body = r->body};
    memset(&r->body, 0, sizeof r->body); /* taken by the call */
    j->pending++;
    int rc = (e->grpc ? otlp_grpc_call : otlp_http_call)(e->x.client, &c, call_done, j);
    if (rc) call_done(j, pprof_exp_call_status(rc), 0);
  }
  j->pumping = false;
  if (j->pending == 0) finish(j);
}

static void call_done(void *arg, int status, int64_t retry_ns) {
  job *j = arg;
  merge(j, status, retry_ns);
  j->pending--;
  pump(j);
}

static void encode_done(void *arg, int status) {
  job *j = arg;
  pyexp *e = j->e = (pyexp *)j->base.x; /* not set when the work was cancelled */
  int st = status ? status : j->enc_status;
  if (st) {
    sonde_log(e->h, SONDE_LOG_ERROR, "cannot encode the profiles: %s", sonde_strerror(st));
    j->worst = pprof_exp_encode_status(st);
    finish(j);
  } else if (!j->nreqs) {
    finish(j); /* nothing sampled: nothing to send */
  } else {
    pump(j);
  }
  pprof_exp_work_done(&e->x);
}

static int py_send(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  pyexp *e = inst;
  return pprof_exp_send(&e->x, b, cb, arg, sizeof(job), encode_work, encode_done);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int py_validate(const void *config, char *err, size_t errlen) {
  const py_config *c = config;
  otlp_url u;
  if (otlp_parse_http_url(c->endpoint, &u, err, errlen)) return SONDE_ECONFIG;
  if (otlp_headers_validate(&c->headers, err, errlen) ||
      otlp_header_validate("X-Scope-OrgID", c->tenant_id, err, errlen))
    return SONDE_ECONFIG;
  if ((c->basic_auth.username && *c->basic_auth.username) !=
      (c->basic_auth.password && *c->basic_auth.password)) {
    snprintf(err, errlen, "basic_auth needs both username and password");
    return SONDE_ECONFIG;
  }
  if (c->basic_auth.username && strchr(c->basic_auth.username, ':')) {
    /* RFC 7617: the user-id ends at the first ':' of user:password */
    snprintf(err, errlen, "basic_auth: the username cannot contain ':'");
    return SONDE_ECONFIG;
  }
  return 0;
}

static void py_destroy(void *inst);

static int add_header(pyexp *e, const char *k, const char *v) {
  size_t n = e->oc.headers.n;
  char **nk = realloc(e->hk, (n + 1) * sizeof *nk);
  if (!nk) return SONDE_ENOMEM;
  e->hk = nk;
  char **nv = realloc(e->hv, (n + 1) * sizeof *nv);
  if (!nv) return SONDE_ENOMEM;
  e->hv = nv;
  e->hk[n] = strdup(k);
  e->hv[n] = strdup(v ? v : "");
  e->oc.headers.keys = e->hk;
  e->oc.headers.values = e->hv;
  e->oc.headers.n = n + 1;
  if (!e->hk[n] || !e->hv[n]) return SONDE_ENOMEM;
  return 0;
}

static int py_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  (void)signals;
  const py_config *cfg = config;
  pyexp *e = calloc(1, sizeof *e);
  if (!e) return SONDE_ENOMEM;
  e->h = e->x.h = h;
  e->cfg = cfg;
  e->grpc = cfg->api == API_PUSH_GRPC;
  e->x.client_shutdown = e->grpc ? otlp_grpc_shutdown : otlp_http_shutdown;
  char err[512];
  otlp_url u;
  int rc = otlp_parse_http_url(cfg->endpoint, &u, err, sizeof err);
  if (rc) {
    sonde_log(h, SONDE_LOG_ERROR, "%s", err);
    goto fail;
  }
  size_t bl = strlen(u.path);
  while (bl && u.path[bl - 1] == '/')
    bl--;
  snprintf(e->base, sizeof e->base, "%.*s", (int)bl, u.path);
  e->oc.profiles_endpoint = cfg->endpoint;
  e->oc.tls = cfg->tls;
  e->oc.compression = OTLP_COMP_NONE; /* the pprof inside is gzipped */
  e->oc.max_conns = cfg->max_conns;
  e->oc.user_agent = "sonde-pyroscope-exporter/" SONDE_OTLP_VERSION;
  for (size_t i = 0; i < cfg->headers.n && !rc; i++)
    rc = add_header(e, cfg->headers.keys[i], cfg->headers.values[i]);
  if (!rc && cfg->tenant_id && *cfg->tenant_id) rc = add_header(e, "X-Scope-OrgID", cfg->tenant_id);
  if (!rc && cfg->basic_auth.username && *cfg->basic_auth.username) {
    char up[1024], b64[1400], hv[1500];
    int n = snprintf(up, sizeof up, "%s:%s", cfg->basic_auth.username,
                     cfg->basic_auth.password ? cfg->basic_auth.password : "");
    if (n < 0 || (size_t)n >= sizeof up) {
      sonde_log(h, SONDE_LOG_ERROR, "basic_auth: username and password too long");
      rc = SONDE_ECONFIG;
      goto fail;
    }
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)up, n);
    snprintf(hv, sizeof hv, "Basic %s", b64);
    rc = add_header(e, "Authorization", hv);
  }
  if (rc) goto fail;
  if (e->grpc) {
    /* gRPC takes host:port; http:// is h2c and https:// TLS, as the endpoint's scheme says */
    snprintf(e->grpc_ep, sizeof e->grpc_ep, "%s://%s", u.tls ? "https" : "http", u.authority);
    e->oc.endpoint = e->grpc_ep;
    e->oc.profiles_endpoint = NULL;
    rc = otlp_grpc_create(h, &e->oc, 0, &e->x.client);
  } else {
    rc = otlp_http_create(h, &e->oc, 0, &e->x.client);
  }
  if (rc) {
    e->x.client = NULL; /* freed by the failed create */
    goto fail;
  }
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_pyroscope_profiles",
                 "Profiles (one per service and label set of a batch) Pyroscope accepted.", NULL,
                 &e->m_profiles);
  h->api->metric(h, SONDE_METRIC_COUNTER, "sonde_exporter_pyroscope_bytes",
                 "Bytes of gzipped pprof Pyroscope accepted.", NULL, &e->m_bytes);
  *inst = e;
  return 0;
fail:
  py_destroy(e);
  return rc;
}

static int py_start(void *inst) {
  pyexp *e = inst;
  int rc = e->grpc ? otlp_grpc_start(e->x.client) : otlp_http_start(e->x.client);
  if (!rc) e->x.started = true;
  return rc;
}

static void py_shutdown(void *inst, void (*done)(void *), void *arg) {
  pprof_exp_shutdown(&((pyexp *)inst)->x, done, arg);
}

static void py_destroy(void *inst) {
  pyexp *e = inst;
  if (!e) return;
  if (e->x.client) (e->grpc ? otlp_grpc_destroy : otlp_http_destroy)(e->x.client);
  for (size_t i = 0; i < e->oc.headers.n; i++) {
    free(e->hk[i]);
    free(e->hv[i]);
  }
  free(e->hk);
  free(e->hv);
  free(e);
}

static const sonde_component py_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXPORTER,
    .type = "pyroscope",
    .doc = "profiles to Grafana Pyroscope (/ingest pprof or push.v1 Push)",
    .signals = SONDE_SIGNAL_PROFILES,
    .flags = SONDE_COMP_QUEUED,
    .options = py_options,
    .config_size = sizeof(py_config),
    .validate = py_validate,
    .create = py_create,
    .start = py_start,
    .send = py_send,
    .shutdown = py_shutdown,
    .destroy = py_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-pyroscope", "1.0", &py_component);

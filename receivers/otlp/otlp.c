/* The `otlp` receiver: otelcol's otlpreceiver, OTLP/gRPC (otlp_grpc.c, otlp_h2.c) and OTLP/HTTP
 * (otlp_http.c on the core's HTTP/1.1 server) for traces, metrics, logs and profiles.
 *
 * A protocol listens when its section is written (`grpc:` alone means its defaults), as in
 * otelcol; `endpoint: none` also turns one off (sonde only).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otlp_grpc.h"
#include "otlp_internal.h"

typedef struct otlp_tls_cfg {
  char *cert_file, *key_file, *client_ca_file;
} otlp_tls_cfg;

typedef struct otlp_ka_server {
  int64_t time_ns, timeout_ns, max_connection_idle_ns;
} otlp_ka_server;

typedef struct otlp_ka_cfg {
  otlp_ka_server server_parameters;
} otlp_ka_cfg;

typedef struct otlp_grpc_cfg {
  char *endpoint;
  char *transport;
  int64_t max_recv_msg_size_mib;
  int64_t max_concurrent_streams;
  uint64_t read_buffer_size, write_buffer_size;
  int64_t read_timeout_ns;
  otlp_tls_cfg tls;
  otlp_ka_cfg keepalive;
} otlp_grpc_cfg;

typedef struct otlp_http_cfg {
  char *endpoint;
  uint64_t max_request_body_size;
  int64_t read_timeout_ns;
  char *traces_url_path, *metrics_url_path, *logs_url_path, *profiles_url_path;
  otlp_tls_cfg tls;
} otlp_http_cfg;

typedef struct otlp_protocols {
  otlp_grpc_cfg grpc;
  otlp_http_cfg http;
  bool has_grpc, has_http; /* the section was written */
} otlp_protocols;

typedef struct otlp_config {
  otlp_protocols protocols;
} otlp_config;

static const sonde_option tls_options[] = {
    SONDE_OPT("cert_file", SONDE_OPT_STRING, otlp_tls_cfg, cert_file, NULL,
              "server certificate (PEM); with key_file turns TLS on"),
    SONDE_OPT("key_file", SONDE_OPT_STRING, otlp_tls_cfg, key_file, NULL,
              "server private key (PEM)"),
    SONDE_OPT("client_ca_file", SONDE_OPT_STRING, otlp_tls_cfg, client_ca_file, NULL,
              "CA bundle that client certificates must chain to (mTLS)"),
    SONDE_OPT_END,
};

static const sonde_option ka_server_options[] = {
    SONDE_OPT("time", SONDE_OPT_DURATION, otlp_ka_server, time_ns, "2h",
              "PING the client after this long without activity"),
    SONDE_OPT("timeout", SONDE_OPT_DURATION, otlp_ka_server, timeout_ns, "20s",
              "close the connection when the PING is not answered within this"),
    SONDE_OPT("max_connection_idle", SONDE_OPT_DURATION, otlp_ka_server, max_connection_idle_ns,
              "0s", "GOAWAY after this long without an open stream (0: never)"),
    SONDE_OPT_END,
};

static const sonde_option ka_options[] = {
    SONDE_OPT_NESTED("server_parameters", otlp_ka_cfg, server_parameters, ka_server_options,
                     "server-side keepalive"),
    SONDE_OPT_END,
};

static const sonde_option grpc_options[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, otlp_grpc_cfg, endpoint, "localhost:4317",
              "host:port to listen on (\"none\": no gRPC listener)"),
    SONDE_OPT("transport", SONDE_OPT_STRING, otlp_grpc_cfg, transport, "tcp", "only tcp"),
    SONDE_OPT_RANGE("max_recv_msg_size_mib", SONDE_OPT_INT, otlp_grpc_cfg, max_recv_msg_size_mib,
                    "4", 0, 4095, "largest request message in MiB, after decompression (0: 4)"),
    SONDE_OPT_RANGE("max_concurrent_streams", SONDE_OPT_INT, otlp_grpc_cfg, max_concurrent_streams,
                    "100", 0, 1e6, "HTTP/2 streams per connection (0: 100)"),
    SONDE_OPT("read_buffer_size", SONDE_OPT_BYTES, otlp_grpc_cfg, read_buffer_size, "512KiB",
              "accepted for compatibility, not used"),
    SONDE_OPT("write_buffer_size", SONDE_OPT_BYTES, otlp_grpc_cfg, write_buffer_size, "0",
              "accepted for compatibility, not used"),
    SONDE_OPT("read_timeout", SONDE_OPT_DURATION, otlp_grpc_cfg, read_timeout_ns, "30s",
              "close a connection whose open request receives nothing for this long (sonde)"),
    SONDE_OPT_NESTED("tls", otlp_grpc_cfg, tls, tls_options, "TLS and mTLS"),
    SONDE_OPT_NESTED("keepalive", otlp_grpc_cfg, keepalive, ka_options, "HTTP/2 keepalive"),
    SONDE_OPT_END,
};

static const sonde_option http_options[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, otlp_http_cfg, endpoint, "localhost:4318",
              "host:port to listen on (\"none\": no HTTP listener)"),
    SONDE_OPT("max_request_body_size", SONDE_OPT_BYTES, otlp_http_cfg, max_request_body_size,
              "20MiB", "largest request body, on the wire and after decompression (413)"),
    SONDE_OPT("read_timeout", SONDE_OPT_DURATION, otlp_http_cfg, read_timeout_ns, "30s",
              "close a connection whose request does not arrive within this"),
    SONDE_OPT("traces_url_path", SONDE_OPT_STRING, otlp_http_cfg, traces_url_path, "/v1/traces",
              "path of trace exports"),
    SONDE_OPT("metrics_url_path", SONDE_OPT_STRING, otlp_http_cfg, metrics_url_path, "/v1/metrics",
              "path of metric exports"),
    SONDE_OPT("logs_url_path", SONDE_OPT_STRING, otlp_http_cfg, logs_url_path, "/v1/logs",
              "path of log exports"),
    SONDE_OPT("profiles_url_path", SONDE_OPT_STRING, otlp_http_cfg, profiles_url_path,
              "/v1development/profiles", "path of profile exports (sonde)"),
    SONDE_OPT_NESTED("tls", otlp_http_cfg, tls, tls_options, "not supported on HTTP yet"),
    SONDE_OPT_END,
};

static const sonde_option protocol_options[] = {
    SONDE_OPT_NESTED_P("grpc", otlp_protocols, grpc, has_grpc, grpc_options,
                       "OTLP/gRPC server (listens when this section is written)"),
    SONDE_OPT_NESTED_P("http", otlp_protocols, http, has_http, http_options,
                       "OTLP/HTTP server (listens when this section is written)"),
    SONDE_OPT_END,
};

static const sonde_option otlp_options[] = {
    SONDE_OPT_NESTED("protocols", otlp_config, protocols, protocol_options,
                     "grpc and http servers"),
    SONDE_OPT_END,
};

static bool enabled(const char *endpoint) {
  return endpoint && strcmp(endpoint, "none") != 0;
}

static bool good_path(const char *p) {
  return p && p[0] == '/';
}

/* otelcol's URL path options may be written without the leading slash; it adds one. */
static int otlp_validate(const void *config, char *err, size_t errlen) {
  const otlp_config *c = config;
  const otlp_grpc_cfg *g = &c->protocols.grpc;
  const otlp_http_cfg *h = &c->protocols.http;
  if (!(c->protocols.has_grpc && enabled(g->endpoint)) &&
      !(c->protocols.has_http && enabled(h->endpoint))) {
    snprintf(err, errlen, "must specify at least one protocol when using the OTLP receiver");
    return SONDE_ECONFIG;
  }
  if (g->transport && strcmp(g->transport, "tcp") != 0) {
    snprintf(err, errlen, "protocols::grpc::transport: only \"tcp\" is supported");
    return SONDE_ECONFIG;
  }
  if (!g->tls.cert_file != !g->tls.key_file) {
    snprintf(err, errlen, "protocols::grpc::tls: cert_file and key_file go together");
    return SONDE_ECONFIG;
  }
  if (g->tls.client_ca_file && !g->tls.cert_file) {
    snprintf(err, errlen, "protocols::grpc::tls: client_ca_file needs cert_file and key_file");
    return SONDE_ECONFIG;
  }
  if (h->tls.cert_file || h->tls.key_file || h->tls.client_ca_file) {
    snprintf(err, errlen, "protocols::http::tls: TLS is not supported on OTLP/HTTP yet");
    return SONDE_ECONFIG;
  }
  const char *paths[] = {h->traces_url_path, h->metrics_url_path, h->logs_url_path,
                         h->profiles_url_path};
  for (size_t i = 0; i < 4; i++)
    if (!paths[i] || !paths[i][0]) {
      snprintf(err, errlen, "protocols::http: url paths must not be empty");
      return SONDE_ECONFIG;
    }
  return 0;
}

typedef struct otlp_recv {
  const sonde_host *h;
  const otlp_config *cfg;
  uint32_t signals; /* what the pipelines take from this receiver */
  sonde_http_server *http;
  otlp_grpc_server *grpc;
  char *paths[4]; /* with a leading '/' */
  otlp_http_paths hp;
  void (*done)(void *);
  void *done_arg;
} otlp_recv;

static int consume_grpc(void *arg, sonde_batch *b) {
  otlp_recv *r = arg;
  return r->h->api->consume(r->h, b, "grpc");
}

static int consume_http(void *arg, sonde_batch *b) {
  otlp_recv *r = arg;
  return r->h->api->consume(r->h, b, "http");
}

static void on_http(void *arg, sonde_http_request *req) {
  otlp_recv *r = arg;
  const sonde_host_api *api = r->h->api;
  size_t len;
  const uint8_t *body = api->http_body(req, &len);
  otlp_http_reply rep;
  otlp_http_handle(&r->hp, r->cfg->protocols.http.max_request_body_size, api->http_method(req),
                   api->http_path(req), api->http_header(req, "Content-Type"),
                   api->http_header(req, "Content-Encoding"), body, len, consume_http, r, &rep);
  api->http_respond(req, rep.status, rep.content_type, rep.headers, rep.body.data, rep.body.len);
  sonde_buf_free(&rep.body);
}

static char *with_slash(const char *p) {
  size_t n = strlen(p);
  char *s = malloc(n + 2);
  if (!s) return NULL;
  snprintf(s, n + 2, "%s%s", good_path(p) ? "" : "/", p);
  return s;
}

static int otlp_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  const otlp_config *c = config;
  otlp_recv *r = calloc(1, sizeof *r);
  if (!r) return SONDE_ENOMEM;
  r->h = h;
  r->cfg = c;
  r->signals = signals;
  const otlp_http_cfg *hc = &c->protocols.http;
  const char *src[4] = {hc->traces_url_path, hc->metrics_url_path, hc->logs_url_path,
                        hc->profiles_url_path};
  for (size_t i = 0; i < 4; i++) {
    if (!(r->paths[i] = with_slash(src[i]))) {
      for (size_t k = 0; k < i; k++)
        free(r->paths[k]);
      free(r);
      return SONDE_ENOMEM;
    }
  }
  /* Only the signals some pipeline takes from this receiver get a path; others answer 404. */
  r->hp.traces = signals & SONDE_SIGNAL_TRACES ? r->paths[0] : NULL;
  r->hp.metrics = signals & SONDE_SIGNAL_METRICS ? r->paths[1] : NULL;
  r->hp.logs = signals & SONDE_SIGNAL_LOGS ? r->paths[2] : NULL;
  r->hp.profiles = signals & SONDE_SIGNAL_PROFILES ? r->paths[3] : NULL;
  *inst = r;
  return 0;
}

static void otlp_destroy(void *inst);

static int otlp_start(void *inst) {
  otlp_recv *r = inst;
  const otlp_grpc_cfg *g = &r->cfg->protocols.grpc;
  const otlp_http_cfg *hc = &r->cfg->protocols.http;
  char err[512];
  int rc;
  if (r->cfg->protocols.has_grpc && enabled(g->endpoint)) {
    int64_t mib = g->max_recv_msg_size_mib ? g->max_recv_msg_size_mib : 4;
    otlp_grpc_opts o = {
        .endpoint = g->endpoint,
        .max_msg = (size_t)mib << 20,
        .max_streams = g->max_concurrent_streams ? (uint32_t)g->max_concurrent_streams : 100,
        .signals = r->signals ? r->signals : SONDE_SIGNAL_ALL,
        .cert_file = g->tls.cert_file,
        .key_file = g->tls.key_file,
        .client_ca_file = g->tls.client_ca_file,
        .keepalive_time_ms = (uint64_t)g->keepalive.server_parameters.time_ns / 1000000,
        .keepalive_timeout_ms = (uint64_t)g->keepalive.server_parameters.timeout_ns / 1000000,
        .read_timeout_ms = (uint64_t)g->read_timeout_ns / 1000000,
        .max_idle_ms = (uint64_t)g->keepalive.server_parameters.max_connection_idle_ns / 1000000,
    };
    err[0] = 0;
    if ((rc = otlp_grpc_listen(r->h, &o, consume_grpc, r, &r->grpc, err, sizeof err))) {
      sonde_log(r->h, SONDE_LOG_ERROR, "%s", err[0] ? err : sonde_strerror(rc));
      return rc;
    }
    sonde_log(r->h, SONDE_LOG_INFO, "Starting GRPC server endpoint=%s%s", g->endpoint,
              g->tls.cert_file ? " (TLS)" : "");
  }
  if (r->cfg->protocols.has_http && enabled(hc->endpoint)) {
    sonde_http_options ho = {.max_body_size = hc->max_request_body_size,
                             .read_timeout_ns = hc->read_timeout_ns};
    rc = r->h->api->http_listen(r->h, hc->endpoint, &ho, on_http, r, &r->http);
    if (rc) {
      sonde_log(r->h, SONDE_LOG_ERROR, "cannot start the OTLP/HTTP server on %s: %s", hc->endpoint,
                sonde_strerror(rc));
      if (r->grpc) {
        otlp_grpc_close(r->grpc, NULL, NULL); /* frees itself once its handles closed */
        r->grpc = NULL;
      }
      return rc;
    }
    sonde_log(r->h, SONDE_LOG_INFO, "Starting HTTP server endpoint=%s", hc->endpoint);
  }
  return 0;
}

static void grpc_closed(void *arg) {
  otlp_recv *r = arg;
  r->grpc = NULL;
  if (r->done) r->done(r->done_arg);
}

static void otlp_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  otlp_recv *r = inst;
  if (r->http) {
    r->h->api->http_close(r->http);
    r->http = NULL;
  }
  if (r->grpc) {
    r->done = done;
    r->done_arg = arg;
    otlp_grpc_close(r->grpc, grpc_closed, r);
    return;
  }
  done(arg);
}

static void otlp_destroy(void *inst) {
  otlp_recv *r = inst;
  if (!r) return;
  if (r->http) r->h->api->http_close(r->http);
  if (r->grpc) otlp_grpc_close(r->grpc, NULL, NULL);
  for (size_t i = 0; i < 4; i++)
    free(r->paths[i]);
  free(r);
}

static const sonde_component otlp_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_RECEIVER,
    .type = "otlp",
    .doc = "receives OTLP over gRPC and HTTP (protobuf and JSON), all four signals",
    .signals = SONDE_SIGNAL_ALL,
    .options = otlp_options,
    .config_size = sizeof(otlp_config),
    .validate = otlp_validate,
    .create = otlp_create,
    .start = otlp_start,
    .shutdown = otlp_shutdown,
    .destroy = otlp_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-otlp-receiver", "1.0", &otlp_component);

/* The `health_check` extension: otelcol-contrib's healthcheckextension (the classic one).
 *
 * GET (any method, as otelcol) on `path` answers 200 {"status":"Server available",...} while
 * host->api->service_status() is 0 and 503 {"status":"Server not available",...} otherwise, e.g.
 * while the service starts or stops. A path ending in "/" also matches everything below it, as Go's
 * ServeMux does; other paths get 404.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sonde/sonde.h"

typedef struct hc_body {
  char *healthy;
  char *unhealthy;
} hc_body;

typedef struct hc_config {
  char *endpoint;
  char *path;
  hc_body response_body;
} hc_config;

static const sonde_option body_options[] = {
    SONDE_OPT("healthy", SONDE_OPT_STRING, hc_body, healthy, NULL,
              "body answered when healthy, instead of the JSON status"),
    SONDE_OPT("unhealthy", SONDE_OPT_STRING, hc_body, unhealthy, NULL,
              "body answered when unhealthy, instead of the JSON status"),
    SONDE_OPT_END,
};

static const sonde_option hc_options[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, hc_config, endpoint, "localhost:13133",
              "host:port to listen on"),
    SONDE_OPT("path", SONDE_OPT_STRING, hc_config, path, "/", "path answering the health check"),
    SONDE_OPT_NESTED("response_body", hc_config, response_body, body_options,
                     "fixed response bodies"),
    SONDE_OPT_END,
};

static int hc_validate(const void *config, char *err, size_t errlen) {
  const hc_config *c = config;
  if (!c->endpoint || !c->endpoint[0]) {
    snprintf(err, errlen, "bad config: endpoint must be specified");
    return SONDE_ECONFIG;
  }
  if (!c->path || c->path[0] != '/') {
    snprintf(err, errlen, "bad config: path must start with /");
    return SONDE_ECONFIG;
  }
  return 0;
}

typedef struct healthcheck {
  const sonde_host *h;
  const hc_config *cfg;
  sonde_http_server *srv;
  struct timespec up_since; /* when the service was last seen turning healthy */
  bool was_healthy;
} healthcheck;

/* Go's time.Duration.String(), which otelcol puts in "uptime". */
static void go_duration(char *out, size_t len, int64_t ns) {
  if (ns <= 0) {
    snprintf(out, len, "0s");
    return;
  }
  char frac[16];
  const char *unit;
  int64_t whole, rest, scale;
  if (ns < 1000) {
    snprintf(out, len, "%lldns", (long long)ns);
    return;
  }
  if (ns < 1000000)
    unit = "µs", scale = 1000;
  else if (ns < 1000000000)
    unit = "ms", scale = 1000000;
  else
    unit = "s", scale = 1000000000;
  whole = ns / scale;
  rest = ns % scale;
  frac[0] = 0;
  if (rest) {
    int digits = scale == 1000 ? 3 : scale == 1000000 ? 6 : 9;
    snprintf(frac, sizeof(frac), ".%0*lld", digits, (long long)rest);
    size_t l = strlen(frac);
    while (frac[l - 1] == '0')
      frac[--l] = 0;
  }
  if (scale != 1000000000 || whole < 60) {
    snprintf(out, len, "%lld%s%s", (long long)whole, frac, unit);
    return;
  }
  int64_t h = whole / 3600, m = whole / 60 % 60, s = whole % 60;
  if (h)
    snprintf(out, len, "%lldh%lldm%lld%ss", (long long)h, (long long)m, (long long)s, frac);
  else
    snprintf(out, len, "%lldm%lld%ss", (long long)m, (long long)s, frac);
}

static bool path_matches(const char *want, const char *got) {
  size_t l = strlen(want);
  if (l && want[l - 1] == '/') return strncmp(want, got, l) == 0;
  return strcmp(want, got) == 0;
}

static void handle(void *arg, sonde_http_request *req) {
  healthcheck *hc = arg;
  const sonde_host_api *api = hc->h->api;
  if (!path_matches(hc->cfg->path, api->http_path(req))) {
    static const char nf[] = "404 page not found\n";
    api->http_respond(req, 404, "text/plain; charset=utf-8", NULL, nf, sizeof(nf) - 1);
    return;
  }
  bool healthy = api->service_status(hc->h) == 0;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  if (healthy && !hc->was_healthy) hc->up_since = now;
  hc->was_healthy = healthy;

  const char *custom = healthy ? hc->cfg->response_body.healthy : hc->cfg->response_body.unhealthy;
  if (custom) {
    api->http_respond(req, healthy ? 200 : 503, "application/json", NULL, custom, strlen(custom));
    return;
  }
  char body[256];
  int n;
  if (healthy) {
    struct tm tm;
    char ts[64], frac[16] = "", up[64];
    gmtime_r(&hc->up_since.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    if (hc->up_since.tv_nsec) {
      snprintf(frac, sizeof(frac), ".%09ld", hc->up_since.tv_nsec);
      size_t l = strlen(frac);
      while (frac[l - 1] == '0')
        frac[--l] = 0;
    }
    int64_t ns = (int64_t)(now.tv_sec - hc->up_since.tv_sec) * 1000000000 +
                 (now.tv_nsec - hc->up_since.tv_nsec);
    go_duration(up, sizeof(up), ns);
    n = snprintf(body, sizeof(body),
                 "{\"status\":\"Server available\",\"upSince\":\"%s%sZ\",\"uptime\":\"%s\"}", ts,
                 frac, up);
  } else {
    n = snprintf(body, sizeof(body),
                 "{\"status\":\"Server not available\","
                 "\"upSince\":\"0001-01-01T00:00:00Z\",\"uptime\":\"\"}");
  }
  api->http_respond(req, healthy ? 200 : 503, "application/json", NULL, body, (size_t)n);
}

static int hc_create(const sonde_host *h, const void *config, uint32_t signals, void **inst) {
  healthcheck *hc = calloc(1, sizeof(*hc));
  if (!hc) return SONDE_ENOMEM;
  hc->h = h;
  hc->cfg = config;
  *inst = hc;
  return 0;
}

static int hc_start(void *inst) {
  healthcheck *hc = inst;
  /* Extensions start first: the service is taken to be up from here unless seen otherwise. */
  clock_gettime(CLOCK_REALTIME, &hc->up_since);
  hc->was_healthy = true;
  int rc = hc->h->api->http_listen(hc->h, hc->cfg->endpoint, NULL, handle, hc, &hc->srv);
  if (rc) {
    hc->srv = NULL;
    sonde_log(hc->h, SONDE_LOG_ERROR, "cannot listen on %s: %s", hc->cfg->endpoint,
              sonde_strerror(rc));
    return rc;
  }
  sonde_log(hc->h, SONDE_LOG_INFO, "health check on http://%s%s", hc->cfg->endpoint, hc->cfg->path);
  return 0;
}

static void hc_shutdown(void *inst, void (*done)(void *arg), void *arg) {
  healthcheck *hc = inst;
  if (hc->srv) {
    hc->h->api->http_close(hc->srv);
    hc->srv = NULL;
  }
  done(arg);
}

static void hc_destroy(void *inst) {
  healthcheck *hc = inst;
  if (!hc) return;
  if (hc->srv) hc->h->api->http_close(hc->srv);
  free(hc);
}

static const sonde_component hc_component = {
    .struct_size = sizeof(sonde_component),
    .kind = SONDE_KIND_EXTENSION,
    .type = "health_check",
    .doc = "HTTP endpoint answering 200 while the service is healthy, 503 otherwise",
    .options = hc_options,
    .config_size = sizeof(hc_config),
    .validate = hc_validate,
    .create = hc_create,
    .start = hc_start,
    .shutdown = hc_shutdown,
    .destroy = hc_destroy,
};

SONDE_PLUGIN_DEFINE("sonde-health-check", "1.0", &hc_component);

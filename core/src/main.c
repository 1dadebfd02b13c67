/* sonde: the command line, the loop, signals (drain on SIGINT/SIGTERM, reload on SIGHUP) and the
 * self-metrics endpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cfg.h"
#include "httpd.h"
#include "loader.h"
#include "log.h"
#include "queue.h"
#include "service.h"
#include "sonde/version.h"
#include "telemetry.h"

#define MAX_ARGS 64

typedef struct opts {
  const char *cmd;
  const char *configs[MAX_ARGS];
  size_t nconfigs;
  const char *sets[MAX_ARGS];
  size_t nsets;
  const char *plugin_paths[MAX_ARGS];
  size_t npaths;
  int64_t shutdown_timeout;
  const char *mode;
} opts;

/* One configuration and what was built from it; reload builds a new one beside the old. */
typedef struct gen {
  sonde__cfg_node *root;
  sonde__registry reg;
  sonde__service *svc;
  struct gen *next_retired;
} gen;

static struct {
  opts o;
  uv_loop_t *loop;
  sonde__metrics *metrics;
  sonde_http_server *metrics_srv;
  char metrics_ep[256];
  uv_signal_t sigint, sigterm, sighup;
  gen *cur, *next;
  int exit_code;
  bool stopping, reloading;
  sonde__cfg_node *back_root; /* the previous config while a reload falls back to it */
  gen *retired; /* stopped generations whose plug-in code stays mapped until the loop ends */
  struct timespec t0;
} G;

static void usage(FILE *f) {
  fprintf(f,
          "usage: sonde [run] --config FILE [--config FILE ...] [--set KEY=VALUE ...]\n"
          "             [--plugin-path DIR ...] [--shutdown-timeout DURATION]\n"
          "       sonde validate --config FILE ...    check a configuration and exit\n"
          "       sonde print-config --config FILE ... [--mode effective|merged]\n"
          "       sonde components [--plugin-path DIR ...]\n"
          "       sonde --version | --help\n"
          "\n"
          "Configuration files are merged in order (later wins); --set applies after them\n"
          "(KEY is a::b::c, or a.b.c when it has no '::'). ${env:VAR}, ${VAR} and\n"
          "${env:VAR:-default} expand; $$ is a literal $. SIGHUP reloads, SIGINT/SIGTERM drain.\n");
}

static int parse_args(int argc, char **argv, opts *o) {
  o->shutdown_timeout = 10000000000LL;
  o->mode = "effective";
  int i = 1;
  if (i < argc && argv[i][0] != '-') {
    o->cmd = argv[i++];
    if (strcmp(o->cmd, "run") && strcmp(o->cmd, "validate") && strcmp(o->cmd, "components") &&
        strcmp(o->cmd, "print-config")) {
      fprintf(stderr, "sonde: unknown command \"%s\"\n", o->cmd);
      return 2;
    }
  } else {
    o->cmd = "run";
  }
  for (; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    const char *eq = strchr(a, '=');
    char name[64];
    size_t nl = eq && a[0] == '-' ? (size_t)(eq - a) : strlen(a);
    snprintf(name, sizeof name, "%.*s", (int)(nl < 63 ? nl : 63), a);
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-v") == 0) {
      printf("sonde %s (plug-in ABI %d.%d)\n", SONDE_VERSION, SONDE_ABI_MAJOR, SONDE_ABI_MINOR);
      exit(0);
    }
    bool takes = !strcmp(name, "--config") || !strcmp(name, "-c") || !strcmp(name, "--set") ||
                 !strcmp(name, "--plugin-path") || !strcmp(name, "--shutdown-timeout") ||
                 !strcmp(name, "--mode");
    if (!takes) {
      fprintf(stderr, "sonde: unknown option \"%s\" (see sonde --help)\n", a);
      return 2;
    }
    if (eq && a[0] == '-')
      v = eq + 1;
    else if (i + 1 < argc)
      v = argv[++i];
    else {
      fprintf(stderr, "sonde: %s needs a value\n", name);
      return 2;
    }
    if (!strcmp(name, "--config") || !strcmp(name, "-c")) {
      if (o->nconfigs == MAX_ARGS) return 2;
      o->configs[o->nconfigs++] = v;
    } else if (!strcmp(name, "--set")) {
      if (o->nsets == MAX_ARGS) return 2;
      o->sets[o->nsets++] = v;
    } else if (!strcmp(name, "--plugin-path")) {
      if (o->npaths == MAX_ARGS) return 2;
      o->plugin_paths[o->npaths++] = v;
    } else if (!strcmp(name, "--mode")) {
      if (strcmp(v, "effective") && strcmp(v, "merged")) {
        fprintf(stderr, "sonde: --mode is effective or merged\n");
        return 2;
      }
      o->mode = v;
    } else if (sonde__parse_duration(v, &o->shutdown_timeout)) {
      fprintf(stderr, "sonde: invalid --shutdown-timeout \"%s\"\n", v);
      return 2;
    }
  }
  if (strcmp(o->cmd, "components") && o->nconfigs == 0) {
    fprintf(stderr, "sonde: at least one --config FILE is required\n");
    return 2;
  }
  return 0;
}

static int load_config(const opts *o, sonde__cfg_node **out, char *err, size_t errlen) {
  sonde__cfg_node *root = NULL;
  int rc = 0;
  for (size_t i = 0; i < o->nconfigs && !rc; i++) {
    sonde__cfg_node *n = NULL;
    rc = sonde__cfg_parse_file(o->configs[i], &n, err, errlen);
    if (!rc) rc = root ? sonde__cfg_merge(&root, n, err, errlen) : (root = n, 0);
  }
  for (size_t i = 0; i < o->nsets && !rc; i++)
    rc = sonde__cfg_set(&root, o->sets[i], err, errlen);
  if (!rc) rc = sonde__cfg_expand(root, err, errlen);
  if (rc) {
    sonde__cfg_free(root);
    return rc;
  }
  *out = root;
  return 0;
}

static void gen_free(gen *g) {
  if (!g) return;
  sonde__service_free(g->svc);
  sonde__registry_free(&g->reg);
  sonde__cfg_free(g->root);
  free(g);
}

/* A stopped generation: its service is freed now, but libuv may still run close callbacks that
 * live in its plug-ins, so their libraries are unloaded only after the loop has finished. */
static void gen_retire(gen *g) {
  sonde__service_free(g->svc);
  g->svc = NULL;
  sonde__cfg_free(g->root);
  g->root = NULL;
  g->next_retired = G.retired;
  G.retired = g;
}

/* Everything short of creating components: parse, load plug-ins, bind, validate. */
static int gen_build(const opts *o, sonde__cfg_node *root, gen **out, char *err, size_t errlen) {
  gen *g = calloc(1, sizeof *g);
  if (!g) return SONDE_ENOMEM;
  int rc = root ? (g->root = root, 0) : load_config(o, &g->root, err, errlen);
  if (!rc) {
    rc = sonde__registry_load_default(&g->reg, o->plugin_paths, o->npaths);
    if (rc) snprintf(err, errlen, "loading plug-ins: %s", sonde_strerror(rc));
  }
  if (!rc) rc = sonde__service_build(g->root, &g->reg, G.loop, G.metrics, &g->svc, err, errlen);
  if (rc) {
    gen_free(g);
    return rc;
  }
  *out = g;
  return 0;
}

static void metrics_handler(void *arg, sonde_http_request *req) {
  if (strcmp(sonde__http_path(req), "/metrics") != 0) {
    sonde__http_respond(req, 404, "text/plain", NULL, "not found\n", 10);
    return;
  }
  sonde_buf b = {0};
  if (sonde__metrics_render(G.metrics, &b)) {
    sonde_buf_free(&b);
    sonde__http_respond(req, 500, "text/plain", NULL, "out of memory\n", 14);
    return;
  }
  sonde__http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
  sonde_buf_free(&b);
}

static int apply_telemetry(gen *g) {
  const sonde__telemetry_cfg *t = sonde__service_telemetry(g->svc);
  sonde__log_set_level((sonde_log_level)t->logs.level);
  char ep[256];
  const char *want = sonde__service_metrics_endpoint(g->svc, ep, sizeof ep);
  if (G.metrics_srv && (!want || strcmp(want, G.metrics_ep) != 0)) {
    sonde__http_close(G.metrics_srv);
    G.metrics_srv = NULL;
  }
  if (want && !G.metrics_srv) {
    char err[512];
    int rc = sonde__http_listen(G.loop, want, NULL, metrics_handler, NULL, &G.metrics_srv, err,
                                sizeof err);
    if (rc) {
      sonde__error("service::telemetry::metrics: %s", err);
      return rc;
    }
    snprintf(G.metrics_ep, sizeof G.metrics_ep, "%s", want);
  }
  return 0;
}

static double ms_since_start(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - G.t0.tv_sec) * 1e3 + (double)(t.tv_nsec - G.t0.tv_nsec) / 1e6;
}

static void close_all(void) {
  uv_close((uv_handle_t *)&G.sigint, NULL);
  uv_close((uv_handle_t *)&G.sigterm, NULL);
  uv_close((uv_handle_t *)&G.sighup, NULL);
  if (G.metrics_srv) sonde__http_close(G.metrics_srv);
  G.metrics_srv = NULL;
}

static void on_stopped(void *arg) {
  gen *g = arg;
  sonde__info("shutdown complete");
  gen_retire(g);
  G.cur = NULL;
  close_all();
}

static void stop_service(void) {
  if (G.stopping) return;
  G.stopping = true;
  if (!G.cur || G.reloading) {
    if (!G.reloading) close_all();
    return; /* a reload in progress finishes first, then sees stopping */
  }
  sonde__info("shutting down (deadline %.1fs)", (double)G.o.shutdown_timeout / 1e9);
  sonde__service_stop(G.cur->svc, G.o.shutdown_timeout, on_stopped, G.cur);
}

static int start_gen(gen *g) {
  char err[4096];
  apply_telemetry(g);
  int rc = sonde__service_start(g->svc, err, sizeof err);
  if (rc) sonde__error("%s", err);
  sonde__registry_trim(&g->reg);
  return rc;
}

static void failed_start_stopped(void *arg) {
  gen *g = arg;
  gen_retire(g);
  G.reloading = false;
  G.exit_code = 1;
  close_all();
}

static void fallback_stopped(void *arg) {
  gen *failed = arg;
  sonde__cfg_node *old_root = G.back_root;
  G.back_root = NULL;
  gen_retire(failed);
  char err[4096];
  gen *g = NULL;
  if (gen_build(&G.o, old_root, &g, err, sizeof err)) {
    sonde__error("the previous configuration cannot be used again either (%s); exiting", err);
    G.cur = NULL;
    G.reloading = false;
    G.exit_code = 1;
    close_all();
    return;
  }
  if (start_gen(g)) {
    sonde__error("the previous configuration cannot start again either; exiting");
    G.cur = NULL;
    sonde__service_stop(g->svc, G.o.shutdown_timeout, failed_start_stopped, g);
    return;
  }
  G.cur = g;
  G.reloading = false;
  sonde__info("running the previous configuration again");
  if (G.stopping) {
    G.stopping = false;
    stop_service();
  }
}

static void reload_stopped(void *arg) {
  gen *old = arg;
  /* Old components are gone; their configuration is kept in case the new one fails to start. */
  sonde__cfg_node *old_root = old->root;
  old->root = NULL;
  gen_retire(old);
  G.cur = NULL;
  gen *g = G.next;
  G.next = NULL;
  if (start_gen(g) == 0) {
    sonde__cfg_free(old_root);
    G.cur = g;
    G.reloading = false;
    sonde__info("configuration reloaded");
    if (G.stopping) {
      G.stopping = false;
      stop_service();
    }
    return;
  }
  sonde__error("the new configuration failed to start; going back to the previous one");
  G.back_root = old_root;
  sonde__service_stop(g->svc, G.o.shutdown_timeout, fallback_stopped, g);
}

static void reload(void) {
  if (G.reloading || G.stopping || !G.cur) return;
  char err[4096];
  gen *g = NULL;
  sonde__info("SIGHUP: reloading the configuration");
  if (gen_build(&G.o, NULL, &g, err, sizeof err)) {
    sonde__error("reload refused, the running configuration stays: %s", err);
    return;
  }
  G.reloading = true;
  G.next = g;
  /* The old service drains into its exporters before the new one takes the ports: accepted data
   * is delivered, and clients retry the short gap. */
  sonde__service_stop(G.cur->svc, G.o.shutdown_timeout, reload_stopped, G.cur);
}

static void on_signal(uv_signal_t *h, int signum) {
  if (signum == SIGHUP) {
    reload();
    return;
  }
  if (G.stopping) {
    sonde__warn("second signal: exiting now");
    exit(1);
  }
  stop_service();
}

static int cmd_components(const opts *o) {
  sonde__registry reg = {0};
  int rc = sonde__registry_load_default(&reg, o->plugin_paths, o->npaths);
  if (rc) {
    fprintf(stderr, "sonde: loading plug-ins: %s\n", sonde_strerror(rc));
    return 1;
  }
  sonde_buf out = {0};
  static const sonde_kind kinds[] = {SONDE_KIND_RECEIVER, SONDE_KIND_PROCESSOR, SONDE_KIND_EXPORTER,
                                     SONDE_KIND_CONNECTOR, SONDE_KIND_EXTENSION};
  for (size_t k = 0; k < 5 && !rc; k++) {
    size_t n;
    const char **types = sonde__registry_types(&reg, kinds[k], &n);
    if (!types) {
      rc = SONDE_ENOMEM;
      break;
    }
    if (n) rc = sonde_buf_printf(&out, "%s:\n", sonde__kind_section(kinds[k]));
    /* sorted by type for a stable listing */
    for (size_t i = 1; i < n; i++)
      for (size_t j = i; j > 0 && strcmp(types[j - 1], types[j]) > 0; j--) {
        const char *t = types[j];
        types[j] = types[j - 1];
        types[j - 1] = t;
      }
    for (size_t i = 0; i < n && !rc; i++) {
      size_t lib;
      const sonde_component *c = sonde__registry_find(&reg, kinds[k], types[i], &lib);
      char sigs[64] = "";
      for (int b = 0; b < 4; b++)
        if (c->signals & (1u << b))
          snprintf(sigs + strlen(sigs), sizeof sigs - strlen(sigs), "%s%s", *sigs ? ", " : "",
                   sonde_signal_name((sonde_signal)(1u << b)));
      rc = sonde_buf_printf(&out, "  %s%s%s%s\n    %s\n    plug-in: %s (%s %s)\n", c->type,
                            *sigs ? " [" : "", sigs, *sigs ? "]" : "", c->doc ? c->doc : "",
                            reg.libs[lib].path, reg.libs[lib].desc->name,
                            reg.libs[lib].desc->version);
      if (!rc && (c->options && c->options[0].name)) rc = sonde_buf_printf(&out, "    options:\n");
      if (!rc && c->options) rc = sonde__opts_doc(c->options, 6, &out);
      if (!rc && c->kind == SONDE_KIND_EXPORTER && (c->flags & SONDE_COMP_QUEUED))
        rc = sonde__opts_doc(sonde__qcfg_options, 6, &out);
    }
    free(types);
  }
  if (!rc) fwrite(out.data, 1, out.len, stdout);
  for (size_t i = 0; i < reg.nrefused; i++)
    fprintf(stderr, "refused: %s\n", reg.refused[i]);
  sonde_buf_free(&out);
  sonde__registry_free(&reg);
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  clock_gettime(CLOCK_MONOTONIC, &G.t0);
  int rc = parse_args(argc, argv, &G.o);
  if (rc) {
    if (rc == 2) usage(stderr);
    return rc;
  }
  if (!strcmp(G.o.cmd, "components")) return cmd_components(&G.o);

  char err[4096];
  G.loop = uv_default_loop();
  if (sonde__metrics_new(&G.metrics)) {
    fprintf(stderr, "sonde: out of memory\n");
    return 1;
  }
  if (!strcmp(G.o.cmd, "print-config") && !strcmp(G.o.mode, "merged")) {
    sonde__cfg_node *root = NULL;
    if (load_config(&G.o, &root, err, sizeof err)) {
      fprintf(stderr, "sonde: %s\n", err);
      sonde__metrics_free(G.metrics);
      return 1;
    }
    sonde_buf out = {0};
    rc = sonde__cfg_emit(root, &out);
    if (!rc) fwrite(out.data, 1, out.len, stdout);
    sonde_buf_free(&out);
    sonde__cfg_free(root);
    sonde__metrics_free(G.metrics);
    return rc ? 1 : 0;
  }
  gen *g = NULL;
  if (gen_build(&G.o, NULL, &g, err, sizeof err)) {
    fprintf(stderr, "sonde: invalid configuration: %s\n", err);
    sonde__metrics_free(G.metrics);
    return 1;
  }
  if (!strcmp(G.o.cmd, "validate") || !strcmp(G.o.cmd, "print-config")) {
    if (!strcmp(G.o.cmd, "print-config")) {
      sonde_buf out = {0};
      rc = sonde__service_emit(g->svc, &out);
      if (!rc) fwrite(out.data, 1, out.len, stdout);
      sonde_buf_free(&out);
    } else {
      printf("configuration is valid\n");
    }
    gen_free(g);
    uv_run(G.loop, UV_RUN_DEFAULT);
    uv_loop_close(G.loop);
    sonde__metrics_free(G.metrics);
    return rc ? 1 : 0;
  }

  uv_signal_init(G.loop, &G.sigint);
  uv_signal_init(G.loop, &G.sigterm);
  uv_signal_init(G.loop, &G.sighup);
  uv_signal_start(&G.sigint, on_signal, SIGINT);
  uv_signal_start(&G.sigterm, on_signal, SIGTERM);
  uv_signal_start(&G.sighup, on_signal, SIGHUP);
  signal(SIGPIPE, SIG_IGN);

  G.cur = g;
  if (start_gen(g)) {
    sonde__service_stop(g->svc, G.o.shutdown_timeout, failed_start_stopped, g);
    G.cur = NULL;
    G.reloading = true; /* so failed_start_stopped's close_all is the only one */
  } else {
    sonde__info("sonde %s ready in %.1f ms: everything is running (pid %d)", SONDE_VERSION,
                ms_since_start(), (int)getpid());
    if (G.metrics_srv) sonde__info("self-metrics on http://%s/metrics", G.metrics_ep);
  }
  uv_run(G.loop, UV_RUN_DEFAULT);
  int crc = uv_loop_close(G.loop);
  while (G.retired) {
    gen *old = G.retired;
    G.retired = old->next_retired;
    gen_free(old);
  }
  if (crc) sonde__warn("loop closed with handles still open: %s", uv_strerror(crc));
  sonde__metrics_free(G.metrics);
  return G.exit_code;
}

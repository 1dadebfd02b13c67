/* The OTLP exporters plug-in: otlp_grpc (alias otlp, otelcol's name) and otlp_http (alias
 * otlphttp). The aliases are full components with the same options, so either name works in a
 * config and `sonde components` lists both. */
#include "otlp_common.h"
#include "otlp_exporters.h"

#define GRPC_COMPONENT(name)                                                                       \
  {                                                                                                \
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_EXPORTER, .type = name,             \
    .doc = "OTLP/gRPC exporter: one HTTP/2 connection, concurrent exports as streams",             \
    .signals = SONDE_SIGNAL_ALL, .flags = SONDE_COMP_QUEUED, .options = otlp_grpc_options,         \
    .config_size = sizeof(otlp_config), .validate = otlp_grpc_validate,                            \
    .create = otlp_grpc_create, .start = otlp_grpc_start, .send = otlp_grpc_send,                  \
    .shutdown = otlp_grpc_shutdown, .destroy = otlp_grpc_destroy,                                  \
  }

#define HTTP_COMPONENT(name)                                                                       \
  {                                                                                                \
    .struct_size = sizeof(sonde_component), .kind = SONDE_KIND_EXPORTER, .type = name,             \
    .doc = "OTLP/HTTP exporter: protobuf or JSON over HTTP/1.1 keep-alive connections",            \
    .signals = SONDE_SIGNAL_ALL, .flags = SONDE_COMP_QUEUED, .options = otlp_http_options,         \
    .config_size = sizeof(otlp_config), .validate = otlp_http_validate,                            \
    .create = otlp_http_create, .start = otlp_http_start, .send = otlp_http_send,                  \
    .shutdown = otlp_http_shutdown, .destroy = otlp_http_destroy,                                  \
  }

static const sonde_component otlp_grpc = GRPC_COMPONENT("otlp_grpc");
static const sonde_component otlp_alias = GRPC_COMPONENT("otlp");
static const sonde_component otlp_http = HTTP_COMPONENT("otlp_http");
static const sonde_component otlphttp_alias = HTTP_COMPONENT("otlphttp");

SONDE_PLUGIN_DEFINE("sonde-otlp-exporters", SONDE_OTLP_VERSION, &otlp_grpc, &otlp_alias, &otlp_http,
                    &otlphttp_alias);

/* Deliberately broken plug-ins for the loader tests (tests/unit/test_loader.c). One source, one
 * variant per module: -DVARIANT=<n> picks what is wrong with it. */
#include <string.h>

#include "sonde/sonde.h"

#define V_GOOD 0
#define V_ABI_MAJOR 1
#define V_ABI_MINOR 2
#define V_SIGNATURE 3
#define V_NO_SYMBOL 4
#define V_STRUCT_SIZE 5
#define V_TYPE_NAME 6
#define V_DUP_A 7
#define V_DUP_B 8
#define V_DUP_ONE 9
#define V_NO_CONSUME 10
#define V_NO_SEND 11
#define V_NO_SIGNALS 12

#ifndef VARIANT
#error "VARIANT must be defined"
#endif

__attribute__((unused)) static int create(const sonde_host *h, const void *cfg, uint32_t signals, void **inst) {
  *inst = NULL;
  return 0;
}
__attribute__((unused)) static int consume(void *inst, sonde_batch *b) {
  return 0;
}
__attribute__((unused)) static int sendf(void *inst, sonde_batch *b, sonde_send_cb cb, void *arg) {
  cb(arg, 0, 0);
  return 0;
}
__attribute__((unused)) static void shutdown_(void *inst, void (*done)(void *), void *arg) {
  done(arg);
}
__attribute__((unused)) static void destroy(void *inst) {
}

#define COMP(var, kind_, type_, ...)                                                              \
  static const sonde_component var = {.struct_size = sizeof(sonde_component),                    \
                                      .kind = (kind_),                                            \
                                      .type = (type_),                                            \
                                      .doc = "loader test component",                             \
                                      .signals = SONDE_SIGNAL_TRACES,                             \
                                      .create = create,                                           \
                                      .consume = consume,                                         \
                                      .shutdown = shutdown_,                                      \
                                      .destroy = destroy,                                         \
                                      __VA_ARGS__}

#if VARIANT == V_GOOD
COMP(c_recv, SONDE_KIND_RECEIVER, "loader_good",
     .signals = SONDE_SIGNAL_TRACES | SONDE_SIGNAL_LOGS);
COMP(c_proc, SONDE_KIND_PROCESSOR, "loader_good");
COMP(c_exp, SONDE_KIND_EXPORTER, "loader_good_q", .flags = SONDE_COMP_QUEUED, .consume = NULL,
     .send = sendf);
COMP(c_ext, SONDE_KIND_EXTENSION, "loader_good_ext", .signals = 0, .consume = NULL);
SONDE_PLUGIN_DEFINE("loader-good", "1.0", &c_recv, &c_proc, &c_exp, &c_ext);

#elif VARIANT == V_ABI_MAJOR || VARIANT == V_ABI_MINOR || VARIANT == V_SIGNATURE
COMP(c_recv, SONDE_KIND_RECEIVER, "loader_abi");
static const sonde_component *const comps[] = {&c_recv};
__attribute__((visibility("default"))) const sonde_plugin SONDE_PLUGIN_SYMBOL = {
#if VARIANT == V_ABI_MAJOR
    .abi_major = SONDE_ABI_MAJOR + 1,
#else
    .abi_major = SONDE_ABI_MAJOR,
#endif
#if VARIANT == V_ABI_MINOR
    .abi_minor = SONDE_ABI_MINOR + 1,
#else
    .abi_minor = SONDE_ABI_MINOR,
#endif
    .struct_size = sizeof(sonde_plugin),
#if VARIANT == V_SIGNATURE
    .build_signature = "sonde-abi-1;pdata-otlp-0.9;" SONDE__LP,
#else
    .build_signature = SONDE_BUILD_SIGNATURE,
#endif
    .name = "loader-abi",
    .version = "1.0",
    .components = comps,
    .n_components = 1,
};

#elif VARIANT == V_NO_SYMBOL
/* A shared object that is not a plug-in: exports something, but no descriptor. */
__attribute__((visibility("default"))) int sonde_not_a_plugin(void) {
  return 42;
}

#elif VARIANT == V_STRUCT_SIZE
/* Built against an older SDK whose sonde_component was 16 bytes shorter. */
COMP(c_recv, SONDE_KIND_RECEIVER, "loader_size", .struct_size = sizeof(sonde_component) - 16);
SONDE_PLUGIN_DEFINE("loader-size", "1.0", &c_recv);

#elif VARIANT == V_TYPE_NAME
COMP(c_ok, SONDE_KIND_RECEIVER, "loader_fine");
COMP(c_recv, SONDE_KIND_EXPORTER, "Loader-Bad");
SONDE_PLUGIN_DEFINE("loader-type", "1.0", &c_ok, &c_recv);

#elif VARIANT == V_DUP_A || VARIANT == V_DUP_B
COMP(c_recv, SONDE_KIND_RECEIVER, "loader_dup");
#if VARIANT == V_DUP_A
SONDE_PLUGIN_DEFINE("loader-dup-a", "1.0", &c_recv);
#else
COMP(c_other, SONDE_KIND_PROCESSOR, "loader_dup_b_only");
SONDE_PLUGIN_DEFINE("loader-dup-b", "1.0", &c_other, &c_recv);
#endif

#elif VARIANT == V_DUP_ONE
COMP(c_a, SONDE_KIND_RECEIVER, "loader_twice");
COMP(c_b, SONDE_KIND_PROCESSOR, "loader_twice"); /* another kind: allowed */
COMP(c_c, SONDE_KIND_RECEIVER, "loader_twice");
SONDE_PLUGIN_DEFINE("loader-twice", "1.0", &c_a, &c_b, &c_c);

#elif VARIANT == V_NO_CONSUME
COMP(c_proc, SONDE_KIND_PROCESSOR, "loader_noconsume", .consume = NULL);
SONDE_PLUGIN_DEFINE("loader-noconsume", "1.0", &c_proc);

#elif VARIANT == V_NO_SEND
COMP(c_exp, SONDE_KIND_EXPORTER, "loader_nosend", .flags = SONDE_COMP_QUEUED);
SONDE_PLUGIN_DEFINE("loader-nosend", "1.0", &c_exp);

#elif VARIANT == V_NO_SIGNALS
COMP(c_exp, SONDE_KIND_EXPORTER, "loader_nosignals", .signals = 0);
SONDE_PLUGIN_DEFINE("loader-nosignals", "1.0", &c_exp);
#endif

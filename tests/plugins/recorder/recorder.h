/* The test-side view of recorder.so (tests/unit/test_service.c gets it with dlsym("rec_api")). */
#ifndef SONDE_TEST_RECORDER_H
#define SONDE_TEST_RECORDER_H
#include "sonde/sonde.h"

typedef struct rec_api {
  /* Every lifecycle call and every batch seen, one line each:
   *   "create <path> signals=<mask>", "start <path>", "shutdown <path>", "destroy <path>",
   *   "data <path> <first span name> <batch pointer>" */
  const char *(*events)(void);
  void (*reset)(void);
  /* Makes the rec_src receiver with id hand b to its pipelines; returns what consume returned,
   * or SONDE_ENOTFOUND when no such receiver runs. */
  int (*emit)(const char *id, sonde_batch *b);
  /* create fails for this id (NULL: none). */
  void (*fail_create)(const char *id);
} rec_api;
#endif

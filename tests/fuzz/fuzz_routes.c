/* libFuzzer target: route folding of the ebpf_http receiver (receivers/ebpf_http/routes.c) on
 * request paths any traced process may see, and its pattern parser on configured patterns.
 *
 * Input: byte 0 = per-service cap, then lines: "P<pattern>" lines configure patterns (a bad one
 * must be refused with SONDE_EINVAL and nothing else), every other line is a path, routed for one
 * of three services. Checks: no crash or undefined behaviour, the route is a NUL-terminated string
 * inside the buffer starting with '/' or '*', and routing a path again gives the same route. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PATTERNS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  char *text = malloc(size);
  if (!text) return 0;
  memcpy(text, data + 1, size - 1);
  text[size - 1] = '\0';
  char *pats[MAX_PATTERNS];
  size_t npats = 0;
  char *paths[256];
  size_t npaths = 0;
  for (char *line = text, *next; line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    if (line[0] == 'P' && npats < MAX_PATTERNS)
      pats[npats++] = line + 1;
    else if (npaths < 256)
      paths[npaths++] = line;
  }
  hx_routes *r;
  int rc = hx_routes_new((const char *const *)pats, npats, data[0], &r);
  if (rc == SONDE_EINVAL) { /* a bad pattern: routing without any still works */
    rc = hx_routes_new(NULL, 0, data[0], &r);
  }
  if (rc) {
    free(text);
    return 0;
  }
  static const char *const services[] = {"a", "b", NULL};
  for (size_t i = 0; i < npaths; i++) {
    char out[64], again[64];
    memset(out, 0x55, sizeof(out));
    const char *svc = services[i % 3];
    if (hx_routes_match(r, svc, paths[i], out, sizeof(out)) != out) abort();
    if (!memchr(out, '\0', sizeof(out))) abort();
    if (out[0] != '/' && out[0] != '*') abort();
    hx_routes_match(r, svc, paths[i], again, sizeof(again));
    if (strcmp(out, again) != 0) abort();
  }
  hx_routes_free(r);
  free(text);
  return 0;
}

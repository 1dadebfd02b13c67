/* Content negotiation of the prometheus exporter's endpoint; see prom_http.h. */
#include "prom_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct media {
  char type[64];
  char version[16];
  double q;
  int order;
} media;

static void trim(char *s) {
  size_t l = strlen(s), b = 0;
  while (b < l && (s[b] == ' ' || s[b] == '\t'))
    b++;
  while (l > b && (s[l - 1] == ' ' || s[l - 1] == '\t'))
    l--;
  memmove(s, s + b, l - b);
  s[l - b] = 0;
}

static int cmp_media(const void *a, const void *b) {
  const media *x = a, *y = b;
  if (x->q != y->q) return x->q > y->q ? -1 : 1;
  return x->order - y->order;
}

bool prom_negotiate(const char *accept, bool om_enabled, const char **om_version) {
  *om_version = "1.0.0";
  if (!accept || !om_enabled) return false;
  media m[16];
  int n = 0;
  char buf[1024];
  snprintf(buf, sizeof(buf), "%s", accept);
  char *save = NULL;
  for (char *part = strtok_r(buf, ",", &save); part && n < 16; part = strtok_r(NULL, ",", &save)) {
    media *e = &m[n];
    memset(e, 0, sizeof(*e));
    e->q = 1;
    e->order = n;
    char *s2 = NULL, *tok = strtok_r(part, ";", &s2);
    if (!tok) continue;
    snprintf(e->type, sizeof(e->type), "%s", tok);
    trim(e->type);
    for (char *p = strtok_r(NULL, ";", &s2); p; p = strtok_r(NULL, ";", &s2)) {
      char *eq = strchr(p, '=');
      if (!eq) continue;
      *eq = 0;
      trim(p);
      char *v = eq + 1;
      trim(v);
      if (strcasecmp(p, "q") == 0)
        e->q = strtod(v, NULL);
      else if (strcasecmp(p, "version") == 0)
        snprintf(e->version, sizeof(e->version), "%s", v);
    }
    n++;
  }
  qsort(m, (size_t)n, sizeof(media), cmp_media);
  for (int i = 0; i < n; i++) {
    if (m[i].q <= 0) continue;
    if (strcasecmp(m[i].type, "text/plain") == 0 &&
        (!m[i].version[0] || strcmp(m[i].version, "0.0.4") == 0))
      return false;
    if (strcasecmp(m[i].type, "application/openmetrics-text") == 0 &&
        (!m[i].version[0] || strcmp(m[i].version, "1.0.0") == 0 ||
         strcmp(m[i].version, "0.0.1") == 0)) {
      if (strcmp(m[i].version, "0.0.1") == 0) *om_version = "0.0.1";
      return true;
    }
  }
  return false;
}

bool prom_accepts_gzip(const char *ae) {
  if (!ae) return false;
  char buf[512];
  snprintf(buf, sizeof(buf), "%s", ae);
  char *save = NULL;
  for (char *part = strtok_r(buf, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
    char *semi = strchr(part, ';');
    double q = 1;
    if (semi) {
      *semi = 0;
      char *qp = strstr(semi + 1, "q=");
      if (qp) q = strtod(qp + 2, NULL);
    }
    trim(part);
    if (strcasecmp(part, "gzip") == 0) return q > 0;
  }
  return false;
}

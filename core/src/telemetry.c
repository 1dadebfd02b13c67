#include "telemetry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct sonde_metric {
  struct sonde_metric *next;
  char *name; /* without _total */
  char *help;
  char *labels; /* rendered: k="v",k="v" */
  sonde_metric_kind kind;
  double value;
};

struct sonde__metrics {
  sonde_metric *head; /* sorted by name, then labels: families render contiguously */
  struct timespec start;
  sonde_metric *rss, *cpu, *uptime;
};

static char *render_labels(const char *labels) {
  sonde_buf b = {0};
  if (sonde_buf_append(&b, "", 0)) return NULL;
  const char *p = labels ? labels : "";
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    if (eq) {
      if (b.len) sonde_buf_append(&b, ",", 1);
      sonde_buf_append(&b, p, (size_t)(eq - p));
      sonde_buf_append(&b, "=\"", 2);
      for (const char *v = eq + 1; v < p + len; v++) {
        if (*v == '"' || *v == '\\') sonde_buf_append(&b, "\\", 1);
        if (*v == '\n')
          sonde_buf_append(&b, "\\n", 2);
        else
          sonde_buf_append(&b, v, 1);
      }
      sonde_buf_append(&b, "\"", 1);
    }
    p += len + (comma ? 1 : 0);
  }
  if (!b.data) /* an append failed */
    return NULL;
  return (char *)b.data;
}

/* HELP text as the exposition format wants it: backslash and newline escaped. */
static char *escape_help(const char *help) {
  sonde_buf b = {0};
  if (sonde_buf_append(&b, "", 0)) return NULL;
  for (const char *h = help ? help : ""; *h; h++) {
    if (*h == '\\')
      sonde_buf_append(&b, "\\\\", 2);
    else if (*h == '\n')
      sonde_buf_append(&b, "\\n", 2);
    else
      sonde_buf_append(&b, h, 1);
  }
  return (char *)b.data;
}

int sonde__metrics_get(sonde__metrics *m, sonde_metric_kind kind, const char *name,
                       const char *help, const char *labels, sonde_metric **out) {
  char *lab = render_labels(labels);
  if (!lab) return SONDE_ENOMEM;
  sonde_metric **pp = &m->head;
  for (; *pp; pp = &(*pp)->next) {
    int c = strcmp((*pp)->name, name);
    if (c == 0) {
      if ((*pp)->kind != kind) {
        free(lab);
        return SONDE_EEXISTS;
      }
      c = strcmp((*pp)->labels, lab);
      if (c == 0) {
        free(lab);
        *out = *pp;
        return 0;
      }
    }
    if (c > 0) break;
  }
  sonde_metric *s = calloc(1, sizeof *s);
  if (!s || !(s->name = strdup(name)) || !(s->help = escape_help(help))) {
    if (s) free(s->name);
    free(s);
    free(lab);
    return SONDE_ENOMEM;
  }
  s->labels = lab;
  s->kind = kind;
  s->next = *pp;
  *pp = s;
  *out = s;
  return 0;
}

void sonde__metric_add(sonde_metric *s, double delta) {
  if (s) s->value += delta;
}

void sonde__metric_set(sonde_metric *s, double v) {
  if (s) s->value = v;
}

double sonde__metric_value(const sonde_metric *s) {
  return s ? s->value : 0;
}

int sonde__metrics_new(sonde__metrics **out) {
  sonde__metrics *m = calloc(1, sizeof *m);
  if (!m) return SONDE_ENOMEM;
  clock_gettime(CLOCK_MONOTONIC, &m->start);
  int rc = sonde__metrics_get(m, SONDE_METRIC_GAUGE, "otelcol_process_memory_rss_bytes",
                              "Total physical memory (resident set size)", NULL, &m->rss);
  if (!rc)
    rc = sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_process_cpu_seconds",
                            "Total CPU user and system time in seconds", NULL, &m->cpu);
  if (!rc)
    rc = sonde__metrics_get(m, SONDE_METRIC_COUNTER, "otelcol_process_uptime_seconds",
                            "Uptime of the process", NULL, &m->uptime);
  if (rc) {
    sonde__metrics_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

void sonde__metrics_free(sonde__metrics *m) {
  if (!m) return;
  for (sonde_metric *s = m->head, *n; s; s = n) {
    n = s->next;
    free(s->name);
    free(s->help);
    free(s->labels);
    free(s);
  }
  free(m);
}

static void refresh_process(sonde__metrics *m) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    unsigned long size, resident;
    if (fscanf(f, "%lu %lu", &size, &resident) == 2)
      m->rss->value = (double)resident * (double)sysconf(_SC_PAGESIZE);
    fclose(f);
  }
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    m->cpu->value = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  m->uptime->value =
      (double)(now.tv_sec - m->start.tv_sec) + (now.tv_nsec - m->start.tv_nsec) / 1e9;
}

static int fmt_value(char *out, size_t len, double v) {
  if (isnan(v)) return snprintf(out, len, "NaN");
  if (isinf(v)) return snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
  if (fabs(v) < 1e15 && v == (double)(long long)v) /* range first: the cast is UB beyond it */
    return snprintf(out, len, "%lld", (long long)v);
  /* the shortest text that reads back as the same double */
  for (int prec = 1; prec < 17; prec++) {
    snprintf(out, len, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return (int)strlen(out);
  }
  return snprintf(out, len, "%.17g", v);
}

int sonde__metrics_render(sonde__metrics *m, sonde_buf *out) {
  refresh_process(m);
  const sonde_metric *prev = NULL;
  int rc = 0;
  for (const sonde_metric *s = m->head; s && !rc; prev = s, s = s->next) {
    const char *suffix = s->kind == SONDE_METRIC_COUNTER ? "_total" : "";
    if (!prev || strcmp(prev->name, s->name) != 0)
      rc = sonde_buf_printf(out, "# HELP %s%s %s\n# TYPE %s%s %s\n", s->name, suffix, s->help,
                            s->name, suffix, s->kind == SONDE_METRIC_COUNTER ? "counter" : "gauge");
    char v[64];
    fmt_value(v, sizeof v, s->value);
    if (!rc)
      rc = sonde_buf_printf(out, "%s%s%s%s%s %s\n", s->name, suffix, *s->labels ? "{" : "",
                            s->labels, *s->labels ? "}" : "", v);
  }
  return rc;
}

/* libFuzzer target: the prometheus exporter on outside bytes.
 * - The input as an OTLP metrics request (protobuf): accumulated twice (the second time as
 *   deltas would be, a second later), expired, rendered as text and as OpenMetrics, and every
 *   line of both checked against the exposition grammar: HELP/TYPE comments, one TYPE per
 *   family, samples `name{label="escaped",...} value` of that family, valid UTF-8. No name,
 *   attribute or description may produce a line a scraper would reject.
 * - The input as a name: metric and label names must come out valid or be refused.
 * - The input as Accept / Accept-Encoding headers.
 * The exporter's sources are compiled into this file (libc, zlib-free), so the fuzz folder's
 * "link sonde_core" rule is enough. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../exporters/prometheus/prom_http.c"
#include "../../exporters/prometheus/prom_names.c"
#include "../../exporters/prometheus/prom_state.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool name_ok(const char *s, size_t n, bool colon) {
  if (!n) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
              (i && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

static size_t name_len(const char *s, size_t n, bool colon) {
  size_t i = 0;
  while (i < n && name_ok(s, i + 1, colon))
    i++;
  return i;
}

static bool value_ok(const char *s, size_t n) {
  char buf[64];
  if (!n || n >= sizeof(buf)) return false;
  memcpy(buf, s, n);
  buf[n] = 0;
  if (!strcmp(buf, "+Inf") || !strcmp(buf, "-Inf") || !strcmp(buf, "NaN")) return true;
  char *end;
  double v = strtod(buf, &end);
  (void)v;
  return *end == 0 && !strchr(buf, ' ');
}

/* Escaped text up to the end of the line (HELP) or to the closing quote (label values). */
static size_t escaped(const char *s, size_t n, bool label, bool om) {
  size_t i = 0;
  for (; i < n; i++) {
    if (s[i] == '\\') {
      if (i + 1 >= n) abort();
      char e = s[++i];
      if (e != '\\' && e != 'n' && !(e == '"' && (label || om))) abort();
    } else if (s[i] == '"') {
      if (label) return i;
      if (om) abort();
    }
  }
  if (label) abort(); /* unterminated value */
  return i;
}

typedef struct famset {
  char names[256][128];
  int n;
  char cur[128];
  char type[16];
} famset;

static void check_sample(const famset *f, const char *l, size_t n, bool om) {
  size_t nl = name_len(l, n, true);
  if (!nl) abort();
  char name[160];
  if (nl >= sizeof(name)) abort();
  memcpy(name, l, nl);
  name[nl] = 0;
  /* The sample belongs to the family of the last TYPE line. */
  size_t fl = strlen(f->cur);
  if (strncmp(name, f->cur, fl) != 0) abort();
  const char *suf = name + fl;
  bool hist = !strcmp(f->type, "histogram"), summ = !strcmp(f->type, "summary");
  if (*suf && !((hist || summ) && (!strcmp(suf, "_sum") || !strcmp(suf, "_count"))) &&
      !(hist && !strcmp(suf, "_bucket")) &&
      !(om && !strcmp(f->type, "counter") && !strcmp(suf, "_total")))
    abort();
  size_t i = nl;
  if (i < n && l[i] == '{') {
    i++;
    for (bool first = true;; first = false) {
      if (i < n && l[i] == '}') {
        if (first) abort(); /* "{}" is not written */
        i++;
        break;
      }
      if (!first) {
        if (l[i] != ',') abort();
        i++;
      }
      size_t ln = name_len(l + i, n - i, false);
      if (!ln) abort();
      i += ln;
      if (i + 1 >= n || l[i] != '=' || l[i + 1] != '"') abort();
      i += 2;
      i += escaped(l + i, n - i, true, om) + 1;
      if (i >= n) abort();
    }
  }
  if (i >= n || l[i] != ' ') abort();
  i++;
  /* OpenMetrics exemplar: " # {trace_id="..",span_id=".."} value [timestamp]" at the end */
  const char *ex = om ? memmem(l + i, n - i, " # {", 4) : NULL;
  if (ex) {
    size_t e = (size_t)(ex - l) + 4;
    while (e < n && l[e] != '}') {
      size_t ln = name_len(l + e, n - e, false);
      if (!ln || e + ln + 1 >= n || l[e + ln] != '=' || l[e + ln + 1] != '"') abort();
      e += ln + 2;
      e += escaped(l + e, n - e, true, om) + 1;
      if (e < n && l[e] == ',') e++;
    }
    if (e + 1 >= n || l[e + 1] != ' ') abort();
    const char *ev = l + e + 2, *sp2 = memchr(ev, ' ', (size_t)(l + n - ev));
    if (!value_ok(ev, sp2 ? (size_t)(sp2 - ev) : (size_t)(l + n - ev))) abort();
    if (sp2 && !value_ok(sp2 + 1, (size_t)(l + n - sp2 - 1))) abort();
    n = (size_t)(ex - l);
  }
  const char *sp = memchr(l + i, ' ', n - i);
  size_t vl = sp ? (size_t)(sp - (l + i)) : n - i;
  if (!value_ok(l + i, vl)) abort();
  if (sp && !value_ok(sp + 1, n - (size_t)(sp + 1 - l))) abort();
}

static void check_exposition(const sonde_buf *b, bool om) {
  if (!b->len) {
    if (om) abort(); /* OpenMetrics always ends in # EOF */
    return;
  }
  famset *f = calloc(1, sizeof(*f));
  if (!f) return;
  const char *p = (const char *)b->data, *end = p + b->len;
  bool eof = false;
  if (end[-1] != '\n') abort();
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)(nl - p);
    if (eof) abort(); /* nothing after # EOF */
    if (n >= 7 && !memcmp(p, "# HELP ", 7)) {
      size_t k = name_len(p + 7, n - 7, true);
      if (!k || p[7 + k] != ' ') abort();
      if (escaped(p + 8 + k, n - 8 - k, false, om) != n - 8 - k) abort();
    } else if (n >= 7 && !memcmp(p, "# TYPE ", 7)) {
      size_t k = name_len(p + 7, n - 7, true);
      if (!k || k >= sizeof(f->cur) || p[7 + k] != ' ') abort();
      memcpy(f->cur, p + 7, k);
      f->cur[k] = 0;
      size_t tl = n - 8 - k;
      if (tl >= sizeof(f->type)) abort();
      memcpy(f->type, p + 8 + k, tl);
      f->type[tl] = 0;
      if (strcmp(f->type, "counter") && strcmp(f->type, "gauge") && strcmp(f->type, "histogram") &&
          strcmp(f->type, "summary"))
        abort();
      for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], f->cur)) abort(); /* one TYPE per family */
      if (f->n < 256) strcpy(f->names[f->n++], f->cur);
    } else if (om && n == 5 && !memcmp(p, "# EOF", 5)) {
      eof = true;
    } else {
      if (!f->cur[0]) abort();
      check_sample(f, p, n, om);
    }
    p = nl + 1;
  }
  if (om && !eof) abort();
  free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* As names and headers. */
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = 0;
  bool empty;
  for (int k = PROM_OTEL_GAUGE; k <= PROM_OTEL_SUMMARY; k++) {
    const char *unit = size > 2 ? s + size / 2 : "s";
    char *m = prom_metric_name(s, unit, (prom_otel_kind)k, k == 1 ? "ns" : NULL, k != 3, &empty);
    if (m && !name_ok(m, strlen(m), true)) abort();
    free(m);
  }
  char *l = prom_label_name(s, &empty);
  if (l && !name_ok(l, strlen(l), false) && strspn(l, "_") != strlen(l)) abort();
  free(l);
  const char *v = NULL;
  if (prom_negotiate(s, true, &v) && strcmp(v, "1.0.0") && strcmp(v, "0.0.1")) abort();
  (void)prom_accepts_gzip(s);
  free(s);

  /* As an OTLP request. */
  sonde_batch *b;
  if (sonde_batch_decode(SONDE_SIGNAL_METRICS, data, size, &b)) return 0;
  char *keys[] = {"env"}, *values[] = {"a\"b\\c\nd"};
  prom_opts o = {.add_suffixes = size & 1,
                 .send_timestamps = size & 2,
                 .resource_to_telemetry = size & 4,
                 .const_keys = keys,
                 .const_values = values,
                 .n_const = 1,
                 .expiration_ns = 1000000000};
  prom_state *st;
  if (prom_state_new(&o, &st)) {
    sonde_batch_unref(b);
    return 0;
  }
  prom_stats stats = {0};
  char err[128] = "";
  prom_state_consume(st, sonde_batch_metrics(b), 0, &stats, err, sizeof(err));
  prom_state_consume(st, sonde_batch_metrics(b), 500000000, &stats, err, sizeof(err));
  for (int om = 0; om < 2; om++) {
    sonde_buf out = {0};
    if (prom_state_render(st, om, &out) == 0) {
      check_exposition(&out, om);
      /* Prometheus refuses a scrape with invalid UTF-8 anywhere in it. */
      if (sonde_buf_append(&out, "", 1) == 0 && !prom_utf8_valid((const char *)out.data)) abort();
    }
    sonde_buf_free(&out);
  }
  prom_state_expire(st, 1600000000);
  if (prom_state_series(st) != 0) abort(); /* everything was last updated at 0.5 s */
  sonde_batch_unref(b);
  prom_state_free(st);
  return 0;
}

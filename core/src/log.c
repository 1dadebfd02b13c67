#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static sonde_log_level g_level = SONDE_LOG_INFO;
static const char *const g_names[] = {"debug", "info", "warn", "error"};

void sonde__log_set_level(sonde_log_level lvl) {
  g_level = lvl;
}

sonde_log_level sonde__log_level(void) {
  return g_level;
}

int sonde__log_parse_level(const char *s, sonde_log_level *out) {
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(s, g_names[i]) == 0) {
      *out = (sonde_log_level)i;
      return 0;
    }
  }
  if (strcasecmp(s, "warning") == 0) {
    *out = SONDE_LOG_WARN;
    return 0;
  }
  return SONDE_EINVAL;
}

bool sonde__log_enabled(sonde_log_level lvl) {
  return lvl >= g_level;
}

void sonde__vlog(sonde_log_level lvl, const char *who, const char *fmt, va_list ap) {
  if (lvl < g_level) return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  int k = snprintf(line + n, sizeof line - n, ".%03ldZ %-5s %s%s", ts.tv_nsec / 1000000,
                   g_names[lvl < 0 || lvl > 3 ? 1 : lvl], who ? who : "", who ? ": " : "");
  if (k > 0 && (size_t)k < sizeof line - n) {
    n += (size_t)k;
    k = vsnprintf(line + n, sizeof line - n, fmt, ap);
    if (k > 0) n = n + (size_t)k < sizeof line - 1 ? n + (size_t)k : sizeof line - 2;
  }
  line[n++] = '\n';
  fwrite(line, 1, n, stderr); /* one write: lines from threads do not interleave */
}

void sonde__log(sonde_log_level lvl, const char *who, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sonde__vlog(lvl, who, fmt, ap);
  va_end(ap);
}

/* Strict scalar parsers: no whitespace, no trailing junk, no silent wrap-around. They return
 * SONDE_EINVAL for text that is not of the type and SONDE_ETOOBIG for values out of range. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

static const struct {
  const char *name;
  uint64_t ns;
} dur_units[] = {
    {"ns", 1},           {"us", 1000},         {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
    {"\xce\xbcs", 1000},                                            /* U+03BC Greek mu */
    {"ms", 1000000},     {"s", 1000000000ull}, {"m", 60000000000ull}, {"h", 3600000000000ull},
};

int sonde__parse_duration(const char *s, int64_t *out) {
  if (!s || !*s) return SONDE_EINVAL;
  const char *p = s;
  bool neg = *p == '-';
  if (*p == '-' || *p == '+') p++;
  if (!strcmp(p, "0")) { /* the only number allowed without a unit, as in Go */
    *out = 0;
    return 0;
  }
  if (!*p) return SONDE_EINVAL;
  const uint64_t limit = (uint64_t)INT64_MAX + (neg ? 1 : 0);
  uint64_t total = 0;
  bool big = false;
  while (*p) {
    uint64_t v = 0, frac = 0, scale = 1;
    bool digits = false;
    for (; isdigit((unsigned char)*p); p++, digits = true) {
      if (v > (UINT64_MAX - 9) / 10)
        big = true;
      else
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
      for (p++; isdigit((unsigned char)*p); p++, digits = true) {
        if (scale < 100000000000000000ull) { /* digits past 1e-17 cannot matter */
          frac = frac * 10 + (uint64_t)(*p - '0');
          scale *= 10;
        }
      }
    }
    if (!digits) return SONDE_EINVAL;
    const char *u = p;
    while (*p && !isdigit((unsigned char)*p) && *p != '.')
      p++;
    size_t ulen = (size_t)(p - u);
    uint64_t unit = 0;
    for (size_t i = 0; i < sizeof dur_units / sizeof dur_units[0]; i++)
      if (strlen(dur_units[i].name) == ulen && !memcmp(u, dur_units[i].name, ulen))
        unit = dur_units[i].ns;
    if (!unit) return SONDE_EINVAL;
    if (big || v > limit / unit) {
      big = true;
      continue; /* keep validating the syntax: junk is reported before size */
    }
    v *= unit;
    if (frac) v += (uint64_t)((double)frac * ((double)unit / (double)scale));
    if (v > limit - total)
      big = true;
    else
      total += v;
  }
  if (big) return SONDE_ETOOBIG;
  *out = neg ? (int64_t)(0 - total) : (int64_t)total;
  return 0;
}

static const struct {
  const char *name;
  uint64_t mult;
} size_units[] = {
    {"", 1},
    {"B", 1},
    {"KB", 1000},
    {"kB", 1000},
    {"MB", 1000000},
    {"GB", 1000000000ull},
    {"TB", 1000000000000ull},
    {"PB", 1000000000000000ull},
    {"EB", 1000000000000000000ull},
    {"KiB", 1ull << 10},
    {"MiB", 1ull << 20},
    {"GiB", 1ull << 30},
    {"TiB", 1ull << 40},
    {"PiB", 1ull << 50},
    {"EiB", 1ull << 60},
};

int sonde__parse_bytes(const char *s, uint64_t *out) {
  if (!s || !isdigit((unsigned char)*s))
    return SONDE_EINVAL; /* also a sign: sizes are never negative */
  uint64_t v = 0;
  bool big = false;
  const char *p = s;
  for (; isdigit((unsigned char)*p); p++) {
    uint64_t d = (uint64_t)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      big = true;
    else
      v = v * 10 + d;
  }
  for (size_t i = 0; i < sizeof size_units / sizeof size_units[0]; i++) {
    if (strcmp(p, size_units[i].name)) continue;
    if (big || v > UINT64_MAX / size_units[i].mult) return SONDE_ETOOBIG;
    *out = v * size_units[i].mult;
    return 0;
  }
  return SONDE_EINVAL;
}

int sonde__parse_bool(const char *s, bool *v) {
  if (!s) return SONDE_EINVAL;
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
    *v = true;
    return 0;
  }
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
    *v = false;
    return 0;
  }
  return SONDE_EINVAL;
}

int sonde__parse_int(const char *s, int64_t *v) {
  if (!s) return SONDE_EINVAL;
  const char *p = s;
  bool neg = *p == '-';
  if (*p == '-' || *p == '+') p++;
  if (!isdigit((unsigned char)*p)) return SONDE_EINVAL;
  const uint64_t limit = (uint64_t)INT64_MAX + (neg ? 1 : 0);
  uint64_t x = 0;
  bool big = false;
  for (; isdigit((unsigned char)*p); p++) {
    uint64_t d = (uint64_t)(*p - '0');
    if (x > (limit - d) / 10)
      big = true;
    else
      x = x * 10 + d;
  }
  if (*p) return SONDE_EINVAL;
  if (big) return SONDE_ETOOBIG;
  *v = neg ? (int64_t)(0 - x) : (int64_t)x;
  return 0;
}

int sonde__parse_double(const char *s, double *v) {
  if (!s) return SONDE_EINVAL;
  /* Only [+-]digits[.digits][e[+-]digits]: strtod alone would take "inf", "nan", hex and
   * leading spaces. */
  const char *p = s;
  if (*p == '-' || *p == '+') p++;
  bool digits = false;
  for (; isdigit((unsigned char)*p); p++)
    digits = true;
  if (*p == '.')
    for (p++; isdigit((unsigned char)*p); p++)
      digits = true;
  if (!digits) return SONDE_EINVAL;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '-' || *p == '+') p++;
    if (!isdigit((unsigned char)*p)) return SONDE_EINVAL;
    while (isdigit((unsigned char)*p))
      p++;
  }
  if (*p) return SONDE_EINVAL;
  errno = 0;
  double d = strtod(s, NULL);
  if (errno == ERANGE && isinf(d)) return SONDE_ETOOBIG;
  *v = d;
  return 0;
}

static int lc(char c) {
  return tolower((unsigned char)c);
}

/* Edit distance counting a swap of two neighbours as one edit (optimal string alignment), the
 * commonest typo. Case is ignored. */
static size_t lev(const char *a, size_t la, const char *b, size_t lb) {
  size_t rows[3][129];
  size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
  for (size_t j = 0; j <= lb; j++)
    prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = lc(a[i - 1]) == lc(b[j - 1]) ? 0 : 1;
      size_t best = prev[j - 1] + cost;
      if (prev[j] + 1 < best) best = prev[j] + 1;
      if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
      if (i > 1 && j > 1 && lc(a[i - 1]) == lc(b[j - 2]) && lc(a[i - 2]) == lc(b[j - 1]) &&
          prev2[j - 2] + 1 < best)
        best = prev2[j - 2] + 1;
      cur[j] = best;
    }
    size_t *t = prev2;
    prev2 = prev;
    prev = cur;
    cur = t;
  }
  return prev[lb];
}

const char *sonde__did_you_mean(const char *word, const char *const *choices, size_t n) {
  size_t lw = strlen(word);
  if (lw == 0 || lw > 128) return NULL;
  const char *best = NULL;
  size_t bestd = SIZE_MAX;
  for (size_t i = 0; i < n; i++) {
    size_t lc = strlen(choices[i]);
    if (lc > 128) continue;
    size_t d = lev(word, lw, choices[i], lc);
    size_t longer = lw > lc ? lw : lc;
    size_t thr = longer / 3 ? longer / 3 : (longer > 1 ? 1 : 0);
    if (d <= thr && d < bestd) {
      best = choices[i];
      bestd = d;
    }
  }
  return best;
}

/* ---- formatting ----------------------------------------------------------------------------- */

/* v / unit with up to 9 fraction digits, trailing zeros trimmed. */
static int fmt_frac(char *buf, size_t len, uint64_t v, uint64_t unit, const char *name) {
  uint64_t whole = v / unit, rest = v % unit;
  if (!rest) return snprintf(buf, len, "%" PRIu64 "%s", whole, name);
  char frac[24];
  size_t k = 0;
  for (uint64_t u = unit / 10; u > 0 && k < sizeof frac - 1; u /= 10) {
    frac[k++] = (char)('0' + rest / u % 10);
  }
  while (k > 0 && frac[k - 1] == '0')
    k--;
  frac[k] = 0;
  return snprintf(buf, len, "%" PRIu64 ".%s%s", whole, frac, name);
}

void sonde__fmt_duration(int64_t ns, char *buf, size_t len) {
  if (ns == 0) {
    snprintf(buf, len, "0s");
    return;
  }
  uint64_t v = ns < 0 ? 0 - (uint64_t)ns : (uint64_t)ns;
  size_t k = 0;
  if (ns < 0 && len > 1) buf[k++] = '-';
  buf[k] = 0;
  if (v < 1000) {
    snprintf(buf + k, len - k, "%" PRIu64 "ns", v);
  } else if (v < 1000000) {
    fmt_frac(buf + k, len - k, v, 1000, "us");
  } else if (v < 1000000000) {
    fmt_frac(buf + k, len - k, v, 1000000, "ms");
  } else {
    /* h and m as whole numbers, the rest as (fractional) seconds; zero parts left out */
    uint64_t h = v / 3600000000000ull, m = v / 60000000000ull % 60, s = v % 60000000000ull;
    if (h && k < len) k += (size_t)snprintf(buf + k, len - k, "%" PRIu64 "h", h);
    if (m && k < len) k += (size_t)snprintf(buf + k, len - k, "%" PRIu64 "m", m);
    if (s && k < len) fmt_frac(buf + k, len - k, s, 1000000000, "s");
  }
}

void sonde__fmt_bytes(uint64_t b, char *buf, size_t len) {
  uint64_t best = b;
  const char *name = "";
  for (size_t i = 2; i < sizeof size_units / sizeof size_units[0]; i++) {
    uint64_t m = size_units[i].mult;
    if (b && b % m == 0 && b / m < best && strcmp(size_units[i].name, "kB")) {
      best = b / m;
      name = size_units[i].name;
    }
  }
  snprintf(buf, len, "%" PRIu64 "%s", best, name);
}

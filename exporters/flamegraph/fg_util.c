/* JSON strings and query strings for the flamegraph exporter (fg_store.h). Both see bytes from
 * outside: frame and process names come from profiled programs, queries from any local client. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fg_store.h"
#include "sonde/errors.h"

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    len = 2;
    min = 0x80;
    c &= 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    min = 0x800;
    c &= 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    min = 0x10000;
    c &= 0x07;
  } else {
    return 0;
  }
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
  return len;
}

int fg_json_str(sonde_buf *b, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  int rc = sonde_buf_reserve(b, len + 2);
  if (rc) return rc;
  b->data[b->len++] = '"';
  for (size_t i = 0; i < len;) {
    unsigned char c = s[i];
    char esc[8];
    const char *e = NULL;
    size_t el = 0;
    switch (c) {
    case '"':
      e = "\\\"";
      break;
    case '\\':
      e = "\\\\";
      break;
    case '\n':
      e = "\\n";
      break;
    case '\t':
      e = "\\t";
      break;
    case '\r':
      e = "\\r";
      break;
    case '<': /* so "</script>" cannot end an inlined script */
    case '>':
    case '&':
      snprintf(esc, sizeof esc, "\\u%04x", c);
      e = esc;
      break;
    default:
      if (c < 0x20 || c == 0x7f) {
        snprintf(esc, sizeof esc, "\\u%04x", c);
        e = esc;
      }
    }
    if (e) {
      el = strlen(e);
      if ((rc = sonde_buf_append(b, e, el))) return rc;
      i++;
      continue;
    }
    size_t n = utf8_len(s + i, len - i);
    if (!n) {
      if ((rc = sonde_buf_append(b, "\\ufffd", 6))) return rc;
      i++;
      continue;
    }
    /* U+2028/2029 are line ends to JavaScript before ES2019 */
    if (n == 3 && s[i] == 0xe2 && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
      if ((rc = sonde_buf_append(b, s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6))) return rc;
    } else if ((rc = sonde_buf_append(b, s + i, n))) {
      return rc;
    }
    i += n;
  }
  return sonde_buf_append(b, "\"", 1);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool fg_query_get(const char *query, const char *key, char *out, size_t outlen) {
  size_t kl = strlen(key);
  const char *p = query ? query : "";
  while (*p) {
    const char *end = strchr(p, '&');
    if (!end) end = p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    const char *kend = eq ? eq : end;
    if ((size_t)(kend - p) == kl && !memcmp(p, key, kl)) {
      size_t o = 0;
      for (const char *v = eq ? eq + 1 : end; v < end && o + 1 < outlen; v++) {
        int h1, h2;
        if (*v == '+') {
          out[o++] = ' ';
        } else if (*v == '%' && end - v > 2 && (h1 = hexval(v[1])) >= 0 &&
                   (h2 = hexval(v[2])) >= 0) {
          out[o++] = (char)(h1 * 16 + h2);
          v += 2;
        } else {
          out[o++] = *v;
        }
      }
      if (outlen) out[o] = 0;
      return true;
    }
    p = *end ? end + 1 : end;
  }
  return false;
}

/* A time in ms since the epoch, or negative: ms before now. */
static int parse_time(const char *query, const char *key, int64_t now_ns, int64_t *out, char *err,
                      size_t errlen) {
  char v[32];
  *out = 0;
  if (!fg_query_get(query, key, v, sizeof v) || !v[0]) return 0;
  char *end;
  long long ms = strtoll(v, &end, 10);
  if (*end || end == v || ms > 4000000000000LL || ms < -4000000000000LL) {
    snprintf(err, errlen, "%s: not a time in milliseconds: %s", key, v);
    return SONDE_EINVAL;
  }
  *out = ms < 0 ? now_ns + ms * 1000000LL : ms * 1000000LL;
  return 0;
}

int fg_query_parse(const char *query, int64_t now_ns, fg_query *q, fg_qbufs *bufs, char *err,
                   size_t errlen) {
  memset(q, 0, sizeof(*q));
  int rc = parse_time(query, "from", now_ns, &q->from_ns, err, errlen);
  if (!rc) rc = parse_time(query, "to", now_ns, &q->to_ns, err, errlen);
  if (!rc) rc = parse_time(query, "from2", now_ns, &q->from2_ns, err, errlen);
  if (!rc) rc = parse_time(query, "to2", now_ns, &q->to2_ns, err, errlen);
  if (rc) return rc;
  if (q->from_ns && !q->to_ns) q->to_ns = now_ns + 1;
  if (q->from2_ns && !q->to2_ns) q->to2_ns = now_ns + 1;
  if (q->to_ns && q->from_ns > q->to_ns) {
    snprintf(err, errlen, "from is after to");
    return SONDE_EINVAL;
  }
  if ((q->to2_ns && q->from2_ns > q->to2_ns) || (!q->from2_ns && q->to2_ns)) {
    snprintf(err, errlen, "the baseline window needs from2 <= to2");
    return SONDE_EINVAL;
  }
  if (fg_query_get(query, "service", bufs->service, sizeof bufs->service))
    q->service = bufs->service;
  if (fg_query_get(query, "process", bufs->process, sizeof bufs->process))
    q->process = bufs->process;
  if (fg_query_get(query, "container", bufs->container, sizeof bufs->container))
    q->container = bufs->container;
  char g[16];
  if (fg_query_get(query, "group", g, sizeof g) && g[0]) {
    static const char *const groups[] = {"none", "service", "container", "process", "all"};
    q->group = -1;
    for (int i = 0; i < 5; i++)
      if (!strcmp(g, groups[i])) q->group = i;
    if (q->group < 0) {
      snprintf(err, errlen, "group: one of none, service, container, process, all");
      return SONDE_EINVAL;
    }
  }
  char m[24];
  if (fg_query_get(query, "min_share_ppm", m, sizeof m) && m[0]) {
    char *end;
    long long v = strtoll(m, &end, 10);
    if (*end || v < 0 || v > 1000000) {
      snprintf(err, errlen, "min_share_ppm: a whole number from 0 to 1000000");
      return SONDE_EINVAL;
    }
    q->min_share_ppm = v;
  }
  return 0;
}

/* The host part of "host:port", "[v6]:port" or "host". */
static void host_of(const char *hp, char *out, size_t len) {
  const char *end = hp + strlen(hp);
  if (hp[0] == '[') {
    const char *b = strchr(hp, ']');
    if (b) end = b + 1;
  } else {
    const char *c = strrchr(hp, ':');
    if (c) end = c;
  }
  snprintf(out, len, "%.*s", (int)(end - hp), hp);
}

bool fg_host_allowed(const char *endpoint, const char *host) {
  char want[256], have[256];
  host_of(endpoint, want, sizeof want);
  if (!strcmp(want, "0.0.0.0") || !strcmp(want, "[::]")) return true;
  if (!host) return false;
  host_of(host, have, sizeof have);
  return !strcasecmp(have, "localhost") || !strcmp(have, "127.0.0.1") || !strcmp(have, "[::1]") ||
         (want[0] && !strcasecmp(have, want));
}

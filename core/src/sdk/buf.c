#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/errors.h"
#include "sonde/pdata.h"

int sonde_buf_reserve(sonde_buf *buf, size_t extra) {
  if (buf->cap - buf->len >= extra)
    return 0;
  size_t need = buf->len + extra;
  if (need < buf->len)
    return SONDE_ENOMEM;
  size_t cap = buf->cap ? buf->cap : 256;
  while (cap < need)
    cap = cap * 2 > cap ? cap * 2 : need;
  uint8_t *p = realloc(buf->data, cap);
  if (!p)
    return SONDE_ENOMEM;
  buf->data = p;
  buf->cap = cap;
  return 0;
}

int sonde_buf_append(sonde_buf *buf, const void *p, size_t len) {
  int rc = sonde_buf_reserve(buf, len + 1);
  if (rc)
    return rc;
  if (len)
    memcpy(buf->data + buf->len, p, len);
  buf->len += len;
  buf->data[buf->len] = 0; /* always NUL-terminated for text users; not counted in len */
  return 0;
}

int sonde_buf_printf(sonde_buf *buf, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0)
    return SONDE_EINVAL;
  if ((size_t)n < sizeof tmp)
    return sonde_buf_append(buf, tmp, (size_t)n);
  int rc = sonde_buf_reserve(buf, (size_t)n + 1);
  if (rc)
    return rc;
  va_start(ap, fmt);
  vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  buf->len += (size_t)n;
  return 0;
}

void sonde_buf_free(sonde_buf *buf) {
  free(buf->data);
  buf->data = NULL;
  buf->len = buf->cap = 0;
}

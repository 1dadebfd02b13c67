/* /proc/PID/net/tcp{,6}: the listening sockets of a network namespace (the role of a connection
 * opened before sonde). Outside bytes: tests/fuzz/fuzz_proc_tcp.c. */
#include <stdio.h>
#include <string.h>

#include "hx.h"

bool hx_tcp_listens(const char *text, size_t len, uint16_t port) {
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((nl ? nl : end) - p);
    char line[256]; /* a row is ~150 bytes; a longer one is not a row */
    if (n < sizeof(line)) {
      memcpy(line, p, n);
      line[n] = '\0';
      unsigned lport, st;
      /* "   0: 0100007F:1F90 00000000:0000 0A ...": st 0A is TCP_LISTEN */
      if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2 &&
          st == 0x0A && lport == port)
        return true;
    }
    p = nl ? nl + 1 : end;
  }
  return false;
}

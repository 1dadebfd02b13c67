/* libFuzzer target: the /proc/PID/net/tcp{,6} reader of the ebpf_http receiver
 * (receivers/ebpf_http/proc_tcp.c), which decides the role of connections opened before sonde.
 *
 * Input: 2 bytes of port (big endian), then the table text. Checks: no crash or undefined
 * behaviour, and a port said to listen appears in the text as ":<port in hex>" followed by a
 * space (an answer not backed by the bytes would make a client connection a server one). */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint16_t port = (uint16_t)(data[0] << 8 | data[1]);
  const char *text = (const char *)data + 2;
  size_t len = size - 2;
  if (!hx_tcp_listens(text, len, port)) return 0;
  /* The port field is hex of any case and width: find one that reads back as port. */
  for (size_t i = 0; i + 1 < len; i++) {
    if (text[i] != ':') continue;
    size_t j = i + 1;
    unsigned v = 0;
    while (j < len && isxdigit((unsigned char)text[j]) && v <= 0xffffffu) {
      char c = (char)tolower((unsigned char)text[j++]);
      v = v * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    if (j > i + 1 && v == port && j < len && isspace((unsigned char)text[j])) return 0;
  }
  abort();
}

/* HTTP/1.x exchanges of one connection from the bytes one process read and wrote on it (nodejs
 * http_parser, one parser per direction). Requests wait in a FIFO for their responses, so
 * pipelined requests pair with the right response. Internal to the ebpf_http receiver. */
#ifndef SONDE_EBPF_HTTP_HTTP1_H
#define SONDE_EBPF_HTTP_HTTP1_H

#include "hx.h"

typedef struct hx_h1 hx_h1;

typedef struct hx_h1_hooks {
  /* A request's headers were parsed (ex has the request fields and start_ns; no status). The
   * returned tag comes back with the exchange. Optional. */
  uint64_t (*request)(void *ud, const hx_exchange *ex);
  /* Called exactly once per request whose headers were parsed (after `request`), in order:
   * answered (status != 0), or dropped (reset: the connection closed first, or the stream could
   * not be followed). */
  void (*done)(void *ud, const hx_exchange *ex, uint64_t tag);
} hx_h1_hooks;

/* server: the traced process answers on this connection (it reads the requests). hooks is kept. */
hx_h1 *hx_h1_new(bool server, const hx_h1_hooks *hooks, void *ud);
/* One read (INGRESS) or write (EGRESS), in order: n bytes captured of total transferred; the
 * missing ones directly follow and are accounted by length where the framing allows (body bytes
 * of a Content-Length, chunked or read-to-close body); otherwise that direction waits for the next
 * transfer that starts a message. Returns 0, or SONDE_EPROTO when the stream is not HTTP/1. */
int hx_h1_feed(hx_h1 *h, enum hx_dir dir, const uint8_t *p, size_t n, size_t total, uint64_t ts_ns);
/* The connection closed at ts_ns: a response read to the close ends there; requests still waiting
 * are done with reset = true. */
void hx_h1_close(hx_h1 *h, uint64_t ts_ns);
/* Frees h; requests still waiting are done with reset = true. */
void hx_h1_free(hx_h1 *h);

/* Whether p starts like an HTTP/1 request line ("GET /x HTTP/1.1"; the method and a space) or a
 * status line ("HTTP/1.1 200"). */
bool hx_h1_is_request(const uint8_t *p, size_t n);
bool hx_h1_is_response(const uint8_t *p, size_t n);

#endif

/* libFuzzer target: an OTLP/HTTP request as bytes on the wire, through an HTTP/1.1 request parser
 * (http_parser, the library the core's server uses) into the otlp receiver's request handling
 * (otlp_http_handle: method, path, content type, Content-Encoding with bounded gzip/zstd,
 * protobuf or OTLP-JSON decoding) with a fake pipeline. The first byte picks the pipeline's
 * answer. Checks: no crash, leak or undefined behaviour, and the answer is one otelcol gives. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "otlp_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct req {
  sonde_buf url, body;
  char ctype[128], cenc[64];
  char field[32];
  size_t field_len;
  int in; /* 1: collecting Content-Type, 2: Content-Encoding */
  bool done;
  int method;
} req;

static int g_answer;

static int fake_consume(void *arg, sonde_batch *b) {
  (void)arg;
  (void)sonde_batch_items(b);
  return g_answer;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  req *r = p->data;
  return r->url.len + n > 4096 || sonde_buf_append(&r->url, at, n) ? -1 : 0;
}

static int on_field(http_parser *p, const char *at, size_t n) {
  req *r = p->data;
  if (r->in >= 0) r->field_len = 0; /* a new header name starts */
  r->in = -1;
  size_t k = n < sizeof r->field - 1 - r->field_len ? n : sizeof r->field - 1 - r->field_len;
  memcpy(r->field + r->field_len, at, k);
  r->field_len += k;
  r->field[r->field_len] = 0;
  return 0;
}

static void append_val(char *dst, size_t cap, const char *at, size_t n) {
  size_t l = strlen(dst);
  size_t k = n < cap - 1 - l ? n : cap - 1 - l;
  memcpy(dst + l, at, k);
  dst[l + k] = 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  req *r = p->data;
  if (r->in < 0) {
    r->in = !strcasecmp(r->field, "content-type")       ? 1
            : !strcasecmp(r->field, "content-encoding") ? 2
                                                        : 0;
    if (r->in == 1) r->ctype[0] = 0;
    if (r->in == 2) r->cenc[0] = 0;
  }
  if (r->in == 1) append_val(r->ctype, sizeof r->ctype, at, n);
  if (r->in == 2) append_val(r->cenc, sizeof r->cenc, at, n);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  req *r = p->data;
  return r->body.len + n > (1u << 20) || sonde_buf_append(&r->body, at, n) ? -1 : 0;
}

static int on_complete(http_parser *p) {
  req *r = p->data;
  r->done = true;
  r->method = p->method;
  http_parser_pause(p, 1);
  return 0;
}

static const int answers[4] = {0, SONDE_EREFUSED, SONDE_EPERMANENT, SONDE_ETOOBIG};
static const int allowed[] = {200, 400, 404, 405, 413, 415, 429, 500, 503};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  g_answer = answers[data[0] & 3];
  data++;
  size--;
  http_parser_settings st = {.on_url = on_url,
                             .on_header_field = on_field,
                             .on_header_value = on_value,
                             .on_body = on_body,
                             .on_message_complete = on_complete};
  http_parser p;
  req r = {.in = 0};
  http_parser_init(&p, HTTP_REQUEST);
  p.data = &r;
  http_parser_execute(&p, &st, (const char *)data, size);
  if (r.done && !sonde_buf_append(&r.url, "", 1)) {
    char *path = (char *)r.url.data;
    char *q = strchr(path, '?');
    if (q) *q = 0;
    otlp_http_paths paths = {"/v1/traces", "/v1/metrics", "/v1/logs", "/v1development/profiles"};
    otlp_http_reply rep;
    otlp_http_handle(&paths, 1u << 16, http_method_str((enum http_method)r.method), path,
                     r.ctype[0] ? r.ctype : NULL, r.cenc[0] ? r.cenc : NULL,
                     r.body.data ? r.body.data : (const uint8_t *)"", r.body.len, fake_consume,
                     NULL, &rep);
    bool ok = false;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
      ok |= rep.status == allowed[i];
    if (!ok || !rep.content_type) abort();
    sonde_buf_free(&rep.body);
  }
  sonde_buf_free(&r.url);
  sonde_buf_free(&r.body);
  return 0;
}

/* The `otlp` receiver's OTLP/HTTP request handling, as otelcol's otlpreceiver answers:
 * POST only (405), application/x-protobuf or application/json (415), Content-Encoding gzip/zstd
 * (400 when unknown or corrupt, 413 when the decompressed body passes max_request_body_size),
 * errors as a google.rpc.Status in the request's encoding, success as the empty
 * Export*ServiceResponse. The HTTP/1.1 transport (keep-alive, body limit, read timeout) is the
 * core's; this file only sees complete requests.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "otlp_internal.h"

#define CT_PROTO "application/x-protobuf"
#define CT_JSON "application/json"

static sonde_signal path_signal(const otlp_http_paths *p, const char *path) {
  if (p->traces && !strcmp(path, p->traces)) return SONDE_SIGNAL_TRACES;
  if (p->metrics && !strcmp(path, p->metrics)) return SONDE_SIGNAL_METRICS;
  if (p->logs && !strcmp(path, p->logs)) return SONDE_SIGNAL_LOGS;
  if (p->profiles && !strcmp(path, p->profiles)) return SONDE_SIGNAL_PROFILES;
  return 0;
}

/* 1 proto, 2 json, 0 other: the media type before any parameter, case-insensitively. */
static int media_type(const char *ct) {
  if (!ct) return 0;
  while (*ct == ' ' || *ct == '\t')
    ct++;
  size_t n = strcspn(ct, ";");
  while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
    n--;
  if (n == strlen(CT_PROTO) && !strncasecmp(ct, CT_PROTO, n)) return 1;
  if (n == strlen(CT_JSON) && !strncasecmp(ct, CT_JSON, n)) return 2;
  return 0;
}

static void text_reply(otlp_http_reply *out, int status, const char *headers, const char *msg) {
  out->status = status;
  out->content_type = "text/plain; charset=utf-8";
  out->headers = headers;
  out->body.len = 0;
  if (sonde_buf_printf(&out->body, "%s", msg)) out->body.len = 0;
}

/* An error as otelcol writes it: the Status message in the request's encoding. */
static void status_reply(otlp_http_reply *out, bool json, int http_status, int code,
                         const char *msg) {
  out->status = http_status;
  out->content_type = json ? CT_JSON : CT_PROTO;
  out->headers = NULL;
  if (http_status == 503 || http_status == 429)
    /* otelcol only sets it from a RetryInfo; sonde always says when to come back. */
    out->headers = "Retry-After: 1\r\n";
  out->body.len = 0;
  if (otlp_status_encode(code, msg, json, &out->body)) {
    text_reply(out, 500, NULL, "out of memory");
    out->status = http_status;
  }
}

void otlp_http_handle(const otlp_http_paths *paths, uint64_t max_body, const char *method,
                      const char *path, const char *ctype, const char *cenc, const uint8_t *body,
                      size_t len, otlp_consume_fn consume, void *arg, otlp_http_reply *out) {
  char msg[300];
  memset(out, 0, sizeof *out);
  sonde_signal sig = path_signal(paths, path);
  if (!sig) {
    text_reply(out, 404, NULL, "404 page not found\n");
    return;
  }
  if (strcmp(method, "POST") != 0) {
    snprintf(msg, sizeof msg, "%s method not allowed, supported: [POST]", method);
    text_reply(out, 405, "Allow: POST\r\n", msg);
    return;
  }
  int mt = media_type(ctype);
  if (!mt) {
    snprintf(msg, sizeof msg, "%.100s unsupported media type, supported: [%s, %s]",
             ctype ? ctype : "", CT_JSON, CT_PROTO);
    text_reply(out, 415, NULL, msg);
    return;
  }
  bool json = mt == 2;
  int enc = otlp_encoding_parse(cenc);
  if (enc < 0) {
    snprintf(msg, sizeof msg, "unsupported Content-Encoding: %.100s", cenc);
    status_reply(out, json, 400, GRPC_INVALID_ARGUMENT, msg);
    return;
  }
  sonde_buf plain = {0};
  const uint8_t *data = body;
  size_t dlen = len;
  if (enc != OTLP_ENC_IDENTITY) {
    int rc = otlp_decompress(enc, body, len, (size_t)max_body, &plain);
    if (rc == SONDE_ETOOBIG) {
      snprintf(msg, sizeof msg, "decompressed request body larger than %llu bytes",
               (unsigned long long)max_body);
      status_reply(out, json, 413, GRPC_RESOURCE_EXHAUSTED, msg);
      out->headers = NULL;
    } else if (rc) {
      snprintf(msg, sizeof msg, "failed to decompress request body: %s", sonde_strerror(rc));
      status_reply(out, json, rc == SONDE_ENOMEM ? 503 : 400,
                   rc == SONDE_ENOMEM ? GRPC_UNAVAILABLE : GRPC_INVALID_ARGUMENT, msg);
    }
    if (rc) {
      sonde_buf_free(&plain);
      return;
    }
    data = plain.data ? plain.data : (const uint8_t *)"";
    dlen = plain.len;
  }
  msg[0] = 0;
  int code = otlp_decode_consume(sig, json, data, dlen, consume, arg, msg, sizeof msg);
  sonde_buf_free(&plain);
  if (code != GRPC_OK) {
    status_reply(out, json, otlp_grpc_to_http(code), code, msg);
    return;
  }
  /* The Export*ServiceResponse without partial_success: empty in either encoding. */
  out->status = 200;
  out->content_type = json ? CT_JSON : CT_PROTO;
  if (json && sonde_buf_append(&out->body, "{}", 2)) text_reply(out, 500, NULL, "out of memory");
}

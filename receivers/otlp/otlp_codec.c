/* The `otlp` receiver: bounded decompression, status mapping and the bodies both transports share.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "otlp_internal.h"

int otlp_encoding_parse(const char *s) {
  if (!s || !*s || !strcasecmp(s, "identity")) return OTLP_ENC_IDENTITY;
  if (!strcasecmp(s, "gzip")) return OTLP_ENC_GZIP;
  if (!strcasecmp(s, "zstd")) return OTLP_ENC_ZSTD;
  return -1;
}

/* Makes room for at least one more byte than max allows, so that "larger than max" is seen. */
static int grow(sonde_buf *out, size_t max) {
  if (out->len < out->cap) return 0;
  size_t want = out->cap ? out->cap * 2 : 16384;
  if (want > max + 1) want = max + 1;
  if (want <= out->cap) return SONDE_ETOOBIG;
  return sonde_buf_reserve(out, want - out->len);
}

static int gunzip(const uint8_t *in, size_t len, size_t max, sonde_buf *out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* 32: gzip or zlib header, as Go's and Node's clients may send either under "gzip". */
  if (inflateInit2(&z, 32 + MAX_WBITS) != Z_OK) return SONDE_ENOMEM;
  int rc = 0;
  z.next_in = (Bytef *)in;
  size_t left = len;
  for (;;) {
    if ((rc = grow(out, max))) break;
    uInt chunk_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
    z.next_in = (Bytef *)in + (len - left);
    z.avail_in = chunk_in;
    size_t room = out->cap - out->len;
    z.next_out = out->data + out->len;
    z.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
    uInt before_out = z.avail_out;
    int zr = inflate(&z, Z_NO_FLUSH);
    out->len += before_out - z.avail_out;
    left -= chunk_in - z.avail_in;
    if (out->len > max) {
      rc = SONDE_ETOOBIG;
      break;
    }
    if (zr == Z_STREAM_END) {
      if (!left) break;
      if (inflateReset(&z) != Z_OK) { /* another gzip member follows */
        rc = SONDE_EPROTO;
        break;
      }
      continue;
    }
    if (zr == Z_MEM_ERROR) {
      rc = SONDE_ENOMEM;
      break;
    }
    if (zr != Z_OK && zr != Z_BUF_ERROR) {
      rc = SONDE_EPROTO;
      break;
    }
    if (zr == Z_BUF_ERROR && !left && z.avail_out) { /* input ended mid-stream */
      rc = SONDE_EPROTO;
      break;
    }
  }
  inflateEnd(&z);
  return rc;
}

static int unzstd(const uint8_t *in, size_t len, size_t max, sonde_buf *out) {
  ZSTD_DCtx *d = ZSTD_createDCtx();
  if (!d) return SONDE_ENOMEM;
  /* Bounds the window a hostile frame header can make us allocate (clients use far less). */
  ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 24);
  ZSTD_inBuffer ib = {in, len, 0};
  int rc = 0;
  size_t last = 1;
  while (ib.pos < ib.size || last != 0) {
    if ((rc = grow(out, max))) break;
    ZSTD_outBuffer ob = {out->data + out->len, out->cap - out->len, 0};
    size_t before = ib.pos;
    last = ZSTD_decompressStream(d, &ob, &ib);
    out->len += ob.pos;
    if (ZSTD_isError(last)) {
      rc = ZSTD_getErrorCode(last) == ZSTD_error_memory_allocation ? SONDE_ENOMEM : SONDE_EPROTO;
      break;
    }
    if (out->len > max) {
      rc = SONDE_ETOOBIG;
      break;
    }
    if (ib.pos == ib.size && last != 0 && ob.pos == 0 && before == ib.pos) {
      rc = SONDE_EPROTO; /* truncated frame */
      break;
    }
  }
  ZSTD_freeDCtx(d);
  return rc;
}

int otlp_decompress(int enc, const uint8_t *in, size_t len, size_t max, sonde_buf *out) {
  out->len = 0;
  switch (enc) {
  case OTLP_ENC_IDENTITY:
    if (len > max) return SONDE_ETOOBIG;
    return sonde_buf_append(out, in, len);
  case OTLP_ENC_GZIP:
    return gunzip(in, len, max, out);
  case OTLP_ENC_ZSTD:
    return unzstd(in, len, max, out);
  }
  return SONDE_EUNSUPPORTED;
}

int otlp_consume_grpc_code(int rc) {
  switch (rc) {
  case 0:
    return GRPC_OK;
  /* otelcol answers UNAVAILABLE for errors without a status that are not permanent, which is
   * what memory_limiter's refusal is: the client retries. */
  case SONDE_EREFUSED:
  case SONDE_ERETRY:
  case SONDE_EFULL:
  case SONDE_ESHUTDOWN:
  case SONDE_ETIMEOUT:
  case SONDE_ENOMEM:
    return GRPC_UNAVAILABLE;
  case SONDE_ETOOBIG:
    return GRPC_RESOURCE_EXHAUSTED;
  case SONDE_EPROTO:
  case SONDE_EINVAL:
    return GRPC_INVALID_ARGUMENT;
  default: /* permanent: otelcol's "server-side" INTERNAL */
    return GRPC_INTERNAL;
  }
}

int otlp_grpc_to_http(int code) {
  switch (code) {
  case GRPC_OK:
    return 200;
  case 1:  /* CANCELLED */
  case 4:  /* DEADLINE_EXCEEDED */
  case 10: /* ABORTED */
  case 11: /* OUT_OF_RANGE */
  case GRPC_UNAVAILABLE:
  case 15: /* DATA_LOSS */
    return 503;
  case GRPC_RESOURCE_EXHAUSTED:
    return 429;
  case GRPC_INVALID_ARGUMENT:
    return 400;
  case 16: /* UNAUTHENTICATED */
    return 401;
  case 7: /* PERMISSION_DENIED */
    return 403;
  case GRPC_UNIMPLEMENTED:
    return 404;
  default:
    return 500;
  }
}

static const struct {
  const char *path;
  sonde_signal sig;
} g_methods[] = {
    {"/opentelemetry.proto.collector.trace.v1.TraceService/Export", SONDE_SIGNAL_TRACES},
    {"/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", SONDE_SIGNAL_METRICS},
    {"/opentelemetry.proto.collector.logs.v1.LogsService/Export", SONDE_SIGNAL_LOGS},
    {"/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
     SONDE_SIGNAL_PROFILES},
};

sonde_signal otlp_grpc_method_signal(const char *path, size_t len) {
  for (size_t i = 0; i < sizeof g_methods / sizeof g_methods[0]; i++)
    if (strlen(g_methods[i].path) == len && !memcmp(g_methods[i].path, path, len))
      return g_methods[i].sig;
  return 0;
}

static int put_varint(sonde_buf *out, uint64_t v) {
  uint8_t b[10];
  size_t n = 0;
  do {
    b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return sonde_buf_append(out, b, n);
}

int otlp_status_encode(int code, const char *msg, bool json, sonde_buf *out) {
  int rc;
  if (!json) {
    size_t ml = strlen(msg);
    if (code && ((rc = put_varint(out, 0x08)) || (rc = put_varint(out, (uint64_t)code)))) return rc;
    if (ml && ((rc = put_varint(out, 0x12)) || (rc = put_varint(out, ml)) ||
               (rc = sonde_buf_append(out, msg, ml))))
      return rc;
    return 0;
  }
  if ((rc = sonde_buf_printf(out, "{\"code\":%d,\"message\":\"", code))) return rc;
  for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
    if (*p == '"' || *p == '\\')
      rc = sonde_buf_printf(out, "\\%c", *p);
    else if (*p < 0x20)
      rc = sonde_buf_printf(out, "\\u%04x", *p);
    else
      rc = sonde_buf_append(out, p, 1);
    if (rc) return rc;
  }
  return sonde_buf_append(out, "\"}", 2);
}

int otlp_decode_consume(sonde_signal sig, bool json, const uint8_t *body, size_t len,
                        otlp_consume_fn consume, void *arg, char *msg, size_t msglen) {
  sonde_batch *b = NULL;
  int rc;
  if (json) {
    char err[200] = "";
    rc = sonde_batch_from_json(sig, (const char *)body, len, &b, err, sizeof err);
    if (rc) {
      snprintf(msg, msglen, "unable to decode OTLP-JSON request: %s",
               err[0] ? err : sonde_strerror(rc));
      return rc == SONDE_ENOMEM ? GRPC_UNAVAILABLE : GRPC_INVALID_ARGUMENT;
    }
  } else {
    rc = sonde_batch_decode(sig, body, len, &b);
    if (rc) {
      snprintf(msg, msglen, "unable to decode protobuf request: %s", sonde_strerror(rc));
      return rc == SONDE_ENOMEM ? GRPC_UNAVAILABLE : GRPC_INVALID_ARGUMENT;
    }
  }
  rc = consume(arg, b);
  sonde_batch_unref(b);
  int code = otlp_consume_grpc_code(rc);
  if (code) snprintf(msg, msglen, "%s", sonde_strerror(rc));
  return code;
}

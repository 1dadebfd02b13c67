#include "otlp_common.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <zlib.h>
#include <zstd.h>

/* ---- options ------------------------------------------------------------------------------- */

static const char *const compressions[] = {"gzip", "zstd", "none", NULL};
static const char *const encodings[] = {"proto", "json", NULL};

typedef struct otlp_compression_params {
  int64_t level;
} otlp_compression_params;

static const sonde_option compression_params_options[] = {
    SONDE_OPT_RANGE("level", SONDE_OPT_INT, otlp_compression_params, level, "0", -1, 22,
                    "gzip 1-9 (-1 or 0: zlib's default, 6), zstd 1-22 (0: 1)"),
    SONDE_OPT_END,
};

const sonde_option otlp_tls_options[] = {
    SONDE_OPT("insecure", SONDE_OPT_BOOL, otlp_tls_config, insecure, "false",
              "gRPC only: cleartext HTTP/2 instead of TLS (otlp_http follows the URL scheme)"),
    SONDE_OPT("ca_file", SONDE_OPT_STRING, otlp_tls_config, ca_file, NULL,
              "CA certificates (PEM) that verify the server; unset: the system's"),
    SONDE_OPT("cert_file", SONDE_OPT_STRING, otlp_tls_config, cert_file, NULL,
              "client certificate (PEM) for mutual TLS"),
    SONDE_OPT("key_file", SONDE_OPT_STRING, otlp_tls_config, key_file, NULL,
              "client private key (PEM) for mutual TLS"),
    SONDE_OPT("insecure_skip_verify", SONDE_OPT_BOOL, otlp_tls_config, insecure_skip_verify,
              "false", "TLS without verifying the server certificate"),
    SONDE_OPT("server_name_override", SONDE_OPT_STRING, otlp_tls_config, server_name_override, NULL,
              "server name sent (SNI) and verified instead of the endpoint's host"),
    SONDE_OPT_END,
};

#define COMMON_OPTIONS                                                                             \
  SONDE_OPT_NESTED("tls", otlp_config, tls, otlp_tls_options, "TLS client settings"),              \
      SONDE_OPT("headers", SONDE_OPT_STRMAP, otlp_config, headers, NULL,                           \
                "headers added to every request"),                                                 \
      SONDE_OPT_ENUMV("compression", otlp_config, compression, "gzip", compressions,               \
                      "payload compression"),                                                      \
      SONDE_OPT_NESTED("compression_params", otlp_config, compression_params,                      \
                       compression_params_options, "compression level"),                           \
      SONDE_OPT("request_timeout", SONDE_OPT_DURATION, otlp_config, request_timeout_ns, NULL,      \
                "deadline of one request on the wire (grpc-timeout); unset: the exporter's "       \
                "timeout")

const sonde_option otlp_grpc_options[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, otlp_config, endpoint, NULL,
              "host:port of the OTLP/gRPC server (http:// or https:// prefix sets TLS)"),
    COMMON_OPTIONS,
    SONDE_OPT_END,
};

const sonde_option otlp_http_options[] = {
    SONDE_OPT("endpoint", SONDE_OPT_STRING, otlp_config, endpoint, NULL,
              "base URL; /v1/traces, /v1/metrics, /v1/logs, /v1development/profiles are appended"),
    SONDE_OPT("traces_endpoint", SONDE_OPT_STRING, otlp_config, traces_endpoint, NULL,
              "full URL for traces (overrides endpoint)"),
    SONDE_OPT("metrics_endpoint", SONDE_OPT_STRING, otlp_config, metrics_endpoint, NULL,
              "full URL for metrics (overrides endpoint)"),
    SONDE_OPT("logs_endpoint", SONDE_OPT_STRING, otlp_config, logs_endpoint, NULL,
              "full URL for logs (overrides endpoint)"),
    SONDE_OPT("profiles_endpoint", SONDE_OPT_STRING, otlp_config, profiles_endpoint, NULL,
              "full URL for profiles (overrides endpoint)"),
    SONDE_OPT_ENUMV("encoding", otlp_config, encoding, "proto", encodings,
                    "request body: protobuf or OTLP-JSON"),
    SONDE_OPT_RANGE("max_conns", SONDE_OPT_INT, otlp_config, max_conns, "16", 1, 1024,
                    "keep-alive connections per exporter (one request in flight on each)"),
    COMMON_OPTIONS,
    SONDE_OPT_END,
};

static bool empty(const char *s) {
  return !s || !*s;
}

static int tls_validate(const otlp_tls_config *t, char *err, size_t errlen) {
  if (empty(t->cert_file) != empty(t->key_file)) {
    snprintf(err, errlen, "tls: cert_file and key_file must be set together");
    return SONDE_ECONFIG;
  }
  return 0;
}

static int level_validate(const otlp_config *c, char *err, size_t errlen) {
  int64_t l = c->compression_params.level;
  if (c->compression == OTLP_COMP_GZIP && l > 9) {
    snprintf(err, errlen, "unsupported compression level %" PRId64 " for gzip (1-9)", l);
    return SONDE_ECONFIG;
  }
  if (c->compression == OTLP_COMP_ZSTD && l < 0) {
    snprintf(err, errlen, "unsupported compression level %" PRId64 " for zstd (1-22)", l);
    return SONDE_ECONFIG;
  }
  return 0;
}

int otlp_header_validate(const char *name, const char *value, char *err, size_t errlen) {
  static const char tchar[] = "!#$%&'*+-.^_`|~"; /* RFC 9110 5.6.2, with letters and digits */
  bool ok = name && *name;
  for (const char *p = name; ok && *p; p++)
    ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
         strchr(tchar, *p);
  if (!ok) {
    snprintf(err, errlen,
             "headers: \"%s\" is not a header name (letters, digits and !#$%%&'*+-.^_`|~ only)",
             name ? name : "");
    return SONDE_ECONFIG;
  }
  if (value && strpbrk(value, "\r\n")) {
    snprintf(err, errlen, "headers: the value of \"%s\" holds a line break", name);
    return SONDE_ECONFIG;
  }
  return 0;
}

int otlp_headers_validate(const sonde_strmap *h, char *err, size_t errlen) {
  for (size_t i = 0; i < h->n; i++)
    if (otlp_header_validate(h->keys[i], h->values[i], err, errlen)) return SONDE_ECONFIG;
  return 0;
}

int otlp_grpc_validate(const void *config, char *err, size_t errlen) {
  const otlp_config *c = config;
  if (level_validate(c, err, errlen)) return SONDE_ECONFIG;
  if (otlp_headers_validate(&c->headers, err, errlen)) return SONDE_ECONFIG;
  if (empty(c->endpoint)) {
    snprintf(err, errlen, "requires a non-empty \"endpoint\"");
    return SONDE_ECONFIG;
  }
  otlp_url u;
  int rc = otlp_parse_grpc_endpoint(c->endpoint, c->tls.insecure, &u, err, errlen);
  if (rc) return rc;
  return tls_validate(&c->tls, err, errlen);
}

int otlp_http_validate(const void *config, char *err, size_t errlen) {
  const otlp_config *c = config;
  if (level_validate(c, err, errlen)) return SONDE_ECONFIG;
  if (otlp_headers_validate(&c->headers, err, errlen)) return SONDE_ECONFIG;
  const char *eps[] = {c->endpoint, c->traces_endpoint, c->metrics_endpoint, c->logs_endpoint,
                       c->profiles_endpoint};
  bool any = false;
  for (size_t i = 0; i < 5; i++) {
    if (empty(eps[i])) continue;
    any = true;
    otlp_url u;
    if (otlp_parse_http_url(eps[i], &u, err, errlen)) return SONDE_ECONFIG;
  }
  if (!any) {
    snprintf(err, errlen, "at least one endpoint must be specified");
    return SONDE_ECONFIG;
  }
  return tls_validate(&c->tls, err, errlen);
}

/* ---- endpoints ------------------------------------------------------------------------------ */

static int split_hostport(const char *s, size_t n, const char *defport, otlp_url *u, char *err,
                          size_t errlen) {
  const char *host = s, *port = NULL;
  size_t hl;
  if (n && s[0] == '[') {
    const char *rb = memchr(s, ']', n);
    if (!rb) {
      snprintf(err, errlen, "invalid endpoint \"%.*s\": missing ']'", (int)n, s);
      return SONDE_ECONFIG;
    }
    host = s + 1;
    hl = (size_t)(rb - host);
    if (rb + 1 < s + n) {
      if (rb[1] != ':') {
        snprintf(err, errlen, "invalid endpoint \"%.*s\"", (int)n, s);
        return SONDE_ECONFIG;
      }
      port = rb + 2;
    }
  } else {
    const char *colon = memchr(s, ':', n);
    hl = colon ? (size_t)(colon - s) : n;
    if (colon) port = colon + 1;
  }
  size_t pl = port ? (size_t)(s + n - port) : 0;
  if (!hl || hl >= sizeof u->host) {
    snprintf(err, errlen, "invalid endpoint \"%.*s\": no host", (int)n, s);
    return SONDE_ECONFIG;
  }
  memcpy(u->host, host, hl);
  u->host[hl] = 0;
  if (port) {
    if (!pl || pl >= sizeof u->port) {
      snprintf(err, errlen, "invalid endpoint \"%.*s\": bad port", (int)n, s);
      return SONDE_ECONFIG;
    }
    memcpy(u->port, port, pl);
    u->port[pl] = 0;
    char *end;
    long v = strtol(u->port, &end, 10);
    if (*end || v <= 0 || v > 65535) {
      snprintf(err, errlen, "invalid endpoint \"%.*s\": bad port", (int)n, s);
      return SONDE_ECONFIG;
    }
  } else if (defport) {
    snprintf(u->port, sizeof u->port, "%s", defport);
  } else {
    snprintf(err, errlen, "invalid endpoint \"%.*s\": missing port", (int)n, s);
    return SONDE_ECONFIG;
  }
  bool v6 = strchr(u->host, ':') != NULL;
  snprintf(u->authority, sizeof u->authority, "%s%s%s:%s", v6 ? "[" : "", u->host, v6 ? "]" : "",
           u->port);
  return 0;
}

int otlp_parse_grpc_endpoint(const char *ep, bool insecure, otlp_url *u, char *err, size_t errlen) {
  memset(u, 0, sizeof *u);
  u->tls = !insecure;
  if (!strncmp(ep, "http://", 7)) {
    u->tls = false;
    ep += 7;
  } else if (!strncmp(ep, "https://", 8)) {
    u->tls = true;
    ep += 8;
  } else if (strstr(ep, "://")) {
    snprintf(err, errlen, "unsupported endpoint scheme in \"%s\"", ep);
    return SONDE_ECONFIG;
  }
  size_t n = strcspn(ep, "/");
  return split_hostport(ep, n, NULL, u, err, errlen);
}

int otlp_parse_http_url(const char *url, otlp_url *u, char *err, size_t errlen) {
  memset(u, 0, sizeof *u);
  const char *p;
  if (!strncmp(url, "http://", 7)) {
    p = url + 7;
  } else if (!strncmp(url, "https://", 8)) {
    u->tls = true;
    p = url + 8;
  } else {
    snprintf(err, errlen, "invalid endpoint \"%s\": the URL needs an http or https scheme", url);
    return SONDE_ECONFIG;
  }
  size_t n = strcspn(p, "/?#");
  int rc = split_hostport(p, n, u->tls ? "443" : "80", u, err, errlen);
  if (rc) return rc;
  const char *path = p + n;
  if (strlen(path) >= sizeof u->path) {
    snprintf(err, errlen, "invalid endpoint \"%s\": path too long", url);
    return SONDE_ECONFIG;
  }
  snprintf(u->path, sizeof u->path, "%s", path);
  return 0;
}

/* ---- compression ----------------------------------------------------------------------------- */

/* One compression context per thread-pool thread, kept for the life of the process: creating them
 * per request costs more CPU than small requests' compression, and the churn of ~1 MiB
 * allocations in each thread's malloc arena shows up as RSS. (A plug-in unloaded by a reload
 * leaves them behind: a few MiB, bounded by the thread-pool size.) */
static _Thread_local ZSTD_CCtx *tl_zstd;
static _Thread_local z_stream tl_gzip;
static _Thread_local bool tl_gzip_ready;
static _Thread_local int tl_gzip_level;

int otlp_compress(int comp, int level, const uint8_t *in, size_t len, sonde_buf *out) {
  out->len = 0;
  if (comp == OTLP_COMP_ZSTD) {
    if (!tl_zstd && !(tl_zstd = ZSTD_createCCtx())) return SONDE_ENOMEM;
    size_t bound = ZSTD_compressBound(len);
    if (sonde_buf_reserve(out, bound)) return SONDE_ENOMEM;
    size_t r = ZSTD_compressCCtx(tl_zstd, out->data, bound, in, len, level > 0 ? level : 1);
    if (ZSTD_isError(r)) return SONDE_EIO;
    out->len = r;
    return 0;
  }
  if (comp == OTLP_COMP_GZIP) {
    z_stream *z = &tl_gzip;
    int lv = level >= 1 && level <= 9 ? level : Z_DEFAULT_COMPRESSION;
    if (tl_gzip_ready && tl_gzip_level != lv) { /* another exporter, another level */
      deflateEnd(z);
      tl_gzip_ready = false;
    }
    if (!tl_gzip_ready) {
      memset(z, 0, sizeof *z);
      /* zlib's default level, as Go's gzip.DefaultCompression that otelcol uses. */
      if (deflateInit2(z, lv, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return SONDE_ENOMEM;
      tl_gzip_ready = true;
      tl_gzip_level = lv;
    } else if (deflateReset(z) != Z_OK) {
      return SONDE_EIO;
    }
    size_t bound = deflateBound(z, len);
    if (sonde_buf_reserve(out, bound)) return SONDE_ENOMEM;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)len;
    z->next_out = out->data;
    z->avail_out = (uInt)bound;
    int r = deflate(z, Z_FINISH);
    out->len = bound - z->avail_out;
    return r == Z_STREAM_END ? 0 : SONDE_EIO;
  }
  return sonde_buf_append(out, in, len);
}

int otlp_decompress(const char *enc, const uint8_t *in, size_t len, size_t max, sonde_buf *out) {
  out->len = 0;
  if (!strcmp(enc, "zstd")) {
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d) return SONDE_ENOMEM;
    ZSTD_inBuffer ib = {in, len, 0};
    int rc = 0;
    for (;;) {
      if (sonde_buf_reserve(out, 4096)) {
        rc = SONDE_ENOMEM;
        break;
      }
      ZSTD_outBuffer ob = {out->data + out->len, out->cap - out->len, 0};
      size_t r = ZSTD_decompressStream(d, &ob, &ib);
      out->len += ob.pos;
      if (ZSTD_isError(r)) {
        rc = SONDE_EPROTO;
        break;
      }
      if (out->len > max) {
        rc = SONDE_ETOOBIG;
        break;
      }
      if (r == 0 || (ib.pos == ib.size && ob.pos < ob.size)) break;
    }
    ZSTD_freeDStream(d);
    return rc;
  }
  if (!strcmp(enc, "gzip") || !strcmp(enc, "deflate")) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK) return SONDE_ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    int rc = 0;
    for (;;) {
      if (sonde_buf_reserve(out, 4096)) {
        rc = SONDE_ENOMEM;
        break;
      }
      z.next_out = out->data + out->len;
      z.avail_out = (uInt)(out->cap - out->len);
      uInt before = z.avail_out;
      int r = inflate(&z, Z_NO_FLUSH);
      out->len += before - z.avail_out;
      if (r == Z_STREAM_END) break;
      if (r != Z_OK && r != Z_BUF_ERROR) {
        rc = SONDE_EPROTO;
        break;
      }
      if (out->len > max) {
        rc = SONDE_ETOOBIG;
        break;
      }
      if (r == Z_BUF_ERROR && z.avail_in == 0) break; /* truncated: take what there is */
    }
    inflateEnd(&z);
    return rc;
  }
  if (!strcmp(enc, "identity") || !*enc) return sonde_buf_append(out, in, len);
  return SONDE_EUNSUPPORTED;
}

/* ---- tiny protobuf reader for response messages -------------------------------------------- */

typedef struct pbr {
  const uint8_t *p, *end;
} pbr;

static bool pb_varint(pbr *r, uint64_t *v) {
  uint64_t x = 0;
  for (int s = 0; s < 64 && r->p < r->end; s += 7) {
    uint8_t b = *r->p++;
    x |= (uint64_t)(b & 0x7f) << s;
    if (!(b & 0x80)) {
      *v = x;
      return true;
    }
  }
  return false;
}

/* Next field: number, wire type, and for wire type 2 the bytes; varints in *v. */
static bool pb_next(pbr *r, uint32_t *field, int *wt, uint64_t *v, const uint8_t **bp, size_t *bl) {
  uint64_t key;
  if (r->p >= r->end || !pb_varint(r, &key)) return false;
  *field = (uint32_t)(key >> 3);
  *wt = (int)(key & 7);
  switch (*wt) {
  case 0:
    return pb_varint(r, v);
  case 1:
    if (r->end - r->p < 8) return false;
    r->p += 8;
    return true;
  case 2:
    if (!pb_varint(r, v) || *v > (uint64_t)(r->end - r->p)) return false;
    *bp = r->p;
    *bl = (size_t)*v;
    r->p += *v;
    return true;
  case 5:
    if (r->end - r->p < 4) return false;
    r->p += 4;
    return true;
  default:
    return false;
  }
}

static void copy_str(char *dst, size_t dl, const uint8_t *p, size_t n) {
  if (!dl) return;
  if (n >= dl) n = dl - 1;
  memcpy(dst, p, n);
  dst[n] = 0;
}

void otlp_decode_partial_success(const uint8_t *p, size_t n, int64_t *rejected, char *msg,
                                 size_t msglen) {
  *rejected = 0;
  if (msglen) msg[0] = 0;
  pbr r = {p, p + n};
  uint32_t f;
  int wt;
  uint64_t v;
  const uint8_t *bp;
  size_t bl;
  while (pb_next(&r, &f, &wt, &v, &bp, &bl)) {
    if (f != 1 || wt != 2) continue;
    pbr s = {bp, bp + bl};
    while (pb_next(&s, &f, &wt, &v, &bp, &bl)) {
      if (f == 1 && wt == 0)
        *rejected = (int64_t)v;
      else if (f == 2 && wt == 2)
        copy_str(msg, msglen, bp, bl);
    }
  }
}

/* Finds "key": in a JSON text and returns a pointer after the colon (whitespace skipped). */
static const char *json_find(const char *p, size_t n, const char *key) {
  size_t kl = strlen(key);
  for (const char *q = p; q + kl + 2 < p + n; q++) {
    if (*q == '"' && !memcmp(q + 1, key, kl) && q[kl + 1] == '"') {
      const char *c = q + kl + 2;
      while (c < p + n && isspace((unsigned char)*c))
        c++;
      if (c < p + n && *c == ':') {
        c++;
        while (c < p + n && isspace((unsigned char)*c))
          c++;
        return c;
      }
    }
  }
  return NULL;
}

void otlp_json_partial_success(const char *p, size_t n, int64_t *rejected, char *msg,
                               size_t msglen) {
  *rejected = 0;
  if (msglen) msg[0] = 0;
  static const char *const keys[] = {
      "rejectedSpans",  "rejectedDataPoints",   "rejectedLogRecords",   "rejectedProfiles",
      "rejected_spans", "rejected_data_points", "rejected_log_records", "rejected_profiles"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const char *v = json_find(p, n, keys[i]);
    if (v) {
      if (*v == '"') v++;
      *rejected = strtoll(v, NULL, 10);
      break;
    }
  }
  const char *m = json_find(p, n, "errorMessage");
  if (!m) m = json_find(p, n, "error_message");
  if (m && *m == '"') {
    m++;
    size_t i = 0;
    while (m < p + n && *m != '"' && i + 1 < msglen) {
      if (*m == '\\' && m + 1 < p + n) m++;
      msg[i++] = *m++;
    }
    if (msglen) msg[i] = 0;
  }
}

void otlp_decode_rpc_status(const uint8_t *p, size_t n, char *msg, size_t msglen,
                            int64_t *retry_delay_ns) {
  static const char retry_info[] = "type.googleapis.com/google.rpc.RetryInfo";
  *retry_delay_ns = -1;
  pbr r = {p, p + n};
  uint32_t f;
  int wt;
  uint64_t v;
  const uint8_t *bp;
  size_t bl;
  while (pb_next(&r, &f, &wt, &v, &bp, &bl)) {
    if (f == 2 && wt == 2) {
      copy_str(msg, msglen, bp, bl);
    } else if (f == 3 && wt == 2) { /* details: google.protobuf.Any */
      pbr a = {bp, bp + bl};
      bool is_retry = false;
      const uint8_t *val = NULL;
      size_t vl = 0;
      while (pb_next(&a, &f, &wt, &v, &bp, &bl)) {
        if (f == 1 && wt == 2)
          is_retry = bl == sizeof retry_info - 1 && !memcmp(bp, retry_info, bl);
        else if (f == 2 && wt == 2)
          val = bp, vl = bl;
      }
      if (!is_retry || !val) continue;
      int64_t ns = 0;
      pbr ri = {val, val + vl};
      while (pb_next(&ri, &f, &wt, &v, &bp, &bl)) {
        if (f != 1 || wt != 2) /* retry_delay: google.protobuf.Duration */
          continue;
        pbr d = {bp, bp + bl};
        while (pb_next(&d, &f, &wt, &v, &bp, &bl)) {
          if (f == 1 && wt == 0)
            ns += (int64_t)v * 1000000000;
          else if (f == 2 && wt == 0)
            ns += (int64_t)(int32_t)v;
        }
      }
      *retry_delay_ns = ns < 0 ? 0 : ns;
    }
  }
}

/* ---- TLS --------------------------------------------------------------------------------- */

static void ssl_err(char *err, size_t errlen, const char *what, const char *file) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, errlen, "tls: %s%s%s: %s", what, file ? " " : "", file ? file : "",
           buf[0] ? buf : "failed");
  ERR_clear_error();
}

int otlp_tls_ctx(const otlp_tls_config *t, const char *alpn, SSL_CTX **out, char *err,
                 size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    ssl_err(err, errlen, "cannot create a context", NULL);
    return SONDE_ENOMEM;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION); /* otelcol's default min_version */
  if (!empty(t->ca_file)) {
    if (SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1) {
      ssl_err(err, errlen, "cannot load ca_file", t->ca_file);
      goto fail;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    ssl_err(err, errlen, "cannot load the system CA certificates", NULL);
    goto fail;
  }
  if (!empty(t->cert_file)) {
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
      ssl_err(err, errlen, "cannot load cert_file", t->cert_file);
      goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1) {
      ssl_err(err, errlen, "cannot load key_file", t->key_file);
      goto fail;
    }
  }
  SSL_CTX_set_verify(ctx, t->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
  uint8_t wire[32];
  size_t al = strlen(alpn);
  wire[0] = (uint8_t)al;
  memcpy(wire + 1, alpn, al);
  if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)(al + 1)) != 0) {
    ssl_err(err, errlen, "cannot set ALPN", NULL);
    goto fail;
  }
  *out = ctx;
  return 0;
fail:
  SSL_CTX_free(ctx);
  return SONDE_ECONFIG;
}

/* ---- metrics -------------------------------------------------------------------------------- */

int otlp_metrics_init(const sonde_host *h, uint32_t signals, otlp_metrics *m) {
  static const sonde_signal sigs[4] = {SONDE_SIGNAL_TRACES, SONDE_SIGNAL_METRICS, SONDE_SIGNAL_LOGS,
                                       SONDE_SIGNAL_PROFILES};
  for (int i = 0; i < 4; i++) {
    m->rejected[i] = NULL;
    if (!(signals & sigs[i])) continue;
    char name[128];
    snprintf(name, sizeof name, "otelcol_exporter_partial_success_rejected_%s",
             sonde_signal_item_name(sigs[i]));
    int rc = h->api->metric(h, SONDE_METRIC_COUNTER, name,
                            "Items the backend rejected in an OTLP partial_success response", NULL,
                            &m->rejected[i]);
    if (rc) return rc;
  }
  return 0;
}

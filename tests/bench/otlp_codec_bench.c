/* The codec ceiling for tests/bench/otlp_bench.sh: what one core does with the bench payload
 * (100 spans, 10 attributes each) without any network: decompress + decode (sonde_batch_decode)
 * + encode (sonde_batch_pack) + compress, in a loop. Prints spans/s per compression.
 * Built by the bench script against libsonde; it includes the bench plug-in for its generator. */
#include "otlp_bench_plugin.c"

#include <zlib.h>
#include <zstd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t gz(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return 0;
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  deflate(&z, Z_FINISH);
  size_t r = cap - z.avail_out;
  deflateEnd(&z);
  return r;
}

static size_t gunz(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, 15 + 32) != Z_OK) return 0;
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  inflate(&z, Z_FINISH);
  size_t r = cap - z.avail_out;
  inflateEnd(&z);
  return r;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 2.0;
  gen_cfg cfg = {.rate = 1, .per_request = 100};
  gen g = {.cfg = &cfg};
  sonde_batch *b;
  if (make_request(&g, &b)) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  size_t n = sonde_batch_packed_size(b);
  size_t cap = n * 2 + 1024;
  uint8_t *raw = malloc(cap), *enc = malloc(cap), *z = malloc(cap), *plain = malloc(cap);
  if (!raw || !enc || !z || !plain) return 1;
  sonde_batch_pack(b, raw);
  sonde_batch_unref(b);
  const char *names[3] = {"none", "gzip", "zstd"};
  printf("{\"request_bytes\":%zu", n);
  for (int c = 0; c < 3; c++) {
    size_t zl = c == 0 ? n : c == 1 ? gz(raw, n, z, cap) : ZSTD_compress(z, cap, raw, n, 1);
    if (c == 0) memcpy(z, raw, n);
    uint64_t reqs = 0;
    double t0 = now_s(), t;
    do {
      for (int k = 0; k < 50; k++) {
        size_t pl = c == 0   ? (memcpy(plain, z, zl), zl)
                    : c == 1 ? gunz(z, zl, plain, cap)
                             : ZSTD_decompress(plain, cap, z, zl);
        sonde_batch *d;
        if (sonde_batch_decode(SONDE_SIGNAL_TRACES, plain, pl, &d)) {
          fprintf(stderr, "decode failed\n");
          return 1;
        }
        size_t el = sonde_batch_pack(d, enc);
        if (c == 1)
          gz(enc, el, z + cap / 2, cap / 2);
        else if (c == 2)
          ZSTD_compress(z + cap / 2, cap / 2, enc, el, 1);
        sonde_batch_unref(d);
        reqs++;
      }
      t = now_s();
    } while (t - t0 < secs);
    printf(",\"%s\":{\"wire_bytes\":%zu,\"spans_per_s\":%.0f}", names[c], zl,
           (double)reqs * 100 / (t - t0));
  }
  printf("}\n");
  return 0;
}

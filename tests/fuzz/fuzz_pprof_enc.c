/* libFuzzer target: OTLP profiles (ExportProfilesServiceRequest protobuf, as a receiver takes
 * them) -> pprof_enc_batch (exporters/pprof/pprof_enc.c, shared by the pprof, pyroscope and parca
 * exporters) -> pprof. Every dictionary index in the input is untrusted. Checks what Parca's
 * normalizer requires of each result: it decodes, string 0 is "", ids are position + 1, every
 * sample has one value per sample type and names existing locations; and that resource labels
 * are valid, distinct Prometheus names. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perftools/profiles/profile.pb-c.h"
#include "pprof_enc.h"
#include "sonde/pdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(const char *n) {
  if (!*n || (*n >= '0' && *n <= '9')) abort();
  for (; *n; n++)
    if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
          *n == '_'))
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sonde_batch *b;
  if (sonde_batch_decode(SONDE_SIGNAL_PROFILES, data, size, &b)) return 0;
  pprof_enc_svc *v;
  size_t n;
  /* plain protobuf for the checks; gzip is zlib's */
  /* grouped by label set on odd sizes, by service on even ones */
  if (pprof_enc_batch(sonde_batch_profiles(b), 0, size & 1, &v, &n)) abort();
  for (size_t i = 0; i < n; i++) {
    Perftools__Profiles__Profile *p =
        perftools__profiles__profile__unpack(NULL, v[i].pprof.len, v[i].pprof.data);
    if (!p || !v[i].service[0] || !p->n_string_table || p->string_table[0][0]) abort();
    for (size_t k = 0; k < p->n_location; k++)
      if (p->location[k]->id != k + 1 || p->location[k]->mapping_id > p->n_mapping) abort();
    for (size_t k = 0; k < p->n_function; k++)
      if (p->function[k]->id != k + 1) abort();
    for (size_t k = 0; k < p->n_mapping; k++)
      if (p->mapping[k]->id != k + 1) abort();
    for (size_t k = 0; k < p->n_sample; k++) {
      const Perftools__Profiles__Sample *s = p->sample[k];
      if (s->n_value != p->n_sample_type) abort();
      for (size_t l = 0; l < s->n_location_id; l++)
        if (!s->location_id[l] || s->location_id[l] > p->n_location) abort();
    }
    perftools__profiles__profile__free_unpacked(p, NULL);
    pprof_enc_label lab[16];
    size_t nl = pprof_enc_res_labels(v[i].resource, lab, 16);
    for (size_t k = 0; k < nl; k++) {
      check_name(lab[k].name);
      for (size_t m = 0; m < k; m++)
        if (!strcmp(lab[k].name, lab[m].name)) abort();
    }
    /* a series' labels with configured ones that clash with reserved and resource names */
    static char *keys[] = {"env", "service.name", "__x", "k8s.pod.name", "env", "9lives"};
    static char *vals[] = {"prod", "svc", "x", "pod", "again", NULL};
    const sonde_strmap extra = {.keys = keys, .values = vals, .n = 6};
    pprof_enc_label sl[24];
    size_t ns = pprof_enc_series_labels(&v[i], "process_cpu", &extra, sl, 24);
    if (ns < 2 || strcmp(sl[0].name, "__name__") || strcmp(sl[1].value, v[i].service)) abort();
    for (size_t k = 1; k < ns; k++) {
      check_name(sl[k].name);
      if (!strncmp(sl[k].name, "__", 2)) abort();
      for (size_t m = 0; m < k; m++)
        if (!strcmp(sl[k].name, sl[m].name)) abort();
    }
  }
  pprof_enc_free(v, n);
  sonde_batch_unref(b);
  return 0;
}

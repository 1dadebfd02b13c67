/* OTLP profiles -> pprof, shared by the pprof, pyroscope and parca exporters (pprof_enc.h). */
#include "pprof_enc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "intern.h"
#include "perftools/profiles/profile.pb-c.h"

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary dict_t;
typedef Opentelemetry__Proto__Profiles__V1development__ResourceProfiles rprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__Profile oprof_t;
typedef Perftools__Profiles__Profile pp_profile;

/* ---- string table: interned (intern.c) in the encoding's arena, listed in index order ------ */

typedef struct strtab {
  intern_table it;
  const char **v; /* by index */
  size_t n, cap;
} strtab;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h | 1;
}

static int64_t st_add(strtab *t, intern_arena *a, const char *s) {
  if (!s) s = "";
  if (t->n == t->cap) { /* room first: a string interned is a string listed */
    size_t nc = t->cap ? t->cap * 2 : 256;
    const char **nv = realloc(t->v, nc * sizeof(*nv));
    if (!nv) return -1;
    t->v = nv;
    t->cap = nc;
  }
  const char *in = intern_str(&t->it, a, s, strlen(s));
  if (!in) return -1;
  size_t i = intern_index(in);
  if (i == t->n) t->v[t->n++] = in;
  return (int64_t)i;
}

static void st_free(strtab *t) {
  free(t->v);
  intern_table_free(&t->it);
}

/* ---- helpers ------------------------------------------------------------------------------------
 */

static const char *dstr(const dict_t *d, int32_t i) {
  return d && i >= 0 && (size_t)i < d->n_string_table && d->string_table[i] ? d->string_table[i]
                                                                            : "";
}

const char *pprof_enc_res_attr(const Opentelemetry__Proto__Resource__V1__Resource *r,
                               const char *key) {
  for (size_t i = 0; r && i < r->n_attributes; i++) {
    const Opentelemetry__Proto__Common__V1__KeyValue *kv = r->attributes[i];
    if (kv && kv->key && !strcmp(kv->key, key) && kv->value &&
        kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
        kv->value->string_value && *kv->value->string_value)
      return kv->value->string_value;
  }
  return NULL;
}

static void service_of(const rprof_t *rp, char *out, size_t len) {
  const Opentelemetry__Proto__Resource__V1__Resource *r = rp ? rp->resource : NULL;
  const char *s = pprof_enc_res_attr(r, "service.name");
  if (!s || !strncmp(s, "unknown_service", 15)) {
    const char *x = pprof_enc_res_attr(r, "process.executable.name");
    if (x || !s) s = x ? x : "unknown_service";
  }
  size_t i = 0;
  for (; s[i] && i + 1 < len && i < 100; i++) {
    char c = s[i];
    out[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '.' || c == '_' || c == '-'
                 ? c
                 : '_';
  }
  out[i] = 0;
  if (out[0] == '.') out[0] = '_';
}

static const char *build_id_of(const dict_t *d,
                               const Opentelemetry__Proto__Profiles__V1development__Mapping *m) {
  for (size_t i = 0; i < m->n_attribute_indices; i++) {
    int32_t k = m->attribute_indices[i];
    if (k < 0 || (size_t)k >= d->n_attribute_table || !d->attribute_table[k]) continue;
    const Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit *a = d->attribute_table[k];
    if (!strcmp(dstr(d, a->key_strindex), "process.executable.build_id.gnu") && a->value &&
        a->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE)
      return a->value->string_value;
  }
  return NULL;
}

/* ---- one service's profile ----------------------------------------------------------------------
 */

typedef struct vtype {
  int64_t type, unit;
} vtype;

typedef struct svals svals;

typedef struct builder {
  const dict_t *d;
  intern_arena a;
  strtab st;
  vtype types[16];
  size_t n_types;
  pp_profile p;
  /* OTLP index -> pprof object (NULL: not written yet). Allocated once per batch (they are as
   * large as the dictionary) and cleared after each group where *src says they were set. */
  Perftools__Profiles__Location **locs;
  Perftools__Profiles__Mapping **maps;
  Perftools__Profiles__Function **fns;
  int32_t *lsrc, *msrc, *fsrc; /* the OTLP index of each written location, mapping, function */
  Perftools__Profiles__Sample **samples;
  struct svals {
    int col, cpu;
    int64_t v, period;
  } * sv;
  size_t n_samples, cap_samples;
  Perftools__Profiles__Location **lv;
  Perftools__Profiles__Mapping **mv;
  Perftools__Profiles__Function **fv;
  size_t n_lv, n_mv, n_fv;
} builder;

static int type_col(builder *bd, const char *type, const char *unit) {
  int64_t t = st_add(&bd->st, &bd->a, type), u = st_add(&bd->st, &bd->a, unit);
  if (t < 0 || u < 0) return -1;
  for (size_t i = 0; i < bd->n_types; i++)
    if (bd->types[i].type == t && bd->types[i].unit == u) return (int)i;
  if (bd->n_types == sizeof(bd->types) / sizeof(bd->types[0])) return -2;
  bd->types[bd->n_types] = (vtype){t, u};
  return (int)bd->n_types++;
}

static Perftools__Profiles__Function *fn_of(builder *bd, int32_t fi) {
  const dict_t *d = bd->d;
  if (fi < 0 || (size_t)fi >= d->n_function_table || !d->function_table[fi]) return NULL;
  if (bd->fns[fi]) return bd->fns[fi];
  const Opentelemetry__Proto__Profiles__V1development__Function *of = d->function_table[fi];
  Perftools__Profiles__Function *f = intern_alloc(&bd->a, sizeof(*f));
  if (!f) return NULL;
  perftools__profiles__function__init(f);
  f->id = (uint64_t)bd->n_fv + 1;
  if ((f->name = st_add(&bd->st, &bd->a, dstr(d, of->name_strindex))) < 0 ||
      (f->system_name = st_add(&bd->st, &bd->a, dstr(d, of->system_name_strindex))) < 0 ||
      (f->filename = st_add(&bd->st, &bd->a, dstr(d, of->filename_strindex))) < 0)
    return NULL;
  f->start_line = of->start_line;
  bd->fns[fi] = f;
  bd->fsrc[bd->n_fv] = fi;
  bd->fv[bd->n_fv++] = f;
  return f;
}

static Perftools__Profiles__Mapping *map_of(builder *bd, int32_t mi) {
  const dict_t *d = bd->d;
  if (mi < 0 || (size_t)mi >= d->n_mapping_table || !d->mapping_table[mi]) return NULL;
  const Opentelemetry__Proto__Profiles__V1development__Mapping *om = d->mapping_table[mi];
  /* OTLP's entry 0 is the "no mapping" placeholder. */
  if (!*dstr(d, om->filename_strindex) && om->memory_limit == 0) return NULL;
  if (bd->maps[mi]) return bd->maps[mi];
  Perftools__Profiles__Mapping *m = intern_alloc(&bd->a, sizeof(*m));
  if (!m) return NULL;
  perftools__profiles__mapping__init(m);
  m->id = (uint64_t)bd->n_mv + 1;
  m->memory_start = om->memory_start;
  m->memory_limit = om->memory_limit;
  m->file_offset = om->file_offset;
  const char *bid = build_id_of(d, om);
  if ((m->filename = st_add(&bd->st, &bd->a, dstr(d, om->filename_strindex))) < 0 ||
      (m->build_id = st_add(&bd->st, &bd->a, bid ? bid : "")) < 0)
    return NULL;
  bd->maps[mi] = m;
  bd->msrc[bd->n_mv] = mi;
  bd->mv[bd->n_mv++] = m;
  return m;
}

static Perftools__Profiles__Location *loc_of(builder *bd, int32_t li, int *err) {
  const dict_t *d = bd->d;
  if (li < 0 || (size_t)li >= d->n_location_table || !d->location_table[li]) return NULL;
  if (bd->locs[li]) return bd->locs[li];
  const Opentelemetry__Proto__Profiles__V1development__Location *ol = d->location_table[li];
  Perftools__Profiles__Location *l = intern_alloc(&bd->a, sizeof(*l));
  if (!l) goto oom;
  perftools__profiles__location__init(l);
  l->id = (uint64_t)bd->n_lv + 1;
  l->address = ol->address;
  Perftools__Profiles__Mapping *m = map_of(bd, ol->mapping_index);
  if (m) {
    l->mapping_id = m->id;
    if (m->memory_limit > m->memory_start)
      l->address = m->memory_start + (ol->address - m->file_offset);
  }
  if (ol->n_lines) {
    l->line = intern_alloc(&bd->a, ol->n_lines * sizeof(*l->line));
    if (!l->line) goto oom;
    for (size_t k = 0; k < ol->n_lines; k++) {
      const Opentelemetry__Proto__Profiles__V1development__Line *ln = ol->lines[k];
      Perftools__Profiles__Function *f = ln ? fn_of(bd, ln->function_index) : NULL;
      if (!f) continue;
      Perftools__Profiles__Line *pl = intern_alloc(&bd->a, sizeof(*pl));
      if (!pl) goto oom;
      perftools__profiles__line__init(pl);
      pl->function_id = f->id;
      pl->line = ln->line;
      pl->column = ln->column;
      l->line[l->n_line++] = pl;
    }
    if (m && l->n_line) {
      m->has_functions = true;
      for (size_t k = 0; k < l->n_line; k++) {
        if (l->line[k]->line) m->has_line_numbers = true;
        if (bd->fv[l->line[k]->function_id - 1]->filename) m->has_filenames = true;
      }
      if (l->n_line > 1) m->has_inline_frames = true;
    }
  }
  bd->locs[li] = l;
  bd->lsrc[bd->n_lv] = li;
  bd->lv[bd->n_lv++] = l;
  return l;
oom:
  *err = SONDE_ENOMEM;
  return NULL;
}

static int label_of(builder *bd, int32_t ai, Perftools__Profiles__Label **out) {
  const dict_t *d = bd->d;
  *out = NULL;
  if (ai < 0 || (size_t)ai >= d->n_attribute_table || !d->attribute_table[ai]) return 0;
  const Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit *a = d->attribute_table[ai];
  if (!a->value) return 0;
  Perftools__Profiles__Label *l = intern_alloc(&bd->a, sizeof(*l));
  if (!l) return SONDE_ENOMEM;
  perftools__profiles__label__init(l);
  if ((l->key = st_add(&bd->st, &bd->a, dstr(d, a->key_strindex))) < 0) return SONDE_ENOMEM;
  char buf[64];
  const char *s = NULL;
  switch (a->value->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    s = a->value->string_value;
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    l->num = a->value->int_value;
    if (a->unit_strindex > 0 &&
        (l->num_unit = st_add(&bd->st, &bd->a, dstr(d, a->unit_strindex))) < 0)
      return SONDE_ENOMEM;
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    s = a->value->bool_value ? "true" : "false";
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    snprintf(buf, sizeof buf, "%.17g", a->value->double_value);
    s = buf;
    break;
  default:
    return 0;
  }
  if (s && (l->str = st_add(&bd->st, &bd->a, s)) < 0) return SONDE_ENOMEM;
  *out = l;
  return 0;
}

static int add_profile(builder *bd, const oprof_t *op, int64_t *t0, int64_t *t1) {
  const dict_t *d = bd->d;
  const char *type = op->sample_type ? dstr(d, op->sample_type->type_strindex) : "";
  const char *unit = op->sample_type ? dstr(d, op->sample_type->unit_strindex) : "";
  if (!*type) type = "samples";
  if (!*unit) unit = "count";
  int col = type_col(bd, type, unit), cpu = -1;
  if (col == -1) return SONDE_ENOMEM;
  if (col < 0) return 0; /* more sample types than a file holds: skipped */
  if (op->period_type) {
    const char *pt = dstr(d, op->period_type->type_strindex);
    const char *pu = dstr(d, op->period_type->unit_strindex);
    if (!bd->p.period_type) {
      bd->p.period_type = intern_alloc(&bd->a, sizeof(*bd->p.period_type));
      if (!bd->p.period_type) return SONDE_ENOMEM;
      perftools__profiles__value_type__init(bd->p.period_type);
      if ((bd->p.period_type->type = st_add(&bd->st, &bd->a, pt)) < 0 ||
          (bd->p.period_type->unit = st_add(&bd->st, &bd->a, pu)) < 0)
        return SONDE_ENOMEM;
      bd->p.period = op->period;
    }
    if (!strcmp(type, "samples") && !strcmp(unit, "count") && !strcmp(pt, "cpu") &&
        !strcmp(pu, "nanoseconds") && op->period > 0) {
      cpu = type_col(bd, "cpu", "nanoseconds");
      if (cpu == -1) return SONDE_ENOMEM;
    }
  }
  /* Times past 2^62 ns (year 2116) are garbage and left out rather than overflowing. */
  const uint64_t lim = (uint64_t)1 << 62;
  if (op->time_unix_nano && op->time_unix_nano < lim) {
    int64_t ts = (int64_t)op->time_unix_nano;
    int64_t end = ts + (op->duration_nano < lim ? (int64_t)op->duration_nano : 0);
    if (!*t0 || ts < *t0) *t0 = ts;
    if (end > *t1) *t1 = end;
  }
  for (size_t i = 0; i < op->n_samples; i++) {
    const Opentelemetry__Proto__Profiles__V1development__Sample *os = op->samples[i];
    if (!os) continue;
    int err = 0;
    Perftools__Profiles__Sample *s = intern_alloc(&bd->a, sizeof(*s));
    if (!s) return SONDE_ENOMEM;
    perftools__profiles__sample__init(s);
    if (os->stack_index >= 0 && (size_t)os->stack_index < d->n_stack_table &&
        d->stack_table[os->stack_index]) {
      const Opentelemetry__Proto__Profiles__V1development__Stack *st =
          d->stack_table[os->stack_index];
      s->location_id = intern_alloc(&bd->a, (st->n_location_indices + 1) * sizeof(uint64_t));
      if (!s->location_id) return SONDE_ENOMEM;
      for (size_t k = 0; k < st->n_location_indices; k++) {
        Perftools__Profiles__Location *l = loc_of(bd, st->location_indices[k], &err);
        if (err) return err;
        if (l) s->location_id[s->n_location_id++] = l->id;
      }
    }
    int64_t v = os->n_values                 ? os->values[0]
                : os->n_timestamps_unix_nano ? (int64_t)os->n_timestamps_unix_nano
                                             : 1;
    if (os->n_attribute_indices) {
      s->label = intern_alloc(&bd->a, os->n_attribute_indices * sizeof(*s->label));
      if (!s->label) return SONDE_ENOMEM;
      for (size_t k = 0; k < os->n_attribute_indices; k++) {
        Perftools__Profiles__Label *l;
        if ((err = label_of(bd, os->attribute_indices[k], &l))) return err;
        if (l) s->label[s->n_label++] = l;
      }
    }
    if (bd->n_samples == bd->cap_samples) {
      size_t nc = bd->cap_samples ? bd->cap_samples * 2 : 256;
      Perftools__Profiles__Sample **ns = realloc(bd->samples, nc * sizeof(*ns));
      svals *nv = realloc(bd->sv, nc * sizeof(*nv));
      if (ns) bd->samples = ns;
      if (nv) bd->sv = nv;
      if (!ns || !nv) return SONDE_ENOMEM;
      bd->cap_samples = nc;
    }
    /* The value columns are known once every profile was seen (finish). */
    bd->sv[bd->n_samples] = (svals){col, cpu, v, op->period};
    bd->samples[bd->n_samples++] = s;
  }
  return 0;
}

/* The index maps of a batch (builder_tables), freed once all its groups are encoded. */
static void builder_free_tables(builder *bd) {
  free(bd->locs);
  free(bd->maps);
  free(bd->fns);
  free(bd->lv);
  free(bd->mv);
  free(bd->fv);
  free(bd->lsrc);
  free(bd->msrc);
  free(bd->fsrc);
}

static int builder_tables(builder *bd, const dict_t *d) {
  memset(bd, 0, sizeof(*bd));
  bd->d = d;
  size_t nl = d->n_location_table, nm = d->n_mapping_table, nf = d->n_function_table;
  bd->locs = calloc(nl + 1, sizeof(*bd->locs));
  bd->lv = calloc(nl + 1, sizeof(*bd->lv));
  bd->lsrc = calloc(nl + 1, sizeof(*bd->lsrc));
  bd->maps = calloc(nm + 1, sizeof(*bd->maps));
  bd->mv = calloc(nm + 1, sizeof(*bd->mv));
  bd->msrc = calloc(nm + 1, sizeof(*bd->msrc));
  bd->fns = calloc(nf + 1, sizeof(*bd->fns));
  bd->fv = calloc(nf + 1, sizeof(*bd->fv));
  bd->fsrc = calloc(nf + 1, sizeof(*bd->fsrc));
  if (!bd->locs || !bd->lv || !bd->lsrc || !bd->maps || !bd->mv || !bd->msrc || !bd->fns ||
      !bd->fv || !bd->fsrc)
    return SONDE_ENOMEM;
  return 0;
}

/* Ends one group's profile: what it wrote is cleared from the index maps (in time proportional to
 * what the group used, not to the dictionary), the rest freed. */
static void builder_end(builder *bd) {
  for (size_t i = 0; i < bd->n_lv; i++)
    bd->locs[bd->lsrc[i]] = NULL;
  for (size_t i = 0; i < bd->n_mv; i++)
    bd->maps[bd->msrc[i]] = NULL;
  for (size_t i = 0; i < bd->n_fv; i++)
    bd->fns[bd->fsrc[i]] = NULL;
  bd->n_lv = bd->n_mv = bd->n_fv = 0;
  intern_arena_free(&bd->a);
  st_free(&bd->st);
  memset(&bd->st, 0, sizeof bd->st);
  free(bd->samples);
  free(bd->sv);
  bd->samples = NULL;
  bd->sv = NULL;
  bd->n_samples = bd->cap_samples = 0;
  bd->n_types = 0;
}

/* Starts one group's profile on the tables of builder_tables. */
static int builder_begin(builder *bd) {
  perftools__profiles__profile__init(&bd->p);
  return st_add(&bd->st, &bd->a, "") == 0 ? 0 : SONDE_ENOMEM; /* string 0 is "" */
}

/* Fills the value columns and hangs every table on the profile. */
static int finish(builder *bd, int64_t t0, int64_t t1) {
  size_t nt = bd->n_types;
  bd->p.sample_type = intern_alloc(&bd->a, nt * sizeof(*bd->p.sample_type));
  if (nt && !bd->p.sample_type) return SONDE_ENOMEM;
  for (size_t i = 0; i < nt; i++) {
    Perftools__Profiles__ValueType *vt = intern_alloc(&bd->a, sizeof(*vt));
    if (!vt) return SONDE_ENOMEM;
    perftools__profiles__value_type__init(vt);
    vt->type = bd->types[i].type;
    vt->unit = bd->types[i].unit;
    bd->p.sample_type[i] = vt;
  }
  bd->p.n_sample_type = nt;
  for (size_t i = 0; i < bd->n_samples; i++) {
    Perftools__Profiles__Sample *s = bd->samples[i];
    const svals *v = &bd->sv[i];
    if (!(s->value = intern_alloc(&bd->a, nt * sizeof(int64_t)))) return SONDE_ENOMEM;
    s->n_value = nt;
    s->value[v->col] = v->v;
    /* wraps rather than overflowing on absurd inputs */
    if (v->cpu >= 0) s->value[v->cpu] = (int64_t)((uint64_t)v->v * (uint64_t)v->period);
  }
  bd->p.sample = bd->samples;
  bd->p.n_sample = bd->n_samples;
  bd->p.location = bd->lv;
  bd->p.n_location = bd->n_lv;
  bd->p.mapping = bd->mv;
  bd->p.n_mapping = bd->n_mv;
  bd->p.function = bd->fv;
  bd->p.n_function = bd->n_fv;
  bd->p.string_table = (char **)bd->st.v;
  bd->p.n_string_table = bd->st.n;
  bd->p.time_nanos = t0;
  bd->p.duration_nanos = t1 > t0 ? t1 - t0 : 0;
  return 0;
}

static int gzip_buf(const uint8_t *in, size_t len, int level, sonde_buf *out) {
  z_stream z;
  memset(&z, 0, sizeof(z));
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return SONDE_ENOMEM;
  size_t bound = deflateBound(&z, len);
  int rc = sonde_buf_reserve(out, bound);
  if (rc) {
    deflateEnd(&z);
    return rc;
  }
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  z.next_out = out->data + out->len;
  z.avail_out = (uInt)bound;
  int zr = deflate(&z, Z_FINISH);
  out->len += bound - z.avail_out;
  deflateEnd(&z);
  return zr == Z_STREAM_END ? 0 : SONDE_EIO;
}

static void copy_str(char *dst, size_t cap, const char *s) {
  snprintf(dst, cap, "%s", s ? s : "");
}

/* What puts a resource into a group: its service and, by label set, its labels
 * (pprof_enc_res_labels), worked out once per resource. */
typedef struct rkey {
  char service[128];
  pprof_enc_label *l;
  size_t n;
  uint64_t h; /* of the service and the labels, in any order: unequal keys differ here mostly */
} rkey;

static void rkey_hash(rkey *k) {
  k->h = hash_str(k->service);
  for (size_t i = 0; i < k->n; i++) /* a sum: the order of the attributes does not matter */
    k->h += hash_str(k->l[i].name) * 31 + hash_str(k->l[i].value);
}

static bool same_group(const rkey *a, const rkey *b) {
  if (a->h != b->h || a->n != b->n || strcmp(a->service, b->service)) return false;
  for (size_t i = 0; i < a->n; i++) {
    size_t k = 0;
    while (k < b->n && (strcmp(a->l[i].name, b->l[k].name) || strcmp(a->l[i].value, b->l[k].value)))
      k++;
    if (k == b->n) return false;
  }
  return true;
}

/* One group's profile: every resource from seed on in the same group as seed; resources before
 * seed are all in earlier groups. bd holds the batch's index maps. */
static int encode_service(const sonde_profiles *req, int gzip_level, bool *used, const rkey *keys,
                          size_t seed, builder *bd, pprof_enc_svc *out) {
  const dict_t *d = bd->d;
  uint8_t *packed = NULL;
  int rc = builder_begin(bd);
  int64_t t0 = 0, t1 = 0;
  bool first = true;
  snprintf(out->service, sizeof out->service, "%s", keys[seed].service);
  for (size_t i = seed; !rc && i < req->n_resource_profiles; i++) {
    const rprof_t *rp = req->resource_profiles[i];
    if (used[i] || !rp || !same_group(&keys[i], &keys[seed])) continue;
    used[i] = true;
    if (!out->resource) out->resource = rp->resource;
    for (size_t s = 0; !rc && s < rp->n_scope_profiles; s++) {
      const Opentelemetry__Proto__Profiles__V1development__ScopeProfiles *sp =
          rp->scope_profiles[s];
      for (size_t k = 0; !rc && sp && k < sp->n_profiles; k++) {
        const oprof_t *op = sp->profiles[k];
        if (!op) continue;
        if (first) {
          first = false;
          const char *ty = op->sample_type ? dstr(d, op->sample_type->type_strindex) : "";
          const char *un = op->sample_type ? dstr(d, op->sample_type->unit_strindex) : "";
          copy_str(out->sample_type, sizeof out->sample_type, *ty ? ty : "samples");
          copy_str(out->sample_unit, sizeof out->sample_unit, *un ? un : "count");
        }
        if (op->period_type && !out->period_type[0]) {
          copy_str(out->period_type, sizeof out->period_type,
                   dstr(d, op->period_type->type_strindex));
          copy_str(out->period_unit, sizeof out->period_unit,
                   dstr(d, op->period_type->unit_strindex));
          out->period = op->period;
        }
        rc = add_profile(bd, op, &t0, &t1);
      }
    }
  }
  out->n_samples = bd->n_samples;
  if (!rc && bd->n_samples == 0) goto out; /* nothing sampled: no profile */
  if (!rc) rc = finish(bd, t0, t1);
  out->time_ns = t0;
  out->duration_ns = t1 > t0 ? t1 - t0 : 0;
  if (!rc) {
    size_t n = perftools__profiles__profile__get_packed_size(&bd->p);
    if (!(packed = malloc(n ? n : 1))) {
      rc = SONDE_ENOMEM;
    } else {
      perftools__profiles__profile__pack(&bd->p, packed);
      if (gzip_level > 0) {
        rc = gzip_buf(packed, n, gzip_level, &out->pprof);
      } else {
        out->pprof.data = packed;
        out->pprof.len = out->pprof.cap = n;
        packed = NULL;
      }
    }
  }
out:
  free(packed);
  builder_end(bd);
  return rc;
}

#define MAX_GROUP_LABELS 64

int pprof_enc_batch(const sonde_profiles *req, int gzip_level, bool by_labels, pprof_enc_svc **out,
                    size_t *n) {
  static const dict_t empty =
      OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__PROFILES_DICTIONARY__INIT;
  *out = NULL;
  *n = 0;
  if (!req || !req->n_resource_profiles) return 0;
  size_t nr = req->n_resource_profiles;
  bool *used = calloc(nr, sizeof(bool));
  pprof_enc_svc *v = calloc(nr, sizeof(*v));
  rkey *keys = calloc(nr, sizeof(*keys));
  pprof_enc_label *tmp = by_labels ? malloc(MAX_GROUP_LABELS * sizeof(*tmp)) : NULL;
  builder bd;
  int rc = builder_tables(&bd, req->dictionary ? req->dictionary : &empty);
  if (!used || !v || !keys || (by_labels && !tmp)) rc = SONDE_ENOMEM;
  for (size_t i = 0; !rc && i < nr; i++) {
    const rprof_t *rp = req->resource_profiles[i];
    if (!rp) continue;
    rkey *k = &keys[i];
    service_of(rp, k->service, sizeof k->service);
    k->n = by_labels ? pprof_enc_res_labels(rp->resource, tmp, MAX_GROUP_LABELS) : 0;
    if (k->n && !(k->l = malloc(k->n * sizeof(*tmp))))
      rc = SONDE_ENOMEM;
    else if (k->n)
      memcpy(k->l, tmp, k->n * sizeof(*tmp));
    rkey_hash(k);
  }
  size_t nv = 0;
  for (size_t i = 0; i < nr && !rc; i++) {
    if (used[i] || !req->resource_profiles[i]) continue;
    pprof_enc_svc *s = &v[nv];
    rc = encode_service(req, gzip_level, used, keys, i, &bd, s);
    if (!rc && s->n_samples) {
      nv++;
    } else {
      sonde_buf_free(&s->pprof);
      memset(s, 0, sizeof(*s));
    }
  }
  builder_free_tables(&bd);
  free(used);
  for (size_t i = 0; keys && i < nr; i++)
    free(keys[i].l);
  free(keys);
  free(tmp);
  if (rc || !nv) {
    pprof_enc_free(v, nv);
    return rc;
  }
  *out = v;
  *n = nv;
  return 0;
}

void pprof_enc_free(pprof_enc_svc *v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    sonde_buf_free(&v[i].pprof);
  free(v);
}

void pprof_enc_label_name(const char *s, char *out, size_t len) {
  size_t o = 0;
  if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') && *s != '_') out[o++] = '_';
  for (; *s && o + 1 < len; s++) {
    char c = *s;
    out[o++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? c : '_';
  }
  out[o] = 0;
}

size_t pprof_enc_res_labels(const Opentelemetry__Proto__Resource__V1__Resource *r,
                            pprof_enc_label *out, size_t max) {
  size_t n = 0;
  for (size_t i = 0; r && i < r->n_attributes && n < max; i++) {
    const Opentelemetry__Proto__Common__V1__KeyValue *kv = r->attributes[i];
    if (!kv || !kv->key || !*kv->key || !kv->value || !strcmp(kv->key, "service.name")) continue;
    pprof_enc_label *l = &out[n];
    const Opentelemetry__Proto__Common__V1__AnyValue *v = kv->value;
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
      if (!v->string_value || !*v->string_value) continue;
      snprintf(l->value, sizeof l->value, "%s", v->string_value);
      break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
      snprintf(l->value, sizeof l->value, "%lld", (long long)v->int_value);
      break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
      snprintf(l->value, sizeof l->value, "%s", v->bool_value ? "true" : "false");
      break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
      snprintf(l->value, sizeof l->value, "%.17g", v->double_value);
      break;
    default:
      continue;
    }
    pprof_enc_label_name(kv->key, l->name, sizeof l->name);
    /* names the exporters set themselves, and a second attribute that sanitizes to the same
     * name, are left out: backends refuse duplicate label names */
    bool dup = !strcmp(l->name, "service_name") || !strncmp(l->name, "__", 2);
    for (size_t k = 0; k < n && !dup; k++)
      dup = !strcmp(out[k].name, l->name);
    if (!dup) n++;
  }
  return n;
}

size_t pprof_enc_series_labels(const pprof_enc_svc *s, const char *name, const sonde_strmap *extra,
                               pprof_enc_label *out, size_t max) {
  snprintf(out[0].name, sizeof out[0].name, "__name__");
  snprintf(out[0].value, sizeof out[0].value, "%s", name);
  snprintf(out[1].name, sizeof out[1].name, "service_name");
  snprintf(out[1].value, sizeof out[1].value, "%s", s->service);
  size_t n = 2 + pprof_enc_res_labels(s->resource, out + 2, max - 2);
  for (size_t i = 0; extra && i < extra->n && n < max; i++) {
    pprof_enc_label *l = &out[n];
    pprof_enc_label_name(extra->keys[i], l->name, sizeof l->name);
    bool dup = !strncmp(l->name, "__", 2) || !strcmp(l->name, "service_name");
    for (size_t k = 0; k < n && !dup; k++)
      dup = !strcmp(out[k].name, l->name);
    if (dup) continue;
    snprintf(l->value, sizeof l->value, "%s", extra->values[i] ? extra->values[i] : "");
    n++;
  }
  return n;
}

bool pprof_enc_is_cpu(const pprof_enc_svc *s) {
  return !strcmp(s->period_type, "cpu") && !strcmp(s->period_unit, "nanoseconds");
}

void pprof_enc_profile_name(const pprof_enc_svc *s, const char *cpu, const char *prefix, char *out,
                            size_t len) {
  if (pprof_enc_is_cpu(s)) {
    snprintf(out, len, "%s%s", prefix, cpu);
    return;
  }
  char ty[100];
  pprof_enc_label_name(s->sample_type, ty, sizeof ty);
  /* a prefix already makes the name start right: the '_' put before a digit is not needed */
  snprintf(out, len, "%s%s", prefix, *prefix && ty[0] == '_' ? ty + 1 : ty);
}

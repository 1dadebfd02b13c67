/* The flamegraph exporter's history: one slot per slot_ns of wall time, each holding, per series
 * (service, container, process), a trie of the stacks seen (root first) with summed values. A
 * slot owns its nodes and strings in one arena, so dropping the oldest slot frees exactly what it
 * held and the byte budget is the sum of the arenas. A query merges the slots of a window into a
 * temporary tree (children found through one hash table keyed by parent and name). */
#include "fg_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "intern.h"
#include "sonde/errors.h"

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary dict_t;
typedef Opentelemetry__Proto__Profiles__V1development__Profile oprof_t;
typedef Opentelemetry__Proto__Resource__V1__Resource res_t;

/* Deeper stacks keep their root side: the page is anchored at the root and the JSON writer
 * recurses once per level. */
#define FG_MAX_DEPTH 512

/* Arenas of 16 KiB chunks at 8-byte granularity: a trie node is 40 bytes, not 48. */
#define FG_ARENA                                                                                   \
  { .chunk = 16384, .align = 8 }

/* ---- slots ---------------------------------------------------------------------------------- */

typedef struct fnode {
  const char *name; /* interned: its hash is stored just before it (name_hash) */
  uint64_t v;
  struct fnode *child, *next;
} fnode;

typedef struct series {
  const char *service, *container, *process;
  fnode root;
  struct series *next;
} series;

typedef struct slot {
  int64_t start;
  uint64_t total;
  /* Queries running on other threads read it (fg_job): nothing is added to it meanwhile (a
   * sibling slot with the same start takes new samples) and, dropped, it is freed by the last. */
  unsigned readers;
  bool dropped;
  series *series;
  intern_arena mem;
  intern_table names; /* its strings, interned in mem (intern.c) */
} slot;

struct fg_store {
  fg_limits lim;
  slot **slots; /* by start, oldest first */
  size_t n, cap;
  uint64_t dropped, dropped_samples;
  char unit[64];
};

static uint64_t slot_bytes(const slot *sl) {
  return sl->mem.bytes + intern_table_bytes(&sl->names) + sizeof(*sl);
}

static void slot_free(slot *sl) {
  if (!sl) return;
  intern_arena_free(&sl->mem);
  intern_table_free(&sl->names);
  free(sl);
}

static const char *intern(slot *sl, const char *s, size_t n) {
  return intern_str(&sl->names, &sl->mem, s, n);
}

int fg_store_new(const fg_limits *lim, fg_store **out) {
  fg_store *s = calloc(1, sizeof(*s));
  if (!s) return SONDE_ENOMEM;
  s->lim = *lim;
  if (s->lim.slot_ns <= 0) s->lim.slot_ns = 10000000000LL;
  *out = s;
  return 0;
}

void fg_store_free(fg_store *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++)
    slot_free(s->slots[i]);
  free(s->slots);
  free(s);
}

uint64_t fg_store_bytes(const fg_store *s) {
  uint64_t b = 0;
  for (size_t i = 0; i < s->n; i++)
    b += slot_bytes(s->slots[i]);
  return b;
}

size_t fg_store_slots(const fg_store *s) {
  return s->n;
}

uint64_t fg_store_dropped_slots(const fg_store *s) {
  return s->dropped;
}

uint64_t fg_store_dropped_samples(const fg_store *s) {
  return s->dropped_samples;
}

static void drop_oldest(fg_store *s) {
  if (s->slots[0]->readers)
    s->slots[0]->dropped = true;
  else
    slot_free(s->slots[0]);
  memmove(s->slots, s->slots + 1, (s->n - 1) * sizeof(*s->slots));
  s->n--;
  s->dropped++;
}

void fg_store_prune(fg_store *s, int64_t now_ns) {
  while (s->n && s->slots[0]->start + s->lim.slot_ns <= now_ns - s->lim.history_ns)
    drop_oldest(s);
  if (!s->lim.max_bytes) return;
  uint64_t b = fg_store_bytes(s);
  while (s->n > 1 && b > s->lim.max_bytes) {
    b -= slot_bytes(s->slots[0]);
    drop_oldest(s);
  }
}

static slot *slot_for(fg_store *s, int64_t t) {
  int64_t start = t - ((t % s->lim.slot_ns) + s->lim.slot_ns) % s->lim.slot_ns;
  size_t i = s->n;
  while (i > 0 && s->slots[i - 1]->start > start)
    i--;
  for (size_t k = i; k > 0 && s->slots[k - 1]->start == start; k--)
    if (!s->slots[k - 1]->readers) return s->slots[k - 1];
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 64;
    slot **ns = realloc(s->slots, nc * sizeof(*ns));
    if (!ns) return NULL;
    s->slots = ns;
    s->cap = nc;
  }
  slot *sl = calloc(1, sizeof(*sl));
  if (!sl) return NULL;
  sl->mem = (intern_arena)FG_ARENA;
  sl->start = start;
  memmove(s->slots + i + 1, s->slots + i, (s->n - i) * sizeof(*s->slots));
  s->slots[i] = sl;
  s->n++;
  return sl;
}

/* ---- ingest --------------------------------------------------------------------------------- */

static const char *dstr(const dict_t *d, int32_t i) {
  return d && i >= 0 && (size_t)i < d->n_string_table && d->string_table[i] ? d->string_table[i]
                                                                            : "";
}

static const Opentelemetry__Proto__Common__V1__AnyValue *res_attr(const res_t *r, const char *k) {
  for (size_t i = 0; r && i < r->n_attributes; i++) {
    const Opentelemetry__Proto__Common__V1__KeyValue *kv = r->attributes[i];
    if (kv && kv->key && !strcmp(kv->key, k) && kv->value) return kv->value;
  }
  return NULL;
}

static const char *res_str(const res_t *r, const char *k) {
  const Opentelemetry__Proto__Common__V1__AnyValue *v = res_attr(r, k);
  return v && v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
                 v->string_value
             ? v->string_value
             : "";
}

static series *series_for(slot *sl, const char *svc, const char *ctr, const char *proc) {
  for (series *x = sl->series; x; x = x->next)
    if (!strcmp(x->service, svc) && !strcmp(x->container, ctr) && !strcmp(x->process, proc))
      return x;
  series *x = intern_alloc(&sl->mem, sizeof(*x));
  if (!x || !(x->service = intern(sl, svc, strlen(svc))) ||
      !(x->container = intern(sl, ctr, strlen(ctr))) ||
      !(x->process = intern(sl, proc, strlen(proc))))
    return NULL;
  x->next = sl->series;
  sl->series = x;
  return x;
}

static fnode *child_of(slot *sl, fnode *p, const char *name, size_t n) {
  const char *in = intern(sl, name, n);
  if (!in) return NULL;
  fnode **pp = &p->child;
  for (fnode *c = p->child; c; pp = &c->next, c = c->next)
    if (c->name == in) {
      /* move to front: hot paths are found first next time */
      *pp = c->next;
      c->next = p->child;
      p->child = c;
      return c;
    }
  fnode *c = intern_alloc(&sl->mem, sizeof(*c));
  if (!c) return NULL;
  c->name = in;
  c->next = p->child;
  p->child = c;
  return c;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* The frames of one location, outermost first, into names[]; returns how many were written. */
static size_t loc_frames(const dict_t *d, int32_t li, char names[][256], size_t max) {
  if (li < 0 || (size_t)li >= d->n_location_table || !d->location_table[li] || !max) return 0;
  const Opentelemetry__Proto__Profiles__V1development__Location *l = d->location_table[li];
  size_t n = 0;
  /* lines[0] is the innermost (inlined) function, the last one its caller */
  for (size_t k = l->n_lines; k-- > 0 && n < max;) {
    const Opentelemetry__Proto__Profiles__V1development__Line *ln = l->lines[k];
    if (!ln || ln->function_index < 0 || (size_t)ln->function_index >= d->n_function_table ||
        !d->function_table[ln->function_index])
      continue;
    const char *fn = dstr(d, d->function_table[ln->function_index]->name_strindex);
    if (!*fn) fn = dstr(d, d->function_table[ln->function_index]->system_name_strindex);
    if (!*fn) continue;
    snprintf(names[n++], 256, "%s", fn);
  }
  if (n) return n;
  const char *file = "";
  if (l->mapping_index >= 0 && (size_t)l->mapping_index < d->n_mapping_table &&
      d->mapping_table[l->mapping_index])
    file = base_name(dstr(d, d->mapping_table[l->mapping_index]->filename_strindex));
  if (*file)
    snprintf(names[0], 256, "%s+0x%" PRIx64, file, l->address);
  else
    snprintf(names[0], 256, "0x%" PRIx64, l->address);
  return 1;
}

static int add_profile(fg_store *s, const dict_t *d, const res_t *r, const oprof_t *op,
                       int64_t now_ns, uint64_t *taken) {
  int64_t t = (int64_t)op->time_unix_nano;
  if (!t || t > now_ns + s->lim.slot_ns) t = now_ns;
  if (t < now_ns - s->lim.history_ns) return 0; /* already out of the history */
  if (!s->unit[0] && op->sample_type) {
    const char *ty = dstr(d, op->sample_type->type_strindex);
    const char *un = dstr(d, op->sample_type->unit_strindex);
    if (*ty) snprintf(s->unit, sizeof s->unit, "%s%s%.20s", ty, *un ? "/" : "", un);
  }
  char proc[300];
  const char *exe = res_str(r, "process.executable.name");
  const Opentelemetry__Proto__Common__V1__AnyValue *pid = res_attr(r, "process.pid");
  if (pid && pid->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE)
    snprintf(proc, sizeof proc, "%.200s [%" PRId64 "]", *exe ? exe : "?", pid->int_value);
  else
    snprintf(proc, sizeof proc, "%.200s", exe);
  const char *svc = res_str(r, "service.name");
  if (!*svc) svc = *exe ? exe : "unknown_service";
  slot *sl = slot_for(s, t);
  if (!sl) return SONDE_ENOMEM;
  /* Older slots go first (prune); a slot that alone fills the budget takes no more. */
  if (s->lim.max_bytes && slot_bytes(sl) >= s->lim.max_bytes) {
    s->dropped_samples += op->n_samples;
    return 0;
  }
  series *x = series_for(sl, svc, res_str(r, "container.id"), proc);
  if (!x) return SONDE_ENOMEM;
  char names[64][256];
  for (size_t i = 0; i < op->n_samples; i++) {
    const Opentelemetry__Proto__Profiles__V1development__Sample *smp = op->samples[i];
    if (!smp) continue;
    int64_t v = smp->n_values                 ? smp->values[0]
                : smp->n_timestamps_unix_nano ? (int64_t)smp->n_timestamps_unix_nano
                                              : 1;
    if (v <= 0) continue;
    const Opentelemetry__Proto__Profiles__V1development__Stack *st = NULL;
    if (smp->stack_index >= 0 && (size_t)smp->stack_index < d->n_stack_table)
      st = d->stack_table[smp->stack_index];
    fnode *n = &x->root;
    n->v += (uint64_t)v;
    size_t depth = 0;
    for (size_t k = st ? st->n_location_indices : 0; k-- > 0 && depth < FG_MAX_DEPTH;) {
      size_t nf = loc_frames(d, st->location_indices[k], names, 64);
      for (size_t f = 0; f < nf && depth < FG_MAX_DEPTH; f++, depth++) {
        n = child_of(sl, n, names[f], strlen(names[f]));
        if (!n) return SONDE_ENOMEM;
        n->v += (uint64_t)v;
      }
    }
    sl->total += (uint64_t)v;
    (*taken)++;
  }
  return 0;
}

int fg_store_add(
    fg_store *s,
    const Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest
        *req,
    int64_t now_ns, uint64_t *samples) {
  *samples = 0;
  if (!req) return 0;
  const dict_t *d = req->dictionary;
  if (!d) return 0; /* no dictionary: nothing can be named */
  int rc = 0;
  for (size_t i = 0; i < req->n_resource_profiles && !rc; i++) {
    const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *rp =
        req->resource_profiles[i];
    if (!rp) continue;
    for (size_t j = 0; j < rp->n_scope_profiles && !rc; j++) {
      const Opentelemetry__Proto__Profiles__V1development__ScopeProfiles *sp =
          rp->scope_profiles[j];
      for (size_t k = 0; sp && k < sp->n_profiles && !rc; k++)
        if (sp->profiles[k]) rc = add_profile(s, d, rp->resource, sp->profiles[k], now_ns, samples);
    }
  }
  fg_store_prune(s, now_ns);
  return rc;
}

/* ---- query ---------------------------------------------------------------------------------- */

typedef struct mnode {
  const char *name;
  uint64_t h, v, b;
  char kind;
  uint32_t nchild;
  struct mnode *child, *next;
} mnode;

typedef struct merge {
  intern_arena mem;
  mnode root;
  mnode **ht; /* (parent, name) -> node */
  uint64_t *hh;
  size_t hcap, hn;
} merge;

static uint64_t mkey(const mnode *p, uint64_t name_hash, char kind) {
  uint64_t k = name_hash ^ ((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) ^ (uint64_t)kind;
  k ^= k >> 29;
  k *= 0xbf58476d1ce4e5b9ull;
  return (k ^ (k >> 32)) | 1;
}

static int m_grow(merge *m) {
  size_t nc = m->hcap ? m->hcap * 2 : 1024;
  mnode **nt = calloc(nc, sizeof(*nt));
  uint64_t *nh = calloc(nc, sizeof(*nh));
  if (!nt || !nh) {
    free(nt);
    free(nh);
    return SONDE_ENOMEM;
  }
  for (size_t i = 0; i < m->hcap; i++) {
    if (!m->hh[i]) continue;
    size_t j = m->hh[i] & (nc - 1);
    while (nh[j])
      j = (j + 1) & (nc - 1);
    nh[j] = m->hh[i];
    nt[j] = m->ht[i];
  }
  free(m->ht);
  free(m->hh);
  m->ht = nt;
  m->hh = nh;
  m->hcap = nc;
  return 0;
}

/* The parent of each node is found through the table key only, so it is kept beside it. */
typedef struct mnode_p {
  mnode n;
  const mnode *parent;
} mnode_p;

static mnode *m_child(merge *m, mnode *p, const char *name, uint64_t nh, char kind) {
  if ((m->hn + 1) * 4 > m->hcap * 3 && m_grow(m)) return NULL;
  uint64_t h = mkey(p, nh, kind);
  size_t i = h & (m->hcap - 1);
  for (; m->hh[i]; i = (i + 1) & (m->hcap - 1)) {
    mnode_p *c = (mnode_p *)m->ht[i];
    if (m->hh[i] == h && c->parent == p && c->n.kind == kind && c->n.h == nh &&
        (c->n.name == name || !strcmp(c->n.name, name)))
      return &c->n;
  }
  mnode_p *c = intern_alloc(&m->mem, sizeof(*c));
  if (!c) return NULL;
  c->n.name = name; /* points into a slot, which outlives the merge */
  c->n.h = nh;
  c->n.kind = kind;
  c->parent = p;
  c->n.next = p->child;
  p->child = &c->n;
  p->nchild++;
  m->ht[i] = &c->n;
  m->hh[i] = h;
  m->hn++;
  return &c->n;
}

static int m_add(merge *m, mnode *dst, const fnode *src, bool base) {
  for (const fnode *c = src->child; c; c = c->next) {
    mnode *d = m_child(m, dst, c->name, intern_hash(c->name), 0);
    if (!d) return SONDE_ENOMEM;
    if (base)
      d->b += c->v;
    else
      d->v += c->v;
    int rc = m_add(m, d, c, base);
    if (rc) return rc;
  }
  return 0;
}

static bool overlaps(int64_t slot_ns, const slot *sl, int64_t from, int64_t to) {
  if (!from && !to) return true;
  return sl->start < to && sl->start + slot_ns > from;
}

static bool match(const char *want, const char *have) {
  return !want || !*want || !strcmp(want, have);
}

struct fg_job {
  fg_query q; /* its strings in bufs */
  fg_qbufs bufs;
  char unit[64];
  int64_t slot_ns;
  slot **slots; /* each with a reader count taken */
  size_t n;
};

static int m_window(const fg_job *j, merge *m, int64_t from, int64_t to, bool base) {
  const fg_query *q = &j->q;
  for (size_t i = 0; i < j->n; i++) {
    const slot *sl = j->slots[i];
    if (!overlaps(j->slot_ns, sl, from, to)) continue;
    for (series *x = sl->series; x; x = x->next) {
      if (!match(q->service, x->service) || !match(q->container, x->container) ||
          !match(q->process, x->process))
        continue;
      mnode *at = &m->root;
      const char *lv[3] = {x->service, x->container, x->process};
      static const char kinds[3] = {'s', 'c', 'p'};
      for (int l = 0; l < 3; l++) {
        if (q->group != 4 && q->group != l + 1) continue;
        at = m_child(m, at, lv[l], intern_hash(lv[l]), kinds[l]);
        if (!at) return SONDE_ENOMEM;
        if (base)
          at->b += x->root.v;
        else
          at->v += x->root.v;
      }
      if (base)
        m->root.b += x->root.v;
      else
        m->root.v += x->root.v;
      int rc = m_add(m, at, &x->root, base);
      if (rc) return rc;
    }
  }
  return 0;
}

static int cmp_mnode(const void *a, const void *b) {
  const mnode *x = *(mnode *const *)a, *y = *(mnode *const *)b;
  uint64_t vx = x->v ? x->v : x->b, vy = y->v ? y->v : y->b;
  if (vx != vy) return vx < vy ? 1 : -1;
  return strcmp(x->name, y->name);
}

typedef struct wctx {
  sonde_buf *out;
  uint64_t min_v, min_b;
  bool diff;
} wctx;

static int w_node(wctx *w, const mnode *n, const char *name) {
  sonde_buf *o = w->out;
  int rc = sonde_buf_append(o, "{\"n\":", 5);
  if (!rc) rc = fg_json_str(o, name, strlen(name));
  if (!rc) rc = sonde_buf_printf(o, ",\"v\":%" PRIu64, n->v);
  if (!rc && w->diff) rc = sonde_buf_printf(o, ",\"b\":%" PRIu64, n->b);
  if (!rc && n->kind) rc = sonde_buf_printf(o, ",\"k\":\"%c\"", n->kind);
  if (rc) return rc;
  if (n->nchild) {
    mnode **v = malloc(n->nchild * sizeof(*v));
    if (!v) return SONDE_ENOMEM;
    size_t k = 0;
    for (mnode *c = n->child; c; c = c->next)
      if (c->v >= w->min_v || (w->diff && c->b >= w->min_b)) v[k++] = c;
    qsort(v, k, sizeof(*v), cmp_mnode);
    if (k) rc = sonde_buf_append(o, ",\"c\":[", 6);
    for (size_t i = 0; i < k && !rc; i++) {
      if (i) rc = sonde_buf_append(o, ",", 1);
      if (!rc) rc = w_node(w, v[i], v[i]->name);
    }
    if (k && !rc) rc = sonde_buf_append(o, "]", 1);
    free(v);
  }
  return rc ? rc : sonde_buf_append(o, "}", 1);
}

static const char *copy_to(char *dst, size_t len, const char *src) {
  if (!src) return NULL;
  snprintf(dst, len, "%s", src);
  return dst;
}

int fg_store_job_new(fg_store *s, const fg_query *q, fg_job **out) {
  fg_job *j = calloc(1, sizeof(*j));
  if (!j) return SONDE_ENOMEM;
  j->q = *q;
  j->q.service = copy_to(j->bufs.service, sizeof j->bufs.service, q->service);
  j->q.process = copy_to(j->bufs.process, sizeof j->bufs.process, q->process);
  j->q.container = copy_to(j->bufs.container, sizeof j->bufs.container, q->container);
  snprintf(j->unit, sizeof j->unit, "%s", s->unit[0] ? s->unit : "samples");
  j->slot_ns = s->lim.slot_ns;
  bool diff = q->from2_ns || q->to2_ns;
  if (s->n && !(j->slots = malloc(s->n * sizeof(*j->slots)))) {
    free(j);
    return SONDE_ENOMEM;
  }
  for (size_t i = 0; i < s->n; i++) {
    slot *sl = s->slots[i];
    if (overlaps(j->slot_ns, sl, q->from_ns, q->to_ns) ||
        (diff && overlaps(j->slot_ns, sl, q->from2_ns, q->to2_ns))) {
      sl->readers++;
      j->slots[j->n++] = sl;
    }
  }
  *out = j;
  return 0;
}

void fg_job_free(fg_job *j) {
  if (!j) return;
  for (size_t i = 0; i < j->n; i++)
    if (!--j->slots[i]->readers && j->slots[i]->dropped) slot_free(j->slots[i]);
  free(j->slots);
  free(j);
}

int fg_store_query_json(fg_store *s, const fg_query *q, sonde_buf *out) {
  fg_job *j;
  int rc = fg_store_job_new(s, q, &j);
  if (rc) return rc;
  rc = fg_job_run(j, out);
  fg_job_free(j);
  return rc;
}

int fg_job_run(const fg_job *j, sonde_buf *out) {
  const fg_query *q = &j->q;
  merge m = {.mem = FG_ARENA};
  bool diff = q->from2_ns || q->to2_ns;
  int rc = m_window(j, &m, q->from_ns, q->to_ns, false);
  if (!rc && diff) rc = m_window(j, &m, q->from2_ns, q->to2_ns, true);
  if (!rc)
    rc = sonde_buf_printf(out, "{\"from\":%" PRId64 ",\"to\":%" PRId64 ",\"unit\":",
                          q->from_ns / 1000000, q->to_ns / 1000000);
  if (!rc) rc = fg_json_str(out, j->unit, strlen(j->unit));
  if (!rc) rc = sonde_buf_printf(out, ",\"total\":%" PRIu64, m.root.v);
  if (!rc && diff) rc = sonde_buf_printf(out, ",\"base\":%" PRIu64, m.root.b);
  if (!rc) rc = sonde_buf_append(out, ",\"tree\":", 8);
  wctx w = {.out = out, .diff = diff};
  int64_t ppm = q->min_share_ppm > 0 ? q->min_share_ppm : 0;
  w.min_v = (uint64_t)((double)m.root.v * (double)ppm / 1e6);
  w.min_b = (uint64_t)((double)m.root.b * (double)ppm / 1e6);
  if (!w.min_v) w.min_v = 1;
  if (!w.min_b) w.min_b = 1;
  if (!rc) rc = w_node(&w, &m.root, "all");
  if (!rc) rc = sonde_buf_append(out, "}", 1);
  intern_arena_free(&m.mem);
  free(m.ht);
  free(m.hh);
  return rc;
}

/* ---- labels --------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int w_set(sonde_buf *out, const char *key, const char **v, size_t n) {
  qsort(v, n, sizeof(*v), cmp_str);
  int rc = sonde_buf_printf(out, ",\"%s\":[", key);
  bool first = true;
  for (size_t i = 0; i < n && !rc; i++) {
    if (!*v[i] || (i && !strcmp(v[i], v[i - 1]))) continue;
    if (!first) rc = sonde_buf_append(out, ",", 1);
    if (!rc) rc = fg_json_str(out, v[i], strlen(v[i]));
    first = false;
  }
  return rc ? rc : sonde_buf_append(out, "]", 1);
}

int fg_store_labels_json(fg_store *s, int64_t from_ns, int64_t to_ns, sonde_buf *out) {
  size_t ns = 0;
  for (size_t i = 0; i < s->n; i++)
    for (series *x = s->slots[i]->series; x; x = x->next)
      ns++;
  const char **sv = calloc(ns + 1, sizeof(*sv)), **cv = calloc(ns + 1, sizeof(*cv)),
             **pv = calloc(ns + 1, sizeof(*pv));
  int rc = sv && cv && pv ? 0 : SONDE_ENOMEM;
  if (!rc)
    rc = sonde_buf_printf(out, "{\"slot_ms\":%" PRId64 ",\"unit\":", s->lim.slot_ns / 1000000);
  const char *unit = s->unit[0] ? s->unit : "samples";
  if (!rc) rc = fg_json_str(out, unit, strlen(unit));
  if (!rc) rc = sonde_buf_append(out, ",\"slots\":[", 10);
  size_t k = 0;
  bool first = true;
  for (size_t i = 0; i < s->n && !rc; i++) {
    slot *sl = s->slots[i];
    /* siblings of one start (made while a query read the first) are one slot to the page */
    if (!i || s->slots[i - 1]->start != sl->start) {
      uint64_t total = 0;
      for (size_t l = i; l < s->n && s->slots[l]->start == sl->start; l++)
        total += s->slots[l]->total;
      rc = sonde_buf_printf(out, "%s[%" PRId64 ",%" PRIu64 "]", first ? "" : ",",
                            sl->start / 1000000, total);
      first = false;
    }
    if (!overlaps(s->lim.slot_ns, sl, from_ns, to_ns)) continue;
    for (series *x = sl->series; x; x = x->next, k++) {
      sv[k] = x->service;
      cv[k] = x->container;
      pv[k] = x->process;
    }
  }
  if (!rc) rc = sonde_buf_append(out, "]", 1);
  if (!rc) rc = w_set(out, "services", sv, k);
  if (!rc) rc = w_set(out, "containers", cv, k);
  if (!rc) rc = w_set(out, "processes", pv, k);
  if (!rc) rc = sonde_buf_append(out, "}", 1);
  free(sv);
  free(cv);
  free(pv);
  return rc;
}

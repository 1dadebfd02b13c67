/* The batch: one OTLP export request in an arena, reference counted. */
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "pdata_internal.h"
#include "sonde/errors.h"
#include "sonde/pdata.h"

#define ARENA_ALIGN 16u
#define ARENA_FIRST_CHUNK 4096u
#define ARENA_MAX_CHUNK (4u << 20)

typedef struct chunk {
  struct chunk *next;
  size_t size, used;
  alignas(ARENA_ALIGN) unsigned char data[];
} chunk;

struct sonde_batch {
  atomic_uint refs;
  sonde_signal sig;
  ProtobufCMessage *msg;
  chunk *head;       /* the chunk bump allocations come from; big ones are linked behind it */
  size_t next_chunk; /* data size of the next regular chunk */
  size_t bytes;      /* sum of chunk data sizes */
  sonde_batch **held;
  size_t nheld, capheld;
  ProtobufCAllocator alloc;
};

const char *sonde_signal_name(sonde_signal sig) {
  switch (sig) {
  case SONDE_SIGNAL_TRACES:
    return "traces";
  case SONDE_SIGNAL_METRICS:
    return "metrics";
  case SONDE_SIGNAL_LOGS:
    return "logs";
  case SONDE_SIGNAL_PROFILES:
    return "profiles";
  }
  return "unknown";
}

sonde_signal sonde_signal_parse(const char *name, size_t len) {
  static const sonde_signal all[] = {SONDE_SIGNAL_TRACES, SONDE_SIGNAL_METRICS, SONDE_SIGNAL_LOGS,
                                     SONDE_SIGNAL_PROFILES};
  if (!name) return 0;
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    const char *n = sonde_signal_name(all[i]);
    if (strlen(n) == len && memcmp(n, name, len) == 0) return all[i];
  }
  return 0;
}

const char *sonde_signal_item_name(sonde_signal sig) {
  switch (sig) {
  case SONDE_SIGNAL_TRACES:
    return "spans";
  case SONDE_SIGNAL_METRICS:
    return "metric_points";
  case SONDE_SIGNAL_LOGS:
    return "log_records";
  case SONDE_SIGNAL_PROFILES:
    return "profiles";
  }
  return "unknown";
}

const ProtobufCMessageDescriptor *sonde__signal_descriptor(sonde_signal sig) {
  switch (sig) {
  case SONDE_SIGNAL_TRACES:
    return &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor;
  case SONDE_SIGNAL_METRICS:
    return &opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__descriptor;
  case SONDE_SIGNAL_LOGS:
    return &opentelemetry__proto__collector__logs__v1__export_logs_service_request__descriptor;
  case SONDE_SIGNAL_PROFILES:
    return &opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__descriptor;
  }
  return NULL;
}

/* ---- arena ---- */

static chunk *chunk_new(size_t size) {
  if (size > SIZE_MAX - sizeof(chunk)) return NULL;
  chunk *c = calloc(1, sizeof(chunk) + size); /* calloc: allocations are handed out zeroed */
  if (!c) return NULL;
  c->size = size;
  return c;
}

void *sonde_batch_alloc(sonde_batch *b, size_t size) {
  if (!b) return NULL;
  if (size == 0) size = 1;
  if (size > SIZE_MAX - ARENA_ALIGN) return NULL;
  size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  chunk *h = b->head;
  if (h && h->size - h->used >= size) {
    void *p = h->data + h->used;
    h->used += size;
    return p;
  }
  if (size > b->next_chunk / 4) {
    /* Large: its own chunk, linked behind the head so the head's free space stays usable. */
    chunk *c = chunk_new(size);
    if (!c) return NULL;
    c->used = size;
    if (h) {
      c->next = h->next;
      h->next = c;
    } else {
      b->head = c;
    }
    b->bytes += size;
    return c->data;
  }
  chunk *c = chunk_new(b->next_chunk);
  if (!c) return NULL;
  b->bytes += c->size;
  if (b->next_chunk < ARENA_MAX_CHUNK) b->next_chunk *= 2;
  c->next = h;
  b->head = c;
  c->used = size;
  return c->data;
}

char *sonde_batch_strdup(sonde_batch *b, const char *s) {
  if (!s) return NULL;
  return sonde_batch_memdup(b, s, strlen(s) + 1);
}

void *sonde_batch_memdup(sonde_batch *b, const void *p, size_t len) {
  void *d = sonde_batch_alloc(b, len);
  if (d && len) memcpy(d, p, len);
  return d;
}

static void *pb_alloc(void *data, size_t size) {
  return sonde_batch_alloc(data, size);
}

static void pb_free(void *data, void *p) {
  (void)data; /* the arena frees everything with the batch */
  (void)p;
}

ProtobufCAllocator *sonde_batch_allocator(sonde_batch *b) {
  return b ? &b->alloc : NULL;
}

size_t sonde_batch_arena_bytes(const sonde_batch *b) {
  return b ? b->bytes : 0;
}

/* ---- life cycle ---- */

static sonde_batch *batch_alloc(sonde_signal sig) {
  if (!sonde__signal_descriptor(sig)) return NULL;
  sonde_batch *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  atomic_init(&b->refs, 1);
  b->sig = sig;
  b->next_chunk = ARENA_FIRST_CHUNK;
  b->alloc.alloc = pb_alloc;
  b->alloc.free = pb_free;
  b->alloc.allocator_data = b;
  return b;
}

static void batch_destroy(sonde_batch *b) {
  for (size_t i = 0; i < b->nheld; i++)
    sonde_batch_unref(b->held[i]);
  free(b->held);
  chunk *c = b->head;
  while (c) {
    chunk *n = c->next;
    free(c);
    c = n;
  }
  free(b);
}

ProtobufCMessage *sonde__batch_new_msg(sonde_batch *b, const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m = sonde_batch_alloc(b, d->sizeof_message);
  if (m) protobuf_c_message_init(d, m);
  return m;
}

int sonde_batch_new(sonde_signal sig, sonde_batch **out) {
  if (!out) return SONDE_EINVAL;
  *out = NULL;
  const ProtobufCMessageDescriptor *d = sonde__signal_descriptor(sig);
  if (!d) return SONDE_EINVAL;
  sonde_batch *b = batch_alloc(sig);
  if (!b) return SONDE_ENOMEM;
  b->msg = sonde__batch_new_msg(b, d);
  if (!b->msg) {
    batch_destroy(b);
    return SONDE_ENOMEM;
  }
  *out = b;
  return 0;
}

void sonde__batch_set_msg(sonde_batch *b, ProtobufCMessage *m) {
  b->msg = m;
}

sonde_batch *sonde__batch_empty(sonde_signal sig) {
  return batch_alloc(sig);
}

void sonde__batch_destroy_unused(sonde_batch *b) {
  if (b) batch_destroy(b);
}

/* ---- protobuf decoding ---- */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    uint8_t c = *(*p)++;
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

/* protobuf-c unpacks recursively without a depth limit, so hostile input nesting AnyValues
 * deeply could exhaust the stack. This walk bounds the nesting of message fields first; it
 * does not otherwise validate (unpack does). */
static int check_depth(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                       unsigned depth) {
  if (depth > SONDE__MAX_MSG_DEPTH) return -1;
  while (p < end) {
    uint64_t key, v;
    if (read_varint(&p, end, &key)) return -1;
    unsigned wt = key & 7;
    uint64_t num = key >> 3;
    switch (wt) {
    case 0:
      if (read_varint(&p, end, &v)) return -1;
      break;
    case 1:
      if (end - p < 8) return -1;
      p += 8;
      break;
    case 5:
      if (end - p < 4) return -1;
      p += 4;
      break;
    case 2: {
      if (read_varint(&p, end, &v) || v > (uint64_t)(end - p)) return -1;
      const ProtobufCFieldDescriptor *f =
          num <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)num) : NULL;
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
          check_depth(f->descriptor, p, p + v, depth + 1))
        return -1;
      p += v;
      break;
    }
    default:
      return -1; /* groups and reserved wire types: protobuf-c rejects them too */
    }
  }
  return 0;
}

int sonde_batch_decode(sonde_signal sig, const uint8_t *buf, size_t len, sonde_batch **out) {
  if (!out) return SONDE_EINVAL;
  *out = NULL;
  const ProtobufCMessageDescriptor *d = sonde__signal_descriptor(sig);
  if (!d || (!buf && len)) return SONDE_EINVAL;
  static const uint8_t empty[1];
  if (!buf) buf = empty;
  if (check_depth(d, buf, buf + len, 1)) return SONDE_EPROTO;
  sonde_batch *b = batch_alloc(sig);
  if (!b) return SONDE_ENOMEM;
  /* On failure protobuf-c "frees" through our no-op free; the arena goes with the batch. */
  b->msg = protobuf_c_message_unpack(d, &b->alloc, len, buf);
  if (!b->msg) {
    batch_destroy(b);
    return SONDE_EPROTO; /* out of memory also lands here: protobuf-c does not tell them apart */
  }
  *out = b;
  return 0;
}

size_t sonde__pb_elt_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  default:
    return 4;
  }
}

static ProtobufCMessage *copy_msg(sonde_batch *b, const ProtobufCMessage *src, unsigned depth);

/* Deep-copies the pointed-to data of one value at dst (already a shallow copy). */
static int copy_value(sonde_batch *b, const ProtobufCFieldDescriptor *f, void *dst,
                      unsigned depth) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: {
    char **s = dst;
    if (*s && *s != protobuf_c_empty_string && !(*s = sonde_batch_strdup(b, *s)))
      return SONDE_ENOMEM;
    return 0;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    ProtobufCBinaryData *bd = dst;
    if (bd->len && !(bd->data = sonde_batch_memdup(b, bd->data, bd->len))) return SONDE_ENOMEM;
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    ProtobufCMessage **m = dst;
    if (*m && !(*m = copy_msg(b, *m, depth + 1))) return SONDE_ENOMEM;
    return 0;
  }
  default:
    return 0;
  }
}

/* NULL when out of memory (or absurdly deep, which no decoded message is). */
static ProtobufCMessage *copy_msg(sonde_batch *b, const ProtobufCMessage *src, unsigned depth) {
  const ProtobufCMessageDescriptor *d = src->descriptor;
  if (depth > 4 * SONDE__MAX_MSG_DEPTH) return NULL;
  ProtobufCMessage *m = sonde_batch_memdup(b, src, d->sizeof_message);
  if (!m) return NULL;
  char *base = (char *)m;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    void *member = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(size_t *)(base + f->quantifier_offset), es = sonde__pb_elt_size(f->type);
      void **arr = member;
      if (!n || !*arr) continue;
      if (n > SIZE_MAX / es || !(*arr = sonde_batch_memdup(b, *arr, n * es))) return NULL;
      for (size_t k = 0; k < n; k++)
        if (copy_value(b, f, (char *)*arr + k * es, depth)) return NULL;
    } else if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
               *(uint32_t *)(base + f->quantifier_offset) == f->id) {
      if (copy_value(b, f, member, depth)) return NULL;
    }
  }
  if (m->n_unknown_fields) {
    ProtobufCMessageUnknownField *u = sonde_batch_memdup(
        b, m->unknown_fields, m->n_unknown_fields * sizeof(ProtobufCMessageUnknownField));
    if (!u) return NULL;
    for (size_t k = 0; k < m->n_unknown_fields; k++)
      if (u[k].len && !(u[k].data = sonde_batch_memdup(b, u[k].data, u[k].len))) return NULL;
    m->unknown_fields = u;
  }
  return m;
}

int sonde_batch_copy(const sonde_batch *b, sonde_batch **out) {
  if (!out) return SONDE_EINVAL;
  *out = NULL;
  if (!b || !b->msg) return SONDE_EINVAL;
  /* A descriptor-driven deep copy (pack + unpack would do, but protobuf-c does not always read
   * back what it wrote for odd input it accepted). Following every pointer, including those
   * into held batches, the copy owns all of its data and needs no holds. */
  sonde_batch *c = batch_alloc(b->sig);
  if (!c) return SONDE_ENOMEM;
  c->msg = copy_msg(c, b->msg, 1);
  if (!c->msg) {
    batch_destroy(c);
    return SONDE_ENOMEM;
  }
  *out = c;
  return 0;
}

sonde_batch *sonde_batch_ref(sonde_batch *b) {
  if (b) atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

void sonde_batch_unref(sonde_batch *b) {
  if (!b) return;
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) batch_destroy(b);
}

unsigned sonde_batch_refcount(const sonde_batch *b) {
  return b ? atomic_load_explicit(&((sonde_batch *)b)->refs, memory_order_relaxed) : 0;
}

int sonde_batch_hold(sonde_batch *b, sonde_batch *other) {
  if (!b || !other || b == other) /* holding oneself would never be freed */
    return SONDE_EINVAL;
  for (size_t i = 0; i < b->nheld; i++)
    if (b->held[i] == other) return 0;
  if (b->nheld == b->capheld) {
    size_t cap = b->capheld ? b->capheld * 2 : 4;
    sonde_batch **h = realloc(b->held, cap * sizeof *h);
    if (!h) return SONDE_ENOMEM;
    b->held = h;
    b->capheld = cap;
  }
  b->held[b->nheld++] = sonde_batch_ref(other);
  return 0;
}

static bool exclusive(const sonde_batch *b, int depth) {
  if (depth > 32 || sonde_batch_refcount(b) != 1) return false;
  for (size_t i = 0; i < b->nheld; i++)
    if (!exclusive(b->held[i], depth + 1)) return false;
  return true;
}

bool sonde_batch_exclusive(const sonde_batch *b) {
  return b && exclusive(b, 0);
}

/* ---- accessors ---- */

sonde_signal sonde_batch_signal(const sonde_batch *b) {
  return b ? b->sig : 0;
}

ProtobufCMessage *sonde_batch_msg(const sonde_batch *b) {
  return b ? b->msg : NULL;
}

sonde_traces *sonde_batch_traces(const sonde_batch *b) {
  return b && b->sig == SONDE_SIGNAL_TRACES ? (sonde_traces *)b->msg : NULL;
}

sonde_metrics *sonde_batch_metrics(const sonde_batch *b) {
  return b && b->sig == SONDE_SIGNAL_METRICS ? (sonde_metrics *)b->msg : NULL;
}

sonde_logs *sonde_batch_logs(const sonde_batch *b) {
  return b && b->sig == SONDE_SIGNAL_LOGS ? (sonde_logs *)b->msg : NULL;
}

sonde_profiles *sonde_batch_profiles(const sonde_batch *b) {
  return b && b->sig == SONDE_SIGNAL_PROFILES ? (sonde_profiles *)b->msg : NULL;
}

/* ---- counting ---- */

static size_t metric_points(const Opentelemetry__Proto__Metrics__V1__Metric *m) {
  switch (m->data_case) {
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    return m->gauge ? m->gauge->n_data_points : 0;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
    return m->sum ? m->sum->n_data_points : 0;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
    return m->histogram ? m->histogram->n_data_points : 0;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    return m->exponential_histogram ? m->exponential_histogram->n_data_points : 0;
  case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
    return m->summary ? m->summary->n_data_points : 0;
  default:
    return 0;
  }
}

size_t sonde_batch_items(const sonde_batch *b) {
  size_t n = 0;
  if (!b || !b->msg) return 0;
  switch (b->sig) {
  case SONDE_SIGNAL_TRACES: {
    const sonde_traces *t = (const sonde_traces *)b->msg;
    for (size_t i = 0; i < t->n_resource_spans; i++) {
      const Opentelemetry__Proto__Trace__V1__ResourceSpans *r = t->resource_spans[i];
      for (size_t j = 0; r && j < r->n_scope_spans; j++)
        n += r->scope_spans[j] ? r->scope_spans[j]->n_spans : 0;
    }
    break;
  }
  case SONDE_SIGNAL_METRICS: {
    const sonde_metrics *t = (const sonde_metrics *)b->msg;
    for (size_t i = 0; i < t->n_resource_metrics; i++) {
      const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *r = t->resource_metrics[i];
      for (size_t j = 0; r && j < r->n_scope_metrics; j++) {
        const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *s = r->scope_metrics[j];
        for (size_t k = 0; s && k < s->n_metrics; k++)
          n += s->metrics[k] ? metric_points(s->metrics[k]) : 0;
      }
    }
    break;
  }
  case SONDE_SIGNAL_LOGS: {
    const sonde_logs *t = (const sonde_logs *)b->msg;
    for (size_t i = 0; i < t->n_resource_logs; i++) {
      const Opentelemetry__Proto__Logs__V1__ResourceLogs *r = t->resource_logs[i];
      for (size_t j = 0; r && j < r->n_scope_logs; j++)
        n += r->scope_logs[j] ? r->scope_logs[j]->n_log_records : 0;
    }
    break;
  }
  case SONDE_SIGNAL_PROFILES: {
    const sonde_profiles *t = (const sonde_profiles *)b->msg;
    for (size_t i = 0; i < t->n_resource_profiles; i++) {
      const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *r =
          t->resource_profiles[i];
      for (size_t j = 0; r && j < r->n_scope_profiles; j++) {
        const Opentelemetry__Proto__Profiles__V1development__ScopeProfiles *s =
            r->scope_profiles[j];
        for (size_t k = 0; s && k < s->n_profiles; k++)
          n += s->profiles[k] ? s->profiles[k]->n_samples : 0;
      }
    }
    break;
  }
  }
  return n;
}

size_t sonde_batch_packed_size(const sonde_batch *b) {
  return b && b->msg ? protobuf_c_message_get_packed_size(b->msg) : 0;
}

size_t sonde_batch_pack(const sonde_batch *b, uint8_t *out) {
  return b && b->msg && out ? protobuf_c_message_pack(b->msg, out) : 0;
}

/* ---- attribute builders ---- */

static sonde_kv *kv_new(sonde_batch *b, const char *key,
                        Opentelemetry__Proto__Common__V1__AnyValue__ValueCase vc) {
  sonde_kv *kv = sonde_batch_alloc(b, sizeof(*kv));
  Opentelemetry__Proto__Common__V1__AnyValue *v = sonde_batch_alloc(b, sizeof(*v));
  if (!kv || !v) return NULL;
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  v->value_case = vc;
  if (!(kv->key = sonde_batch_strdup(b, key))) return NULL;
  kv->value = v;
  return kv;
}

sonde_kv *sonde_batch_kv_str(sonde_batch *b, const char *key, const char *value) {
  sonde_kv *kv = kv_new(b, key, OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE);
  if (!kv || !(kv->value->string_value = sonde_batch_strdup(b, value ? value : ""))) return NULL;
  return kv;
}

sonde_kv *sonde_batch_kv_int(sonde_batch *b, const char *key, int64_t value) {
  sonde_kv *kv = kv_new(b, key, OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE);
  if (kv) kv->value->int_value = value;
  return kv;
}

sonde_kv *sonde_batch_kv_bool(sonde_batch *b, const char *key, bool value) {
  sonde_kv *kv = kv_new(b, key, OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE);
  if (kv) kv->value->bool_value = value;
  return kv;
}

sonde_kv *sonde_batch_kv_double(sonde_batch *b, const char *key, double value) {
  sonde_kv *kv = kv_new(b, key, OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE);
  if (kv) kv->value->double_value = value;
  return kv;
}

int sonde_signal_index(sonde_signal sig) {
  switch (sig) {
  case SONDE_SIGNAL_TRACES:
    return 0;
  case SONDE_SIGNAL_METRICS:
    return 1;
  case SONDE_SIGNAL_LOGS:
    return 2;
  case SONDE_SIGNAL_PROFILES:
    return 3;
  }
  return -1;
}

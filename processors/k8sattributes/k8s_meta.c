/* Pod metadata: JSON tokenizer, pod decoding, cgroup parsing. See k8s_meta.h. */
#include "k8s_meta.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/errors.h"

#define KJ_MAX_DEPTH 64

/* ---- tokenizer ------------------------------------------------------------------------------ */

typedef struct kj_state {
  const char *s;
  size_t len, pos;
  kj_tok *t;
  int n, cap;
  int depth;
} kj_state;

static void skip_ws(kj_state *st) {
  while (st->pos < st->len && (st->s[st->pos] == ' ' || st->s[st->pos] == '\t' ||
                               st->s[st->pos] == '\n' || st->s[st->pos] == '\r'))
    st->pos++;
}

static int new_tok(kj_state *st, kj_type type, int start, int end) {
  if (st->n == st->cap) {
    int nc = st->cap ? st->cap * 2 : 64;
    kj_tok *nt = realloc(st->t, (size_t)nc * sizeof(*nt));
    if (!nt) return SONDE_ENOMEM;
    st->t = nt;
    st->cap = nc;
  }
  kj_tok *k = &st->t[st->n];
  k->type = type;
  k->start = start;
  k->end = end;
  k->size = 0;
  k->next = st->n + 1;
  return st->n++;
}

static int parse_value(kj_state *st);

static int parse_string(kj_state *st) {
  size_t start = ++st->pos; /* after the quote */
  while (st->pos < st->len) {
    unsigned char c = (unsigned char)st->s[st->pos];
    if (c == '"') {
      int i = new_tok(st, KJ_STRING, (int)start, (int)st->pos);
      st->pos++;
      return i;
    }
    if (c < 0x20) return SONDE_EPROTO;
    if (c == '\\') {
      if (++st->pos >= st->len) return SONDE_EPROTO;
      char e = st->s[st->pos];
      if (e == 'u') {
        for (int k = 1; k <= 4; k++) {
          if (st->pos + (size_t)k >= st->len) return SONDE_EPROTO;
          char h = st->s[st->pos + (size_t)k];
          if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F')))
            return SONDE_EPROTO;
        }
        st->pos += 4;
      } else if (!strchr("\"\\/bfnrt", e) || !e) {
        return SONDE_EPROTO;
      }
    }
    st->pos++;
  }
  return SONDE_EPROTO;
}

static int parse_primitive(kj_state *st) {
  size_t start = st->pos;
  while (st->pos < st->len) {
    char c = st->s[st->pos];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' ||
          c == 'E'))
      break;
    st->pos++;
  }
  if (st->pos == start) return SONDE_EPROTO;
  size_t l = st->pos - start;
  const char *p = st->s + start;
  bool word = (l == 4 && (!memcmp(p, "true", 4) || !memcmp(p, "null", 4))) ||
              (l == 5 && !memcmp(p, "false", 5));
  /* A number starts with a digit, after an optional minus; the rest is not checked further
   * because no pod field this stage reads is a number other than Status.code. */
  const char *dg = *p == '-' ? p + 1 : p;
  if (!word && (dg >= p + l || *dg < '0' || *dg > '9')) return SONDE_EPROTO;
  return new_tok(st, KJ_PRIMITIVE, (int)start, (int)st->pos);
}

static int parse_container(kj_state *st, bool obj) {
  if (++st->depth > KJ_MAX_DEPTH) return SONDE_EPROTO;
  int me = new_tok(st, obj ? KJ_OBJECT : KJ_ARRAY, (int)st->pos, 0);
  if (me < 0) return me;
  st->pos++;
  skip_ws(st);
  char close = obj ? '}' : ']';
  if (st->pos < st->len && st->s[st->pos] == close) {
    st->pos++;
  } else {
    for (;;) {
      skip_ws(st);
      if (obj) {
        if (st->pos >= st->len || st->s[st->pos] != '"') return SONDE_EPROTO;
        int k = parse_string(st);
        if (k < 0) return k;
        skip_ws(st);
        if (st->pos >= st->len || st->s[st->pos] != ':') return SONDE_EPROTO;
        st->pos++;
      }
      int v = parse_value(st);
      if (v < 0) return v;
      st->t[me].size++;
      skip_ws(st);
      if (st->pos >= st->len) return SONDE_EPROTO;
      char c = st->s[st->pos++];
      if (c == close) break;
      if (c != ',') return SONDE_EPROTO;
    }
  }
  st->t[me].end = (int)st->pos;
  st->t[me].next = st->n;
  st->depth--;
  return me;
}

static int parse_value(kj_state *st) {
  skip_ws(st);
  if (st->pos >= st->len) return SONDE_EPROTO;
  char c = st->s[st->pos];
  if (c == '{') return parse_container(st, true);
  if (c == '[') return parse_container(st, false);
  if (c == '"') return parse_string(st);
  return parse_primitive(st);
}

int kj_parse(const char *text, size_t len, kj_doc *out) {
  memset(out, 0, sizeof(*out));
  if (len > (1u << 30)) return SONDE_ETOOBIG;
  kj_state st = {.s = text, .len = len};
  int rc = parse_value(&st);
  if (rc >= 0) {
    skip_ws(&st);
    if (st.pos != st.len) rc = SONDE_EPROTO;
  }
  if (rc < 0) {
    free(st.t);
    return rc;
  }
  out->text = text;
  out->t = st.t;
  out->n = st.n;
  return 0;
}

void kj_free(kj_doc *d) {
  free(d->t);
  d->t = NULL;
  d->n = 0;
}

int kj_get(const kj_doc *d, int obj, const char *key) {
  if (obj < 0 || obj >= d->n || d->t[obj].type != KJ_OBJECT) return -1;
  size_t kl = strlen(key);
  int i = obj + 1;
  for (int k = 0; k < d->t[obj].size; k++) {
    const kj_tok *kt = &d->t[i];
    int v = i + 1;
    /* Keys with escapes are compared raw: Kubernetes field names never have any. */
    if ((size_t)(kt->end - kt->start) == kl && !memcmp(d->text + kt->start, key, kl)) return v;
    i = d->t[v].next;
  }
  return -1;
}

int kj_path(const kj_doc *d, int obj, const char *path) {
  char part[128];
  while (*path && obj >= 0) {
    size_t l = strcspn(path, ".");
    if (l >= sizeof part) return -1;
    memcpy(part, path, l);
    part[l] = 0;
    obj = kj_get(d, obj, part);
    path += l;
    if (*path == '.') path++;
  }
  return obj;
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10;
}

static size_t put_utf8(char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

char *kj_str(const kj_doc *d, int tok) {
  if (tok < 0 || tok >= d->n) return NULL;
  const kj_tok *t = &d->t[tok];
  if (t->type != KJ_STRING && t->type != KJ_PRIMITIVE) return NULL;
  const char *s = d->text + t->start;
  size_t n = (size_t)(t->end - t->start);
  char *o = malloc(n + 1); /* unescaping never grows: \uXXXX (6) -> at most 4 bytes */
  if (!o) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\\' || t->type != KJ_STRING) {
      o[k++] = s[i];
      continue;
    }
    char e = s[++i]; /* the tokenizer checked every escape is complete */
    switch (e) {
    case 'b':
      o[k++] = '\b';
      break;
    case 'f':
      o[k++] = '\f';
      break;
    case 'n':
      o[k++] = '\n';
      break;
    case 'r':
      o[k++] = '\r';
      break;
    case 't':
      o[k++] = '\t';
      break;
    case 'u': {
      uint32_t cp = 0;
      for (int j = 1; j <= 4; j++)
        cp = cp * 16 + (uint32_t)hexval(s[i + (size_t)j]);
      i += 4;
      /* A surrogate pair is joined; a lone surrogate becomes U+FFFD. */
      if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < n && s[i + 1] == '\\' && s[i + 2] == 'u') {
        uint32_t lo = 0;
        for (int j = 3; j <= 6; j++)
          lo = lo * 16 + (uint32_t)hexval(s[i + (size_t)j]);
        if (lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        } else {
          cp = 0xfffd;
        }
      } else if (cp >= 0xd800 && cp < 0xe000) {
        cp = 0xfffd;
      }
      if (cp == 0) cp = 0xfffd; /* keeps the result a C string */
      k += put_utf8(o + k, cp);
      break;
    }
    default:
      o[k++] = e;
      break;
    }
  }
  o[k] = 0;
  return o;
}

long long kj_int(const kj_doc *d, int tok, long long def) {
  if (tok < 0 || tok >= d->n || d->t[tok].type != KJ_PRIMITIVE) return def;
  char buf[32];
  int l = d->t[tok].end - d->t[tok].start;
  if (l <= 0 || l >= (int)sizeof buf) return def;
  memcpy(buf, d->text + d->t[tok].start, (size_t)l);
  buf[l] = 0;
  char *end;
  long long v = strtoll(buf, &end, 10);
  return *end ? def : v;
}

/* ---- pods ----------------------------------------------------------------------------------- */

void k8s_pod_free(k8s_pod *p) {
  if (!p) return;
  char **fs[] = {&p->uid,        &p->name, &p->ns,         &p->node,      &p->ip,
                 &p->start_time, &p->rv,   &p->owner_kind, &p->owner_name};
  for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
    free(*fs[i]);
  for (size_t i = 0; i < p->n_labels; i++) {
    free(p->labels[i].k);
    free(p->labels[i].v);
  }
  for (size_t i = 0; i < p->n_annotations; i++) {
    free(p->annotations[i].k);
    free(p->annotations[i].v);
  }
  for (size_t i = 0; i < p->n_containers; i++) {
    free(p->containers[i].id);
    free(p->containers[i].name);
    free(p->containers[i].image);
  }
  free(p->labels);
  free(p->annotations);
  free(p->containers);
  free(p);
}

/* Optional string field: absent is fine (NULL), out of memory is not. */
static int opt_str(const kj_doc *d, int obj, const char *path, char **out) {
  int t = kj_path(d, obj, path);
  if (t < 0 || d->t[t].type != KJ_STRING) return 0;
  *out = kj_str(d, t);
  return *out ? 0 : SONDE_ENOMEM;
}

static int str_map(const kj_doc *d, int obj, k8s_kv **out, size_t *n) {
  if (obj < 0 || d->t[obj].type != KJ_OBJECT) return 0;
  int cnt = d->t[obj].size;
  if (!cnt) return 0;
  k8s_kv *kv = calloc((size_t)cnt, sizeof(*kv));
  if (!kv) return SONDE_ENOMEM;
  *out = kv;
  int i = obj + 1;
  for (int k = 0; k < cnt; k++) {
    int v = i + 1;
    if (d->t[v].type == KJ_STRING) {
      kv[*n].k = kj_str(d, i);
      kv[*n].v = kj_str(d, v);
      (*n)++; /* counted first so that k8s_pod_free frees a half-made pair */
      if (!kv[*n - 1].k || !kv[*n - 1].v) return SONDE_ENOMEM;
    }
    i = d->t[v].next;
  }
  return 0;
}

/* "containerd://abc" -> "abc" */
static char *strip_scheme(char *id) {
  char *p = id ? strstr(id, "://") : NULL;
  if (p) memmove(id, p + 3, strlen(p + 3) + 1);
  return id;
}

static int add_statuses(const kj_doc *d, int arr, k8s_pod *p, int spec_containers) {
  if (arr < 0 || d->t[arr].type != KJ_ARRAY || !d->t[arr].size) return 0;
  size_t want = p->n_containers + (size_t)d->t[arr].size;
  k8s_container *nc = realloc(p->containers, want * sizeof(*nc));
  if (!nc) return SONDE_ENOMEM;
  p->containers = nc;
  for (int i = arr + 1; i < d->t[arr].next; i = d->t[i].next) {
    if (d->t[i].type != KJ_OBJECT) continue;
    k8s_container *c = &p->containers[p->n_containers++];
    memset(c, 0, sizeof(*c));
    int rc = opt_str(d, i, "containerID", &c->id);
    if (!rc) rc = opt_str(d, i, "name", &c->name);
    if (rc) return rc;
    strip_scheme(c->id);
    /* The spec's image is what the user wrote (a tag); the status may hold a resolved digest. */
    for (int s = spec_containers >= 0 ? spec_containers + 1 : 0;
         spec_containers >= 0 && s < d->t[spec_containers].next && c->name && !c->image;
         s = d->t[s].next) {
      char *nm = NULL;
      if ((rc = opt_str(d, s, "name", &nm))) return rc;
      if (nm && !strcmp(nm, c->name)) rc = opt_str(d, s, "image", &c->image);
      free(nm);
      if (rc) return rc;
    }
    if (!c->image && (rc = opt_str(d, i, "image", &c->image))) return rc;
  }
  return 0;
}

int k8s_pod_from_json(const kj_doc *d, int obj, k8s_pod **out) {
  *out = NULL;
  if (obj < 0 || obj >= d->n || d->t[obj].type != KJ_OBJECT) return SONDE_EPROTO;
  k8s_pod *p = calloc(1, sizeof(*p));
  if (!p) return SONDE_ENOMEM;
  int rc = opt_str(d, obj, "metadata.uid", &p->uid);
  if (!rc && !p->uid) rc = SONDE_EPROTO;
  if (!rc) rc = opt_str(d, obj, "metadata.name", &p->name);
  if (!rc) rc = opt_str(d, obj, "metadata.namespace", &p->ns);
  if (!rc) rc = opt_str(d, obj, "metadata.resourceVersion", &p->rv);
  if (!rc) rc = opt_str(d, obj, "spec.nodeName", &p->node);
  if (!rc) rc = opt_str(d, obj, "status.podIP", &p->ip);
  if (!rc) rc = opt_str(d, obj, "status.startTime", &p->start_time);
  if (!rc) {
    int hn = kj_path(d, obj, "spec.hostNetwork");
    p->host_network = hn >= 0 && d->t[hn].type == KJ_PRIMITIVE && d->text[d->t[hn].start] == 't';
  }
  if (!rc) rc = str_map(d, kj_path(d, obj, "metadata.labels"), &p->labels, &p->n_labels);
  if (!rc)
    rc = str_map(d, kj_path(d, obj, "metadata.annotations"), &p->annotations, &p->n_annotations);
  int owners = kj_path(d, obj, "metadata.ownerReferences");
  if (!rc && owners >= 0 && d->t[owners].type == KJ_ARRAY) {
    /* The controller owner; the first owner when none is marked. */
    int pick = -1;
    for (int i = owners + 1; i < d->t[owners].next; i = d->t[i].next) {
      if (d->t[i].type != KJ_OBJECT) continue;
      int c = kj_get(d, i, "controller");
      if (pick < 0 || (c >= 0 && d->t[c].type == KJ_PRIMITIVE && d->text[d->t[c].start] == 't'))
        pick = i;
    }
    if (pick >= 0) {
      rc = opt_str(d, pick, "kind", &p->owner_kind);
      if (!rc) rc = opt_str(d, pick, "name", &p->owner_name);
    }
  }
  int spec = kj_path(d, obj, "spec.containers");
  if (!rc) rc = add_statuses(d, kj_path(d, obj, "status.containerStatuses"), p, spec);
  if (!rc)
    rc = add_statuses(d, kj_path(d, obj, "status.initContainerStatuses"), p,
                      kj_path(d, obj, "spec.initContainers"));
  if (rc) {
    k8s_pod_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

const char *k8s_pod_label(const k8s_pod *p, const char *key) {
  for (size_t i = 0; i < p->n_labels; i++)
    if (!strcmp(p->labels[i].k, key)) return p->labels[i].v;
  return NULL;
}

const char *k8s_deployment_of(const k8s_pod *p, char *buf, size_t len) {
  if (!p->owner_kind || strcmp(p->owner_kind, "ReplicaSet") || !p->owner_name) return NULL;
  const char *rs = p->owner_name;
  size_t n = strlen(rs);
  const char *hash = k8s_pod_label(p, "pod-template-hash");
  size_t hl = hash ? strlen(hash) : 0;
  size_t cut;
  if (hl && n > hl + 1 && rs[n - hl - 1] == '-' && !strcmp(rs + n - hl, hash)) {
    cut = n - hl - 1;
  } else {
    const char *dash = strrchr(rs, '-');
    if (!dash || dash == rs) return NULL; /* not a Deployment's ReplicaSet name */
    cut = (size_t)(dash - rs);
  }
  if (cut + 1 > len) return NULL;
  memcpy(buf, rs, cut);
  buf[cut] = 0;
  return buf;
}

/* ---- cgroups -------------------------------------------------------------------------------- */

static bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* A 64-hex run in s[0..n) bounded by non-hex bytes. */
static const char *find_id(const char *s, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && is_hex(s[i])) {
      run++;
      continue;
    }
    if (run == 64) return s + i - 64;
    run = 0;
  }
  return NULL;
}

bool k8s_cgroup_ids(const char *text, size_t len, char id[65], char uid[37]) {
  id[0] = uid[0] = 0;
  size_t i = 0;
  while (i < len) {
    size_t e = i;
    while (e < len && text[e] != '\n')
      e++;
    /* hierarchy-ID:controllers:path; the path may itself hold ':' (never in kubepods paths). */
    const char *line = text + i, *path = NULL;
    int colons = 0;
    for (size_t k = 0; k < e - i; k++)
      if (line[k] == ':' && ++colons == 2) {
        path = line + k + 1;
        break;
      }
    if (path) {
      const char *pe = text + e;
      /* Walk the components from the end; the deepest one with an id is the container. */
      const char *comp_end = pe;
      while (comp_end > path && !id[0]) {
        const char *cs = comp_end;
        while (cs > path && cs[-1] != '/')
          cs--;
        size_t cl = (size_t)(comp_end - cs);
        /* crio-conmon-<id>.scope is CRI-O's monitor process, not the container. */
        if (!(cl > 12 && !memcmp(cs, "crio-conmon-", 12))) {
          const char *f = find_id(cs, cl);
          if (f) {
            memcpy(id, f, 64);
            id[64] = 0;
          }
        }
        comp_end = cs > path ? cs - 1 : path;
      }
      /* kubepods-besteffort-pod<uid_with_underscores>.slice or .../pod<uid>/ */
      if (!uid[0]) {
        for (const char *q = path; q + 3 + 36 <= pe; q++) {
          if (memcmp(q, "pod", 3) || (q > path && q[-1] != '/' && q[-1] != '-')) continue;
          const char *u = q + 3;
          bool ok = true;
          for (int k = 0; k < 36 && ok; k++) {
            char c = u[k];
            ok = (k == 8 || k == 13 || k == 18 || k == 23) ? (c == '-' || c == '_') : is_hex(c);
          }
          if (!ok) continue;
          for (int k = 0; k < 36; k++)
            uid[k] = u[k] == '_' ? '-' : u[k];
          uid[36] = 0;
          break;
        }
      }
    }
    i = e + 1;
  }
  return id[0] || uid[0];
}

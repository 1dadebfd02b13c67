/* otelcol's probabilisticsamplerprocessor decision (sampler_mode.go, tracesprocessor.go,
 * logsprocessor.go) and the OTEP 235 helpers of pkg/sampling, step for step, so that an otelcol
 * agent and sonde with the same options keep the same items and write the same tracestate. */
#include "psampler_logic.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *const ps_policy_names[PS_POL_N] = {
    "missing_randomness",  "trace_id_hash",     "trace_id_w3c",
    "sampling_randomness", "sampling_priority", "attribute",
};

/* ---- hashes --------------------------------------------------------------------------------- */

uint32_t ps_fnv1a32(uint32_t seed, const uint8_t *b, size_t n) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < 4; i++) {
    h ^= (uint8_t)(seed >> (8 * i));
    h *= 16777619u;
  }
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 16777619u;
  }
  return h;
}

static uint32_t rotl(uint32_t x, int r) {
  return (x << r) | (x >> (32 - r));
}

uint32_t ps_murmur3_32(uint32_t seed, const uint8_t *b, size_t n) {
  const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
  uint32_t h = seed;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t k = (uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 |
                 (uint32_t)b[i + 3] << 24;
    k *= c1;
    k = rotl(k, 15);
    k *= c2;
    h ^= k;
    h = rotl(h, 13);
    h = h * 5 + 0xe6546b64;
  }
  uint32_t k = 0;
  switch (n - i) {
  case 3:
    k ^= (uint32_t)b[i + 2] << 16;
    /* fall through */
  case 2:
    k ^= (uint32_t)b[i + 1] << 8;
    /* fall through */
  case 1:
    k ^= b[i];
    k *= c1;
    k = rotl(k, 15);
    k *= c2;
    h ^= k;
  }
  h ^= (uint32_t)n;
  h ^= h >> 16;
  h *= 0x85ebca6b;
  h ^= h >> 13;
  h *= 0xc2b2ae35;
  h ^= h >> 16;
  return h;
}

uint64_t ps_hash_randomness(uint32_t h) {
  uint64_t hashed = h & 0x3fff;
  uint64_t rprime14 = 0x3fff - hashed;
  uint64_t unused18 = h >> 14;
  uint64_t mixed28 = unused18 ^ (unused18 << 10);
  return (rprime14 << 42) | (mixed28 << 14) | hashed;
}

/* ---- thresholds ----------------------------------------------------------------------------- */

bool ps_prob_to_threshold(double p, int precision, uint64_t *th) {
  if (precision == 0) precision = 14;
  if (!(p >= 1.0 / (double)PS_MAX_ADJUSTED_COUNT && p <= 1)) return false;
  if (p == 1) {
    *th = PS_ALWAYS_SAMPLE;
    return true;
  }
  /* More hex digits near 0 and 1, where leading 0s or fs carry no information. */
  int expf, expr;
  frexp(p, &expf);
  frexp(1 - p, &expr);
  int a = precision + expf / -4, b = precision + expr / -4;
  precision = a > b ? a : b;
  if (precision > 14) precision = 14;
  uint64_t scaled = (uint64_t)round(p * (double)PS_MAX_ADJUSTED_COUNT);
  uint64_t t = PS_MAX_ADJUSTED_COUNT - scaled;
  int shift = 4 * (14 - precision);
  if (shift) {
    t += 1ull << (shift - 1);
    t >>= shift;
    t <<= shift;
  }
  *th = t;
  return true;
}

double ps_threshold_prob(uint64_t th) {
  return (double)(PS_MAX_ADJUSTED_COUNT - th) / (double)PS_MAX_ADJUSTED_COUNT;
}

void ps_rvalue(uint64_t rnd, char out[16]) {
  snprintf(out, 16, "%014llx", (unsigned long long)(rnd & (PS_MAX_ADJUSTED_COUNT - 1)));
}

void ps_tvalue(uint64_t th, char out[16]) {
  if (th == PS_ALWAYS_SAMPLE) {
    strcpy(out, "0");
    return;
  }
  if (th >= PS_NEVER_SAMPLE) {
    out[0] = 0;
    return;
  }
  ps_rvalue(th, out);
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == '0')
    out[--n] = 0;
}

static bool parse_hex(const char *s, size_t n, uint64_t *v) {
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return false;
    x = x << 4 | (uint64_t)d;
  }
  *v = x;
  return true;
}

bool ps_parse_tvalue(const char *s, size_t n, uint64_t *th) {
  uint64_t v;
  if (n == 0 || n > 14 || !parse_hex(s, n, &v)) return false;
  *th = v << (4 * (14 - n));
  return true;
}

bool ps_parse_rvalue(const char *s, size_t n, uint64_t *rnd) {
  return n == 14 && parse_hex(s, n, rnd);
}

/* ---- the sampler ---------------------------------------------------------------------------- */

void ps_make(ps_sampler *s, ps_mode mode, float pct, uint32_t seed, int precision, bool fail_closed,
             bool murmur3) {
  memset(s, 0, sizeof(*s));
  s->seed = seed;
  s->precision = precision;
  s->fail_closed = fail_closed;
  s->murmur3 = murmur3;
  if (pct > 100) pct = 100;
  if (pct == 0) {
    s->kind = PS_NEVER;
    return;
  }
  double ratio = (double)pct / 100;
  if (ratio < 1.0 / (double)PS_MAX_ADJUSTED_COUNT) ratio = 1.0 / (double)PS_MAX_ADJUSTED_COUNT;
  switch (mode) {
  case PS_MODE_EQUALIZING:
    s->kind = PS_EQUALIZING;
    ps_prob_to_threshold(ratio, precision, &s->threshold);
    return;
  case PS_MODE_PROPORTIONAL:
    s->kind = PS_PROPORTIONAL;
    s->ratio = ratio;
    return;
  case PS_MODE_HASH_SEED:
    break;
  }
  /* uint32(pct * percentageScaleFactor): a float32 product, truncated, as otelcol has always
   * computed it (the constant 16384/100 rounds to the float 163.84f). */
  float prod = pct * 163.84f;
  uint32_t scaled = (uint32_t)prod;
  if (scaled == 0) {
    s->kind = PS_NEVER;
    return;
  }
  s->kind = PS_HASH;
  s->threshold = (uint64_t)(16384 - scaled) << 42;
}

/* ---- carriers ------------------------------------------------------------------------------- */

typedef struct span_ref {
  const char *p;
  size_t n;
} span_ref;

typedef struct carrier {
  bool has_rv, has_th;
  uint64_t rnd, th;
  char tvalue[16];
  bool set_rv, th_changed; /* what this decision changed */
  span_ref ot_extra[64];   /* other "k:v" members of the ot value */
  size_t n_ot_extra;
  span_ref other[32]; /* other "key=value" members of the tracestate */
  size_t n_other;
} carrier;

static bool lc_alpha(char c) {
  return c >= 'a' && c <= 'z';
}
static bool lc_alnum(char c) {
  return lc_alpha(c) || (c >= '0' && c <= '9');
}

/* The ot value: members "key:value" separated by ';', key [a-z][a-z0-9]*, value
 * [A-Za-z0-9._-]*, at most 256 bytes. */
static bool parse_otel(const char *s, size_t n, carrier *c) {
  if (n == 0 || n > 256 || s[n - 1] == ';') return false;
  size_t i = 0;
  while (i < n) {
    size_t e = i;
    while (e < n && s[e] != ';')
      e++;
    const char *m = s + i;
    size_t mn = e - i;
    const char *colon = memchr(m, ':', mn);
    if (!mn || !colon || colon == m || !lc_alpha(m[0])) return false;
    size_t kn = (size_t)(colon - m);
    for (size_t k = 1; k < kn; k++)
      if (!lc_alnum(m[k])) return false;
    const char *v = colon + 1;
    size_t vn = mn - kn - 1;
    for (size_t k = 0; k < vn; k++) {
      char ch = v[k];
      if (!(lc_alnum(ch) || (ch >= 'A' && ch <= 'Z') || ch == '.' || ch == '_' || ch == '-'))
        return false;
    }
    if (kn == 2 && !memcmp(m, "rv", 2)) {
      if (!ps_parse_rvalue(v, vn, &c->rnd)) return false;
      c->has_rv = true;
    } else if (kn == 2 && !memcmp(m, "th", 2)) {
      if (!ps_parse_tvalue(v, vn, &c->th)) return false;
      memcpy(c->tvalue, v, vn);
      c->tvalue[vn] = 0;
      c->has_th = true;
    } else {
      if (c->n_ot_extra == sizeof c->ot_extra / sizeof c->ot_extra[0]) return false;
      c->ot_extra[c->n_ot_extra++] = (span_ref){m, mn};
    }
    i = e + 1;
  }
  return true;
}

static bool key_char(char c) {
  return lc_alnum(c) || c == '_' || c == '-' || c == '*' || c == '/';
}

/* W3C tracestate key: simple-key or tenant@system (lengths as the W3C grammar). */
static bool w3c_key(const char *k, size_t n) {
  const char *at = memchr(k, '@', n);
  if (!at) {
    if (n < 1 || n > 256 || !lc_alpha(k[0])) return false;
    for (size_t i = 1; i < n; i++)
      if (!key_char(k[i])) return false;
    return true;
  }
  size_t tn = (size_t)(at - k), sn = n - tn - 1;
  if (tn < 1 || tn > 241 || !lc_alnum(k[0]) || sn < 1 || sn > 14 || !lc_alpha(at[1])) return false;
  for (size_t i = 1; i < tn; i++)
    if (!key_char(k[i])) return false;
  for (size_t i = 2; i <= sn; i++)
    if (!key_char(at[i])) return false;
  return true;
}

/* W3C value: 1-256 printable ASCII except ',' and '=', not ending in a space. */
static bool w3c_value(const char *v, size_t n) {
  if (n < 1 || n > 256 || v[n - 1] == ' ') return false;
  for (size_t i = 0; i < n; i++)
    if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=') return false;
  return true;
}

static bool ows(char c) {
  return c == ' ' || c == '\t';
}

static bool parse_w3c(const char *s, carrier *c) {
  if (!s) return true;
  size_t n = strlen(s);
  if (n > 1024) return false;
  size_t i = 0;
  int items = 0;
  while (i < n) {
    if (++items >= 32) return false; /* as pkg/sampling counts (empty members included) */
    size_t e = i;
    while (e < n && s[e] != ',')
      e++;
    const char *m = s + i;
    size_t mn = e - i;
    while (mn && ows(*m))
      m++, mn--;
    while (mn && ows(m[mn - 1]))
      mn--;
    i = e + 1;
    if (!mn) continue;
    const char *eq = memchr(m, '=', mn);
    if (!eq || !w3c_key(m, (size_t)(eq - m)) || !w3c_value(eq + 1, mn - (size_t)(eq - m) - 1))
      return false;
    if (eq - m == 2 && !memcmp(m, "ot", 2)) {
      /* A repeated ot member: the last one counts, as pkg/sampling parses. */
      c->has_rv = c->has_th = false;
      c->n_ot_extra = 0;
      if (!parse_otel(eq + 1, mn - 3, c)) return false;
    } else {
      if (c->n_other == sizeof c->other / sizeof c->other[0]) return false;
      c->other[c->n_other++] = (span_ref){m, mn};
    }
  }
  return true;
}

static bool parse_log(const ps_item *it, carrier *c) {
  bool ok = true;
  if (it->log_th && *it->log_th) {
    size_t n = strlen(it->log_th);
    if (n < sizeof c->tvalue && ps_parse_tvalue(it->log_th, n, &c->th)) {
      memcpy(c->tvalue, it->log_th, n + 1);
      c->has_th = true;
    } else {
      ok = false;
    }
  }
  if (it->log_rv && *it->log_rv) {
    if (ps_parse_rvalue(it->log_rv, strlen(it->log_rv), &c->rnd))
      c->has_rv = true;
    else
      ok = false;
  }
  return ok;
}

static void put(char *out, size_t cap, size_t *len, const char *s, size_t n) {
  if (*len + n + 1 > cap) n = cap > *len + 1 ? cap - *len - 1 : 0;
  memcpy(out + *len, s, n);
  *len += n;
  out[*len] = 0;
}

/* W3CTraceState.Serialize: the ot member first (rv, th, then other ot values), then the rest. */
static void serialize(const carrier *c, char *out, size_t cap) {
  size_t len = 0;
  out[0] = 0;
  int cnt = 0;
  if (c->has_rv || c->has_th || c->n_ot_extra) {
    put(out, cap, &len, "ot=", 3);
    if (c->has_rv) {
      char rv[16];
      ps_rvalue(c->rnd, rv);
      put(out, cap, &len, "rv:", 3);
      put(out, cap, &len, rv, 14);
      cnt++;
    }
    if (c->has_th) {
      if (cnt++) put(out, cap, &len, ";", 1);
      put(out, cap, &len, "th:", 3);
      put(out, cap, &len, c->tvalue, strlen(c->tvalue));
    }
    for (size_t i = 0; i < c->n_ot_extra; i++) {
      if (cnt++) put(out, cap, &len, ";", 1);
      put(out, cap, &len, c->ot_extra[i].p, c->ot_extra[i].n);
    }
    cnt = 1;
  } else {
    cnt = 0;
  }
  for (size_t i = 0; i < c->n_other; i++) {
    if (cnt++) put(out, cap, &len, ",", 1);
    put(out, cap, &len, c->other[i].p, c->other[i].n);
  }
}

static bool tid_present(const ps_item *it) {
  if (!it->trace_id || it->trace_id_len != 16) return false;
  for (int i = 0; i < 16; i++)
    if (it->trace_id[i]) return true;
  return false;
}

/* ---- the decision (commonShouldSampleLogic) ------------------------------------------------- */

void ps_decide(const ps_sampler *s, const ps_item *it, ps_result *r) {
  memset(r, 0, sizeof(*r));
  carrier c;
  memset(&c, 0, sizeof c);
  bool parsed = it->is_log ? parse_log(it, &c) : parse_w3c(it->tracestate, &c);
  bool have = parsed; /* the carrier exists */
  const char *err = parsed ? NULL : "invalid sampling state (tracestate or attributes)";
  uint64_t rnd = PS_ALL_PROBABILITIES; /* what a missing randomness compares as */
  bool missing = true;
  ps_policy pol = PS_POL_MISSING;

  switch (s->kind) {
  case PS_NEVER:
    /* A stand-in randomness that is never used: the decision is never (or the priority). */
    missing = false;
    pol = PS_POL_PRIORITY;
    break;
  case PS_HASH: {
    const uint8_t *src = NULL;
    size_t n = 0;
    if ((!it->is_log || it->use_trace_id) && tid_present(it)) {
      src = it->trace_id, n = 16;
      pol = PS_POL_TRACE_ID_HASH;
    } else if (it->is_log && it->attr_bytes && it->attr_len) {
      src = it->attr_bytes, n = it->attr_len;
      pol = PS_POL_ATTRIBUTE;
    }
    if (src) {
      rnd = ps_hash_randomness(s->murmur3 ? ps_murmur3_32(s->seed, src, n)
                                          : ps_fnv1a32(s->seed, src, n));
      missing = false;
    }
    if (!parsed) {
      have = false;
    } else if (c.has_rv) {
      err = "item has sampling randomness, equalizing or proportional mode recommended";
      have = false;
    } else if (c.has_th) {
      err = "item has sampling threshold, equalizing or proportional mode recommended";
      have = false;
    } else if (!it->is_log || !missing) {
      /* No sampling state yet: the hash becomes the item's explicit randomness. */
      c.has_rv = c.set_rv = true;
      c.rnd = rnd;
    }
    break;
  }
  case PS_EQUALIZING:
  case PS_PROPORTIONAL:
    if (!parsed) {
      have = false;
    } else if (c.has_rv) {
      rnd = c.rnd;
      missing = false;
      pol = PS_POL_RANDOMNESS;
    } else if (tid_present(it)) {
      /* The least-significant 56 bits of the trace id (W3C trace-context level 2). */
      uint64_t low = 0;
      for (int i = 9; i < 16; i++)
        low = low << 8 | it->trace_id[i];
      rnd = low;
      missing = false;
      pol = PS_POL_TRACE_ID_W3C;
    }
    break;
  }

  if (!err) {
    if (missing) {
      err = "missing randomness";
    } else if (have && c.has_th && !(c.th <= rnd)) {
      c.has_th = false; /* inconsistent on arrival: cleared, as the spec recommends */
      c.tvalue[0] = 0;
      c.th_changed = true;
      err = "inconsistent arriving threshold: item should not have been sampled";
    }
  }

  uint64_t th;
  if (err) {
    th = s->fail_closed ? PS_NEVER_SAMPLE : PS_ALWAYS_SAMPLE;
  } else {
    switch (s->kind) {
    case PS_NEVER:
      th = PS_NEVER_SAMPLE;
      break;
    case PS_HASH:
      th = s->threshold;
      break;
    case PS_EQUALIZING:
      th = c.has_th && s->threshold < c.th ? c.th : s->threshold;
      break;
    default: {
      double incoming = c.has_th ? ps_threshold_prob(c.th) : 1.0;
      if (!ps_prob_to_threshold(incoming * s->ratio, s->precision, &th)) th = PS_NEVER_SAMPLE;
    }
    }
  }

  if (!it->is_log && it->span_priority == 0) {
    th = PS_NEVER_SAMPLE;
    pol = PS_POL_PRIORITY;
  } else if (!it->is_log && it->span_priority > 0) {
    th = PS_ALWAYS_SAMPLE;
    pol = PS_POL_PRIORITY;
  } else if (it->is_log && it->has_prio_th) {
    th = it->prio_th;
    pol = PS_POL_PRIORITY;
  }

  r->sampled = th <= rnd;
  r->policy = pol;
  r->error = err;
  if (!r->sampled || !have) return;
  /* updateThreshold: never raise an arriving probability (the item keeps its old th then). */
  if (!(c.has_th && c.th > th)) {
    char tv[16];
    ps_tvalue(th, tv);
    if (!c.has_th || strcmp(tv, c.tvalue)) c.th_changed = true;
    strcpy(c.tvalue, tv);
    c.th = th;
    c.has_th = tv[0] != 0;
  }
  if (it->is_log) {
    if (c.set_rv) {
      r->set_rv = true;
      ps_rvalue(c.rnd, r->rv);
    }
    if (c.th_changed) {
      if (c.has_th) {
        r->set_th = true;
        strcpy(r->th, c.tvalue);
      } else {
        r->remove_th = true;
      }
    }
    return;
  }
  serialize(&c, r->tracestate, sizeof r->tracestate);
  r->tracestate_changed = strcmp(r->tracestate, it->tracestate ? it->tracestate : "") != 0;
}

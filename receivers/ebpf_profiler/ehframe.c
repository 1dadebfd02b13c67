/* .eh_frame parser and CFA interpreter; see ehframe.h. DWARF 5 section 6.4 and the LSB's
 * .eh_frame description are the references; register numbers are the x86-64 psABI's. */
#include "ehframe.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../../bpf/profiler.h"
#include "sonde/errors.h"

#define REG_RBP 6
#define REG_RSP 7
#define REG_RA 16
#define MAX_REMEMBER 16

/* ---- bounded little-endian reader ------------------------------------------------------------ */

typedef struct rd {
  const uint8_t *p, *end;
  bool bad; /* set by any read past end; later reads return 0 */
} rd;

static uint64_t rd_n(rd *r, size_t n) {
  if (r->bad || (size_t)(r->end - r->p) < n) {
    r->bad = true;
    return 0;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v |= (uint64_t)r->p[i] << (8 * i);
  r->p += n;
  return v;
}

static uint64_t rd_uleb(rd *r) {
  uint64_t v = 0;
  for (unsigned shift = 0;; shift += 7) {
    if (r->bad || r->p >= r->end) {
      r->bad = true;
      return 0;
    }
    uint8_t b = *r->p++;
    if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
}

static int64_t rd_sleb(rd *r) {
  int64_t v = 0;
  unsigned shift = 0;
  uint8_t b;
  do {
    if (r->bad || r->p >= r->end) {
      r->bad = true;
      return 0;
    }
    b = *r->p++;
    if (shift < 64) v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
    shift += 7;
  } while (b & 0x80);
  if (shift < 64 && (b & 0x40)) v |= -(int64_t)((uint64_t)1 << shift);
  return v;
}

static void rd_skip(rd *r, uint64_t n) {
  if (r->bad || (uint64_t)(r->end - r->p) < n)
    r->bad = true;
  else
    r->p += n;
}

/* A DW_EH_PE-encoded pointer. vaddr is the virtual address of the byte at r->p (for pcrel).
 * Returns false for encodings that need more context than the section (datarel, indirect...). */
static bool rd_encoded(rd *r, uint8_t enc, uint64_t vaddr, uint64_t *out) {
  if (enc == 0xff) return false; /* DW_EH_PE_omit */
  uint64_t v;
  switch (enc & 0x0f) {
  case 0x00:
    v = rd_n(r, 8);
    break; /* absptr */
  case 0x01:
    v = rd_uleb(r);
    break; /* uleb128 */
  case 0x02:
    v = rd_n(r, 2);
    break; /* udata2 */
  case 0x03:
    v = rd_n(r, 4);
    break; /* udata4 */
  case 0x04:
    v = rd_n(r, 8);
    break; /* udata8 */
  case 0x09:
    v = (uint64_t)rd_sleb(r);
    break; /* sleb128 */
  case 0x0a:
    v = (uint64_t)(int64_t)(int16_t)rd_n(r, 2);
    break; /* sdata2 */
  case 0x0b:
    v = (uint64_t)(int64_t)(int32_t)rd_n(r, 4);
    break; /* sdata4 */
  case 0x0c:
    v = rd_n(r, 8);
    break; /* sdata8 */
  default:
    return false;
  }
  switch (enc & 0x70) {
  case 0x00:
    break; /* absolute */
  case 0x10:
    v += vaddr;
    break; /* pcrel */
  default:
    return false; /* textrel, datarel, funcrel, aligned */
  }
  if (enc & 0x80) return false; /* indirect */
  *out = v;
  return !r->bad;
}

/* ---- CIE ---------------------------------------------------------------------------------------
 */

typedef struct cie {
  uint64_t code_align;
  int64_t data_align;
  uint64_t ra_reg;
  uint8_t fde_enc;
  bool has_z;
  const uint8_t *insns, *insns_end;
} cie;

/* Parses the CIE whose length field is at sec + off. */
static bool parse_cie(const uint8_t *sec, size_t size, uint64_t off, uint64_t sec_vaddr, bool debug,
                      cie *c) {
  if (off >= size) return false;
  rd r = {sec + off, sec + size, false};
  uint64_t len = rd_n(&r, 4);
  bool dw64 = len == 0xffffffffu;
  if (dw64) len = rd_n(&r, 8);
  if (r.bad || len > (uint64_t)(r.end - r.p)) return false;
  r.end = r.p + len;
  /* CIE id: 0 in .eh_frame, all ones in .debug_frame (8 bytes in 64-bit DWARF there). */
  uint64_t id = rd_n(&r, debug && dw64 ? 8 : 4);
  if (debug ? id != (dw64 ? UINT64_MAX : 0xffffffffu) : id != 0) return false;
  uint8_t version = (uint8_t)rd_n(&r, 1);
  if (version != 1 && version != 3 && !(debug && version == 4)) return false;
  const uint8_t *aug = r.p;
  while (r.p < r.end && *r.p)
    r.p++;
  if (r.p >= r.end) return false;
  size_t aug_len = (size_t)(r.p - aug);
  r.p++;
  /* DWARF 4 .debug_frame: address size (8 here) and segment selector size (0). */
  if (version == 4 && (rd_n(&r, 1) != 8 || rd_n(&r, 1) != 0)) return false;
  memset(c, 0, sizeof(*c));
  c->code_align = rd_uleb(&r);
  c->data_align = rd_sleb(&r);
  c->ra_reg = version == 1 ? rd_n(&r, 1) : rd_uleb(&r);
  c->fde_enc = 0; /* absptr */
  if (aug_len && aug[0] == 'z') {
    c->has_z = true;
    uint64_t zlen = rd_uleb(&r);
    if (r.bad || zlen > (uint64_t)(r.end - r.p)) return false;
    rd z = {r.p, r.p + zlen, false};
    for (size_t i = 1; i < aug_len; i++) {
      switch (aug[i]) {
      case 'R':
        c->fde_enc = (uint8_t)rd_n(&z, 1);
        break;
      case 'L':
        rd_n(&z, 1);
        break;
      case 'P': {
        uint8_t enc = (uint8_t)rd_n(&z, 1);
        uint64_t ignored;
        /* The personality pointer's value does not matter here, only its size. */
        if (!rd_encoded(&z, enc & 0x0f, 0, &ignored) && !z.bad) {
          if ((enc & 0x0f) != 0x00 && (enc & 0x0f) != 0x04 && (enc & 0x0f) != 0x0c) return false;
        }
        break;
      }
      case 'S':
      case 'B':
        break;
      default:
        return false; /* unknown augmentation: its data cannot be skipped safely */
      }
    }
    if (z.bad) return false;
    r.p += zlen;
  } else if (aug_len) {
    return false; /* "eh" and other pre-'z' augmentations */
  }
  if (r.bad || c->code_align == 0) return false;
  (void)sec_vaddr;
  c->insns = r.p;
  c->insns_end = r.end;
  return true;
}

/* ---- CFA program -------------------------------------------------------------------------------
 */

typedef struct rule {
  uint8_t kind; /* UW_REG_* */
  int32_t off;
} rule;

typedef struct cfa_state {
  uint8_t cfa_type;
  uint64_t cfa_reg;
  int64_t cfa_off;
  rule rbp, ra;
} cfa_state;

static int push_row(uw_table *t, uint64_t pc, const cfa_state *s) {
  uw_row row = {.pc = pc,
                .cfa_type = s->cfa_type,
                .cfa_off = (int32_t)s->cfa_off,
                .rbp_rule = s->rbp.kind,
                .rbp_off = s->rbp.off,
                .ra_rule = s->ra.kind,
                .ra_off = s->ra.off};
  if (row.cfa_type == UW_CFA_RSP || row.cfa_type == UW_CFA_RBP) {
    if (s->cfa_off != (int64_t)row.cfa_off) row.cfa_type = UW_CFA_OTHER;
  } else if (row.cfa_type != UW_CFA_PLT) {
    row.cfa_off = 0;
  }
  if (t->n == t->cap) {
    /* Straight from mmap: a big file's table is megabytes that must go back to the system when
     * freed, which malloc's arenas (one per pool thread) would keep. */
    size_t nc = t->cap ? t->cap * 2 : 1024;
    if (nc > SIZE_MAX / 2 / sizeof(uw_row)) return SONDE_ENOMEM;
    void *v = t->rows
                  ? mremap(t->rows, t->cap * sizeof(uw_row), nc * sizeof(uw_row), MREMAP_MAYMOVE)
                  : mmap(NULL, nc * sizeof(uw_row), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (v == MAP_FAILED) return SONDE_ENOMEM;
    t->rows = v;
    t->cap = nc;
  }
  t->rows[t->n++] = row;
  return 0;
}

static void set_rule(cfa_state *s, uint64_t reg, uint8_t kind, int64_t off) {
  rule r = {kind, (int32_t)off};
  if (kind == UW_REG_OFFSET && off != (int64_t)r.off) r.kind = UW_REG_OTHER;
  if (reg == REG_RBP) s->rbp = r;
  if (reg == REG_RA) s->ra = r;
}

static void set_cfa_reg(cfa_state *s, uint64_t reg) {
  s->cfa_reg = reg;
  s->cfa_type = reg == REG_RSP ? UW_CFA_RSP : reg == REG_RBP ? UW_CFA_RBP : UW_CFA_OTHER;
}

/* Recognises the two CFA expressions the walker can follow; everything else is UW_CFA_EXPR.
 * gcc's PLT stubs: breg7(rsp) 8; breg16(rip) 0; lit15; and; lit11 (or lit10); ge; lit3; shl; plus.
 * glibc's __restore_rt (x86-64 sigaction.c): breg7(rsp) 160; deref, rsp being the ucontext. */
static uint8_t cfa_expr_kind(const uint8_t *e, uint64_t n, int64_t *off) {
  static const uint8_t plt[] = {0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22};
  static const uint8_t sig[] = {0x77, 0xa0, 0x01, 0x06};
  if (n == sizeof(plt) && !memcmp(e, plt, 6) && (e[6] == 0x3b || e[6] == 0x3a) &&
      !memcmp(e + 7, plt + 7, sizeof(plt) - 7)) {
    *off = e[6] - 0x30; /* DW_OP_lit0 + N */
    return UW_CFA_PLT;
  }
  if (n == sizeof(sig) && !memcmp(e, sig, sizeof(sig))) {
    *off = 0;
    return UW_CFA_SIGNAL;
  }
  *off = 0;
  return UW_CFA_EXPR;
}

/* Runs insns; when t is set, emits a row at every advance (and the last one at pc_end is left to
 * the caller). init is the state after the CIE's instructions (for DW_CFA_restore). Returns 0,
 * SONDE_EPROTO on malformed or unsupported instructions, SONDE_ENOMEM. */
static int run_cfa(const uint8_t *p, const uint8_t *end, const cie *c, cfa_state *s,
                   const cfa_state *init, uint64_t *loc, uint64_t pc_end, uw_table *t,
                   uint64_t insn_vaddr) {
  rd r = {p, end, false};
  cfa_state stack[MAX_REMEMBER];
  int depth = 0;
  while (r.p < r.end && !r.bad) {
    uint8_t op = (uint8_t)rd_n(&r, 1);
    uint64_t reg, adv = 0;
    bool advance = false;
    switch (op & 0xc0) {
    case 0x40:
      adv = (op & 0x3f) * c->code_align;
      advance = true;
      break;
    case 0x80:
      set_rule(s, op & 0x3f, UW_REG_OFFSET, (int64_t)rd_uleb(&r) * c->data_align);
      continue;
    case 0xc0:
      reg = op & 0x3f;
      if (reg == REG_RBP) s->rbp = init->rbp;
      if (reg == REG_RA) s->ra = init->ra;
      continue;
    }
    if (!advance) {
      switch (op) {
      case 0x00:
        break;     /* nop */
      case 0x01: { /* set_loc */
        uint64_t v;
        uint64_t va = insn_vaddr + (uint64_t)(r.p - p);
        if (!rd_encoded(&r, c->fde_enc, va, &v) || v < *loc) return SONDE_EPROTO;
        adv = v - *loc;
        advance = true;
        break;
      }
      case 0x02:
        adv = rd_n(&r, 1) * c->code_align;
        advance = true;
        break;
      case 0x03:
        adv = rd_n(&r, 2) * c->code_align;
        advance = true;
        break;
      case 0x04:
        adv = rd_n(&r, 4) * c->code_align;
        advance = true;
        break;
      case 0x05: /* offset_extended */
        reg = rd_uleb(&r);
        set_rule(s, reg, UW_REG_OFFSET, (int64_t)rd_uleb(&r) * c->data_align);
        break;
      case 0x06: /* restore_extended */
        reg = rd_uleb(&r);
        if (reg == REG_RBP) s->rbp = init->rbp;
        if (reg == REG_RA) s->ra = init->ra;
        break;
      case 0x07: /* undefined */
      case 0x08: /* same_value */
        set_rule(s, rd_uleb(&r), UW_REG_SAME, 0);
        break;
      case 0x09: /* register */
        reg = rd_uleb(&r);
        rd_uleb(&r);
        set_rule(s, reg, UW_REG_OTHER, 0);
        break;
      case 0x0a: /* remember_state */
        if (depth == MAX_REMEMBER) return SONDE_EPROTO;
        stack[depth++] = *s;
        break;
      case 0x0b: /* restore_state: the CFA is not part of the remembered rules in DWARF, but
                  * every producer expects it back (as libgcc and libunwind do) */
        if (!depth) return SONDE_EPROTO;
        *s = stack[--depth];
        break;
      case 0x0c: /* def_cfa */
        set_cfa_reg(s, rd_uleb(&r));
        s->cfa_off = (int64_t)rd_uleb(&r);
        break;
      case 0x0d: /* def_cfa_register */
        set_cfa_reg(s, rd_uleb(&r));
        break;
      case 0x0e: /* def_cfa_offset */
        s->cfa_off = (int64_t)rd_uleb(&r);
        if (s->cfa_type >= UW_CFA_EXPR && s->cfa_type != UW_CFA_OTHER) s->cfa_type = UW_CFA_OTHER;
        break;
      case 0x0f: { /* def_cfa_expression */
        uint64_t n = rd_uleb(&r);
        const uint8_t *e = r.p;
        rd_skip(&r, n);
        if (r.bad) break;
        s->cfa_type = cfa_expr_kind(e, n, &s->cfa_off);
        break;
      }
      case 0x10: /* expression */
      case 0x16: /* val_expression */
        reg = rd_uleb(&r);
        rd_skip(&r, rd_uleb(&r));
        set_rule(s, reg, UW_REG_OTHER, 0);
        break;
      case 0x11: /* offset_extended_sf */
        reg = rd_uleb(&r);
        set_rule(s, reg, UW_REG_OFFSET, rd_sleb(&r) * c->data_align);
        break;
      case 0x12: /* def_cfa_sf */
        set_cfa_reg(s, rd_uleb(&r));
        s->cfa_off = rd_sleb(&r) * c->data_align;
        break;
      case 0x13: /* def_cfa_offset_sf */
        s->cfa_off = rd_sleb(&r) * c->data_align;
        if (s->cfa_type >= UW_CFA_EXPR && s->cfa_type != UW_CFA_OTHER) s->cfa_type = UW_CFA_OTHER;
        break;
      case 0x14: /* val_offset */
        reg = rd_uleb(&r);
        rd_uleb(&r);
        set_rule(s, reg, UW_REG_OTHER, 0);
        break;
      case 0x15: /* val_offset_sf */
        reg = rd_uleb(&r);
        rd_sleb(&r);
        set_rule(s, reg, UW_REG_OTHER, 0);
        break;
      case 0x2e: /* GNU_args_size */
        rd_uleb(&r);
        break;
      case 0x2f: /* GNU_negative_offset_extended */
        reg = rd_uleb(&r);
        set_rule(s, reg, UW_REG_OFFSET, -(int64_t)rd_uleb(&r) * c->data_align);
        break;
      default:
        return SONDE_EPROTO;
      }
    }
    if (r.bad) return SONDE_EPROTO;
    if (advance) {
      if (t) {
        if (adv > pc_end - *loc) return 0; /* past the FDE: the rest cannot apply */
        if (adv) {
          int rc = push_row(t, *loc, s);
          if (rc) return rc;
        }
      }
      *loc += adv;
    }
  }
  return r.bad ? SONDE_EPROTO : 0;
}

/* ---- ELF and the section walk -----------------------------------------------------------------
 */

/* The section called name (SHT_PROGBITS) of an ELF64 x86-64 image. *err: SONDE_EPROTO when the
 * image is not one, SONDE_ENOTFOUND when it has no such section. */
static bool find_section(const uint8_t *buf, size_t len, const char *want, const uint8_t **sec,
                         size_t *size, uint64_t *vaddr, int *err) {
  *err = SONDE_EPROTO;
  if (len < 64 ||
      memcmp(buf,
             "\x7f"
             "ELF",
             4) ||
      buf[4] != 2 || buf[5] != 1)
    return false;
  rd h = {buf + 18, buf + len, false};
  if (rd_n(&h, 2) != 62) return false; /* EM_X86_64 */
  h.p = buf + 40;
  uint64_t shoff = rd_n(&h, 8);
  h.p = buf + 58;
  uint64_t shentsize = rd_n(&h, 2), shnum = rd_n(&h, 2), shstrndx = rd_n(&h, 2);
  if (h.bad || shentsize < 64 || shoff > len || shnum > (len - shoff) / shentsize ||
      shstrndx >= shnum)
    return false;
  *err = SONDE_ENOTFOUND;
  const uint8_t *strhdr = buf + shoff + shstrndx * shentsize;
  rd s = {strhdr + 24, buf + len, false};
  uint64_t str_off = rd_n(&s, 8), str_size = rd_n(&s, 8);
  if (s.bad || str_off > len || str_size > len - str_off) return false;
  for (uint64_t i = 0; i < shnum; i++) {
    const uint8_t *sh = buf + shoff + i * shentsize;
    rd x = {sh, buf + len, false};
    uint64_t name = rd_n(&x, 4), type = rd_n(&x, 4);
    rd_n(&x, 8);
    uint64_t addr = rd_n(&x, 8), off = rd_n(&x, 8), sz = rd_n(&x, 8);
    if (x.bad || type != 1 /* SHT_PROGBITS */ || name >= str_size) continue;
    const char *nm = (const char *)buf + str_off + name;
    size_t maxn = (size_t)(str_size - name);
    size_t wl = strlen(want);
    if (strnlen(nm, maxn) != wl || memcmp(nm, want, wl)) continue;
    if (off > len || sz > len - off) return false;
    *sec = buf + off;
    *size = (size_t)sz;
    *vaddr = addr;
    return true;
  }
  return false;
}

static int cmp_row(const void *a, const void *b) {
  const uw_row *x = a, *y = b;
  if (x->pc != y->pc) return x->pc < y->pc ? -1 : 1;
  /* At equal pc a real row wins over the NONE row that ends the previous FDE. */
  return (x->cfa_type == UW_CFA_NONE) - (y->cfa_type == UW_CFA_NONE);
}

typedef struct row_run {
  size_t first, n;
} row_run;

/* A new run starts after an FDE's closing NONE row (FDEs do not overlap; sequences of them may)
 * or where the order breaks. */
static bool run_break(const uw_row *prev, const uw_row *cur) {
  return prev->cfa_type == UW_CFA_NONE || cmp_row(prev, cur) > 0;
}

static int cmp_run(const void *a, const void *b, void *rows) {
  const row_run *x = a, *y = b;
  return cmp_row((const uw_row *)rows + x->first, (const uw_row *)rows + y->first);
}

/* Sorts t's rows by pc (equal pcs in any order). Each FDE's rows are sorted already and FDEs do
 * not overlap, so the rows are a few ascending runs (~one per FDE): sorting the runs and
 * concatenating them costs a fraction of sorting every row (which was most of sonde's CPU in
 * steady state, building tables for the processes the machine starts). qsort when runs overlap. */
static int sort_rows(uw_table *t) {
  size_t nruns = 1;
  for (size_t i = 1; i < t->n; i++)
    nruns += run_break(&t->rows[i - 1], &t->rows[i]);
  if (nruns == 1) return 0;
  row_run *runs = malloc(nruns * sizeof(*runs));
  if (!runs) return SONDE_ENOMEM;
  size_t k = 0;
  runs[0] = (row_run){0, 1};
  for (size_t i = 1; i < t->n; i++) {
    if (run_break(&t->rows[i - 1], &t->rows[i])) runs[++k] = (row_run){i, 0};
    runs[k].n++;
  }
  qsort_r(runs, nruns, sizeof(*runs), cmp_run, t->rows);
  bool ok = true;
  for (size_t r = 1; r < nruns && ok; r++)
    ok = t->rows[runs[r - 1].first + runs[r - 1].n - 1].pc <= t->rows[runs[r].first].pc;
  uw_row *out = ok ? mmap(NULL, t->n * sizeof(uw_row), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                   : MAP_FAILED;
  if (out == MAP_FAILED) {
    free(runs);
    qsort(t->rows, t->n, sizeof(*t->rows), cmp_row);
    return 0;
  }
  size_t w = 0;
  for (size_t r = 0; r < nruns; r++) {
    memcpy(out + w, t->rows + runs[r].first, runs[r].n * sizeof(uw_row));
    w += runs[r].n;
  }
  free(runs);
  munmap(t->rows, t->cap * sizeof(uw_row));
  t->rows = out;
  t->cap = t->n;
  return 0;
}

static bool same_rule(const uw_row *a, const uw_row *b) {
  return a->cfa_type == b->cfa_type && a->cfa_off == b->cfa_off && a->rbp_rule == b->rbp_rule &&
         a->rbp_off == b->rbp_off && a->ra_rule == b->ra_rule && a->ra_off == b->ra_off;
}

/* Rows of every FDE of one section (.eh_frame, or .debug_frame when debug). */
static int walk_section(const uint8_t *sec, size_t size, uint64_t sec_vaddr, bool debug,
                        uw_table *t) {
  for (size_t off = 0; off + 4 <= size;) {
    rd r = {sec + off, sec + size, false};
    uint64_t elen = rd_n(&r, 4);
    if (elen == 0) break; /* terminator */
    bool dw64 = elen == 0xffffffffu;
    if (dw64) elen = rd_n(&r, 8);
    if (r.bad || elen > (uint64_t)(r.end - r.p) || elen < 4) break;
    size_t next = (size_t)(r.p - sec) + (size_t)elen;
    const uint8_t *id_at = r.p;
    uint64_t id = rd_n(&r, debug && dw64 ? 8 : 4);
    r.end = sec + next;
    bool is_cie = debug ? id == (dw64 ? UINT64_MAX : 0xffffffffu) : id == 0;
    if (!is_cie) {
      /* An FDE. Its CIE: .eh_frame gives the distance back from this field, .debug_frame the
       * offset from the section's start. */
      cie c;
      uint64_t cie_off = (uint64_t)(id_at - sec);
      uint64_t pc_begin, pc_range;
      if ((debug ? id >= size : id > cie_off) ||
          !parse_cie(sec, size, debug ? id : cie_off - id, sec_vaddr, debug, &c) ||
          !rd_encoded(&r, c.fde_enc, sec_vaddr + (uint64_t)(r.p - sec), &pc_begin) ||
          !rd_encoded(&r, c.fde_enc & 0x0f, 0, &pc_range)) {
        t->skipped++;
        off = next;
        continue;
      }
      if (c.has_z) rd_skip(&r, rd_uleb(&r));
      if (r.bad || pc_range == 0 || pc_begin + pc_range < pc_begin) {
        if (pc_range) t->skipped++;
        off = next;
        continue;
      }
      uint64_t pc_end = pc_begin + pc_range;
      /* On entry: CFA = rsp + 8, return address at CFA - 8, until the CIE says otherwise. */
      cfa_state s = {.cfa_type = UW_CFA_RSP, .cfa_reg = REG_RSP, .cfa_off = 8};
      s.ra = (rule){UW_REG_SAME, 0};
      s.rbp = (rule){UW_REG_SAME, 0};
      uint64_t loc = pc_begin;
      size_t mark = t->n;
      int rc = run_cfa(c.insns, c.insns_end, &c, &s, &s, &loc, pc_end, NULL,
                       sec_vaddr + (uint64_t)(c.insns - sec));
      cfa_state init = s;
      loc = pc_begin;
      if (!rc && c.ra_reg == REG_RA)
        rc = run_cfa(r.p, r.end, &c, &s, &init, &loc, pc_end, t, sec_vaddr + (uint64_t)(r.p - sec));
      else if (!rc)
        rc = SONDE_EPROTO;
      if (!rc && loc < pc_end) rc = push_row(t, loc, &s);
      if (!rc) {
        cfa_state none = {.cfa_type = UW_CFA_NONE};
        rc = push_row(t, pc_end, &none);
      }
      if (rc == SONDE_ENOMEM) return rc;
      if (rc) {
        t->n = mark; /* drop what this FDE had emitted */
        t->skipped++;
      } else {
        t->fdes++;
      }
    }
    off = next;
  }
  return 0;
}

int uw_table_build(const uint8_t *buf, size_t len, uw_table *t) {
  const uint8_t *sec;
  size_t size;
  uint64_t sec_vaddr;
  int err, derr;
  bool eh = find_section(buf, len, ".eh_frame", &sec, &size, &sec_vaddr, &err);
  if (eh && (err = walk_section(sec, size, sec_vaddr, false, t))) return err;
  /* .debug_frame too: code built without unwind tables has only that, next to the few .eh_frame
   * FDEs of the C runtime's objects. Where both cover a pc the sort below keeps one row. */
  bool dbg =
      err != SONDE_EPROTO && find_section(buf, len, ".debug_frame", &sec, &size, &sec_vaddr, &derr);
  if (dbg && (err = walk_section(sec, size, 0, true, t))) return err;
  if (!eh && !dbg) return err;

  if (t->n) {
    int rc = sort_rows(t);
    if (rc) return rc;
    /* First one row per pc (a real row rather than the NONE that ends the FDE before), then
     * merge rows that change nothing. */
    size_t w = 0;
    for (size_t i = 0; i < t->n; i++) {
      if (!w || t->rows[w - 1].pc != t->rows[i].pc)
        t->rows[w++] = t->rows[i];
      else if (t->rows[w - 1].cfa_type == UW_CFA_NONE && t->rows[i].cfa_type != UW_CFA_NONE)
        t->rows[w - 1] = t->rows[i];
    }
    t->n = w;
    w = 0;
    for (size_t i = 0; i < t->n; i++)
      if (!w || !same_rule(&t->rows[w - 1], &t->rows[i])) t->rows[w++] = t->rows[i];
    t->n = w;
  }
  return 0;
}

size_t uw_elf_loads(const uint8_t *buf, size_t len, uw_load *out, size_t max) {
  if (len < 64 ||
      memcmp(buf,
             "\x7f"
             "ELF",
             4) ||
      buf[4] != 2 || buf[5] != 1)
    return 0;
  rd h = {buf + 32, buf + len, false};
  uint64_t phoff = rd_n(&h, 8);
  h.p = buf + 54;
  uint64_t phentsize = rd_n(&h, 2), phnum = rd_n(&h, 2);
  if (h.bad || phentsize < 56 || phoff > len || phnum > (len - phoff) / phentsize) return 0;
  size_t n = 0;
  for (uint64_t i = 0; i < phnum && n < max; i++) {
    rd p = {buf + phoff + i * phentsize, buf + len, false};
    uint32_t type = (uint32_t)rd_n(&p, 4);
    rd_n(&p, 4);
    uint64_t off = rd_n(&p, 8), vaddr = rd_n(&p, 8);
    rd_n(&p, 8);
    uint64_t filesz = rd_n(&p, 8);
    if (!p.bad && type == 1 /* PT_LOAD */) out[n++] = (uw_load){off, vaddr, filesz};
  }
  return n;
}

void uw_table_free(uw_table *t) {
  if (t->rows) munmap(t->rows, t->cap * sizeof(uw_row));
  memset(t, 0, sizeof(*t));
}

const uw_row *uw_table_find(const uw_table *t, uint64_t pc) {
  size_t lo = 0, hi = t->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (t->rows[mid].pc <= pc)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (!lo) return NULL;
  const uw_row *r = &t->rows[lo - 1];
  return r->cfa_type == UW_CFA_NONE ? NULL : r;
}

/* ---- BPF rows and the user-space walk ----------------------------------------------------------
 */

struct sonde_uw_row uw_bpf_row(const uw_row *r, uint64_t base) {
  struct sonde_uw_row o = {.pc = (uint32_t)(r->pc - base), .cfa_off = (int16_t)r->cfa_off};
  if (r->cfa_off < INT16_MIN || r->cfa_off > INT16_MAX) { /* a frame of more than 32 KiB */
    o.cfa_type = SONDE_UW_CFA_UNSUPPORTED;
    o.cfa_off = 0;
    return o;
  }
  switch (r->cfa_type) {
  case UW_CFA_NONE:
    o.cfa_type = SONDE_UW_CFA_NONE;
    return o;
  case UW_CFA_SIGNAL: /* the registers come from the ucontext, whatever the rules say */
    o.cfa_type = SONDE_UW_CFA_SIGNAL;
    o.cfa_off = 0;
    return o;
  case UW_CFA_PLT:
    o.cfa_type = SONDE_UW_CFA_PLT;
    break;
  case UW_CFA_RSP:
    o.cfa_type = SONDE_UW_CFA_RSP;
    break;
  case UW_CFA_RBP:
    o.cfa_type = SONDE_UW_CFA_RBP;
    break;
  default:
    o.cfa_type = SONDE_UW_CFA_UNSUPPORTED;
    o.cfa_off = 0;
    return o;
  }
  if (r->ra_rule == UW_RA_UNDEFINED)
    o.flags |= SONDE_UW_F_END;
  else if (r->ra_rule != UW_REG_OFFSET || r->ra_off != -8)
    o.cfa_type = SONDE_UW_CFA_UNSUPPORTED;
  if (r->rbp_rule == UW_REG_OFFSET && r->rbp_off % 8 == 0 && r->rbp_off >= INT8_MIN * 8 &&
      r->rbp_off <= INT8_MAX * 8) {
    o.flags |= SONDE_UW_F_RBP_SAVED;
    o.rbp_off8 = (int8_t)(r->rbp_off / 8);
  } else if (r->rbp_rule == UW_REG_OTHER || r->rbp_rule == UW_REG_OFFSET) {
    o.cfa_type = SONDE_UW_CFA_UNSUPPORTED;
  }
  return o;
}

size_t uw_bpf_rows_count(const uw_table *t) {
  size_t n = 0;
  while (n < t->n && t->rows[n].pc - t->rows[0].pc <= UINT32_MAX)
    n++;
  return n;
}

size_t uw_index_plan(const struct sonde_uw_row *rows, size_t n, uw_index *ix) {
  *ix = (uw_index){0};
  if (n <= 2 * SONDE_UW_INDEX_ROWS) return 0; /* bisection is as short */
  uint64_t span = rows[n - 1].pc - rows[0].pc;
  size_t want = n / SONDE_UW_INDEX_ROWS;
  uint32_t shift = 0;
  while (shift < 63 && (span >> shift) + 1 > want)
    shift++;
  ix->shift = shift;
  ix->n = (uint32_t)((span >> shift) + 1);
  return (ix->n + SONDE_UW_INDEX_PER_SLOT - 1) / SONDE_UW_INDEX_PER_SLOT;
}

void uw_index_fill(const struct sonde_uw_row *rows, size_t n, const uw_index *ix,
                   struct sonde_uw_row *slots) {
  size_t nslots = (ix->n + SONDE_UW_INDEX_PER_SLOT - 1) / SONDE_UW_INDEX_PER_SLOT;
  memset(slots, 0, nslots * sizeof(*slots));
  size_t k = 0;
  for (uint32_t j = 0; j < ix->n; j++) {
    uint64_t at = rows[0].pc + ((uint64_t)j << ix->shift);
    while (k + 1 < n && rows[k + 1].pc <= at)
      k++;
    uint32_t v = (uint32_t)k;
    memcpy((char *)slots + (size_t)j * sizeof(v), &v, sizeof(v));
  }
}

typedef struct walk_mem {
  const uint8_t *b;
  size_t len;
  uint64_t addr;
  int whole;
  int cut; /* a read went past a copy that did not hold the whole stack */
} walk_mem;

static bool walk_read(walk_mem *m, uint64_t a, uint64_t *out) {
  if (a < m->addr || a - m->addr > m->len || m->len - (a - m->addr) < 8) {
    if (!m->whole && a >= m->addr + m->len) m->cut = 1;
    return false;
  }
  memcpy(out, m->b + (a - m->addr), 8);
  return true;
}

int uw_walk(const uw_walk_map *maps, size_t nmaps, uint64_t pc, uint64_t sp, uint64_t fp, int exact,
            const uint8_t *stack, size_t len, uint64_t stack_addr, int whole, int unknown_need,
            uint64_t *frames, size_t *n, size_t max) {
  walk_mem mem = {stack, len, stack_addr, whole, 0};
  int via_fp = 0; /* as in BPF: a pc found by a frame-pointer step in no map ends the stack */
  while (*n < max) {
    uint64_t at = exact ? pc : pc - 1;
    const uw_walk_map *m = NULL;
    size_t lo = 0, hi = nmaps;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (maps[mid].start <= at)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo && at < maps[lo - 1].end) m = &maps[lo - 1];
    if (m ? m->need : (unknown_need && !via_fp)) return UW_WALK_NEED;
    if (!m && via_fp && nmaps) return UW_WALK_END;
    via_fp = 0;
    struct sonde_uw_row row = {0};
    if (m && m->n_rows && at >= m->bias && at - m->bias >= m->base) {
      uint64_t va = at - m->bias - m->base;
      if (va > UINT32_MAX) va = UINT32_MAX;
      size_t a = 0, b = m->n_rows;
      while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (m->rows[mid].pc <= va)
          a = mid + 1;
        else
          b = mid;
      }
      if (a) row = m->rows[a - 1];
    }
    exact = 0;
    uint64_t v;
    if (row.cfa_type == SONDE_UW_CFA_RSP || row.cfa_type == SONDE_UW_CFA_RBP ||
        row.cfa_type == SONDE_UW_CFA_PLT) {
      if (row.flags & SONDE_UW_F_END) return UW_WALK_END;
      uint64_t cfa;
      if (row.cfa_type == SONDE_UW_CFA_PLT)
        cfa = sp + 8 + ((pc & 15) >= (uint64_t)(int64_t)row.cfa_off ? 8 : 0);
      else
        cfa = (row.cfa_type == SONDE_UW_CFA_RSP ? sp : fp) + (uint64_t)(int64_t)row.cfa_off;
      if (!walk_read(&mem, cfa - 8, &v)) break;
      if (row.flags & SONDE_UW_F_RBP_SAVED) {
        uint64_t f;
        if (!walk_read(&mem, cfa + (uint64_t)(int64_t)row.rbp_off8 * 8, &f)) break;
        fp = f;
      }
      sp = cfa;
      pc = v;
    } else if (row.cfa_type == SONDE_UW_CFA_SIGNAL) {
      uint64_t r[3];
      if (!walk_read(&mem, sp + 40 + 10 * 8, &r[0]) || !walk_read(&mem, sp + 40 + 15 * 8, &r[1]) ||
          !walk_read(&mem, sp + 40 + 16 * 8, &r[2]))
        break;
      if (*n) frames[*n - 1] = pc; /* the trampoline's frame: no call pushed its address */
      fp = r[0];
      sp = r[1];
      pc = r[2];
      exact = 1;
    } else {
      uint64_t f;
      if (!fp || (fp & 7) || fp < sp) return UW_WALK_END;
      if (!walk_read(&mem, fp, &f) || !walk_read(&mem, fp + 8, &v)) break;
      sp = fp + 16;
      fp = f;
      pc = v;
      via_fp = 1;
    }
    if (!pc) return UW_WALK_END;
    frames[(*n)++] = exact ? pc : pc - 1; /* as in BPF: a return address as ra - 1 */
  }
  if (mem.cut) return UW_WALK_CUT;
  return *n >= max ? UW_WALK_DEPTH : UW_WALK_END;
}

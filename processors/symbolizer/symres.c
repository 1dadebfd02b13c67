/* The symbolizer's resolver (see symres.h).
 *
 * ELF files go through libdwfl, one Dwfl per file: it reads .symtab, .dynsym and MiniDebugInfo
 * (.gnu_debugdata, xz) for symbols; separate debug files are found by find_debuginfo below (build
 * id tree and .gnu_debuglink under the debug dirs), then by libdebuginfod only when configured.
 * Line tables and inlined frames come from libdw (dwarf_getscopes_die), innermost first.
 *
 * Cache: one entry per file (keyed by build id, else by pid and path) holding the Dwfl and a memo
 * of every address already resolved; a second lookup of an address is a hash probe. Entries are
 * evicted least recently used first when their bytes pass the budget. An entry's bytes are the
 * sizes of the files it opened (what libelf may read or map of them) plus its memo.
 *
 * A name is only given when the address is inside a symbol (st_value <= a < st_value + st_size)
 * or a DWARF function's ranges: a nearest-preceding-symbol guess is never returned.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "symres.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* libiberty's demangler; Debian ships libiberty.a without demangle.h. Without a style bit it
 * guesses the style, which includes Rust (legacy and v0) before GNU v3 C++. */
extern char *cplus_demangle(const char *mangled, int options);
#define DMGL_PARAMS (1 << 0)
#define DMGL_ANSI (1 << 1)

#define MAX_FRAMES 64

typedef struct memo_slot {
  uint64_t key;  /* file offset + 1 (0: empty slot) */
  uint32_t n;    /* frames */
  sym_frame *fr; /* one malloc block: frames then strings; NULL when n == 0 */
} memo_slot;

typedef struct perf_sym {
  uint64_t start, end;
  char *name;
} perf_sym;

enum { ENT_ELF = 1, ENT_PERF = 2 };

typedef struct entry {
  struct entry *prev, *next; /* LRU: head is the most recent */
  struct entry *hnext;
  char *key;
  uint64_t hash;
  int kind;
  size_t bytes;
  /* ELF */
  Dwfl *dwfl;
  Dwfl_Module *mod;
  GElf_Addr bias;
  struct load {
    uint64_t off, vaddr, filesz;
  } * loads;
  size_t n_loads;
  memo_slot *memo;
  size_t memo_cap, memo_n;
  /* perf map */
  perf_sym *ps;
  size_t n_ps;
  struct timespec mtime;
  off_t size;
  unsigned gen;
  int pid;
} entry;

typedef struct ksym {
  uint64_t addr;
  const char *name;
  const char *module; /* "[ext4]" or NULL */
} ksym;

#define NBUCKETS 1024

struct symres {
  symres_opts o;
  char **dirs;
  char *debuginfo_path;
  Dwfl_Callbacks cb;
  entry *buckets[NBUCKETS];
  entry *head, *tail;
  size_t bytes;
  symres_stats st;
  unsigned gen;
  /* The entry of the previous symres_elf call and the argument pointers it was asked with: the
   * locations of one mapping come one after another. Only valid within a batch (symres_tick). */
  entry *last;
  const char *last_path;
  const uint8_t *last_bid;
  size_t last_bid_len;
  int last_pid;
  /* kallsyms, loaded once on first use; pinned (counted in bytes, never evicted) */
  int k_loaded;
  ksym *ks;
  size_t n_ks;
  char *k_text;
  size_t k_bytes;
  sym_frame scratch;
};

static uint64_t fnv(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

static int hex_of(const uint8_t *p, size_t n, char *out, size_t outlen);
static int open_checked(const char *path, const uint8_t *bid, size_t bid_len);

/* Opens path as a debug file for a module whose build id is bid (when it has one). */
static int open_debug(const char *path, const uint8_t *bid, int bid_len, char **name) {
  int fd = open_checked(path, bid, bid_len > 0 ? (size_t)bid_len : 0);
  if (fd < 0) return -1;
  if (!(*name = strdup(path))) {
    close(fd);
    return -1;
  }
  return fd;
}

/* libdwfl's find_debuginfo callback. Searched in order: <dir>/.build-id/xx/rest.debug of each
 * debug dir; the .gnu_debuglink name next to the file, in its .debug/, and under each debug dir
 * followed by the file's directory. A candidate must carry the module's build id. Only when
 * debuginfod is configured does libdwfl's standard search run after that, because it also starts a
 * debuginfod client (and curl) for every file without local debug info. */
static int find_debuginfo(Dwfl_Module *mod, void **userdata, const char *modname, Dwarf_Addr base,
                          const char *file_name, const char *debuglink_file,
                          GElf_Word debuglink_crc, char **debuginfo_file_name) {
  symres *r = *userdata;
  if (!r) return -1;
  const unsigned char *bid = NULL;
  GElf_Addr vaddr;
  int bl = dwfl_module_build_id(mod, &bid, &vaddr);
  char path[4200], hx[130];
  int fd = -1;
  if (bl > 1 && bl <= 64) {
    hex_of(bid, (size_t)bl, hx, sizeof hx);
    for (size_t i = 0; fd < 0 && i < r->o.n_debug_dirs; i++) {
      snprintf(path, sizeof path, "%s/.build-id/%.2s/%s.debug", r->dirs[i], hx, hx + 2);
      fd = open_debug(path, bid, bl, debuginfo_file_name);
    }
  }
  if (fd < 0 && debuglink_file && *debuglink_file && !strchr(debuglink_file, '/') && file_name) {
    const char *slash = strrchr(file_name, '/');
    int dlen = slash ? (int)(slash - file_name) : 0;
    snprintf(path, sizeof path, "%.*s/%s", dlen, file_name, debuglink_file);
    if (strcmp(path, file_name)) fd = open_debug(path, bid, bl, debuginfo_file_name);
    if (fd < 0) {
      snprintf(path, sizeof path, "%.*s/.debug/%s", dlen, file_name, debuglink_file);
      fd = open_debug(path, bid, bl, debuginfo_file_name);
    }
    for (size_t i = 0; fd < 0 && i < r->o.n_debug_dirs; i++) {
      snprintf(path, sizeof path, "%s%.*s/%s", r->dirs[i], dlen, file_name, debuglink_file);
      fd = open_debug(path, bid, bl, debuginfo_file_name);
    }
  }
  if (fd >= 0 || !r->o.use_debuginfod) return fd;
  return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file,
                                      debuglink_crc, debuginfo_file_name);
}

int symres_new(const symres_opts *opts, symres **out) {
  elf_version(EV_CURRENT);
  symres *r = calloc(1, sizeof(*r));
  if (!r) return -ENOMEM;
  r->o = *opts;
  r->gen = 1;
  r->o.kallsyms_path = NULL;
  r->o.perf_map_dir = NULL;
  r->o.proc_root = NULL;
  r->o.debug_dirs = NULL;
  r->o.kallsyms_path = xstrdup(opts->kallsyms_path ? opts->kallsyms_path : "/proc/kallsyms");
  r->o.perf_map_dir = xstrdup(opts->perf_map_dir ? opts->perf_map_dir : "/tmp");
  r->o.proc_root = xstrdup(opts->proc_root ? opts->proc_root : "/proc");
  size_t plen = 16;
  if (opts->n_debug_dirs) {
    r->dirs = calloc(opts->n_debug_dirs, sizeof(char *));
    if (!r->dirs) goto fail;
    for (size_t i = 0; i < opts->n_debug_dirs; i++) {
      if (!(r->dirs[i] = strdup(opts->debug_dirs[i]))) goto fail;
      plen += strlen(opts->debug_dirs[i]) + 1;
    }
  }
  r->o.debug_dirs = (const char *const *)r->dirs;
  if (!r->o.kallsyms_path || !r->o.perf_map_dir || !r->o.proc_root) goto fail;
  /* dwfl_standard_find_debuginfo's search path: "" (next to the file), ".debug", then each
   * debug dir (build-id tree and debuglink under the file's directory). */
  r->debuginfo_path = malloc(plen);
  if (!r->debuginfo_path) goto fail;
  strcpy(r->debuginfo_path, ":.debug");
  for (size_t i = 0; i < opts->n_debug_dirs; i++) {
    strcat(r->debuginfo_path, ":");
    strcat(r->debuginfo_path, opts->debug_dirs[i]);
  }
  r->cb.find_elf = dwfl_build_id_find_elf;
  r->cb.find_debuginfo = find_debuginfo;
  r->cb.debuginfo_path = &r->debuginfo_path;
  *out = r;
  return 0;
fail:
  symres_free(r);
  return -ENOMEM;
}

static void entry_free(entry *e) {
  if (!e) return;
  if (e->dwfl) dwfl_end(e->dwfl);
  for (size_t i = 0; i < e->memo_cap; i++)
    free(e->memo[i].fr);
  free(e->memo);
  free(e->loads);
  for (size_t i = 0; i < e->n_ps; i++)
    free(e->ps[i].name);
  free(e->ps);
  free(e->key);
  free(e);
}

static void lru_unlink(symres *r, entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    r->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    r->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_front(symres *r, entry *e) {
  if (r->head == e) return;
  if (e->prev || e->next || r->tail == e) lru_unlink(r, e);
  e->next = r->head;
  if (r->head) r->head->prev = e;
  r->head = e;
  if (!r->tail) r->tail = e;
}

static void entry_remove(symres *r, entry *e) {
  entry **pp = &r->buckets[e->hash % NBUCKETS];
  while (*pp && *pp != e)
    pp = &(*pp)->hnext;
  if (*pp) *pp = e->hnext;
  lru_unlink(r, e);
  r->bytes -= e->bytes;
  r->st.files--;
  if (r->last == e) r->last = NULL;
  entry_free(e);
}

/* Evicts least recently used entries other than keep until the budget holds. */
static void evict(symres *r, entry *keep) {
  entry *e = r->tail;
  while (r->bytes + r->k_bytes > r->o.cache_bytes && e) {
    entry *prev = e->prev;
    if (e != keep) entry_remove(r, e);
    e = prev;
  }
}

void symres_free(symres *r) {
  if (!r) return;
  while (r->head)
    entry_remove(r, r->head);
  free(r->ks);
  free(r->k_text);
  if (r->dirs)
    for (size_t i = 0; i < r->o.n_debug_dirs; i++)
      free(r->dirs[i]);
  free(r->dirs);
  free(r->debuginfo_path);
  free((char *)r->o.kallsyms_path);
  free((char *)r->o.perf_map_dir);
  free((char *)r->o.proc_root);
  free(r);
}

void symres_tick(symres *r) {
  if (++r->gen == 0) r->gen = 1;
  r->last = NULL;
}

void symres_stats_get(const symres *r, symres_stats *s) {
  *s = r->st;
  s->bytes = r->bytes + r->k_bytes;
}

static entry *lookup(symres *r, const char *key, uint64_t h) {
  for (entry *e = r->buckets[h % NBUCKETS]; e; e = e->hnext)
    if (e->hash == h && !strcmp(e->key, key)) return e;
  return NULL;
}

static entry *insert(symres *r, const char *key, uint64_t h, int kind) {
  entry *e = calloc(1, sizeof(*e));
  if (!e) return NULL;
  if (!(e->key = strdup(key))) {
    free(e);
    return NULL;
  }
  e->hash = h;
  e->kind = kind;
  e->bytes = sizeof(*e) + strlen(key) + 1;
  r->bytes += e->bytes;
  e->hnext = r->buckets[h % NBUCKETS];
  r->buckets[h % NBUCKETS] = e;
  r->st.files++;
  lru_front(r, e);
  return e;
}

static void add_bytes(symres *r, entry *e, size_t n) {
  e->bytes += n;
  r->bytes += n;
}

/* ---- frames ---------------------------------------------------------------------------------- */

typedef struct fbuild {
  sym_frame f[MAX_FRAMES];
  char *owned[MAX_FRAMES * 3]; /* malloc'd strings (demangled names) freed after packing */
  size_t n, n_owned;
} fbuild;

static const char *demangled(symres *r, fbuild *b, const char *s) {
  if (!s || !r->o.demangle || b->n_owned >= sizeof(b->owned) / sizeof(b->owned[0])) return s;
  if (!(s[0] == '_' && (s[1] == 'Z' || s[1] == 'R'))) return s;
  char *d = cplus_demangle(s, DMGL_PARAMS | DMGL_ANSI);
  if (!d) return s;
  b->owned[b->n_owned++] = d;
  return d;
}

/* Packs frames and their strings into one block. */
static sym_frame *pack(const fbuild *b, size_t *bytes) {
  size_t sz = b->n * sizeof(sym_frame);
  for (size_t i = 0; i < b->n; i++) {
    const sym_frame *f = &b->f[i];
    sz += (f->name ? strlen(f->name) + 1 : 0) + (f->system ? strlen(f->system) + 1 : 0) +
          (f->file ? strlen(f->file) + 1 : 0);
  }
  sym_frame *out = malloc(sz);
  if (!out) return NULL;
  char *p = (char *)(out + b->n);
  for (size_t i = 0; i < b->n; i++) {
    out[i] = b->f[i];
    const char **fields[] = {&out[i].name, &out[i].system, &out[i].file};
    for (size_t k = 0; k < 3; k++) {
      if (!*fields[k]) continue;
      size_t l = strlen(*fields[k]) + 1;
      memcpy(p, *fields[k], l);
      *fields[k] = p;
      p += l;
    }
  }
  *bytes = sz;
  return out;
}

static void fbuild_done(fbuild *b) {
  for (size_t i = 0; i < b->n_owned; i++)
    free(b->owned[i]);
  b->n_owned = 0;
}

/* ---- ELF ------------------------------------------------------------------------------------- */

static int hex_of(const uint8_t *p, size_t n, char *out, size_t outlen) {
  static const char hx[] = "0123456789abcdef";
  if (n * 2 + 1 > outlen) return -1;
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hx[p[i] >> 4];
    out[2 * i + 1] = hx[p[i] & 15];
  }
  out[2 * n] = 0;
  return 0;
}

static size_t file_size(const char *path) {
  struct stat st;
  return path && stat(path, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size : 0;
}

/* Opens path if it is an ELF file whose build id is bid (when given). Returns an fd or -1. */
static int open_checked(const char *path, const uint8_t *bid, size_t bid_len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
  bool ok = elf && elf_kind(elf) == ELF_K_ELF;
  if (ok && bid_len) {
    const void *p = NULL;
    ssize_t n = dwelf_elf_gnu_build_id(elf, &p);
    ok = n == (ssize_t)bid_len && !memcmp(p, bid, bid_len);
  }
  if (elf) elf_end(elf);
  if (!ok) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reports fd (consumed) as the entry's one module. */
static void elf_load(symres *r, entry *e, int fd, const char *path) {
  e->dwfl = dwfl_begin(&r->cb);
  if (!e->dwfl) {
    close(fd);
    return;
  }
  dwfl_report_begin(e->dwfl);
  e->mod = dwfl_report_elf(e->dwfl, "m", path, fd, 0, false);
  dwfl_report_end(e->dwfl, NULL, NULL);
  if (!e->mod) {
    close(fd);
    return;
  }
  void **ud = NULL;
  dwfl_module_info(e->mod, &ud, NULL, NULL, NULL, NULL, NULL, NULL);
  if (ud) *ud = r; /* for find_debuginfo */
  Elf *elf = dwfl_module_getelf(e->mod, &e->bias);
  size_t nph = 0;
  if (!elf || elf_getphdrnum(elf, &nph) != 0 || nph == 0 || nph > 4096) {
    e->mod = NULL;
    return;
  }
  e->loads = calloc(nph, sizeof(*e->loads));
  if (!e->loads) {
    e->mod = NULL;
    return;
  }
  for (size_t i = 0; i < nph; i++) {
    GElf_Phdr ph;
    if (!gelf_getphdr(elf, (int)i, &ph) || ph.p_type != PT_LOAD) continue;
    e->loads[e->n_loads++] = (struct load){ph.p_offset, ph.p_vaddr, ph.p_filesz};
  }
  add_bytes(r, e, file_size(path) + nph * sizeof(*e->loads));
}

static entry *elf_entry(symres *r, const char *path, int pid, const uint8_t *bid, size_t bid_len) {
  char key[4200];
  if (bid_len && bid_len <= 64) {
    key[0] = 'b';
    hex_of(bid, bid_len, key + 1, sizeof key - 1);
  } else {
    snprintf(key, sizeof key, "p%d:%s", pid, path);
  }
  uint64_t h = fnv(key);
  entry *e = lookup(r, key, h);
  if (e) {
    lru_front(r, e);
    return e;
  }
  if (!(e = insert(r, key, h, ENT_ELF))) return NULL;
  char p[4200];
  int fd = -1;
  if (pid > 0) {
    snprintf(p, sizeof p, "%s/%d/root%s", r->o.proc_root, pid, path);
    fd = open_checked(p, bid, bid_len);
  }
  if (fd < 0) {
    snprintf(p, sizeof p, "%s", path);
    fd = open_checked(p, bid, bid_len);
  }
  /* The file is gone or replaced: a debug file of the same build id has the symbols, DWARF and
   * program headers (its PT_LOAD offsets are the original's). */
  for (size_t i = 0; fd < 0 && bid_len > 1 && bid_len <= 64 && i < r->o.n_debug_dirs; i++) {
    char hx[130];
    hex_of(bid, bid_len, hx, sizeof hx);
    snprintf(p, sizeof p, "%s/.build-id/%.2s/%s.debug", r->dirs[i], hx, hx + 2);
    fd = open_checked(p, bid, bid_len);
  }
  if (fd >= 0) elf_load(r, e, fd, p);
  if (e->mod) {
    const char *mainf = NULL, *debugf = NULL;
    dwfl_module_info(e->mod, NULL, NULL, NULL, NULL, NULL, &mainf, &debugf);
    /* Finding the debug file now so its size is counted. */
    Dwarf_Addr b;
    if (dwfl_module_getdwarf(e->mod, &b)) {
      dwfl_module_info(e->mod, NULL, NULL, NULL, NULL, NULL, &mainf, &debugf);
      if (debugf && (!mainf || strcmp(debugf, mainf))) add_bytes(r, e, file_size(debugf));
    }
  }
  return e;
}

static memo_slot *memo_find(entry *e, uint64_t key) {
  if (!e->memo_cap) return NULL;
  size_t m = e->memo_cap - 1;
  for (size_t i = (key * 0x9E3779B97F4A7C15ull) >> 20 & m;; i = (i + 1) & m) {
    if (e->memo[i].key == key) return &e->memo[i];
    if (!e->memo[i].key) return NULL;
  }
}

static memo_slot *memo_add(symres *r, entry *e, uint64_t key) {
  if ((e->memo_n + 1) * 2 > e->memo_cap) {
    size_t nc = e->memo_cap ? e->memo_cap * 2 : 64;
    memo_slot *nm = calloc(nc, sizeof(*nm));
    if (!nm) return NULL;
    for (size_t j = 0; j < e->memo_cap; j++) {
      if (!e->memo[j].key) continue;
      size_t i = (e->memo[j].key * 0x9E3779B97F4A7C15ull) >> 20 & (nc - 1);
      while (nm[i].key)
        i = (i + 1) & (nc - 1);
      nm[i] = e->memo[j];
    }
    free(e->memo);
    add_bytes(r, e, (nc - e->memo_cap) * sizeof(*nm));
    e->memo = nm;
    e->memo_cap = nc;
  }
  size_t i = (key * 0x9E3779B97F4A7C15ull) >> 20 & (e->memo_cap - 1);
  while (e->memo[i].key)
    i = (i + 1) & (e->memo_cap - 1);
  e->memo[i].key = key;
  e->memo_n++;
  return &e->memo[i];
}

static const char *die_name(Dwarf_Die *d) {
  Dwarf_Attribute a;
  const char *n = NULL;
  if (dwarf_attr_integrate(d, DW_AT_linkage_name, &a) ||
      dwarf_attr_integrate(d, DW_AT_MIPS_linkage_name, &a))
    n = dwarf_formstring(&a);
  return n ? n : dwarf_diename(d);
}

/* Resolves a module address into b (innermost first). */
static void resolve_addr(symres *r, entry *e, Dwarf_Addr addr, fbuild *b) {
  GElf_Off soff = 0;
  GElf_Sym sym;
  const char *sname = dwfl_module_addrinfo(e->mod, addr, &soff, &sym, NULL, NULL, NULL);
  if (sname && !(soff < sym.st_size || (sym.st_size == 0 && soff == 0))) sname = NULL;
  if (sname && !*sname) sname = NULL;

  Dwarf_Addr dbias = 0;
  Dwarf_Die *cu = dwfl_module_addrdie(e->mod, addr, &dbias);
  Dwarf_Die *scopes = NULL, *chain = NULL;
  int ns = cu ? dwarf_getscopes(cu, addr - dbias, &scopes) : 0;
  /* dwarf_getscopes continues an inlined instance with its abstract definition's parents; the
   * concrete chain (inlined_subroutine ... subprogram) is the innermost scope's parents. */
  if (ns > 0) {
    int nc = dwarf_getscopes_die(&scopes[0], &chain);
    free(scopes);
    scopes = nc > 0 ? chain : NULL;
    ns = nc > 0 ? nc : 0;
  } else {
    free(scopes);
    scopes = NULL;
    ns = 0;
  }
  Dwarf_Files *files = NULL;
  size_t nfiles = 0;
  if (ns > 0 && dwarf_getsrcfiles(cu, &files, &nfiles) != 0) files = NULL;
  const char *src = NULL;
  int line = 0, col = 0;
  Dwfl_Line *l = dwfl_module_getsrc(e->mod, addr);
  if (l) src = dwfl_lineinfo(l, NULL, &line, &col, NULL, NULL);

  Dwarf_Die *prev_inl = NULL;
  for (int i = 0; i < ns && b->n < MAX_FRAMES; i++) {
    int tag = dwarf_tag(&scopes[i]);
    if (tag != DW_TAG_subprogram && tag != DW_TAG_inlined_subroutine) continue;
    sym_frame *f = &b->f[b->n];
    memset(f, 0, sizeof(*f));
    const char *raw = die_name(&scopes[i]);
    if (!raw && tag == DW_TAG_subprogram) raw = sname;
    if (!raw) break; /* an unnamed function: stop rather than guess */
    f->system = raw;
    f->name = demangled(r, b, raw);
    if (!prev_inl) {
      f->file = src;
      f->line = line;
      f->column = col;
    } else {
      Dwarf_Attribute a;
      Dwarf_Word cl = 0, cf = 0, cc = 0;
      if (dwarf_attr(prev_inl, DW_AT_call_line, &a)) dwarf_formudata(&a, &cl);
      if (dwarf_attr(prev_inl, DW_AT_call_column, &a)) dwarf_formudata(&a, &cc);
      if (files && dwarf_attr(prev_inl, DW_AT_call_file, &a) && dwarf_formudata(&a, &cf) == 0 &&
          cf < nfiles)
        f->file = dwarf_filesrc(files, cf, NULL, NULL);
      f->line = (int64_t)cl;
      f->column = (int64_t)cc;
    }
    b->n++;
    if (tag == DW_TAG_subprogram) break;
    prev_inl = &scopes[i];
  }
  /* Strings from scopes stay valid with the Dwarf; the copy is made by pack() before free. */
  if (b->n == 0 && sname) {
    b->f[0] = (sym_frame){
        .name = demangled(r, b, sname), .system = sname, .file = src, .line = line, .column = col};
    b->n = 1;
  }
  free(scopes);
}

int symres_elf(symres *r, const char *path, int pid, const uint8_t *build_id, size_t bid_len,
               uint64_t file_offset, const sym_frame **frames, size_t *n) {
  *n = 0;
  *frames = NULL;
  r->st.lookups++;
  if (!path || !*path) return 0;
  entry *e = r->last;
  if (!e || r->last_path != path || r->last_bid != build_id || r->last_bid_len != bid_len ||
      r->last_pid != pid) {
    if (!(e = elf_entry(r, path, pid, build_id, bid_len))) return -ENOMEM;
    r->last = e;
    r->last_path = path;
    r->last_bid = build_id;
    r->last_bid_len = bid_len;
    r->last_pid = pid;
  }
  if (!e->mod) {
    evict(r, e);
    return 0;
  }
  memo_slot *s = memo_find(e, file_offset + 1);
  if (s) {
    r->st.hits++;
    *frames = s->fr;
    *n = s->n;
    return 0;
  }
  fbuild b;
  b.n = b.n_owned = 0;
  for (size_t i = 0; i < e->n_loads; i++) {
    const struct load *ld = &e->loads[i];
    if (file_offset < ld->off || file_offset - ld->off >= ld->filesz) continue;
    resolve_addr(r, e, file_offset - ld->off + ld->vaddr + e->bias, &b);
    break;
  }
  size_t sz = 0;
  sym_frame *fr = b.n ? pack(&b, &sz) : NULL;
  fbuild_done(&b);
  if (b.n && !fr) return -ENOMEM;
  if (!(s = memo_add(r, e, file_offset + 1))) {
    free(fr);
    return -ENOMEM;
  }
  s->fr = fr;
  s->n = (uint32_t)b.n;
  add_bytes(r, e, sz);
  evict(r, e);
  *frames = fr;
  *n = b.n;
  return 0;
}

/* ---- kernel ---------------------------------------------------------------------------------- */

static int ksym_cmp(const void *a, const void *b) {
  const ksym *x = a, *y = b;
  return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static void kallsyms_load(symres *r) {
  r->k_loaded = 1;
  FILE *f = fopen(r->o.kallsyms_path, "re");
  if (!f) return;
  size_t cap = 0, len = 0;
  char *text = NULL, buf[512];
  /* Slurp first: pointers into one block instead of a string per symbol. */
  while (fgets(buf, sizeof buf, f)) {
    size_t l = strlen(buf);
    if (len + l + 1 > cap) {
      size_t nc = cap ? cap * 2 : 1 << 20;
      char *nt = realloc(text, nc);
      if (!nt) goto out;
      text = nt;
      cap = nc;
    }
    memcpy(text + len, buf, l + 1);
    len += l;
  }
  size_t n = 0, kcap = 0;
  ksym *ks = NULL;
  for (char *line = text, *next; line && line < text + len; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    char *end;
    uint64_t a = strtoull(line, &end, 16);
    if (end == line || *end != ' ' || !end[1] || end[2] != ' ') continue;
    char t = end[1];
    if (t != 't' && t != 'T' && t != 'w' && t != 'W') continue;
    char *name = end + 3, *mod = strchr(name, '\t');
    if (mod) {
      *mod++ = 0;
      while (*mod == ' ' || *mod == '\t')
        mod++;
    }
    if (a == 0) continue; /* kptr_restrict: no addresses, no names */
    if (n == kcap) {
      size_t nc = kcap ? kcap * 2 : 65536;
      ksym *nk = realloc(ks, nc * sizeof(*nk));
      if (!nk) {
        free(ks);
        goto out;
      }
      ks = nk;
      kcap = nc;
    }
    ks[n++] = (ksym){a, name, mod && *mod ? mod : NULL};
  }
  qsort(ks, n, sizeof(*ks), ksym_cmp);
  r->ks = ks;
  r->n_ks = n;
  r->k_text = text;
  text = NULL;
  r->k_bytes = cap + kcap * sizeof(*ks);
out:
  free(text);
  fclose(f);
}

int symres_kernel(symres *r, uint64_t addr, const sym_frame **frames, size_t *n) {
  *n = 0;
  r->st.lookups++;
  if (!r->k_loaded) kallsyms_load(r);
  if (r->n_ks < 2 || addr < r->ks[0].addr) return 0;
  size_t lo = 0, hi = r->n_ks;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (r->ks[mid].addr <= addr)
      lo = mid;
    else
      hi = mid;
  }
  /* The last symbol has no known end: no name past it. */
  if (lo + 1 >= r->n_ks) return 0;
  r->st.hits++;
  r->scratch =
      (sym_frame){.name = r->ks[lo].name, .system = r->ks[lo].name, .file = r->ks[lo].module};
  *frames = &r->scratch;
  *n = 1;
  return 0;
}

/* ---- perf maps ---------------------------------------------------------------------------------
 */

static int psym_cmp(const void *a, const void *b) {
  const perf_sym *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

static int perf_read(symres *r, entry *e, const char *path) {
  for (size_t i = 0; i < e->n_ps; i++)
    free(e->ps[i].name);
  free(e->ps);
  e->ps = NULL;
  r->bytes -= e->bytes;
  e->bytes = sizeof(*e) + strlen(e->key) + 1;
  r->bytes += e->bytes;
  e->n_ps = 0;
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  size_t cap = 0;
  char *line = NULL;
  size_t llen = 0;
  int rc = 0;
  while (getline(&line, &llen, f) > 0) {
    char *p = line, *end;
    uint64_t start = strtoull(p, &end, 16);
    if (end == p || *end != ' ') continue;
    p = end + 1;
    uint64_t size = strtoull(p, &end, 16);
    if (end == p || *end != ' ' || size == 0 || start + size < start) continue;
    char *name = end + 1;
    name[strcspn(name, "\n")] = 0;
    if (e->n_ps == cap) {
      size_t nc = cap ? cap * 2 : 64;
      perf_sym *np = realloc(e->ps, nc * sizeof(*np));
      if (!np) {
        rc = -ENOMEM;
        break;
      }
      e->ps = np;
      cap = nc;
    }
    char *nm = strdup(name);
    if (!nm) {
      rc = -ENOMEM;
      break;
    }
    e->ps[e->n_ps++] = (perf_sym){start, start + size, nm};
    add_bytes(r, e, sizeof(perf_sym) + strlen(nm) + 1);
  }
  free(line);
  fclose(f);
  if (e->n_ps) qsort(e->ps, e->n_ps, sizeof(*e->ps), psym_cmp);
  return rc;
}

int symres_perfmap(symres *r, int pid, uint64_t addr, const sym_frame **frames, size_t *n) {
  *n = 0;
  r->st.lookups++;
  if (pid <= 0) return 0;
  char key[64], path[4200];
  snprintf(key, sizeof key, "m%d", pid);
  uint64_t h = fnv(key);
  entry *e = lookup(r, key, h);
  if (!e && !(e = insert(r, key, h, ENT_PERF))) return -ENOMEM;
  lru_front(r, e);
  if (e->gen != r->gen) { /* r->gen starts at 1: a new entry (0) is always read */
    e->gen = r->gen;
    /* The JIT writes the map in the process's /tmp; a pid from another pid namespace only works
     * through the host's /tmp when the runtime shares it. */
    snprintf(path, sizeof path, "%s/%d/root/tmp/perf-%d.map", r->o.proc_root, pid, pid);
    struct stat st;
    if (stat(path, &st) != 0) {
      snprintf(path, sizeof path, "%s/perf-%d.map", r->o.perf_map_dir, pid);
      if (stat(path, &st) != 0) st.st_size = -1;
    }
    if (st.st_size != e->size || st.st_mtim.tv_sec != e->mtime.tv_sec ||
        st.st_mtim.tv_nsec != e->mtime.tv_nsec) {
      e->size = st.st_size;
      e->mtime = st.st_mtim;
      int rc = st.st_size >= 0 ? perf_read(r, e, path) : 0;
      if (rc) return rc;
    }
  }
  size_t lo = 0, hi = e->n_ps;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (e->ps[mid].start <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  evict(r, e);
  if (lo == 0 || addr >= e->ps[lo - 1].end) return 0;
  r->st.hits++;
  r->scratch = (sym_frame){.name = e->ps[lo - 1].name, .system = e->ps[lo - 1].name};
  *frames = &r->scratch;
  *n = 1;
  return 0;
}

/* ---- fuzzing --------------------------------------------------------------------------------- */

int symres_elf_memory(const void *image, size_t len, uint64_t file_offset, char *out,
                      size_t outlen) {
  /* The bytes go through the same path as a file on disk (libdwfl wants an fd). */
  int fd = memfd_create("fuzz-elf", MFD_CLOEXEC);
  if (fd < 0) return -errno;
  if (len && write(fd, image, len) != (ssize_t)len) {
    close(fd);
    return -EIO;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  symres *r = NULL;
  symres_opts o = {.cache_bytes = 1 << 20, .demangle = 1};
  int rc = symres_new(&o, &r);
  if (rc == 0) {
    const sym_frame *f = NULL;
    size_t n = 0;
    rc = symres_elf(r, path, 0, NULL, 0, file_offset, &f, &n);
    if (out && outlen) out[0] = 0;
    for (size_t i = 0; rc == 0 && i < n && out; i++) {
      size_t l = strlen(out);
      snprintf(out + l, outlen - l, "%s%s:%" PRId64, i ? ";" : "", f[i].name ? f[i].name : "?",
               f[i].line);
    }
    /* A second lookup goes through the memo. */
    if (rc == 0) rc = symres_elf(r, path, 0, NULL, 0, file_offset, &f, &n);
    symres_free(r);
  }
  close(fd);
  return rc;
}

/* libFuzzer target for the YAML layer: parse, emit (which must read back as the same tree), expand,
 * merge, --set, and binding against a table that has every option type. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

typedef struct sub_cfg {
  int mode;
  char *name;
  sonde_strlist list;
} sub_cfg;

typedef struct fz_cfg {
  char *s;
  int64_t i;
  bool b;
  double d;
  int64_t dur;
  uint64_t size;
  int e;
  sonde_strlist l;
  sonde_strmap m;
  sub_cfg t;
  sonde_tablelist rows;
  char *secret;
} fz_cfg;

static const char *const modes[] = {"none", "gzip", "zstd", NULL};

static const sonde_option sub_opts[] = {
    {.name = "mode",
     .type = SONDE_OPT_ENUM,
     .offset = offsetof(sub_cfg, mode),
     .enum_values = modes,
     .flags = SONDE_OPT_REQUIRED},
    SONDE_OPT("name", SONDE_OPT_STRING, sub_cfg, name, "x", "n"),
    SONDE_OPT("list", SONDE_OPT_STRLIST, sub_cfg, list, "[a, b]", "l"),
    SONDE_OPT_END,
};

static const sonde_option opts[] = {
    SONDE_OPT("s", SONDE_OPT_STRING, fz_cfg, s, NULL, "string"),
    SONDE_OPT_RANGE("i", SONDE_OPT_INT, fz_cfg, i, "4", -10, 1000, "int"),
    SONDE_OPT("b", SONDE_OPT_BOOL, fz_cfg, b, "true", "bool"),
    SONDE_OPT_RANGE("d", SONDE_OPT_DOUBLE, fz_cfg, d, "0.5", 0, 1, "double"),
    SONDE_OPT_RANGE("dur", SONDE_OPT_DURATION, fz_cfg, dur, "5s", 1e6, 0, "duration"),
    SONDE_OPT("size", SONDE_OPT_BYTES, fz_cfg, size, "64MiB", "size"),
    SONDE_OPT_ENUMV("e", fz_cfg, e, "gzip", modes, "enum"),
    SONDE_OPT("l", SONDE_OPT_STRLIST, fz_cfg, l, NULL, "list"),
    SONDE_OPT("m", SONDE_OPT_STRMAP, fz_cfg, m, "{k: v}", "map"),
    SONDE_OPT_NESTED("t", fz_cfg, t, sub_opts, "table"),
    SONDE_OPT_ROWS("rows", fz_cfg, rows, sub_cfg, sub_opts, "rows"),
    {.name = "secret",
     .type = SONDE_OPT_STRING,
     .offset = offsetof(fz_cfg, secret),
     .flags = SONDE_OPT_SECRET},
    SONDE_OPT_END,
};

static const sonde_option extra_opts[] = {
    SONDE_OPT("timeout", SONDE_OPT_DURATION, fz_cfg, dur, "1s", "shared"),
    SONDE_OPT("i", SONDE_OPT_INT, fz_cfg, i, NULL, "shared"),
    SONDE_OPT_END,
};

static bool same(const sonde__cfg_node *a, const sonde__cfg_node *b) {
  if (a->kind != b->kind || a->n != b->n) return false;
  if (a->kind == SONDE__CFG_SCALAR && strcmp(a->scalar, b->scalar)) return false;
  for (size_t i = 0; i < a->n; i++)
    if ((a->kind == SONDE__CFG_MAP && strcmp(a->keys[i], b->keys[i])) ||
        !same(a->kids[i], b->kids[i]))
      return false;
  return true;
}

/* emit must produce YAML that parses back to the same tree */
static void check_round_trip(const sonde__cfg_node *root) {
  char err[512];
  sonde_buf out = {0};
  if (sonde__cfg_emit(root, &out)) return; /* out of memory */
  sonde__cfg_node *again = NULL;
  int rc =
      sonde__cfg_parse_string("emitted", (const char *)out.data, out.len, &again, err, sizeof err);
  if (rc == SONDE_ENOMEM) {
    sonde_buf_free(&out);
    return;
  }
  if (rc || !same(root, again)) {
    fprintf(stderr, "round trip failed (%s):\n%s\n", rc ? err : "tree differs", (char *)out.data);
    abort();
  }
  sonde__cfg_free(again);
  sonde_buf_free(&out);
}

static void bind_all(const sonde__cfg_node *node) {
  char err[512];
  fz_cfg c = {0}, x = {0};
  sonde__opts_target t[] = {{opts, &c}, {extra_opts, &x}};
  if (!sonde__opts_bind(t, 2, node, "fuzz", err, sizeof err)) {
    sonde_buf out = {0};
    if (!sonde__opts_emit(opts, &c, 2, &out)) {
      /* print-config output binds back (secrets are only replaced) */
      sonde__cfg_node *r = NULL;
      int prc =
          sonde__cfg_parse_string("print", (const char *)out.data, out.len, &r, err, sizeof err);
      if (prc && prc != SONDE_ENOMEM) {
        fprintf(stderr, "print-config does not parse: %s\n%s", err, (char *)out.data);
        abort();
      }
      if (!prc) {
        fz_cfg d = {0};
        sonde__opts_target td = {opts, &d};
        int rc = sonde__opts_bind(&td, 1, r, "print", err, sizeof err);
        if (rc && rc != SONDE_ENOMEM) {
          fprintf(stderr, "print-config does not bind back: %s\n%s", err, (char *)out.data);
          abort();
        }
        if (!rc && (d.i != c.i || d.b != c.b || d.dur != c.dur || d.size != c.size || d.e != c.e ||
                    d.l.n != c.l.n || d.rows.n != c.rows.n || d.d != c.d)) {
          fprintf(stderr, "print-config changed a value:\n%s", (char *)out.data);
          abort();
        }
        sonde__opts_free(opts, &d);
        sonde__cfg_free(r);
      }
    }
    sonde_buf_free(&out);
  }
  sonde__opts_free(opts, &c);
  sonde__opts_free(extra_opts, &x);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setenv("FZ", "value", 1);
  setenv("FZ_NUM", "42", 1);
  setenv("FZ_EMPTY", "", 1);
  setenv("FZ_YAML", "a: [b, c] # \"q\" ${FZ}", 1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 65536) return 0;
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0;

  /* the strict scalar parsers on the raw bytes */
  int64_t i64;
  uint64_t u64;
  double d;
  bool b;
  sonde__parse_duration(text, &i64);
  sonde__parse_bytes(text, &u64);
  sonde__parse_int(text, &i64);
  sonde__parse_double(text, &d);
  sonde__parse_bool(text, &b);
  static const char *const words[] = {"endpoint", "timeout", "sending_queue", "tls", "a"};
  sonde__did_you_mean(text, words, 5);

  char err[512];
  sonde__cfg_node *root = NULL;
  if (sonde__cfg_parse_string("fuzz.yaml", (const char *)data, size, &root, err, sizeof err)) {
    free(text);
    return 0;
  }
  check_round_trip(root);

  /* the first line as a --set assignment, and a second parse merged over the first */
  char *nl = strchr(text, '\n');
  if (nl) *nl = 0;
  sonde__cfg_set(&root, text, err, sizeof err);
  sonde__cfg_node *second = NULL;
  if (!sonde__cfg_parse_string("second.yaml", (const char *)data, size, &second, err, sizeof err))
    sonde__cfg_merge(&root, second, err, sizeof err);

  if (!sonde__cfg_expand(root, err, sizeof err)) {
    check_round_trip(root);
    bind_all(root);
    for (size_t i = 0; root->kind == SONDE__CFG_MAP && i < root->n; i++)
      bind_all(root->kids[i]);
  }
  sonde__cfg_free(root);
  free(text);
  return 0;
}

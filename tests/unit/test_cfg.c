/* The YAML layer: parse (positions, duplicates, anchors, errors), ${env:..} expansion, merge,
 * --set and emit. Option binding is in test_cfg_opts.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"

static char err[1024];

static sonde__cfg_node *parse_ok(const char *name, const char *yaml) {
  sonde__cfg_node *root = NULL;
  err[0] = 0;
  int rc = sonde__cfg_parse_string(name, yaml, strlen(yaml), &root, err, sizeof err);
  if (rc) fail_msg("parse of %s failed: %s", name, err);
  assert_non_null(root);
  return root;
}

/* Returns the error message of a parse that must fail with rc. */
static const char *parse_fails(const char *yaml, int rc_want) {
  sonde__cfg_node *root = NULL;
  err[0] = 0;
  int rc = sonde__cfg_parse_string("t.yaml", yaml, strlen(yaml), &root, err, sizeof err);
  assert_int_equal(rc, rc_want);
  assert_null(root);
  return err;
}

/* Follows a "a/b/0/c" path: map keys and sequence indexes. */
static sonde__cfg_node *at(sonde__cfg_node *n, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *tok = strtok(buf, "/"); tok && n; tok = strtok(NULL, "/")) {
    if (n->kind == SONDE__CFG_SEQ) {
      size_t i = (size_t)atoi(tok);
      n = i < n->n ? n->kids[i] : NULL;
    } else {
      n = sonde__cfg_get(n, tok);
    }
  }
  if (!n) fail_msg("no node at %s", path);
  return n;
}

static const char *sc(sonde__cfg_node *root, const char *path) {
  sonde__cfg_node *n = at(root, path);
  assert_int_equal(n->kind, SONDE__CFG_SCALAR);
  return n->scalar;
}

static bool tree_equal(const sonde__cfg_node *a, const sonde__cfg_node *b) {
  if (a->kind != b->kind || a->n != b->n) return false;
  if (a->kind == SONDE__CFG_SCALAR && strcmp(a->scalar, b->scalar)) return false;
  for (size_t i = 0; i < a->n; i++) {
    if (a->kind == SONDE__CFG_MAP && strcmp(a->keys[i], b->keys[i])) return false;
    if (!tree_equal(a->kids[i], b->kids[i])) return false;
  }
  return true;
}

static char *emit(const sonde__cfg_node *root) {
  sonde_buf b = {0};
  assert_int_equal(sonde__cfg_emit(root, &b), 0);
  return (char *)b.data;
}

/* ---- parse ---------------------------------------------------------------------------------- */

static void test_positions(void **state) {
  (void)state;
  sonde__cfg_node *r = parse_ok("p.yaml", "# comment\n"
                                          "receivers:\n"
                                          "  otlp:\n"
                                          "    endpoint: \"0.0.0.0:4317\"\n"
                                          "    list: [a, 'b']\n");
  assert_int_equal(r->kind, SONDE__CFG_MAP);
  sonde__cfg_node *otlp = at(r, "receivers/otlp");
  assert_int_equal(otlp->key_lines[0], 4);
  assert_int_equal(otlp->key_cols[0], 5);
  sonde__cfg_node *ep = at(r, "receivers/otlp/endpoint");
  assert_string_equal(ep->file, "p.yaml");
  assert_int_equal(ep->line, 4);
  assert_int_equal(ep->col, 15);
  assert_true(ep->quoted);
  assert_string_equal(ep->scalar, "0.0.0.0:4317");
  sonde__cfg_node *b = at(r, "receivers/otlp/list/1");
  assert_int_equal(b->line, 5);
  assert_int_equal(b->col, 15);
  assert_true(b->quoted);
  assert_false(at(r, "receivers/otlp/list/0")->quoted);
  assert_int_equal(sonde__cfg_index(otlp, "list"), 1);
  assert_int_equal(sonde__cfg_index(otlp, "nope"), -1);
  assert_null(sonde__cfg_get(ep, "x"));
  sonde__cfg_free(r);
}

static void test_nulls_and_strings(void **state) {
  (void)state;
  sonde__cfg_node *r = parse_ok("n.yaml", "a:\nb: ~\nc: null\nd: \"null\"\ne: ''\nf: !!str null\n"
                                          "g: 0123\n");
  assert_int_equal(at(r, "a")->kind, SONDE__CFG_NULL);
  assert_int_equal(at(r, "b")->kind, SONDE__CFG_NULL);
  assert_int_equal(at(r, "c")->kind, SONDE__CFG_NULL);
  assert_string_equal(sc(r, "d"), "null");
  assert_string_equal(sc(r, "e"), "");
  assert_string_equal(sc(r, "f"), "null");
  assert_string_equal(sc(r, "g"), "0123");
  sonde__cfg_free(r);
}

static void test_empty_file_is_empty_map(void **state) {
  (void)state;
  const char *docs[] = {"", "# only a comment\n", "---\n", "~\n"};
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    sonde__cfg_node *r = parse_ok("e.yaml", docs[i]);
    assert_int_equal(r->kind, SONDE__CFG_MAP);
    assert_int_equal(r->n, 0);
    sonde__cfg_free(r);
  }
}

static void test_duplicate_key(void **state) {
  (void)state;
  assert_string_equal(parse_fails("a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\n", SONDE_ECONFIG),
                      "t.yaml:5:3: duplicate key \"x\" (first at t.yaml:3:3)");
  /* the same key in different maps is fine */
  sonde__cfg_free(parse_ok("ok.yaml", "a: {x: 1}\nb: {x: 1}\n"));
}

static void test_non_scalar_key(void **state) {
  (void)state;
  assert_string_equal(parse_fails("? [a, b]\n: 1\n", SONDE_ECONFIG),
                      "t.yaml:1:3: a map key must be a scalar, not a list");
  assert_string_equal(parse_fails("{a: 1}: x\n", SONDE_ECONFIG),
                      "t.yaml:1:1: a map key must be a scalar, not a map");
}

static void test_syntax_errors(void **state) {
  (void)state;
  assert_string_equal(parse_fails("a: 1\nb: [1, 2\n", SONDE_ECONFIG),
                      "t.yaml:3:1: did not find expected ',' or ']' (while parsing a flow "
                      "sequence at line 2 column 4)");
  assert_string_equal(parse_fails("a: 1\n b: 2\n", SONDE_ECONFIG),
                      "t.yaml:2:3: mapping values are not allowed in this context");
  assert_string_equal(parse_fails("a: \"x\n", SONDE_ECONFIG),
                      "t.yaml:2:1: found unexpected end of stream (while scanning a quoted "
                      "scalar at line 1 column 4)");
  assert_string_equal(parse_fails("a: 1\nb: \xff\n", SONDE_ECONFIG),
                      "t.yaml:2:4: invalid leading UTF-8 octet");
  assert_string_equal(parse_fails("- a\n- b\n", SONDE_ECONFIG),
                      "t.yaml:1:1: the top level must be a map, not a list");
  assert_string_equal(parse_fails("a: 1\n---\nb: 2\n", SONDE_ECONFIG),
                      "t.yaml:2:1: only one YAML document is allowed");
  assert_string_equal(parse_fails("a: \"x\\0y\"\n", SONDE_ECONFIG),
                      "t.yaml:1:4: a NUL character in a scalar is not supported");
}

static void test_anchors_and_aliases(void **state) {
  (void)state;
  const char *doc = "base: &b\n  endpoint: x:1\n  tls: {insecure: true}\nname: &n hello\n"
                    "copy: *b\nagain: *n\n&k key: v\nk2: *k\n";
  sonde__cfg_node *r = parse_ok("a.yaml", doc);
  sonde__cfg_node *copy = at(r, "copy");
  assert_int_equal(copy->kind, SONDE__CFG_MAP);
  assert_int_equal(copy->line, 5); /* where the alias stands */
  assert_int_equal(copy->col, 7);
  assert_string_equal(sc(r, "copy/endpoint"), "x:1");
  assert_string_equal(sc(r, "copy/tls/insecure"), "true");
  assert_string_equal(sc(r, "again"), "hello");
  assert_string_equal(sc(r, "k2"), "key");
  /* the copy is independent of the original */
  assert_ptr_not_equal(at(r, "copy/tls"), at(r, "base/tls"));
  sonde__cfg_free(r);
}

static void test_alias_errors(void **state) {
  (void)state;
  assert_string_equal(parse_fails("a: *nope\n", SONDE_ECONFIG), "t.yaml:1:4: unknown alias *nope");
  assert_string_equal(parse_fails("a: &x [1, *x]\n", SONDE_ECONFIG),
                      "t.yaml:1:11: alias *x refers to a node that contains it");
  /* billion laughs */
  const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                     "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
  const char *m = parse_fails(bomb, SONDE_ECONFIG);
  assert_non_null(strstr(m, "aliases expand to more than 100000 nodes"));
}

static void test_too_deep(void **state) {
  (void)state;
  char doc[1024];
  size_t k = 0;
  k += (size_t)snprintf(doc, sizeof doc, "a: ");
  for (int i = 0; i < 300; i++)
    doc[k++] = '[';
  doc[k] = 0;
  assert_string_equal(parse_fails(doc, SONDE_ECONFIG),
                      "t.yaml:1:203: nesting deeper than 200 levels");
}

static void test_parse_file(void **state) {
  (void)state;
  char path[] = "/tmp/sonde-test-cfg-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *doc = "exporters:\n  debug:\n    verbosity: detailed\n";
  assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
  close(fd);
  sonde__cfg_node *r = NULL;
  assert_int_equal(sonde__cfg_parse_file(path, &r, err, sizeof err), 0);
  sonde__cfg_node *v = at(r, "exporters/debug/verbosity");
  assert_string_equal(v->file, path);
  assert_int_equal(v->line, 3);
  sonde__cfg_free(r);
  unlink(path);

  assert_int_equal(sonde__cfg_parse_file("/nonexistent/x.yaml", &r, err, sizeof err),
                   SONDE_ENOTFOUND);
  assert_null(r);
  assert_string_equal(err, "/nonexistent/x.yaml: cannot open: No such file or directory");
}

/* ---- expand --------------------------------------------------------------------------------- */

static const char *expand_fails(const char *yaml) {
  sonde__cfg_node *r = parse_ok("x.yaml", yaml);
  int rc = sonde__cfg_expand(r, err, sizeof err);
  sonde__cfg_free(r);
  assert_int_equal(rc, SONDE_ECONFIG);
  return err;
}

static void test_expand(void **state) {
  (void)state;
  setenv("SONDE_T_HOST", "collector.local", 1);
  setenv("SONDE_T_EMPTY", "", 1);
  setenv("SONDE_T_REF", "${SONDE_T_HOST}", 1);
  unsetenv("SONDE_T_UNSET");
  sonde__cfg_node *r = parse_ok("x.yaml", "a: ${env:SONDE_T_HOST}:4317\n"
                                          "b: ${SONDE_T_HOST}\n"
                                          "c: ${env:SONDE_T_UNSET:-fallback}\n"
                                          "d: ${env:SONDE_T_UNSET}\n"
                                          "e: $${env:SONDE_T_HOST} costs $$5 and $x\n"
                                          "f: ${env:SONDE_T_EMPTY:-notused}\n"
                                          "g: ${env:SONDE_T_REF}\n"
                                          "h: \"${SONDE_T_UNSET:-}\"\n"
                                          "i: [\"${env:SONDE_T_HOST}\", 2]\n"
                                          "${env:SONDE_T_HOST}: key\n"
                                          "j: 8080\n");
  assert_int_equal(sonde__cfg_expand(r, err, sizeof err), 0);
  assert_string_equal(sc(r, "a"), "collector.local:4317");
  assert_string_equal(sc(r, "b"), "collector.local");
  assert_string_equal(sc(r, "c"), "fallback");
  assert_string_equal(sc(r, "d"), "");
  assert_false(at(r, "d")->quoted);
  assert_string_equal(sc(r, "e"), "${env:SONDE_T_HOST} costs $5 and $x");
  assert_string_equal(sc(r, "f"), "");                /* set but empty: no default, as otelcol */
  assert_string_equal(sc(r, "g"), "${SONDE_T_HOST}"); /* not expanded twice */
  assert_string_equal(sc(r, "h"), "");
  assert_true(at(r, "h")->quoted);
  assert_string_equal(sc(r, "i/0"), "collector.local");
  assert_string_equal(sc(r, "collector.local"), "key");
  assert_string_equal(sc(r, "j"), "8080");
  sonde__cfg_free(r);
}

static void test_expand_errors(void **state) {
  (void)state;
  assert_string_equal(expand_fails("a:\n  b: x ${env:HOME\n"),
                      "x.yaml:2:8: unterminated \"${env:HOME\"");
  assert_string_equal(expand_fails("a: ${env:1BAD}\n"),
                      "x.yaml:1:4: invalid environment variable name in \"${env:1BAD}\"");
  assert_string_equal(expand_fails("a: \"ok ${B-AD}\"\n"),
                      "x.yaml:1:8: invalid environment variable name in \"${B-AD}\"");
  assert_string_equal(expand_fails("a: ${}\n"),
                      "x.yaml:1:4: invalid environment variable name in \"${}\"");
  assert_string_equal(expand_fails("a: ${file:/etc/token}\n"),
                      "x.yaml:1:4: unsupported config provider in \"${file:/etc/token}\"");
  assert_string_equal(expand_fails("k${x: 1\n"), "x.yaml:1:2: unterminated \"${x\"");
  setenv("SONDE_T_DUP", "a", 1);
  assert_string_equal(expand_fails("a: 1\n${SONDE_T_DUP}: 2\n"),
                      "x.yaml:2:1: duplicate key \"a\" after expansion (first at x.yaml:1:1)");
}

/* ---- merge and --set ------------------------------------------------------------------------ */

static void test_merge(void **state) {
  (void)state;
  sonde__cfg_node *base = parse_ok("base.yaml", "exporters:\n"
                                                "  otlp:\n"
                                                "    endpoint: a:1\n"
                                                "    headers: {x: 1}\n"
                                                "    list: [1, 2, 3]\n"
                                                "service: {pipelines: {}}\n");
  sonde__cfg_node *over = parse_ok("over.yaml", "exporters:\n"
                                                "  otlp:\n"
                                                "    endpoint: b:2\n"
                                                "    headers: {y: 2}\n"
                                                "    list: [9]\n"
                                                "  debug:\n"
                                                "extra: 1\n");
  sonde__cfg_node *third = parse_ok("third.yaml", "exporters: {otlp: {endpoint: c:3}}\n");
  assert_int_equal(sonde__cfg_merge(&base, over, err, sizeof err), 0);
  assert_int_equal(sonde__cfg_merge(&base, third, err, sizeof err), 0);
  assert_int_equal(sonde__cfg_merge(&base, NULL, err, sizeof err), 0);
  sonde__cfg_node *ep = at(base, "exporters/otlp/endpoint");
  assert_string_equal(ep->scalar, "c:3");
  assert_string_equal(ep->file, "third.yaml");
  assert_string_equal(sc(base, "exporters/otlp/headers/x"), "1");
  assert_string_equal(sc(base, "exporters/otlp/headers/y"), "2");
  sonde__cfg_node *list = at(base, "exporters/otlp/list");
  assert_int_equal(list->n, 1);
  assert_string_equal(list->kids[0]->file, "over.yaml");
  assert_int_equal(at(base, "exporters/debug")->kind, SONDE__CFG_NULL);
  assert_string_equal(base->keys[2], "extra"); /* new keys go last */
  char *out = emit(base);
  assert_string_equal(out, "exporters:\n"
                           "  otlp:\n"
                           "    endpoint: c:3\n"
                           "    headers:\n"
                           "      x: 1\n"
                           "      y: 2\n"
                           "    list:\n"
                           "      - 9\n"
                           "  debug:\n"
                           "service:\n"
                           "  pipelines: {}\n"
                           "extra: 1\n");
  free(out);
  sonde__cfg_free(base);

  sonde__cfg_node *none = NULL;
  assert_int_equal(sonde__cfg_merge(&none, parse_ok("o.yaml", "a: 1\n"), err, sizeof err), 0);
  assert_string_equal(sc(none, "a"), "1");
  sonde__cfg_free(none);
}

static void test_set(void **state) {
  (void)state;
  sonde__cfg_node *r = parse_ok("c.yaml", "exporters:\n  otlp/x.y:\n    endpoint: a\n");
  assert_int_equal(sonde__cfg_set(&r, "exporters::otlp/x.y::endpoint=host:4317", err, sizeof err),
                   0);
  assert_int_equal(sonde__cfg_set(&r, "processors.batch.timeout=5s", err, sizeof err), 0);
  assert_int_equal(
      sonde__cfg_set(&r, "service::pipelines::traces::receivers=[otlp, zipkin]", err, sizeof err),
      0);
  assert_int_equal(sonde__cfg_set(&r, "a.b={c: 1}", err, sizeof err), 0);
  assert_int_equal(sonde__cfg_set(&r, "a.b.d=", err, sizeof err), 0);
  sonde__cfg_node *ep =
      sonde__cfg_get(sonde__cfg_get(sonde__cfg_get(r, "exporters"), "otlp/x.y"), "endpoint");
  assert_non_null(ep);
  assert_string_equal(ep->scalar, "host:4317");
  assert_string_equal(ep->file, "--set");
  assert_int_equal(ep->line, 1);
  assert_int_equal(ep->col, 31);
  sonde__cfg_node *t = at(r, "processors/batch/timeout");
  assert_string_equal(t->scalar, "5s");
  assert_int_equal(t->col, 26);
  sonde__cfg_node *rcv = at(r, "service/pipelines/traces/receivers");
  assert_int_equal(rcv->kind, SONDE__CFG_SEQ);
  assert_int_equal(rcv->n, 2);
  assert_string_equal(rcv->kids[1]->scalar, "zipkin");
  assert_string_equal(sc(r, "a/b/c"), "1");
  assert_int_equal(at(r, "a/b/d")->kind, SONDE__CFG_NULL);
  sonde__cfg_free(r);

  sonde__cfg_node *e = NULL;
  assert_int_equal(sonde__cfg_set(&e, "x=1", err, sizeof err), 0);
  assert_string_equal(sc(e, "x"), "1");
  assert_int_equal(sonde__cfg_set(&e, "nokey", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "--set:1:1: expected key=value, got \"nokey\"");
  assert_int_equal(sonde__cfg_set(&e, "a..b=1", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "--set:1:3: empty key segment in \"a..b\"");
  assert_int_equal(sonde__cfg_set(&e, "a::b::=1", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "--set:1:7: empty key segment in \"a::b::\"");
  assert_int_equal(sonde__cfg_set(&e, "a.b=[1, 2", err, sizeof err), SONDE_ECONFIG);
  assert_string_equal(err, "--set:1:10: did not find expected ',' or ']' (while parsing a flow "
                           "sequence at line 1 column 5)");
  assert_string_equal(sc(e, "x"), "1"); /* failed --set changed nothing */
  assert_int_equal(e->n, 1);
  sonde__cfg_free(e);
}

/* ---- emit ----------------------------------------------------------------------------------- */

static void round_trip(const char *yaml) {
  sonde__cfg_node *a = parse_ok("rt.yaml", yaml);
  char *out = emit(a);
  sonde__cfg_node *b = NULL;
  int rc = sonde__cfg_parse_string("emitted", out, strlen(out), &b, err, sizeof err);
  if (rc) fail_msg("re-parse failed: %s\n---\n%s", err, out);
  if (!tree_equal(a, b)) fail_msg("round trip changed the tree:\n---\n%s---\n%s", yaml, out);
  char *again = emit(b);
  assert_string_equal(out, again); /* emit is a fixed point */
  free(again);
  free(out);
  sonde__cfg_free(a);
  sonde__cfg_free(b);
}

static void test_emit_round_trip(void **state) {
  (void)state;
  round_trip("a: 1\n");
  round_trip("receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n");
  round_trip("s:\n  - a\n  - {x: 1, y: [1, 2]}\n  - []\n  - {}\n  - ~\n  - [[a], [b, c]]\n"
             "  - - - deep\n");
  round_trip(
      "q:\n  - \"\"\n  - \"null\"\n  - \"~\"\n  - \"a: b\"\n  - \"#x\"\n  - \"x #y\"\n"
      "  - \"- x\"\n  - \" lead\"\n  - \"trail \"\n  - \"line\\nbreak\"\n  - \"tab\\there\"\n"
      "  - \"quote\\\"s\"\n  - 'single ''q'''\n  - \"back\\\\slash\"\n  - \"...\"\n"
      "  - \"---\"\n  - \"[x]\"\n  - \"{x}\"\n  - \"*a\"\n  - \"&a\"\n  - \"!t\"\n"
      "  - \"%x\"\n  - \"@x\"\n  - \"`x\"\n  - \"|\"\n  - \">\"\n  - \"?\"\n  - \"? x\"\n"
      "  - \":\"\n  - \"x:\"\n  - \"-\"\n  - \"-1\"\n  - \",x\"\n  - \"\\x01\\x7f\"\n"
      "  - \"caf\\u00e9 \\u2028 \\x85 \\ufeff\"\n  - \"true\"\n  - \"0123\"\n  - é\n");
  round_trip("\"key with: colon\": 1\n\"\": empty key\n\"null\": x\n\"...\": y\n\"- k\": z\n");
  round_trip("m:\n  empty_map: {}\n  empty_seq: []\n  nil:\n  multi: |\n    line1\n    line2\n"
             "  folded: >\n    a\n    b\n");
  round_trip("a: &x {b: 1}\nc: *x\n");

  /* a key past libyaml's 1024-character limit for simple keys */
  char doc[3000];
  size_t k = 0;
  doc[k++] = '?';
  doc[k++] = ' ';
  doc[k++] = '"';
  for (int i = 0; i < 1500; i++)
    doc[k++] = (char)('a' + i % 26);
  memcpy(doc + k, "\"\n: {x: [1]}\n", 14);
  round_trip(doc);

  sonde__cfg_node *r = parse_ok("e.yaml", "");
  char *out = emit(r);
  assert_string_equal(out, "{}\n");
  free(out);
  sonde__cfg_free(r);

  r = parse_ok("e.yaml", "b: 'quoted'\na: [x, {k: v, l: 1}]\n");
  out = emit(r);
  assert_string_equal(out, "b: \"quoted\"\na:\n  - x\n  - k: v\n    l: 1\n");
  free(out);
  sonde__cfg_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_positions),
      cmocka_unit_test(test_nulls_and_strings),
      cmocka_unit_test(test_empty_file_is_empty_map),
      cmocka_unit_test(test_duplicate_key),
      cmocka_unit_test(test_non_scalar_key),
      cmocka_unit_test(test_syntax_errors),
      cmocka_unit_test(test_anchors_and_aliases),
      cmocka_unit_test(test_alias_errors),
      cmocka_unit_test(test_too_deep),
      cmocka_unit_test(test_parse_file),
      cmocka_unit_test(test_expand),
      cmocka_unit_test(test_expand_errors),
      cmocka_unit_test(test_merge),
      cmocka_unit_test(test_set),
      cmocka_unit_test(test_emit_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

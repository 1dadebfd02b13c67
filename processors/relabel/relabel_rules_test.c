/* The relabel rule engine against a table of cases: every action, and the edge cases of
 * Prometheus's documentation and model/relabel/relabel_test.go (empty source values, unmatched
 * regex, invalid target names after expansion, defaults, $$ and ${name} templates, labelmap's
 * visiting order), plus hashmod values computed independently (see test_hashmod). */
/* The case table leaves fields it does not need zeroed. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relabel_rules.h"

/* A rule written compactly: src is a ','-separated list ("" none); NULL fields take defaults. */
typedef struct rule {
  const char *action, *src, *sep, *regex, *target, *repl;
  int64_t modulus;
} rule;

typedef struct tcase {
  const char *name;
  const char *in;  /* "a=1,b=2" */
  rule rules[4];   /* action NULL ends */
  const char *out; /* expected labels "a=1,b=2" (sorted), or NULL: dropped */
  rl_names names;
} tcase;

static void split_into(const char *s, char sep, char ***v, size_t *n) {
  *v = NULL;
  *n = 0;
  if (!s || !*s) return;
  char *dup = strdup(s), *save = NULL;
  assert_non_null(dup);
  char d[2] = {sep, 0};
  *v = calloc(strlen(s) + 1, sizeof(char *));
  for (char *t = strtok_r(dup, d, &save); t; t = strtok_r(NULL, d, &save))
    (*v)[(*n)++] = strdup(t);
  free(dup);
}

static int action_of(const char *a) {
  for (int i = 0; rl_action_names[i]; i++)
    if (!strcmp(rl_action_names[i], a)) return i;
  fail_msg("unknown action %s", a);
  return -1;
}

static rl_rule_cfg to_cfg(const rule *r) {
  rl_rule_cfg c = {0};
  split_into(r->src, ',', &c.source_labels.v, &c.source_labels.n);
  c.separator = (char *)(r->sep ? r->sep : RL_DEFAULT_SEPARATOR);
  c.regex = (char *)(r->regex ? r->regex : RL_DEFAULT_REGEX);
  c.target_label = (char *)r->target;
  c.replacement = (char *)(r->repl ? r->repl : RL_DEFAULT_REPLACEMENT);
  c.modulus = r->modulus;
  c.action = action_of(r->action ? r->action : "replace");
  return c;
}

static void free_cfg(rl_rule_cfg *c) {
  for (size_t i = 0; i < c->source_labels.n; i++)
    free(c->source_labels.v[i]);
  free(c->source_labels.v);
}

static char *render(const rl_labels *ls) {
  size_t len = 1;
  for (size_t i = 0; i < ls->n; i++)
    len += strlen(ls->v[i].name) + strlen(ls->v[i].value) + 2;
  char *s = calloc(1, len);
  for (size_t i = 0; i < ls->n; i++) {
    if (i) strcat(s, ",");
    strcat(s, ls->v[i].name);
    strcat(s, "=");
    strcat(s, ls->v[i].value);
  }
  return s;
}

/* Runs one case; returns the rendered result or NULL when dropped. */
static char *run(const tcase *t) {
  rl_rule_cfg cfgs[4];
  size_t n = 0;
  for (; n < 4 && (t->rules[n].action || t->rules[n].target || t->rules[n].src); n++)
    cfgs[n] = to_cfg(&t->rules[n]);
  rl_rules *r = NULL;
  char err[256];
  int rc = rl_compile(cfgs, n, t->names, &r, err, sizeof err);
  if (rc) fail_msg("%s: compile: %s", t->name, err);
  rl_labels ls = {0};
  char **kv;
  size_t nkv;
  split_into(t->in, ',', &kv, &nkv);
  for (size_t i = 0; i < nkv; i++) {
    char *eq = strchr(kv[i], '=');
    *eq = 0;
    assert_int_equal(rl_labels_set(&ls, kv[i], eq + 1), 0);
    free(kv[i]);
  }
  free(kv);
  bool keep;
  assert_int_equal(rl_apply(r, &ls, &keep), 0);
  char *out = keep ? render(&ls) : NULL;
  rl_labels_free(&ls);
  rl_free(r);
  for (size_t i = 0; i < n; i++)
    free_cfg(&cfgs[i]);
  return out;
}

#define R(...)                                                                                     \
  { __VA_ARGS__ }

static const tcase cases[] = {
    /* ---- replace */
    {"replace default regex copies the value",
     "a=foo",
     {R("replace", "a", .target = "b")},
     "a=foo,b=foo"},
    {"replace with groups and a literal",
     "a=foo,b=bar",
     {R("replace", "a,b", .regex = "f(.*);(.*)r", .target = "c", .repl = "ch${1}-ch${2}")},
     "a=foo,b=bar,c=choo-chba"},
    {"replace: unmatched regex changes nothing",
     "a=foo",
     {R("replace", "a", .regex = "bar", .target = "b", .repl = "x")},
     "a=foo"},
    {"replace: the regex is anchored at both ends",
     "a=foobar",
     {R("replace", "a", .regex = "foo", .target = "b", .repl = "x")},
     "a=foobar"},
    {"replace: anchoring wraps alternations",
     "a=xfoo",
     {R("replace", "a", .regex = "x|xfoo", .target = "b", .repl = "m")},
     "a=xfoo,b=m"},
    {"replace: missing source label reads as empty and (.*) matches it",
     "a=foo",
     {R("replace", "missing", .target = "b", .repl = "set")},
     "a=foo,b=set"},
    {"replace: empty value, default regex and $1: target deleted",
     "a=foo,b=old",
     {R("replace", "missing", .target = "b")},
     "a=foo"},
    {"replace: empty joined values still get the separator",
     "a=foo",
     {R("replace", "x,y", .regex = ";", .target = "b", .repl = "two-empty")},
     "a=foo,b=two-empty"},
    {"replace: empty result deletes the target",
     "a=foo,b=bar",
     {R("replace", "a", .regex = "foo", .target = "b", .repl = "")},
     "a=foo"},
    {"replace: $1 of a group that did not take part is empty -> delete",
     "a=foo,b=bar",
     {R("replace", "a", .regex = "(x)?foo", .target = "b", .repl = "$1")},
     "a=foo"},
    {"replace: target from a group",
     "a=some-name-value",
     {R("replace", "a", .regex = "some-([^-]+)-([^,]+)", .target = "${1}", .repl = "${2}")},
     "a=some-name-value,name=value"},
    {"replace: invalid target after expansion changes nothing",
     "a=some-2name-value",
     {R("replace", "a", .regex = "some-([^-]+)-([^,]+)", .target = "${1}", .repl = "${2}")},
     "a=some-2name-value"},
    {"replace: target expanding to empty is invalid",
     "a=foo",
     {R("replace", "a", .regex = "(x)?foo", .target = "${1}", .repl = "v")},
     "a=foo"},
    {"replace: $1x is group '1x' (empty), ${1}x is group 1 then x",
     "a=foo",
     {R("replace", "a", .regex = "(f)oo", .target = "b", .repl = "[$1x][${1}x]")},
     "a=foo,b=[][fx]"},
    {"replace: $$ is a literal $, a bare $ stays",
     "a=foo",
     {R("replace", "a", .regex = "(f)oo", .target = "b", .repl = "$$1 $ ${1")},
     "a=foo,b=$1 $ ${1"},
    {"replace: named groups",
     "a=key=val",
     {R("replace", "a", .regex = "(?P<k>[a-z]+)=(?P<v>.*)", .target = "${k}", .repl = "$v")},
     "a=key=val,key=val"},
    {"replace: custom separator",
     "a=1,b=2",
     {R("replace", "a,b", .sep = "|", .regex = "1\\|2", .target = "c", .repl = "ok")},
     "a=1,b=2,c=ok"},
    {"replace: $ matches only at the very end (RE2), not before a newline",
     "a=foo",
     {R("replace", "a", .regex = "foo$", .target = "b", .repl = "y")},
     "a=foo,b=y"},
    {"replace: utf8 names allow dots in targets",
     "a=foo",
     {R("replace", "a", .target = "service.name")},
     "a=foo,service.name=foo",
     RL_NAMES_UTF8},
    {"replace: legacy names refuse a dotted expansion",
     "a=x.y",
     {R("replace", "a", .regex = "(.*)", .target = "$1", .repl = "v")},
     "a=x.y"},
    /* ---- keep / drop */
    {"keep: match keeps", "a=foo", {R("keep", "a", .regex = "f.*")}, "a=foo"},
    {"keep: no match drops", "a=boo", {R("keep", "a", .regex = "f.*")}, NULL},
    {"keep: missing label is empty; (.*) keeps", "a=boo", {R("keep", "zzz")}, "a=boo"},
    {"keep: missing label does not match .+", "a=boo", {R("keep", "zzz", .regex = ".+")}, NULL},
    {"drop: match drops", "a=foo", {R("drop", "a", .regex = "f.*")}, NULL},
    {"drop: no match keeps", "a=boo", {R("drop", "a", .regex = "f.*")}, "a=boo"},
    {"drop: anchored, a substring match is no match",
     "a=xfoox",
     {R("drop", "a", .regex = "foo")},
     "a=xfoox"},
    {"drop stops the rules that follow",
     "a=foo",
     {R("drop", "a"), R("replace", "a", .target = "b")},
     NULL},
    /* ---- keepequal / dropequal */
    {"keepequal: equal keeps", "a=1,b=1", {R("keepequal", "a", .target = "b")}, "a=1,b=1"},
    {"keepequal: different drops", "a=1,b=2", {R("keepequal", "a", .target = "b")}, NULL},
    {"dropequal: equal drops", "a=1,b=1", {R("dropequal", "a", .target = "b")}, NULL},
    {"dropequal: both missing are equal (empty)",
     "a=1",
     {R("dropequal", "x", .target = "y")},
     NULL},
    {"dropequal: different keeps", "a=1,b=2", {R("dropequal", "a", .target = "b")}, "a=1,b=2"},
    /* ---- hashmod: see test_hashmod for the derivation of 7 and 750 */
    {"hashmod of one value",
     "app=checkout",
     {R("hashmod", "app", .target = "shard", .modulus = 10)},
     "app=checkout,shard=7"},
    {"hashmod of joined values",
     "a=foo,b=bar",
     {R("hashmod", "a,b", .target = "h", .modulus = 1000)},
     "a=foo,b=bar,h=750"},
    {"hashmod then keep one shard",
     "app=checkout",
     {R("hashmod", "app", .target = "__tmp", .modulus = 10), R("keep", "__tmp", .regex = "7")},
     "__tmp=7,app=checkout"},
    /* ---- labelmap */
    {"labelmap copies matching names",
     "__meta_kubernetes_pod_label_app=checkout,x=1",
     {R("labelmap", .regex = "__meta_kubernetes_pod_label_(.+)")},
     "__meta_kubernetes_pod_label_app=checkout,app=checkout,x=1"},
    {"labelmap with a replacement template",
     "foo=bar,foz=baz",
     {R("labelmap", .regex = "(f)(o.)", .repl = "${1}-${2}x")},
     "f-oox=bar,f-ozx=baz,foo=bar,foz=baz",
     RL_NAMES_UTF8},
    {"labelmap: the last label visited wins (name order for starting labels)",
     "a_x=1,b_x=2",
     {R("labelmap", .regex = "[ab]_(x)", .repl = "$1")},
     "a_x=1,b_x=2,x=2"},
    {"labelmap: labels set by rules are visited after, in the order set",
     "a_x=1,b_x=2",
     {R("replace", "b_x", .target = "c_x", .repl = "3"), R("replace", "a_x", .target = "b_x"),
      R("labelmap", .regex = "[abc]_(x)", .repl = "$1")},
     "a_x=1,b_x=1,c_x=3,x=1"},
    /* ---- labeldrop / labelkeep */
    {"labeldrop drops matching names", "a=1,ab=2,b=3", {R("labeldrop", .regex = "a.*")}, "b=3"},
    {"labeldrop is anchored", "a=1,ab=2,b=3", {R("labeldrop", .regex = "a")}, "ab=2,b=3"},
    {"labelkeep keeps matching names",
     "a=1,ab=2,b=3",
     {R("labelkeep", .regex = "a.*")},
     "a=1,ab=2"},
    {"labelkeep of nothing leaves nothing", "a=1", {R("labelkeep", .regex = "zz")}, ""},
    /* ---- lowercase / uppercase */
    {"lowercase", "a=FooBar", {R("lowercase", "a", .target = "b")}, "a=FooBar,b=foobar"},
    {"uppercase of joined values",
     "a=foo,b=Bar",
     {R("uppercase", "a,b", .target = "c")},
     "a=foo,b=Bar,c=FOO;BAR"},
    {"lowercase of empty deletes", "a=foo,b=x", {R("lowercase", "zz", .target = "b")}, "a=foo"},
    /* ---- the Parca rule */
    {"Parca: pod label app becomes service_name",
     "__meta_kubernetes_pod_label_app=checkout,__meta_kubernetes_namespace=shop",
     {R("replace", "__meta_kubernetes_pod_label_app", .target = "service_name")},
     "__meta_kubernetes_namespace=shop,__meta_kubernetes_pod_label_app=checkout,service_name="
     "checkout"},
};

static void test_table(void **state) {
  (void)state;
  int failures = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = run(&cases[i]);
    const char *want = cases[i].out;
    if ((got == NULL) != (want == NULL) || (got && strcmp(got, want))) {
      print_error("case \"%s\": got %s, want %s\n", cases[i].name, got ? got : "(dropped)",
                  want ? want : "(dropped)");
      failures++;
    }
    free(got);
  }
  assert_int_equal(failures, 0);
}

/* hashmod = (last 8 bytes of md5(value), big-endian) % modulus. Derived with Python's hashlib,
 * independently of this code:
 *   md5("checkout")      = 177627f91af678a9 b03e993f1a91917f; 0xb03e993f1a91917f =
 *                          12699756495539114367; % 10 = 7
 *   md5("foo;bar")       = 2d00e96b8b7d9e32 ddadc4ed9df31f3e; 0xddadc4ed9df31f3e =
 *                          15973639978189266750; % 1000 = 750
 *   md5("")              = d41d8cd98f00b204 e9800998ecf8427e; = 16825458760271544958; % 10 = 8
 *   md5("10.0.0.1:9100") = 1eac7f871dc4b32a 4cfeac4083628b3d; = 5548061184049187645; % 16 = 13
 * (python3 -c 'import hashlib; h=hashlib.md5(b"checkout").digest();
 *  print(int.from_bytes(h[8:], "big") % 10)') */
static void test_hashmod(void **state) {
  (void)state;
  assert_int_equal(rl_hashmod("checkout", 10), 7);
  assert_int_equal(rl_hashmod("foo;bar", 1000), 750);
  assert_int_equal(rl_hashmod("", 10), 8);
  assert_int_equal(rl_hashmod("10.0.0.1:9100", 16), 13);
  assert_true(rl_hashmod("checkout", UINT64_MAX) == 12699756495539114367ull);
}

/* Config errors Prometheus's Validate gives, and regexes that do not compile. */
static void test_validate(void **state) {
  (void)state;
  static const struct {
    rule r;
    const char *msg;
  } bad[] = {
      {R("hashmod", "a", .target = "h"), "requires non-zero modulus"},
      {R("replace", "a"), "requires 'target_label'"},
      {R("replace", "a", .target = "1abc"), "invalid 'target_label'"},
      {R("replace", "a", .target = "a.b"), "invalid 'target_label'"},
      {R("replace", "a", .target = "$1.x"), "invalid 'target_label'"},
      {R("lowercase", "a", .target = "b", .repl = "x"), "'replacement' can not be set"},
      {R("keepequal", "a", .target = "b", .regex = "x"), "requires only 'source_labels'"},
      {R("labeldrop", "a", .regex = "x"), "requires only 'regex'"},
      {R("labelmap", .repl = "a-b"), "invalid 'replacement'"},
      {R("keep", "a", .regex = "(unclosed"), "invalid regex"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    rl_rule_cfg c = to_cfg(&bad[i].r);
    rl_rules *r = NULL;
    char err[256] = "";
    int rc = rl_compile(&c, 1, RL_NAMES_LEGACY, &r, err, sizeof err);
    free_cfg(&c);
    if (rc != SONDE_ECONFIG || !strstr(err, bad[i].msg))
      fail_msg("case %zu: rc %d, err \"%s\", want \"%s\"", i, rc, err, bad[i].msg);
    assert_true(strncmp(err, "relabel_configs[0]: ", 20) == 0);
  }
  /* Valid templates of the replace target. */
  rule ok = R("replace", "a", .target = "x_${1}y$2");
  rl_rule_cfg c = to_cfg(&ok);
  rl_rules *r = NULL;
  char err[256];
  assert_int_equal(rl_compile(&c, 1, RL_NAMES_LEGACY, &r, err, sizeof err), 0);
  rl_free(r);
  free_cfg(&c);
}

static void test_drop_internal(void **state) {
  (void)state;
  rl_labels ls = {0};
  assert_int_equal(rl_labels_set(&ls, "__meta_x", "1"), 0);
  assert_int_equal(rl_labels_set(&ls, "_a", "2"), 0);
  assert_int_equal(rl_labels_set(&ls, "b", "3"), 0);
  assert_int_equal(rl_labels_set(&ls, "__", "4"), 0);
  rl_drop_internal(&ls);
  char *s = render(&ls);
  assert_string_equal(s, "_a=2,b=3");
  free(s);
  rl_labels_free(&ls);
}

/* ---- allocation failures: every malloc/calloc/realloc/strdup of relabel_rules.c fails in turn
 * (linked with --wrap); rl_apply must report SONDE_ENOMEM and leak nothing (ASan builds). */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
static long alloc_count, fail_at = -1;
static bool fail_now(void) {
  return fail_at >= 0 && alloc_count++ == fail_at;
}
void *__wrap_malloc(size_t n) {
  return fail_now() ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
  return fail_now() ? NULL : __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
  return fail_now() ? NULL : __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) {
  return fail_now() ? NULL : __real_strdup(s);
}

static void test_alloc_failures(void **state) {
  (void)state;
  rule rs[] = {R("replace", "a,b", .regex = "(.*);(.*)", .target = "${1}_x", .repl = "$2-$1"),
               R("labelmap", .regex = "(.)_x", .repl = "m_$1"),
               R("hashmod", "a", .target = "h", .modulus = 10), R("labeldrop", .regex = "b"),
               R("lowercase", "a", .target = "low")};
  size_t nr = sizeof rs / sizeof rs[0];
  rl_rule_cfg cfgs[5];
  for (size_t i = 0; i < nr; i++)
    cfgs[i] = to_cfg(&rs[i]);
  rl_rules *r = NULL;
  char err[256];
  assert_int_equal(rl_compile(cfgs, nr, RL_NAMES_LEGACY, &r, err, sizeof err), 0);
  int failures = 0;
  for (long n = 0;; n++) {
    rl_labels ls = {0};
    assert_int_equal(rl_labels_set(&ls, "a", "Foo"), 0);
    assert_int_equal(rl_labels_set(&ls, "b", "bar"), 0);
    bool keep;
    alloc_count = 0;
    fail_at = n;
    int rc = rl_apply(r, &ls, &keep);
    bool hit = alloc_count > n;
    fail_at = -1;
    rl_labels_free(&ls);
    if (!hit) { /* allocation n was never reached: every one before it failed once */
      assert_int_equal(rc, 0);
      break;
    }
    if (rc != SONDE_ENOMEM) fail_msg("allocation %ld failed but rl_apply returned %d", n, rc);
    failures++;
  }
  assert_true(failures > 10);
  /* rl_compile too. */
  for (long n = 0;; n++) {
    rl_rules *r2 = NULL;
    alloc_count = 0;
    fail_at = n;
    int rc = rl_compile(cfgs, nr, RL_NAMES_LEGACY, &r2, err, sizeof err);
    bool hit = alloc_count > n;
    fail_at = -1;
    rl_free(r2);
    if (!hit) {
      assert_int_equal(rc, 0);
      break;
    }
    assert_int_equal(rc, SONDE_ENOMEM);
  }
  rl_free(r);
  for (size_t i = 0; i < nr; i++)
    free_cfg(&cfgs[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),          cmocka_unit_test(test_hashmod),
      cmocka_unit_test(test_validate),       cmocka_unit_test(test_drop_internal),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

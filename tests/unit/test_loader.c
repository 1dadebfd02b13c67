/* Unit tests for the plug-in loader (core/src/loader.c), with the deliberately broken plug-ins of
 * tests/plugins/bad built into $SONDE_BUILD_DIR/tests/badplugins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader.h"
#include "log.h"

static char g_dir[PATH_MAX - 256];

static const char *bad(const char *name) {
  static char path[4][PATH_MAX];
  static int k;
  char *p = path[k++ % 4];
  snprintf(p, PATH_MAX, "%s/%s.so", g_dir, name);
  return p;
}

static int setup(void **state) {
  const char *b = getenv("SONDE_BUILD_DIR");
  if (!b) {
    fprintf(stderr, "SONDE_BUILD_DIR is not set (run through ctest)\n");
    return -1;
  }
  snprintf(g_dir, sizeof g_dir, "%s/tests/badplugins", b);
  struct stat st;
  if (stat(bad("good"), &st) != 0) {
    fprintf(stderr, "%s missing: build the badplugin_* targets\n", bad("good"));
    return -1;
  }
  return 0;
}

/* Adding path must be refused with exactly "<path>: <reason>" and leave r as it was. */
static void refused(sonde__registry *r, const char *path, int want_rc, const char *reason) {
  size_t nlibs = r->nlibs, ncomps = r->ncomps;
  char err[1024] = "", want[1024];
  int rc = sonde__registry_add_file(r, path, err, sizeof err);
  snprintf(want, sizeof want, "%s: %s", path, reason);
  if (rc != want_rc)
    fail_msg("%s: rc %s, want %s (%s)", path, sonde_err_name(rc), sonde_err_name(want_rc), err);
  assert_string_equal(err, want);
  assert_int_equal(r->nlibs, nlibs);
  assert_int_equal(r->ncomps, ncomps);
}

static void test_good_plugin(void **state) {
  sonde__registry r = {0};
  char err[1024] = "";
  assert_int_equal(sonde__registry_add_file(&r, bad("good"), err, sizeof err), 0);
  assert_int_equal(r.nlibs, 1);
  assert_int_equal(r.ncomps, 4);
  assert_string_equal(r.libs[0].path, bad("good"));
  assert_string_equal(r.libs[0].desc->name, "loader-good");
  size_t lib = 99;
  const sonde_component *c = sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader_good", &lib);
  assert_non_null(c);
  assert_int_equal(lib, 0);
  assert_int_equal(c->kind, SONDE_KIND_RECEIVER);
  assert_int_equal(c->signals, SONDE_SIGNAL_TRACES | SONDE_SIGNAL_LOGS);
  /* the kind is part of the key */
  const sonde_component *p = sonde__registry_find(&r, SONDE_KIND_PROCESSOR, "loader_good", NULL);
  assert_non_null(p);
  assert_ptr_not_equal(c, p);
  assert_null(sonde__registry_find(&r, SONDE_KIND_EXPORTER, "loader_good", NULL));
  assert_null(sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader", NULL));
  assert_non_null(sonde__registry_find(&r, SONDE_KIND_EXTENSION, "loader_good_ext", NULL));
  size_t n = 9;
  const char **types = sonde__registry_types(&r, SONDE_KIND_EXPORTER, &n);
  assert_non_null(types);
  assert_int_equal(n, 1);
  assert_string_equal(types[0], "loader_good_q");
  free(types);
  types = sonde__registry_types(&r, SONDE_KIND_CONNECTOR, &n);
  assert_non_null(types);
  assert_int_equal(n, 0);
  free(types);
  /* the same file again: its types are taken */
  char want[1024];
  snprintf(want, sizeof want, "duplicate receiver type \"loader_good\", already provided by %s",
           bad("good"));
  refused(&r, bad("good"), SONDE_EEXISTS, want);
  assert_int_equal(r.nrefused, 0); /* add_file reports; only add_dir keeps the list */
  sonde__registry_free(&r);
  assert_int_equal(r.nlibs, 0);
}

static void test_abi_refusals(void **state) {
  sonde__registry r = {0};
  char want[512];
  snprintf(want, sizeof want,
           "ABI mismatch: built for sonde plug-in ABI %d.%d, this sonde speaks %d.%d; rebuild it "
           "against this SDK",
           SONDE_ABI_MAJOR + 1, SONDE_ABI_MINOR, SONDE_ABI_MAJOR, SONDE_ABI_MINOR);
  refused(&r, bad("abi_major"), SONDE_EABI, want);
  snprintf(want, sizeof want, "ABI mismatch: needs ABI %d.%d, newer than this sonde's %d.%d",
           SONDE_ABI_MAJOR, SONDE_ABI_MINOR + 1, SONDE_ABI_MAJOR, SONDE_ABI_MINOR);
  refused(&r, bad("abi_minor"), SONDE_EABI, want);
  snprintf(want, sizeof want,
           "ABI mismatch: build signature \"sonde-abi-1;pdata-otlp-0.9;%s\", expected \"%s\"",
           SONDE__LP, SONDE_BUILD_SIGNATURE);
  refused(&r, bad("signature"), SONDE_EABI, want);
  refused(&r, bad("no_symbol"), SONDE_EABI,
          "no descriptor: the symbol sonde_plugin_descriptor is missing (define it with "
          "SONDE_PLUGIN_DEFINE)");
  snprintf(want, sizeof want, "component 0: struct_size %zu, expected %zu (ABI mismatch)",
           sizeof(sonde_component) - 16, sizeof(sonde_component));
  refused(&r, bad("struct_size"), SONDE_EABI, want);
  /* a refused library is unloaded again */
  assert_null(dlopen(bad("abi_major"), RTLD_NOW | RTLD_NOLOAD));
  assert_null(dlopen(bad("struct_size"), RTLD_NOW | RTLD_NOLOAD));
  sonde__registry_free(&r);
}

static void test_component_refusals(void **state) {
  sonde__registry r = {0};
  refused(&r, bad("type_name"), SONDE_EINVAL,
          "component 1: invalid type name \"Loader-Bad\" (use [a-z0-9_]+)");
  /* the valid first component of that file was not added either */
  assert_null(sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader_fine", NULL));
  refused(&r, bad("dup_one"), SONDE_EEXISTS,
          "duplicate receiver type \"loader_twice\" in one descriptor");
  refused(&r, bad("no_consume"), SONDE_EINVAL,
          "processor loader_noconsume: missing consume callback");
  refused(&r, bad("no_send"), SONDE_EINVAL, "exporter loader_nosend: missing send callback");
  refused(&r, bad("no_signals"), SONDE_EINVAL, "exporter loader_nosignals: handles no signal");
  assert_int_equal(r.nlibs, 0);
  sonde__registry_free(&r);
}

static void test_duplicate_across_files(void **state) {
  sonde__registry r = {0};
  char err[1024], want[1024];
  assert_int_equal(sonde__registry_add_file(&r, bad("dup_a"), err, sizeof err), 0);
  snprintf(want, sizeof want, "duplicate receiver type \"loader_dup\", already provided by %s",
           bad("dup_a"));
  refused(&r, bad("dup_b"), SONDE_EEXISTS, want);
  /* nothing of dup_b came in, not even its other, unique component */
  assert_null(sonde__registry_find(&r, SONDE_KIND_PROCESSOR, "loader_dup_b_only", NULL));
  size_t lib = 9;
  assert_non_null(sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader_dup", &lib));
  assert_string_equal(r.libs[lib].path, bad("dup_a"));
  sonde__registry_free(&r);
}

static void copy_file(const char *from, const char *to, mode_t mode) {
  FILE *in = fopen(from, "rb");
  assert_non_null(in);
  int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0)
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
  fclose(in);
  assert_int_equal(fchmod(fd, mode), 0); /* explicit: not subject to the umask */
  close(fd);
}

static void test_writable_refused(void **state) {
  char dir[] = "/tmp/sonde-loader-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[PATH_MAX], want[PATH_MAX + 128];
  sonde__registry r = {0};
  snprintf(path, sizeof path, "%s/good.so", dir);
  copy_file(bad("good"), path, 0666);
  refused(&r, path, SONDE_EPERM, "group- or world-writable (mode 0666); run chmod go-w on it");
  chmod(path, 0620);
  refused(&r, path, SONDE_EPERM, "group- or world-writable (mode 0620); run chmod go-w on it");
  /* once fixed, the same file loads */
  chmod(path, 0644);
  char err[1024];
  assert_int_equal(sonde__registry_add_file(&r, path, err, sizeof err), 0);
  assert_int_equal(r.nlibs, 1);
  sonde__registry_free(&r);
  /* not there / not a file */
  snprintf(want, sizeof want, "%s/none.so", dir);
  char msg[1024];
  assert_int_equal(sonde__registry_add_file(&r, want, msg, sizeof msg), SONDE_ENOTFOUND);
  assert_non_null(strstr(msg, "none.so: cannot stat: No such file or directory"));
  refused(&r, dir, SONDE_EINVAL, "not a regular file");
  /* not a shared object at all */
  snprintf(path, sizeof path, "%s/text.so", dir);
  FILE *f = fopen(path, "w");
  fputs("not an ELF file\n", f);
  fclose(f);
  chmod(path, 0644);
  assert_int_equal(sonde__registry_add_file(&r, path, msg, sizeof msg), SONDE_EINVAL);
  snprintf(want, sizeof want, "%s: cannot load: ", path);
  assert_memory_equal(msg, want, strlen(want));
  assert_int_equal(r.nlibs, 0);
  unlink(path);
  snprintf(path, sizeof path, "%s/good.so", dir);
  unlink(path);
  rmdir(dir);
}

static void test_add_dir(void **state) {
  sonde__registry r = {0};
  assert_int_equal(sonde__registry_add_dir(&r, "/nonexistent/sonde-plugins"), 0);
  assert_int_equal(r.nlibs, 0);
  assert_int_equal(sonde__registry_add_dir(&r, g_dir), 0);
  /* sorted by name: dup_a comes before dup_b, so dup_a wins; good loads; the rest is refused */
  assert_int_equal(r.nlibs, 2);
  assert_string_equal(r.libs[0].path, bad("dup_a"));
  assert_string_equal(r.libs[1].path, bad("good"));
  static const char *const refused_files[] = {"abi_major", "abi_minor", "dup_b",
                                              "dup_one",   "no_consume", "no_send",
                                              "no_signals", "no_symbol", "signature",
                                              "struct_size", "type_name"};
  size_t n = sizeof refused_files / sizeof refused_files[0];
  assert_int_equal(r.nrefused, n);
  for (size_t i = 0; i < n; i++) {
    char want[PATH_MAX + 8];
    snprintf(want, sizeof want, "%s: ", bad(refused_files[i]));
    if (strncmp(r.refused[i], want, strlen(want)) != 0)
      fail_msg("refused[%zu] = \"%s\", want it to start with \"%s\"", i, r.refused[i], want);
  }
  sonde__registry_free(&r);
  assert_int_equal(r.nrefused, 0);
}

static void test_trim(void **state) {
  sonde__registry r = {0};
  assert_int_equal(sonde__registry_add_dir(&r, g_dir), 0);
  assert_int_equal(r.nlibs, 2);
  size_t lib;
  assert_non_null(sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader_good", &lib));
  assert_int_equal(lib, 1);
  r.libs[lib].used = 1; /* a service uses good.so; nothing uses dup_a.so */
  sonde__registry_trim(&r);
  assert_int_equal(r.nlibs, 1);
  assert_int_equal(r.ncomps, 4);
  assert_null(sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader_dup", NULL));
  const sonde_component *c = sonde__registry_find(&r, SONDE_KIND_EXPORTER, "loader_good_q", &lib);
  assert_non_null(c);
  assert_int_equal(lib, 0); /* index follows the move */
  assert_string_equal(r.libs[lib].path, bad("good"));
  assert_non_null(c->send); /* still mapped */
#if !defined(__SANITIZE_ADDRESS__) /* ASan builds keep libraries of freed registries mapped */
  assert_null(dlopen(bad("dup_a"), RTLD_NOW | RTLD_NOLOAD));
#endif
  size_t n;
  const char **types = sonde__registry_types(&r, SONDE_KIND_RECEIVER, &n);
  assert_int_equal(n, 1);
  assert_string_equal(types[0], "loader_good");
  free(types);
  /* the refusals stay listed for `sonde components` */
  assert_true(r.nrefused > 0);
  /* nothing used: everything goes */
  r.libs[0].used = 0;
  sonde__registry_trim(&r);
  assert_int_equal(r.nlibs, 0);
  assert_int_equal(r.ncomps, 0);
  sonde__registry_free(&r);
}

static void test_load_default_path(void **state) {
  sonde__registry r = {0};
  char env[PATH_MAX * 2 + 2];
  snprintf(env, sizeof env, "/nonexistent:%s", g_dir);
  setenv("SONDE_PLUGIN_PATH", env, 1);
  assert_int_equal(sonde__registry_load_default(&r, NULL, 0), 0);
  assert_non_null(sonde__registry_find(&r, SONDE_KIND_RECEIVER, "loader_good", NULL));
  /* the build tree's plug-ins (../lib/sonde next to the test binary) come first */
  const char *pd = getenv("SONDE_PLUGIN_DIR");
  if (pd) {
    size_t lib;
    const sonde_component *tg = sonde__registry_find(&r, SONDE_KIND_RECEIVER, "testgen", &lib);
    if (tg) {
      char want[PATH_MAX];
      snprintf(want, sizeof want, "/receiver_testgen.so");
      const char *p = r.libs[lib].path;
      assert_string_equal(p + strlen(p) - strlen(want), want);
    }
  }
  size_t nlibs = r.nlibs;
  /* --plugin-path after the environment: the same directory again adds nothing new */
  const char *extra[] = {g_dir};
  assert_int_equal(sonde__registry_load_default(&r, extra, 1), 0);
  assert_int_equal(r.nlibs, nlibs);
  unsetenv("SONDE_PLUGIN_PATH");
  sonde__registry_free(&r);
}

static void test_kind_names(void **state) {
  assert_string_equal(sonde__kind_name(SONDE_KIND_RECEIVER), "receiver");
  assert_string_equal(sonde__kind_name(SONDE_KIND_CONNECTOR), "connector");
  assert_string_equal(sonde__kind_section(SONDE_KIND_EXPORTER), "exporters");
  assert_string_equal(sonde__kind_section(SONDE_KIND_EXTENSION), "extensions");
}

int main(void) {
  if (!getenv("SONDE_TEST_VERBOSE"))
    sonde__log_set_level((sonde_log_level)(SONDE_LOG_ERROR + 1)); /* refusals are expected */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_plugin),        cmocka_unit_test(test_abi_refusals),
      cmocka_unit_test(test_component_refusals), cmocka_unit_test(test_duplicate_across_files),
      cmocka_unit_test(test_writable_refused),   cmocka_unit_test(test_add_dir),
      cmocka_unit_test(test_trim),               cmocka_unit_test(test_load_default_path),
      cmocka_unit_test(test_kind_names),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}

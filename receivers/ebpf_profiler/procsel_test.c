/* Unit tests of procsel.c: the kfunc check's message (on BTF files made here), process selection
 * and the /proc identity of a process whose executable was deleted. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/btf.h>
#include <cmocka.h>

#include "procsel.h"

/* A raw BTF file holding an int, a function prototype and, when fn is set, a function fn. */
static void write_btf(const char *path, const char *fn) {
  struct btf *b = btf__new_empty();
  assert_non_null(b);
  int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  assert_true(int_id > 0);
  int proto = btf__add_func_proto(b, int_id);
  assert_true(proto > 0);
  assert_true(btf__add_func(b, "bpf_obj_new_impl", BTF_FUNC_GLOBAL, proto) > 0);
  if (fn) assert_true(btf__add_func(b, fn, BTF_FUNC_GLOBAL, proto) > 0);
  __u32 size = 0;
  const void *raw = btf__raw_data(b, &size);
  assert_non_null(raw);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(raw, 1, size, f), size);
  fclose(f);
  btf__free(b);
}

static void test_kfunc(void **state) {
  (void)state;
  char path[] = "/tmp/sonde_procsel_btf_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char err[512] = "";

  write_btf(path, NULL); /* a kernel older than the kfunc */
  assert_int_equal(
      sonde__check_kfunc(path, "bpf_rdonly_cast", "6.2", "by the HTTP tracer", err, sizeof(err)),
      SONDE_EUNSUPPORTED);
  assert_non_null(strstr(err, "kernel feature missing: the bpf_rdonly_cast kfunc (Linux 6.2 or "
                              "later), needed by the HTTP tracer; this kernel is "));

  write_btf(path, "bpf_rdonly_cast");
  err[0] = 0;
  assert_int_equal(sonde__check_kfunc(path, "bpf_rdonly_cast", "6.2", "by x", err, sizeof(err)), 0);
  assert_string_equal(err, "");

  unlink(path); /* no BTF at all */
  assert_int_equal(sonde__check_kfunc(path, "bpf_rdonly_cast", "6.2", "by x", err, sizeof(err)),
                   SONDE_EUNSUPPORTED);
  assert_non_null(strstr(err, "kernel feature missing: BTF ("));
  assert_non_null(strstr(err, "bpf_rdonly_cast"));
}

static void test_select(void **state) {
  (void)state;
  char *pids[] = {"42"}, *exes[] = {"/usr/bin/py*"}, *names[] = {"nginx"},
       *cgs[] = {"/system.slice/*"}, *cids[] = {"0123456789ab"};
  sonde__select by_pid = {.pids = {pids, 1}};
  sonde__select by_path = {.executables = {exes, 1}};
  sonde__select by_name = {.executables = {names, 1}};
  sonde__select by_cg = {.cgroups = {cgs, 1}};
  sonde__select by_cid = {.container_ids = {cids, 1}};
  sonde__proc_ident id = {.exe_path = "/usr/bin/python3",
                          .exe_name = "python3",
                          .cgroup = "/system.slice/docker-x.scope"};
  memcpy(id.container_id, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 65);
  assert_true(sonde__select_match(&by_pid, 42, NULL));
  assert_false(sonde__select_match(&by_pid, 43, &id));
  assert_true(sonde__select_match(&by_path, 1, &id));
  assert_false(sonde__select_match(&by_path, 1, NULL)); /* not read yet */
  assert_false(sonde__select_match(&by_name, 1, &id));
  assert_true(sonde__select_match(&by_cg, 1, &id));
  assert_true(sonde__select_match(&by_cid, 1, &id));
  assert_true(sonde__select_pids_only(&by_pid));
  assert_false(sonde__select_pids_only(&by_cg));
  char *bad[] = {"12x"};
  sonde__select inc = {.pids = {bad, 1}}, exc = {0};
  char err[256];
  assert_int_equal(sonde__select_validate(&exc, &inc, err, sizeof(err)), SONDE_ECONFIG);
  assert_string_equal(err, "exclude::pids: \"12x\" is not a process id");

  /* A container id as Kubernetes shows it (containerd://<id>) matches; one that can never match
   * (upper case, not hex, too long, empty) is refused, not silently selecting nothing. */
  char *k8s[] = {"containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"};
  sonde__select by_k8s = {.container_ids = {k8s, 1}};
  assert_int_equal(sonde__select_validate(&by_k8s, &exc, err, sizeof(err)), 0);
  assert_true(sonde__select_match(&by_k8s, 1, &id));
  assert_int_equal(sonde__select_validate(&by_cid, &exc, err, sizeof(err)), 0);
  char *upper[] = {"0123456789AB"}, *nothex[] = {"docker-0123456789ab"}, *empty[] = {""},
       *longer[] = {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"};
  char **badc[] = {upper, nothex, empty, longer};
  for (size_t i = 0; i < 4; i++) {
    sonde__select b = {.container_ids = {badc[i], 1}};
    assert_int_equal(sonde__select_validate(&b, &exc, err, sizeof(err)), SONDE_ECONFIG);
    assert_non_null(strstr(err, "include::container_ids: \""));
    assert_non_null(strstr(err, "is not a container id"));
  }

  char out[65];
  sonde__container_id("/kubepods/pod1/cri-containerd-"
                      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
                      out);
  assert_string_equal(out, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  sonde__container_id("/user.slice/session-2.scope", out);
  assert_string_equal(out, "");
}

/* A process whose executable was deleted (an upgraded package's old binary) keeps its path. */
static void test_ident_deleted_exe(void **state) {
  (void)state;
  char path[] = "/tmp/sonde_procsel_exe_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "cp /bin/sleep %s && chmod 755 %s", path, path);
  assert_int_equal(system(cmd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    execl(path, path, "30", (char *)NULL);
    _exit(127);
  }
  /* Wait for the exec (the child's exe link names the copy), then delete the file. */
  char link[64], target[4096];
  snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
  for (int i = 0; i < 2000; i++) {
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n > 0 && (target[n] = 0, !strcmp(target, path))) break;
    usleep(5000);
  }
  assert_int_equal(unlink(path), 0);
  sonde__proc_ident id;
  int rc = sonde__proc_ident_read((int)pid, &id);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  assert_int_equal(rc, 0);
  assert_string_equal(id.exe_path, path);
  assert_string_equal(id.exe_name, strrchr(path, '/') + 1);
  sonde__proc_ident_free(&id);
  /* Gone: SONDE_ENOTFOUND. */
  assert_int_equal(sonde__proc_ident_read((int)pid, &id), SONDE_ENOTFOUND);
  sonde__proc_ident_free(&id);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kfunc),
      cmocka_unit_test(test_select),
      cmocka_unit_test(test_ident_deleted_exe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

"""symbolizer: debug info from elsewhere, and Rust names.

1. debuginfod: a stripped binary whose debug info only a real `debuginfod` (Debian) serves on
   loopback (`debuginfod -F` over a directory with the unstripped file); the symbolizer's
   `debuginfod_urls` points at it: names and the inlined frame come back.
2. MiniDebugInfo: a stripped binary carrying .gnu_debugdata (the Fedora recipe: an xz-compressed
   ELF with the function symbols), no debug file anywhere: names come back (no lines).
3. Rust: functions with legacy (_ZN..17h<hash>E) and v0 (_R...) mangled names (set with asm labels
   in C): demangled like binutils' c++filt does, the mangled name kept as system_name.
"""
import os
import re
import shutil
import socket
import subprocess
import time

import harness
import test_symbolizer as ts

RUST_SRC = r"""
#include <stdio.h>
__attribute__((noinline)) int legacy_fn(int n) __asm__("_ZN7mycrate6engine4step17h0123456789abcdefE");
__attribute__((noinline)) int legacy_fn(int n) { return n * 7 + 1; }
__attribute__((noinline)) int v0_fn(int n) __asm__("_RNvNtCs1234_7mycrate6engine3run");
__attribute__((noinline)) int v0_fn(int n) { return legacy_fn(n) + 3; }
int main(int argc, char **argv) { (void)argv; printf("%d\n", v0_fn(argc)); return 0; }
"""


def cxxfilt(name):
    """c++filt's name without the Rust hashes (legacy ::h + 16 hex, v0 crate[hex]), which the
    symbolizer leaves out (non-verbose demangling, as perf and rustc's own demangler print them)."""
    name = re.sub(r"::h[0-9a-f]{16}$", "", ts.sh("c++filt", name).strip())
    return re.sub(r"\[[0-9a-f]+\]", "", name)  # and v0 crate disambiguators


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("debuginfod exited with %d" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("debuginfod not listening on %d" % port)


def test():
    hport = harness.free_port()
    s = harness.Sonde("", "symbolizer-debuginfo")
    tmp = s.tmp
    prof = ts.Profile()
    expect = {}

    # 1. debuginfod
    served = os.path.join(tmp, "served")
    os.makedirs(served)
    di = ts.compile_c(tmp, "di", 21)
    dsyms = ts.symbols(di)
    dbid = ts.build_id(di)
    va, a2l = ts.inlined_address(di)
    shutil.copy(di, os.path.join(served, "di.full"))
    ts.sh("objcopy", "--strip-all", di)
    md = prof.mapping(di, dbid)
    li = prof.location(md, ts.vaddr_to_offset(di, va))
    expect[li] = ["inner_step", "leaf_work"]
    expect[prof.location(md, ts.vaddr_to_offset(di, dsyms["outer_entry"][0] + 1))] = ["outer_entry"]

    dport = harness.free_port()
    dlog = open(os.path.join(tmp, "debuginfod.log"), "wb")
    dproc = None
    if shutil.which("debuginfod"):
        dproc = subprocess.Popen(["debuginfod", "-p", str(dport), "-d",
                                  os.path.join(tmp, "debuginfod.sqlite"), "-F", "-t", "1",
                                  "-L", served], stdout=dlog, stderr=subprocess.STDOUT)
    else:
        print("debuginfod (Debian package) missing: debuginfod case skipped")
        expect = {}
        prof = ts.Profile()
        md = None

    # 2. MiniDebugInfo
    mini = ts.compile_c(tmp, "mini", 22)
    msyms = ts.symbols(mini)
    funcs = [n for n, _ in msyms.items()]
    keep = os.path.join(tmp, "keep")
    with open(keep, "w") as f:
        f.write("\n".join(funcs) + "\n")
    md_elf = os.path.join(tmp, "mini_debuginfo")
    ts.sh("objcopy", "--only-keep-debug", mini, md_elf)
    ts.sh("objcopy", "-S", "--remove-section", ".gdb_index", "--remove-section", ".comment",
          "--keep-symbols=" + keep, md_elf)
    ts.sh("xz", "-f", md_elf)
    ts.sh("objcopy", "--strip-all", mini)
    ts.sh("objcopy", "--add-section", ".gnu_debugdata=" + md_elf + ".xz", mini)
    mm = prof.mapping(mini, ts.build_id(mini))
    for fn in ("middle_call", "outer_entry"):
        expect[prof.location(mm, ts.vaddr_to_offset(mini, msyms[fn][0] + 1))] = [fn]

    # 3. Rust-mangled names
    src = os.path.join(tmp, "rust.c")
    with open(src, "w") as f:
        f.write(RUST_SRC)
    rb = os.path.join(tmp, "rustish")
    ts.sh("gcc", "-O2", "-o", rb, src)
    rsyms = ts.symbols(rb)
    mr = prof.mapping(rb, ts.build_id(rb))
    rust = {}
    for mangled in ("_ZN7mycrate6engine4step17h0123456789abcdefE", "_RNvNtCs1234_7mycrate6engine3run"):
        li = prof.location(mr, ts.vaddr_to_offset(rb, rsyms[mangled][0] + 1))
        expect[li] = [cxxfilt(mangled)]
        rust[li] = mangled
    assert expect[li][0] != rust[li], "c++filt cannot demangle Rust v0 here"

    prof.resources.append(({"service.name": "debuginfo"}, list(expect)))
    empty = os.path.join(tmp, "nodebug")
    os.makedirs(empty)
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  symbolizer:
    debug_dirs: ["%s"]
    debuginfod_urls: "http://127.0.0.1:%d"
exporters:
  file: {path: "@TMP@/profiles.json", flush_interval: 10ms}
service:
  pipelines:
    profiles: {receivers: [otlp], processors: [symbolizer], exporters: [file]}
""" % (hport, empty, dport)
    with open(s.config, "w") as f:
        f.write(cfg.replace("@TMP@", tmp))
    os.environ["DEBUGINFOD_CACHE_PATH"] = os.path.join(tmp, "debuginfod-cache")
    # Sanitizer builds: libdebuginfod's curl_global_init (libssh2 -> OpenSSL) keeps one
    # allocation for the life of the process; not ours to free. The fast unwinder stops inside
    # libcrypto (no frame pointers there), so the module is what can be named; nothing else in
    # this pipeline uses OpenSSL.
    supp = os.path.join(tmp, "lsan.supp")
    with open(supp, "w") as f:
        f.write("leak:curl_global_init\nleak:libcrypto.so\n")
    os.environ["LSAN_OPTIONS"] = (os.environ.get("LSAN_OPTIONS", "") +
                                  ":suppressions=" + supp).lstrip(":")
    try:
        if dproc:
            wait_port(dport, dproc)
            # the scan of the served directory must be done before asking
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    out = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}",
                                          "http://127.0.0.1:%d/buildid/%s/debuginfo" % (dport, dbid)],
                                         stdout=subprocess.PIPE).stdout.decode()
                except OSError:
                    out = ""
                if out == "200":
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("debuginfod never served %s:\n%s" %
                                     (dbid, open(os.path.join(tmp, "debuginfod.log")).read()))
        s.start()
        ts.post(hport, prof.body())
        req = ts.wait_json(s.path("profiles.json"), timeout=60)
        s.stop_ok()
    finally:
        if dproc:
            dproc.terminate()
            dproc.wait(10)
    got = ts.frames_of(req)
    for li, names in expect.items():
        have = [f[0] for f in got[li]]
        assert have == names, "location %d: want %s, got %s" % (li, names, got[li])
    for li, mangled in rust.items():
        assert got[li][0][1] == mangled, got[li]
    print("debuginfod%s, MiniDebugInfo and Rust names resolved" % ("" if dproc else " (skipped)"))


if __name__ == "__main__":
    harness.main(test)

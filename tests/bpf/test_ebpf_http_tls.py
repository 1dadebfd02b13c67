"""ebpf_http TLS discovery end to end: HTTPS servers whose OpenSSL is linked in statically, so
their SSL_read/SSL_write are in no libssl.so and in no .dynsym, only in a .symtab:
  - tls_static: an executable with OpenSSL inside;
  - tls_lib: an executable that carries no TLS itself and maps libtlspeer.so, a library with
    OpenSSL inside whose symbols are hidden (-Wl,--exclude-libs,ALL), the way grpcio wheels or
    Envoy carry BoringSSL.
Both are built here from tests/bpf/tls/tls_peer.c against Debian's libssl.a/libcrypto.a
(libssl-dev). sonde's /proc scan (on the thread pool) must find them, the uprobes see the
plaintext, and curl's keep-alive requests over https make exactly one SERVER span each.

Needs root, a kernel with BTF, raw tracepoints, uprobes and ring buffers, gcc, libssl-dev's static
libraries, curl and openssl: otherwise exits 77 (skipped), or fails when SONDE_REQUIRE_BPF=1.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from this import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_util as pu  # noqa: E402
from test_ebpf_http import SERVER, Sonde, describe, free_port, skip_or_fail  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LIBDIR = "/usr/lib/x86_64-linux-gnu"


def symbols(path, dynamic):
    out = subprocess.run(["nm"] + (["-D"] if dynamic else []) + [path], capture_output=True,
                         text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def build(tmp):
    src = os.path.join(HERE, "tls", "tls_peer.c")
    ssl = [os.path.join(LIBDIR, "libssl.a"), os.path.join(LIBDIR, "libcrypto.a"), "-lpthread"]
    static = os.path.join(tmp, "tls_static")
    lib = os.path.join(tmp, "libtlspeer.so")
    exe = os.path.join(tmp, "tls_lib")
    for argv in (["gcc", "-O2", "-o", static, src] + ssl,
                 ["gcc", "-O2", "-shared", "-fPIC", "-DPEER_LIB", "-o", lib, src,
                  "-Wl,--exclude-libs,ALL"] + ssl,
                 ["gcc", "-O2", "-DPEER_MAIN_ONLY", "-o", exe, src, "-L" + tmp, "-ltlspeer",
                  "-Wl,-rpath," + tmp]):
        subprocess.run(argv, check=True)
    # What the test is about: the functions are defined only in .symtab, nothing imports libssl.
    for f in (static, lib):
        assert "SSL_read" in symbols(f, False) and "SSL_write" in symbols(f, False), f
        assert "SSL_read" not in symbols(f, True), f
    assert "SSL_read" not in symbols(exe, False)
    for f in (static, exe):
        ldd = subprocess.run(["ldd", f], capture_output=True, text=True).stdout
        assert "libssl" not in ldd, ldd
    return static, exe


def main():
    if os.geteuid() != 0:
        skip_or_fail("needs root (CAP_BPF + CAP_PERFMON)")
    for tool in ("gcc", "curl", "openssl", "nm"):
        if not shutil.which(tool):
            skip_or_fail("%s is not installed (scripts/deps.sh installs it)" % tool)
    if not os.path.exists(os.path.join(LIBDIR, "libssl.a")):
        skip_or_fail("libssl-dev's static libraries are not installed")
    tmp = tempfile.mkdtemp(prefix="sonde-bpf-tls-")
    static, exe = build(tmp)
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert], check=True,
                   capture_output=True)
    ports = [free_port(), free_port()]
    s = Sonde(tmp, ports)
    rc, out = s.validate()
    if rc != 0:
        if "needs CAP_BPF" in out or "kernel feature missing" in out:
            skip_or_fail("sonde validate: " + out.strip())
        raise AssertionError("sonde validate failed:\n" + out)
    procs = []
    s.start()
    try:
        for binary, port in ((static, ports[0]), (exe, ports[1])):
            p = subprocess.Popen([binary, str(port), cert, key], stdout=subprocess.PIPE)
            procs.append(p)
            assert p.stdout.readline().strip() == b"ready", binary
        # The scan runs every 2 s on the thread pool: both files must have their uprobes first
        # (other processes on the machine may count in sonde_ebpf_http_tls_files: the log says
        # which files).
        want = ["/proc/%d/exe\n" % procs[0].pid, "/libtlspeer.so\n"]
        deadline = time.time() + 20
        while not all(w in s.log() for w in want) and time.time() < deadline:
            time.sleep(0.2)
        assert all(w in s.log() for w in want), "no uprobes on %s:\n%s" % (want, s.log())
        assert s.metric("sonde_ebpf_http_tls_files") >= 2
        paths = ["/a", "/b/1", "/c?x=1"]
        for p, port in zip(procs, ports):
            urls = ["https://127.0.0.1:%d%s" % (port, u) for u in paths]
            r = subprocess.run(["curl", "-sS", "-k"] + urls, capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0 and r.stdout == "ok\n" * len(paths), (r.stdout, r.stderr)
            spans = s.wait_spans(lambda x: x["kind"] == SERVER and
                                 x["res"]["process.pid"] == p.pid, len(paths))
            assert len(spans) == len(paths), "\n".join(map(describe, spans))
            spans.sort(key=lambda x: int(x["startTimeUnixNano"]))
            for x, u in zip(spans, paths):
                a = x["a"]
                assert a.get("url.scheme") == "https" and a.get("url.path") == u.split("?")[0] \
                    and a.get("http.response.status_code") == 200 and \
                    a.get("http.request.method") == "GET", describe(x)
            assert len({x["a"]["network.peer.port"] for x in spans}) == 1, "keep-alive"
            print("%s: %d https requests on one connection -> %d SERVER spans (uprobes from "
                  ".symtab)" % (os.path.basename(p.args[0]), len(paths), len(spans)))
        assert s.proc.poll() is None, "sonde died:\n" + s.log()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if s.proc.poll() is None:
            s.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    pu.run_main(main)

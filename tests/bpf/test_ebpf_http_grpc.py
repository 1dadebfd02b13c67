"""ebpf_http end to end over HTTP/2: the real sonde traces real gRPC and HTTP/2 peers on loopback;
spans go to a file exporter, RED metrics to a file exporter and to sonde's prometheus exporter,
scraped by a real Prometheus. Nothing of sonde's code checks the results.

Peers (tests/bpf/grpc/): python3-grpcio server and client over h2c and over TLS (Debian's grpcio
links the system libssl, so the libssl uprobes see its plaintext), @grpc/grpc-js server and client
over h2c and TLS (tests/e2e/node; node links OpenSSL statically: uprobes in the executable),
nghttpd with curl --http2-prior-knowledge, raw sockets for bad input.

Needs root, a kernel with BTF, raw tracepoints, uprobes and ring buffers, python3-grpcio,
nghttp2-server, curl, openssl, prometheus, node with tests/e2e/node installed: otherwise exits 77
(skipped), or fails when SONDE_REQUIRE_BPF=1.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from this import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_util as pu  # noqa: E402
from test_ebpf_http import (CLIENT, SERVER, Sonde, describe, free_port, skip_or_fail,  # noqa: E402
                            wait_port)

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SONDE_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
NODE_MODULES = os.path.join(SRC, "tests", "e2e", "node", "node_modules")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NOT_FOUND = 5


class GrpcSonde(Sonde):
    """The base test's sonde, with the metrics also served to Prometheus."""

    def __init__(self, tmp, ports):
        super().__init__(tmp, ports)
        self.prom_port = free_port()
        with open(self.config, "w") as f:
            f.write("""receivers:
  ebpf_http:
    open_ports: "%s"
    capture_bytes: 4096
    flush_interval: 200ms
    metrics_interval: 500ms
exporters:
  file:
    path: %s
    flush_interval: 100ms
  file/metrics:
    path: %s
    flush_interval: 100ms
  prometheus:
    endpoint: "127.0.0.1:%d"
service:
  telemetry:
    metrics:
      address: localhost:%d
  pipelines:
    traces:
      receivers: [ebpf_http]
      exporters: [file]
    metrics:
      receivers: [ebpf_http]
      exporters: [file/metrics, prometheus]
""" % (",".join(str(p) for p in ports), self.traces, self.metrics, self.prom_port, self.mport))


class Prometheus:
    def __init__(self, tmp, port):
        self.port = free_port()
        self.dir = os.path.join(tmp, "prometheus")
        os.makedirs(self.dir)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            # honor_labels: keep the job our exposition derives from service.name.
            f.write("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n"
                    "  - job_name: sonde\n    honor_labels: true\n"
                    "    static_configs: [{targets: ['127.0.0.1:%d']}]\n" % port)
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + self.dir + "/data",
             "--web.listen-address=127.0.0.1:%d" % self.port], stdout=self.log,
            stderr=subprocess.STDOUT)

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port,
                                                        urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def wait_value(self, q, want, timeout=30, tol=0.0):
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            try:
                res = self.query(q)
            except (ConnectionError, urllib.error.URLError):
                res = None
            if res and len(res) == 1:
                got = float(res[0]["value"][1])
                if abs(got - want) <= tol:
                    return
            time.sleep(0.2)
        raise AssertionError("prometheus: %s: want %s, last %s" % (q, want, got))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def grpc_python():
    """A Python that can import grpc (ctest's may be another one than Debian's)."""
    for py in (sys.executable, "/usr/bin/python3"):
        if py and subprocess.run([py, "-c", "import grpc"], capture_output=True).returncode == 0:
            return py
    return None


def start(argv, procs, env_extra):
    env = dict(os.environ, NODE_PATH=NODE_MODULES, **env_extra)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    procs.append(p)
    line = p.stdout.readline().strip()
    assert line == b"ready", "%s: %r" % (argv, line)
    return p


def run_client(argv, service):
    env = dict(os.environ, NODE_PATH=NODE_MODULES, OTEL_SERVICE_NAME=service)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, "%s: %s %s" % (argv, out, err)
    return p.pid, json.loads(out)


def check_grpc(s, what, srv_pid, cli_pid, port, res, n, conc, scheme="http"):
    """The spans of one client run (n sequential calls, a NOT_FOUND, conc concurrent ones):
    exactly that many on each side, with gRPC attributes, codes, errors and durations inside the
    client's measured ones."""
    total = n + 1 + conc
    srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == srv_pid
                       and x["a"].get("server.port") == port, total)
    cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["res"]["process.pid"] == cli_pid
                       and x["a"].get("server.port") == port, total)
    for side, spans in (("server", srv), ("client", cli)):
        assert len(spans) == total, "%s %s: %d spans for %d calls:\n%s" % (
            what, side, len(spans), total, "\n".join(map(describe, spans)))
        assert len({x["a"]["network.peer.port"] for x in spans}) == 1, \
            "%s %s: one channel, one connection:\n%s" % (what, side,
                                                         "\n".join(map(describe, spans)))
        spans.sort(key=lambda x: int(x["startTimeUnixNano"]))
        for x in spans:
            a = x["a"]
            assert x["name"] == "/pkg.Service/Method", describe(x)
            assert a.get("rpc.system") == "grpc" and a.get("rpc.service") == "pkg.Service" \
                and a.get("rpc.method") == "Method", describe(x)
            assert a.get("http.request.method") == "POST" and \
                a.get("url.path") == "/pkg.Service/Method", describe(x)
            assert a.get("http.response.status_code") == 200, describe(x)
            assert a.get("url.scheme") == scheme, describe(x)
            assert a.get("network.protocol.version") == "2", describe(x)
        codes = [x["a"].get("rpc.grpc.status_code") for x in spans]
        assert codes == [0] * n + [NOT_FOUND] + [0] * conc, "%s %s: codes %s" % (what, side,
                                                                                   codes)
        # Sequential calls, in order: each span inside the client's own measure of that call.
        for x, t in zip(spans[:n + 1], res["seq"] + [res["notfound"]]):
            assert 0 < x["dur"] <= t, "%s %s: span longer than the call (%.6f s): %s" % (
                what, side, t, describe(x))
        # Body sizes: the length-prefixed messages (5-byte prefix), the NOT_FOUND one without.
        for i, x in enumerate(spans[:n + 1]):
            req = b"call %d" % i if i < n else b"notfound"
            want = (5 + len(req), 5 + len(b"echo:" + req) if i < n else 0)
            got = (x["a"].get("http.request.body.size"), x["a"].get("http.response.body.size"))
            assert got == want, "%s %s: body sizes %s, want %s: %s" % (what, side, got, want,
                                                                      describe(x))
        # NOT_FOUND: an error for the client; not for the server (semconv's server list).
        nf = spans[n]
        err = nf.get("status", {}).get("code") == 2
        assert err == (side == "client"), "%s %s: error status of NOT_FOUND: %s" % (
            what, side, nf)
        if err:  # semconv: the gRPC status code's name, not the HTTP status (200)
            assert nf["a"].get("error.type") == "NOT_FOUND", "%s %s: error.type %r" % (
                what, side, nf["a"].get("error.type"))
        for x in spans[:n] + spans[n + 1:]:
            assert x.get("status", {}).get("code", 0) != 2, describe(x)
        # The concurrent ones: each 300 ms on the server, all in flight at once.
        cc = spans[n + 1:]
        for x in cc:
            assert 0.3 <= x["dur"] <= res["conc_total"], "%s %s: concurrent call %.6f s, all " \
                "took %.6f s: %s" % (what, side, x["dur"], res["conc_total"], describe(x))
        assert max(int(x["startTimeUnixNano"]) for x in cc) < \
            min(int(x["endTimeUnixNano"]) for x in cc), "%s %s: not concurrent" % (what, side)
    print("%s: %d calls (1 NOT_FOUND, %d concurrent on one connection) -> %d server and %d "
          "client spans" % (what, total, conc, len(srv), len(cli)))
    return srv, cli


def cancel_checks(s, py, peer, srv_pid, port):
    """A call the client cancels and one past its deadline (both end with RST_STREAM CANCEL, no
    response): a CLIENT span each, rpc.grpc.status_code CANCELLED (1) / DEADLINE_EXCEEDED (4) as
    the client library reports them, errors with error.type the code's name; SERVER spans with
    the same codes, CANCELLED not an error on the server (semconv's server list), DEADLINE_EXCEEDED
    one; the RED rpc.*.duration series count them under those codes."""
    cpid, res = run_client([py, peer, "cancel", "127.0.0.1:%d" % port], "grpcpy-cancel")
    cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["res"]["process.pid"] == cpid, 3)
    assert len(cli) == 3, "cancel client: %d spans for 3 calls:\n%s" % (
        len(cli), "\n".join(map(describe, cli)))
    # The server's spans of these calls: the ones since the first of them (it serves nothing else
    # meanwhile); a server reads a request after its client wrote it.
    t0 = min(int(x["startTimeUnixNano"]) for x in cli)
    srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == srv_pid and
                       int(x["startTimeUnixNano"]) >= t0, 3)
    for side, spans in (("client", cli), ("server", srv)):
        assert len(spans) == 3, "cancel %s: %d spans for 3 calls:\n%s" % (
            side, len(spans), "\n".join(map(describe, spans)))
        spans.sort(key=lambda x: int(x["startTimeUnixNano"]))
        calls = ((1, "CANCELLED", res["cancelled"]), (4, "DEADLINE_EXCEEDED", res["deadline"]),
                 (0, None, res["after"]))
        for x, (code, name, t) in zip(spans, calls):
            a = x["a"]
            assert x["name"] == "/pkg.Service/Method" and a.get("rpc.grpc.status_code") == code, \
                "cancel %s: want code %d: %s" % (side, code, describe(x))
            err = x.get("status", {}).get("code") == 2
            want_err = code != 0 and (side == "client" or code == 4)
            assert err == want_err, "cancel %s: error status %s: %s" % (side, err, describe(x))
            if err:
                assert a.get("error.type") == name, describe(x)
            # The answered call nests in the client's own measure of it. A call the client gives
            # up on ends with an RST_STREAM grpc's core writes some time after cancel() returned
            # or the deadline fired, after the next call's HEADERS at times: neither the client's
            # clock nor the next call bounds it (below, the other end of the connection does).
            assert 0 < x["dur"] and (code != 0 or x["dur"] <= t), \
                "cancel %s: span longer than the call (%.6f s): %s" % (side, t, describe(x))
        # The cancelled call lasted until the client's cancel (200 ms after the call, its HEADERS
        # written meanwhile), the other one until the deadline its grpc-timeout said (code 4).
        assert spans[0]["dur"] >= 0.1 and spans[1]["dur"] >= 0.1, \
            "\n".join(map(describe, spans))
    # One connection, one clock: the server reads each HEADERS after the client wrote it; it reads
    # the cancelled call's RST_STREAM after the client wrote it (it has no deadline of its own to
    # end it first; the deadline one has: either end's RST_STREAM may come first); it writes the
    # answered call's trailers before the client reads them. Each end's time is taken when its
    # syscall returns, and the reader's read can return before the writer's write does (2 CPUs: seen
    # in the ASan build): 2 ms of slack, far below the 100+ ms between these calls.
    slack = 2000000
    for i, (c, v) in enumerate(zip(cli, srv)):
        ce, ve = int(c["endTimeUnixNano"]), int(v["endTimeUnixNano"])
        assert int(c["startTimeUnixNano"]) <= int(v["startTimeUnixNano"]) + slack and \
            (ce <= ve + slack if i == 0 else ve <= ce + slack if i == 2 else True), \
            "cancel: call %d's server span is out of order with its client span:\n%s\n%s" % (
                i, describe(c), describe(v))
    for name, pid in (("rpc.client.duration", cpid), ("rpc.server.duration", srv_pid)):
        deadline = time.time() + 10
        while True:
            codes = {}
            for (p, a), c in s.histograms(name).items():
                if p == pid:
                    k = dict(a).get("rpc.grpc.status_code")
                    codes[k] = codes.get(k, 0) + c
            if (codes.get(1), codes.get(4)) == (1, 1) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert (codes.get(1), codes.get(4)) == (1, 1), "%s of pid %d by code: %s" % (name, pid,
                                                                                     codes)
    print("cancelled and deadline-exceeded gRPC calls: client and server spans with codes 1 and "
          "4, errors per semconv, counted in rpc.*.duration")


def hpack_lit(index, value):
    """Literal header field without indexing, name from the static table, no Huffman."""
    v = value.encode()
    assert index < 15 and len(v) < 127
    return bytes([index, len(v)]) + v


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def raw_h2(port, data, rst_after=None, timeout=3):
    """Sends data on a new connection; reads until close/timeout, or until rst_after bytes
    came back and then resets the connection (SO_LINGER 0). Returns our local port."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lport = c.getsockname()[1]
    c.sendall(data)
    got = 0
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += len(b)
            if rst_after is not None and got >= rst_after:
                break
    except socket.timeout:
        pass
    if rst_after is not None:
        assert got >= rst_after, "only %d bytes came back" % got
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    return lport


def curl_h2(*urls):
    """[(code, seconds)]: one curl per URL (curl 7.88 fails a second prior-knowledge transfer on
    a reused connection with "Error in the HTTP2 framing layer", without any tracer)."""
    res = []
    for u in urls:
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                              "%{http_code} %{http_version} %{time_total}", u],
                             capture_output=True, text=True, timeout=60)
        code, ver, t = out.stdout.split()
        assert ver == "2", "%s: %s %s" % (u, out.stdout, out.stderr)
        res.append((int(code), float(t)))
    return res


def main():
    if os.geteuid() != 0:
        skip_or_fail("needs root (CAP_BPF + CAP_PERFMON)")
    for tool in ("curl", "openssl", "prometheus", "node", "nghttpd"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            skip_or_fail("%s is not installed (scripts/deps.sh installs it)" % tool)
    py = grpc_python()
    if not py:
        skip_or_fail("python3-grpcio is not installed (scripts/deps.sh installs it)")
    if not os.path.isdir(os.path.join(NODE_MODULES, "@grpc", "grpc-js")):
        raise AssertionError("%s has no @grpc/grpc-js: run npm ci in tests/e2e/node (the "
                             "e2e/node_deps test does)" % NODE_MODULES)
    nghttpd = shutil.which("nghttpd") or "/usr/sbin/nghttpd"
    tmp = tempfile.mkdtemp(prefix="sonde-bpf-grpc-")
    py_port, tls_port, js_port, jstls_port, h2_port = (free_port() for _ in range(5))
    s = GrpcSonde(tmp, [py_port, tls_port, js_port, jstls_port, h2_port])
    rc, out = s.validate()
    if rc != 0:
        if "needs CAP_BPF" in out or "kernel feature missing" in out:
            skip_or_fail("sonde validate: " + out.strip())
        raise AssertionError("sonde validate failed:\n" + out)
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert], check=True,
                   capture_output=True)
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    for i in range(3):
        with open(os.path.join(www, "f%d.html" % i), "w") as f:
            f.write("<p>file %d</p>\n" % i * (i + 1))
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))

    procs = []
    prom = None
    s.start()
    try:
        prom = Prometheus(tmp, s.prom_port)
        peer = os.path.join(HERE, "grpc", "grpc_peer.py")
        jspeer = os.path.join(HERE, "grpc", "grpc_peer.js")
        py_srv = start([py, peer, "server", str(py_port)], procs,
                       {"OTEL_SERVICE_NAME": "grpcpy-srv"})
        tls_srv = start([py, peer, "server", str(tls_port), cert, key], procs,
                        {"OTEL_SERVICE_NAME": "grpctls-srv"})
        js_srv = start(["node", jspeer, "server", str(js_port)], procs,
                       {"OTEL_SERVICE_NAME": "grpcjs-srv"})
        jstls_srv = start(["node", jspeer, "server", str(jstls_port), cert, key], procs,
                          {"OTEL_SERVICE_NAME": "grpcjstls-srv"})
        h2d = subprocess.Popen([nghttpd, "--no-tls", "-d", www, str(h2_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, OTEL_SERVICE_NAME="nghttpd-srv"))
        procs.append(h2d)
        wait_port(h2_port)
        # The TLS uprobes go in by a /proc scan every 2 s: libssl (mapped by grpcio) and the node
        # executable must be in before the clients start.
        deadline = time.time() + 15
        while s.metric("sonde_ebpf_http_tls_files") < 2 and time.time() < deadline:
            time.sleep(0.2)

        n, conc = 10, 8
        # ---- (1) grpcio over h2c ----
        cpid, res = run_client([py, peer, "client", "127.0.0.1:%d" % py_port, str(n),
                                str(conc)], "grpcpy-cli")
        check_grpc(s, "grpcio h2c", py_srv.pid, cpid, py_port, res, n, conc)
        # ---- a traceparent in the call's metadata: the server span continues that trace ----
        trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        tp_pid, _ = run_client([py, peer, "traceparent", "127.0.0.1:%d" % py_port,
                                "00-%s-%s-01" % (trace, parent)], "grpcpy-tp")
        tp = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == py_srv.pid
                          and x["traceId"] == trace, 1)
        assert len(tp) == 1 and tp[0].get("parentSpanId") == parent, "\n".join(map(describe, tp))
        tpc = s.wait_spans(lambda x: x["kind"] == CLIENT and x["res"]["process.pid"] == tp_pid, 1)
        assert len(tpc) == 1 and tpc[0]["traceId"] == trace, tpc
        # The caller's own header names its client span: the server span's parent is that span.
        assert tpc[0].get("spanId") == parent, "client span id %s, header's %s" % (
            tpc[0].get("spanId"), parent)
        print("traceparent in gRPC metadata: the server span continues the caller's trace")
        # ---- a server stream: one span per call, timed to the trailers, every reply counted ----
        st_pid, res = run_client([py, peer, "stream", "127.0.0.1:%d" % py_port], "grpcpy-st")
        st = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == py_srv.pid
                          and x["name"] == "/pkg.Service/Stream", 1)
        st += s.wait_spans(lambda x: x["kind"] == CLIENT and x["res"]["process.pid"] == st_pid, 1)
        sts = "\n".join(map(describe, st))
        assert len(st) == 2, "server stream: want 1 span each side:\n" + sts
        for x in st:
            a = x["a"]
            assert a.get("rpc.method") == "Stream" and a.get("rpc.grpc.status_code") == 0 and \
                a.get("http.response.body.size") == 5 * (5 + 6) and \
                a.get("http.request.body.size") == 5 + 2, "server stream attributes:\n" + sts
            assert 0.1 <= x["dur"] <= res["t"], "5 replies 20 ms apart, %.6f s in all:\n%s" % (
                res["t"], sts)
        print("server stream: one span each side, 5 replies in the body size, timed to the end")

        # ---- a 100 kB request and response (several DATA frames in one write each way), then
        # more calls on the same connection: BPF copies frame headers, not the DATA between ----
        size = 100000
        big_pid, res = run_client([py, peer, "big", "127.0.0.1:%d" % py_port, str(size)],
                                  "grpcpy-big")
        for kind, pid in ((SERVER, py_srv.pid), (CLIENT, big_pid)):
            big = s.wait_spans(lambda x: x["kind"] == kind and x["res"]["process.pid"] == pid
                               and x["name"] == "/pkg.Service/Big", 4)
            assert len(big) == 4, "\n".join(map(describe, big))
            big.sort(key=lambda x: int(x["startTimeUnixNano"]))
            want = [size] + [len(b"small 1")] * 3
            for x, w, t in zip(big, want, res["seq"]):
                a = x["a"]
                assert a.get("rpc.grpc.status_code") == 0 and \
                    a.get("http.request.body.size") == 5 + w and \
                    a.get("http.response.body.size") == 5 + 5 + w, describe(x)
                assert x["dur"] <= t, "client measured %.6f s: %s" % (t, describe(x))
        print("100 kB gRPC call and 3 more on its connection: 4 spans each side, body sizes exact")

        # ---- calls the client gives up on: RST_STREAM CANCEL before any response ----
        cancel_checks(s, py, peer, py_srv.pid, py_port)

        # ---- (2) grpcio over TLS (libssl uprobes) ----
        tpid, res = run_client([py, peer, "client", "127.0.0.1:%d" % tls_port, str(n),
                                str(conc), cert], "grpctls-cli")
        tls_srv_spans, _ = check_grpc(s, "grpcio TLS", tls_srv.pid, tpid, tls_port, res, n,
                                      conc, scheme="https")
        # ---- (3) grpc-js over h2c ----
        jpid, res = run_client(["node", jspeer, "client", "127.0.0.1:%d" % js_port, str(n),
                                str(conc)], "grpcjs-cli")
        check_grpc(s, "grpc-js h2c", js_srv.pid, jpid, js_port, res, n, conc)
        # ---- grpc-js over TLS (uprobes in the node executable, which links OpenSSL) ----
        jtpid, res = run_client(["node", jspeer, "client", "127.0.0.1:%d" % jstls_port, str(n),
                                 str(conc), cert], "grpcjstls-cli")
        check_grpc(s, "grpc-js TLS", jstls_srv.pid, jtpid, jstls_port, res, n, conc,
                   scheme="https")

        # ---- (4) plain HTTP/2: curl --http2-prior-knowledge against nghttpd ----
        paths = ["/f0.html", "/f1.html", "/f2.html?x=1", "/users/42", "/missing.html"]
        got = curl_h2(*["http://127.0.0.1:%d%s" % (h2_port, p) for p in paths])
        assert [c for c, _ in got] == [200, 200, 200, 404, 404], got
        h_srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == h2d.pid,
                             len(paths))
        h_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and
                             x["a"].get("server.port") == h2_port and
                             x["res"].get("process.executable.name") == "curl", len(paths))
        for side, spans in (("server", h_srv), ("client", h_cli)):
            assert len(spans) == len(paths), "nghttpd %s:\n%s" % (side,
                                                                  "\n".join(map(describe, spans)))
            spans.sort(key=lambda x: int(x["startTimeUnixNano"]))
            for x, p, (code, t) in zip(spans, paths, got):
                path = p.split("?")[0]
                a = x["a"]
                assert a.get("http.request.method") == "GET" and a.get("url.path") == path \
                    and a.get("http.response.status_code") == code, describe(x)
                assert a.get("network.protocol.version") == "2" and "rpc.system" not in a, \
                    describe(x)
                assert 0 < x["dur"] <= t, "span longer than curl measured (%.6f): %s" % (
                    t, describe(x))
                err = x.get("status", {}).get("code") == 2
                assert err == (side == "client" and code >= 400), describe(x)
                if side == "server":
                    route = "/users/{id}" if path == "/users/42" else path
                    assert a.get("http.route") == route and x["name"] == "GET " + route, \
                        describe(x)
                    if "?" in p:
                        assert a.get("url.query") == p.split("?")[1], describe(x)
        print("nghttpd + curl h2c: %d GETs -> %d server and %d client spans (routes, 404s)" % (
            len(paths), len(h_srv), len(h_cli)))

        # ---- (6) bad input on HTTP/2 ports: no crash, no invented spans ----
        settings = frame(4, 0, 0, b"")
        junk_block = frame(1, 4 | 1, 1, os.urandom(60))  # HEADERS, END_HEADERS|END_STREAM
        bad = []
        for port in (py_port, h2_port):
            bad.append(raw_h2(port, PREFACE + os.urandom(400), timeout=1.5))
            bad.append(raw_h2(port, PREFACE + settings + junk_block, timeout=1.5))
        # A GET of 1 MiB, reset by the client (us) once 20 kB of the answer came.
        req = b"\x82\x86" + hpack_lit(4, "/big.bin") + hpack_lit(1, "127.0.0.1:%d" % h2_port)
        rst = raw_h2(h2_port, PREFACE + settings + frame(1, 4 | 1, 1, req), rst_after=20000)
        # And a gRPC call whose client leaves before the answer (the server sleeps 2 s).
        greq = b"\x83\x86" + hpack_lit(4, "/pkg.Service/Method") + \
            hpack_lit(1, "127.0.0.1:%d" % py_port) + b"\x00\x02te\x08trailers" + \
            b"\x0f\x10\x10application/grpc"  # content-type: static index 31
        msg = b"sleep:2000"
        cut = raw_h2(py_port, PREFACE + settings + frame(1, 4, 1, greq) +
                     frame(0, 1, 1, b"\x00" + struct.pack(">I", len(msg)) + msg), timeout=0.5)
        time.sleep(1.0)  # five flush intervals
        assert s.proc.poll() is None, "sonde died:\n" + s.log()
        spans = s.spans()
        inv = [x for x in spans if x["a"].get("network.peer.port") in bad or
               (x["res"]["process.pid"] == os.getpid() and x["a"].get("server.port") in bad)]
        assert not inv, "spans for bad input:\n" + "\n".join(map(describe, inv))
        for port in (rst, cut):
            r = [x for x in spans if x["a"].get("network.peer.port") == port or
                 (x["res"]["process.pid"] == os.getpid() and x["a"].get("network.peer.port") in
                  (h2_port, py_port) and x["kind"] == CLIENT)]
            assert len([x for x in r if x["kind"] == SERVER]) <= 1, "\n".join(map(describe, r))
            for x in r:
                assert x.get("status", {}).get("code") == 2, "a reset stream is an error: " + \
                    describe(x)
        # (grpcio answers the call whose client left with trailers UNAVAILABLE on the half-closed
        # socket: a real response, so a span is right, and an error.)
        # Still tracing afterwards.
        got = curl_h2("http://127.0.0.1:%d/f0.html" % h2_port)
        after = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == h2d.pid
                             and x["a"].get("url.path") == "/f0.html", 2)
        assert len(after) == 2, "\n".join(map(describe, after))
        print("bad input: preface + garbage, a random header block, a reset mid-response, a client "
              "gone before its answer: no invented spans, still tracing")

        # ---- (5) RED: the histograms count what the spans count ----
        spans = s.spans()

        def count(kind, pid):
            return len([x for x in spans if x["kind"] == kind and x["res"]["process.pid"] == pid])
        total = n + 1 + conc
        # Through Prometheus (names as otelcol's prometheus exporter makes them; job from
        # service.name). The python server also answered the call whose client left.
        for q, want in (
                ('sum(rpc_server_duration_milliseconds_count{job="grpcpy-srv"})',
                 count(SERVER, py_srv.pid)),
                ('sum(rpc_client_duration_milliseconds_count{job="grpcpy-cli"})',
                 count(CLIENT, cpid)),
                ('sum(rpc_server_duration_milliseconds_count{job="grpcpy-srv",'
                 'rpc_grpc_status_code="5",rpc_method="Method",rpc_service="pkg.Service"})', 1),
                ('sum(rpc_server_duration_milliseconds_count{job="grpctls-srv"})',
                 count(SERVER, tls_srv.pid)),
                ('sum(rpc_server_duration_milliseconds_count{job="grpcjs-srv"})',
                 count(SERVER, js_srv.pid)),
                ('sum(rpc_client_duration_milliseconds_count{job="grpcjstls-cli"})',
                 count(CLIENT, jtpid)),
                ('sum(http_server_request_duration_seconds_count{job="nghttpd-srv"})',
                 count(SERVER, h2d.pid)),
                ('sum(http_server_request_duration_seconds_count{job="nghttpd-srv",'
                 'http_route="/users/{id}",http_response_status_code="404"})', 1),
                # semconv's url.scheme and network.protocol.version
                ('sum(http_server_request_duration_seconds_count{job="nghttpd-srv",'
                 'url_scheme="http",network_protocol_version="2"})', count(SERVER, h2d.pid))):
            assert want >= 1
            prom.wait_value(q, want)
        # Units: the sum of rpc.server.duration (ms) is the sum of the server spans' durations.
        ms = sum(x["dur"] for x in spans if x["kind"] == SERVER and
                 x["res"]["process.pid"] == js_srv.pid) * 1e3
        prom.wait_value('sum(rpc_server_duration_milliseconds_sum{job="grpcjs-srv"})', ms,
                        tol=0.001 * total)
        # From the file exporter, per process: gRPC not in the http.* metrics.
        for name, pid, want in (("rpc.server.duration", js_srv.pid, total),
                                ("rpc.client.duration", jpid, total),
                                ("rpc.client.duration", tpid, total),
                                ("http.server.request.duration", py_srv.pid, 0)):
            deadline = time.time() + 10
            while True:
                got = sum(c for (p, _), c in s.histograms(name).items() if p == pid)
                if got == want or time.time() > deadline:
                    break
                time.sleep(0.2)
            # Every span of that process since check_grpc counted them, a late one included.
            mine = [x for x in s.spans() if x["res"]["process.pid"] == pid and
                    x["kind"] == (SERVER if "server" in name else CLIENT) and
                    ("rpc.system" in x["a"]) == name.startswith("rpc.")]
            assert got == want == len(mine), "%s of pid %d: %d, %d calls, %d spans:\n%s" % (
                name, pid, got, want, len(mine), "\n".join(map(describe, mine)))
        print("RED: rpc.server/client.duration and http.server.request.duration counts equal "
              "the span counts, through Prometheus and the file exporter; the ms sum is the "
              "spans' durations")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if prom:
            prom.stop()
        if s.proc.poll() is None:
            s.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    pu.run_main(main)

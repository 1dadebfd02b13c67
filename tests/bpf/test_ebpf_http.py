"""ebpf_http end to end: the real sonde traces real servers and clients on loopback and writes
OTLP-JSON with the file exporter; this script checks the spans and RED histograms with nothing of
sonde's code.

Peers: python3 -m http.server, nginx (keep-alive, a large static file by sendfile, gzip'd chunked
responses, TLS through libssl), curl, wrk, raw sockets (pipelining, 1-byte writes, random bytes,
a binary protocol), a Python server that calls a downstream while it handles a request, and a
server that resets the connection mid-response.

Needs root and a kernel with BTF, raw tracepoints, uprobes and ring buffers, and nginx, curl and
wrk: otherwise exits 77 (skipped), or fails when SONDE_REQUIRE_BPF=1.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from this import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_util as pu  # noqa: E402
from profile_util import attrs_of, free_port, skip_or_fail  # noqa: E402

SERVER, CLIENT = 2, 3


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on port %d" % port)


class Sonde(pu.SondeProcess):
    """sonde with ebpf_http -> file (spans) and file/metrics (RED), on these ports."""

    absent = 0.0

    def __init__(self, tmp, ports):
        self.traces = os.path.join(tmp, "traces.json")
        self.metrics = os.path.join(tmp, "metrics.json")
        self.mport = free_port()
        super().__init__(tmp, self.mport, """receivers:
  ebpf_http:
    open_ports: "%s"
    capture_bytes: 4096  # 4 pipelined responses in one read exceed the default 1024
    routes: {patterns: ["/status/{code}"]}
    flush_interval: 200ms
    metrics_interval: 500ms
exporters:
  file:
    path: %s
    flush_interval: 100ms
  file/metrics:
    path: %s
    flush_interval: 100ms
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
      exporters: [file/metrics]
""" % (",".join(str(p) for p in ports), self.traces, self.metrics, self.mport))

    def start(self):
        super().start(timeout=30)

    def spans(self):
        """Every span written so far, each with its resource's attributes under 'res'."""
        out = []
        if not os.path.exists(self.traces):
            return out
        with open(self.traces) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                except ValueError:
                    continue  # a line being written
                for rs in req.get("resourceSpans", []):
                    res = attrs_of(rs.get("resource", {}).get("attributes"))
                    for ss in rs.get("scopeSpans", []):
                        for sp in ss.get("spans", []):
                            sp["res"] = res
                            sp["a"] = attrs_of(sp.get("attributes"))
                            sp["dur"] = (int(sp["endTimeUnixNano"]) -
                                         int(sp["startTimeUnixNano"])) / 1e9
                            out.append(sp)
        return out

    def wait_spans(self, pred, n, timeout=20):
        """The spans matching pred once there are n of them (and a little after, to catch extras)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = [s for s in self.spans() if pred(s)]
            if len(got) >= n:
                time.sleep(0.6)  # two flush intervals: anything extra would show now
                return [s for s in self.spans() if pred(s)]
            time.sleep(0.1)
        got = [s for s in self.spans() if pred(s)]
        raise AssertionError("%d spans matching, %d expected, after %ss:\n%s" % (
            len(got), n, timeout, "\n".join(describe(s) for s in got)))

    def histograms(self, name):
        """{(pid, frozenset(attrs)): count} of the last collection of a histogram."""
        last = {}
        if not os.path.exists(self.metrics):
            return last
        with open(self.metrics) as f:
            for line in f:
                try:
                    req = json.loads(line)
                except ValueError:
                    continue
                for rm in req.get("resourceMetrics", []):
                    pid = attrs_of(rm.get("resource", {}).get("attributes")).get("process.pid")
                    for sm in rm.get("scopeMetrics", []):
                        for m in sm.get("metrics", []):
                            if m.get("name") != name:
                                continue
                            for dp in m.get("histogram", {}).get("dataPoints", []):
                                key = (pid, frozenset(attrs_of(dp.get("attributes")).items()))
                                last[key] = int(dp.get("count", 0))
        return last


def describe(s):
    return "%s kind=%d pid=%s %.6fs %s" % (s["name"], s["kind"], s["res"].get("process.pid"),
                                          s["dur"], s["a"])


def check_exchange(s, method, path, status):
    assert s["a"].get("http.request.method") == method, describe(s)
    assert s["a"].get("url.path") == path, describe(s)
    assert s["a"].get("http.response.status_code") == status, describe(s)
    err = s.get("status", {}).get("code") == 2
    want_err = status >= 500 or (s["kind"] == CLIENT and status >= 400)
    assert err == want_err, "error status: " + describe(s)


def curl(*args):
    """[(code, seconds)] per transfer: curl's own measure of each."""
    argv = ["curl", "-s", "-w", "%{http_code} %{time_total}\\n"]
    for a in args:
        argv += ["-o", "/dev/null", a] if a.startswith("http") else [a]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    res = []
    for line in out.stdout.splitlines():
        code, t = line.split()
        res.append((int(code), float(t)))
    return res, out


def read_response(sock):
    """One Content-Length response from sock."""
    got = b""
    while b"\r\n\r\n" not in got:
        b = sock.recv(65536)
        assert b, got
        got += b
    head, body = got.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(
        b"content-length:")][0])
    while len(body) < n:
        b = sock.recv(65536)
        assert b, got
        body += b
    return head


def raw_exchange(port, data, chunks=None, read_until_close=True, timeout=5):
    """Sends data (in the given chunk sizes), returns what came back; our local port too."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lport = s.getsockname()[1]
    if chunks:
        i = 0
        while i < len(data):
            s.send(data[i:i + chunks])
            i += chunks
            time.sleep(0.001)
    else:
        s.sendall(data)
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
            if not read_until_close and got.count(b"HTTP/1.1 ") >= read_until_close:
                break
    except socket.timeout:
        pass
    s.close()
    return got, lport


NGINX_CONF = """
worker_processes 1;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log;
daemon off;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path %(tmp)s/body; proxy_temp_path %(tmp)s/proxy;
  fastcgi_temp_path %(tmp)s/fcgi; uwsgi_temp_path %(tmp)s/uwsgi; scgi_temp_path %(tmp)s/scgi;
  types { text/html html; text/plain txt; }
  gzip on; gzip_types text/plain; gzip_min_length 0;
  server {
    listen 127.0.0.1:%(port)d;
    listen 127.0.0.1:%(tls_port)d ssl;
    ssl_certificate %(tmp)s/cert.pem; ssl_certificate_key %(tmp)s/key.pem;
    root %(tmp)s/www;
    location /status/ { return 503 "down\\n"; }
  }
}
"""

# HTTP/1.1 keep-alive, reads a POST's whole Content-Length body before it answers.
BODY_SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers["Content-Length"])
        got = 0
        while got < n:
            got += len(self.rfile.read(min(65536, n - got)))
        self.answer(b"got %d\n" % got)
    def do_GET(self):
        self.answer(b"get " + self.path.encode() + b"\n")
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
srv.serve_forever()
"""

RESET_SERVER = r"""
import socket, struct, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(8)
print("ready", flush=True)
while True:
    c, _ = ls.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        b = c.recv(4096)
        if not b: break
        req += b
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"""

PARENT_SERVER = r"""
import http.client, http.server, sys
down = int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        c = http.client.HTTPConnection("127.0.0.1", down, timeout=5)
        c.request("GET", "/child.html")
        body = c.getresponse().read()
        c.close()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

NODE_SERVER = r"""
const fs = require("fs"), http = require("http"), https = require("https");
const [tlsPort, v6Port, dir] = process.argv.slice(1);  // node -e: no script path
const handler = (req, res) => {
  const code = req.url.startsWith("/fail") ? 500 : 200;
  res.writeHead(code, {"content-type": "text/plain"});
  res.end("node " + req.url + "\n");
};
let up = 0;
const ready = () => { if (++up == 2) console.log("ready"); };
https.createServer({key: fs.readFileSync(dir + "/key.pem"), cert: fs.readFileSync(dir + "/cert.pem")},
                   handler).listen(tlsPort, "127.0.0.1", ready);
http.createServer(handler).listen(v6Port, "::1", ready);
"""

GRPC_SERVER = r"""
import sys, grpc
from concurrent import futures
def hello(req, ctx):
    if req == b"missing":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return b"hi " + req
h = grpc.method_handlers_generic_handler("demo.Greeter", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello)})
s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
s.add_generic_rpc_handlers((h,))
s.add_insecure_port("127.0.0.1:%s" % sys.argv[1])
s.start()
print("ready", flush=True)
s.wait_for_termination()
"""

GRPC_CLIENT = r"""
import sys, grpc
ch = grpc.insecure_channel("127.0.0.1:%s" % sys.argv[1])
call = ch.unary_unary("/demo.Greeter/Hello")
out = []
for m in [b"a", b"b", b"missing"]:
    try:
        call(m, timeout=5); out.append("OK")
    except grpc.RpcError as e:
        out.append(e.code().name)
print(" ".join(out))
ch.close()
"""


def grpc_python():
    """A Python with grpcio (Debian's python3-grpcio is for /usr/bin/python3), or None."""
    for py in ("/usr/bin/python3", sys.executable):
        if os.path.exists(py) and subprocess.run([py, "-c", "import grpc"],
                                                 capture_output=True).returncode == 0:
            return py
    return None


def main():
    if os.geteuid() != 0:
        skip_or_fail("needs root (CAP_BPF + CAP_PERFMON)")
    for tool in ("nginx", "curl", "wrk", "openssl"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            skip_or_fail("%s is not installed (scripts/deps.sh installs it)" % tool)
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = tempfile.mkdtemp(prefix="sonde-bpf-http-")
    os.chmod(tmp, 0o755)  # nginx's workers run as www-data
    py_port, ng_port, tls_port, rst_port, par_port, node_port, v6_port, grpc_port, body_port = (
        free_port() for _ in range(9))
    s = Sonde(tmp, [py_port, ng_port, tls_port, rst_port, par_port, node_port, v6_port,
                    grpc_port, body_port])
    rc, out = s.validate()
    if rc != 0:
        if "needs CAP_BPF" in out or "kernel feature missing" in out:
            skip_or_fail("sonde validate: " + out.strip())
        raise AssertionError("sonde validate failed:\n" + out)

    # Bad options and missing privileges: one clear sentence each, from `sonde validate`.
    bad = os.path.join(tmp, "bad.yaml")
    with open(s.config) as f:
        good = f.read()
    with open(bad, "w") as f:
        f.write(good.replace('open_ports: "', 'open_ports: "80-70,'))
    r = subprocess.run([s.bin, "validate", "--config", bad], capture_output=True, text=True)
    assert r.returncode != 0 and "open_ports" in r.stdout + r.stderr and "80-70" in \
        r.stdout + r.stderr, r.stdout + r.stderr
    os.chmod(s.config, 0o644)
    if shutil.which("setpriv"):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            s.bin, "validate", "--config", s.config], capture_output=True,
                           text=True)
        assert r.returncode != 0 and "needs CAP_BPF and CAP_PERFMON" in r.stdout + r.stderr, \
            r.stdout + r.stderr
    print("validate: a bad port range and a process without CAP_BPF are refused, by name")

    www = os.path.join(tmp, "www")
    os.makedirs(www)
    for i in range(10):
        with open(os.path.join(www, "f%d.html" % i), "w") as f:
            f.write("<p>file %d</p>\n" % i * (i + 1))
    with open(os.path.join(www, "child.html"), "w") as f:
        f.write("child\n")
    with open(os.path.join(www, "text.txt"), "w") as f:
        f.write("compressible line of text\n" * 4000)
    big = 8 << 20
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.write(os.urandom(big))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", os.path.join(tmp, "key.pem"),
                    "-out", os.path.join(tmp, "cert.pem")], check=True, capture_output=True)
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % {"tmp": tmp, "port": ng_port, "tls_port": tls_port})

    procs = []
    # nginx and one keep-alive connection to it exist before sonde starts: the connection's next
    # request must still make a span on both sides (its role comes from the bytes).
    ng = subprocess.Popen([nginx_bin, "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(ng)
    wait_port(ng_port)
    early = socket.create_connection(("127.0.0.1", ng_port), timeout=5)
    early_req = b"GET /f2.html?early=%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
    early.sendall(early_req % 1)
    got = read_response(early)
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    # And one in the middle of a request body when sonde starts: the first bytes sonde sees are
    # body, so the roles come from /proc (the server's local port is a listening one) and each
    # side waits for a message start that fits its role: the response, then the next request.
    body_srv = subprocess.Popen([sys.executable, "-c", BODY_SERVER, str(body_port)],
                                stdout=subprocess.PIPE)
    procs.append(body_srv)
    try:
        assert body_srv.stdout.readline().strip() == b"ready"
        mid = socket.create_connection(("127.0.0.1", body_port), timeout=5)
        half = 256 << 10
        mid.sendall(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                    % (2 * half) + b"x" * half)
        s.start()
    except BaseException:
        for p in procs:
            p.kill()
        raise
    try:
        early.sendall(early_req % 2)
        got = read_response(early)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        early_port = early.getsockname()[1]
        early.close()
        mid.sendall(b"y" * half)
        got = read_response(mid)
        assert got.startswith(b"HTTP/1.1 200"), got
        mid.sendall(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = read_response(mid)
        assert got.startswith(b"HTTP/1.1 200"), got
        mid_port = mid.getsockname()[1]
        mid.close()
        py = subprocess.Popen([sys.executable, "-m", "http.server", str(py_port), "--bind",
                               "127.0.0.1", "--directory", www], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(py)
        rst = subprocess.Popen([sys.executable, "-c", RESET_SERVER, str(rst_port)],
                               stdout=subprocess.PIPE)
        procs.append(rst)
        par = subprocess.Popen([sys.executable, "-c", PARENT_SERVER, str(par_port), str(ng_port)])
        procs.append(par)
        node = None
        if shutil.which("node"):
            node = subprocess.Popen(["node", "-e", NODE_SERVER, str(node_port), str(v6_port), tmp],
                                    stdout=subprocess.PIPE)
            procs.append(node)
            assert node.stdout.readline().strip() == b"ready"
        for p in (py_port, ng_port, tls_port, rst_port, par_port):
            wait_port(p)
        # The TLS uprobes are attached by a /proc scan every 2 s: nginx's libssl (and node, which
        # has OpenSSL inside) must be in.
        want = 2 if node else 1
        deadline = time.time() + 10
        while s.metric("sonde_ebpf_http_tls_files") < want and time.time() < deadline:
            time.sleep(0.2)

        e_srv = s.wait_spans(lambda x: x["kind"] == SERVER and
                             x["a"].get("network.peer.port") == early_port, 1)
        e_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("url.path") == "/f2.html"
                             and x["res"]["process.pid"] == os.getpid(), 1)
        assert len(e_srv) == 1 and len(e_cli) == 1, "\n".join(map(describe, e_srv + e_cli))
        assert e_srv[0]["a"].get("url.query") == "early=2", describe(e_srv[0])
        print("a connection opened before sonde: its next request makes one span each side")
        m_srv = s.wait_spans(lambda x: x["kind"] == SERVER and
                             x["a"].get("network.peer.port") == mid_port, 1)
        m_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and
                             x["a"].get("server.port") == body_port and
                             x["res"]["process.pid"] == os.getpid(), 1)
        assert len(m_srv) == 1 and len(m_cli) == 1, "\n".join(map(describe, m_srv + m_cli))
        for x in m_srv + m_cli:  # the POST began before sonde: no span for it
            assert x["a"].get("url.path") == "/after" and x["a"].get(
                "http.response.status_code") == 200 and x["a"].get("http.request.method") == \
                "GET", describe(x)
        assert m_srv[0]["res"]["process.pid"] == body_srv.pid, describe(m_srv[0])
        print("a connection seen first mid-body (opened before sonde): roles from /proc, the "
              "next request makes one span each side")

        run_checks(s, tmp, py, py_port, ng_port, tls_port, rst_port, par, par_port, big)
        if node:
            node_checks(s, node, node_port, v6_port)
        selection_checks(tmp, py, py_port, ng_port)
        gpy = grpc_python()
        if gpy:
            g = subprocess.Popen([gpy, "-c", GRPC_SERVER, str(grpc_port)], stdout=subprocess.PIPE)
            procs.append(g)
            assert g.stdout.readline().strip() == b"ready"
            grpc_checks(s, gpy, g, grpc_port)
        else:
            print("gRPC: skipped (no python3-grpcio)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if s.proc.poll() is None:
            s.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def run_checks(s, tmp, py, py_port, ng_port, tls_port, rst_port, par, par_port, big):
    # ---- python3 -m http.server + curl: N requests, N server and N client spans ----
    paths = ["/f%d.html" % i for i in range(10)] + ["/missing.html"]
    got, out = curl(*["http://127.0.0.1:%d%s" % (py_port, p) for p in paths])
    assert [c for c, _ in got] == [200] * 10 + [404], out.stdout + out.stderr
    curl_pid = None
    srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("server.port") == py_port,
                       len(paths))
    assert len(srv) == len(paths), "\n".join(map(describe, srv))
    cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("server.port") == py_port,
                       len(paths))
    assert len(cli) == len(paths), "\n".join(map(describe, cli))
    for spans in (srv, cli):
        by_path = {x["a"]["url.path"]: x for x in spans}
        assert sorted(by_path) == sorted(paths), sorted(by_path)
        for p, (code, t) in zip(paths, got):
            x = by_path[p]
            check_exchange(x, "GET", p, code)
            assert 0 < x["dur"] <= t, "span longer than curl measured (%.6f s): %s" % (
                t, describe(x))
    for x in srv:
        assert x["res"]["process.pid"] == py.pid, describe(x)
        assert x["name"] == "GET " + x["a"]["http.route"], describe(x)
        assert x["a"]["client.address"] == "127.0.0.1", describe(x)
        assert x["res"].get("service.name"), x["res"]
        assert x["res"].get("process.executable.name", "").startswith("python"), x["res"]
        assert x["res"].get("host.name") == socket.gethostname(), x["res"]
    curl_pid = cli[0]["res"]["process.pid"]
    assert all(x["res"]["process.executable.name"] == "curl" for x in cli), cli[0]["res"]
    print("python http.server + curl: %d server and %d client spans, durations inside curl's"
          % (len(srv), len(cli)))

    # ---- nginx keep-alive: one connection, N requests ----
    ng_paths = ["/f%d.html" % i for i in range(5)] + ["/status/x", "/nope"]
    got, out = curl(*["http://127.0.0.1:%d%s" % (ng_port, p) for p in ng_paths])
    assert [c for c, _ in got] == [200] * 5 + [503, 404], out.stdout
    ng_srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("server.port") == ng_port
                          and x["a"]["url.path"] in ng_paths and "url.query" not in x["a"],
                          len(ng_paths))
    assert len(ng_srv) == len(ng_paths), "\n".join(map(describe, ng_srv))
    assert len({x["a"]["network.peer.port"] for x in ng_srv}) == 1, "keep-alive: one connection"
    for p, (code, t) in zip(ng_paths, got):
        x = [y for y in ng_srv if y["a"]["url.path"] == p][0]
        check_exchange(x, "GET", p, code)
        assert x["dur"] <= t, describe(x)
    st = [x for x in ng_srv if x["a"]["url.path"] == "/status/x"][0]
    assert st["a"]["http.route"] == "/status/{code}" and st["name"] == "GET /status/{code}", \
        describe(st)
    print("nginx keep-alive: %d spans on one connection, 503 an error, a configured route" %
          len(ng_srv))

    # ---- a large file (sendfile) timed to its last byte; a gzip'd chunked response ----
    got, _ = curl("http://127.0.0.1:%d/big.bin" % ng_port)
    assert got[0][0] == 200
    b_srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("url.path") == "/big.bin", 1)
    b_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("url.path") == "/big.bin", 1)
    assert len(b_srv) == 1 and len(b_cli) == 1
    assert b_srv[0]["a"]["http.response.body.size"] == big, describe(b_srv[0])
    assert b_cli[0]["a"]["http.response.body.size"] == big, describe(b_cli[0])
    assert b_cli[0]["dur"] <= got[0][1], describe(b_cli[0])
    got, _ = curl("--compressed", "http://127.0.0.1:%d/text.txt" % ng_port)
    assert got[0][0] == 200
    t_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("url.path") == "/text.txt",
                         1)
    assert len(t_cli) == 1 and 0 < t_cli[0]["a"]["http.response.body.size"] < 4000 * 26, \
        describe(t_cli[0])
    print("8 MiB by sendfile: body size %d on both sides, %.3f ms client span; chunked gzip: %d"
          " bytes" % (b_srv[0]["a"]["http.response.body.size"], b_cli[0]["dur"] * 1e3,
                      t_cli[0]["a"]["http.response.body.size"]))

    # ---- pipelining: 3 requests in one write, answered in order ----
    reqs = b"".join(b"GET /f%d.html?pipe=1 HTTP/1.1\r\nHost: localhost\r\n\r\n" % i
                    for i in (1, 2, 3))
    reqs += b"GET /f4.html?pipe=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    resp, lport = raw_exchange(ng_port, reqs)
    assert resp.count(b"HTTP/1.1 200") == 4, resp[:300]
    pipe = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("network.peer.port") == lport
                        and x["a"].get("server.port") == ng_port, 4)
    assert [x["a"]["url.path"] for x in sorted(pipe, key=lambda x: int(x["startTimeUnixNano"]))] \
        == ["/f1.html", "/f2.html", "/f3.html", "/f4.html"], "\n".join(map(describe, pipe))
    assert all(x["a"].get("url.query") == "pipe=1" for x in pipe)
    print("pipelining: 4 requests in one write, 4 spans in order")

    # ---- 1-byte writes ----
    req = b"GET /f5.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    resp, lport = raw_exchange(ng_port, req, chunks=1)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:100]
    one = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("network.peer.port") == lport,
                       1)
    assert len(one) == 1 and one[0]["a"]["url.path"] == "/f5.html", "\n".join(map(describe, one))
    mine = s.wait_spans(lambda x: x["kind"] == CLIENT and x["res"]["process.pid"] == os.getpid()
                        and x["a"].get("url.path") == "/f5.html", 1)
    assert len(mine) == 1, "\n".join(map(describe, mine))
    print("1-byte writes: one span each side")

    # ---- bad input: random bytes, a binary protocol, partial headers: no span ----
    bad_ports = []
    for data in (os.urandom(700), b"\x00\x00\x00\x1b\x00\x00\x00\x00" + os.urandom(64),
                 b"*1\r\n$4\r\nPING\r\n", b"GET /f1.html HTTP/1.1\r\nHost: loc"):
        _, lport = raw_exchange(ng_port, data, timeout=1.5)
        bad_ports.append(lport)
    not_http_before = s.metric("sonde_ebpf_http_not_http_total")
    time.sleep(1.0)
    bad = [x for x in s.spans() if x["a"].get("network.peer.port") in bad_ports]
    assert not bad, "spans for bad input:\n" + "\n".join(map(describe, bad))
    # This process's own client spans: the 4 pipelined requests, the 1-byte one and the GET after
    # the body seen mid-way, no more.
    mine = [x for x in s.spans() if x["kind"] == CLIENT and x["res"]["process.pid"] == os.getpid()]
    assert sorted(x["a"]["url.path"] for x in mine) == sorted(
        ["/f%d.html" % i for i in range(1, 6)] + ["/f2.html", "/after"]), \
        "\n".join(map(describe, mine))
    assert not_http_before >= 2, not_http_before
    print("bad input: no spans, %d connections judged not HTTP" % not_http_before)

    # ---- reset mid-response: no invented spans; what is reported is an error ----
    got, _ = curl("http://127.0.0.1:%d/reset" % rst_port)
    time.sleep(1.0)
    r = [x for x in s.spans() if x["a"].get("url.path") == "/reset"]
    assert len([x for x in r if x["kind"] == SERVER]) <= 1 and \
        len([x for x in r if x["kind"] == CLIENT]) <= 1, "\n".join(map(describe, r))
    for x in r:
        assert x.get("status", {}).get("code") == 2, "a cut response is an error: " + describe(x)
    print("reset mid-response: %d spans, all errors" % len(r))

    # ---- traceparent continuation ----
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    got, _ = curl("-H", "traceparent: 00-%s-%s-01" % (trace, parent),
                  "http://127.0.0.1:%d/f6.html" % ng_port)
    tp = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("url.path") == "/f6.html"
                      and x["a"].get("server.port") == ng_port, 1)
    assert len(tp) == 1 and tp[0]["traceId"] == trace and tp[0]["parentSpanId"] == parent, \
        tp[0]
    print("traceparent: the server span continues the caller's trace")

    # ---- parent/child: a client call made while serving a request ----
    got, _ = curl("http://127.0.0.1:%d/parent" % par_port)
    assert got[0][0] == 200
    p_srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("url.path") == "/parent", 1)
    p_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["res"]["process.pid"] == par.pid, 1)
    assert len(p_srv) == 1 and len(p_cli) == 1, "\n".join(map(describe, p_srv + p_cli))
    assert p_cli[0]["a"]["url.path"] == "/child.html"
    assert p_cli[0]["traceId"] == p_srv[0]["traceId"], (p_cli[0], p_srv[0])
    assert p_cli[0].get("parentSpanId") == p_srv[0]["spanId"], (p_cli[0], p_srv[0])
    assert int(p_srv[0]["startTimeUnixNano"]) <= int(p_cli[0]["startTimeUnixNano"]) and \
        int(p_cli[0]["endTimeUnixNano"]) <= int(p_srv[0]["endTimeUnixNano"])
    print("parent/child: the downstream call is a child of the request being served")

    # ---- TLS: nginx (libssl uprobes) and curl ----
    got, out = curl("-k", "https://127.0.0.1:%d/f7.html" % tls_port,
                    "https://127.0.0.1:%d/status/t" % tls_port)
    assert [c for c, _ in got] == [200, 503], out.stderr
    t_srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("server.port") == tls_port
                         and x["res"].get("process.executable.name") == "nginx", 2)
    t_cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("server.port") == tls_port
                         and x["res"].get("process.executable.name") == "curl", 2)
    assert len(t_srv) == 2 and len(t_cli) == 2, "\n".join(map(describe, t_srv + t_cli))
    for x in t_srv + t_cli:
        assert x["a"]["url.scheme"] == "https", describe(x)
    assert sorted(x["a"]["url.path"] for x in t_srv) == ["/f7.html", "/status/t"]
    print("TLS: nginx and curl through libssl uprobes, 2 spans each side")

    # ---- wrk: spans for every request it completed (and those in flight when it stopped) ----
    # Paced (a 1 ms delay() per request on 4 connections, <= 4000 req/s): exact counts must not
    # depend on how much CPU the machine leaves sonde; tests/bpf/bench_http.sh saturates.
    lua = os.path.join(s.tmp, "delay.lua")
    with open(lua, "w") as f:
        f.write("function delay() return 1 end\n")
    out = subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", lua,
                          "http://127.0.0.1:%d/f8.html" % ng_port],
                         capture_output=True, text=True, timeout=60).stdout
    n = int([l for l in out.splitlines() if "requests in" in l][0].split()[0])
    w = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("url.path") == "/f8.html", n,
                     timeout=30)
    # wrk counts only responses read before its deadline: the last request of each connection
    # (and a reconnect's) can be answered, so traced, without being counted.
    assert n <= len(w) <= n + 8, "wrk completed %d, %d server spans" % (n, len(w))
    lost = s.metric("sonde_ebpf_http_records_lost_total")
    print("wrk: %d requests, %d server spans, %d records lost" % (n, len(w), lost))

    # ---- RED: the histograms count what the spans count ----
    time.sleep(1.2)
    h = s.histograms("http.server.request.duration")
    py_count = sum(c for (pid, _), c in h.items() if pid == py.pid)
    assert py_count == len(paths), (py_count, h)
    hc = s.histograms("http.client.request.duration")
    curl_count = sum(c for (pid, _), c in hc.items() if pid == curl_pid)
    curl_spans = len([x for x in s.spans() if x["kind"] == CLIENT and
                      x["res"]["process.pid"] == curl_pid])
    assert curl_count == curl_spans, (curl_count, curl_spans)
    # url.scheme and network.protocol.version (semconv's duration attributes): https for the two
    # TLS requests nginx served (SSL uprobes), http for the rest; HTTP/1.1 throughout.
    ng_pids = {x["res"]["process.pid"] for x in t_srv}
    by = {}
    for (pid, a), c in h.items():
        a = dict(a)
        if pid in ng_pids or pid == py.pid:
            k = (pid == py.pid, a.get("url.scheme"), a.get("network.protocol.version"))
            by[k] = by.get(k, 0) + c
    assert by.get((False, "https", "1.1")) == 2 and by.get((True, "http", "1.1")) == py_count \
        and set(by) <= {(False, "https", "1.1"), (False, "http", "1.1"), (True, "http", "1.1")}, by
    tls_cli = sum(c for (pid, a), c in hc.items() if dict(a).get("url.scheme") == "https" and
                  pid in {x["res"]["process.pid"] for x in t_cli})
    assert tls_cli == 2, hc
    print("RED: http.server.request.duration counts %d for python, client %d for curl" % (
        py_count, curl_count))


def node_checks(s, node, node_port, v6_port):
    # ---- Node.js https (OpenSSL linked into the node executable: uprobes there) ----
    paths = ["/n1", "/n2", "/fail/3"]
    got, out = curl("-k", *["https://127.0.0.1:%d%s" % (node_port, p) for p in paths])
    assert [c for c, _ in got] == [200, 200, 500], out.stderr
    n_srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == node.pid
                         and x["a"].get("server.port") == node_port, 3)
    assert len(n_srv) == 3, "\n".join(map(describe, n_srv))
    for p, (code, t) in zip(paths, got):
        x = [y for y in n_srv if y["a"]["url.path"] == p][0]
        check_exchange(x, "GET", p, code)
        assert x["a"]["url.scheme"] == "https" and x["dur"] <= t, describe(x)
    print("node https: 3 server spans from the uprobes in the node executable, 500 an error")

    # ---- IPv6 ----
    got, out = curl("-g", "http://[::1]:%d/v6" % v6_port)
    assert got[0][0] == 200, out.stderr
    v6 = s.wait_spans(lambda x: x["kind"] == SERVER and x["a"].get("server.port") == v6_port, 1)
    assert len(v6) == 1 and v6[0]["a"]["client.address"] == "::1", describe(v6[0])
    v6c = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("server.port") == v6_port, 1)
    assert len(v6c) == 1 and v6c[0]["a"]["network.peer.address"] == "::1", describe(v6c[0])
    print("IPv6: one span each side, addresses ::1")


def selection_checks(tmp, py, py_port, ng_port):
    # ---- selection: a second sonde that traces only nginx, by executable name ----
    sub = os.path.join(tmp, "sel")
    os.makedirs(sub)
    s2 = Sonde(sub, [py_port, ng_port])
    with open(s2.config) as f:
        cfg = f.read()
    with open(s2.config, "w") as f:
        f.write(cfg.replace("    capture_bytes: 4096", "    include: {executables: [nginx]}\n"
                            "    exclude: {pids: [\"%d\"]}\n    capture_bytes: 4096" % py.pid))
    s2.start()
    try:
        got, _ = curl("http://127.0.0.1:%d/f3.html?sel=1" % ng_port,
                      "http://127.0.0.1:%d/f3.html?sel=1" % py_port)
        assert [c for c, _ in got] == [200, 200]
        ng = s2.wait_spans(lambda x: x["a"].get("url.path") == "/f3.html", 1)
        assert len(ng) == 1 and ng[0]["kind"] == SERVER and \
            ng[0]["res"]["process.executable.name"] == "nginx", "\n".join(map(describe, ng))
    finally:
        s2.stop()
    print("selection: include executables [nginx] traces nginx only (not curl, not python)")


def grpc_checks(s, gpy, g, port):
    # ---- gRPC over h2c (grpcio both sides): one span per call, grpc-status from trailers ----
    out = subprocess.run([gpy, "-c", GRPC_CLIENT, str(port)], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["OK", "OK", "NOT_FOUND"], out.stdout + out.stderr
    srv = s.wait_spans(lambda x: x["kind"] == SERVER and x["res"]["process.pid"] == g.pid, 3)
    cli = s.wait_spans(lambda x: x["kind"] == CLIENT and x["a"].get("server.port") == port, 3)
    assert len(srv) == 3 and len(cli) == 3, "\n".join(map(describe, srv + cli))
    for spans in (srv, cli):
        spans.sort(key=lambda x: int(x["startTimeUnixNano"]))
        assert [x["name"] for x in spans] == ["/demo.Greeter/Hello"] * 3, spans
        assert [x["a"].get("rpc.grpc.status_code") for x in spans] == [0, 0, 5], \
            "\n".join(map(describe, spans))
        assert all(x["a"]["rpc.service"] == "demo.Greeter" and x["a"]["rpc.method"] == "Hello"
                   for x in spans)
    # NOT_FOUND is an error for the client only (semconv).
    assert [x.get("status", {}).get("code") == 2 for x in cli] == [False, False, True]
    assert not any(x.get("status", {}).get("code") == 2 for x in srv)
    time.sleep(1.2)
    h = s.histograms("rpc.server.duration")
    n = sum(c for (pid, _), c in h.items() if pid == g.pid)
    assert n == 3, h
    print("gRPC h2c: 3 calls, 3 spans each side with grpc-status 0, 0, 5; rpc.server.duration 3")


if __name__ == "__main__":
    pu.run_main(main)

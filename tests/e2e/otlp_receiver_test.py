"""otlp receiver end to end: the OpenTelemetry JS SDK (npm) sends spans, metrics and logs over
OTLP/gRPC (plain, gzip, TLS with a client certificate), OTLP/HTTP protobuf and OTLP/HTTP JSON;
a pipeline otlp -> file(json) writes them and every item is checked with its attributes, resource,
scope and ids. curl and a raw HTTP/2 client (Node's http2) cover the error answers: 405, 415,
413 (also zip bombs), 400, 404, gRPC UNIMPLEMENTED / INVALID_ARGUMENT / RESOURCE_EXHAUSTED,
UNAVAILABLE and 503 + Retry-After when memory_limiter refuses, and stalled clients timed out.

Needs node + npm; runs `npm ci` in tests/e2e/node when its node_modules is missing."""
import base64
import http.client
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")


def npm_ci():
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@opentelemetry", "sdk-trace-base")):
        return
    subprocess.run(["npm", "ci", "--prefix", NODE_DIR, "--no-audit", "--no-fund"], check=True)


def node(script, *args, timeout=120):
    p = subprocess.run(["node", os.path.join(NODE_DIR, script)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("%s %s failed (%d):\n%s" % (script, args, p.returncode,
                                                          p.stderr.decode(errors="replace")))
    return json.loads(p.stdout.decode())


def ports(n):
    """n distinct random high ports that are free right now (sonde may still lose a race: the
    caller retries)."""
    out = []
    while len(out) < n:
        p = random.randint(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        if p not in out:
            out.append(p)
    return out


STARTED = []  # killed at exit if a failed check left them running


def start(make_config, name, nports=2):
    """Starts sonde on fresh ports; retries when one was taken meanwhile."""
    for _ in range(5):
        ps = ports(nports)
        s = harness.Sonde(make_config(*ps), name).start()
        STARTED.append(s)
        try:
            s.wait_log(r"everything is running|cannot listen|error", timeout=20)
        except AssertionError:
            s.proc.kill()
            raise
        if "everything is running" in s.log():
            return s, ps
        s.stop()
        if "address already in use" not in s.log().lower() and "already exists" not in s.log():
            raise AssertionError("sonde did not start:\n" + s.log())
    raise AssertionError("no free ports")


def base_config(grpc_extra="", http_extra="", processors="", telemetry=None):
    def make(gport, hport):
        tel = telemetry or "  telemetry:\n    metrics:\n      level: none\n"
        procs = "      processors: [%s]\n" % processors if processors else ""
        pl = "".join("    %s:\n      receivers: [otlp]\n%s      exporters: [file]\n" % (sig, procs)
                     for sig in ("traces", "metrics", "logs"))
        pdef = "processors:\n  memory_limiter: {check_interval: 100ms, limit_mib: 2, " \
               "spike_limit_mib: 1}\n" if processors else ""
        return """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
%s      http:
        endpoint: 127.0.0.1:%d
%s%sexporters:
  file: {path: "@TMP@/out.json", flush_interval: 10ms}
service:
%s  pipelines:
%s""" % (gport, grpc_extra, hport, http_extra, pdef, tel, pl)
    return make


# ---- reading what the file exporter wrote -----------------------------------------------------

def records(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().split(b"\n") if line.strip()]


def attrs(kvs):
    out = {}
    for kv in kvs or []:
        out[kv["key"]] = kv.get("value", {})
    return out


def collect(path):
    spans, points, logs = {}, [], []
    for rec in records(path):
        for rs in rec.get("resourceSpans", []):
            ra = attrs(rs.get("resource", {}).get("attributes"))
            for ss in rs.get("scopeSpans", []):
                for sp in ss.get("spans", []):
                    spans[sp["spanId"]] = (sp, ra, ss.get("scope", {}))
        for rm in rec.get("resourceMetrics", []):
            ra = attrs(rm.get("resource", {}).get("attributes"))
            for sm in rm.get("scopeMetrics", []):
                for m in sm.get("metrics", []):
                    for kind in ("sum", "gauge", "histogram"):
                        for dp in m.get(kind, {}).get("dataPoints", []):
                            points.append((m["name"], kind, m.get(kind), dp, ra, sm.get("scope", {})))
        for rl in rec.get("resourceLogs", []):
            ra = attrs(rl.get("resource", {}).get("attributes"))
            for sl in rl.get("scopeLogs", []):
                for lr in sl.get("logRecords", []):
                    logs.append((lr, ra, sl.get("scope", {})))
    return spans, points, logs


def check_resource(ra, kind, run, what):
    assert ra.get("service.name") == {"stringValue": "e2e-" + kind}, (what, ra)
    assert ra.get("e2e.run") == {"stringValue": run}, (what, ra)
    assert ra.get("e2e.int") == {"intValue": "42"}, (what, ra)
    assert ra.get("e2e.bool") == {"boolValue": True}, (what, ra)
    assert ra.get("telemetry.sdk.language") == {"stringValue": "nodejs"}, (what, ra)


def check_scope(sc, what):
    assert sc.get("name") == "e2e-scope" and sc.get("version") == "1.2.3", (what, sc)


def num(v):
    return float(v.get("asInt", v.get("asDouble", "nan")))


def check_sent(sent, collected):
    spans, points, logs = collected
    kind, run = sent["kind"], sent["run"]
    for e in sent["spans"]:
        got = spans.get(e["spanId"])
        assert got, "%s: span %s (%s) did not arrive" % (kind, e["name"], e["spanId"])
        sp, ra, sc = got
        what = "%s span %s" % (kind, e["name"])
        assert sp["traceId"] == e["traceId"], (what, sp)
        assert sp.get("parentSpanId", "") == e["parentSpanId"], (what, sp)
        assert sp["name"] == e["name"], (what, sp)
        check_resource(ra, kind, run, what)
        check_scope(sc, what)
        if e["index"] >= 0:
            i = e["index"]
            a = attrs(sp.get("attributes"))
            assert a["e2e.index"] == {"intValue": str(i)}, (what, a)
            assert a["e2e.name"] == {"stringValue": "item-%d" % i}, (what, a)
            assert a["e2e.half"] == {"doubleValue": i / 2 + 0.25}, (what, a)
            assert a["e2e.list"] == {"arrayValue": {"values": [
                {"stringValue": "a"}, {"stringValue": "b%d" % i}]}}, (what, a)
            ev = sp.get("events", [])
            assert len(ev) == 1 and ev[0]["name"] == "ev" and \
                attrs(ev[0]["attributes"])["e2e.ev"] == {"intValue": str(i)}, (what, ev)
    mine = [p for p in points if p[4].get("e2e.run") == {"stringValue": run}]
    for e in sent["points"]:
        what = "%s point %s %s" % (kind, e["metric"], e.get("index"))
        cands = [p for p in mine if p[0] == e["metric"] and
                 ("index" not in e or
                  attrs(p[3].get("attributes")).get("e2e.index") == {"intValue": str(e["index"])})]
        # forceFlush and shutdown both collect: cumulative points may come twice, identical.
        assert cands, "%s: did not arrive" % what
        for name, mkind, body, dp, ra, sc in cands:
            check_resource(ra, kind, run, what)
            check_scope(sc, what)
            if e["metric"] == "e2e.histogram":
                assert mkind == "histogram" and dp["count"] == str(e["count"]) and \
                    float(dp["sum"]) == e["sum"], (what, dp)
            else:
                assert mkind == "sum" and num(dp) == e["value"], (what, dp)
                assert body.get("isMonotonic", False) == (e["metric"] == "e2e.counter"), \
                    (what, body)
    mylogs = [lg for lg in logs if lg[1].get("e2e.run") == {"stringValue": run}]
    for e in sent["logs"]:
        what = "%s log %s" % (kind, e["body"])
        cands = [lg for lg in mylogs if lg[0].get("body") == {"stringValue": e["body"]}]
        assert len(cands) == 1, "%s: %d records" % (what, len(cands))
        lr, ra, sc = cands[0]
        check_resource(ra, kind, run, what)
        check_scope(sc, what)
        assert lr.get("severityNumber") == 9 and lr.get("severityText") == "INFO", (what, lr)
        a = attrs(lr.get("attributes"))
        assert a["e2e.index"] == {"intValue": str(e["index"])}, (what, a)
        assert a["e2e.name"] == {"stringValue": "item-%d" % e["index"]}, (what, a)


def wait_items(path, pred, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        c = collect(path)
        if pred(c):
            return c
        time.sleep(0.1)
    return collect(path)


# ---- a hand-made request (bytes written here, not by sonde) ----------------------------------

def pb_len(field, data):
    out, n = bytes([field << 3 | 2]), len(data)
    while n > 0x7F:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n]) + data


def trace_request(name, span_id):
    """ExportTraceServiceRequest with one span: trace id 16 x 0xab, span id span_id (8 bytes)."""
    span = pb_len(1, b"\xab" * 16) + pb_len(2, span_id) + pb_len(5, name.encode())
    res = pb_len(1, pb_len(1, pb_len(1, b"service.name") + pb_len(2, pb_len(1, b"handmade"))))
    return pb_len(1, res + pb_len(2, pb_len(2, span)))


def trace_json(name, span_id_hex):
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "handmade"}}]},
        "scopeSpans": [{"spans": [{"traceId": "ab" * 16, "spanId": span_id_hex, "name": name,
                                   "kind": 2}]}]}]}).encode()


def compress(data, how):
    if how == "gzip":
        return subprocess.run(["gzip", "-c"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def curl(url, data=None, headers=(), method="POST", data_file=None):
    """(status, headers text, body bytes) with the real curl."""
    args = ["curl", "-s", "-i", "-X", method, "--max-time", "20"]
    for h in headers:
        args += ["-H", h]
    if data_file:
        args += ["--data-binary", "@" + data_file]
    elif data is not None:
        args += ["--data-binary", "@-"]
    p = subprocess.run(args + [url], input=data, stdout=subprocess.PIPE, check=True)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode(errors="replace"), body


def grpc_frame(msg, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, len(msg)) + msg


TRACE_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# ---- tests -------------------------------------------------------------------------------------

def test_real_clients():
    s, (gport, hport) = start(base_config(), "otlp-clients")
    out = s.path("out.json")
    grpc_url, http_url = "http://127.0.0.1:%d" % gport, "http://127.0.0.1:%d" % hport
    sent = [node("otlp_receiver_send.js", "grpc", grpc_url, "grpc-plain"),
            node("otlp_receiver_send.js", "grpc", grpc_url, "grpc-gzip", "gzip"),
            node("otlp_receiver_send.js", "proto", http_url, "proto-plain"),
            node("otlp_receiver_send.js", "proto", http_url, "proto-gzip", "gzip"),
            node("otlp_receiver_send.js", "json", http_url, "json-plain"),
            node("otlp_receiver_send.js", "json", http_url, "json-gzip", "gzip")]
    # curl: gzip and zstd bodies in both content types, keep-alive over one connection.
    handmade = {}
    for i, (ct, enc) in enumerate([("json", "gzip"), ("json", "zstd"), ("proto", "gzip"),
                                   ("proto", "zstd"), ("proto", None)]):
        sid = struct.pack(">Q", 0x5000 + i)
        name = "curl-%s-%s" % (ct, enc)
        body = trace_json(name, sid.hex()) if ct == "json" else trace_request(name, sid)
        hdrs = ["Content-Type: application/%s" % ("json" if ct == "json" else "x-protobuf")]
        if enc:
            body = compress(body, enc)
            hdrs.append("Content-Encoding: " + enc)
        st, head, resp = curl(http_url + "/v1/traces", body, hdrs)
        assert st == 200, (name, st, head, resp)
        assert resp == (b"{}" if ct == "json" else b""), (name, resp)
        handmade[sid.hex()] = name
    conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
    for i in range(3):
        sid = struct.pack(">Q", 0x6000 + i)
        conn.request("POST", "/v1/traces", trace_request("keepalive-%d" % i, sid),
                     {"Content-Type": "application/x-protobuf"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and r.getheader("Connection", "") != "close", r.status
        handmade[sid.hex()] = "keepalive-%d" % i
    conn.close()
    want_spans = sum(len(x["spans"]) for x in sent) + len(handmade)
    wait_items(out, lambda c: len(c[0]) >= want_spans)
    s.stop_ok()
    c = collect(out)
    for x in sent:
        check_sent(x, c)
    for sid, name in handmade.items():
        sp = c[0].get(sid)
        assert sp and sp[0]["name"] == name and sp[0]["traceId"] == "ab" * 16, (name, sp)
        assert sp[1]["service.name"] == {"stringValue": "handmade"}, sp
    n = (len(c[0]), len(c[1]), len(c[2]))
    print("real clients: %d spans, %d points, %d logs from grpc/proto/json (+gzip), curl gzip/zstd"
          % n)


def test_http_errors():
    s, (gport, hport) = start(base_config(http_extra="        max_request_body_size: 64KiB\n"
                                                     "        read_timeout: 1s\n"
                                                     "        traces_url_path: custom/traces\n"),
                              "otlp-http-errors")
    u = "http://127.0.0.1:%d" % hport
    ok = trace_request("x", b"\x01" * 8)
    st, head, _ = curl(u + "/custom/traces", ok, ["Content-Type: application/x-protobuf"])
    assert st == 200, (st, head)
    st, _, _ = curl(u + "/v1/traces", ok, ["Content-Type: application/x-protobuf"])
    assert st == 404, st
    st, head, _ = curl(u + "/v1/logs", None, method="GET")
    assert st == 405 and re.search(r"(?im)^Allow: POST", head), (st, head)
    st, head, body = curl(u + "/v1/metrics", b"x", ["Content-Type: text/plain"])
    assert st == 415, (st, head)
    st, head, body = curl(u + "/v1/logs", b"\xff\xff\xff", ["Content-Type: application/x-protobuf"])
    assert st == 400 and b"unable to decode" in body, (st, body)
    st, head, body = curl(u + "/v1/logs", b"{not json", ["Content-Type: application/json"])
    assert st == 400 and body.startswith(b'{"code":3,'), (st, body)
    st, head, body = curl(u + "/v1/logs", b"x", ["Content-Type: application/json",
                                                 "Content-Encoding: br"])
    assert st == 400, (st, body)
    st, head, body = curl(u + "/v1/logs", b"not gzip", ["Content-Type: application/json",
                                                        "Content-Encoding: gzip"])
    assert st == 400, (st, body)
    big = b"\0" * (100 << 10)
    st, _, _ = curl(u + "/v1/metrics", big, ["Content-Type: application/x-protobuf"])
    assert st == 413, st
    for enc in ("gzip", "zstd"):  # 16 MiB of zeros in a few KiB: a bomb
        bomb = compress(b"\0" * (16 << 20), enc)
        assert len(bomb) < (64 << 10), len(bomb)
        st, head, body = curl(u + "/v1/metrics", bomb, ["Content-Type: application/x-protobuf",
                                                        "Content-Encoding: " + enc])
        assert st == 413, (enc, st, head, body)
    # A client that never finishes its request is closed after read_timeout.
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", hport), timeout=10) as sk:
        sk.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n{\"resou")
        data = sk.recv(4096)
        while data and not data.endswith(b"\n") and b"HTTP/1.1" not in data:
            data += sk.recv(4096)
        rest = sk.recv(4096)
    took = time.time() - t0
    assert took < 5 and rest == b"", (took, data, rest)
    s.stop_ok()
    print("http errors: 404, 405 + Allow, 415, 400 (proto, json, encoding), 413 (body, gzip and "
          "zstd bombs), stalled request closed after %.1fs" % took)


def test_grpc_errors():
    s, (gport, hport) = start(base_config(grpc_extra="        max_recv_msg_size_mib: 1\n"
                                                     "        read_timeout: 1s\n"),
                              "otlp-grpc-errors")
    tmp = s.tmp
    ok = trace_request("zstd-ok", b"\x02" * 8)
    bomb = compress(b"\0" * (8 << 20), "gzip")

    def f(name, data):
        p = os.path.join(tmp, name)
        with open(p, "wb") as fh:
            fh.write(data)
        return p

    cases = [
        {"path": "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
         "body_hex": grpc_frame(ok).hex()},
        {"path": "/no.Such/Export", "body_hex": grpc_frame(ok).hex()},
        {"path": TRACE_PATH, "body_hex": grpc_frame(b"\xff\xff\xff\xff").hex()},
        {"path": TRACE_PATH, "body_file": f("big", grpc_frame(b"\0" * (2 << 20)))},
        {"path": TRACE_PATH, "headers": {"grpc-encoding": "zstd"},
         "body_hex": grpc_frame(compress(ok, "zstd"), True).hex()},
        {"path": TRACE_PATH, "headers": {"grpc-encoding": "gzip"},
         "body_hex": grpc_frame(compress(trace_request("gzip-ok", b"\x03" * 8), "gzip"),
                                True).hex()},
        {"path": TRACE_PATH, "headers": {"grpc-encoding": "gzip"},
         "body_hex": grpc_frame(bomb, True).hex()},
        {"path": TRACE_PATH, "headers": {"grpc-encoding": "snappy"},
         "body_hex": grpc_frame(ok, True).hex()},
        {"path": TRACE_PATH, "body_hex": grpc_frame(ok, True).hex()},
        {"path": TRACE_PATH, "body_hex": grpc_frame(ok).hex(), "stall": True, "wait_ms": 8000},
    ]
    res = node("otlp_receiver_h2raw.js", "http://127.0.0.1:%d" % gport,
               f("cases.json", json.dumps(cases).encode()))
    want = [12, 12, 3, 8, 0, 0, 8, 12, 13]
    got = [r["grpcStatus"] for r in res[:len(want)]]
    assert got == want, "grpc statuses %s, want %s:\n%s" % (got, want, json.dumps(res, indent=1))
    assert all(r["status"] == 200 for r in res[:len(want)]), res
    assert res[4]["body"] == "0000000000", res[4]  # the empty ExportTraceServiceResponse
    assert "larger than max" in res[3]["grpcMessage"], res[3]
    stall = res[-1]
    assert not stall.get("timedOut") and stall.get("closedAfterMs", 99999) < 5000, stall
    out = s.path("out.json")
    c = wait_items(out, lambda c: len(c[0]) >= 2)
    s.stop_ok()
    assert c[0].get("02" * 8) and c[0].get("03" * 8), "zstd/gzip messages did not arrive"
    print("grpc errors: UNIMPLEMENTED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED (size, gzip bomb), "
          "INTERNAL (bad flag), zstd + gzip OK, stalled stream closed after %d ms"
          % stall["closedAfterMs"])


def test_refused():
    mport = ports(1)[0]
    tel = "  telemetry:\n    metrics:\n      address: 127.0.0.1:%d\n" % mport
    s, (gport, hport) = start(base_config(processors="memory_limiter", telemetry=tel),
                              "otlp-refused")
    s.wait_log(r"Memory usage is above soft limit")
    st, head, body = curl("http://127.0.0.1:%d/v1/traces" % hport,
                          trace_request("r", b"\x04" * 8),
                          ["Content-Type: application/x-protobuf"])
    assert st == 503 and re.search(r"(?im)^Retry-After: \d+", head), (st, head)
    assert body[:2] == b"\x08\x0e", body  # google.rpc.Status code 14
    tmp = s.tmp
    p = os.path.join(tmp, "cases.json")
    with open(p, "w") as fh:
        json.dump([{"path": TRACE_PATH, "body_hex": grpc_frame(trace_request("r", b"\x05" * 8))
                    .hex()}], fh)
    res = node("otlp_receiver_h2raw.js", "http://127.0.0.1:%d" % gport, p)
    assert res[0]["grpcStatus"] == 14, res
    _, text = harness.http_get("http://127.0.0.1:%d/metrics" % mport)
    s.stop_ok()
    lines = [ln for ln in text.splitlines() if ln.startswith("otelcol_receiver_refused_spans")]
    assert any('transport="http"' in ln and ln.endswith(" 1") for ln in lines), lines
    assert any('transport="grpc"' in ln and ln.endswith(" 1") for ln in lines), lines
    print("refused: HTTP 503 + Retry-After, gRPC UNAVAILABLE, counted per transport")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def test_tls():
    import tempfile
    d = tempfile.mkdtemp(prefix="sonde-e2e-otlp-tls-")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=e2e-ca",
            "-keyout", p("ca.key"), "-out", p("ca.crt"))
    with open(p("ext"), "w") as fh:
        fh.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + who, "-keyout",
                p(who + ".key"), "-out", p(who + ".csr"))
        openssl("x509", "-req", "-in", p(who + ".csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", p("ext"), "-out", p(who + ".crt"))
    tls = ("        tls:\n          cert_file: %s\n          key_file: %s\n"
           "          client_ca_file: %s\n" % (p("server.crt"), p("server.key"), p("ca.crt")))
    s, (gport, hport) = start(base_config(grpc_extra=tls), "otlp-tls")
    env = dict(os.environ, E2E_TLS_DIR=d)
    r = subprocess.run(["node", os.path.join(NODE_DIR, "otlp_receiver_send.js"), "grpc",
                        "https://localhost:%d" % gport, "grpc-tls"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    sent = json.loads(r.stdout)
    env2 = dict(env, E2E_TLS_NO_CLIENT_CERT="1")
    r2 = subprocess.run(["node", os.path.join(NODE_DIR, "otlp_receiver_send.js"), "grpc",
                         "https://localhost:%d" % gport, "grpc-nocert"], env=env2,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    out = s.path("out.json")
    wait_items(out, lambda c: len(c[0]) >= len(sent["spans"]))
    s.stop_ok()
    c = collect(out)
    check_sent(sent, c)
    assert r2.returncode != 0, "a client without a certificate got through"
    assert not [x for x in c[0].values() if x[1].get("e2e.run") == {"stringValue": "grpc-nocert"}]
    print("tls: grpc over TLS with a client certificate delivered everything; without one refused")


def test_config():
    bad = [("      grpc:\n        endpoint: none\n      http:\n        endpoint: none\n",
            "at least one protocol"),
           ("      http:\n        tls:\n          cert_file: /x\n          key_file: /y\n",
            "not supported")]
    for protos, msg in bad:
        cfg = """
receivers:
  otlp:
    protocols:
%sexporters:
  file: {path: /tmp/x.json}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
""" % protos
        s = harness.Sonde(cfg, "otlp-config")
        rc, out = harness.run_cli("validate", "--config", s.config)
        assert rc != 0 and msg in out, (rc, out)
    print("config: otelcol's validation messages")


def h2_frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + \
        payload


def hpack_literal(headers):
    """Header block of literals without indexing and without Huffman (names and values < 127)."""
    out = b""
    for k, v in headers:
        out += b"\x00" + bytes([len(k)]) + k.encode() + bytes([len(v)]) + v.encode()
    return out


def read_frames(sk, until):
    """Frames (type, flags, stream, payload) until the peer closes or `until` (seconds) passes."""
    buf, frames, closed = b"", [], False
    sk.settimeout(0.1)
    deadline = time.time() + until
    while time.time() < deadline:
        try:
            d = sk.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not d:
            closed = True
            break
        buf += d
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF,
                           buf[9:9 + n]))
            buf = buf[9 + n:]
    return frames, closed


def test_h2_limits():
    """max_concurrent_streams is announced and enforced; keepalive PINGs an idle client and
    closes the connection when the PING is not answered."""
    extra = ("        max_concurrent_streams: 2\n"
             "        keepalive:\n          server_parameters:\n"
             "            time: 300ms\n            timeout: 300ms\n")
    s, (gport, hport) = start(base_config(grpc_extra=extra), "otlp-h2-limits")
    hdrs = hpack_literal([(":method", "POST"), (":scheme", "http"), (":path", TRACE_PATH),
                          (":authority", "x"), ("content-type", "application/grpc"),
                          ("te", "trailers")])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)
    with socket.create_connection(("127.0.0.1", gport), timeout=10) as sk:
        sk.sendall(preface)
        first, _ = read_frames(sk, 0.3)  # the server's SETTINGS
        sk.sendall(h2_frame(4, 1, 0) + b"".join(h2_frame(1, 4, sid, hdrs) for sid in (1, 3, 5)))
        frames, closed = read_frames(sk, 5)
    settings = [f for f in first if f[0] == 4 and not f[1] & 1]
    assert settings and struct.pack(">HI", 3, 2) in settings[0][3], first
    # nghttp2 treats a stream over the acknowledged limit as a connection error: GOAWAY
    # PROTOCOL_ERROR naming the last stream it took (grpc-go would RST_STREAM it instead).
    goaway = [f for f in frames if f[0] == 7]
    assert goaway and goaway[0][3][:8] == struct.pack(">II", 3, 1) and closed, frames
    # Keepalive: a client that goes silent is PINGed, and closed when it does not answer.
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", gport), timeout=10) as sk:
        sk.sendall(preface)
        first, _ = read_frames(sk, 0.1)
        sk.sendall(h2_frame(4, 1, 0))
        frames, closed = read_frames(sk, 5)
    took = time.time() - t0
    pings = [f for f in frames if f[0] == 6 and not f[1] & 1]
    assert pings and closed and took < 4, (frames, closed, took)
    s.stop_ok()
    print("h2 limits: a stream over max_concurrent_streams gets GOAWAY; an unanswered keepalive "
          "PING closed the "
          "connection after %.1fs" % took)


def test_profiles():
    """Profiles (v1development) over OTLP/HTTP JSON and OTLP/gRPC protobuf."""
    def make(gport, hport):
        return """
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:%d"}
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  file: {path: "@TMP@/out.json", flush_interval: 10ms}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    profiles: {receivers: [otlp], exporters: [file]}
""" % (gport, hport)
    s, (gport, hport) = start(make, "otlp-profiles")
    body = json.dumps({"resourceProfiles": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "prof-http"}}]}, "scopeProfiles": [
        {"profiles": [{"profileId": "0102030405060708090a0b0c0d0e0f10", "timeUnixNano": "5"}]}
    ]}], "dictionary": {}}).encode()
    st, head, resp = curl("http://127.0.0.1:%d/v1development/profiles" % hport, body,
                          ["Content-Type: application/json"])
    assert st == 200 and resp == b"{}", (st, head, resp)
    st, _, _ = curl("http://127.0.0.1:%d/v1/traces" % hport, b"{}",
                    ["Content-Type: application/json"])
    assert st == 404, st  # no traces pipeline takes from this receiver
    res_attr = pb_len(1, pb_len(1, b"service.name") + pb_len(2, pb_len(1, b"prof-grpc")))
    msg = pb_len(1, pb_len(1, res_attr))
    p = os.path.join(s.tmp, "cases.json")
    with open(p, "w") as fh:
        json.dump([{"path": "/opentelemetry.proto.collector.profiles.v1development."
                    "ProfilesService/Export", "body_hex": grpc_frame(msg).hex()},
                   {"path": TRACE_PATH, "body_hex": grpc_frame(trace_request("x", b"\x09" * 8))
                    .hex()}], fh)
    res = node("otlp_receiver_h2raw.js", "http://127.0.0.1:%d" % gport, p)
    assert res[0]["grpcStatus"] == 0 and res[1]["grpcStatus"] == 12, res
    out = s.path("out.json")
    deadline = time.time() + 10
    names = set()
    while time.time() < deadline and len(names) < 2:
        names = {attrs(rp["resource"]["attributes"])["service.name"]["stringValue"]
                 for rec in records(out) for rp in rec.get("resourceProfiles", [])}
        time.sleep(0.1)
    s.stop_ok()
    assert names == {"prof-http", "prof-grpc"}, names
    print("profiles: OTLP/HTTP JSON and OTLP/gRPC arrive; unconfigured signals answer 404")


def main():
    npm_ci()
    only = sys.argv[1:]
    try:
        for t in (test_config, test_http_errors, test_grpc_errors, test_h2_limits, test_profiles,
                  test_refused, test_real_clients, test_tls):
            if not only or t.__name__ in only:
                t()
    finally:
        for s in STARTED:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()


if __name__ == "__main__":
    harness.main(main)

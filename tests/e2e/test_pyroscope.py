"""pyroscope exporter: OTLP/HTTP JSON profiles -> symbolizer -> pyroscope -> a Pyroscope stand-in
in Node (tests/e2e/node/pyroscope_reference.js) that decodes the pprof with npm pprof-format.

The profiles are chain_request's (shared with test_pprof and test_parca): a real C binary
(gcc -O2 -g) whose stack inner_step (inlined) <- leaf_work <- middle_call <- outer_entry <- main
is symbolized by sonde; two services, samples/count with a cpu/nanoseconds period of 19 Hz.

Cases: /ingest over http with basic auth, X-Scope-OrgID and a custom header (name, labels, from,
until, sampleRate, spyName, sample types, function names); push.v1 over https verified with a
self-signed CA (labels, ids, timestamps); push.v1 over gRPC h2c with auth metadata (UNAVAILABLE
retried); 503 retried until accepted; 400 dropped, not retried.
"""
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import time

import harness
import test_symbolizer as ts

PERIOD = 52631578  # 19 Hz
NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
ITEMS = 8  # what the core counts for a batch: its samples (two per profile)
POD1 = "checkout.cpu{host_name=node-1,k8s_pod_name=pod-1}"
POD2 = "checkout.cpu{host_name=node-1,k8s_pod_name=pod-2}"
CHAIN = ["inner_step", "leaf_work", "middle_call", "outer_entry", "main"]


def chain_request(tmp, t_ns, labels=()):
    """The OTLP profiles request skeleton of the profile exporters' tests: a real C binary (gcc -O2
    -g, test_symbolizer's) mapped at 0x555555554000 with two stacks, 1: inner_step (inlined) <-
    leaf_work <- middle_call <- outer_entry <- main and 2: the same without its leaf. Returns
    (body without resourceProfiles, binary path, build id, profile(n_leaf, n_mid)), profile giving
    samples/count profiles with a 19 Hz cpu/nanoseconds period at t_ns, whose stack-1 sample
    carries the attributes labels ((key, OTLP AnyValue) pairs)."""
    full = ts.compile_c(tmp, "app", 11)
    bid = ts.build_id(full)
    syms = ts.symbols(full)
    va, _ = ts.inlined_address(full)
    # return addresses: one byte into each caller
    chain = [va] + [syms[f][0] + 1 for f in ("middle_call", "outer_entry", "main")]
    prof = ts.Profile()
    start, size = 0x555555554000, 0x10000
    m = prof.mapping(full, bid, start, start + size, 0)
    locs = [prof.location(m, ts.vaddr_to_offset(full, a)) for a in chain]
    lab = []
    for key, value in labels:
        prof.attrs.append({"keyStrindex": prof.s(key), "value": value})
        lab.append(len(prof.attrs) - 1)
    body = prof.body()
    d = body["dictionary"]
    d["stackTable"] = [{}, {"locationIndices": locs}, {"locationIndices": locs[1:]}]
    st = d["stringTable"]
    for w in ("samples", "count", "cpu", "nanoseconds"):
        if w not in st:
            st.append(w)

    def profile(n_leaf, n_mid):
        leaf = {"stackIndex": 1, "values": [str(n_leaf)]}
        if lab:
            leaf["attributeIndices"] = lab
        return {"sampleType": {"typeStrindex": st.index("samples"),
                               "unitStrindex": st.index("count")},
                "periodType": {"typeStrindex": st.index("cpu"),
                               "unitStrindex": st.index("nanoseconds")},
                "period": str(PERIOD), "timeUnixNano": str(t_ns), "durationNano": "10000000000",
                "samples": [leaf, {"stackIndex": 2, "values": [str(n_mid)]}]}
    return body, full, bid, profile


def profiles_body(tmp, t_ns):
    """Two services: checkout on pod-1 (5 + 2 samples), checkout on pod-2 in two resources with
    the same attributes (4 + 1 and 2 + 2: one series), cart/api (3 + 1)."""
    body, full, bid, profile = chain_request(tmp, t_ns)

    def res(name, **attrs):
        a = [{"key": "service.name", "value": {"stringValue": name}}]
        for k, v in attrs.items():
            a.append({"key": k.replace("_", "."), "value": {"stringValue": v}})
        return {"attributes": a}
    body["resourceProfiles"] = [
        {"resource": res("checkout", host_name="node-1", k8s_pod_name="pod-1"),
         "scopeProfiles": [{"profiles": [profile(5, 2)]}]},
        {"resource": res("checkout", host_name="node-1", k8s_pod_name="pod-2"),
         "scopeProfiles": [{"profiles": [profile(4, 1)]}]},
        {"resource": res("cart/api"), "scopeProfiles": [{"profiles": [profile(3, 1)]}]},
        {"resource": res("checkout", k8s_pod_name="pod-2", host_name="node-1"),
         "scopeProfiles": [{"profiles": [profile(2, 2)]}]}]
    return body, full, bid


class Reference:
    """A Node reference server writing one JSON line per request."""

    def __init__(self, tmp, script, *args):
        self.out = os.path.join(tmp, os.path.basename(script) + ".%d.jsonl" % time.time_ns())
        self.proc = subprocess.Popen(["node", os.path.join(NODE, script), "--out", self.out] +
                                     list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=NODE)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"listening (\d+)", line)
        if not m:
            rest = self.proc.stdout.read().decode() if self.proc.poll() is not None else ""
            raise AssertionError("reference server did not start: %s%s" % (line, rest))
        self.port = int(m.group(1))

    def records(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return [json.loads(l) for l in f if l.strip()]

    def wait(self, n, timeout=30, what=""):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.records()
            if len(r) >= n:
                return r
            time.sleep(0.05)
        raise AssertionError("%s: %d requests after %ss, wanted %d: %s" %
                             (what, len(self.records()), timeout, n, self.records()))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def self_signed(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return cert, key


def run_sonde(name, exporter_yaml, exporter="pyroscope"):
    hport, mport = harness.free_port(), harness.free_port()
    s = harness.Sonde("", name)
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  symbolizer: {}
exporters:
  %s
service:
  pipelines:
    profiles: {receivers: [otlp], processors: [symbolizer], exporters: [%s]}
%s""" % (hport, exporter_yaml.strip().replace("\n", "\n  "), exporter, harness.telemetry(mport))
    with open(s.config, "w") as f:
        f.write(cfg)
    s.start()
    s.hport, s.mport = hport, mport
    return s


def metric(s, name):
    _, text = harness.http_get("http://127.0.0.1:%d/metrics" % s.mport)
    return harness.metric_value(text, name, 0)


def wait_metric(s, name, want, timeout=20):
    """Waits until the self-metric reaches want; returns its last value."""
    deadline = time.time() + timeout
    v = metric(s, name)
    while time.time() < deadline and v < want:
        time.sleep(0.05)
        v = metric(s, name)
    return v


def check_profile(p, where):
    assert not p["problems"], (where, p["problems"])
    assert p["gzipped"], where
    assert p["sampleTypes"] == [["samples", "count"], ["cpu", "nanoseconds"]], (where, p)
    assert p["periodType"] == ["cpu", "nanoseconds"] and p["period"] == PERIOD, (where, p)
    stacks = {}
    for smp in p["samples"]:  # values of equal stacks summed
        k = tuple(n for loc in smp["stack"] for n in loc)
        stacks[k] = [a + b for a, b in zip(stacks.get(k, [0, 0]), smp["values"])]
    return stacks


def case_ingest(tmp, body, t_ns):
    ref = Reference(tmp, "pyroscope_reference.js")
    try:
        s = run_sonde("pyroscope-ingest", """
pyroscope:
  endpoint: http://127.0.0.1:%d
  basic_auth: {username: alice, password: "s3cret:x"}
  tenant_id: tenant-a
  headers: {X-Extra: "yes"}
  labels: {env: prod, host.name: other}
""" % ref.port)
        ts.post(s.hport, body)
        recs = ref.wait(3, what="ingest")
        s.stop_ok()
    finally:
        ref.stop()
    by = {}
    for r in recs:
        assert r["path"] == "/ingest", r
        by[r["query"]["name"]] = r
    # a configured label does not repeat one of the resource's
    assert sorted(by) == ["cart_api.cpu{env=prod,host_name=other}", POD1[:-1] + ",env=prod}",
                          POD2[:-1] + ",env=prod}"], list(by)
    ck = by[POD1[:-1] + ",env=prod}"]
    q = ck["query"]
    assert q["format"] == "pprof" and q["spyName"] == "ebpfspy" and q["sampleRate"] == "19", q
    assert int(q["from"]) == t_ns // 10**9, (q, t_ns)
    assert int(q["until"]) == -(-(t_ns + 10 * 10**9) // 10**9), (q, t_ns)
    h = ck["headers"]
    assert h["authorization"] == "Basic " + base64.b64encode(b"alice:s3cret:x").decode(), h
    assert h["orgid"] == "tenant-a" and h["extra"] == "yes", h
    assert h["contentType"].startswith("multipart/form-data; boundary="), h
    assert h["userAgent"].startswith("sonde-pyroscope-exporter/"), h
    assert h["connect"] is None, h
    stacks = check_profile(ck["profile"], "checkout")
    assert stacks[tuple(CHAIN)] == [5, 5 * PERIOD], stacks
    assert stacks[tuple(CHAIN[2:])] == [2, 2 * PERIOD], stacks
    assert ck["profile"]["timeNanos"] == str(t_ns), ck["profile"]
    assert ck["profile"]["durationNanos"] == "10000000000", ck["profile"]
    stacks = check_profile(by["cart_api.cpu{env=prod,host_name=other}"]["profile"], "cart")
    assert stacks[tuple(CHAIN)] == [3, 3 * PERIOD], stacks
    # two resources with the same labels: one profile
    stacks = check_profile(by[POD2[:-1] + ",env=prod}"]["profile"], "pod-2")
    assert stacks[tuple(CHAIN)] == [6, 6 * PERIOD], stacks
    assert stacks[tuple(CHAIN[2:])] == [3, 3 * PERIOD], stacks


def case_push_tls(tmp, body, t_ns):
    cert, key = self_signed(tmp)
    ref = Reference(tmp, "pyroscope_reference.js", "--cert", cert, "--key", key)
    try:
        s = run_sonde("pyroscope-push", """
pyroscope:
  endpoint: https://127.0.0.1:%d/
  api: push
  tenant_id: tenant-b
  tls: {ca_file: "%s"}
""" % (ref.port, cert))
        ts.post(s.hport, body)
        recs = ref.wait(1, what="push")
        # counted once the response came back
        sent = wait_metric(s, "sonde_exporter_pyroscope_profiles_total", 2)
        core_sent = wait_metric(s, "otelcol_exporter_sent_profiles_total", ITEMS)
        s.stop_ok()
    finally:
        ref.stop()
    assert len(recs) == 1, recs
    r = recs[0]
    assert r["path"] == "/push.v1.PusherService/Push", r
    assert r["headers"]["contentType"] == "application/proto", r
    assert r["headers"]["connect"] == "1", r
    assert r["headers"]["orgid"] == "tenant-b" and r["headers"]["authorization"] is None, r
    series = {x["labels"].get("k8s_pod_name", x["labels"]["service_name"]): x for x in r["series"]}
    assert set(series) == {"pod-1", "pod-2", "cart_api"}, series.keys()
    ck = series["pod-1"]
    assert ck["labels"] == {"__name__": "process_cpu", "service_name": "checkout",
                            "host_name": "node-1", "k8s_pod_name": "pod-1"}, ck["labels"]
    assert series["cart_api"]["labels"] == {"__name__": "process_cpu",
                                            "service_name": "cart_api"}, series["cart_api"]
    assert re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
                    ck["ids"][0]), ck["ids"]
    assert ck["ids"][0] != series["cart_api"]["ids"][0]
    stacks = check_profile(ck["profiles"][0], "push checkout")
    assert stacks[tuple(CHAIN)] == [5, 5 * PERIOD], stacks
    assert ck["profiles"][0]["timeNanos"] == str(t_ns), ck["profiles"][0]
    assert sent == 3 and core_sent == ITEMS, (sent, core_sent)


def case_push_grpc(tmp, body, t_ns):
    """push.v1 over gRPC (h2c), auth as metadata; UNAVAILABLE once, then accepted."""
    ref = Reference(tmp, "pyroscope_reference.js", "--grpc", "--fail-code", "14",
                    "--fail-count", "1")
    try:
        s = run_sonde("pyroscope-grpc", """
pyroscope:
  endpoint: http://127.0.0.1:%d
  api: push_grpc
  basic_auth: {username: bob, password: pw}
  tenant_id: tenant-c
  retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
""" % ref.port)
        ts.post(s.hport, body)
        recs = ref.wait(2, what="push_grpc")
        s.wait_log(r"will retry: rpc error: code = Unavailable")
        assert wait_metric(s, "otelcol_exporter_sent_profiles_total", ITEMS) == ITEMS
        s.stop_ok()
    finally:
        ref.stop()
    assert recs[0].get("failed") == 14 and recs[1].get("grpc"), recs
    r = recs[1]
    assert r["headers"]["authorization"] == "Basic " + base64.b64encode(b"bob:pw").decode(), r
    assert r["headers"]["orgid"] == "tenant-c", r
    series = {x["labels"].get("k8s_pod_name", x["labels"]["service_name"]): x for x in r["series"]}
    assert set(series) == {"pod-1", "pod-2", "cart_api"}, series.keys()
    assert series["pod-1"]["labels"]["__name__"] == "process_cpu", series["pod-1"]
    stacks = check_profile(series["pod-1"]["profiles"][0], "grpc pod-1")
    assert stacks[tuple(CHAIN)] == [5, 5 * PERIOD], stacks
    assert series["pod-1"]["profiles"][0]["timeNanos"] == str(t_ns)


def case_retry(tmp, body, status, api):
    ref = Reference(tmp, "pyroscope_reference.js", "--fail-status", str(status),
                    "--fail-count", "2" if status == 503 else "1")
    retry = "retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}"
    try:
        s = run_sonde("pyroscope-%d" % status, """
pyroscope:
  endpoint: http://127.0.0.1:%d
  api: %s
  %s
""" % (ref.port, api, retry))
        ts.post(s.hport, body)
        if status == 503:
            recs = ref.wait(3, what="503 retried")
            assert [r.get("failed") for r in recs[:2]] == [503, 503], recs
            assert "series" in recs[2], recs
            s.wait_log(r"will retry.*503")
            assert wait_metric(s, "otelcol_exporter_sent_profiles_total", ITEMS) == ITEMS
            assert metric(s, "otelcol_exporter_send_failed_profiles_total") == 0
        else:
            recs = ref.wait(1, what="400")
            assert recs[0].get("failed") == 400, recs
            s.wait_log(r"dropping data \(permanent\).*400")
            assert wait_metric(s, "otelcol_exporter_send_failed_profiles_total", ITEMS) == ITEMS
            # A later batch goes through, and the dropped one did not come back with it.
            ts.post(s.hport, body)
            assert wait_metric(s, "otelcol_exporter_sent_profiles_total", ITEMS) == ITEMS
            recs = ref.records()
            assert len(recs) == 2 and "series" in recs[1], recs
        s.stop_ok()
    finally:
        ref.stop()


def case_ingest_partial(tmp, body):
    """One service's request fails with 503, the other's is accepted: the batch is retried whole."""
    ref = Reference(tmp, "pyroscope_reference.js", "--fail-status", "503", "--fail-count", "1")
    try:
        s = run_sonde("pyroscope-partial", """
pyroscope:
  endpoint: http://127.0.0.1:%d
  retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
""" % ref.port)
        ts.post(s.hport, body)
        assert wait_metric(s, "otelcol_exporter_sent_profiles_total", ITEMS) == ITEMS
        recs = ref.records()
        s.stop_ok()
    finally:
        ref.stop()
    assert len(recs) == 6 and recs[0].get("failed") == 503, recs
    names = sorted(r["query"]["name"] for r in recs[1:])
    # the series accepted the first time are sent again with the retried batch
    assert sorted(set(names)) == ["cart_api.cpu{}", POD1, POD2], names


def case_ingest_window(tmp, body):
    """Twelve series over one connection, the first answered 503: the other eleven are not sent
    before the batch's retry (they were, and went twice)."""
    many = copy.deepcopy(body)
    one = body["resourceProfiles"][2]  # cart/api: one profile of two samples
    many["resourceProfiles"] = []
    for i in range(12):
        r = copy.deepcopy(one)
        r["resource"]["attributes"][0]["value"]["stringValue"] = "svc-%d" % i
        many["resourceProfiles"].append(r)
    ref = Reference(tmp, "pyroscope_reference.js", "--fail-status", "503", "--fail-count", "1")
    try:
        s = run_sonde("pyroscope-window", """
pyroscope:
  endpoint: http://127.0.0.1:%d
  max_conns: 1
  retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
""" % ref.port)
        ts.post(s.hport, many)
        assert wait_metric(s, "otelcol_exporter_sent_profiles_total", 24) == 24
        recs = ref.records()
        s.stop_ok()
    finally:
        ref.stop()
    assert len(recs) == 13 and recs[0].get("failed") == 503, [r.get("query") for r in recs]
    names = sorted(r["query"]["name"] for r in recs[1:])
    assert names == sorted("svc-%d.cpu{}" % i for i in range(12)), names


def refused(name, exporter, exporter_yaml, *needles):
    """sonde validate refuses a profiles pipeline whose exporter is exporter_yaml (indented under
    `exporters:`), saying every one of needles."""
    s = harness.Sonde("", name)
    with open(s.config, "w") as f:
        f.write("""
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:0"}
exporters:
%s
service:
  pipelines:
    profiles: {receivers: [otlp], exporters: [%s]}
""" % (exporter_yaml.rstrip("\n"), exporter))
    rc, out = harness.run_cli("validate", "--config", s.config)
    assert rc != 0 and all(n in out for n in needles), (rc, needles, out)


def case_bad_tenant():
    """A tenant_id with a line break, or a basic auth username with ':' (the server would split
    it elsewhere), is a configuration error that says so."""
    refused("pyroscope-bad-tenant", "pyroscope", """
  pyroscope:
    endpoint: http://127.0.0.1:1
    tenant_id: "team-a\\r\\nX-Evil: 1"
""", 'the value of "X-Scope-OrgID" holds a line break')
    refused("pyroscope-bad-user", "pyroscope", """
  pyroscope:
    endpoint: http://127.0.0.1:1
    basic_auth: {username: "a:b", password: "c"}
""", "the username cannot contain ':'")


def test():
    if not shutil.which("node"):
        raise AssertionError("node is needed (tests/e2e/node)")
    tmpd = harness.Sonde("", "pyroscope-build").tmp
    t_ns = int(time.time() * 1e9)
    body, _, _ = profiles_body(tmpd, t_ns)
    case_ingest(tmpd, body, t_ns)
    case_push_tls(tmpd, body, t_ns)
    case_ingest_partial(tmpd, body)
    case_ingest_window(tmpd, body)
    case_bad_tenant()
    case_push_grpc(tmpd, body, t_ns)
    case_retry(tmpd, body, 503, "push")
    case_retry(tmpd, body, 400, "push")
    print("pyroscope: ingest and push decoded by the reference; 503 retried, 400 dropped")


if __name__ == "__main__":
    harness.main(test)

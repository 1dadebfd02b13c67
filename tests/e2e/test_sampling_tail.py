"""tail_sampling through the real binary.

1. testgen traces (4 spans each, cut across batches and resources) -> tail_sampling -> file:
   whole traces are kept, exactly those the policies choose; the probabilistic policy's choice is
   recomputed here (otelcol: FNV-64a over hash_salt + trace id <= floor((2^64-1) * ratio)).
2. Load through OTLP/HTTP: 3000 traces against num_traces 100: every error trace and every slow
   trace is kept whole, the rest as the probabilistic policy says; memory stays at num_traces and
   the early decisions are counted.
"""
import hashlib
import json
import os
import time
import urllib.request
from fractions import Fraction

import harness


def fnv64a(data):
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


# The FNV-1a 64 core against the published test vector ("a" -> 0xaf63dc4c8601ec8c).
assert fnv64a(b"a") == 0xAF63DC4C8601EC8C


def threshold(pct):
    """otelcol calculateThreshold: big.Float (64-bit mantissa, nearest even) product, truncated."""
    q = Fraction(2**64 - 1) * Fraction(pct / 100)
    if q == 0:
        return 0
    e = q.numerator.bit_length() - q.denominator.bit_length() - 64
    while q / Fraction(2) ** e >= 2**64:
        e += 1
    while q / Fraction(2) ** e < 2**63:
        e -= 1
    m = q / Fraction(2) ** e
    r = round(m)  # Fraction rounds half to even
    return int(r * Fraction(2) ** e)


def prob_kept(salt, tid, pct):
    return fnv64a(salt.encode() + tid) <= threshold(pct)


def testgen_tid(seed, i):
    return b"sond" + seed.to_bytes(4, "big") + (i // 4).to_bytes(8, "big")


def read_spans(path):
    spans = []
    if not os.path.exists(path):
        return spans
    for line in open(path, "rb").read().split(b"\n"):
        if line:
            for r in json.loads(line)["resourceSpans"]:
                rattrs = {a["key"]: a["value"] for a in r.get("resource", {}).get("attributes", [])}
                for sc in r["scopeSpans"]:
                    for sp in sc["spans"]:
                        sp["_resource"] = rattrs
                        spans.append(sp)
    return spans


def test_testgen():
    port = harness.free_port()
    cfg = """
receivers:
  testgen: {count: 400, per_batch: 10, interval: 1ms, seed: 3}
processors:
  tail_sampling:
    decision_wait: 300ms
    num_traces: 1000
    policies:
      - name: quarter
        type: probabilistic
        probabilistic: {hash_salt: "sonde-test", sampling_percentage: 25}
      - name: forties-ok
        type: and
        and:
          and_sub_policy:
            - name: forties
              type: string_attribute
              string_attribute: {key: testgen.name, values: ["^item-4\\\\d$"],
                                 enabled_regex_matching: true}
            - name: ok
              type: status_code
              status_code: {status_codes: [OK]}
exporters:
  file: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
""" + harness.telemetry(port) + """  pipelines:
    traces: {receivers: [testgen], processors: [tail_sampling], exporters: [file]}
"""
    s = harness.Sonde(cfg, "tail-testgen").start()
    s.wait_log(r"finished: 400 items")
    time.sleep(1.0)  # > decision_wait: every trace decided by the timer, not by shutdown
    spans = read_spans(s.path("traces.json"))
    _, text = harness.http_get("http://localhost:%d/metrics" % port)
    s.stop_ok()
    # testgen's ids are sequential: FNV-64a's top bits hardly move with the last bytes, so the
    # probabilistic policy keeps none of them with this salt (all or nothing, as in otelcol); the
    # load test below covers the hash with random-looking ids.
    want = set()
    for t in range(100):
        tid = testgen_tid(3, 4 * t)
        if prob_kept("sonde-test", tid, 25) or t in (10, 11, 12):  # items 40..49
            want.add(t)
    got = {}
    for sp in spans:
        i = int([a for a in sp["attributes"] if a["key"] == "testgen.index"][0]["value"]["intValue"])
        assert bytes.fromhex(sp["traceId"]) == testgen_tid(3, i)
        got.setdefault(i // 4, set()).add(i)
    assert set(got) == want, "kept %s, want %s" % (sorted(got), sorted(want))
    for t, idx in got.items():
        assert idx == {4 * t, 4 * t + 1, 4 * t + 2, 4 * t + 3}, "trace %d incomplete: %s" % (t, idx)
    g = harness.metric_value(
        text, 'otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor='
              '"tail_sampling",sampled="true"}')
    assert g == len(want), (g, len(want), text)
    print("testgen: %d of 100 traces kept whole (probabilistic 25%% recomputed + and-policy)"
          % len(want))


def post(port, body):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/traces" % port,
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    deadline = time.time() + 10
    while True:
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def load_tid(t):
    # Random-looking ids: FNV's top bits barely move when only the last bytes of sequential ids
    # change, so sequential ids would be sampled all or nothing (as in otelcol).
    return hashlib.sha256(b"trace-%d" % t).hexdigest()[:32]


def test_load():
    hport, mport = harness.free_port(), harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  tail_sampling:
    decision_wait: 10s
    num_traces: 100
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
      - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 2}}
exporters:
  file: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
""" % hport + harness.telemetry(mport) + """  pipelines:
    traces: {receivers: [otlp], processors: [tail_sampling], exporters: [file]}
"""
    s = harness.Sonde(cfg, "tail-load").start()
    n, per_req = 3000, 100
    kind = {}
    for t in range(n):
        kind[t] = "error" if t % 37 == 5 else "slow" if t % 41 == 7 else "ok"
    t0 = 1700000000000000000
    max_on_memory = 0
    for first in range(0, n, per_req):
        spans = []
        for t in range(first, first + per_req):
            tid = load_tid(t)
            dur = 2_500_000_000 if kind[t] == "slow" else 3_000_000
            for k in range(2):
                spans.append({
                    "traceId": tid, "spanId": "%016x" % (t * 2 + k + 1), "name": "t%d-%d" % (t, k),
                    "startTimeUnixNano": str(t0 + k * 1000),
                    "endTimeUnixNano": str(t0 + (dur if k == 0 else 2000)),
                    "status": {"code": 2 if kind[t] == "error" and k == 1 else 1}})
        post(hport, {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "load"}}]},
            "scopeSpans": [{"spans": spans}]}]})
        _, text = harness.http_get("http://localhost:%d/metrics" % mport)
        mem = harness.metric_value(text, "otelcol_processor_tail_sampling_sampling_traces_on_memory")
        max_on_memory = max(max_on_memory, mem or 0)
    # The last 100 traces wait for decision_wait; everything older was decided early.
    time.sleep(0.5)
    _, text = harness.http_get("http://localhost:%d/metrics" % mport)
    early = harness.metric_value(text, "sonde_processor_tail_sampling_early_decisions_total")
    s.stop_ok()  # shutdown decides the rest
    got = {}
    for sp in read_spans(s.path("traces.json")):
        t = int(sp["name"][1:].split("-")[0])
        got.setdefault(t, set()).add(sp["name"])
    want = {t for t in range(n) if kind[t] != "ok" or
            prob_kept("default-hash-seed", bytes.fromhex(load_tid(t)), 2)}
    missing = sorted(t for t in want if t not in got)
    assert not missing, "lost %d traces: %s" % (len(missing), missing[:20])
    assert set(got) == want, "extra %s" % sorted(set(got) - want)[:20]
    for t, names in got.items():
        assert names == {"t%d-0" % t, "t%d-1" % t}, names
    errors = sum(1 for t in kind if kind[t] == "error")
    by_prob = len(want) - sum(1 for t in kind if kind[t] != "ok")
    assert 20 < by_prob < 100, by_prob  # about 2% of 2848
    slow = sum(1 for t in kind if kind[t] == "slow")
    assert max_on_memory <= 100, max_on_memory
    assert early == n - 100, (early, text)
    print("load: %d traces through num_traces 100: all %d errors and %d slow kept, %d sampled "
          "in all (%d by the 2%% policy), max %d in memory, %d decided early"
          % (n, errors, slow, len(got), by_prob, max_on_memory, early))


def test_rate_limiting():
    cfg = """
receivers:
  testgen: {count: 160, per_batch: 8, interval: 1ms}
processors:
  tail_sampling:
    decision_wait: 200ms
    policies:
      - {name: ten, type: rate_limiting, rate_limiting: {spans_per_second: 10}}
exporters:
  file: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
  pipelines:
    traces: {receivers: [testgen], processors: [tail_sampling], exporters: [file]}
"""
    s = harness.Sonde(cfg, "tail-rate").start()
    s.wait_log(r"finished: 160 items")
    t0 = time.time()
    time.sleep(0.6)
    s.stop_ok()
    secs = time.time() - t0 + 1
    traces = {sp["traceId"] for sp in read_spans(s.path("traces.json"))}
    # 4-span traces against 10 spans a second: 0+4 < 10, 4+4 < 10, 8+4 >= 10: two per second.
    assert 2 <= len(traces) <= 2 * (int(secs) + 1), (len(traces), secs)
    print("rate_limiting: %d of 40 traces kept at 10 spans/s" % len(traces))


def test_validate():
    cfg = """
receivers:
  testgen: {}
processors:
  tail_sampling:
    policies:
      - {name: bad, type: status_code, status_code: {status_codes: [FAILED]}}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [testgen], processors: [tail_sampling], exporters: [debug]}
"""
    s = harness.Sonde(cfg, "tail-validate")
    rc, out = harness.run_cli("validate", "--config", s.config)
    assert rc != 0 and 'unknown status code "FAILED"' in out, out
    print("validate: unknown status code refused")


def test():
    test_validate()
    test_testgen()
    test_load()
    test_rate_limiting()


harness.main(test)

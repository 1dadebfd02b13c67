"""probabilistic_sampler through the real binary, against decisions computed here, independently.

1. hash_seed: testgen -> probabilistic_sampler -> file for traces and logs. The kept set must be
   exactly the trace ids with (fnv1a32(seed, trace_id) & 0x3fff) < uint32(float32(pct) * 163.84)
   (otelcol's computeHash since v0.70: FNV-1a over the seed as 4 little-endian bytes, then the
   16 trace id bytes), every span of a kept trace kept, and the tracestate / sampling.* values
   otelcol writes (rv from the hash, th from the rejection threshold).
2. proportional: OTLP/HTTP JSON spans with W3C tracestates (th from an earlier sampler, rv, other
   vendors) -> probabilistic_sampler -> file; the OTEP 235 arithmetic is redone here.
"""
import json
import math
import os
import struct
import time
import urllib.request

import harness
import otlpcheck


def fnv1a32(seed, data):
    h = 2166136261
    for b in struct.pack("<I", seed) + data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def _fnv1a32_unseeded(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


# The FNV-1a core against the published test vector ("a" -> 0xe40c292c).
assert _fnv1a32_unseeded(b"a") == 0xE40C292C


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def scaled(pct):
    # uint32(pct * percentageScaleFactor) with pct a float32 and the constant 16384/100 as float32.
    return int(f32(f32(pct) * f32(163.84)))


def hash_rv(h):
    hashed = h & 0x3FFF
    unused = h >> 14
    mixed = (unused ^ (unused << 10)) & ((1 << 28) - 1)
    return "%014x" % (((0x3FFF - hashed) << 42) | (mixed << 14) | hashed)


def tvalue(th):
    return "0" if th == 0 else ("%014x" % th).rstrip("0")


M = 1 << 56


def prob_to_threshold(p, prec):
    if p == 1:
        return 0
    _, ef = math.frexp(p)
    _, er = math.frexp(1 - p)
    prec = min(14, max(prec + int(ef / -4), prec + int(er / -4)))
    t = M - int(math.floor(p * M + 0.5))
    sh = 4 * (14 - prec)
    if sh:
        t = ((t + (1 << (sh - 1))) >> sh) << sh
    return t


def testgen_tid(seed, i):
    return b"sond" + seed.to_bytes(4, "big") + (i // 4).to_bytes(8, "big")


def test_hash_seed():
    port = harness.free_port()
    pct, seed, count = 30, 13, 400
    cfg = """
receivers:
  testgen: {count: %d, per_batch: 40, interval: 1ms, seed: 5}
processors:
  probabilistic_sampler: {sampling_percentage: %d, hash_seed: %d}
exporters:
  file/traces: {path: "@TMP@/traces.json", flush_interval: 10ms}
  file/logs: {path: "@TMP@/logs.json", flush_interval: 10ms}
service:
""" % (count, pct, seed) + harness.telemetry(port) + """  pipelines:
    traces: {receivers: [testgen], processors: [probabilistic_sampler], exporters: [file/traces]}
    logs: {receivers: [testgen], processors: [probabilistic_sampler], exporters: [file/logs]}
"""
    s = harness.Sonde(cfg, "sampling-hash").start()
    s.wait_log(r"finished: %d items" % count)
    time.sleep(0.3)
    _, text = harness.http_get("http://localhost:%d/metrics" % port)
    s.stop_ok()
    rate = scaled(pct)  # 4915
    th = tvalue((16384 - rate) << 42)
    want = {}
    for i in range(count):
        h = fnv1a32(seed, testgen_tid(5, i))
        if (h & 0x3FFF) < rate:
            want[i] = hash_rv(h)
    assert 0.2 * count < len(want) < 0.4 * count, len(want)
    for sig in ("traces", "logs"):
        recs = [json.loads(line) for line in open(s.path(sig + ".json"), "rb").read().split(b"\n")
                if line]
        got = {}
        key = ("resourceSpans", "scopeSpans", "spans") if sig == "traces" else \
            ("resourceLogs", "scopeLogs", "logRecords")
        for rec in recs:
            for r in rec[key[0]]:
                for sc in r[key[1]]:
                    for it in sc[key[2]]:
                        attrs = {a["key"]: a["value"] for a in it.get("attributes", [])}
                        i = int(attrs["testgen.index"]["intValue"])
                        assert bytes.fromhex(it["traceId"]) == testgen_tid(5, i)
                        if sig == "traces":
                            got[i] = it.get("traceState", "")
                        else:
                            got[i] = "ot=rv:%s;th:%s" % (
                                attrs["sampling.randomness"]["stringValue"],
                                attrs["sampling.threshold"]["stringValue"])
        assert sorted(got) == sorted(want), "%s: kept %s, want %s" % (sig, sorted(got),
                                                                     sorted(want))
        for i, ts in got.items():
            assert ts == "ot=rv:%s;th:%s" % (want[i], th), (sig, i, ts, want[i], th)
    def sampled_count(sampled):
        name = "otelcol_processor_probabilistic_sampler_count_traces_sampled_total{"
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and 'policy="trace_id_hash"' in line
                   and 'sampled="%s"' % sampled in line)
    kept, dropped = sampled_count("true"), sampled_count("false")
    assert kept == len(want) and dropped == count - len(want), (kept, dropped, text)
    print("hash_seed: %d of %d spans and logs kept (%d%%, seed %d, th:%s), as FNV-1a says"
          % (len(want), count, pct, seed, th))


def post(port, body):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/traces" % port,
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    deadline = time.time() + 10
    while True:
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def test_proportional():
    hport = harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  probabilistic_sampler: {sampling_percentage: 50, mode: proportional}
exporters:
  file: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [probabilistic_sampler], exporters: [file]}
""" % hport
    s = harness.Sonde(cfg, "sampling-prop").start()
    # (trace id, arriving tracestate)
    cases = [
        ("0102030405060708" + "00ffffffffffffff", ""),                      # r max
        ("0102030405060708" + "0080000000000000", ""),                      # r = 0x80.. = th(50%)
        ("0102030405060708" + "007fffffffffffff", ""),                      # just below 50%
        ("0102030405060708" + "00ffffffffffffff", "ot=th:8;k:v,vendor=x"),  # 50% of 50%
        ("0102030405060708" + "00b0000000000000", "ot=th:8"),               # 0xb0.. < th c
        ("0102030405060708" + "00d0000000000000", "ot=th:8"),               # >= th c
        ("0102030405060708" + "0000000000000001", "ot=th:8"),               # inconsistent
        ("0102030405060708" + "0000000000000000", "ot=rv:f0000000000000"),  # rv wins
        ("0102030405060708" + "00ffffffffffffff", "ot=th:zz"),              # invalid: dropped
    ]
    spans = [{"traceId": t, "spanId": "%016x" % (k + 1), "name": "s%d" % k,
              "traceState": ts, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
             for k, (t, ts) in enumerate(cases)]
    post(hport, {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]})
    path = s.path("traces.json")
    deadline = time.time() + 10
    while time.time() < deadline and not (os.path.exists(path) and os.path.getsize(path)):
        time.sleep(0.05)
    time.sleep(0.2)
    s.stop_ok()
    got = {}
    for line in open(path, "rb").read().split(b"\n"):
        if line:
            for r in json.loads(line)["resourceSpans"]:
                for sc in r["scopeSpans"]:
                    for sp in sc["spans"]:
                        got[sp["name"]] = sp.get("traceState", "")
    # Expected, by OTEP 235: randomness = rv if present else the trace id's last 56 bits;
    # threshold = ProbabilityToThreshold(incoming * 0.5); kept iff threshold <= randomness.
    want = {}
    for k, (t, ts) in enumerate(cases):
        ot = dict(kv.split(":") for kv in ts[3:].split(",")[0].split(";")) if ts else {}
        if ot.get("th") == "zz":
            continue
        rnd = int(ot["rv"], 16) if "rv" in ot else int(t[18:], 16)
        th_in = int(ot["th"].ljust(14, "0"), 16) if "th" in ot else None
        if th_in is not None and th_in > rnd:
            continue  # inconsistent arrival, fail_closed
        incoming = (M - th_in) / M if th_in is not None else 1.0
        th = prob_to_threshold(incoming * 0.5, 4)
        if th > rnd:
            continue
        members = []
        if "rv" in ot:
            members.append("rv:" + ot["rv"])
        members.append("th:" + tvalue(th))
        members += ["%s:%s" % (a, b) for a, b in ot.items() if a not in ("rv", "th")]
        rest = ts.split(",")[1:] if ts else []
        want["s%d" % k] = ",".join(["ot=" + ";".join(members)] + rest)
    assert got == want, "got %s\nwant %s" % (got, want)
    print("proportional: %d of %d kept with the OTEP 235 thresholds: %s"
          % (len(got), len(cases), sorted(got.values())))


def test_validate():
    cfg = """
receivers:
  testgen: {}
processors:
  probabilistic_sampler: {sampling_percentage: -1}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [testgen], processors: [probabilistic_sampler], exporters: [debug]}
"""
    s = harness.Sonde(cfg, "sampling-validate")
    rc, out = harness.run_cli("validate", "--config", s.config)
    assert rc != 0 and "negative sampling rate" in out, out
    print("validate: negative rate refused")


def test():
    test_validate()
    test_hash_seed()
    test_proportional()


harness.main(test)

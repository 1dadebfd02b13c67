"""OTLP profiles (v1development, dictionary at request level) through both OTLP exporters.

No decoder of OTLP profiles that we did not write is reachable offline (the npm OTLP schema
packages carry no profiles messages), so this checks sonde against sonde, field by field: JSON in
at sonde A's otlp receiver, out through otlp_grpc (zstd) and otlp_http (protobuf, gzip) into
sonde B's otlp receiver (gRPC and HTTP), written by B's file exporter as OTLP-JSON. Each of B's
two copies must equal the request A was given."""
import json
import time
import urllib.request

import harness

PROFILE = {
    "resourceProfiles": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "process.pid", "value": {"intValue": "4242"}}]},
        "scopeProfiles": [{
            "scope": {"name": "sonde-test", "version": "1"},
            "profiles": [{
                "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
                "samples": [
                    {"stackIndex": 1, "values": ["3"], "attributeIndices": [1],
                     "timestampsUnixNano": ["1700000000000000001"]},
                    {"stackIndex": 2, "values": ["5"], "attributeIndices": [2]}],
                "timeUnixNano": "1700000000000000000",
                "durationNano": "5000000000",
                "periodType": {"typeStrindex": 3, "unitStrindex": 4},
                "period": "52631578",
                "profileId": "0102030405060708090a0b0c0d0e0f10"}]}]}],
    "dictionary": {
        "mappingTable": [{}, {"memoryStart": "4194304", "memoryLimit": "8388608",
                              "fileOffset": "4096", "filenameStrindex": 5}],
        "locationTable": [{}, {"mappingIndex": 1, "address": "4198400",
                               "lines": [{"functionIndex": 1, "line": "42"}]},
                          {"mappingIndex": 1, "address": "4198656"}],
        "functionTable": [{}, {"nameStrindex": 6, "filenameStrindex": 7, "startLine": "40"}],
        "stringTable": ["", "samples", "count", "cpu", "nanoseconds", "/usr/bin/checkout",
                        "main", "main.c", "thread.id"],
        "attributeTable": [{}, {"keyStrindex": 8, "value": {"intValue": "7"}},
                           {"keyStrindex": 8, "value": {"intValue": "8"}}],
        "stackTable": [{}, {"locationIndices": [1, 2]}, {"locationIndices": [2]}]}}


def norm(v):
    """An absent sub-message and an empty one ({}) are the same message."""
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items() if x != {}}
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


def test():
    gb, hb, ha = harness.free_port(), harness.free_port(), harness.free_port()
    b = harness.Sonde("""
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:%d}
      http: {endpoint: 127.0.0.1:%d}
exporters:
  file: {path: "@TMP@/out.json", flush_interval: 10ms}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    profiles: {receivers: [otlp], exporters: [file]}
""" % (gb, hb), "profiles-b").start()
    a = harness.Sonde("""
receivers:
  otlp:
    protocols:
      http: {endpoint: 127.0.0.1:%d}
exporters:
  otlp:
    endpoint: 127.0.0.1:%d
    tls: {insecure: true}
    compression: zstd
  otlphttp:
    endpoint: http://127.0.0.1:%d
    compression: gzip
    encoding: proto
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    profiles: {receivers: [otlp], exporters: [otlp, otlphttp]}
""" % (ha, gb, hb), "profiles-a").start()
    b.wait_log(r"ready in")
    a.wait_log(r"ready in")
    req = urllib.request.Request("http://127.0.0.1:%d/v1development/profiles" % ha,
                                 data=json.dumps(PROFILE).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status
    deadline = time.time() + 20
    lines = []
    while time.time() < deadline and len(lines) < 2:
        time.sleep(0.1)
        try:
            with open(b.path("out.json")) as f:
                lines = [l for l in f if l.strip()]
        except FileNotFoundError:
            pass
    a.stop_ok()
    b.stop_ok()
    assert len(lines) == 2, "B wrote %d requests, expected one per exporter:\n%s\n%s" % (
        len(lines), a.log(), b.log())
    want = norm(PROFILE)
    for line in lines:
        got = norm(json.loads(line))
        # What sonde writes for absent sub-messages ({}) is not in the input: compare what was sent.
        assert got["dictionary"] == want["dictionary"], \
            "dictionary differs:\n%s\n%s" % (json.dumps(got["dictionary"]),
                                             json.dumps(want["dictionary"]))
        gp = got["resourceProfiles"][0]
        wp = want["resourceProfiles"][0]
        assert gp["resource"] == wp["resource"], gp["resource"]
        gs, ws = gp["scopeProfiles"][0], wp["scopeProfiles"][0]
        assert gs["scope"] == ws["scope"], gs["scope"]
        assert gs["profiles"] == ws["profiles"], "profile differs:\n%s\n%s" % (
            json.dumps(gs["profiles"]), json.dumps(ws["profiles"]))
    print("2 copies (otlp_grpc+zstd, otlp_http+protobuf+gzip) equal the input, field by field")


harness.main(test)

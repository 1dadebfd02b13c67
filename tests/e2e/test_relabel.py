"""relabel: Prometheus relabel_configs through the real binary.

1. testgen -> relabel -> file (traces): replace, hashmod, drop (a whole resource and its spans,
   counted), labeldrop, on testgen's resource attributes.
2. OTLP/HTTP JSON -> relabel -> file (traces and profiles): the discovery labels from k8s.* and
   process.* attributes, the Parca rule (pod label app=checkout -> service_name=checkout), labelmap,
   __meta_process_cgroup from a procfs root, and `__` labels dropped afterwards.
"""
import hashlib
import json
import os
import time
import urllib.request

import harness
import otlpcheck


def hashmod(value, modulus):
    # Prometheus: the last 8 bytes of md5(value) as a big-endian uint64, modulo modulus.
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus


def wait_records(path, signal, n, timeout=10):
    deadline = time.time() + timeout
    recs = []
    while time.time() < deadline:
        if os.path.exists(path):
            recs = [json.loads(line) for line in open(path, "rb").read().split(b"\n") if line]
            if len(recs) >= n:
                return recs
        time.sleep(0.05)
    raise AssertionError("%d %s records after %ss, want %d" % (len(recs), signal, timeout, n))


def test_testgen():
    port = harness.free_port()
    # 40 spans in 4 batches of 10, each batch two resources (testgen.part 0 and 1) of 5 spans.
    cfg = """
receivers:
  testgen: {count: 40, per_batch: 10, interval: 1ms}
processors:
  relabel:
    relabel_configs:
      - source_labels: [testgen.batch]
        regex: "3"
        action: drop
      - source_labels: [testgen.part]
        regex: "1"
        target_label: part_name
        replacement: second
      - source_labels: [service.name]
        target_label: shard
        modulus: 7
        action: hashmod
      - source_labels: [service.name, testgen.part]
        regex: "(.*);0"
        target_label: first_of
        replacement: "$${1}-first"  # $$ escapes the config layer's ${...} expansion
      - source_labels: [testgen.part]
        regex: "9"
        target_label: never
        replacement: x
      - regex: testgen\\.part
        action: labeldrop
exporters:
  file: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
""" + harness.telemetry(port) + """  pipelines:
    traces: {receivers: [testgen], processors: [relabel], exporters: [file]}
"""
    s = harness.Sonde(cfg, "relabel-testgen").start()
    s.wait_log(r"finished: 40 items")
    time.sleep(0.3)
    _, text = harness.http_get("http://localhost:%d/metrics" % port)
    s.stop_ok()
    items = otlpcheck.decode(s.path("traces.json"), "traces", "json")
    items = [it for rec in items for it in rec]
    idx = sorted(it["attrs"]["testgen.index"] for it in items)
    assert idx == list(range(30)), "batch 3 must be dropped whole: %s" % idx
    shard = str(hashmod("testgen", 7))  # md5("testgen") = 16ca1da29f789068 cacc9d6b7b258676 -> 1
    assert shard == "1"
    for it in items:
        i, r = it["attrs"]["testgen.index"], it["resource"]
        part = 0 if i % 10 < 5 else 1
        assert "testgen.part" not in r, r
        assert r.get("shard") == shard, r
        assert r.get("service.name") == "testgen" and r.get("testgen.batch") == i // 10, r
        assert r.get("part_name") == ("second" if part else None), (i, r)
        assert r.get("first_of") == (None if part else "testgen-first"), (i, r)
        assert "never" not in r, r
    assert harness.metric_value(text, "sonde_processor_relabel_dropped_resources_total") == 2, text
    assert harness.metric_value(text, "sonde_processor_relabel_dropped_items_total") == 10, text
    print("testgen: drop, replace, hashmod (shard %s), labeldrop on 30 of 40 spans" % shard)


def kv(key, value):
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def resource(attrs):
    return {"attributes": [kv(k, v) for k, v in attrs.items()]}


def post(port, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.status


def attrs_of(res):
    out = {}
    for a in res.get("attributes", []):
        v = a["value"]
        out[a["key"]] = v.get("stringValue", v.get("intValue"))
    return out


def test_discovery():
    hport = harness.free_port()
    # A fake procfs: pid 4242's cgroup is a kubepods path; pid 4343 has none (container.id used).
    s = harness.Sonde("", "relabel-k8s")
    proc = s.path("proc")
    os.makedirs(os.path.join(proc, "4242"))
    with open(os.path.join(proc, "4242", "cgroup"), "w") as f:
        f.write("0::/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope\n1:cpu:/x\n")
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  relabel:
    proc_root: "%s"
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app]
        target_label: service_name
      - source_labels: [__meta_kubernetes_namespace]
        regex: kube-system
        action: drop
      - regex: __meta_kubernetes_pod_label_(.+)
        replacement: pod_label_$1
        action: labelmap
      - source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_name]
        separator: /
        target_label: pod
      - source_labels: [__meta_process_executable_name]
        target_label: comm
      - source_labels: [__meta_process_cgroup]
        target_label: cgroup
      - source_labels: [__meta_process_pid]
        target_label: pid_label
      - source_labels: [__meta_kubernetes_pod_container_name]
        target_label: container
      - source_labels: [__meta_kubernetes_pod_labelpresent_app]
        target_label: has_app
exporters:
  file/traces: {path: "@TMP@/traces.json", flush_interval: 10ms}
  file/profiles: {path: "@TMP@/profiles.json", flush_interval: 10ms}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [relabel], exporters: [file/traces]}
    profiles: {receivers: [otlp], processors: [relabel], exporters: [file/profiles]}
""" % (hport, proc)
    with open(s.config, "w") as f:
        f.write(cfg.replace("@TMP@", s.tmp))
    s.start()  # post() below retries until the receiver listens
    checkout = {"service.name": "unknown_service", "k8s.namespace.name": "shop",
                "k8s.pod.name": "checkout-7d9f", "k8s.pod.labels.app": "checkout",
                "k8s.pod.labels.app.kubernetes.io/version": "1.2",
                "k8s.container.name": "server", "process.pid": 4242,
                "process.executable.name": "checkoutd"}
    system = {"k8s.namespace.name": "kube-system", "k8s.pod.name": "coredns-1",
              "k8s.pod.label.app": "coredns"}
    bare = {"process.pid": 4343, "container.id": "deadbeef",
            "__meta_kubernetes_pod_container_name": "given"}
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "GET /cart", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    body = {"resourceSpans": [{"resource": resource(a), "scopeSpans": [{"spans": [span]}]}
                              for a in (checkout, system, bare)]}
    deadline = time.time() + 10
    while True:
        try:
            post(hport, "/v1/traces", body)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    prof = {"samples": [{"values": ["7"]}], "timeUnixNano": "1"}
    post(hport, "/v1development/profiles",
         {"resourceProfiles": [{"resource": resource(a), "scopeProfiles": [{"profiles": [prof]}]}
                               for a in (checkout, system, bare)]})
    trecs = wait_records(s.path("traces.json"), "traces", 1)
    precs = wait_records(s.path("profiles.json"), "profiles", 1)
    s.stop_ok()
    for name, recs, key in (("traces", trecs, "resourceSpans"),
                            ("profiles", precs, "resourceProfiles")):
        res = [attrs_of(r.get("resource", {})) for rec in recs for r in rec.get(key, [])]
        assert len(res) == 2, "%s: kube-system must be dropped: %s" % (name, res)
        got = res[0]
        # The Parca rule.
        assert got.get("service_name") == "checkout", got
        assert got.get("pod_label_app") == "checkout", got
        assert got.get("pod_label_app_kubernetes_io_version") == "1.2", got
        assert got.get("pod") == "shop/checkout-7d9f", got
        assert got.get("comm") == "checkoutd" and got.get("container") == "server", got
        assert got.get("cgroup") == \
            "0::/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope", got
        assert got.get("pid_label") == "4242" and got.get("has_app") == "true", got
        assert got.get("process.pid") == "4242", got  # kept as the original int attribute
        assert not any(k.startswith("__") for k in got), got
        other = res[1]
        assert other.get("cgroup") == "deadbeef" and "service_name" not in other, other
        assert other.get("container.id") == "deadbeef", other
        assert other.get("container") == "given", other  # an attribute wins over a derived label
        assert not any(k.startswith("__") for k in other), other
    print("discovery: Parca rule, labelmap, cgroup, k8s drop on traces and profiles")


def test_validate():
    cfg = """
receivers:
  testgen: {}
processors:
  relabel:
    relabel_configs:
      - source_labels: [a]
        action: hashmod
        target_label: h
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [testgen], processors: [relabel], exporters: [debug]}
"""
    s = harness.Sonde(cfg, "relabel-validate")
    rc, out = harness.run_cli("validate", "--config", s.config)
    assert rc != 0 and "hashmod requires non-zero modulus" in out, out
    with open(s.config, "w") as f:
        f.write(cfg.replace("action: hashmod\n        target_label: h",
                            "regex: \"(unclosed\"\n        target_label: h"))
    rc, out = harness.run_cli("validate", "--config", s.config)
    assert rc != 0 and "invalid regex" in out, out
    print("validate: modulus and regex errors refused")


def test():
    test_validate()
    test_testgen()
    test_discovery()


harness.main(test)

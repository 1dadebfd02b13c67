"""k8sattributes: pod metadata from a Kubernetes API fixture onto spans, profiles and logs.

The fixture (k8s_fixture/server.py) speaks the pods API over TLS with a bearer token. A real
process is placed in a cgroup named like a kubelet's (cgroup v2:
kubepods.slice/kubepods-pod<uid>.slice/cri-containerd-<id>.scope); its spans and profiles carry
only process.pid and must come out with its pod's attributes. Then: the deployment name through
the ReplicaSet owner, label and annotation rules, a StatefulSet pod by IP, pods of another node
not listed, resources with no pod unchanged, watch events learned, a watch that ends resumes from
the last resourceVersion (bookmarks included), ERROR 410 relists and pods added meanwhile are
learned, a bad token is a clear error while data passes through, and a kubeconfig with
certificate-authority-data works with a bounded cache that counts evictions.
"""
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s_fixture"))
import harness  # noqa: E402
import server as k8s  # noqa: E402

NODE = "node-1"
CHECKOUT_UID = "5f0c3a8e-1b2d-4c6e-9f7a-0d1e2f3a4b5c"
CID_SERVER = "a1" * 32
CID_SIDECAR = "b2" * 32
DB_UID = "7e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b"
OTHER_UID = "9a8b7c6d-5e4f-4321-8765-43210fedcba9"


def pods():
    checkout = k8s.pod(
        "checkout-7d9f8b6c5d-x2x9q", "shop", CHECKOUT_UID, NODE, "10.244.1.17",
        [("server", "registry.example.com/shop/checkout:1.4.2", CID_SERVER),
         ("envoy", "envoyproxy/envoy:v1.30.1", CID_SIDECAR)],
        labels={"app": "checkout", "pod-template-hash": "7d9f8b6c5d", "team": "payments",
                "tier": "backend"},
        annotations={"sonde.dev/owner": "team-a", "kubectl.kubernetes.io/restartedAt": "x"},
        owner=("ReplicaSet", "checkout-7d9f8b6c5d"))
    db = k8s.pod("db-0", "shop", DB_UID, NODE, "10.244.1.18",
                 [("postgres", "postgres:16", "c3" * 32)], labels={"app": "db"},
                 owner=("StatefulSet", "db"))
    other = k8s.pod("web-1", "shop", OTHER_UID, "node-2", "10.244.2.9",
                    [("web", "nginx:1.27", "d4" * 32)], labels={"app": "web"})
    return checkout, db, other


def kv(key, value):
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def attrs_of(res):
    out = {}
    for a in res.get("attributes", []):
        v = a["value"]
        out[a["key"]] = v.get("stringValue", v.get("intValue"))
    return out


def post(port, path, body):
    deadline = time.time() + 10
    while True:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200, r.status
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def spans_body(resources):
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "GET /cart", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    return {"resourceSpans": [{"resource": {"attributes": [kv(k, v) for k, v in r.items()]},
                               "scopeSpans": [{"spans": [span]}]} for r in resources]}


def read_resources(path, key):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path, "rb").read().split(b"\n"):
        if line:
            out += [attrs_of(r.get("resource", {})) for r in json.loads(line).get(key, [])]
    return out


def find(path, key, marker, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for r in read_resources(path, key):
            if r.get("marker") == marker:
                return r
        time.sleep(0.05)
    raise AssertionError("no resource with marker %s in %s" % (marker, path))


class Counter:
    n = 0


def ask(s, port, attrs, want_pod=None, timeout=10):
    """Posts a span with attrs until its resource comes out naming want_pod (or once, when None)."""
    deadline = time.time() + timeout
    while True:
        Counter.n += 1
        marker = "m%d" % Counter.n
        post(port, "/v1/traces", spans_body([dict(attrs, marker=marker)]))
        got = find(s.path("traces.json"), "resourceSpans", marker)
        if want_pod is None or got.get("k8s.pod.name") == want_pod:
            return got
        if time.time() > deadline:
            raise AssertionError("%s never associated with %s: %s\n%s" %
                                 (attrs, want_pod, got, s.log()))
        time.sleep(0.2)


class Placement:
    """A real process in a kubepods-shaped cgroup; how depends on what this machine allows."""

    def __init__(self, tmp, uid, cid):
        self.proc = subprocess.Popen(["sleep", "300"])
        self.pid = self.proc.pid
        self.dirs, self.mount, self.proc_root = [], None, "/proc"
        rel = ["kubepods.slice", "kubepods-pod%s.slice" % uid.replace("-", "_"),
               "cri-containerd-%s.scope" % cid]
        roots = []
        if os.path.exists("/sys/fs/cgroup/cgroup.procs"):
            roots.append(("cgroup v2 at /sys/fs/cgroup", "/sys/fs/cgroup", False))
        mnt = os.path.join(tmp, "cgroup2")
        roots.append(("cgroup v2 mounted at " + mnt, mnt, True))
        for how, root, mount in roots:
            try:
                if mount:
                    os.makedirs(mnt, exist_ok=True)
                    r = subprocess.run(["mount", "-t", "cgroup2", "none", mnt],
                                       stderr=subprocess.DEVNULL)
                    if r.returncode:
                        continue
                    self.mount = mnt
                d = root
                for part in rel:
                    d = os.path.join(d, part)
                    if not os.path.isdir(d):
                        os.mkdir(d)
                        self.dirs.append(d)
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(self.pid))
                line = open("/proc/%d/cgroup" % self.pid).read()
                assert "cri-containerd-%s.scope" % cid in line, line
                self.how = how
                return
            except (OSError, AssertionError):
                self._undo_dirs()
        # Not allowed to make cgroups here: a procfs copy whose cgroup file has the same text.
        self.proc_root = os.path.join(tmp, "proc")
        os.makedirs(os.path.join(self.proc_root, str(self.pid)))
        with open(os.path.join(self.proc_root, str(self.pid), "cgroup"), "w") as f:
            f.write("0::/%s\n" % "/".join(rel))
        self.how = "a fake procfs (cgroups not writable here)"

    def _undo_dirs(self):
        for d in reversed(self.dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass
        self.dirs = []
        if self.mount:
            subprocess.run(["umount", self.mount], stderr=subprocess.DEVNULL)
            self.mount = None

    def close(self):
        self.proc.kill()
        self.proc.wait()
        time.sleep(0.1)  # the cgroup empties once the kernel reaped the task
        self._undo_dirs()


def config(port, mport, proc_root, extra=""):
    return """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  k8sattributes:
    auth_type: serviceAccount
    proc_root: "%s"
    filter:
      node_from_env_var: SONDE_TEST_NODE_NAME
    extract:
      metadata: [k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.pod.start_time,
                 k8s.container.name, k8s.node.name, k8s.deployment.name, k8s.replicaset.name,
                 k8s.statefulset.name, container.image.name, container.image.tag]
      labels:
        - {key: app}
        - {tag_name: "team.$1", key_regex: "(team|tier)"}
        - {key: env, from: namespace}
      annotations:
        - {tag_name: owner, key: sonde.dev/owner}
        - {tag_name: ns.owner, key: sonde.dev/owner, from: namespace}
    pod_association:
      - sources: [{from: resource_attribute, name: process.pid}]
      - sources: [{from: resource_attribute, name: container.id}]
      - sources: [{from: resource_attribute, name: k8s.pod.ip}]
      - sources: [{from: connection}]
%s
exporters:
  file/traces: {path: "@TMP@/traces.json", flush_interval: 10ms}
  file/profiles: {path: "@TMP@/profiles.json", flush_interval: 10ms}
  file/logs: {path: "@TMP@/logs.json", flush_interval: 10ms}
service:
%s  pipelines:
    traces: {receivers: [otlp], processors: [k8sattributes], exporters: [file/traces]}
    profiles: {receivers: [otlp], processors: [k8sattributes], exporters: [file/profiles]}
    logs: {receivers: [otlp], processors: [k8sattributes], exporters: [file/logs]}
""" % (port, proc_root, extra, harness.telemetry(mport))


def env_for(fx, sa_dir):
    os.environ["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
    os.environ["KUBERNETES_SERVICE_PORT"] = str(fx.port)
    os.environ["SONDE_K8S_SERVICEACCOUNT_DIR"] = sa_dir
    os.environ["SONDE_TEST_NODE_NAME"] = NODE


def test_in_cluster():
    tmp = tempfile.mkdtemp(prefix="sonde-k8s-fixture-")
    fx = k8s.Fixture(tmp, watch_seconds=1.5).start()
    checkout, db, other = pods()
    for p in (checkout, db, other):
        fx.add(p)
    fx.add_namespace(k8s.namespace("shop", "0a1b2c3d-0000-4000-8000-000000000001",
                                   {"env": "prod"}, {"sonde.dev/owner": "shop-team"}))
    fx.add_namespace(k8s.namespace("kube-system", "0a1b2c3d-0000-4000-8000-000000000002"))
    place = Placement(tmp, CHECKOUT_UID, CID_SERVER)
    print("process %d placed in its pod's cgroup through %s" % (place.pid, place.how))
    port, mport = harness.free_port(), harness.free_port()
    env_for(fx, fx.service_account_dir())
    s = harness.Sonde(config(port, mport, place.proc_root, "    pod_delete_grace: 1s\n"),
                      "k8sattributes")
    try:
        s.start()
        s.wait_log(r"listed 2 pods on node node-1")
        s.wait_log(r"listed 2 namespaces")
        lists = fx.lists()
        assert lists and lists[0].get("fieldSelector") == "spec.nodeName=node-1", lists
        assert lists[0].get("resourceVersion") == "0", lists  # from the watch cache

        # The process's spans and profiles: only process.pid on the way in.
        got = ask(s, port, {"service.name": "checkout", "process.pid": place.pid})
        want = {"k8s.namespace.name": "shop", "k8s.pod.name": "checkout-7d9f8b6c5d-x2x9q",
                "k8s.pod.uid": CHECKOUT_UID, "k8s.pod.start_time": "2026-11-24T10:00:00Z",
                "k8s.container.name": "server", "k8s.node.name": NODE,
                "k8s.deployment.name": "checkout", "k8s.replicaset.name": "checkout-7d9f8b6c5d",
                "container.image.name": "registry.example.com/shop/checkout",
                "container.image.tag": "1.4.2", "k8s.pod.labels.app": "checkout",
                "team.team": "payments", "team.tier": "backend", "owner": "team-a",
                "k8s.namespace.labels.env": "prod", "ns.owner": "shop-team",
                "service.name": "checkout"}
        for k, v in want.items():
            assert got.get(k) == v, "%s: %r, want %r in %s" % (k, got.get(k), v, got)
        assert "k8s.statefulset.name" not in got and "k8s.pod.labels.team" not in got, got
        prof = {"samples": [{"values": ["7"]}], "timeUnixNano": "1"}
        post(port, "/v1development/profiles", {"resourceProfiles": [{
            "resource": {"attributes": [kv("process.pid", place.pid), kv("marker", "p1")]},
            "scopeProfiles": [{"profiles": [prof]}]}]})
        pr = find(s.path("profiles.json"), "resourceProfiles", "p1")
        for k, v in want.items():
            if k != "service.name":
                assert pr.get(k) == v, "profile %s: %r in %s" % (k, pr.get(k), pr)
        post(port, "/v1/logs", {"resourceLogs": [{
            "resource": {"attributes": [kv("container.id", CID_SIDECAR), kv("marker", "l1")]},
            "scopeLogs": [{"logRecords": [{"body": {"stringValue": "hi"}}]}]}]})
        lg = find(s.path("logs.json"), "resourceLogs", "l1")
        assert lg.get("k8s.container.name") == "envoy" and \
            lg.get("container.image.tag") == "v1.30.1", lg
        print("pid -> cgroup -> container -> pod on spans and profiles; container.id on logs; "
              "namespace labels and annotations")
        # A namespace relabelled later: the watch of namespaces carries it.
        fx.add_namespace(k8s.namespace("shop", "0a1b2c3d-0000-4000-8000-000000000001",
                                       {"env": "staging"}, {"sonde.dev/owner": "shop-team"}))
        deadline = time.time() + 10
        while ask(s, port, {"k8s.pod.ip": "10.244.1.17"}).get("k8s.namespace.labels.env") != \
                "staging":
            assert time.time() < deadline, "namespace MODIFIED not seen"
            time.sleep(0.1)

        # By IP: a StatefulSet pod; an attribute already there wins.
        got = ask(s, port, {"k8s.pod.ip": "10.244.1.18", "k8s.namespace.name": "given"})
        assert got.get("k8s.pod.name") == "db-0" and got.get("k8s.statefulset.name") == "db", got
        assert got.get("k8s.namespace.name") == "given" and "k8s.deployment.name" not in got, got
        # No association, and a pod of another node (never listed): unchanged.
        for attrs in ({"service.name": "lonely"}, {"k8s.pod.ip": "10.244.2.9"},
                      {"process.pid": 999999999}):
            got = ask(s, port, attrs)
            assert set(got) == set(attrs) | {"marker"}, got
        print("IP association, existing attributes kept, unassociated resources unchanged")

        # Watch: a pod added later is learned; deletes are applied.
        late = k8s.pod("late-1", "jobs", "11111111-2222-4333-8444-555555555555", NODE,
                       "10.244.1.30", [("main", "busybox:1.36", "e5" * 32)],
                       owner=("Job", "late"))
        fx.add(late)
        got = ask(s, port, {"k8s.pod.ip": "10.244.1.30"}, "late-1")
        assert got.get("k8s.pod.uid") == "11111111-2222-4333-8444-555555555555", got
        def events():
            _, text = harness.http_get("http://localhost:%d/metrics" % mport)
            return harness.metric_value(text, "sonde_processor_k8sattributes_watch_events_total",
                                        0)
        ev = events()
        fx.delete(DB_UID)
        t_del = time.time()
        deadline = t_del + 10
        while events() <= ev:
            assert time.time() < deadline, "DELETED never received"
            time.sleep(0.02)
        # pod_delete_grace (1s here): data of a pod just deleted still gets its attributes.
        got = ask(s, port, {"k8s.pod.ip": "10.244.1.18"})
        assert got.get("k8s.pod.name") == "db-0" or time.time() - t_del >= 1, got
        while "k8s.pod.name" in ask(s, port, {"k8s.pod.ip": "10.244.1.18"}):
            assert time.time() < deadline, "db-0 still known 10s after DELETED"
            time.sleep(0.1)
        assert time.time() - t_del >= 0.9, "forgotten before its grace period"
        print("watch: ADDED learned, DELETED kept for pod_delete_grace then forgotten")

        # A watch ended by the server resumes from the last version it saw (a bookmark too).
        fx.bookmark()
        bm = fx.rv
        deadline = time.time() + 10
        while not any(q.get("resourceVersion") == str(bm) for q in fx.watches()):
            assert time.time() < deadline, "no watch resumed from the bookmark %d: %s" % (
                bm, fx.watches())
            time.sleep(0.1)
        ws = fx.watches()
        assert all(q.get("allowWatchBookmarks") == "true" for q in ws), ws
        assert all(q.get("fieldSelector") == "spec.nodeName=node-1" for q in ws), ws
        assert len(fx.lists()) == 1, "resuming must not relist: %s %s\n%s" % (fx.lists(), ws, s.log())
        print("watch reconnects resume at resourceVersion (%d watches, bookmark %d)" %
              (len(ws), bm))

        # 410: history compacted; a pod created meanwhile is only in a new list.
        fx.expire()
        gone = k8s.pod("after-gone", "jobs", "22222222-3333-4444-8555-666666666666", NODE,
                       "10.244.1.40", [("main", "busybox:1.36", "f6" * 32)])
        fx.add(gone, silent=True)
        ask(s, port, {"k8s.pod.ip": "10.244.1.40"}, "after-gone")
        assert len(fx.lists()) >= 2, fx.lists()
        assert "resourceVersion" not in fx.lists()[-1], fx.lists()  # the latest, after 410
        s.wait_log(r"410 Gone")
        _, text = harness.http_get("http://localhost:%d/metrics" % mport)
        assert harness.metric_value(text, "sonde_processor_k8sattributes_relists_total", 0) >= 1, \
            text
        assert harness.metric_value(text, "sonde_processor_k8sattributes_watch_events_total",
                                    0) >= 3, text
        print("ERROR 410 relisted; the pod created meanwhile learned")

        # 410 as the HTTP status of the watch request.
        relists = len(fx.lists())
        fx.gone_as_status = True
        fx.expire()
        gone2 = k8s.pod("after-gone-2", "jobs", "33333333-4444-4555-8666-777777777777", NODE,
                        "10.244.1.41", [("main", "busybox:1.36", "a7" * 32)])
        fx.add(gone2, silent=True)
        ask(s, port, {"k8s.pod.ip": "10.244.1.41"}, "after-gone-2")
        assert len(fx.lists()) > relists, fx.lists()
        s.wait_log(r"HTTP 410 Gone")
        print("HTTP 410 Gone relisted")
        s.stop_ok()
    finally:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
        place.close()
        fx.stop()


def test_bad_token():
    tmp = tempfile.mkdtemp(prefix="sonde-k8s-fixture-")
    fx = k8s.Fixture(tmp).start()
    for p in pods():
        fx.add(p)
    port, mport = harness.free_port(), harness.free_port()
    env_for(fx, fx.service_account_dir("wrong-token"))
    s = harness.Sonde(config(port, mport, "/proc"), "k8sattributes-badtoken").start()
    try:
        s.wait_log(r"Kubernetes API refused the credentials \(HTTP 401")
        got = ask(s, port, {"k8s.pod.ip": "10.244.1.17", "service.name": "x"})
        assert set(got) == {"k8s.pod.ip", "service.name", "marker"}, got
        s.stop_ok()
        print("bad token: clear error, data passes through unchanged")
    finally:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
        fx.stop()


def test_kubeconfig():
    tmp = tempfile.mkdtemp(prefix="sonde-k8s-fixture-")
    fx = k8s.Fixture(tmp).start()
    checkout, db, other = pods()
    for p in (checkout, db, other):
        fx.add(p)
    kc = os.path.join(tmp, "kubeconfig")
    ca = base64.b64encode(open(fx.ca, "rb").read()).decode()
    with open(kc, "w") as f:
        f.write("""apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://127.0.0.1:%d
  name: fixture
contexts:
- context:
    cluster: fixture
    user: sonde
  name: fixture
current-context: fixture
users:
- name: sonde
  user:
    token: %s
""" % (ca, fx.port, fx.token))
    for k in ("KUBERNETES_SERVICE_HOST", "SONDE_K8S_SERVICEACCOUNT_DIR"):
        os.environ.pop(k, None)
    port, mport = harness.free_port(), harness.free_port()
    cfg = config(port, mport, "/proc", "    max_pods: 1\n").replace(
        "auth_type: serviceAccount", "auth_type: kubeConfig\n    kube_config_path: \"%s\"" % kc)
    s = harness.Sonde(cfg, "k8sattributes-kubeconfig").start()
    try:
        s.wait_log(r"listed 2 pods on node node-1")
        # max_pods 1: the first listed pod was evicted by the second.
        got = ask(s, port, {"container.id": "c3" * 32}, "db-0")
        assert got.get("k8s.container.name") == "postgres", got
        got = ask(s, port, {"container.id": CID_SERVER})
        assert "k8s.pod.name" not in got, got
        _, text = harness.http_get("http://localhost:%d/metrics" % mport)
        assert harness.metric_value(
            text, "sonde_processor_k8sattributes_pod_evictions_total", 0) == 1, text
        assert harness.metric_value(text, "sonde_processor_k8sattributes_pods", 0) == 1, text
        # SIGHUP: the new configuration's processor lists again with a client of its own.
        s.proc.send_signal(signal.SIGHUP)
        s.wait_log(r"configuration reloaded")
        deadline = time.time() + 10
        while s.log().count("listed 2 pods on node node-1") < 2:
            assert time.time() < deadline, "no list after the reload:\n" + s.log()
            time.sleep(0.05)
        ask(s, port, {"container.id": "c3" * 32}, "db-0")
        s.stop_ok()
        print("kubeconfig (certificate-authority-data, token); max_pods bound with evictions; "
              "SIGHUP reload lists again")
    finally:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
        fx.stop()


def test_validate():
    base = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}
processors:
  k8sattributes:
    auth_type: none
    extract:
%s
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [k8sattributes], exporters: [debug]}
"""
    cases = [("      metadata: [k8s.pod.name, k8s.cluster.nam]", "unknown \"k8s.cluster.nam\""),
             ("      labels: [{key: app, from: node}]", "valid values: pod, namespace"),
             ("      labels: [{tag_name: x}]", "exactly one of key and key_regex"),
             ("      annotations: [{key_regex: \"(a\"}]", "invalid regular expression")]
    for body, want in cases:
        s = harness.Sonde(base % body, "k8sattributes-validate")
        rc, out = harness.run_cli("validate", "--config", s.config)
        assert rc != 0 and want in out, (body, out)
    rc, out = harness.run_cli("components")
    assert "k8sattributes" in out, out
    print("validate: unknown metadata, from: node, key rules and bad regexes refused")


def test_kubeconfig_client_cert():
    tmp = tempfile.mkdtemp(prefix="sonde-k8s-fixture-")
    fx = k8s.Fixture(tmp).start()
    for p in pods():
        fx.add(p)
    kc = os.path.join(tmp, "kubeconfig")

    def b64(path):
        return base64.b64encode(open(path, "rb").read()).decode()
    with open(kc, "w") as f:
        f.write("""apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://localhost:%d
  name: kind-fixture
contexts:
- context: {cluster: kind-fixture, user: kind-fixture}
  name: kind-fixture
current-context: kind-fixture
users:
- name: kind-fixture
  user:
    client-certificate-data: %s
    client-key-data: %s
""" % (b64(fx.ca), fx.port, b64(fx.client_crt), b64(fx.client_key)))
    port, mport = harness.free_port(), harness.free_port()
    cfg = config(port, mport, "/proc").replace(
        "auth_type: serviceAccount", "auth_type: kubeConfig\n    kube_config_path: \"%s\"" % kc)
    s = harness.Sonde(cfg, "k8sattributes-clientcert").start()
    try:
        s.wait_log(r"listed 2 pods on node node-1")
        got = ask(s, port, {"container.id": CID_SERVER}, "checkout-7d9f8b6c5d-x2x9q")
        assert got.get("k8s.deployment.name") == "checkout", got
        assert not any(ok is False for _, _, ok in fx.requests), fx.requests
        s.stop_ok()
        print("kubeconfig with a client certificate (kind's shape), server named localhost")
    finally:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
        fx.stop()


def test_passthrough():
    for k in ("KUBERNETES_SERVICE_HOST", "SONDE_K8S_SERVICEACCOUNT_DIR"):
        os.environ.pop(k, None)
    port = harness.free_port()
    cfg = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:%d"}}}
processors:
  k8sattributes:
    passthrough: true
    pod_association:
      - sources: [{from: connection}]
exporters:
  file/traces: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [k8sattributes], exporters: [file/traces]}
""" % port
    s = harness.Sonde(cfg, "k8sattributes-passthrough").start()
    try:
        got = ask(s, port, {"net.sock.peer.addr": "10.244.3.3"})
        assert got.get("k8s.pod.ip") == "10.244.3.3" and len(got) == 3, got
        got = ask(s, port, {"service.name": "x"})
        assert set(got) == {"service.name", "marker"}, got
        s.stop_ok()
        print("passthrough: k8s.pod.ip from the connection attribute, no API")
    finally:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()


def test():
    test_validate()
    test_in_cluster()
    test_bad_token()
    test_kubeconfig()
    test_kubeconfig_client_cert()
    test_passthrough()


harness.main(test)

"""flamegraph exporter: OTLP/HTTP JSON profiles of a real binary -> symbolizer -> flamegraph, the
page used in headless Chromium (tests/e2e/flamegraph_browser.js over the DevTools protocol: real
key presses and mouse clicks), its JSON API read here, snapshots, and the bounded history.

The binary (gcc -O2 -g, test_symbolizer's) gives inner_step (inlined) <- leaf_work <- middle_call
<- outer_entry <- main. Services: checkout (pid 100), cart (pid 200) and one named like markup
(pid 300) that must stay text. One batch 6 minutes old is the diff's baseline.
Screenshots go to <build>/e2e-flamegraph/.
"""
import glob
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import harness
import test_symbolizer as ts

EVIL = '<img src=x onerror="window.pwned=1">'
HERE = os.path.dirname(os.path.abspath(__file__))


def get_json(url):
    status, body = harness.http_get(url)
    return status, json.loads(body) if body.startswith("{") else body


def wait(cond, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def http_status(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def find(node, name):
    if node["n"] == name:
        return node
    for c in node.get("c", []):
        r = find(c, name)
        if r:
            return r
    return None


def test():
    s = harness.Sonde("", "flamegraph")
    try:
        scenario(s)
    finally:  # a failed check must not leave sonde running
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def scenario(s):
    chromium = shutil.which("chromium")
    if not chromium:
        raise AssertionError("chromium (Debian) is needed: scripts/deps.sh installs it")
    hport, fport, sport = harness.free_port(), harness.free_port(), harness.free_port()
    tmp = s.tmp
    full = ts.compile_c(tmp, "app", 11)
    bid = ts.build_id(full)
    syms = ts.symbols(full)
    va, _ = ts.inlined_address(full)
    chain = [va] + [syms[f][0] + 1 for f in ("middle_call", "outer_entry", "main")]
    prof = ts.Profile()
    start = 0x555555554000
    m = prof.mapping(full, bid, start, start + 0x10000, 0)
    locs = [prof.location(m, ts.vaddr_to_offset(full, a)) for a in chain]
    body = prof.body()
    d = body["dictionary"]
    d["stackTable"] = [{}, {"locationIndices": locs}, {"locationIndices": locs[2:]}]
    st = d["stringTable"]
    for w in ("samples", "count"):
        if w not in st:
            st.append(w)

    def batch(t, counts):
        def res(name, pid):
            return {"attributes": [{"key": "service.name", "value": {"stringValue": name}},
                                   {"key": "process.pid", "value": {"intValue": str(pid)}},
                                   {"key": "process.executable.name",
                                    "value": {"stringValue": "app"}}]}
        rps = []
        for (name, pid), (deep, shallow) in counts.items():
            rps.append({"resource": res(name, pid), "scopeProfiles": [{"profiles": [{
                "sampleType": {"typeStrindex": st.index("samples"),
                               "unitStrindex": st.index("count")},
                "timeUnixNano": str(int(t * 1e9)),
                "samples": [{"stackIndex": 1, "values": [str(deep)]},
                            {"stackIndex": 2, "values": [str(shallow)]}]}]}]})
        return dict(body, resourceProfiles=rps)

    snapdir = os.path.join(tmp, "snapshots")
    mport = harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  symbolizer: {}
exporters:
  flamegraph:
    endpoint: "127.0.0.1:%d"
    directory: "%s"
  flamegraph/short:
    endpoint: "127.0.0.1:%d"
    slot: 1s
    max_history: 2s
    snapshot_on_shutdown: false
service:
  pipelines:
    profiles: {receivers: [otlp], processors: [symbolizer], exporters: [flamegraph, flamegraph/short]}
""" % (hport, fport, snapdir, sport) + harness.telemetry(mport)
    with open(s.config, "w") as f:
        f.write(cfg)
    s.start()
    s.wait_log(r"flame graph on http://127\.0\.0\.1:%d/" % fport)
    now = time.time()
    ts.post(hport, batch(now - 360, {("checkout", 100): (1, 9)}))
    ts.post(hport, batch(now, {("checkout", 100): (5, 2), ("cart", 200): (3, 1),
                               (EVIL, 300): (1, 0)}))
    base = "http://127.0.0.1:%d" % fport

    # ---- the JSON API
    def recent():
        status, j = get_json(base + "/api/flame?from=-300000&group=none")
        return j if status == 200 and j["total"] == 12 else None
    j = wait(recent, "12 samples in the last 5 minutes")
    assert j["unit"] == "samples/count", j
    tree = j["tree"]
    assert [c["n"] for c in tree["c"]] == ["main"], tree
    assert find(tree, "outer_entry")["v"] == 12, tree
    mid = find(tree, "middle_call")
    assert mid["v"] == 9, mid
    assert find(mid, "leaf_work")["v"] == 9 and find(mid, "inner_step")["v"] == 9, mid
    status, j = get_json(base + "/api/flame?group=none")  # everything kept: the old batch too
    assert j["total"] == 22, j
    status, j = get_json(base + "/api/flame?from=-300000&service=cart&group=process")
    assert j["total"] == 4 and [c["n"] for c in j["tree"]["c"]] == ["app [200]"], j
    status, j = get_json(base + "/api/flame?from=-300000&from2=-600000&to2=-300000&group=none")
    assert j["total"] == 12 and j["base"] == 10, j
    assert find(j["tree"], "leaf_work")["b"] == 1, j
    status, j = get_json(base + "/api/labels?from=-300000")
    assert j["services"] == sorted(["cart", "checkout", EVIL]), j
    assert j["processes"] == ["app [100]", "app [200]", "app [300]"], j
    assert sum(v for _, v in j["slots"]) == 22, j
    status, j = get_json(base + "/api/flame?from=soon")
    assert status == 400 and "from" in j["error"], (status, j)
    status, _ = harness.http_get(base + "/nope")
    assert status == 404, status
    # a page elsewhere: no reading through a rebound name, no snapshot by a plain form POST
    assert http_status(base + "/api/flame", headers={"Host": "evil.example:%d" % fport}) == 403
    assert http_status(base + "/api/snapshot", method="POST") == 403
    assert not os.path.exists(snapdir), "a snapshot written without the header"
    status, page = harness.http_get(base + "/")
    assert status == 200 and "sonde flame graph" in page, page[:200]
    assert "://" not in page, "the page must not load anything from elsewhere"

    # ---- the page in Chromium
    shots = os.path.join(harness.build_dir(), "e2e-flamegraph")
    os.makedirs(shots, exist_ok=True)
    # Node 22 has WebSocket built in; Node 20 behind a flag
    has_ws = subprocess.run(["node", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
                             ]).returncode == 0
    node = subprocess.run(["node"] + ([] if has_ws else ["--experimental-websocket"]) +
                          [os.path.join(HERE, "flamegraph_browser.js"), base + "/", shots,
                           "outer_entry", "leaf", "cart"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90,
                          env=dict(os.environ, CHROMIUM=chromium))
    assert node.returncode == 0, node.stderr.decode(errors="replace") + s.log()
    out = json.loads(node.stdout)
    first = out["first"]
    for name in ("app [100]", "app [200]", "main", "outer_entry", "middle_call", "leaf_work",
                 "inner_step"):
        assert name in first["names"], first["names"]
    assert first["view"]["total"] == 12, first["view"]
    # flame: the root row at the bottom of the chart
    root = first["roots"][0]
    assert abs(root["bottom"] - first["chart"]["bottom"]) < 2, first
    assert not out["pwnedLive"] and not out["pwned"], "a name was parsed as markup"
    assert EVIL in first["names"] or "app [300]" in first["names"], first["names"]
    # search: leaf_work of the three processes, 5 + 3 + 1 of 12 samples
    assert out["search"]["hits"] == 3 and out["search"]["hl"] == ["leaf_work"] * 3, out
    assert "3 matching frames, 75.00%" in out["search"]["text"], out["search"]
    # zoom: outer_entry of the biggest process spans the chart, the other process is gone
    z = out["zoom"]
    assert z["width"] > out["first"]["chart"]["width"] - 3, (z, out["beforeZoomWidth"])
    assert out["beforeZoomWidth"] < z["width"] * 0.8, out
    assert "app [200]" not in z["names"] and "inner_step" in z["names"], z
    assert "outer_entry" in z["crumbs"], z
    assert out["escape"], out
    # icicle: the root row at the top
    ic = out["icicle"]
    assert abs(ic["roots"][0]["top"] - ic["chart"]["top"]) < 2, ic
    # service filter
    fl = out["filtered"]
    assert fl["view"]["total"] == 4 and "app [200]" in fl["names"], fl
    assert "app [100]" not in fl["names"], fl
    assert EVIL in fl["services"], fl
    # diff against the 5 minutes before: baseline of the filtered service is empty, so all grew
    assert "baseline 0" in out["diff"]["status"], out["diff"]
    assert all(c.startswith("rgb(244, 37, 37)") for _, c in out["diff"]["colours"]), out["diff"]
    # a window picked on the timeline (the old batch: checkout 1 + 9) against a baseline picked
    # there too (the recent one: checkout 7 of 12): the root is the same (grey), checkout grew from
    # 58 % to 100 % (red), leaf_work shrank from 9 of 12 to 1 of 10 (blue)
    tl = out["timeline"]
    assert tl["view"]["total"] == 10 and tl["view"]["base"] == 12, tl
    assert tl["window"] == "custom" and tl["sel"] == ["sel", "sel base"], tl

    def rgb(c):
        return [int(x) for x in c[4:-1].split(",")]
    col = tl["colours"]
    assert col["all"] == "rgb(217, 217, 217)", col
    r, g, b = rgb(col["app [100]"])
    assert r > b + 50, col
    r, g, b = rgb(col["leaf_work"])
    assert b > r + 50, col
    # snapshot through the button, read back from file:// (no server)
    sp = out["snapshot"]["path"]
    assert sp.startswith(snapdir) and os.path.exists(sp), sp
    assert "leaf_work" in out["snapshot"]["names"], out["snapshot"]
    assert out["snapshot"]["view"]["total"] == 22, out["snapshot"]
    with open(sp) as f:
        html = f.read()
    assert "<img" not in html.split("const SNAP")[1], "unescaped name in the snapshot"
    for p in ("flamegraph-zoom.png", "flamegraph-search.png", "flamegraph-icicle.png"):
        with open(os.path.join(shots, p), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", p

    # ---- bounded history: flamegraph/short keeps 2 s; the batch 6 min old was never kept
    sbase = "http://127.0.0.1:%d" % sport
    status, j = get_json(sbase + "/api/flame")
    assert j["total"] in (0, 12), j
    wait(lambda: get_json(sbase + "/api/labels")[1]["slots"] == [], "the short history to empty")
    status, j = get_json(sbase + "/api/flame")
    assert j["total"] == 0, j
    status, metrics = harness.http_get("http://localhost:%d/metrics" % mport)
    assert harness.metric_value(metrics, "sonde_exporter_flamegraph_samples_total") == 7 + 5, \
        metrics
    assert harness.metric_value(metrics, "sonde_exporter_flamegraph_dropped_slots_total") >= 1, \
        metrics

    # ---- snapshot on shutdown
    before = set(glob.glob(os.path.join(snapdir, "*.html")))
    s.stop_ok()
    after = set(glob.glob(os.path.join(snapdir, "*.html"))) - before
    assert len(after) == 1, (before, after, s.log())
    with open(after.pop()) as f:
        assert "inner_step" in f.read()
    assert not glob.glob(os.path.join(snapdir, "*.tmp")), "temporary files left"


if __name__ == "__main__":
    harness.main(test)

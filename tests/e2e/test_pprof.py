"""pprof exporter: OTLP/HTTP JSON profiles -> symbolizer -> pprof files, read by peers we did not
write: `go tool pprof` (Debian golang-go; -traces and -raw) and the npm `pprof-format` decoder
(tests/e2e/node/pprof_decode.js).

One C binary (gcc -O2 -g, the inlined static inline function of test_symbolizer) gives a stack
inner_step (inlined) <- leaf_work <- middle_call <- outer_entry <- main; two services, samples with
thread.id / thread.name labels, samples/count with a cpu/nanoseconds period.
"""
import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import time

import harness
import test_pyroscope as tp

ts = tp.ts
PERIOD = tp.PERIOD  # 19 Hz


def go_pprof(*args):
    env = dict(os.environ, HOME=os.environ.get("HOME", "/tmp"), GOCACHE="/tmp/go-cache-sonde",
               PPROF_TMPDIR="/tmp")
    p = subprocess.run(["go", "tool", "pprof", "-symbolize=none"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    return out


def traces(text):
    """go tool pprof -traces output -> [(value, [frames leaf first], {label: value})]."""
    out = []
    for block in text.split("-----------+")[1:]:
        frames, labels, value = [], {}, None
        for line in block.splitlines()[1:]:
            parts = line.split()
            if not parts:
                continue
            if value is None and parts[0].endswith(":"):
                labels[parts[0][:-1]] = " ".join(parts[1:])
            elif value is None:
                value = parts[0]
                frames.append(parts[1])
            else:
                frames.append(parts[0])
        if value is not None:
            out.append((value, frames, labels))
    return out


def test():
    if not shutil.which("go"):
        raise AssertionError("go (Debian golang-go) is needed: scripts/deps.sh installs it")
    hport = harness.free_port()
    s = harness.Sonde("", "pprof")
    tmp = s.tmp
    body, full, bid, profile = tp.chain_request(
        tmp, int(time.time() * 1e9), labels=[("thread.id", {"intValue": "4242"}),
                                             ("thread.name", {"stringValue": "worker-1"})])

    def res(name):
        return {"attributes": [{"key": "service.name", "value": {"stringValue": name}}]}
    body["resourceProfiles"] = [
        {"resource": res("checkout"), "scopeProfiles": [{"profiles": [profile(5, 2)]}]},
        {"resource": res("cart/api"), "scopeProfiles": [{"profiles": [profile(3, 1)]}]}]

    out = os.path.join(tmp, "pprof")
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  symbolizer: {}
exporters:
  pprof: {directory: "%s"}
service:
  pipelines:
    profiles: {receivers: [otlp], processors: [symbolizer], exporters: [pprof]}
""" % (hport, out)
    with open(s.config, "w") as f:
        f.write(cfg)
    s.start()
    ts.post(hport, body)
    ts.post(hport, body)  # a second batch, usually in the same second: "-1" names
    deadline = time.time() + 20
    files = []
    while time.time() < deadline and len(files) < 4:
        files = sorted(glob.glob(os.path.join(out, "*.pb.gz")))
        time.sleep(0.05)
    s.stop_ok()
    names = sorted(os.path.basename(f).split("-")[0] for f in files)
    assert names == ["cart_api", "cart_api", "checkout", "checkout"], files
    for f in files:
        assert re.match(r"^(cart_api|checkout)-\d{10}(-1)?\.pb\.gz$", os.path.basename(f)), f
    assert not glob.glob(os.path.join(out, ".*")), "temporary files left"
    ck = [f for f in files if os.path.basename(f).startswith("checkout-")][0]
    with open(ck, "rb") as f:
        assert f.read(2) == b"\x1f\x8b", "not gzip"
    gzip.open(ck).read()

    # go tool pprof: the stacks and names, leaf first, inlined frame included
    text = go_pprof("-traces", "-sample_index=samples", ck)
    tr = traces(text)
    want_full = ["inner_step", "leaf_work", "middle_call", "outer_entry", "main"]
    stacks = {tuple(t[1]): t for t in tr}
    assert tuple(want_full) in stacks, text
    assert tuple(want_full[2:]) in stacks, text
    assert stacks[tuple(want_full)][0] == "5", text
    assert stacks[tuple(want_full)][2] == {"thread.name": "worker-1", "thread.id": "4242"}, text
    assert "inner_step (inline)" in text, text
    cpu = go_pprof("-traces", "-sample_index=cpu", ck)
    assert "Type: cpu" in cpu, cpu
    raw = go_pprof("-raw", ck)
    assert "samples/count cpu/nanoseconds" in raw, raw
    assert bid in raw, "build id not in the mappings:\n" + raw
    assert "Period: %d" % PERIOD in raw, raw

    # pprof-format (npm) decodes it too; checked field by field in Node
    node = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
    p = subprocess.run(["node", os.path.join(node, "pprof_decode.js"), ck],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode()
    dec = json.loads(p.stdout)
    assert dec["strings0"] == "", dec
    assert dec["sampleTypes"] == [["samples", "count"], ["cpu", "nanoseconds"]], dec
    leaf = [smp for smp in dec["samples"] if len(smp["stack"]) == 4][0]
    assert leaf["stack"] == [["inner_step", "leaf_work"], ["middle_call"], ["outer_entry"],
                             ["main"]], leaf
    assert leaf["values"] == [5, 5 * PERIOD], leaf
    assert leaf["labels"] == {"thread.id": 4242, "thread.name": "worker-1"}, leaf
    mp = dec["mappings"][0]
    assert mp["buildId"] == bid and mp["hasFunctions"] and mp["hasInlineFrames"], mp
    assert mp["filename"] == full, mp
    print("pprof: %d files; go tool pprof and pprof-format agree on stacks, labels, build id" %
          len(files))


if __name__ == "__main__":
    harness.main(test)

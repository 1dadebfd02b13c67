"""pprof exporter rotation: a directory per bound (total size, age, count) and one without
rotation, each filled beforehand with older pprof files and with files that are not the exporter's;
one batch makes each exporter write its file and prune: exactly the files past the bound go, oldest
first, the newest (just written) stays, and nothing else in the directory is touched."""
import glob
import os
import time

import harness
import test_symbolizer as ts


def names(d):
    return sorted(os.listdir(d))


def put(d, name, size):
    with open(os.path.join(d, name), "wb") as f:
        f.write(os.urandom(size))


def test():
    hport, mport = harness.free_port(), harness.free_port()
    s = harness.Sonde("", "pprof-rotation")
    now = int(time.time())
    dirs = {k: os.path.join(s.tmp, k) for k in ("size", "age", "count", "none")}
    foreign = ["notes.txt", "svc-abc.pb.gz", ".svc-%d.pb.gz" % (now - 999), "svc-12.pb.gz"]
    for d in dirs.values():
        os.mkdir(d)
        for f in foreign:
            put(d, f, 10)
    # size (max_megabytes 1): five 400 KiB files, 10 s apart; with the new one only two fit
    for i in range(1, 6):
        put(dirs["size"], "svc-%d.pb.gz" % (now - 10 * i), 400 << 10)
    # age (max_days 1): two files 3 days old go, one 12 hours old stays
    for name in ("svc-%d.pb.gz" % (now - 3 * 86400), "other-svc-%d-1.pb.gz" % (now - 3 * 86400),
                 "svc-%d.pb.gz" % (now - 12 * 3600)):
        put(dirs["age"], name, 100)
    # count (max_files 2): the second file of a second ("-1") is the newer of the two
    for name in ("svc-%d.pb.gz" % (now - 20), "svc-%d.pb.gz" % (now - 10),
                 "svc-%d-1.pb.gz" % (now - 10)):
        put(dirs["count"], name, 100)
    put(dirs["none"], "svc-%d.pb.gz" % (now - 30 * 86400), 100)
    before = {k: names(d) for k, d in dirs.items()}

    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  pprof/size: {directory: "%s", rotation: {max_megabytes: 1}}
  pprof/age: {directory: "%s", rotation: {max_days: 1, max_megabytes: 0}}
  pprof/count: {directory: "%s", rotation: {max_files: 2}}
  pprof/none: {directory: "%s"}
service:
%s  pipelines:
    profiles:
      receivers: [otlp]
      exporters: [pprof/size, pprof/age, pprof/count, pprof/none]
""" % (hport, dirs["size"], dirs["age"], dirs["count"], dirs["none"], harness.telemetry(mport))
    with open(s.config, "w") as f:
        f.write(cfg)
    prof = ts.Profile()
    m = prof.mapping("/usr/bin/app", None, 0x400000, 0x500000, 0)
    prof.resources.append(({"service.name": "svc"}, [prof.location(m, 0x1234)]))
    s.start()
    try:
        ts.post(hport, prof.body())
        deadline = time.time() + 30
        written = removed = 0
        while time.time() < deadline and (written < 4 or removed < 7):
            _, text = harness.http_get("http://127.0.0.1:%d/metrics" % mport)
            written = harness.metric_value(text, "sonde_exporter_pprof_files_total", 0)
            removed = harness.metric_value(text, "sonde_exporter_pprof_removed_files_total", 0)
            time.sleep(0.05)
        assert written == 4 and removed == 7, (written, removed, text)
    finally:
        s.stop_ok()

    after = {k: names(d) for k, d in dirs.items()}
    new = {}
    for k in dirs:
        added = set(after[k]) - set(before[k])
        assert len(added) == 1, (k, before[k], after[k])
        new[k] = added.pop()
        with open(os.path.join(dirs[k], new[k]), "rb") as f:
            assert f.read(2) == b"\x1f\x8b", "not gzip"
        for f in foreign:
            assert f in after[k], (k, f, after[k])
    want = {
        "size": ["svc-%d.pb.gz" % (now - 10), "svc-%d.pb.gz" % (now - 20)],
        "age": ["svc-%d.pb.gz" % (now - 12 * 3600)],
        "count": ["svc-%d-1.pb.gz" % (now - 10)],
        "none": before["none"],
    }
    for k, kept in want.items():
        got = sorted(set(after[k]) - set(foreign) - {new[k]})
        assert got == sorted(set(kept) - set(foreign)), (k, got, kept)
    assert not glob.glob(os.path.join(dirs["size"], "*.tmp")), "temporary files left"
    print("pprof rotation: size, age and count bounds removed 3, 2 and 2 files, oldest first; "
          "the new files and the foreign ones stay")


if __name__ == "__main__":
    harness.main(test)

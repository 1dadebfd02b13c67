"""file: zstd records decode with the zstd CLI; rotation renames like lumberjack, keeps
max_backups files and never splits a record; append keeps what was there; config errors."""
import glob
import os
import re

import harness
import otlpcheck


def traces_pipeline(exporters, port):
    return ("service:\n" + harness.telemetry(port) +
            "  pipelines:\n    traces:\n      receivers: [testgen]\n      exporters: [%s]\n"
            % ", ".join(exporters))


def test_zstd():
    cfg = """
receivers:
  testgen: {count: 500, per_batch: 50, interval: 1ms}
exporters:
  file/json: {path: "@TMP@/t.json.zst", compression: zstd}
  file/proto: {path: "@TMP@/t.pb.zst", format: proto, compression: zstd}
""" + traces_pipeline(["file/json", "file/proto"], harness.free_port())
    s = harness.Sonde(cfg, "zstd").start()
    s.wait_log(r"finished: 500 items")
    s.stop_ok()
    for name, fmt in (("t.json.zst", "json"), ("t.pb.zst", "proto")):
        recs = otlpcheck.decode(s.path(name), "traces", fmt, zstd=True)
        otlpcheck.check_all(recs, "traces", 500)
        print("zstd %s: %d frames, each decoded by the zstd CLI" % (fmt, len(recs)))


def test_rotation():
    # ~460 bytes of JSON per span: 10000 spans make ~4.5 MiB, rotated at 1 MiB, 2 backups kept.
    cfg = """
receivers:
  testgen: {count: 10000, per_batch: 200, interval: 1ms}
exporters:
  file: {path: "@TMP@/spans.json", rotation: {max_megabytes: 1, max_backups: 2}}
""" + traces_pipeline(["file"], harness.free_port())
    s = harness.Sonde(cfg, "rotation").start()
    s.wait_log(r"finished: 10000 items")
    s.stop_ok()
    backups = sorted(glob.glob(s.path("spans-*.json")))
    pat = re.compile(r"spans-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.json$")
    assert len(backups) == 2, "backups %s" % backups
    for b in backups:
        assert pat.search(b), "backup name %s" % b
        assert os.path.getsize(b) <= 1024 * 1024, "%s is %d bytes" % (b, os.path.getsize(b))
    # Every file holds whole records; together the kept ones are the newest, in order.
    seen = []
    for f in backups + [s.path("spans.json")]:
        for rec in otlpcheck.decode(f, "traces", "json"):
            seen += [otlpcheck.check_item("traces", it, 0) for it in rec]
    assert seen == list(range(seen[0], 10000)), "kept items are not the newest run"
    print("rotation: 2 backups kept, %d newest items intact across 3 files" % len(seen))


def test_append():
    base = """
receivers:
  testgen: {count: 20, per_batch: 10, seed: 0}
exporters:
  file: {path: "@TMP@/a.json", append: %s}
"""
    port = harness.free_port()
    s = harness.Sonde(base % "true" + traces_pipeline(["file"], port), "append")
    with open(s.path("a.json"), "w") as f:
        f.write('{"resourceSpans":[]}\n')
    s.start()
    s.wait_log(r"finished: 20 items")
    s.stop_ok()
    lines = open(s.path("a.json")).read().splitlines()
    assert lines[0] == '{"resourceSpans":[]}' and len(lines) >= 3, lines[:3]
    # append: false truncates.
    with open(s.config, "w") as f:
        f.write((base % "false" + traces_pipeline(["file"], port)).replace("@TMP@", s.tmp))
    s.start()
    s.wait_log(r"finished: 20 items")
    s.stop_ok()
    recs = otlpcheck.decode(s.path("a.json"), "traces", "json")
    otlpcheck.check_all(recs, "traces", 20)
    print("append: kept the old line; truncate: only the new run")


def test_config_errors():
    cases = [
        ("{path: x, append: true, compression: zstd}",
         "append and compression enabled at the same time is not supported"),
        ("{path: x, append: true, rotation: {max_megabytes: 5}}",
         "append and rotation enabled at the same time is not supported"),
        ("{path: x, compression: gzip}", "compression is not supported"),
        ("{format: json}", "path"),
    ]
    for opts, want in cases:
        cfg = "receivers:\n  testgen: {}\nexporters:\n  file: %s\n" % opts + traces_pipeline(
            ["file"], 1)
        s = harness.Sonde(cfg, "file-validate")
        rc, out = harness.run_cli("validate", "--config", s.config)
        assert rc != 0 and want in out, "%s: rc %d\n%s" % (opts, rc, out)
    print("config errors: %d cases refused with otelcol's messages" % len(cases))


def test():
    test_config_errors()
    test_zstd()
    test_rotation()
    test_append()


harness.main(test)

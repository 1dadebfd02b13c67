"""testgen -> batch -> file (json and proto), all three signals; every item checked."""
import harness
import otlpcheck

COUNT = 1000
SEED = 4242


def test():
    cfg = """
receivers:
  testgen:
    count: %d
    per_batch: 37
    interval: 1ms
    seed: %d
processors:
  batch:
    send_batch_size: 100
    send_batch_max_size: 150
    timeout: 50ms
exporters:
""" % (COUNT, SEED)
    pipelines = ""
    for sig in ("traces", "metrics", "logs"):
        cfg += "  file/%s_json:\n    path: @TMP@/%s.json\n" % (sig, sig)
        cfg += "  file/%s_proto:\n    path: @TMP@/%s.pb\n    format: proto\n" % (sig, sig)
        pipelines += ("    %s:\n      receivers: [testgen]\n      processors: [batch]\n"
                      "      exporters: [file/%s_json, file/%s_proto]\n" % (sig, sig, sig))
    cfg += "service:\n" + harness.telemetry(harness.free_port()) + "  pipelines:\n" + pipelines

    s = harness.Sonde(cfg, "roundtrip").start()
    s.wait_log(r"finished: %d items per signal" % COUNT)
    s.stop_ok()
    for sig in ("traces", "metrics", "logs"):
        for fmt, ext in (("json", "json"), ("proto", "pb")):
            recs = otlpcheck.decode(s.path("%s.%s" % (sig, ext)), sig, fmt)
            otlpcheck.check_all(recs, sig, COUNT, SEED)
            sizes = [len(r) for r in recs]
            assert max(sizes) <= 150, "%s %s: a record of %d items" % (sig, fmt, max(sizes))
            print("%s/%s: %d items in %d records, largest %d" % (sig, fmt, sum(sizes), len(recs),
                                                                 max(sizes)))


harness.main(test)

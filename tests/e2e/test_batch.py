"""batch: send_batch_max_size splits at item granularity (through resources and metrics), the
size trigger and the timeout trigger both send, shutdown flushes the rest, and the otelcol
metrics count it."""
import time

import harness
import otlpcheck


def pipelines(signals, processors, exporter):
    out = "  pipelines:\n"
    for sig in signals:
        out += ("    %s:\n      receivers: [testgen]\n      processors: [%s]\n"
                "      exporters: [%s/%s]\n" % (sig, processors, exporter, sig))
    return out


def test_split():
    # Incoming batches of 300 items (two resources of 150; metrics of 75 points each) against a
    # limit of 64: every cut falls inside a resource, scope or metric.
    port = harness.free_port()
    cfg = """
receivers:
  testgen: {count: 1000, per_batch: 300, interval: 1ms}
processors:
  batch: {send_batch_size: 64, send_batch_max_size: 64, timeout: 10s}
exporters:
"""
    for sig in ("traces", "metrics", "logs"):
        cfg += "  file/%s:\n    path: @TMP@/%s.json\n    flush_interval: 10ms\n" % (sig, sig)
    cfg += "service:\n" + harness.telemetry(port) + pipelines(("traces", "metrics", "logs"),
                                                              "batch", "file")
    s = harness.Sonde(cfg, "batch-split").start()
    s.wait_log(r"finished: 1000 items")
    # 1000 = 15 * 64 + 40: the 40 wait for the (10 s) timeout, and go out at shutdown.
    time.sleep(0.5)
    for sig in ("traces", "metrics", "logs"):
        sizes = [len(r) for r in otlpcheck.decode(s.path(sig + ".json"), sig, "json")]
        assert sizes == [64] * 15, "%s before shutdown: %s" % (sig, sizes)
    _, text = harness.http_get("http://localhost:%d/metrics" % port)
    size_trig = harness.metric_value(text, "otelcol_processor_batch_batch_size_trigger_send_total")
    assert size_trig == 45, "batch_size_trigger_send %r:\n%s" % (size_trig, text)
    assert harness.metric_value(text, "otelcol_processor_batch_batch_send_size") == 64, text
    s.stop_ok()
    for sig in ("traces", "metrics", "logs"):
        recs = otlpcheck.decode(s.path(sig + ".json"), sig, "json")
        otlpcheck.check_all(recs, sig, 1000)
        sizes = [len(r) for r in recs]
        assert sizes == [64] * 15 + [40], "%s: %s" % (sig, sizes)
    print("split: 15 x 64 + 40 per signal, every item intact")


def test_timeout():
    # 10 items against send_batch_size 1000: only the timeout can send them.
    port = harness.free_port()
    cfg = """
receivers:
  testgen: {count: 10, per_batch: 5, interval: 1ms}
processors:
  batch: {send_batch_size: 1000, timeout: 300ms}
exporters:
  file/traces: {path: "@TMP@/traces.json", flush_interval: 10ms}
service:
""" + harness.telemetry(port) + pipelines(("traces",), "batch", "file")
    s = harness.Sonde(cfg, "batch-timeout").start()
    s.wait_log(r"finished: 10 items")
    t0 = time.time()
    recs = []
    while time.time() - t0 < 5 and not recs:
        time.sleep(0.02)
        recs = otlpcheck.decode(s.path("traces.json"), "traces", "json")
    waited = time.time() - t0
    assert [len(r) for r in recs] == [10], "records %s" % [len(r) for r in recs]
    assert 0.1 < waited < 2, "timeout flush after %.2fs" % waited
    _, text = harness.http_get("http://localhost:%d/metrics" % port)
    assert harness.metric_value(text, "otelcol_processor_batch_timeout_trigger_send_total") == 1, text
    s.stop_ok()
    otlpcheck.check_all(otlpcheck.decode(s.path("traces.json"), "traces", "json"), "traces", 10)
    print("timeout: 10 items sent %.2fs after the last arrived" % waited)


def test_validate():
    cfg = """
receivers:
  testgen: {}
processors:
  batch: {send_batch_size: 100, send_batch_max_size: 10}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [testgen], processors: [batch], exporters: [debug]}
"""
    s = harness.Sonde(cfg, "batch-validate")
    rc, out = harness.run_cli("validate", "--config", s.config)
    assert rc != 0 and "send_batch_max_size must be greater or equal to send_batch_size" in out, out
    print("validate: refused max < size")


def test():
    test_validate()
    test_split()
    test_timeout()


harness.main(test)

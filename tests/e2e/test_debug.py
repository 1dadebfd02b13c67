"""debug: basic logs one count line per batch, normal one line per item, detailed every field in
otelcol's layout; sampling keeps the first sampling_initial batches per second."""
import re

import harness


def run(opts, count=4, per_batch=2, signals=("traces", "metrics", "logs")):
    cfg = """
receivers:
  testgen: {count: %d, per_batch: %d, interval: 1ms}
exporters:
  debug: %s
service:
%s  pipelines:
""" % (count, per_batch, opts, harness.telemetry(harness.free_port()))
    for sig in signals:
        cfg += "    %s: {receivers: [testgen], exporters: [debug]}\n" % sig
    s = harness.Sonde(cfg, "debug").start()
    s.wait_log(r"finished: %d items" % count)
    s.stop_ok()
    return s.log()


def test():
    log = run("{verbosity: basic}")
    assert log.count('Traces {"resource spans": 2, "spans": 2}') == 2, log
    assert log.count('Metrics {"resource metrics": 2, "metrics": 2, "data points": 2}') == 2, log
    assert log.count('Logs {"resource logs": 2, "log records": 2}') == 2, log
    assert "Span #" not in log
    print("basic: count lines only")

    log = run("{verbosity: normal}", signals=("traces",))
    assert re.search(r"span-3 736f6e64000000000000000000000000 0000000000000004 testgen.index=3 "
                     r"testgen.name=item-3 testgen.even=false testgen.half=1.5", log), log
    print("normal: one line per span")

    log = run("{verbosity: detailed}", per_batch=4)
    for want in ["ResourceSpans #0", "Resource attributes:", "     -> service.name: Str(testgen)",
                 "InstrumentationScope sonde/testgen 1", "Span #1",
                 "    Trace ID       : 736f6e64000000000000000000000000",
                 "    Parent ID      : 0000000000000001", "    ID             : 0000000000000002",
                 "    Name           : span-1", "    Kind           : Internal",
                 "    Start time     : 2023-11-14 22:13:20.000001 +0000 UTC",
                 "    Status code    : Ok", "     -> testgen.index: Int(1)",
                 "     -> testgen.even: Bool(false)", "     -> testgen.half: Double(0.5)",
                 "     -> DataType: Gauge", "     -> DataType: Sum", "     -> IsMonotonic: true",
                 "     -> AggregationTemporality: Cumulative", "Value: 1.000000", "Value: 3",
                 "LogRecord #0", "SeverityNumber: Info(9)", "Body: Str(log-2)",
                 "Span ID: 0000000000000003"]:
        assert want in log, "%r missing:\n%s" % (want, log)
    print("detailed: otlptext layout")

    # 20 batches of traces within well under a second: 3 logged, then every 10th (none more).
    log = run("{sampling_initial: 3, sampling_thereafter: 10}", count=20, per_batch=1,
              signals=("traces",))
    n = log.count('Traces {"resource spans": 1, "spans": 1}')
    assert 3 <= n <= 5, "%d lines logged:\n%s" % (n, log)
    print("sampling: %d of 20 batches logged" % n)


harness.main(test)

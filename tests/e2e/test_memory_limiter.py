"""memory_limiter: with a soft limit far below the process's resident set every batch is refused
(testgen counts refusals and never finishes, nothing reaches the file); with a generous limit
everything passes; otelcol's validation messages."""
import re
import time

import harness
import otlpcheck


def config(limits):
    return """
receivers:
  testgen: {count: 100, per_batch: 10, interval: 5ms}
processors:
  memory_limiter: {check_interval: 100ms, %s}
exporters:
  file: {path: "@TMP@/out.json", flush_interval: 10ms}
service:
%s  pipelines:
    traces: {receivers: [testgen], processors: [memory_limiter], exporters: [file]}
""" % (limits, harness.telemetry(harness.free_port()))


def test_refusing():
    # Soft limit 1 MiB: sonde's own RSS is always above it.
    s = harness.Sonde(config("limit_mib: 2, spike_limit_mib: 1"), "ml-refuse").start()
    s.wait_log(r"Memory usage is above soft limit. Refusing data.")
    time.sleep(0.5)
    s.stop_ok()
    log = s.log()
    assert "finished:" not in log, log
    m = re.search(r"stopped early: (\d+) batches built, (\d+) refusals", log)
    assert m and int(m.group(2)) > 10, log
    assert otlpcheck.decode(s.path("out.json"), "traces", "json") == [], "data got through"
    print("refusing: %s refusals, nothing written" % m.group(2))


def test_passing():
    s = harness.Sonde(config("limit_mib: 100000"), "ml-pass").start()
    s.wait_log(r"finished: 100 items per signal in 10 batches, 0 refusals")
    s.stop_ok()
    otlpcheck.check_all(otlpcheck.decode(s.path("out.json"), "traces", "json"), "traces", 100)
    assert "spike_limit_mib\": 20000" in s.log(), "default spike is 20%% of the limit:\n" + s.log()
    print("passing: all 100 items through, spike defaulted to 20%")


def test_validate():
    cases = [("limit_mib: 100", "'check_interval' must be greater than zero"),
             ("check_interval: 1s", "'limit_mib' or 'limit_percentage' must be greater than zero"),
             ("check_interval: 1s, limit_mib: 100, spike_limit_mib: 100",
              "'spike_limit_mib' must be smaller than 'limit_mib'"),
             ("check_interval: 1s, limit_percentage: 50, spike_limit_percentage: 60",
              "'spike_limit_percentage' must be smaller than 'limit_percentage'"),
             ("check_interval: 1s, limit_percentage: 120",
              "'limit_percentage' and 'spike_limit_percentage' must be greater than zero")]
    for opts, want in cases:
        s = harness.Sonde(config(opts).replace("check_interval: 100ms, ", ""), "ml-validate")
        rc, out = harness.run_cli("validate", "--config", s.config)
        assert rc != 0 and want in out, "%s: rc %d\n%s" % (opts, rc, out)
    print("validate: %d otelcol errors" % len(cases))


def test():
    test_validate()
    test_passing()
    test_refusing()


harness.main(test)

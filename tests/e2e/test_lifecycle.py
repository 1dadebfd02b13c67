"""The service's promises seen from outside: SIGHUP with a bad config keeps the old pipeline
running and says why; a good one drains the old pipeline into its exporter (nothing accepted is
lost) and starts the new; config errors name file, line, column and path; validate, print-config,
--set, several --config files and ${env:...} behave like otelcol's."""
import json
import os
import re
import signal
import time

import harness


def span_indices(path):
    out = []
    with open(path) as f:
        for line in f:
            req = json.loads(line)
            for rs in req["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for sp in ss["spans"]:
                        for a in sp["attributes"]:
                            if a["key"] == "testgen.index":
                                out.append(int(a["value"]["intValue"]))
    return out


def config(path, count, per_batch, interval, extra=""):
    return """
receivers:
  testgen: {count: %d, per_batch: %d, interval: %s}
processors:
  batch: {timeout: 20ms}
exporters:
  file: {path: %s, flush_interval: 10ms}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces: {receivers: [testgen], processors: [batch], exporters: [file]}
%s""" % (count, per_batch, interval, path, extra)


def test_reload():
    s = harness.Sonde(config("@TMP@/a.json", 1000000, 10, "2ms"), "reload").start()
    s.wait_log(r"ready in")
    time.sleep(0.3)
    # 1. A bad config: refused with its reason, the old pipeline goes on.
    with open(s.config, "w") as f:
        f.write(config(s.path("b.json"), 50, 10, "1ms").replace("flush_interval", "flush_intervall"))
    s.proc.send_signal(signal.SIGHUP)
    s.wait_log(r"reload refused, the running configuration stays: .*config.yaml:\d+:\d+: "
               r"exporters::file::flush_intervall: unknown option, did you mean \"flush_interval\"")
    before = os.path.getsize(s.path("a.json"))
    time.sleep(0.3)
    assert s.proc.poll() is None, "sonde exited after a bad reload"
    assert os.path.getsize(s.path("a.json")) > before, "the old pipeline stopped after a bad reload"
    # 2. A good config: the old pipeline drains into a.json, the new one writes b.json.
    with open(s.config, "w") as f:
        f.write(config(s.path("b.json"), 50, 10, "1ms"))
    s.proc.send_signal(signal.SIGHUP)
    s.wait_log(r"configuration reloaded")
    s.wait_log(r"finished: 50 items")
    time.sleep(0.2)
    s.stop_ok()
    log = s.log()
    m = re.search(r"stopped early: (\d+) batches built", log)
    assert m, log
    built = int(m.group(1)) * 10
    a = span_indices(s.path("a.json"))
    assert sorted(a) == list(range(built)), \
        "old pipeline: %d spans accepted, %d written (lost or duplicated in the reload)" % (
            built, len(a))
    b = span_indices(s.path("b.json"))
    assert sorted(b) == list(range(50)), "new pipeline wrote %d spans, expected 50" % len(b)


def write(tmp, name, text):
    p = os.path.join(tmp, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def test_cli_config_errors():
    s = harness.Sonde("", "cli")
    tmp = s.tmp
    cases = [
        ("unknown_type.yaml",
         "receivers:\n  testgenn:\nexporters:\n  file: {path: x}\nservice:\n  pipelines:\n"
         "    traces: {receivers: [testgenn], exporters: [file]}\n",
         r'unknown_type.yaml:2:3: receivers::testgenn: unknown receiver type "testgenn" '
         r'\(did you mean "testgen"\?'),
        ("bad_duration.yaml",
         "receivers:\n  testgen:\nprocessors:\n  batch:\n    timeout: 5 seconds\nexporters:\n"
         "  file: {path: x}\nservice:\n  pipelines:\n"
         "    traces: {receivers: [testgen], processors: [batch], exporters: [file]}\n",
         r'bad_duration.yaml:5:14: processors::batch::timeout: invalid duration "5 seconds"'),
        ("unref.yaml",
         "receivers:\n  testgen:\nexporters:\n  file: {path: x}\nservice:\n  pipelines:\n"
         "    traces:\n      receivers: [testgen]\n      exporters: [fiel]\n",
         r'unref.yaml:9:\d+: service::pipelines::traces::exporters: exporter "fiel" is not '
         r'configured under exporters \(did you mean "file"\?'),
        ("signal.yaml",
         "receivers:\n  testgen:\nexporters:\n  file: {path: x}\nservice:\n  pipelines:\n"
         "    trace: {receivers: [testgen], exporters: [file]}\n",
         r'signal.yaml:7:5: service::pipelines::trace: unknown signal "trace".*did you mean '
         r'"traces"'),
        ("required.yaml",
         "receivers:\n  testgen:\nexporters:\n  file:\nservice:\n  pipelines:\n"
         "    traces: {receivers: [testgen], exporters: [file]}\n",
         r'required.yaml:4:\d+: exporters::file::path: required option is missing'),
        ("queue.yaml",
         "receivers:\n  testgen:\nexporters:\n  file:\n    path: x\n    sending_queue:\n"
         "      queue_size: 0\nservice:\n  pipelines:\n"
         "    traces: {receivers: [testgen], exporters: [file]}\n",
         r'queue.yaml:7:19: exporters::file::sending_queue::queue_size: .*range'),
    ]
    for name, text, want in cases:
        p = write(tmp, name, text)
        rc, out = harness.run_cli("validate", "--config", p)
        assert rc == 1, "%s: validate exited %d:\n%s" % (name, rc, out)
        assert re.search(want, out), "%s: expected /%s/ in:\n%s" % (name, want, out)
        # the same refusal when running: nothing starts
        rc, out2 = harness.run_cli("--config", p)
        assert rc == 1 and "ready" not in out2, "%s: run did not refuse:\n%s" % (name, out2)


def test_merge_set_env():
    s = harness.Sonde("", "merge")
    tmp = s.tmp
    base = write(tmp, "base.yaml",
                 "receivers:\n  testgen: {count: 5}\nexporters:\n  file:\n"
                 "    path: ${env:SONDE_TEST_OUT:-default.json}\n    format: json\n"
                 "service:\n  pipelines:\n    traces: {receivers: [testgen], exporters: [file]}\n")
    over = write(tmp, "over.yaml", "exporters:\n  file:\n    format: proto\n")
    os.environ["SONDE_TEST_OUT"] = "$$from-env.json"
    rc, out = harness.run_cli("print-config", "--config", base, "--config", over, "--set",
                              "receivers::testgen::count=7", "--set", "exporters.file.append=true")
    assert rc == 0, out
    assert "path: $$from-env.json" in out, out   # expanded once, not again
    assert re.search(r"format: proto", out), out   # the later file wins
    assert re.search(r"count: 7", out), out        # --set with ::
    assert re.search(r"append: true", out), out    # --set with dots
    assert re.search(r"queue_size: 1000", out), out  # defaults shown
    del os.environ["SONDE_TEST_OUT"]
    rc, out = harness.run_cli("print-config", "--mode", "merged", "--config", base)
    assert rc == 0 and "path: default.json" in out, out
    rc, out = harness.run_cli("validate", "--config", base, "--config", over)
    assert rc == 0 and "valid" in out, out
    rc, out = harness.run_cli("--version")
    assert rc == 0 and re.match(r"sonde \d+\.\d+\.\d+", out), out
    rc, out = harness.run_cli("--bogus")
    assert rc == 2 and "unknown option" in out, out


def main():
    test_cli_config_errors()
    test_merge_set_env()
    test_reload()


harness.main(main)

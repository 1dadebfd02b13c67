"""health_check: 200 with otelcol's JSON while running, 503 while the service drains at shutdown,
404 off its path, custom bodies, and its config errors.

To hold shutdown open long enough to ask, the file exporter writes into a FIFO that the test
stops reading: its write blocks on the thread pool and the drain waits for it; reading the FIFO
again lets sonde finish."""
import json
import os
import threading
import time

import harness


def test_stopping():
    port = harness.free_port()
    cfg = """
receivers:
  testgen: {count: 3000, per_batch: 100, interval: 1ms}
exporters:
  file: {path: "@TMP@/fifo", flush_interval: 10ms}
extensions:
  health_check: {endpoint: "localhost:%d", path: "/health/status"}
service:
  extensions: [health_check]
%s  pipelines:
    traces: {receivers: [testgen], exporters: [file]}
""" % (port, harness.telemetry(harness.free_port()))
    s = harness.Sonde(cfg, "health")
    os.mkfifo(s.path("fifo"))
    reader = os.open(s.path("fifo"), os.O_RDONLY | os.O_NONBLOCK)  # so sonde's open succeeds
    s.start()
    url = "http://localhost:%d/health/status" % port
    s.wait_log(r"health check on")
    deadline = time.time() + 10
    while True:
        status, body = harness.http_get(url)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert status == 200, (status, body)
    doc = json.loads(body)
    assert doc["status"] == "Server available" and doc["upSince"].endswith("Z"), doc
    assert harness.http_get("http://localhost:%d/other" % port)[0] == 404
    print("running: 200 %s" % body)

    s.wait_log(r"finished: 3000 items")  # ~1.4 MB queued against a 64 KiB pipe: the writer blocks
    s.proc.send_signal(15)
    time.sleep(0.5)
    status, body = harness.http_get(url)
    assert status == 503, (status, body)
    assert json.loads(body) == {"status": "Server not available",
                                "upSince": "0001-01-01T00:00:00Z", "uptime": ""}, body
    print("stopping: 503 %s" % body)

    # Drain the FIFO so the exporter can finish; sonde must then exit cleanly.
    done = threading.Event()

    def drain():
        os.set_blocking(reader, True)
        while os.read(reader, 1 << 16):
            pass
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    rc = s.proc.wait(30)
    assert rc == 0, "exit %d:\n%s" % (rc, s.log())
    done.wait(5)
    print("drained and exited 0")


def test_custom_body_and_errors():
    port = harness.free_port()
    cfg = """
receivers:
  testgen: {count: 1}
exporters:
  debug: {}
extensions:
  health_check: {endpoint: "localhost:%d", response_body: {healthy: "I'm OK", unhealthy: "Not OK"}}
service:
  extensions: [health_check]
%s  pipelines:
    traces: {receivers: [testgen], exporters: [debug]}
""" % (port, harness.telemetry(harness.free_port()))
    s = harness.Sonde(cfg, "health-body").start()
    s.wait_log(r"finished: 1 items")
    assert harness.http_get("http://localhost:%d/" % port) == (200, "I'm OK")
    s.stop_ok()
    for opts, want in (('{path: "health"}', "bad config: path must start with /"),
                       ('{endpoint: ""}', "bad config: endpoint must be specified")):
        bad = cfg.replace('{endpoint: "localhost:%d", response_body: {healthy: "I\'m OK", '
                          'unhealthy: "Not OK"}}' % port, opts)
        b = harness.Sonde(bad, "health-validate")
        rc, out = harness.run_cli("validate", "--config", b.config)
        assert rc != 0 and want in out, "%s: %d\n%s" % (opts, rc, out)
    print("custom body and config errors")


def test():
    test_custom_body_and_errors()
    test_stopping()


harness.main(test)

"""prometheus exporter: OTLP/HTTP JSON into the otlp receiver, out through two prometheus
exporters (text format, and OpenMetrics under a namespace), scraped every second by a real
Prometheus server (Debian `prometheus`). Its query API must give back the counter (cumulative and
delta-accumulated), the gauge, histogram_quantile over our _bucket series and target_info;
`promtool check metrics` must accept the exposition; stale series expire; gzip and content
negotiation; config errors."""
import gzip
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import harness

NOW = time.time_ns()


def kv(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def request(metrics, service="checkout"):
    return {"resourceMetrics": [{
        "resource": {"attributes": [kv("service.name", service), kv("service.instance.id", "inst-1"),
                                    kv("deployment.environment", "e2e")]},
        "scopeMetrics": [{"scope": {"name": "shop.lib", "version": "2.1"}, "metrics": metrics}]}]}


def counter(value, ts, start=None, temporality=2):
    return {"name": "http.server.requests", "unit": "{requests}", "description": "Requests served.",
            "sum": {"aggregationTemporality": temporality, "isMonotonic": True, "dataPoints": [{
                "attributes": [kv("http.request.method", "GET")],
                "startTimeUnixNano": str(start if start is not None else NOW - 10**9),
                "timeUnixNano": str(ts), "asInt": str(value)}]}}


def delta(value, start, ts):
    m = counter(value, ts, start, temporality=1)
    m["name"] = "jobs.done"
    m["description"] = "Jobs finished."
    m["unit"] = ""
    return m


TRACE = "5b8efff798038103d269b633813fc60c"
GAUGE = {"name": "queue.depth", "unit": "{items}", "description": "Items waiting.",
         "gauge": {"dataPoints": [{"timeUnixNano": str(NOW), "asDouble": 7.5}]}}
# 100 requests: 10 under 0.1 s, 80 in (0.1, 0.5], 10 in (0.5, 1]; the median is 0.3 s.
HIST = {"name": "http.server.request.duration", "unit": "s", "description": "Request time.",
        "histogram": {"aggregationTemporality": 2, "dataPoints": [{
            "attributes": [kv("http.route", "/users/{id}")],
            "startTimeUnixNano": str(NOW - 10**9), "timeUnixNano": str(NOW),
            "count": "100", "sum": 31.5, "bucketCounts": ["10", "80", "10", "0"],
            "explicitBounds": [0.1, 0.5, 1],
            "exemplars": [{"timeUnixNano": str(NOW), "asDouble": 0.3, "traceId": TRACE,
                           "spanId": "eee19b7ec3c1b174"}]}]}}

# Exponential, scale 0: 50 values in (1, 2] s and 50 in (2, 4] s; p75 is 3 s.
EXP = {"name": "rpc.server.duration", "unit": "s", "description": "RPC time.",
       "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [{
           "startTimeUnixNano": str(NOW - 10**9), "timeUnixNano": str(NOW), "count": "100",
           "sum": 250, "scale": 0, "zeroCount": "0",
           "positive": {"offset": 0, "bucketCounts": ["50", "50"]}}]}}
SUMMARY = {"name": "rpc.latency", "unit": "s", "description": "RPC latency.",
           "summary": {"dataPoints": [{"timeUnixNano": str(NOW), "count": "10", "sum": 3,
                                       "quantileValues": [{"quantile": 0.5, "value": 0.2},
                                                          {"quantile": 0.99, "value": 0.9}]}]}}


def post(port, body):
    data = json.dumps(body).encode()
    deadline = time.time() + 10
    while True:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d/v1/metrics" % port, data=data,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200, r.status
                return
        except (ConnectionError, urllib.error.URLError):
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def scrape(port, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return r.headers.get("Content-Type"), r.headers.get("Content-Encoding"), body.decode()


class Prometheus:
    def __init__(self, tmp, targets):
        self.port = harness.free_port()
        self.dir = os.path.join(tmp, "prometheus")
        os.makedirs(self.dir)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n")
            for name, port in targets:
                # honor_labels: keep the job/instance our exposition derives from the resource.
                f.write("  - job_name: %s\n    honor_labels: true\n"
                        "    static_configs: [{targets: ['127.0.0.1:%d']}]\n" % (name, port))
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + self.dir + "/data",
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--enable-feature=exemplar-storage"], stdout=self.log,
            stderr=subprocess.STDOUT)

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def wait_exemplar(self, q, trace_id, timeout=40):
        """Polls the exemplar API until an exemplar of q carries trace_id; returns it."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            url = "http://127.0.0.1:%d/api/v1/query_exemplars?%s" % (self.port, urllib.parse.urlencode(
                {"query": q, "start": int(time.time()) - 3600, "end": int(time.time()) + 60}))
            with urllib.request.urlopen(url, timeout=5) as r:
                last = json.loads(r.read())["data"]
            for series in last or []:
                for e in series["exemplars"]:
                    if e["labels"].get("trace_id") == trace_id:
                        return series["seriesLabels"], e
            time.sleep(0.2)
        raise AssertionError("%s: no exemplar with trace_id %s: %s" % (q, trace_id, last))

    def wait_value(self, q, want, timeout=40):
        """Polls q until its single result equals want (within 1e-9)."""
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            try:
                res = self.query(q)
            except (ConnectionError, urllib.error.URLError):
                res = None
            if res and len(res) == 1:
                got = (res[0]["metric"], float(res[0]["value"][1]))
                if abs(got[1] - want) < 1e-9:
                    return got[0]
            time.sleep(0.2)
        with open(os.path.join(self.dir, "log"), "rb") as f:
            log = f.read().decode(errors="replace")[-3000:]
        raise AssertionError("%s: want %s, last %s\nprometheus log:\n%s" % (q, want, got, log))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def test_scraped_by_prometheus():
    hport, p1, p2 = harness.free_port(), harness.free_port(), harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  prometheus:
    endpoint: "127.0.0.1:%d"
    const_labels: {region: "eu-1"}
  prometheus/om:
    endpoint: "127.0.0.1:%d"
    namespace: om
    enable_open_metrics: true
service:
%s  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus, prometheus/om]}
""" % (hport, p1, p2, harness.telemetry(harness.free_port()))
    s = harness.Sonde(cfg, "prometheus").start()
    prom = None
    try:
        s.wait_log(r"Starting HTTP server")
        post(hport, request([counter(42, NOW), GAUGE, HIST, EXP, SUMMARY]))
        post(hport, request([delta(3, NOW - 2 * 10**9, NOW - 10**9)]))
        post(hport, request([delta(4, NOW - 10**9, NOW)]))  # starts where the last ended: added

        ctype, enc, text = scrape(p1)
        assert ctype == "text/plain; version=0.0.4; charset=utf-8" and enc is None, ctype
        assert "# TYPE http_server_requests_total counter\n" in text, text
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert check.returncode == 0, "promtool check metrics:\n%s\n%s" % (
            check.stdout.decode(), text)
        print("promtool check metrics: clean (%d lines)" % text.count("\n"))
        # gzip when asked, the same body; OpenMetrics only where enabled and asked for.
        _, enc, zipped = scrape(p1, {"Accept-Encoding": "gzip"})
        assert enc == "gzip" and zipped == text, enc
        om_accept = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
        ctype, _, _ = scrape(p1, om_accept)
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        ctype, _, om = scrape(p2, om_accept)
        assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8", ctype
        assert "# TYPE om_http_server_requests counter\n" in om and om.endswith("# EOF\n"), om

        prom = Prometheus(s.tmp, [("sonde_text", p1), ("sonde_om", p2)])
        labels = prom.wait_value('http_server_requests_total{http_request_method="GET"}', 42)
        assert labels["job"] == "checkout" and labels["instance"] == "inst-1", labels
        assert labels["region"] == "eu-1" and labels["otel_scope_name"] == "shop.lib", labels
        prom.wait_value("queue_depth", 7.5)
        prom.wait_value("jobs_done_total", 7)
        prom.wait_value(
            'histogram_quantile(0.5, sum by (le) (http_server_request_duration_seconds_bucket))',
            0.3)
        prom.wait_value("http_server_request_duration_seconds_count", 100)
        prom.wait_value('histogram_quantile(0.75, rpc_server_duration_seconds_bucket)', 3)
        prom.wait_value('rpc_latency_seconds{quantile="0.99"}', 0.9)
        t = prom.wait_value('target_info{job="checkout"}', 1)
        assert t["deployment_environment"] == "e2e" and "region" not in t, t
        # The OpenMetrics endpoint, scraped the same way.
        prom.wait_value('om_http_server_requests_total', 42)
        prom.wait_value('histogram_quantile(0.5, sum by (le) (om_http_server_request_duration_seconds_bucket))', 0.3)
        # Exemplars travel in OpenMetrics only, in the bucket their value falls in.
        series, ex = prom.wait_exemplar("om_http_server_request_duration_seconds_bucket", TRACE)
        assert series["le"] == "0.5" and float(ex["value"]) == 0.3, (series, ex)
        assert ex["labels"]["span_id"] == "eee19b7ec3c1b174", ex
        assert "# {trace_id=" not in text, "exemplars in the text format"
        for job in ("sonde_text", "sonde_om"):
            prom.wait_value('up{job="%s"}' % job, 1)
        print("prometheus: counter 42, gauge 7.5, delta sum 7, p50 0.3 s, exponential p75 3 s, "
              "summary, target_info, both formats, an exemplar")

        # A newer cumulative point replaces the value; an older one is ignored.
        post(hport, request([counter(50, NOW + 10**9)]))
        post(hport, request([counter(1, NOW - 5 * 10**9)]))
        _, _, text = scrape(p1)
        line = [l for l in text.splitlines() if l.startswith("http_server_requests_total{")]
        assert len(line) == 1 and line[0].endswith("} 50"), line
        prom.wait_value('http_server_requests_total{http_request_method="GET"}', 50)
        print("prometheus: counter updated to 50, the stale point ignored")
    finally:
        if prom:
            prom.stop()
        rc = s.stop()
    assert rc == 0, "sonde exited %d:\n%s" % (rc, s.log())


def parse(text):
    """Samples of an exposition: [(name, {label: value}, float)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, line
        labels = dict((k, v.encode().decode("unicode_escape")) for k, v in
                      re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def value(samples, name, **want):
    got = [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in want.items())]
    assert len(got) == 1, "%s %s: %s" % (name, want, got)
    return got[0]


def test_sdk_producer():
    """The OpenTelemetry JS metrics SDK exports three collections as deltas or cumulatives: the
    exposition must show the same totals either way (deltas added up at their aligned starts)."""
    hport, pport = harness.free_port(), harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  prometheus: {endpoint: "127.0.0.1:%d"}
service:
%s  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus]}
""" % (hport, pport, harness.telemetry(harness.free_port()))
    s = harness.Sonde(cfg, "prometheus-sdk").start()
    try:
        s.wait_log(r"Starting HTTP server")
        here = os.path.dirname(os.path.abspath(__file__))
        for temporality in ("delta", "cumulative"):
            job = "sdk-" + temporality
            p = subprocess.run(["sh", os.path.join(here, "otlp_exporter_run.sh"),
                                "node/prometheus_sdk_send.js", "http://127.0.0.1:%d" % hport,
                                temporality, job], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120)
            assert p.returncode == 0, p.stdout.decode()
            total = json.loads(p.stdout.decode().strip().splitlines()[-1])
            samples = parse(scrape(pport)[2])
            route = {"job": job, "http_route": "/users/{id}"}
            assert value(samples, "http_requests_total", **route) == total["requests"]
            assert value(samples, "http_duration_seconds_count", **route) == total["count"]
            assert abs(value(samples, "http_duration_seconds_sum", **route) - total["sum"]) < 1e-9
            assert value(samples, "http_duration_seconds_bucket", le="0.1",
                         **route) == total["under_0_1"]
            assert value(samples, "http_duration_seconds_bucket", le="+Inf",
                         **route) == total["count"]
            assert value(samples, "http_inflight", job=job) == total["inflight"]
            assert value(samples, "exp_latency_seconds_count", job=job) == total["exp_count"]
            # The exponential buckets, read back cumulative: the last one holds everything.
            buckets = sorted((float(l["le"]), v) for n, l, v in samples
                             if n == "exp_latency_seconds_bucket" and l.get("job") == job)
            assert buckets[-1] == (float("inf"), total["exp_count"]), buckets
            assert [v for _, v in buckets] == sorted(v for _, v in buckets), buckets
            print("JS SDK %s: %s" % (temporality, total))
    finally:
        rc = s.stop()
    assert rc == 0, s.log()


def test_expiration_and_errors():
    hport, pport, tport = harness.free_port(), harness.free_port(), harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  prometheus: {endpoint: "127.0.0.1:%d", metric_expiration: 3s,
               resource_constant_labels: {included: ["deployment.*"]}}
service:
%s  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus]}
""" % (hport, pport, harness.telemetry(tport))
    s = harness.Sonde(cfg, "prometheus-expire").start()
    try:
        s.wait_log(r"Starting HTTP server")
        post(hport, request([GAUGE]))
        # "queue.depth" again as a histogram: same Prometheus name, another type: dropped, counted.
        clash = dict(HIST, name="queue.depth", unit="{items}")
        post(hport, request([clash]))
        _, _, text = scrape(pport)
        assert 'queue_depth{deployment_environment="e2e",' in text and "target_info{" in text, text
        assert "# TYPE queue_depth gauge" in text and "queue_depth_bucket" not in text, text
        _, self_metrics = harness.http_get("http://localhost:%d/metrics" % tport)
        dropped = harness.metric_value(
            self_metrics, 'sonde_exporter_prometheus_dropped_points_total{exporter="prometheus",'
            'reason="type_conflict"}')
        assert dropped == 1, self_metrics
        deadline = time.time() + 15
        while "queue_depth" in text and time.time() < deadline:
            time.sleep(0.2)
            _, _, text = scrape(pport)
        assert text == "", "not expired after 3 s:\n" + text
        _, self_metrics = harness.http_get("http://localhost:%d/metrics" % tport)
        assert harness.metric_value(self_metrics, "sonde_exporter_prometheus_expired_series_total") == 1
        print("type conflict counted; series and target_info expired")
    finally:
        rc = s.stop()
    assert rc == 0, s.log()

    for opts, want in (
            ('{endpoint: "127.0.0.1:1", translation_strategy: NoTranslation}',
             "translation_strategy NoTranslation is not supported"),
            ('{endpoint: "127.0.0.1:1", translation_strategy: Bogus}',
             "invalid translation_strategy Bogus"),
            ('{endpoint: "127.0.0.1:1", const_labels: {"...": x}}', "is not a usable label name"),
            ('{namespace: x}', "endpoint"),
            ('{endpoint: "127.0.0.1:1", metric_expiration: 0s}', "metric_expiration")):
        b = harness.Sonde(cfg.replace('{endpoint: "127.0.0.1:%d", metric_expiration: 3s,\n'
                                      '               resource_constant_labels: {included: '
                                      '["deployment.*"]}}' % pport,
                                      opts), "prometheus-validate")
        rc, out = harness.run_cli("validate", "--config", b.config)
        assert rc != 0 and want in out, "%s: %d\n%s" % (opts, rc, out)
    print("config errors")


def test():
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        raise AssertionError("prometheus and promtool are needed (Debian package prometheus; "
                             "scripts/deps.sh installs it)")
    test_expiration_and_errors()
    test_sdk_producer()
    test_scraped_by_prometheus()


harness.main(test)

"""prometheus exporter: scrapes in four formats (text and OpenMetrics, gzipped or not) from four
threads while updates keep arriving, with 3000 histogram series, so that renders (on the thread
pool) overlap updates and each other. Every body must be whole and of one state: each update sets
every series' count to the same value, so a body mixing two updates, or cut short, shows. The last
scrape shows the last update, and promtool (Debian prometheus) accepts a body of each format."""
import gzip
import json
import shutil
import subprocess
import threading
import time
import urllib.request

import harness

N = 3000
FORMATS = [
    {"Accept-Encoding": "gzip"},
    {},
    {"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"},
    {"Accept": "application/openmetrics-text;version=1.0.0"},
]


def body(k, ts):
    pts = [{"attributes": [{"key": "route", "value": {"stringValue": "/r/%d" % i}}],
            "startTimeUnixNano": "1", "timeUnixNano": str(ts), "count": str(k), "sum": 1.0,
            "bucketCounts": ["0", str(k)], "explicitBounds": [0.5]} for i in range(N)]
    return json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "c"}}]},
        "scopeMetrics": [{"metrics": [{"name": "req.duration", "unit": "s",
                                       "histogram": {"aggregationTemporality": 2,
                                                     "dataPoints": pts}}]}]}]}).encode()


def post(port, data):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/metrics" % port, data=data,
                                 headers={"Content-Type": "application/json"})
    deadline = time.time() + 10
    while True:
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                assert r.status == 200, r.status
                return
        except (ConnectionError, urllib.error.URLError):
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def scrape(port, headers):
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port, headers=headers)
    with urllib.request.urlopen(req, timeout=20) as r:
        data = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return r.headers.get("Content-Type"), data.decode()


def counts(text):
    """The values of every req_duration_seconds_count sample."""
    return [line.rsplit(" ", 1)[1] for line in text.splitlines()
            if line.startswith("req_duration_seconds_count{")]


def check(headers, ctype, text):
    om = "Accept" in headers
    assert ctype.startswith("application/openmetrics-text" if om else "text/plain"), ctype
    assert text.endswith("# EOF\n") == om, text[-200:]
    c = counts(text)
    if not c:  # a scrape before the first update
        return None
    assert len(c) == N, "%d series, not %d" % (len(c), N)
    assert len(set(c)) == 1, "one body, several states: %s" % sorted(set(c))[:5]
    return int(float(c[0]))


def test():
    hport, pport = harness.free_port(), harness.free_port()
    s = harness.Sonde("""
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  prometheus: {endpoint: "127.0.0.1:%d", enable_open_metrics: true}
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus]}
""" % (hport, pport), "prometheus-concurrent")
    s.start()
    errors, seen, last = [], [[] for _ in FORMATS], {}
    done = threading.Event()

    def scraper(i):
        try:
            while not done.is_set():
                ctype, text = scrape(pport, FORMATS[i])
                v = check(FORMATS[i], ctype, text)
                if v is not None:
                    seen[i].append(v)
                last[i] = text
        except Exception as e:  # reported by the main thread
            errors.append("format %d: %r" % (i, e))
    try:
        post(hport, body(1, time.time_ns()))
        threads = [threading.Thread(target=scraper, args=(i,)) for i in range(len(FORMATS))]
        for t in threads:
            t.start()
        for k in range(2, 12):
            post(hport, body(k, time.time_ns()))
        done.set()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for i, v in enumerate(seen):
            assert v, "format %d: no scrape with data" % i
            assert v == sorted(v), "format %d went back in time: %s" % (i, v)
        deadline = time.time() + 20
        while True:  # the last update is served (it may still be in the pipeline)
            v = [check(f, *scrape(pport, f)) for f in FORMATS]
            if v == [11] * len(FORMATS) or time.time() > deadline:
                break
            time.sleep(0.05)
        assert v == [11] * len(FORMATS), v
        if shutil.which("promtool"):
            for f in (FORMATS[0], FORMATS[2]):
                _, text = scrape(pport, f)
                p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
                # promtool lints names and help text; a parse error is what would show a bad body
                assert b"error while linting" not in p.stdout, p.stdout.decode()[:2000]
    finally:
        s.stop_ok()
    print("prometheus: %s scrapes in 4 formats during 10 updates, each body one whole state" %
          sum(len(v) for v in seen))


if __name__ == "__main__":
    harness.main(test)

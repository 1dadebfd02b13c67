#!/usr/bin/env python3
"""prometheus exporter at N histogram series (default 10000, 10 buckets each): the latency of a
scrape that must render (the state changed since the last one) and of one served from the cache,
and how long the loop is blocked meanwhile, seen as the latency of health_check requests (served
by the same loop) sent every 2 ms on a kept-alive connection during the scrapes.
Usage: tests/bench/prom_scrape_bench.py [build] [series] [rounds]. Figures, not a test."""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(ts):
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
    pts = [{"attributes": [{"key": "route", "value": {"stringValue": "/r/%d" % i}}],
            "startTimeUnixNano": "1", "timeUnixNano": str(ts), "count": str(10 + i % 7),
            "sum": 1.5, "bucketCounts": ["1"] * 9 + [str(1 + i % 7)], "explicitBounds": bounds}
           for i in range(N)]
    return json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bench"}}]},
        "scopeMetrics": [{"metrics": [{"name": "http.server.request.duration", "unit": "s",
                                       "histogram": {"aggregationTemporality": 2,
                                                     "dataPoints": pts}}]}]}]}).encode()


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def main():
    op, pp, hp, mp = free_port(), free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="sonde-prom-bench-")
    cfg = os.path.join(tmp, "c.yaml")
    with open(cfg, "w") as f:
        f.write("""receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:%d"}}}
exporters:
  prometheus: {endpoint: "127.0.0.1:%d"}
extensions:
  health_check: {endpoint: "127.0.0.1:%d"}
service:
  extensions: [health_check]
  telemetry: {metrics: {address: "127.0.0.1:%d"}}
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus]}
""" % (op, pp, hp, mp))
    log = open(os.path.join(tmp, "sonde.log"), "wb")
    proc = subprocess.Popen([os.path.join(BUILD, "bin", "sonde"), "--config", cfg], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            try:
                metric(mp, "sonde_exporter_prometheus_points_total")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        windows, probes, stop = [], [], threading.Event()

        def probe():
            c = http.client.HTTPConnection("127.0.0.1", hp, timeout=10)
            while not stop.is_set():
                t0 = time.perf_counter()
                c.request("GET", "/")
                c.getresponse().read()
                probes.append((t0, time.perf_counter() - t0))
                time.sleep(0.002)

        th = threading.Thread(target=probe)
        th.start()
        render, cached = [], []
        sc = http.client.HTTPConnection("127.0.0.1", pp, timeout=30)
        hdr = {"Accept-Encoding": "gzip"}
        for k in range(ROUNDS):
            want = metric(mp, "sonde_exporter_prometheus_points_total") + N
            req = urllib.request.Request("http://127.0.0.1:%d/v1/metrics" % op,
                                         data=body(time.time_ns()),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()
            while metric(mp, "sonde_exporter_prometheus_points_total") < want:
                time.sleep(0.01)
            time.sleep(0.05)  # let the probe settle after the update's own loop work
            for out in (render, cached):
                t0 = time.perf_counter()
                sc.request("GET", "/metrics", headers=hdr)
                n = len(sc.getresponse().read())
                out.append(time.perf_counter() - t0)
                windows.append((t0, time.perf_counter()))
        stop.set()
        th.join()
        during = sorted(d for t, d in probes if any(a <= t <= b for a, b in windows))
        series = metric(mp, "sonde_exporter_prometheus_series")

        def ms(v):
            return "%.1f ms" % (v * 1e3)
        render.sort()
        cached.sort()
        print("series %d, %d rounds, gzipped body %d bytes" % (series, ROUNDS, n))
        print("scrape that renders: median %s, max %s" % (ms(render[len(render) // 2]),
                                                          ms(render[-1])))
        print("scrape from the cache: median %s, max %s" % (ms(cached[len(cached) // 2]),
                                                            ms(cached[-1])))
        if during:
            print("health_check latency during scrapes (%d probes): median %s, p99 %s, max %s" % (
                len(during), ms(during[len(during) // 2]), ms(during[int(len(during) * 0.99)]),
                ms(during[-1])))
        print("load average: %s" % open("/proc/loadavg").read().split()[:3])
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()

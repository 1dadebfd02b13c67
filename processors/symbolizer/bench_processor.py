"""End-to-end cost of the symbolizer processor: one OTLP profile with N locations (file offsets
spread over the function symbols of an ELF file) posted twice to a real sonde (otlp -> symbolizer ->
file); the processor's debug log gives the time of its work per batch: the first is cold, the
second warm (same addresses, new batch: dictionary interning included).
    SONDE_BUILD_DIR=build python3 processors/symbolizer/bench_processor.py [elf] [per-function]
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/e2e"))
import harness  # noqa: E402
import test_symbolizer as ts  # noqa: E402


def main():
    elf = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(harness.build_dir(), "lib", "libsonde.so"))
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    syms = ts.symbols(elf)
    prof = ts.Profile()
    m = prof.mapping(elf, ts.build_id(elf))
    locs = []
    for a, size in syms.values():
        for k in range(per):
            try:
                locs.append(prof.location(m, ts.vaddr_to_offset(elf, a + size * k // per)))
            except AssertionError:
                break
    prof.resources.append(({"service.name": "bench"}, locs))
    port = harness.free_port()
    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  symbolizer: {}
exporters:
  file: {path: "@TMP@/out.json", flush_interval: 10ms}
service:
  telemetry:
    logs: {level: debug}
  pipelines:
    profiles: {receivers: [otlp], processors: [symbolizer], exporters: [file]}
""" % port
    s = harness.Sonde(cfg, "bench-symbolizer").start()
    body = prof.body()
    for _ in range(int(os.environ.get("BENCH_ROUNDS", "2"))):
        ts.post(port, body)
        time.sleep(1.5)
    s.stop_ok()
    runs = re.findall(r"symbolized (\d+) locations \((\d+) left as addresses\) in ([\d.]+) ms",
                      s.log())
    print("file %s, %d locations per batch" % (elf, len(locs)))
    for name, (n, left, ms) in zip(["cold"] + ["warm"] * (len(runs) - 1), runs):
        n = int(n) + int(left)
        print("%s: %.3f ms, %.0f locations/s, %.3f us/location" %
              (name, float(ms), n / (float(ms) / 1e3), float(ms) * 1e3 / n))


if __name__ == "__main__":
    main()

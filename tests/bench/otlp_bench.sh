#!/usr/bin/env bash
# OTLP pipeline benchmark (not a ctest test): OTLP/gRPC in -> batch -> OTLP/gRPC out on loopback,
# requests of 100 spans with 10 attributes each, with gzip and with zstd.
#
#   loadgen sonde (otlp_benchgen -> otlp exporter) --gRPC--> sonde under test
#     (otlp receiver -> batch -> otlp exporter) --gRPC--> sink sonde (otlp receiver -> otlp_benchsink)
#
# Reports for the sonde under test: spans/s, spans/s per core of its CPU (utime+stime from
# /proc/PID/stat), peak RSS, the end-to-end p50/p99 latency (span start stamped by the generator,
# read by the sink: loadgen queue + sonde under test incl. the batch timeout + sink), and the codec
# ceiling (decompress + decode + encode + compress of the same request in-process, one core).
#
#   tests/bench/otlp_bench.sh [BUILD_DIR]   env: RATES="100000 400000" COMPRESSIONS="gzip zstd"
#                                                WINDOW=10 WARMUP=3
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
RATES=${RATES:-"100000 400000"}
COMPRESSIONS=${COMPRESSIONS:-"gzip zstd"}
WINDOW=${WINDOW:-10}
WARMUP=${WARMUP:-3}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

[ -x "$build/bin/sonde" ] || { echo "build sonde first ($build/bin/sonde missing)" >&2; exit 1; }
[ -f "$build/lib/sonde/receiver_otlp.so" ] || { echo "the otlp receiver is not built" >&2; exit 1; }

cflags="-O2 -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -I$src/core/include"
cflags="$cflags -I$build/include -I$build/proto-gen"
mkdir -p "$work/plugins"
cc $cflags -shared -fPIC -o "$work/plugins/otlp_bench.so" "$here/otlp_bench_plugin.c" \
  -L"$build/lib" -Wl,-rpath,"$build/lib" -lsonde
cc $cflags -o "$work/codec" "$here/otlp_codec_bench.c" -L"$build/lib" -Wl,-rpath,"$build/lib" \
  -lsonde -lprotobuf-c -luv -lz -lzstd

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
metric() { # sum of a counter over its series
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 ~ "^"n"({|$)" {s+=$2} END {printf "%.0f", s}'
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "codec ceiling (one core, in-process): $("$work/codec" 2)"
ceiling=$("$work/codec" 2)
hz=$(getconf CLK_TCK)

run() {
  local comp=$1 rate=$2
  local in_port out_port sut_metrics
  in_port=$(port); out_port=$(port); sut_metrics=$(port)
  cat >"$work/sink.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$out_port
      http:
        endpoint: 127.0.0.1:$(port)
exporters:
  otlp_benchsink:
    out: $work/sink.jsonl
service:
  telemetry:
    metrics:
      address: 127.0.0.1:$(port)
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_benchsink]
EOF
  cat >"$work/sut.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$in_port
      http:
        endpoint: 127.0.0.1:$(port)
processors:
  batch:
exporters:
  otlp:
    endpoint: 127.0.0.1:$out_port
    compression: $comp
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      address: 127.0.0.1:$sut_metrics
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
EOF
  cat >"$work/load.yaml" <<EOF
receivers:
  otlp_benchgen:
    rate: $rate
    per_request: 100
exporters:
  otlp:
    endpoint: 127.0.0.1:$in_port
    compression: $comp
    tls:
      insecure: true
    sending_queue:
      queue_size: 200
      num_consumers: 20
service:
  telemetry:
    metrics:
      address: 127.0.0.1:$(port)
  pipelines:
    traces:
      receivers: [otlp_benchgen]
      exporters: [otlp]
EOF
  rm -f "$work/sink.jsonl"
  "$build/bin/sonde" --config "$work/sink.yaml" --plugin-path "$work/plugins" >"$work/sink.log" 2>&1 &
  local sink=$!
  "$build/bin/sonde" --config "$work/sut.yaml" >"$work/sut.log" 2>&1 &
  local sut=$!
  pids=("$sink" "$sut")
  sleep 0.5
  "$build/bin/sonde" --config "$work/load.yaml" --plugin-path "$work/plugins" >"$work/load.log" 2>&1 &
  local load=$!
  pids+=("$load")
  sleep "$WARMUP"
  local s0 c0 s1 c1 rss=0 r
  s0=$(metric "$sut_metrics" otelcol_exporter_sent_spans_total)
  c0=$(cpu_ticks "$sut")
  for _ in $(seq "$WINDOW"); do
    sleep 1
    r=$(rss_kb "$sut")
    [ "$r" -gt "$rss" ] && rss=$r
  done
  s1=$(metric "$sut_metrics" otelcol_exporter_sent_spans_total)
  c1=$(cpu_ticks "$sut")
  local refused
  refused=$(metric "$sut_metrics" otelcol_receiver_refused_spans_total)
  # Upstream first, so each stage can drain into a live next one.
  for p in "$load" "$sut" "$sink"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
  local lat
  lat=$(tail -1 "$work/sink.jsonl" 2>/dev/null || echo '{}')
  python3 - "$comp" "$rate" "$s0" "$s1" "$c0" "$c1" "$hz" "$WINDOW" "$rss" "$lat" "$refused" <<'EOF'
import json, sys
comp, rate, s0, s1, c0, c1, hz, win, rss, lat, refused = sys.argv[1:]
spans = float(s1) - float(s0)
cpu = (float(c1) - float(c0)) / float(hz)
lat = json.loads(lat) if lat.startswith("{") else {}
print(json.dumps({
    "compression": comp, "offered_spans_per_s": int(rate),
    "spans_per_s": round(spans / float(win)),
    "cpu_cores": round(cpu / float(win), 3),
    "spans_per_s_per_core": round(spans / cpu) if cpu > 0 else None,
    "rss_mb": round(int(rss) / 1024, 1),
    "e2e_p50_ms": lat.get("p50_ms"), "e2e_p99_ms": lat.get("p99_ms"),
    "receiver_refused_spans": int(float(refused or 0)),
}))
EOF
}

for comp in $COMPRESSIONS; do
  for rate in $RATES; do
    run "$comp" "$rate"
  done
done
echo "codec ceiling: $ceiling"

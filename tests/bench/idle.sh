#!/usr/bin/env bash
# Idle cost and start-up time of sonde on a minimal pipeline: RSS after start and after 30 s,
# CPU used while idle, and exec-to-ready time (hyperfine over `sonde validate` for the parse+load
# part, and the "ready in" the service logs after every component started).
# usage: tests/bench/idle.sh [build-dir]
set -euo pipefail
BUILD=${1:-build}
SONDE=$(realpath "$BUILD/bin/sonde")
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$((20000 + RANDOM % 20000))
cat >"$tmp/minimal.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: localhost:$((port + 1))
processors:
  batch:
exporters:
  debug:
service:
  telemetry:
    metrics:
      address: localhost:$port
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
YAML
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== exec to ready (5 runs: the service's own 'ready in', then wall time to first metrics scrape)"
for i in 1 2 3 4 5; do
  t0=$(date +%s%N)
  "$SONDE" --config "$tmp/minimal.yaml" 2>"$tmp/log" &
  pid=$!
  until curl -sf "localhost:$port/metrics" >/dev/null 2>&1; do sleep 0.001; done
  t1=$(date +%s%N)
  ready=$(grep -o 'ready in [0-9.]* ms' "$tmp/log" | grep -o '[0-9.]*')
  echo "run $i: ready in ${ready} ms (logged), $(( (t1 - t0) / 1000 )) us exec to first scrape"
  kill -TERM $pid; wait $pid || true
done

echo "== idle (30 s)"
"$SONDE" --config "$tmp/minimal.yaml" 2>"$tmp/log" &
pid=$!
until curl -sf "localhost:$port/metrics" >/dev/null 2>&1; do sleep 0.01; done
rss0=$(rss_kb $pid)
c0=$(cpu_ticks $pid)
sleep 30
rss1=$(rss_kb $pid)
c1=$(cpu_ticks $pid)
hz=$(getconf CLK_TCK)
echo "RSS after start: ${rss0} kB; after 30 s idle: ${rss1} kB"
echo "CPU while idle: $(( (c1 - c0) * 1000 / hz )) ms in 30 s"
grep -E 'VmHWM|RssAnon|RssFile' "/proc/$pid/status"
kill -TERM $pid; wait $pid || true

echo "== hyperfine: sonde validate (parse, load plug-ins, bind)"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 3 --runs 30 "$SONDE validate --config $tmp/minimal.yaml" 2>&1 | sed -n '1,4p'
fi

#!/bin/sh
# The ebpf_profiler's cost at 19 Hz with both CPUs busy: two workload processes with stacks of
# DEPTH + 8 frames run while sonde profiles everything (-> file exporter). Prints the BPF program's
# ns per run (kernel.bpf_stats_enabled, bpftool run_time_ns / run_cnt), sonde's user+system CPU as
# a share of the machine, and its RSS. Needs root.
#   SONDE_BUILD_DIR=build [UNWIND=nofp] tests/bpf/bench_profiler.sh [DEPTH [SECONDS]]
# UNWIND=nofp profiles the workload built without frame pointers (DWARF unwinding).
set -eu
D=${1:-20}; T=${2:-30}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
B=${SONDE_BUILD_DIR:?set SONDE_BUILD_DIR}
W=$B/tests/bpf/bpf_workload_${UNWIND:-fp}
cat > "$TMP/bench.yaml" <<YAML
receivers:
  ebpf_profiler:
exporters:
  file:
    path: $TMP/bench.json
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    profiles:
      receivers: [ebpf_profiler]
      exporters: [file]
YAML
sysctl -q kernel.bpf_stats_enabled=1

$B/bin/sonde --config $TMP/bench.yaml > $TMP/bench.log 2>&1 &
S=$!
# Steady state: the tables of what already runs on the machine are built first (reported apart).
sleep ${WARMUP:-10}
$W deep $D $((T+2)) & A=$!
$W deep $D $((T+2)) & B=$!
sleep 1
t0=$(awk '{print $14+$15}' /proc/$S/stat)
id=$(bpftool prog show -j | python3 -c 'import json,sys; print([p["id"] for p in json.load(sys.stdin) if p.get("name")=="sample"][-1])')
r0=$(bpftool prog show id $id -j | python3 -c 'import json,sys; p=json.load(sys.stdin); print(p.get("run_time_ns",0), p.get("run_cnt",0))')
up0=$(awk '{print $1}' /proc/uptime)
sleep $T
t1=$(awk '{print $14+$15}' /proc/$S/stat)
r1=$(bpftool prog show id $id -j | python3 -c 'import json,sys; p=json.load(sys.stdin); print(p.get("run_time_ns",0), p.get("run_cnt",0))')
up1=$(awk '{print $1}' /proc/uptime)
rss=$(grep -E 'VmRSS|VmHWM' /proc/$S/status | tr -s ' ' | tr '\n' ' ')
wait $A $B
kill -TERM $S; wait $S || true
sysctl -q kernel.bpf_stats_enabled=0
python3 - "$r0" "$r1" "$t0" "$t1" "$up0" "$up1" "$rss" <<'PY'
import sys, os
ns0, c0 = map(int, sys.argv[1].split()); ns1, c1 = map(int, sys.argv[2].split())
t0, t1 = int(sys.argv[3]), int(sys.argv[4]); up = float(sys.argv[6]) - float(sys.argv[5])
hz = os.sysconf("SC_CLK_TCK"); ncpu = os.cpu_count()
runs = c1 - c0
print("window %.1fs: %d BPF runs, %.0f ns/run, BPF share of machine %.5f%%" % (up, runs, (ns1-ns0)/max(runs,1), 100*(ns1-ns0)/1e9/up/ncpu))
print("sonde user+sys %.3f s -> %.4f%% of the machine (%d CPUs); %s" % ((t1-t0)/hz, 100*(t1-t0)/hz/up/ncpu, ncpu, sys.argv[7]))
PY

#!/bin/sh
# The ebpf_http tracer's cost: wrk against nginx on loopback at saturation (1 worker, 1 wrk thread,
# 32 connections, a 612-byte page), without and with sonde tracing it (spans + RED -> debug
# exporter). Prints requests/s and p99 both ways, the BPF programs' ns per request
# (kernel.bpf_stats_enabled: run_time_ns of sonde's programs over the run / requests; every other
# syscall on the machine runs sys_enter/sys_exit too, so this is an upper bound), sonde's CPU and
# RSS, and the records lost at a fixed rate of ~20k requests/s (wrk with a 1 ms delay per request
# on 20 connections: wrk2 is not in Debian). Needs root, nginx and wrk.
#   SONDE_BUILD_DIR=build tests/bpf/bench_http.sh [SECONDS]
set -eu
T=${1:-10}
B=${SONDE_BUILD_DIR:?set SONDE_BUILD_DIR}
TMP=$(mktemp -d)
chmod 755 "$TMP"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
S=""
N=""
cleanup() {
  [ -n "$S" ] && kill "$S" 2>/dev/null && wait "$S" 2>/dev/null
  [ -n "$N" ] && kill "$N" 2>/dev/null && wait "$N" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
mkdir "$TMP/www"
python3 -c 'print("<p>" + "x" * 600 + "</p>", end="")' > "$TMP/www/index.html"
cat > "$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $TMP/b; proxy_temp_path $TMP/p; fastcgi_temp_path $TMP/f;
  uwsgi_temp_path $TMP/u; scgi_temp_path $TMP/s;
  server { listen 127.0.0.1:$PORT; root $TMP/www; }
}
EOF
cat > "$TMP/delay.lua" <<'EOF'
function delay() return 1 end
EOF
cat > "$TMP/sonde.yaml" <<EOF
receivers:
  ebpf_http:
    open_ports: "$PORT"
    metrics_interval: 5s
exporters:
  debug:
    verbosity: basic
    sampling_initial: 1
    sampling_thereafter: 1000000
service:
  telemetry:
    logs:
      level: warn
    metrics:
      address: localhost:$MPORT
  pipelines:
    traces:
      receivers: [ebpf_http]
      exporters: [debug]
    metrics:
      receivers: [ebpf_http]
      exporters: [debug]
EOF

"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" &
N=$!
sleep 1
URL=http://127.0.0.1:$PORT/index.html

# wrk's "Requests/sec" and the 99% latency (in us).
wrk_run() {
  wrk -t1 -c${2:-32} -d${T}s --latency ${3:-} "$URL" > "$TMP/$1.txt"
  python3 - "$TMP/$1.txt" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
v, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", t).groups()
p99 = float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
print(rps, n, p99)
EOF
}
metric() {
  curl -s "http://localhost:$MPORT/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {print s + 0}'
}
# This sonde's BPF programs (those using the newest map named scratch_map) as "name cnt ns" lines,
# and the ring bytes it sent (counters[SONDE_HTTP_CNT_BYTES] summed over CPUs).
bpf_progs() {
  python3 -c '
import json, subprocess
maps = json.loads(subprocess.check_output(["bpftool", "map", "show", "-j"]))
m = [x["id"] for x in maps if x.get("name") == "scratch_map"]
progs = json.loads(subprocess.check_output(["bpftool", "prog", "show", "-j"]))
used = set()
for p in progs:
    if m and max(m) in p.get("map_ids", []):
        print(p["name"], p.get("run_cnt", 0), p.get("run_time_ns", 0))
        used |= set(p["map_ids"])
c = [x["id"] for x in maps if x.get("name") == "counters" and x["id"] in used]
b = 0
if c:
    d = json.loads(subprocess.check_output(["bpftool", "map", "lookup", "id", str(c[0]), "key", "1", "0", "0", "0", "-j"]))
    b = sum(v["value"] for v in d["formatted"]["values"])
print("ringbytes", b, 0)'
}
bpf_ns() { bpf_progs | awk '$1 != "ringbytes" {s += $3} END {print s + 0}'; }
wrk_run warm > /dev/null
set -- $(wrk_run base)
BASE_RPS=$1 BASE_P99=$3

sysctl -q kernel.bpf_stats_enabled=1
"$B/bin/sonde" --config "$TMP/sonde.yaml" > "$TMP/sonde.log" 2>&1 &
S=$!
i=0
until curl -s "http://localhost:$MPORT/metrics" > /dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 100 ] && { cat "$TMP/sonde.log"; exit 1; }
  sleep 0.1
done
sleep 1
# What the programs cost over the same time with no HTTP traffic (every syscall on the machine
# passes sys_enter/sys_exit): subtracted from the traced run's.
nsi0=$(bpf_ns)
sleep "$T"
nsi1=$(bpf_ns)
bpf_progs > "$TMP/p0"
ns0=$(bpf_ns)
cpu0=$(awk '{print $14+$15}' /proc/$S/stat)
sp0=$(metric sonde_ebpf_http_spans_total)
set -- $(wrk_run traced)
TR_RPS=$1 TR_N=$2 TR_P99=$3
ns1=$(bpf_ns)
bpf_progs > "$TMP/p1"
cpu1=$(awk '{print $14+$15}' /proc/$S/stat)
sleep 2
sp1=$(metric sonde_ebpf_http_spans_total)
lost0=$(metric sonde_ebpf_http_records_lost_total)
SAT_LOST=$lost0
set -- $(wrk_run rate 20 "-s $TMP/delay.lua")
RATE_RPS=$1
sleep 2
lost1=$(metric sonde_ebpf_http_records_lost_total)
RSS=$(awk '/VmRSS/ {print $2}' /proc/$S/status)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$S/status)
HZ=$(getconf CLK_TCK)
python3 - <<EOF
base, tr = $BASE_RPS, $TR_RPS
print("nginx, 1 worker, wrk -t1 -c32 -d${T}s, $(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg)")
print("  without tracer: %.0f req/s, p99 %.0f us" % (base, $BASE_P99))
print("  with tracer:    %.0f req/s, p99 %.0f us (throughput %+.1f%%, p99 %+.0f us)" % (
    tr, $TR_P99, (tr - base) / base * 100, $TR_P99 - $BASE_P99))
print("  spans made: %d for %d requests wrk completed; %d records lost at saturation" % (
    $sp1 - $sp0, $TR_N, $SAT_LOST))
print("  BPF: %.0f ns per request (sonde's programs over the run minus the same time idle, per"
      " request; %.0f ns idle per second)" % (
    (($ns1 - $ns0) - ($nsi1 - $nsi0)) / max($TR_N, 1), ($nsi1 - $nsi0) / $T))
print("  sonde CPU: %.1f%% of one CPU at %.0f req/s" % (
    ($cpu1 - $cpu0) / $HZ / $T * 100, tr))
print("  at %.0f req/s (20 connections, 1 ms apart): %d records lost" % ($RATE_RPS, $lost1 - $lost0))
p0 = {l.split()[0]: l.split()[1:] for l in open("$TMP/p0")}
for l in open("$TMP/p1"):
    name, cnt, ns = l.split()
    c0, n0 = p0.get(name, ["0", "0"])
    dc, dn = int(cnt) - int(c0), int(ns) - int(n0)
    if name == "ringbytes":
        print("  ring: %.0f bytes per request" % (dc / max($TR_N, 1)))
    elif dc:
        print("    %-18s %9d runs (%5.1f per request) %6.0f ns per run, %6.0f ns per request" % (
            name, dc, dc / max($TR_N, 1), dn / dc, dn / max($TR_N, 1)))
print("  sonde RSS %d KiB (peak %d KiB)" % ($RSS, $HWM))
EOF

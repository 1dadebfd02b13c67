#!/bin/sh
# sonde's eBPF profiler side by side with `perf record -F 19 -a --call-graph dwarf` (+ perf script)
# and bpftrace's `profile:hz:19`, at 19 Hz, with N CPU-busy processes whose stacks are ~32 frames
# deep (tests/bpf/workloads/chains.c `deep 25`, built -O2 -fomit-frame-pointer, as distributions
# build). For each tool, in the same run and for the same window: user+system CPU as a share of
# the machine, BPF run time (kernel.bpf_stats_enabled), RSS, and how many of the workload's
# samples have a complete stack (one that reaches main). Also: sonde's BPF ns per sample, and
# the unwind table build time for ~2 MB binaries (tests/bpf/ehframe_dump). Needs root.
#   SONDE_BUILD_DIR=build tests/bpf/bench_compare.sh [N ...]      (default: 20 200)
#   SECONDS_PER_TOOL=30 WARMUP=10 (sonde's start-up, measured apart) TOOLS="sonde perf bpftrace"
# sonde runs with measure_bpf_time: its BPF run time per sample, p50/p90/p99 per kind of walk.
# The workloads run at nice 10 so that each tool starts in reasonable time among 200 of them.
# Installs linux-perf and bpftrace (Debian) when missing. Prints a Markdown table.
set -eu
[ "$(id -u)" = 0 ] || { echo "bench_compare.sh: needs root" >&2; exit 1; }
: "${SONDE_BUILD_DIR:?set SONDE_BUILD_DIR}"
missing=""
command -v perf >/dev/null 2>&1 || missing="$missing linux-perf"
command -v bpftrace >/dev/null 2>&1 || missing="$missing bpftrace"
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
HERE=$(cd "$(dirname "$0")" && pwd)
export HERE
exec python3 - "$@" <<'PY'
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.environ["HERE"]
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import profile_util as pu  # noqa: E402

B = os.environ["SONDE_BUILD_DIR"]
T = float(os.environ.get("SECONDS_PER_TOOL", "30"))
WARMUP = float(os.environ.get("WARMUP", "10"))
COUNTS = [int(a) for a in sys.argv[1:]] or [20, 200]
TOOLS = os.environ.get("TOOLS", "sonde perf bpftrace").split()
DEPTH = 25  # r_leaf + 26 rec + r_top + main + 2 libc + _start = 32 frames
NCPU = os.cpu_count()
HZ_TICK = os.sysconf("SC_CLK_TCK")
tmp = tempfile.mkdtemp(prefix="sonde-bench-compare-")
WL = os.path.join(tmp, "wl_bench")
subprocess.run(["gcc", "-O2", "-fomit-frame-pointer", "-o", WL,
                os.path.join(HERE, "workloads", "chains.c"), "-lm", "-ldl", "-lpthread"],
               check=True)
WL_SYMS = pu.SymFile(WL)
MAIN = WL_SYMS.range_of("main")


def cpu_ticks(pid):
    """utime + stime of the process (all its threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def bpf_progs(pid):
    """{prog id: (run_time_ns, run_cnt)} of the BPF programs `pid` holds a descriptor of (their
    fdinfo carries the kernel.bpf_stats_enabled counters)."""
    res = {}
    base = "/proc/%d/fdinfo" % pid
    for fd in os.listdir(base):
        try:
            with open(os.path.join(base, fd)) as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if "prog_id" in info:
            res.setdefault(int(info["prog_id"]), None)
            if "run_time_ns" in info:  # a program's fd (a link's names the program only)
                res[int(info["prog_id"])] = (int(info["run_time_ns"]), int(info["run_cnt"]))
    for pid_, v in list(res.items()):
        if v is None:
            r = subprocess.run(["bpftool", "prog", "show", "id", str(pid_), "-j"],
                               capture_output=True, text=True)
            j = json.loads(r.stdout or "{}") if r.returncode == 0 else {}
            res[pid_] = (j.get("run_time_ns", 0), j.get("run_cnt", 0))
    return res


TIME_KINDS = ["dwarf", "stack copy", "frame pointers"]


def bpf_timing(pid):
    """sonde's run-time histograms (measure_bpf_time: the `timing` map, see bpf/profiler.h):
    {key: [count per bucket]}, summed over CPUs."""
    base = "/proc/%d/fdinfo" % pid
    ids = set()
    for fd in os.listdir(base):
        try:
            with open(os.path.join(base, fd)) as f:
                for line in f:
                    if line.startswith("map_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    for i in ids:
        show = subprocess.run(["bpftool", "map", "show", "id", str(i), "-j"],
                              capture_output=True, text=True)
        if show.returncode or json.loads(show.stdout or "{}").get("name") != "timing":
            continue  # (the row array is 8 MiB: only the histograms are dumped)
        r = subprocess.run(["bpftool", "map", "dump", "id", str(i), "-j"], capture_output=True,
                           text=True)
        if r.returncode:
            continue
        res = {}
        for e in json.loads(r.stdout):
            f = e["formatted"]
            hist = [0] * 128
            for v in f["values"]:
                for b, c in enumerate(v["value"]["n"]):
                    hist[b] += c
            res[f["key"]] = hist
        return res
    return {}


def bucket_mid(i):
    """The middle of log-linear bucket i (8 per power of two from 16 ns, as in bpf/profiler.h)."""
    if i == 0:
        return 8
    o = 4 + (i - 1) // 8
    w = 1 << (o - 3)
    return (1 << o) + ((i - 1) % 8) * w + w / 2


def timing_summary(before, after):
    parts = []
    for key in sorted(after):
        h = [a - b for a, b in zip(after[key], before.get(key, [0] * 128))]
        total = sum(h)
        if not total:
            continue
        q = []
        for frac in (0.5, 0.9, 0.99):
            want, seen = int(frac * total), 0
            for i, c in enumerate(h):
                seen += c
                if seen > want and c:
                    q.append(bucket_mid(i))
                    break
        mean = sum(c * bucket_mid(i) for i, c in enumerate(h)) / total
        parts.append("%s%s: %d samples, p50 %.0f / p90 %.0f / p99 %.0f ns (mean ~%.0f)" % (
            TIME_KINDS[key // 2], " (walk alone)" if key % 2 else "", total, q[0], q[1], q[2],
            mean))
    return "; ".join(parts)


def bpf_delta(before, after):
    ns = sum(a[0] - before.get(i, (0, 0))[0] for i, a in after.items())
    cnt = sum(a[1] - before.get(i, (0, 0))[1] for i, a in after.items())
    return ns, cnt


def stats_on():
    """Turns kernel.bpf_stats_enabled on; says whether it was still on (another benchmark on the
    machine may turn it off when it ends)."""
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        was = f.read().strip() == "1"
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    return was


class Window:
    """CPU, BPF time and machine load of process `pid` between start() and stop()."""

    def __init__(self, pid):
        self.pid = pid

    def start(self):
        stats_on()
        self.t0, self.c0 = time.time(), cpu_ticks(self.pid)
        self.b0 = bpf_progs(self.pid)
        self.m0 = machine_busy()
        self.load0 = loadavg()

    def stop(self):
        self.t1, self.c1 = time.time(), cpu_ticks(self.pid)
        self.b1 = bpf_progs(self.pid)
        self.m1 = machine_busy()
        self.rss = status_kb(self.pid, "VmRSS")
        self.hwm = status_kb(self.pid, "VmHWM")
        self.load1 = loadavg()
        wall = self.t1 - self.t0
        self.cpu_s = (self.c1 - self.c0) / HZ_TICK
        self.bpf_ns, self.bpf_runs = bpf_delta(self.b0, self.b1)
        if not stats_on():  # someone turned the counters off during the window: no figure
            self.bpf_ns = self.bpf_runs = 0
        self.share = 100.0 * self.cpu_s / wall / NCPU
        self.bpf_share = 100.0 * self.bpf_ns / 1e9 / wall / NCPU
        busy, total = self.m1[0] - self.m0[0], self.m1[1] - self.m0[1]
        self.machine_busy = 100.0 * busy / max(total, 1)
        self.wall = wall


def is_main_frame(fname, addr):
    """sonde's addresses are looked up as they are (a caller's frame is inside its call)."""
    if os.path.realpath(fname) != WL:
        return False
    va = pu.offset_to_vaddr(WL_SYMS.loads, addr)
    return va is not None and any(lo <= va < hi for lo, hi in MAIN)


def sonde_run(n, pids):
    d = os.path.join(tmp, "sonde-%d" % n)
    os.makedirs(d, exist_ok=True)
    port = pu.free_port()
    s = pu.Sonde(d, port, interval="5s", samples_per_second=19,
                 extra="    measure_bpf_time: true\n")
    s.start(timeout=120)
    w0 = Window(s.proc.pid)
    w0.start()
    time.sleep(WARMUP)  # start-up: every running process is read, tables of sampled files built
    w0.stop()
    w = Window(s.proc.pid)
    t0 = bpf_timing(s.proc.pid)
    w.start()
    time.sleep(T)
    w.stop()
    timing = timing_summary(t0, bpf_timing(s.proc.pid))
    rows = s.metric("sonde_ebpf_profiler_unwind_rows")
    files = s.metric("sonde_ebpf_profiler_unwind_files")
    got = s.metric("sonde_ebpf_profiler_samples_total")
    lost = s.metric("sonde_ebpf_profiler_samples_lost_total")
    s.stop()
    total = complete = 0
    for pid, samples in pu.samples_by_pid(pu.load_profiles(s.out)).items():
        if pid not in pids:
            continue
        for _ra, dd, smp in samples:
            k = int(smp["values"][0])
            fr = [f for f in pu.sample_frames(dd, smp) if f[0] == "u"]
            total += k
            if any(is_main_frame(f[1], f[2]) for f in fr):
                complete += k
    return {"tool": "sonde", "w": w, "warm": w0, "total": total, "complete": complete,
            "timing": timing,
            "extra": "%d samples received, %d lost; unwind rows %d in %d files" % (
                got or 0, lost or 0, rows or 0, files or 0)}


def perf_run(n, pids):
    data = os.path.join(tmp, "perf-%d.data" % n)
    m0, load0, t0 = machine_busy(), loadavg(), time.time()
    p = subprocess.Popen(["perf", "record", "-q", "-F", "19", "-a", "--call-graph", "dwarf",
                          "-o", data, "--", "sleep", str(T)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _pid, _st, ru = os.wait4(p.pid, 0)
    wall = time.time() - t0
    m1 = machine_busy()
    w = Window(p.pid)
    w.wall = wall
    w.cpu_s = ru.ru_utime + ru.ru_stime  # perf record and its `sleep`
    w.share = 100.0 * w.cpu_s / wall / NCPU
    w.bpf_ns = w.bpf_runs = 0
    w.bpf_share = 0.0
    w.rss = w.hwm = ru.ru_maxrss
    w.machine_busy = 100.0 * (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
    w.load0, w.load1 = load0, loadavg()
    # perf script: the unwinding (libdw) happens here, after the fact.
    t1 = time.time()
    out_path = data + ".txt"
    with open(out_path, "w") as out:
        q = subprocess.Popen(["perf", "script", "--no-inline", "-i", data], stdout=out,
                             stderr=subprocess.DEVNULL)
        _pid, _st, ru2 = os.wait4(q.pid, 0)
    script_wall = time.time() - t1
    total = complete = 0
    cur = None
    with open(out_path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur is not None:
                    total += 1
                    complete += cur
                cur = None
            elif not line.startswith("\t") and not line.startswith(" "):
                m = re.match(r"^\s*(\S+)\s+(\d+)", line)
                pid = None
                if m:
                    nums = re.findall(r"\s(\d+)(?:/\d+)?\s", line)
                    pid = int(nums[0]) if nums else None
                cur = 0 if pid in pids else None
            elif cur is not None and re.search(r"\smain\+0x[0-9a-f]+ \(%s\)" % re.escape(WL),
                                               line):
                cur = 1
    if cur is not None:
        total += 1
        complete += cur
    size = os.path.getsize(data)
    return {"tool": "perf record --call-graph dwarf", "w": w, "total": total,
            "complete": complete,
            "extra": "perf.data %.1f MB; perf script %.1f s CPU (%.1f s wall), max RSS %d MB" % (
                size / 1e6, ru2.ru_utime + ru2.ru_stime, script_wall, ru2.ru_maxrss // 1024)}


def bpftrace_run(n, pids):
    out_path = os.path.join(tmp, "bpftrace-%d.json" % n)
    out = open(out_path, "w")
    # Exits well after the window ends (the window's own reads take time on a loaded machine; a
    # process on its way out has no descriptors left to read the BPF counters from).
    prog = ("profile:hz:19 { @[pid, ustack, kstack] = count(); } interval:s:%d { exit(); }" %
            int(T + 10))
    p = subprocess.Popen(["bpftrace", "-f", "json", "-e", prog],
                         stdout=out, stderr=subprocess.DEVNULL)
    t_start = time.time()
    while time.time() - t_start < 60:
        with open(out_path) as f:
            if "attached_probes" in f.read():
                break
        if p.poll() is not None:
            raise SystemExit("bpftrace failed to start")
        time.sleep(0.1)
    startup_cpu = cpu_ticks(p.pid) / HZ_TICK
    w = Window(p.pid)
    w.start()
    time.sleep(T)
    w.stop()
    # The program exits by itself (interval probe) and prints the map (symbolizing it) on the
    # way out; signals are not reliable here (bpftrace 0.17 missed a SIGINT under load, and a
    # second one cut the printing short).
    _pid, _st, ru = os.wait4(p.pid, 0)
    out.close()
    exit_cpu = ru.ru_utime + ru.ru_stime - startup_cpu - w.cpu_s
    total = complete = 0
    with open(out_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            if d.get("type") != "map":
                continue
            for key, count in d["data"]["@"].items():
                parts = key.split(",", 2)
                if len(parts) < 3 or int(parts[0]) not in pids:
                    continue
                ustack = parts[1]
                total += count
                if re.search(r"^\s*main\+\d+\s*$", ustack, re.M):
                    complete += count
    return {"tool": "bpftrace profile:hz:19", "w": w, "total": total, "complete": complete,
            "extra": "start-up %.1f s CPU (LLVM), exit (map print + symbolization) %.1f s CPU" % (
                startup_cpu, exit_cpu)}


def table_build_times():
    dump = os.path.join(B, "tests", "bpf", "ehframe_dump")
    rows = []
    for path in ["/usr/lib/x86_64-linux-gnu/libc.so.6",
                 "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"]:
        real = os.path.realpath(path)
        ms = []
        for _ in range(5):
            r = subprocess.run([dump, real], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, check=True)
            m = re.search(r"(\d+) bytes, (\d+) FDEs.*?(\d+) rows in ([\d.]+) ms", r.stderr)
            ms.append(float(m.group(4)))
        rows.append("%s (%.1f MB, %s rows): median %.1f ms of 5 (min %.1f)" % (
            os.path.basename(real), int(m.group(1)) / 1e6, m.group(3), statistics.median(ms),
            min(ms)))
    return rows


def main():
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")  # and left on: other sessions may be measuring
    timings = []
    print("# bench_compare %s, %d CPUs, kernel %s, window %.0f s per tool" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), NCPU, os.uname().release, T))
    for line in table_build_times():
        print("table build: " + line)
    for n in COUNTS:
        # nice 10: with 200 busy processes a tool at the same priority gets 1/200 of a CPU
        # and takes minutes to start (BPF verifier, LLVM); the CPUs stay fully busy.
        procs = [subprocess.Popen(["nice", "-n", "10", WL, "deep", str(DEPTH), "1e9"])
                 for _ in range(n)]
        pids = {p.pid for p in procs}
        try:
            time.sleep(2)
            results = []
            for run in (sonde_run, perf_run, bpftrace_run):
                if run.__name__.split("_")[0] in TOOLS:
                    results.append(run(n, pids))
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
        print("\n## %d busy processes, ~32-frame stacks, 19 Hz" % n)
        print("| tool | CPU (user+sys) % of machine | BPF % of machine | BPF ns/run | RSS "
              "(HWM) MB | workload samples | complete to main | machine busy % | load "
              "avg | notes |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            w = r["w"]
            print("| %s | %.3f | %.4f | %s | %.1f (%.1f) | %d | %.1f%% | %.0f | %s -> %s | "
                  "%s |" % (
                      r["tool"], w.share, w.bpf_share,
                      "%.0f" % (w.bpf_ns / w.bpf_runs) if w.bpf_runs else "-",
                      w.rss / 1024, w.hwm / 1024, r["total"],
                      100.0 * r["complete"] / max(r["total"], 1), w.machine_busy,
                      w.load0, w.load1, r["extra"]))
            if r.get("timing"):
                timings.append("sonde BPF time per sample in the window, %d processes: %s" % (
                    n, r["timing"]))
            if "warm" in r:
                wu = r["warm"]
                print("| sonde start-up (first %.0f s) | %.3f | %.4f | %s | %.1f (%.1f) | | "
                      "| %.0f | | reads every process, builds tables |" % (
                          WARMUP, wu.share, wu.bpf_share,
                          "%.0f" % (wu.bpf_ns / wu.bpf_runs) if wu.bpf_runs else "-",
                          wu.rss / 1024, wu.hwm / 1024, wu.machine_busy))
    for line in timings:
        print("\n" + line)
    print("\n(output kept in %s)" % tmp)


main()
PY

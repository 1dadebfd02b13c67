"""ebpf_profiler: a pid reused after the exit record of an excluded process was lost.

sonde excludes the shell (dash). Two shells spin until their verdict is in BPF's pid_filter
(read with bpftool), then sonde is stopped (SIGSTOP): fresh processes, whose samples carry
~19 KiB stack copies, fill the ring buffer; one shell then execs itself 1500 times (each exec of
an excluded process is a 16-byte record: they fill what the big records left) and the other one
exits: its exit record finds no room and is lost. Its pid is then given to a new program,
wl_reuser (ns_last_pid), and sonde continues.

Checks: the exited shell's pid_filter entry is gone while sonde is still stopped (BPF forgets the
verdict at the exit itself); samples were lost while sonde was stopped (the ring was full); the
shell has no samples; wl_reuser, with the exited shell's pid, has samples attributed to its
executable (its first sample names another start time than the process sonde knew).

Needs root and a BPF-capable kernel: otherwise exits 77 (skipped), or fails when
SONDE_REQUIRE_BPF=1.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_util as pu  # noqa: E402

EXCLUDE = 1  # SONDE_PROF_PID_EXCLUDE


def pid_filter_map(sonde_pid):
    """The id of the profiler's pid_filter map among sonde's file descriptors."""
    ids = []
    for fd in os.listdir("/proc/%d/fdinfo" % sonde_pid):
        try:
            with open("/proc/%d/fdinfo/%s" % (sonde_pid, fd)) as f:
                for line in f:
                    if line.startswith("map_id:"):
                        ids.append(int(line.split()[1]))
        except OSError:
            continue
    for i in ids:
        r = subprocess.run(["bpftool", "-j", "map", "show", "id", str(i)], capture_output=True,
                           text=True)
        if r.returncode == 0 and json.loads(r.stdout).get("name") == "pid_filter":
            return i
    raise AssertionError("no pid_filter map among sonde's file descriptors")


def verdict(map_id, pid):
    """pid_filter[pid], None when there is no entry."""
    key = [str(b) for b in struct.pack("<I", pid)]
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "id", str(map_id), "key"] + key,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    v = json.loads(r.stdout)
    value = v.get("value", v.get("formatted", {}).get("value"))
    if isinstance(value, list):
        return struct.unpack("<I", bytes(int(b, 16) for b in value))[0]
    return int(value)



def spawn_with_pid(pid, argv):
    """Starts argv with the given pid (ns_last_pid), or raises."""
    for _attempt in range(300):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(argv)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    raise AssertionError("could not get pid %d again through ns_last_pid" % pid)


def main():
    workload = os.path.realpath(sys.argv[1])
    pu.require_root_btf()
    tmp = tempfile.mkdtemp(prefix="sonde-bpf-pidreuse-")
    exe = {}
    for name in ("wl_reuser", "wl_fill0", "wl_fill1"):
        exe[name] = os.path.join(tmp, name)
        shutil.copy(workload, exe[name])
    shell = os.path.realpath("/bin/sh")
    go, go_fill = os.path.join(tmp, "go"), os.path.join(tmp, "go_fill")
    loop = os.path.join(tmp, "execloop.sh")
    with open(loop, "w") as f:
        f.write('n=$1; if [ "$n" -gt 0 ]; then exec %s %s $((n - 1)); fi\n' % (shell, loop))
    s = pu.Sonde(tmp, pu.free_port(),
                 extra="    exclude:\n      executables: [%s]\n" % os.path.basename(shell))
    rc, out = s.validate()
    if rc != 0:
        pu.skip_or_fail("sonde validate: " + out.strip())
    s.start()
    procs = []
    stopped = False
    try:
        ex = subprocess.Popen([shell, "-c", 'while [ ! -e %s ]; do :; done' % go])
        filler = subprocess.Popen([shell, "-c", 'while [ ! -e %s ]; do :; done; exec %s %s 1500'
                                   % (go_fill, shell, loop)])
        procs += [ex, filler]
        # Their first samples make sonde read /proc and exclude them (in BPF from then on).
        m = pid_filter_map(s.proc.pid)
        pu.wait_for(lambda: verdict(m, ex.pid) == EXCLUDE and verdict(m, filler.pid) == EXCLUDE, 30,
                 "the shells' exclusion in pid_filter")
        lost0 = s.metric("sonde_ebpf_profiler_samples_lost_total") or 0
        s.proc.send_signal(signal.SIGSTOP)
        stopped = True
        # New processes: every sample a ~19 KiB stack copy, so the ring (1 MiB at 19 Hz) fills
        # within seconds of their CPU time.
        fill = [subprocess.Popen([exe[n], "cold", "4"]) for n in ("wl_fill0", "wl_fill1")]
        procs += fill
        for p in fill:
            p.wait()
        open(go_fill, "w").close()
        assert filler.wait() == 0, "the exec loop failed"
        pid = ex.pid
        open(go, "w").close()
        assert ex.wait() == 0
        gone = verdict(m, pid)
        reuser = spawn_with_pid(pid, [exe["wl_reuser"], "cold", "2"])
        procs.append(reuser)
        s.proc.send_signal(signal.SIGCONT)
        stopped = False
        lost = (s.metric("sonde_ebpf_profiler_samples_lost_total") or 0) - lost0
        assert reuser.wait() == 0, "wl_reuser failed"

        def reuser_rows():
            try:
                rows = pu.samples_by_pid(pu.load_profiles(s.out)).get(pid, [])
            except ValueError:  # a line being written
                return None
            return [r for r in rows
                    if pu.sample_attrs(r[1], r[2]).get("thread.name") == "wl_reuser"] or None

        try:
            rows = pu.wait_for(reuser_rows, 20, "samples of wl_reuser (pid %d)" % pid)
        except AssertionError:
            rows = []
    finally:
        if stopped:
            s.proc.send_signal(signal.SIGCONT)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        s.stop()

    by_pid = pu.samples_by_pid(pu.load_profiles(s.out))
    excluded = [r for r in by_pid.get(pid, [])
                if pu.sample_attrs(r[1], r[2]).get("thread.name") != "wl_reuser"]
    n = sum(int(r[2]["values"][0]) for r in rows)
    paths = {r[0].get("process.executable.path") for r in rows}
    print("ring full while sonde was stopped: %d samples lost; pid %d: %d samples of the shell, "
          "%d of wl_reuser attributed to %s" % (lost, pid, len(excluded), n, sorted(paths)))
    assert gone is None, "pid_filter still holds %s for pid %d after its exit" % (gone, pid)
    assert lost > 0, "no samples were lost while sonde was stopped: the ring never filled, the " \
        "exit record was not lost (the test tested nothing)"
    assert not excluded, "the excluded shell was profiled"
    assert n >= 5, "the process that reused pid %d was not profiled (the lost exit left the " \
        "old verdict)" % pid
    assert paths == {exe["wl_reuser"]}, "wl_reuser attributed to %s" % paths
    shutil.rmtree(tmp, ignore_errors=True)
    print("OK")


if __name__ == "__main__":
    main()

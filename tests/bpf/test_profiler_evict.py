"""ebpf_profiler: unwind tables are freed when no process maps their file any more.

A sonde that profiles only executables named evict* sees 24 distinct files (fresh copies of the
-fomit-frame-pointer workload, a new inode each) start, run straight into their call chain and
exit. Checks, from sonde's own self-metrics and the profile it writes:
  * tables were built while they ran (sonde_ebpf_profiler_unwind_rows above its start value);
  * once they are gone, rows and files in use return to the start value (only the vdso's);
  * their stacks were complete all the same (>= 99% down to main);
  * a process excluded by that selection (a shell) that execs one of them is profiled from the
    exec on (the verdict is on the executable, not the pid).

Needs root and a BPF-capable kernel: otherwise exits 77 (skipped), or fails when
SONDE_REQUIRE_BPF=1.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_util as pu  # noqa: E402
import test_ebpf_profiler as t  # noqa: E402  (its chain check)

FILES = 24



def main():
    workload = os.path.realpath(sys.argv[1])
    pu.require_root_btf()
    tmp = tempfile.mkdtemp(prefix="sonde-bpf-evict-")
    s = pu.Sonde(tmp, pu.free_port(), extra="    include:\n      executables: [\"evict*\"]\n")
    rc, out = s.validate()
    if rc != 0:
        pu.skip_or_fail("sonde validate: " + out.strip())
    s.start()
    paths, pids = [], []
    try:
        base_rows = pu.wait_for(lambda: s.metric("sonde_ebpf_profiler_unwind_rows"), 10,
                             "the unwind_rows gauge")
        base_files = s.metric("sonde_ebpf_profiler_unwind_files")
        peak = base_rows
        for i in range(0, FILES, 2):
            procs = []
            for k in (i, i + 1):
                path = os.path.join(tmp, "evict%d" % k)
                shutil.copy(workload, path)
                paths.append(path)
                procs.append(subprocess.Popen([path, "cold", "0.3"]))
            while any(p.poll() is None for p in procs):
                peak = max(peak, s.metric("sonde_ebpf_profiler_unwind_rows"))
                time.sleep(0.1)
            pids += [p.pid for p in procs]
            peak = max(peak, s.metric("sonde_ebpf_profiler_unwind_rows"))
        # Exited processes leave at the report after their last samples, their files at the
        # report after that (reports every second; later on a loaded machine).
        pu.wait_for(lambda: s.metric("sonde_ebpf_profiler_unwind_rows") == base_rows and
                 s.metric("sonde_ebpf_profiler_unwind_files") == base_files, 30,
                 "rows and files back to %d / %d (now %s / %s)" % (
                     base_rows, base_files, s.metric("sonde_ebpf_profiler_unwind_rows"),
                     s.metric("sonde_ebpf_profiler_unwind_files")))
        evicted = s.metric("sonde_ebpf_profiler_processes_evicted_total")
        # A shell (excluded: not evict*) spins until sonde has seen it, then execs a workload.
        target = os.path.join(tmp, "evict_exec")
        shutil.copy(workload, target)
        sh = subprocess.Popen(["/bin/sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); "
                               "done; exec %s cold 1" % target])
        sh.wait()
        time.sleep(2.5)  # the report that carries its samples
    finally:
        s.stop()

    by_pid = {pid: [(d, smp) for _ra, d, smp in rows]
              for pid, rows in pu.samples_by_pid(pu.load_profiles(s.out)).items()}
    tot = in_chain = complete = 0
    bad = []
    for pid, path in zip(pids, paths):
        n, i, c, b = t.chain_counts(path, by_pid.get(pid, []))
        tot, in_chain, complete = tot + n, in_chain + i, complete + c
        bad += [(pid, names) for names in b]
    _t, exec_in_chain, exec_complete, _b = t.chain_counts(target, by_pid.get(sh.pid, []))
    print("excluded shell exec'ing a workload: %d samples after the exec, %d complete" % (
        exec_in_chain, exec_complete))
    assert exec_in_chain >= 5, "the exec'd workload was not profiled (the shell's exclusion stuck)"
    print("%d files: rows in use %d at start, %d at the peak, back to %d; %d processes evicted; "
          "%d samples, %d in the chain, %d complete" % (FILES, base_rows, peak, base_rows, evicted,
                                                         tot, in_chain, complete))
    assert peak > base_rows, "no tables were built for the workloads"
    assert in_chain >= 20, "too few chain samples: %d of %d" % (in_chain, tot)
    for pid, names in bad[:10]:
        print("incomplete, pid %d (#%d of %d): %s" % (pid, pids.index(pid), len(pids), names))
    assert complete >= 0.99 * in_chain, "incomplete stacks: %d/%d" % (complete, in_chain)
    print("OK")


if __name__ == "__main__":
    main()

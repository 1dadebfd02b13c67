"""ebpf_profiler end to end: the real sonde samples a workload built by this test, writes OTLP-JSON
with the file exporter, and this script checks the profile with nothing of sonde's code.

Checks:
  * frame pointers: >= 99% of the samples whose leaf is in the workload's chain carry the whole
    chain down to main (addresses mapped to functions by the workload's ELF symbol table);
  * the same for the workload built with -fomit-frame-pointer (DWARF unwinding from .eh_frame);
  * kernel stacks: a syscall-heavy workload's samples have kernel frames;
  * resource attributes (pid, executable name/path, host name), sample attributes, mapping build id,
    sample and period types;
  * exit eviction: many short-lived processes do not make the process table grow.

Needs root and a kernel with BTF, perf events, raw tracepoints and ring buffers: otherwise exits 77
(skipped), or fails when SONDE_REQUIRE_BPF=1.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from this import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_util import (Sonde, SymFile, attrs_of, free_port, load_profiles,  # noqa: E402
                          require_root_btf, sample_attrs, sample_frames, skip_or_fail)

CHAIN = ["chain_e", "chain_d", "chain_c", "chain_b", "chain_a", "main"]
COLD_RUNS = 8


def chain_check(label, workload, samples):
    """Asserts >= 99% of the samples whose leaf is in the chain carry it down to main."""
    total, in_chain, complete, bad = chain_counts(workload, samples)
    print("%s: %d samples, %d with the leaf in the chain, %d complete" %
          (label, total, in_chain, complete))
    # 3 s of CPU time at 19 Hz: ~57 samples, however loaded the machine.
    assert in_chain >= 20, "%s: too few chain samples: %d of %d" % (label, in_chain, total)
    assert complete >= 0.99 * in_chain, "%s: incomplete stacks: %d/%d, e.g. %s" % (
        label, complete, in_chain, bad)


def chain_counts(workload, samples):
    """(samples, samples with the leaf in the chain, those complete down to main, a few bad)."""
    sf = SymFile(workload)
    build_id = sf.build_id
    missing = [name for name in CHAIN if not sf.range_of(name)]
    assert not missing, "workload symbols missing: %s" % missing


    in_chain = complete = total = 0
    bad = []
    for d, smp in samples:
        n = int(smp["values"][0])
        total += n
        user = [f for f in sample_frames(d, smp) if f[0] == "u"]
        if not user or user[0][1] != workload:
            continue
        for _k, fname, _addr, bid in user:
            if fname == workload:
                assert bid == build_id, (bid, build_id)
        # Addresses as they are: sonde reports a caller's frame inside its call (return address
        # - 1), so every frame is named by the function holding it.
        names = [sf.at_offset(addr) if fname == workload else None
                 for _k, fname, addr, _b in user]
        if names[0] not in CHAIN:
            continue
        in_chain += n
        want = CHAIN[CHAIN.index(names[0]):]
        if names[:len(want)] == want:
            complete += n
        elif len(bad) < 5:
            bad.append([nm or "%s+%#x" % (os.path.basename(fname), addr)
                        for nm, (_k, fname, addr, _b) in zip(names, user)])
    return total, in_chain, complete, bad


def main():
    workload = os.path.realpath(sys.argv[1])
    workload_nofp = os.path.realpath(sys.argv[2])
    workload_dbg = os.path.realpath(sys.argv[3])
    require_root_btf()
    tmp = tempfile.mkdtemp(prefix="sonde-bpf-profiler-")
    s = Sonde(tmp, free_port())
    rc, out = s.validate()
    if rc != 0:
        if re.search(r"CAP_|kernel feature missing", out):
            skip_or_fail("sonde validate: " + out.strip())
        raise AssertionError("sonde validate failed:\n" + out)

    s.start()
    try:
        cpu = subprocess.Popen([workload, "cpu", "3"])
        nofp = subprocess.Popen([workload_nofp, "cpu", "3"])
        cpu.wait()
        nofp.wait()
        dbg = subprocess.Popen([workload_dbg, "cold", "2"])
        dbg.wait()
        # Cold start: fresh copies of the -fomit-frame-pointer workload (a new file each, so no
        # table exists yet) go straight into the chain; their stacks must be complete from the
        # first sample (BPF sends a stack copy until the tables are loaded).
        cold = []
        for i in range(COLD_RUNS):
            path = os.path.join(tmp, "cold%d" % i)
            shutil.copy(workload_nofp, path)
            c = subprocess.Popen([path, "cold", "0.4"])
            c.wait()
            cold.append((c.pid, path))
        copied = s.metric("sonde_ebpf_profiler_samples_stack_copied_total")
        sysw = subprocess.Popen([workload, "sys", "3"])
        sysw.wait()
        time.sleep(1.5)  # one report after they exited: their processes are evicted
        evicted_before = s.metric("sonde_ebpf_profiler_processes_evicted_total")
        spawn = subprocess.Popen([workload, "spawn", "400", "20"])
        spawn.wait()
        # Exited processes leave the table at the report that flushes their samples; on a loaded
        # machine reports run late, so wait (at least two reports, at most 20 s) until the
        # eviction count stops moving instead of for a fixed time.
        t0 = time.time()
        last, still = s.metric("sonde_ebpf_profiler_processes_evicted_total"), 0
        while time.time() - t0 < 20:
            time.sleep(0.5)
            now = s.metric("sonde_ebpf_profiler_processes_evicted_total")
            still = still + 1 if now == last else 0
            last = now
            if still >= 5 and time.time() - t0 >= 2.5:  # unchanged for 2.5 s: over two reports
                break
        procs_after = s.metric("sonde_ebpf_profiler_processes")
        evicted = s.metric("sonde_ebpf_profiler_processes_evicted_total") - evicted_before
        live = len([p for p in os.listdir("/proc") if p.isdigit()])
        reads = s.metric("sonde_ebpf_profiler_proc_reads_total")
    finally:
        s.stop()

    profiles = load_profiles(s.out)
    assert profiles, "no profiles written:\n" + s.log()
    by_pid = {}
    for d, rp in profiles:
        ra = attrs_of(rp.get("resource", {}).get("attributes"))
        pid = int(ra["process.pid"])
        for sp in rp.get("scopeProfiles", []):
            for prof in sp.get("profiles", []):
                strings = d["stringTable"]
                st, pt = prof["sampleType"], prof["periodType"]
                assert (strings[st["typeStrindex"]], strings[st["unitStrindex"]]) == (
                    "samples", "count"), st
                assert (strings[pt["typeStrindex"]], strings[pt["unitStrindex"]]) == (
                    "cpu", "nanoseconds"), pt
                assert int(prof["period"]) == 1000000000 // 19, prof["period"]
                for smp in prof.get("samples", []):
                    by_pid.setdefault(pid, (ra, []))[1].append((d, smp))
    assert s.proc.pid not in by_pid, "sonde profiled itself"

    # -- frame-pointer chain ----------------------------------------------------------------------
    ra, samples = by_pid.get(cpu.pid, (None, []))
    assert samples, "no samples of the cpu workload (pid %d)" % cpu.pid
    assert ra["process.executable.path"] == workload, ra
    assert ra["process.executable.name"] == os.path.basename(workload), ra
    assert ra["host.name"] == socket.gethostname(), ra
    assert "container.id" not in ra or re.fullmatch(r"[0-9a-f]{64}", ra["container.id"]), ra
    for d, smp in samples:
        a = sample_attrs(d, smp)
        assert int(a["thread.id"]) == cpu.pid and a["thread.name"] == "bpf_workload_fp", a
        assert int(a["cpu.logical_number"]) in range(os.cpu_count()), a
    chain_check("frame pointers", workload, samples)

    # -- no frame pointers: DWARF ---------------------------------------------------------------
    ra, samples = by_pid.get(nofp.pid, (None, []))
    assert samples, "no samples of the no-frame-pointer workload (pid %d)" % nofp.pid
    assert ra["process.executable.path"] == workload_nofp, ra
    chain_check("no frame pointers (.eh_frame)", workload_nofp, samples)

    # -- .debug_frame only -------------------------------------------------------------------------
    ra, samples = by_pid.get(dbg.pid, (None, []))
    assert samples, "no samples of the .debug_frame workload (pid %d)" % dbg.pid
    chain_check("no frame pointers, .debug_frame only", workload_dbg, samples)

    # -- cold start: 8 new files, 0.4 s of CPU each, straight into the chain -------------------
    tot = in_chain = complete = 0
    bad = []
    for pid, path in cold:
        _ra, samples = by_pid.get(pid, (None, []))
        t, i, c, b = chain_counts(path, samples)
        tot, in_chain, complete = tot + t, in_chain + i, complete + c
        bad += b
    print("cold start (%d new files): %d samples, %d with the leaf in the chain, %d complete; "
          "%d samples walked from stack copies in all" % (COLD_RUNS, tot, in_chain, complete,
                                                           copied))
    assert in_chain >= 20, "cold start: too few chain samples: %d of %d" % (in_chain, tot)
    assert complete >= 0.99 * in_chain, "cold start: incomplete stacks: %d/%d, e.g. %s" % (
        complete, in_chain, bad[:5])
    assert copied > 0, "no stack copies: the cold-start path was not exercised"

    # -- kernel stacks ----------------------------------------------------------------------------
    ra, samples = by_pid.get(sysw.pid, (None, []))
    assert samples, "no samples of the sys workload (pid %d)" % sysw.pid
    with_kernel = tot = 0
    for d, smp in samples:
        n = int(smp["values"][0])
        tot += n
        fr = sample_frames(d, smp)
        if fr and fr[0][0] == "k":
            with_kernel += n
            assert all(f[2] >= 0xffff800000000000 for f in fr if f[0] == "k"), fr
            # kernel frames come first, then the user stack
            kinds = "".join(f[0] for f in fr)
            assert re.fullmatch(r"k+u*", kinds), kinds
    print("sys workload: %d samples, %d with kernel frames" % (tot, with_kernel))
    assert with_kernel >= 0.5 * tot, "kernel frames missing: %d/%d" % (with_kernel, tot)

    # -- exit eviction ----------------------------------------------------------------------------
    # Other processes on this machine come and go too, so the check is on the children: every
    # child that was profiled was evicted, and the table is no larger than what is alive.
    children = [p for p, (ra, _) in by_pid.items()
                if ra.get("process.executable.path") == workload
                and p not in (cpu.pid, sysw.pid, spawn.pid, nofp.pid, dbg.pid)]
    print("400 short-lived children: %d profiled, %d processes evicted since; %d tracked at the "
          "end with %d alive; %d /proc reads in all" % (len(children), evicted, procs_after, live,
                                                          reads))
    assert len(children) >= 20, "too few children profiled: %d" % len(children)
    assert evicted >= len(children), "children not evicted: %d < %d" % (evicted, len(children))
    assert procs_after <= live, "more processes tracked (%d) than alive (%d)" % (procs_after, live)
    print("OK")


if __name__ == "__main__":
    main()

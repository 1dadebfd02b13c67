"""ebpf_profiler against the workloads of issue 4, built here with -O2 -fomit-frame-pointer (so
every user stack is unwound from .eh_frame), profiled by the real sonde (ebpf_profiler -> file,
OTLP-JSON) at 97 Hz, read back with nothing of sonde's code: each location (mapping file +
normalized file offset) is named by the ELF symbol table of its file (libc's from libc6-dbg).

Cases (tests/bpf/workloads/): a chain of five functions in the main thread; a second thread
through libm down to start_thread/clone3; a qsort callback (libc calling back into the program);
a 200-deep recursion; a dlopen'd library opened after sonde started; a signal handler whose stack
continues through the signal frame into the interrupted code; calls to a noreturn function that
are the last instruction of their caller (the return address is past the caller's end: the
caller is named only because non-leaf frames are reported inside their call); C++ throw/catch (samples inside
libgcc_s/libstdc++'s unwinder); 200 short-lived children (fork + exec, 20 ms each) attributed to
their executable; a process started before sonde; a pid reused (ns_last_pid) by another
executable; exit cleanup (self-metrics). For each stack case: at least 99% of the samples whose
leaf is a known function carry the whole chain to main or the thread start, with a minimum
number of such samples. Every case is evaluated and reported before the test fails.

The workloads (but the pre-existing process and the children, whose point is the cold path) spin
first in functions outside the known set for one second, after start and after dlopen: the
profiler learns of a process or a mapping from a sample and re-reads /proc at most once a second.

Needs root, BTF, perf events, ring buffers, gcc/g++, binutils and libc6-dbg; without BPF it exits
77 (skipped), or fails when SONDE_REQUIRE_BPF=1.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_util as pu  # noqa: E402

HZ = 97
MIN_SAMPLES = 40  # per case, samples whose leaf is a known function
SECONDS = 1.5  # CPU seconds of each concurrent workload after its warm-up (~145 samples)
CHILDREN, CHILD_MS = 200, 20
# The children are found by their thread name: one of this run only (15 characters, the most a
# thread name keeps), so that a concurrent run's children are not counted as misattributed ours.
CHILD_COMM = "wl_child_%06d" % (os.getpid() % 1000000)
DEPTH = 200
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads")
CFLAGS = ["-O2", "-fomit-frame-pointer", "-Wall", "-Wextra", "-Werror"]

LIBC = "libc.so.6"
LIBM = "libm.so.6"


# ---- building and checking the workloads ----------------------------------------------------------

def build(tmp):
    out = {
        "chains": os.path.join(tmp, "wl_chains"),
        "child": os.path.join(tmp, CHILD_COMM),
        "throw": os.path.join(tmp, "wl_throw"),
        "dlib": os.path.join(tmp, "libwl_dl.so"),
    }
    cmds = [
        ["gcc"] + CFLAGS + ["-o", out["chains"], os.path.join(SRC, "chains.c"), "-lm", "-ldl",
                            "-lpthread"],
        ["gcc"] + CFLAGS + ["-o", out["child"], os.path.join(SRC, "child.c")],
        ["g++"] + CFLAGS + ["-o", out["throw"], os.path.join(SRC, "throw.cc")],
        ["gcc"] + CFLAGS + ["-shared", "-fPIC", "-o", out["dlib"], os.path.join(SRC, "dlib.c")],
    ]
    procs = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in cmds]
    for c, p in zip(cmds, procs):
        _o, err = p.communicate()
        assert p.returncode == 0, "building %s failed:\n%s" % (c[-1], err)
    return out


def disassembly(path):
    """{function: [instruction text]}, split parts (.cold) merged into their function."""
    text = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", path],
                          capture_output=True, text=True, check=True).stdout
    funcs, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            cur = funcs.setdefault(pu.plain_name(m.group(1)), [])
        elif cur is not None and "\t" in line:
            cur.append(line.split("\t", 1)[1].strip())
    return funcs


def check_code(path, calls, frameless):
    """The chain is really there: each (caller, callee) is a `call` (not inlined, not a jump),
    and the functions do not set up a frame pointer (mov %rsp,%rbp)."""
    funcs = disassembly(path)
    errors = []
    for caller, callee in calls:
        insns = funcs.get(caller)
        if insns is None:
            errors.append("%s: no function %s (inlined?)" % (path, caller))
            continue
        if callee == "*":
            ok = any(re.match(r"call\s+\*", i) for i in insns)
        else:
            targets = [re.sub(r"\+0x[0-9a-f]+$", "", t) for i in insns
                       for t in re.findall(r"^call\s+[0-9a-f]+ <(.+)>$", i)]
            ok = callee in [pu.plain_name(t) for t in targets]
            # A jump to the callee's entry (a jump inside a recursive function has an offset).
            jumps = [t for i in insns for t in re.findall(r"^jmp\s+[0-9a-f]+ <(.+)>$", i)
                     if pu.plain_name(t) in (callee, callee + "@plt")]
            if jumps:
                errors.append("%s: %s reaches %s by a jump (tail call)" % (path, caller, callee))
        if not ok:
            errors.append("%s: %s does not call %s" % (path, caller, callee))
    for fn in frameless:
        if fn not in funcs:
            errors.append("%s: no function %s" % (path, fn))
        elif any(re.match(r"mov\s+%rsp,%rbp$", i) for i in funcs[fn]):
            errors.append("%s: %s sets up a frame pointer" % (path, fn))
    return errors


def check_last_call(path, pairs):
    """Each (caller, callee): the caller's last instruction is its call of callee, so that the
    return address lies past the caller's end."""
    funcs = disassembly(path)
    errors = []
    for caller, callee in pairs:
        insns = [i for i in funcs.get(caller, []) if not re.match(r"(nop|xchg\s+%ax,%ax)", i)]
        if not insns or not re.match(r"^call\s+[0-9a-f]+ <%s>$" % re.escape(callee), insns[-1]):
            errors.append("%s: %s does not end with its call of %s: %s" % (
                path, caller, callee, insns[-1:] or "no such function"))
    return errors


def check_all_code(w):
    chains_calls = [("main", "m_a"), ("m_a", "m_b"), ("m_b", "m_c"), ("m_c", "m_d"),
                    ("m_d", "m_e"), ("t_entry", "t_a"), ("t_a", "t_b"), ("t_b", "t_c"),
                    ("t_c", "exp@plt"), ("t_c", "log@plt"), ("main", "q_a"), ("q_a", "q_b"),
                    ("q_b", "qsort@plt"), ("main", "r_top"), ("r_top", "rec"), ("rec", "rec"),
                    ("rec", "r_leaf"), ("main", "d_a"), ("d_a", "d_b"), ("d_b", "*"),
                    ("main", "s_a"), ("s_a", "s_b"), ("s_b", "s_c"), ("on_sig", "h_a"),
                    ("h_a", "h_b"), ("main", "n_a"), ("n_a", "n_b"), ("n_b", "n_die")]
    errors = check_code(w["chains"], chains_calls, sorted({f for c in chains_calls for f in c
                                                           if "@" not in f and f != "*"} |
                                                          {"m_e", "q_cmp", "h_b", "s_c"}))
    errors += check_last_call(w["chains"], [("n_a", "n_b"), ("n_b", "n_die")])
    errors += check_code(w["dlib"], [("lib_a", "lib_b"), ("lib_b", "lib_c")],
                         ["lib_a", "lib_b", "lib_c"])
    errors += check_code(w["child"], [("main", "k_a"), ("k_a", "k_b"), ("k_b", "k_c")],
                         ["main", "k_a", "k_b", "k_c"])
    errors += check_code(w["throw"], [("main", "c_a"), ("c_a", "c_b"), ("c_b", "c_c"),
                                      ("c_c", "__cxa_throw@plt")], ["main", "c_a", "c_b", "c_c"])
    return errors


# ---- naming frames ----------------------------------------------------------------------------------

class Namer:
    """User frames -> labels: a function name in one of the workload files, `file:function` in
    any other file (`file:?` when unnamed, `?` outside any mapping)."""

    def __init__(self, own_files):
        self.syms = pu.Symbols()
        self.own = {os.path.realpath(p) for p in own_files}
        self.cache = {}

    def label(self, fname, addr):
        key = (fname, addr)
        if key in self.cache:
            return self.cache[key]
        base = os.path.basename(fname)
        sf = self.syms.file(fname) if fname.startswith("/") else None
        # The address as the profile has it: sonde reports a caller's frame inside its call
        # (return address - 1), the leaf, an interrupted pc and a signal trampoline as they are.
        name = sf.at_offset(addr) if sf is not None else None
        if name:
            name = name.replace(" ", "_")  # labels are joined by spaces
        if not fname:
            lab = "?"
        elif os.path.realpath(fname) in self.own:
            lab = name or (base + "!?")  # no colon: not a frame of another file
        else:
            lab = "%s:%s" % (base, name or "?")
        self.cache[key] = lab
        return lab

    def labels(self, frames):
        return [self.label(fname, addr) for _k, fname, addr, _b in frames if _k == "u"]


def suffix_re(chain):
    """Regex for `chain` (leaf first) entered at any of its functions: any suffix of it."""
    rx = re.escape(chain[-1])
    for fn in reversed(chain[:-1]):
        rx = "(?:%s )?%s" % (re.escape(fn), rx)
    return rx


class Case:
    def __init__(self, name, known, complete, bar=0.99):
        self.name = name
        self.bar = bar              # share of known-leaf samples that must be complete
        self.known = known          # labels -> bool: the leaf is a known function
        self.complete = re.compile(complete)
        self.total = self.n_known = self.n_complete = 0
        self.bad = []

    def add(self, labels, n):
        self.total += n
        if not labels or not self.known(labels):
            return
        self.n_known += n
        text = " ".join(labels)
        if self.complete.match(text):
            self.n_complete += n
        elif len(self.bad) < 3:
            self.bad.append(text if len(text) < 600 else text[:300] + " ... " + text[-250:])

    def verdict(self, min_samples=MIN_SAMPLES):
        line = "%-22s %5d samples, %5d with a known leaf, %5d complete" % (
            self.name, self.total, self.n_known, self.n_complete)
        errs = []
        if self.n_known < min_samples:
            errs.append("%s: too few samples with a known leaf: %d (want >= %d)" % (
                self.name, self.n_known, min_samples))
        elif self.n_complete < self.bar * self.n_known:
            errs.append("%s: %d of %d samples with a known leaf carry the whole chain (%.1f%%, "
                        "want >= %g%%); e.g.\n      %s" % (
                            self.name, self.n_complete, self.n_known,
                            100.0 * self.n_complete / self.n_known, 100 * self.bar,
                            "\n      ".join(self.bad)))
        return line, errs


def in_file(label, *files):
    """The frame is in one of `files` (a soname prefix of the file name)."""
    base = label.split(":", 1)[0]
    return ":" in label and any(base == f or base.startswith(f + ".") for f in files)


# ---- the run ----------------------------------------------------------------------------------------

def write_ns_last_pid(value):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(value))


def reuse_pid(w):
    """Runs wl_chains, then wl_child with the same pid. Returns (pid, a, b) or raises."""
    a = subprocess.Popen([w["chains"], "chain", "1", "0.3"])
    pid = a.pid
    a.wait()
    assert a.returncode == 0
    for _attempt in range(200):
        write_ns_last_pid(pid - 1)
        b = subprocess.Popen([w["child"], "run", "1000", "300"])
        if b.pid == pid:
            return pid, a, b
        b.kill()
        b.wait()
    raise AssertionError("could not get pid %d again through ns_last_pid" % pid)


def main():
    pu.require_root_btf()
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="sonde-prof-workloads-")
    w = build(tmp)
    errors = check_all_code(w)
    assert not errors, "the workloads do not have the shape the test needs:\n  " + \
        "\n  ".join(errors)
    libc_syms = pu.SymFile(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"))
    assert libc_syms.range_of("start_thread") and libc_syms.range_of("__restore_rt"), \
        "libc without symbols: install libc6-dbg (scripts/deps.sh)"

    # Only this run's executables: the unwind-table space is shared by everything profiled, and
    # on a machine where other work starts big binaries (compilers, node) it can fill before
    # libstdc++ gets its rows (the test then measures table pressure, not the unwinder). Every
    # process, no selection, is bpf/ebpf_profiler's and the default pipeline's case.
    s = pu.Sonde(tmp, pu.free_port(), interval="1s", samples_per_second=HZ,
                 extra="    include:\n      executables: [\"%s/*\"]\n" % tmp)
    rc, out = s.validate()
    if rc != 0:
        if re.search(r"CAP_|kernel feature missing", out):
            pu.skip_or_fail("sonde validate: " + out.strip())
        raise AssertionError("sonde validate failed:\n" + out)

    # Started before sonde, and still running in its chain when sonde starts.
    pre = subprocess.Popen([w["chains"], "chain", str(SECONDS + 1), "0"])
    time.sleep(0.2)
    procs = {"pre": pre}
    try:
        s.start()
        evicted0 = s.metric("sonde_ebpf_profiler_processes_evicted_total") or 0
        procs["main"] = subprocess.Popen([w["chains"], "main", str(SECONDS + 1)])  # 2 threads
        procs["qsort"] = subprocess.Popen([w["chains"], "qsort", str(SECONDS)])
        procs["deep"] = subprocess.Popen([w["chains"], "deep", str(DEPTH), str(SECONDS)])
        procs["dlopen"] = subprocess.Popen([w["chains"], "dlopen", w["dlib"], str(SECONDS)])
        # Half in the handler, half interrupted: twice the samples of the others.
        procs["signal"] = subprocess.Popen([w["chains"], "signal", str(2 * SECONDS)])
        procs["throw"] = subprocess.Popen([w["throw"], "throw", str(SECONDS)])
        procs["noreturn"] = subprocess.Popen([w["chains"], "noreturn", str(SECONDS)])
        for name, p in procs.items():
            assert p.wait() == 0, "workload %s exited %d" % (name, p.returncode)
        phases = ["concurrent workloads %.1f s" % (time.time() - t_start)]
        procs["spawn"] = subprocess.Popen([w["chains"], "spawn", str(CHILDREN), str(CHILD_MS),
                                           w["child"]])
        assert procs["spawn"].wait() == 0, "spawn failed"
        phases.append("children %.1f s" % (time.time() - t_start))
        reuse, reuse_a, reuse_b = reuse_pid(w)
        assert reuse_b.wait() == 0
        phases.append("pid reuse %.1f s" % (time.time() - t_start))
        # Exited processes leave the table at the report after their exit. Other processes of
        # the machine come and go too, so wait (at most 15 s) until there were at least as many
        # evictions as our exited processes that were profiled, and no more processes are
        # tracked than are alive.
        ours = {p.pid for p in procs.values()} | {reuse}
        t_wait = time.time()
        while True:
            try:
                by_pid = pu.samples_by_pid(pu.load_profiles(s.out))
            except ValueError:  # a line being written
                time.sleep(0.2)
                continue
            kid_pids = {p for p, rows in by_pid.items() if any(
                pu.sample_attrs(d, smp).get("thread.name") == CHILD_COMM for _r, d, smp in rows)}
            profiled = len((ours | kid_pids) & set(by_pid)) + 1  # the reused pid: 2 processes
            evicted = s.metric("sonde_ebpf_profiler_processes_evicted_total") - evicted0
            tracked = s.metric("sonde_ebpf_profiler_processes")
            live = len([p for p in os.listdir("/proc") if p.isdigit()])
            if (evicted >= profiled and tracked <= live) or time.time() - t_wait > 15:
                break
            time.sleep(0.5)
        phases.append("evictions settled %.1f s" % (time.time() - t_start))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        s.stop()
    t_run = time.time() - t_start

    by_pid = pu.samples_by_pid(pu.load_profiles(s.out))
    assert by_pid, "no profiles written:\n" + s.log()
    assert s.proc.pid not in by_pid, "sonde profiled itself"
    namer = Namer(w.values())
    errors, report = [], []

    def run_case(case, pid, tid_filter=None, exe=None, min_samples=MIN_SAMPLES):
        rows = by_pid.get(pid, [])
        for ra, d, smp in rows:
            a = pu.sample_attrs(d, smp)
            if tid_filter and not tid_filter(int(a.get("thread.id", -1))):
                continue
            case.add(namer.labels(pu.sample_frames(d, smp)), int(smp["values"][0]))
        line, errs = case.verdict(min_samples)
        if exe and rows:
            # The program's own samples (by the thread name BPF records): those of the forked
            # test runner before its exec belong to python.
            comm = os.path.basename(exe)[:15]
            paths = {ra.get("process.executable.path") for ra, d, smp in rows
                     if pu.sample_attrs(d, smp).get("thread.name") == comm}
            if paths != {exe}:
                errs.append("%s: pid %d attributed to %s, want %s" % (case.name, pid, paths, exe))
        report.append(line)
        errors.extend(errs)
        return case

    chains = w["chains"]
    main_chain = ["m_e", "m_d", "m_c", "m_b", "m_a", "main"]
    main_known = lambda L: L[0] in main_chain[:-1]  # noqa: E731
    main_re = "^" + suffix_re(main_chain) + r"(?: |$)"
    pid = procs["main"].pid
    run_case(Case("main thread chain", main_known, main_re), pid, lambda t: t == pid, chains)
    t_chain = ["t_c", "t_b", "t_a", "t_entry"]
    run_case(Case("second thread via libm",
                  lambda L: L[0] in t_chain or in_file(L[0], LIBM),
                  r"^(?:(?:%s:\S+ )+%s|%s) %s:start_thread %s:clone3$" % (
                      re.escape(LIBM), " ".join(t_chain), suffix_re(t_chain), re.escape(LIBC),
                      re.escape(LIBC))),
             pid, lambda t: t != pid)
    run_case(Case("qsort callback", lambda L: L[0] in ("q_cmp", "q_b", "q_a"),
                  r"^(?:q_cmp (?:%s:\S+ )+q_b q_a main|%s)(?: |$)" % (
                      re.escape(LIBC), suffix_re(["q_b", "q_a", "main"]))),
             procs["qsort"].pid, exe=chains)
    run_case(Case("recursion x%d" % DEPTH, lambda L: L[0] == "r_leaf",
                  r"^r_leaf (?:rec ){%d}r_top main(?: |$)" % (DEPTH + 1)),
             procs["deep"].pid, exe=chains)
    run_case(Case("dlopen'd library",
                  lambda L: L[0] in ("lib_c", "lib_b", "lib_a", "d_b", "d_a"),
                  "^" + suffix_re(["lib_c", "lib_b", "lib_a", "d_b", "d_a", "main"]) +
                  r"(?: |$)"), procs["dlopen"].pid, exe=chains)
    run_case(Case("signal handler", lambda L: L[0] in ("h_b", "h_a", "on_sig"),
                  r"^%s %s:__restore_rt (?:(?:\[vdso\]|%s):\S+ )*(?:(?:cpu_now|clock_s) )*%s(?: |$)" % (
                      suffix_re(["h_b", "h_a", "on_sig"]), re.escape(LIBC), re.escape(LIBC),
                      suffix_re(["s_c", "s_b", "s_a", "main"]))),
             procs["signal"].pid, exe=chains)
    run_case(Case("signal: interrupted", lambda L: L[0] in ("s_c", "s_b", "s_a"),
                  "^" + suffix_re(["s_c", "s_b", "s_a", "main"]) + r"(?: |$)"),
             procs["signal"].pid)
    run_case(Case("noreturn last calls", lambda L: L[0] == "n_die",
                  r"^n_die n_b n_a main(?: |$)"), procs["noreturn"].pid, exe=chains)
    unwinder = ("libgcc_s.so.1", "libstdc++.so.6")  # libstdc++'s file is libstdc++.so.6.0.NN
    # Constructors run by ld.so before main (libgcc_s's __cpu_indicator_init) are not the
    # unwinder: their stacks end at _dl_start_user.
    run_case(Case("C++ throw: unwinder", lambda L: in_file(L[0], *unwinder) and not any(
        in_file(x, "ld-linux-x86-64.so.2") and x.endswith(":_dl_start_user") for x in L),
                  r"^(?:\S+:\S+ )+%s(?: |$)" % suffix_re(["c_c", "c_b", "c_a", "main"]),
                  # The one deviation from the 99% bar: libgcc's uw_install_context overwrites
                  # its own saved registers with the handler's and then jumps; no CFI describes
                  # those few instructions, so a sample there unwinds into the catching frame.
                  # perf record --call-graph dwarf gets 98.7% on the same workload; we see 97-99%.
                  bar=0.95),
             procs["throw"].pid, exe=w["throw"])
    run_case(Case("started before sonde", main_known, main_re), pre.pid, exe=chains)

    # Children: every sample whose thread name is the child's, whatever pid it was given.
    child_re = "^" + suffix_re(["k_c", "k_b", "k_a", "main"]) + r"(?: |$)"
    kids = Case("short-lived children", lambda L: L[0] in ("k_c", "k_b", "k_a"), child_re)
    kid_pids, misattributed = set(), {}
    for p, rows in by_pid.items():
        if p == reuse:
            continue
        for ra, d, smp in rows:
            if pu.sample_attrs(d, smp).get("thread.name") != CHILD_COMM:
                continue
            kid_pids.add(p)
            n = int(smp["values"][0])
            path = ra.get("process.executable.path")
            if path != w["child"]:
                misattributed[path] = misattributed.get(path, 0) + n
            kids.add(namer.labels(pu.sample_frames(d, smp)), n)
    line, errs = kids.verdict()
    report.append(line + "; %d children profiled" % len(kid_pids))
    errors.extend(errs)
    if misattributed:
        errors.append("short-lived children: samples attributed to %s instead of %s" % (
            misattributed, w["child"]))
    if len(kid_pids) < CHILDREN // 4:
        errors.append("short-lived children: only %d of %d profiled" % (len(kid_pids), CHILDREN))

    # pid reuse: the thread name (from BPF, per sample) says which program ran.
    want = {"wl_chains": (chains, main_chain), CHILD_COMM: (w["child"], ["k_c", "k_b", "k_a",
                                                                          "main"])}
    for comm, (exe, chain) in want.items():
        c = Case("pid reuse: %s" % comm, lambda L, ch=chain: L[0] in ch[:-1],
                 "^" + suffix_re(chain) + r"(?: |$)")
        wrong = {}
        for ra, d, smp in by_pid.get(reuse, []):
            if pu.sample_attrs(d, smp).get("thread.name") != comm:
                continue
            n = int(smp["values"][0])
            path = ra.get("process.executable.path")
            if path != exe:
                wrong[path] = wrong.get(path, 0) + n
            c.add(namer.labels(pu.sample_frames(d, smp)), n)
        line, errs = c.verdict(min_samples=20)
        report.append(line + ("; attributed elsewhere: %s" % wrong if wrong else ""))
        errors.extend(errs)
        if wrong:
            errors.append("pid reuse (pid %d): %s samples attributed to %s instead of %s" % (
                reuse, comm, wrong, exe))

    # Exit cleanup: each profiled workload process was evicted once it exited (a reused pid
    # counts twice), and the table holds no more processes than are alive.
    report.append("exit cleanup: %d of our processes profiled, %d evictions since start, %d "
                  "tracked at the end, %d alive" % (profiled, evicted, tracked, live))
    if evicted < profiled:
        errors.append("exit cleanup: %d evictions for %d exited processes" % (evicted, profiled))
    if tracked > live:
        errors.append("exit cleanup: %d processes tracked, %d alive" % (tracked, live))

    print("\n".join(report))
    print("run took %.1f s (%s), checks %.1f s" % (t_run, ", ".join(phases),
                                                   time.time() - t_start - t_run))
    if errors:
        notes = [ln for ln in s.log().splitlines() if " warn " in ln or " error " in ln]
        print("sonde's warnings:\n  " + "\n  ".join(notes or ["none"]))
        print("FAILED (output kept in %s):\n  %s" % (tmp, "\n  ".join(errors)))
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("OK")


if __name__ == "__main__":
    main()

"""The .eh_frame -> unwind table builder (receivers/ebpf_profiler/ehframe.c) against binutils'
readelf -wF, on the test workload, sonde itself and the system's libc, libm, libstdc++ and a few
stripped Debian binaries (built without frame pointers): for every FDE readelf prints, the two
tables must agree (CFA rule, saved rbp, return address) at every address where either changes.
Also the builder's time for the largest file (the issue's budget: < 50 ms for a 2 MB binary).

Usage: test_ehframe.py EHFRAME_DUMP ELF... (system libraries are added when present)
"""
import bisect
import os
import re
import subprocess
import sys

SYSTEM = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6",
          "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/bin/bash", "/usr/bin/ls",
          "/usr/bin/python3"]

FDE = re.compile(r"^[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.([0-9a-f]+)")


def norm_cfa(s):
    if re.fullmatch(r"(rsp|rbp)\+\d+", s):
        return s
    return "exp" if s == "exp" else "other"


def norm_reg(s):
    if s in ("u", "s"):
        return "u"
    m = re.fullmatch(r"c([+-]\d+)", s)
    if m:
        return "c%+d" % int(m.group(1))
    return "x"


def readelf_fdes(path):
    """[(start, end, [(loc, cfa, rbp, ra)])] for the FDEs readelf prints rows for."""
    out = subprocess.run(["readelf", "-wF", path], capture_output=True, text=True).stdout
    fdes, cur, cols = [], None, None
    for line in out.splitlines():
        m = FDE.match(line)
        if m:
            cur = (int(m.group(1), 16), int(m.group(2), 16), [])
            fdes.append(cur)
            cols = None
            continue
        if " CIE " in line or " ZERO terminator" in line:
            cur = None  # a CIE's own table is not an FDE's
        if cur is None:
            continue
        if line.strip().startswith("LOC"):
            cols = line.split()[2:]
            continue
        parts = re.sub(r"(r\d+) \([^)]*\)", r"\1", line).split()  # "r9 (r9)": one rule
        if cols is not None and len(parts) == 2 + len(cols) and re.fullmatch(r"[0-9a-f]{8,16}",
                                                                              parts[0]):
            regs = dict(zip(cols, parts[2:]))
            cur[2].append((int(parts[0], 16), norm_cfa(parts[1]), norm_reg(regs.get("rbp", "u")),
                           norm_reg(regs.get("ra", "u"))))
        elif not line.strip():
            cols = None
    return [f for f in fdes if f[2] and f[1] > f[0]]


def dump(tool, path):
    r = subprocess.run([tool, path], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("%s failed on %s: %s" % (tool, path, r.stderr))
    pcs, rows = [], []
    for line in r.stdout.splitlines():
        pc, cfa, rbp, ra = line.split()
        pcs.append(int(pc, 16))
        rows.append((cfa, rbp, ra))
    return pcs, rows, r.stderr.strip()


def main():
    tool = sys.argv[1]
    files = sys.argv[2:] + [f for f in SYSTEM if os.path.exists(f)]
    try:
        subprocess.run(["readelf", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        print("SKIP: readelf (binutils) not installed")
        sys.exit(77)
    slowest = (0.0, 0, "")
    for path in files:
        path = os.path.realpath(path)
        pcs, rows, info = dump(tool, path)
        print(info)
        m = re.search(r"(\d+) bytes.* in ([\d.]+) ms", info)
        if m and float(m.group(2)) > slowest[0]:
            slowest = (float(m.group(2)), int(m.group(1)), path)
        checked = 0
        bad = []

        def mine(pc):
            i = bisect.bisect_right(pcs, pc) - 1
            return rows[i] if i >= 0 else ("none", "u", "u")

        for start, end, ref in readelf_fdes(path):
            locs = [r[0] for r in ref]

            def theirs(pc):
                i = bisect.bisect_right(locs, pc) - 1
                return ref[i][1:] if i >= 0 else None

            points = set(locs)
            lo = bisect.bisect_left(pcs, start)
            hi = bisect.bisect_left(pcs, end)
            points.update(pcs[lo:hi])
            for pc in sorted(points):
                if not start <= pc < end or theirs(pc) is None:
                    continue
                checked += 1
                if mine(pc) != theirs(pc) and len(bad) < 5:
                    bad.append("%x: ours %s, readelf %s" % (pc, mine(pc), theirs(pc)))
        # The two CFA expressions the walker follows: gcc's PLT stubs (every dynamically linked
        # file here has a .plt FDE) and glibc's signal trampoline __restore_rt.
        m = re.search(r"(\d+) PLT, (\d+) signal", info)
        assert m, info
        if path == os.path.realpath(sys.argv[2]):
            assert int(m.group(1)) >= 1, "no PLT row recognised in %s" % path
        if os.path.basename(path) == "libc.so.6":
            assert int(m.group(2)) >= 1, "__restore_rt's signal frame not recognised in libc"
        print("  %d addresses compared" % checked)
        assert checked > 0, "nothing compared in %s" % path
        assert not bad, "%s differs from readelf:\n  %s" % (path, "\n  ".join(bad))
    ms, size, path = slowest
    print("slowest: %s (%.1f MB) in %.2f ms" % (path, size / 1e6, ms))
    assert ms < 50 * max(1.0, size / 2e6), "too slow: %.2f ms for %d bytes" % (ms, size)
    print("OK")


if __name__ == "__main__":
    main()

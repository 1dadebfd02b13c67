"""symbolizer: OTLP/HTTP JSON profiles -> symbolizer -> file, against binaries built here.

Binaries (gcc/g++ -O2 -g), their addresses taken from nm and binutils' addr2line (not our code):
  full      C with a static inline function inlined into leaf_work: the location inside it gets two
            lines, inner_step then leaf_work, with the lines addr2line -i gives;
  bid       stripped, debug file only under <debug_dirs>/.build-id/xx/rest.debug;
  link      stripped with .gnu_debuglink, debug file under <debug_dirs>/<its directory>/;
  bare      strip --strip-all: the address stays an address (no lines);
  cxx       C++ namespaces and a template: demangled name, mangled system name;
  container a copy only reachable as <proc_root>/<pid>/root/opt/app/prog (process.pid);
plus a kernel address from /proc/kallsyms (root only) and a JIT symbol from /tmp/perf-<pid>.map
for a pid that does not exist, an address past the mapped segments and a wrong build id (both stay
addresses).
"""
import json
import os
import random
import re
import shutil
import subprocess
import time
import urllib.request

import harness

C_SRC = r"""
#include <stdio.h>
#include <stdlib.h>
static inline __attribute__((always_inline)) int inner_step(int x) {
  int y = x * 3 + (x >> 2);
  return y ^ (y << 1);
}
__attribute__((noinline)) int leaf_work(int n) {
  int s = 0;
  for (int i = 0; i < n; i++) s += inner_step(i ^ s);
  return s;
}
__attribute__((noinline)) int middle_call(int n) { return leaf_work(n) + VARIANT; }
__attribute__((noinline)) int outer_entry(int n) { return middle_call(n) * 2; }
int main(int argc, char **argv) {
  (void)argv;
  printf("%d\n", outer_entry(argc * 1000));
  return 0;
}
"""

CXX_SRC = r"""
#include <cstdio>
namespace shop {
namespace cart {
template <typename T> struct Basket {
  T items[8];
  __attribute__((noinline)) T total(int n) {
    T s = 0;
    for (int i = 0; i < n; i++) s += items[i & 7] * i;
    return s;
  }
};
}  // namespace cart
}  // namespace shop
int main(int argc, char **) {
  shop::cart::Basket<long> b{};
  std::printf("%ld\n", b.total(argc * 100));
  return 0;
}
"""

BID_ATTR = "process.executable.build_id.gnu"


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          **kw).stdout.decode()


def build_id(path):
    m = re.search(r"Build ID: ([0-9a-f]+)", sh("readelf", "-n", path))
    return m.group(1)


def symbols(path):
    """name -> (address, size) of the function symbols (nm -S)."""
    out = {}
    for line in sh("nm", "-S", "--defined-only", path).splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW":
            out[p[3]] = (int(p[0], 16), int(p[1], 16))
    return out


def vaddr_to_offset(path, vaddr):
    for line in sh("readelf", "-lW", path).splitlines():
        p = line.split()
        if p and p[0] == "LOAD":
            off, va, fsz = int(p[1], 16), int(p[2], 16), int(p[4], 16)
            if va <= vaddr < va + fsz:
                return vaddr - va + off
    raise AssertionError("0x%x in no PT_LOAD of %s" % (vaddr, path))


def addr2line(path, vaddr):
    """[(function, line)] innermost first, as binutils sees it."""
    out = sh("addr2line", "-i", "-f", "-e", path, "0x%x" % vaddr).splitlines()
    frames = []
    for fn, loc in zip(out[0::2], out[1::2]):
        m = re.search(r":(\d+)", loc)
        frames.append((fn, int(m.group(1)) if m else 0))
    return frames


def inlined_address(path):
    """An address of leaf_work that addr2line shows inside the inlined inner_step."""
    a, size = symbols(path)["leaf_work"]
    for va in range(a, a + size):
        fr = addr2line(path, va)
        if len(fr) == 2 and fr[0][0] == "inner_step" and fr[1][0] == "leaf_work":
            return va, fr
    raise AssertionError("no inlined inner_step in leaf_work")


def compile_c(tmp, name, variant, extra=()):
    src = os.path.join(tmp, "prog.c")
    with open(src, "w") as f:
        f.write(C_SRC)
    out = os.path.join(tmp, name)
    sh("gcc", "-O2", "-g", "-DVARIANT=%d" % variant, "-Wl,--build-id", "-o", out, src, *extra)
    return out


class Profile:
    """An OTLP profiles request with one location per (mapping, address)."""

    def __init__(self):
        self.strings = [""]
        self.mappings = [{}]
        self.locations = [{}]
        self.attrs = [{}]
        self.resources = []  # (attrs, [location index])

    def s(self, text):
        if text not in self.strings:
            self.strings.append(text)
        return self.strings.index(text)

    def mapping(self, filename, bid=None, start=0, limit=0, offset=0):
        m = {"filenameStrindex": self.s(filename), "memoryStart": str(start),
             "memoryLimit": str(limit), "fileOffset": str(offset)}
        if bid:
            self.attrs.append({"keyStrindex": self.s(BID_ATTR), "value": {"stringValue": bid}})
            m["attributeIndices"] = [len(self.attrs) - 1]
        self.mappings.append(m)
        return len(self.mappings) - 1

    def location(self, mapping, address):
        self.locations.append({"mappingIndex": mapping, "address": str(address)})
        return len(self.locations) - 1

    def body(self):
        stacks = [{}]
        rps = []
        for attrs, locs in self.resources:
            samples = []
            for li in locs:
                stacks.append({"locationIndices": [li]})
                samples.append({"stackIndex": len(stacks) - 1, "values": ["1"]})
            rps.append({"resource": {"attributes": [
                {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else
                 {"stringValue": v}} for k, v in attrs.items()]},
                "scopeProfiles": [{"profiles": [{"samples": samples, "timeUnixNano": "1"}]}]})
        return {"resourceProfiles": rps, "dictionary": {
            "mappingTable": self.mappings, "locationTable": self.locations,
            "stringTable": self.strings, "attributeTable": self.attrs, "stackTable": stacks}}


def post(port, body):
    data = json.dumps(body).encode()
    deadline = time.time() + 10
    while True:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d/v1development/profiles" % port,
                                         data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200, r.status
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def wait_json(path, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            lines = [l for l in open(path, "rb").read().split(b"\n") if l]
            if lines:
                return json.loads(lines[0])
        time.sleep(0.05)
    raise AssertionError("nothing in %s" % path)


def frames_of(req):
    """location index -> [(name, system name, file, line)] from the exported dictionary."""
    d = req["dictionary"]
    st = d["stringTable"]
    fns = d.get("functionTable", [])
    out = {}
    for i, loc in enumerate(d["locationTable"]):
        fr = []
        for ln in loc.get("lines", []):
            f = fns[ln.get("functionIndex", 0)]
            fr.append((st[f.get("nameStrindex", 0)], st[f.get("systemNameStrindex", 0)],
                       st[f.get("filenameStrindex", 0)], int(ln.get("line", 0))))
        out[i] = fr
    return out


def test():
    hport = harness.free_port()
    s = harness.Sonde("", "symbolizer")
    tmp = s.tmp
    debug = os.path.join(tmp, "debug")
    prof = Profile()
    expect = {}  # location index -> [names] innermost first, or [] for "stays an address"
    expect_lines = {}

    # full debug info, opened through /proc/<our pid>/root (same mount namespace)
    full = compile_c(tmp, "full", 1)
    fbid = build_id(full)
    m = prof.mapping(full, fbid)
    va, a2l = inlined_address(full)
    li = prof.location(m, vaddr_to_offset(full, va))
    expect[li] = ["inner_step", "leaf_work"]
    expect_lines[li] = [ln for _, ln in a2l]
    syms = symbols(full)
    for fn in ("middle_call", "outer_entry", "main"):
        a = syms[fn][0]
        expect[prof.location(m, vaddr_to_offset(full, a + 1))] = [fn]
    # past every PT_LOAD: no name
    expect[prof.location(m, os.path.getsize(full) + 4096)] = []
    # the right path with a wrong build id: no name
    mw = prof.mapping(full, "00" * 20)
    expect[prof.location(mw, vaddr_to_offset(full, syms["middle_call"][0] + 1))] = []
    own = [li for li in expect]

    # stripped, debug file by build id
    bid = compile_c(tmp, "bid", 2)
    bbid = build_id(bid)
    bsyms = symbols(bid)
    dst = os.path.join(debug, ".build-id", bbid[:2], bbid[2:] + ".debug")
    os.makedirs(os.path.dirname(dst))
    sh("objcopy", "--only-keep-debug", bid, dst)
    sh("objcopy", "--strip-all", bid)
    assert not symbols(bid), "strip left symbols"
    mb = prof.mapping(bid, bbid)
    expect[prof.location(mb, vaddr_to_offset(bid, bsyms["outer_entry"][0] + 1))] = ["outer_entry"]

    # stripped with .gnu_debuglink; the debug file under <debug dir>/<directory of the binary>/
    link = compile_c(tmp, "link", 3)
    lsyms = symbols(link)
    dbg = os.path.join(tmp, "link.debug")
    sh("objcopy", "--only-keep-debug", link, dbg)
    sh("objcopy", "--strip-all", link)
    os.chdir(tmp)
    sh("objcopy", "--add-gnu-debuglink=link.debug", link)
    ldir = debug + tmp
    os.makedirs(ldir, exist_ok=True)
    shutil.move(dbg, os.path.join(ldir, "link.debug"))
    ml = prof.mapping(link, build_id(link))
    va, a2l = inlined_address_from(link, lsyms, os.path.join(ldir, "link.debug"))
    li = prof.location(ml, vaddr_to_offset(link, va))
    expect[li] = ["inner_step", "leaf_work"]

    # stripped, no debug anywhere: addresses stay addresses
    bare = compile_c(tmp, "bare", 4)
    bsy = symbols(bare)
    sh("objcopy", "--strip-all", bare)
    mn = prof.mapping(bare, build_id(bare))
    expect[prof.location(mn, vaddr_to_offset(bare, bsy["middle_call"][0] + 1))] = []

    # C++
    src = os.path.join(tmp, "prog.cc")
    with open(src, "w") as f:
        f.write(CXX_SRC)
    cxx = os.path.join(tmp, "cxx")
    sh("g++", "-O2", "-g", "-o", cxx, src)
    csyms = symbols(cxx)
    mangled = [n for n in csyms if "Basket" in n and "total" in n][0]
    mc = prof.mapping(cxx, build_id(cxx))
    cli = prof.location(mc, vaddr_to_offset(cxx, csyms[mangled][0] + 1))
    expect[cli] = ["shop::cart::Basket<long>::total(int)"]

    # a "container": the file only exists under <proc_root>/4242/root
    proc = os.path.join(tmp, "proc")
    croot = os.path.join(proc, "4242", "root", "opt", "app")
    os.makedirs(croot)
    cont = compile_c(tmp, "cont", 5)
    csy = symbols(cont)
    shutil.copy(cont, os.path.join(croot, "prog"))
    mco = prof.mapping("/opt/app/prog", build_id(cont))
    ctn = [prof.location(mco, vaddr_to_offset(cont, csy["middle_call"][0] + 1))]
    expect[ctn[0]] = ["middle_call"]

    # JIT: perf map of a pid that does not exist (proc_root has no such pid, so /tmp is read)
    pid = random.randint(3000000, 4000000)
    pmap = "/tmp/perf-%d.map" % pid
    with open(pmap, "w") as f:
        f.write("7f0000001000 100 LazyCompile:*hotLoop /app/server.js:10\n")
        f.write("7f0000002000 40 Builtin:ArrayPush\n")
    mj = prof.mapping("[anon]", None, 0x7f0000000000, 0x7f0000100000, 0)
    jit = [prof.location(mj, 0x1010), prof.location(mj, 0x2010), prof.location(mj, 0x3000)]
    expect[jit[0]] = ["LazyCompile:*hotLoop /app/server.js:10"]
    expect[jit[1]] = ["Builtin:ArrayPush"]
    expect[jit[2]] = []

    # kernel
    kern = []
    ksyms = []
    with open("/proc/kallsyms") as f:
        for line in f:
            p = line.split()
            if int(p[0], 16) and p[1] in "tT":
                ksyms.append((int(p[0], 16), p[2], p[3] if len(p) > 3 else None))
    if ksyms:
        ksyms.sort()
        mk = prof.mapping("[kernel.kallsyms]", None, 0, 2**64 - 1, 0)
        picks = {}
        for i in range(len(ksyms) - 1):
            a, n, mod = ksyms[i]
            if ksyms[i + 1][0] > a + 1 and ksyms[i - 1][0] < a and n in ("schedule", "do_idle",
                                                                         "vfs_read"):
                picks[n] = a
            if mod and "mod" not in picks and ksyms[i + 1][0] > a + 1 and ksyms[i - 1][0] < a:
                picks["mod"] = (a, n, mod)
        for n, a in picks.items():
            if n == "mod":
                a, n, _ = a
            li = prof.location(mk, a + 1)
            kern.append(li)
            expect[li] = [n]
    else:
        print("kernel: /proc/kallsyms shows no addresses (not root); kernel case skipped")

    prof.resources.append(({"service.name": "symtest", "process.pid": os.getpid()}, own))
    others = [li for li in expect if li not in own and li not in ctn and li not in jit]
    prof.resources.append(({"service.name": "other"}, others))
    prof.resources.append(({"service.name": "boxed", "process.pid": 4242}, ctn))
    prof.resources.append(({"service.name": "jit", "process.pid": pid}, jit))

    cfg = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
processors:
  symbolizer:
    debug_dirs: ["%s"]
    proc_root: "%s"
exporters:
  file: {path: "@TMP@/profiles.json", flush_interval: 10ms}
service:
  pipelines:
    profiles: {receivers: [otlp], processors: [symbolizer], exporters: [file]}
""" % (hport, debug, proc)
    with open(s.config, "w") as f:
        f.write(cfg.replace("@TMP@", tmp))
    s.start()
    try:
        post(hport, prof.body())
        req = wait_json(s.path("profiles.json"))
    finally:
        os.unlink(pmap)
    s.stop_ok()
    got = frames_of(req)
    for li, names in expect.items():
        have = [f[0] for f in got[li]]
        assert have == names, "location %d: want %s, got %s" % (li, names, got[li])
    for li, lines in expect_lines.items():
        assert [f[3] for f in got[li]] == lines, "lines %s vs addr2line %s" % (got[li], lines)
        assert got[li][0][2].endswith("prog.c"), got[li]
    assert got[cli][0][1] == mangled, got[cli]
    # names reused: one function per distinct (name, system name, file)
    fns = [(f.get("nameStrindex", 0), f.get("systemNameStrindex", 0), f.get("filenameStrindex", 0))
           for f in req["dictionary"]["functionTable"]]
    assert len(fns) == len(set(fns)), fns
    assert req["dictionary"]["stringTable"][0] == ""
    print("symbolized %d locations (%d kernel), %d left as addresses" %
          (sum(1 for v in expect.values() if v), len(kern),
           sum(1 for v in expect.values() if not v)))


def inlined_address_from(binary, syms, debugfile):
    """inlined_address for a stripped binary: addr2line reads the debug file."""
    a, size = syms["leaf_work"]
    for va in range(a, a + size):
        fr = addr2line(debugfile, va)
        if len(fr) == 2 and fr[0][0] == "inner_step":
            return va, fr
    raise AssertionError("no inlined inner_step in %s" % binary)


if __name__ == "__main__":
    harness.main(test)

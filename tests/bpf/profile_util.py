"""Shared helpers of the BPF tests (ebpf_profiler and ebpf_http): run the real sonde (SondeProcess;
Sonde: ebpf_profiler -> file exporter, OTLP-JSON), decode what it wrote, and map locations
(mapping file + normalized file offset) to functions by ELF symbol tables. Python standard library and binutils (nm) only: nothing of
sonde's own code reads the profile back.
"""
import bisect
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request

# The e2e harness's entry point and free_port serve these tests too.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import free_port  # noqa: E402,F401  (re-exported to the BPF tests)
from harness import main as run_main  # noqa: E402,F401

SKIP = 77


def skip_or_fail(why):
    if os.environ.get("SONDE_REQUIRE_BPF") == "1":
        sys.exit("FAIL (SONDE_REQUIRE_BPF=1): " + why)
    print("SKIP: " + why)
    sys.exit(SKIP)



def wait_for(cond, timeout, what):
    """cond()'s first true value, polled every 0.2 s; AssertionError after timeout seconds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))



def require_root_btf():
    """Skips (fails with SONDE_REQUIRE_BPF=1) unless root on a kernel with BTF (the profiler)."""
    if os.geteuid() != 0:
        skip_or_fail("needs root (CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN)")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        skip_or_fail("kernel without BTF (/sys/kernel/btf/vmlinux)")


def build_dir():
    d = os.environ.get("SONDE_BUILD_DIR")
    if not d:
        sys.exit("SONDE_BUILD_DIR is not set (run through ctest)")
    return d


# ---- ELF ------------------------------------------------------------------------------------------

def elf_info(path):
    """(PT_LOAD segments [(offset, vaddr, filesz)], GNU build id hex or None)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "64-bit ELF expected: " + path
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    loads, build_id = [], None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            loads.append((p_offset, p_vaddr, p_filesz))
        elif p_type == 4:  # PT_NOTE
            off = p_offset
            while off + 12 <= p_offset + p_filesz:
                namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                name = data[off + 12: off + 12 + namesz]
                desc_off = off + 12 + ((namesz + 3) & ~3)
                if ntype == 3 and name == b"GNU\x00":
                    build_id = data[desc_off: desc_off + descsz].hex()
                off = desc_off + ((descsz + 3) & ~3)
    return loads, build_id


def offset_to_vaddr(loads, off):
    for p_offset, p_vaddr, p_filesz in loads:
        if p_offset <= off < p_offset + p_filesz:
            return off - p_offset + p_vaddr
    return None


def _nm(args, path):
    r = subprocess.run(["nm"] + args + [path], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def plain_name(name):
    """`c_c(unsigned long) [clone .cold]` -> `c_c`; `f.cold` -> `f`: a function's split-off parts
    are the function."""
    name = name.split(" [clone")[0]
    if "@" in name and not name.endswith("@plt"):  # .dynsym: foo@@GLIBC_2.2.5
        name = name[: name.index("@")]
    if "(" in name and not name.startswith("("):
        name = name[:name.index("(")]
    for suffix in (".cold",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


class SymFile:
    """Function ranges of one ELF file: its .symtab, else the .symtab of its separate debug file
    (/usr/lib/debug/.build-id/xx/yyyy.debug, e.g. Debian's libc6-dbg), else its .dynsym. A symbol
    without a size (assembly entry points such as __restore_rt) extends to the next symbol."""

    def __init__(self, path):
        self.path = path
        self.loads, self.build_id = elf_info(path)
        text = _nm(["-S", "--defined-only", "-C"], path)
        if not text.strip() and self.build_id:
            dbg = "/usr/lib/debug/.build-id/%s/%s.debug" % (self.build_id[:2], self.build_id[2:])
            if os.path.exists(dbg):
                text = _nm(["-S", "--defined-only", "-C"], dbg)
        if not text.strip():
            text = _nm(["-D", "-S", "--defined-only", "-C"], path)
        rows = []
        for line in text.splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and len(parts[2]) == 1 and parts[2] in "tTwWiI":
                rows.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
            elif len(parts) >= 3 and len(parts[1]) == 1 and parts[1] in "tTwWiI":
                rows.append((int(parts[0], 16), 0, line.split(None, 2)[2]))
        rows.sort()
        self.syms = []  # (start, end, name)
        for i, (start, size, name) in enumerate(rows):
            if size == 0:
                nxt = [s for s, _z, _n in rows[i + 1:] if s > start]
                size = (nxt[0] - start) if nxt else 16
            self.syms.append((start, start + size, plain_name(name)))
        self.lows = [lo for lo, _hi, _n in self.syms]
        self.starts = {}
        for start, _end, name in self.syms:
            self.starts.setdefault(start, name)

    def at_vaddr(self, va):
        i = bisect.bisect_right(self.lows, va)
        # The nearest starts below va first; a few steps back cover aliases and nested symbols.
        for lo, hi, name in reversed(self.syms[max(0, i - 8):i]):
            if lo <= va < hi:
                return name
        return None

    def at_offset(self, off):
        va = offset_to_vaddr(self.loads, off)
        return None if va is None else self.at_vaddr(va)

    def range_of(self, name):
        """[(lo, hi)] of the symbols named `name` (split parts included)."""
        return [(lo, hi) for lo, hi, n in self.syms if n == name]


class Symbols:
    """Caches SymFile per path; names a user frame."""

    def __init__(self):
        self.files = {}

    def file(self, path):
        if path not in self.files:
            try:
                self.files[path] = SymFile(path) if path.startswith("/") else None
            except (OSError, AssertionError):
                self.files[path] = None
        return self.files[path]


# ---- profile decoding -------------------------------------------------------------------------------

def attrs_of(kvs):
    """OTLP-JSON key-values as {key: value}, intValue as an int."""
    out = {}
    for kv in kvs or []:
        v = kv.get("value", {})
        for k in ("stringValue", "intValue", "boolValue", "doubleValue"):
            if k in v:
                out[kv["key"]] = int(v[k]) if k == "intValue" else v[k]
    return out


def load_profiles(path):
    """Every ResourceProfiles of every request, each with its request's dictionary."""
    res = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            req = json.loads(line)
            d = req.get("dictionary", {})
            for rp in req.get("resourceProfiles", []):
                res.append((d, rp))
    return res


def samples_by_pid(profiles):
    """{pid: [(resource attributes, dictionary, sample)]} over every profile."""
    out = {}
    for d, rp in profiles:
        ra = attrs_of(rp.get("resource", {}).get("attributes"))
        pid = int(ra.get("process.pid", -1))
        for sp in rp.get("scopeProfiles", []):
            for prof in sp.get("profiles", []):
                for smp in prof.get("samples", []):
                    out.setdefault(pid, []).append((ra, d, smp))
    return out


def sample_frames(d, sample):
    """[(kind, mapping filename, address, build id)] leaf first; kind 'k' or 'u'."""
    strings = d.get("stringTable", [])
    maps = d.get("mappingTable", [])
    locs = d.get("locationTable", [])
    stacks = d.get("stackTable", [])
    attrs = d.get("attributeTable", [])
    stack = stacks[sample.get("stackIndex", 0)]
    frames = []
    for li in stack.get("locationIndices", []):
        loc = locs[li]
        m = maps[loc.get("mappingIndex", 0)]
        fname = strings[m.get("filenameStrindex", 0)]
        bid = None
        for ai in m.get("attributeIndices", []):
            a = attrs[ai]
            if strings[a.get("keyStrindex", 0)] == "process.executable.build_id.gnu":
                bid = a["value"]["stringValue"]
        kind = "k" if fname == "[kernel.kallsyms]" else "u"
        frames.append((kind, fname, int(loc.get("address", "0")), bid))
    return frames


def sample_attrs(d, sample):
    strings = d.get("stringTable", [])
    table = d.get("attributeTable", [])
    out = {}
    for ai in sample.get("attributeIndices", []):
        a = table[ai]
        v = a.get("value", {})
        out[strings[a.get("keyStrindex", 0)]] = v.get("stringValue", v.get("intValue"))
    return out


# ---- sonde ----------------------------------------------------------------------------------------

class SondeProcess:
    """The real sonde on a configuration the test writes, its self-metrics on localhost:port."""

    ready = "ready in"  # the log line that says it runs
    absent = None       # what metric() returns for a series sonde does not show

    def __init__(self, tmp, port, config):
        self.tmp = tmp
        self.port = port
        self.config = os.path.join(tmp, "config.yaml")
        with open(self.config, "w") as f:
            f.write(config)
        self.bin = os.path.join(build_dir(), "bin", "sonde")
        self.log_path = os.path.join(tmp, "sonde.log")
        self.proc = None

    def validate(self):
        r = subprocess.run([self.bin, "validate", "--config", self.config], capture_output=True,
                           text=True)
        return r.returncode, r.stdout + r.stderr

    def start(self, timeout=20):
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.bin, "--config", self.config], stdout=self.log_file,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.ready in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("sonde did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metric(self, name):
        """The sum of the series of self-metric `name` (every label set)."""
        with urllib.request.urlopen("http://localhost:%d/metrics" % self.port, timeout=5) as r:
            body = r.read().decode()
        total = None
        for line in body.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return self.absent if total is None else total

    def wait_settled(self, name, quiet=2.5, limit=20):
        """Waits until metric `name` has not moved for `quiet` seconds (at most `limit`)."""
        t0 = time.time()
        last, since = self.metric(name), time.time()
        while time.time() - t0 < limit:
            time.sleep(0.25)
            now = self.metric(name)
            if now != last:
                last, since = now, time.time()
            elif time.time() - since >= quiet:
                break
        return last

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("sonde did not stop on SIGTERM:\n" + self.log())
        self.log_file.close()
        if self.proc.returncode != 0:
            raise AssertionError("sonde exited %d:\n%s" % (self.proc.returncode, self.log()))


class Sonde(SondeProcess):
    """sonde with ebpf_profiler -> file (OTLP-JSON); extra: more ebpf_profiler options (YAML lines
    indented by 4)."""

    ready = "sampling"

    def __init__(self, tmp, port, interval="1s", samples_per_second=19, extra=""):
        self.out = os.path.join(tmp, "profiles.json")
        super().__init__(tmp, port, """receivers:
  ebpf_profiler:
    reporter_interval: %s
    samples_per_second: %d
%sexporters:
  file:
    path: %s
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      address: localhost:%d
  pipelines:
    profiles:
      receivers: [ebpf_profiler]
      exporters: [file]
""" % (interval, samples_per_second, extra, self.out, port))

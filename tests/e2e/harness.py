"""Runs the real sonde binary on a config for an end-to-end test."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def build_dir():
    d = os.environ.get("SONDE_BUILD_DIR")
    if not d:
        sys.exit("SONDE_BUILD_DIR is not set (run through ctest)")
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def telemetry(port):
    """A service::telemetry section with self-metrics on port (tests run in parallel)."""
    return "  telemetry:\n    metrics:\n      address: localhost:%d\n" % port


class Sonde:
    def __init__(self, config, name="sonde"):
        self.tmp = tempfile.mkdtemp(prefix="sonde-e2e-%s-" % name)
        self.config = os.path.join(self.tmp, "config.yaml")
        with open(self.config, "w") as f:
            f.write(config.replace("@TMP@", self.tmp))
        self.log_path = os.path.join(self.tmp, "sonde.log")
        self.proc = None

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self):
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([os.path.join(build_dir(), "bin", "sonde"), "--config",
                                      self.config], stdout=self.log_file, stderr=subprocess.STDOUT)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.log()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no %r in the log after %ss:\n%s" % (pattern, timeout, self.log()))

    def stop(self, timeout=30):
        """SIGTERM, then the exit code; the service must drain and exit by itself."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("sonde did not exit %ss after SIGTERM:\n%s" % (timeout, self.log()))
        self.log_file.close()
        return rc

    def stop_ok(self):
        rc = self.stop()
        assert rc == 0, "sonde exited with %d:\n%s" % (rc, self.log())


def run_cli(*args):
    p = subprocess.run([os.path.join(build_dir(), "bin", "sonde")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p.returncode, p.stdout.decode(errors="replace")


def http_get(url, timeout=5):
    """(status, body) also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_value(text, name, default=None):
    """Sum of the samples of one metric in Prometheus text format."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else default


def main(fn):
    try:
        fn()
    except AssertionError as e:
        print("FAIL:", e)
        sys.exit(1)
    print("PASS")

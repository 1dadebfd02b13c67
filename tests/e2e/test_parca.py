"""parca exporter: OTLP/HTTP JSON profiles -> symbolizer -> parca -> a Parca stand-in in Node
(tests/e2e/node/parca_reference.mjs): @grpc/grpc-js serving ProfileStoreService/WriteRaw,
decoding with the generated code of npm @parca/client (Parca's schema) and the pprof with
pprof-format, which also checks Parca's normalizer rules (string 0 empty, ids = position + 1, one
value per sample type).

Profiles as in test_pyroscope (a real C binary symbolized by sonde, two services).
Cases: h2c with bearer_token_file (read again for the next request), labels and metadata; TLS
verified with a self-signed CA and bearer_token; a token file that appears late (retried until
then); UNAVAILABLE retried until accepted; INVALID_ARGUMENT dropped, not retried.
"""
import os
import shutil
import time

import harness
import test_pyroscope as tp

ts = tp.ts


def series_by_service(rec):
    """Series by pod (checkout) or service (cart_api)."""
    out = {}
    for s in rec["series"]:
        labels = dict(s["labels"])
        out[labels.get("k8s_pod_name", labels["service_name"])] = s
    return out


def case_h2c(tmp, body, t_ns):
    tok = os.path.join(tmp, "token")
    with open(tok, "w") as f:
        f.write("tok-1\n")
    ref = tp.Reference(tmp, "parca_reference.mjs")
    try:
        s = tp.run_sonde("parca-h2c", """
parca:
  endpoint: 127.0.0.1:%d
  insecure: true
  bearer_token_file: "%s"
  headers: {x-extra: "yes"}
  labels: {env: prod}
""" % (ref.port, tok), exporter="parca")
        ts.post(s.hport, body)
        recs = ref.wait(1, what="first WriteRaw")
        with open(tok, "w") as f:
            f.write("tok-2")
        ts.post(s.hport, body)
        recs = ref.wait(2, what="second WriteRaw")
        sent = tp.wait_metric(s, "sonde_exporter_parca_series_total", 6)
        s.stop_ok()
    finally:
        ref.stop()
    r = recs[0]
    assert "error" not in r, r
    assert r["authorization"] == "Bearer tok-1", r
    assert recs[1]["authorization"] == "Bearer tok-2", recs[1]  # the file is read again
    assert r["extra"] == "yes" and r["userAgent"].startswith("sonde-parca-exporter/"), r
    assert r["normalized"] is False and r["tenant"] == "", r
    by = series_by_service(r)
    assert set(by) == {"pod-1", "pod-2", "cart_api"}, by.keys()
    ck = by["pod-1"]
    assert ck["labels"] == [["__name__", "parca_agent_cpu"], ["env", "prod"],
                            ["host_name", "node-1"], ["k8s_pod_name", "pod-1"],
                            ["service_name", "checkout"]], ck["labels"]
    assert by["cart_api"]["labels"] == [["__name__", "parca_agent_cpu"], ["env", "prod"],
                                        ["service_name", "cart_api"]], by["cart_api"]["labels"]
    assert len(ck["samples"]) == 1 and ck["samples"][0]["executableInfo"] == 0, ck
    p = ck["samples"][0]["profile"]
    stacks = tp.check_profile(p, "parca checkout")
    assert stacks[tuple(tp.CHAIN)] == [5, 5 * tp.PERIOD], stacks
    assert stacks[tuple(tp.CHAIN[2:])] == [2, 2 * tp.PERIOD], stacks
    assert p["timeNanos"] == str(t_ns) and p["durationNanos"] == "10000000000", p
    assert p["mappings"][0]["buildId"], p["mappings"]
    p2 = tp.check_profile(by["pod-2"]["samples"][0]["profile"], "parca pod-2")
    assert p2[tuple(tp.CHAIN)] == [6, 6 * tp.PERIOD], p2  # two resources, one series
    assert sent == 6, sent


def case_token_file_missing(tmp, body):
    """A missing token file retries: the batch goes once the file appears."""
    tok = os.path.join(tmp, "late-token")
    if os.path.exists(tok):
        os.unlink(tok)
    ref = tp.Reference(tmp, "parca_reference.mjs")
    try:
        s = tp.run_sonde("parca-token", """
parca:
  endpoint: http://127.0.0.1:%d
  bearer_token_file: "%s"
  retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
""" % (ref.port, tok), exporter="parca")
        ts.post(s.hport, body)
        s.wait_log(r"bearer_token_file .*late-token: No such file")
        assert ref.records() == [], ref.records()
        with open(tok, "w") as f:
            f.write("late\n")
        recs = ref.wait(1, what="after the token file appeared")
        assert tp.wait_metric(s, "otelcol_exporter_sent_profiles_total", tp.ITEMS) == tp.ITEMS
        s.stop_ok()
    finally:
        ref.stop()
    assert recs[0]["authorization"] == "Bearer late", recs[0]


def case_token_file_too_long(tmp, body):
    """A token file longer than a token can be is refused with its name, not sent cut short."""
    tok = os.path.join(tmp, "long-token")
    with open(tok, "w") as f:
        f.write("x" * 5000)
    ref = tp.Reference(tmp, "parca_reference.mjs")
    try:
        s = tp.run_sonde("parca-long-token", """
parca:
  endpoint: http://127.0.0.1:%d
  bearer_token_file: "%s"
""" % (ref.port, tok), exporter="parca")
        ts.post(s.hport, body)
        s.wait_log(r"bearer_token_file .*long-token: longer than 4095 bytes")
        assert tp.wait_metric(s, "otelcol_exporter_send_failed_profiles_total",
                              tp.ITEMS) == tp.ITEMS
        assert ref.records() == [], ref.records()
        s.stop_ok()
    finally:
        ref.stop()


def case_tls(tmp, body):
    cert, key = tp.self_signed(tmp)
    ref = tp.Reference(tmp, "parca_reference.mjs", "--cert", cert, "--key", key)
    try:
        s = tp.run_sonde("parca-tls", """
parca:
  endpoint: 127.0.0.1:%d
  bearer_token: "abc.def"
  profile_name: custom_cpu
  tls: {ca_file: "%s"}
""" % (ref.port, cert), exporter="parca")
        ts.post(s.hport, body)
        recs = ref.wait(1, what="WriteRaw over TLS")
        s.stop_ok()
    finally:
        ref.stop()
    r = recs[0]
    assert r["authorization"] == "Bearer abc.def", r
    by = series_by_service(r)
    assert by["pod-1"]["labels"][0] == ["__name__", "custom_cpu"], by["pod-1"]["labels"]


def case_status(tmp, body, code):
    ref = tp.Reference(tmp, "parca_reference.mjs", "--fail-code", str(code),
                       "--fail-count", "2" if code == 14 else "1")
    try:
        s = tp.run_sonde("parca-%d" % code, """
parca:
  endpoint: http://127.0.0.1:%d
  retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
""" % ref.port, exporter="parca")
        ts.post(s.hport, body)
        if code == 14:  # UNAVAILABLE
            recs = ref.wait(3, what="UNAVAILABLE retried")
            assert [r.get("failed") for r in recs[:2]] == [14, 14], recs
            assert "series" in recs[2], recs
            s.wait_log(r"will retry: rpc error: code = Unavailable")
            assert tp.wait_metric(s, "otelcol_exporter_sent_profiles_total", tp.ITEMS) == tp.ITEMS
            assert tp.metric(s, "otelcol_exporter_send_failed_profiles_total") == 0
        else:  # INVALID_ARGUMENT
            recs = ref.wait(1, what="INVALID_ARGUMENT")
            assert recs[0].get("failed") == 3, recs
            s.wait_log(r"dropping data \(permanent\): rpc error: code = InvalidArgument")
            assert tp.wait_metric(s, "otelcol_exporter_send_failed_profiles_total",
                                  tp.ITEMS) == tp.ITEMS
            ts.post(s.hport, body)
            assert tp.wait_metric(s, "otelcol_exporter_sent_profiles_total", tp.ITEMS) == tp.ITEMS
            recs = ref.records()
            assert len(recs) == 2 and "series" in recs[1], recs
        s.stop_ok()
    finally:
        ref.stop()


def case_bad_profile_name(tmp):
    """A profile_name Parca's profile types cannot carry, or a bad metadata name, is a
    configuration error that says why."""
    tp.refused("parca-bad-name", "parca", """
  parca:
    endpoint: 127.0.0.1:1
    insecure: true
    profile_name: "cpu:samples"
""", 'profile_name "cpu:samples"', "name part")
    # a metadata name HTTP/2 cannot carry is refused by name, not reset by the server at every call
    tp.refused("parca-bad-header", "parca", """
  parca:
    endpoint: 127.0.0.1:1
    insecure: true
    headers: {"x-team id": "a"}
""", '"x-team id" is not a header name')


def test():
    if not shutil.which("node"):
        raise AssertionError("node is needed (tests/e2e/node)")
    if not shutil.which("openssl"):
        raise AssertionError("the openssl CLI is needed for the TLS case")
    tmpd = harness.Sonde("", "parca-build").tmp
    t_ns = int(time.time() * 1e9)
    body, _, _ = tp.profiles_body(tmpd, t_ns)
    case_h2c(tmpd, body, t_ns)
    case_tls(tmpd, body)
    case_token_file_missing(tmpd, body)
    case_token_file_too_long(tmpd, body)
    case_bad_profile_name(tmpd)
    case_status(tmpd, body, 14)
    case_status(tmpd, body, 3)
    print("parca: WriteRaw decoded with @parca/client over h2c and TLS; UNAVAILABLE retried, "
          "INVALID_ARGUMENT dropped")


if __name__ == "__main__":
    harness.main(test)

"""Reads what the file exporter wrote and checks the testgen items in it, one by one.

Decoding uses nothing of sonde: OTLP-JSON with the json module, protobuf with a small wire-format
reader below (field numbers from opentelemetry-proto), zstd frames with the `zstd` CLI.
"""
import base64
import json
import struct
import subprocess


# ---- record framing ---------------------------------------------------------------------------

def read_records(path, fmt, zstd=False):
    """Returns the list of raw records (bytes) in the file."""
    data = open(path, "rb").read()
    if fmt == "json" and not zstd:
        return [line for line in data.split(b"\n") if line]
    out, off = [], 0
    while off < len(data):
        if off + 4 > len(data):
            raise AssertionError("truncated length prefix at offset %d" % off)
        (n,) = struct.unpack(">I", data[off:off + 4])
        rec = data[off + 4:off + 4 + n]
        if len(rec) != n:
            raise AssertionError("truncated record at offset %d" % off)
        if zstd:
            rec = subprocess.run(["zstd", "-d", "-c", "-q"], input=rec, stdout=subprocess.PIPE,
                                 check=True).stdout
        out.append(rec)
        off += 4 + n
    return out


# ---- protobuf wire format ---------------------------------------------------------------------

def _varint(b, off):
    v, shift = 0, 0
    while True:
        c = b[off]
        off += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, off
        shift += 7


def fields(b):
    """[(field number, wire type, value)]; value is int (varint), bytes (len), raw bytes (fixed)."""
    out, off = [], 0
    while off < len(b):
        key, off = _varint(b, off)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, off = _varint(b, off)
        elif wt == 1:
            v, off = b[off:off + 8], off + 8
        elif wt == 2:
            n, off = _varint(b, off)
            v, off = b[off:off + n], off + n
        elif wt == 5:
            v, off = b[off:off + 4], off + 4
        else:
            raise AssertionError("unsupported wire type %d" % wt)
        out.append((num, wt, v))
    return out


def _all(b, num):
    return [v for n, _, v in fields(b) if n == num]


def _one(b, num, default=None):
    vs = _all(b, num)
    return vs[-1] if vs else default


def _pb_any(b):
    for n, _, v in fields(b):
        if n == 1:
            return v.decode()
        if n == 2:
            return bool(v)
        if n == 3:
            return v - (1 << 64) if v >= 1 << 63 else v
        if n == 4:
            return struct.unpack("<d", v)[0]
        if n == 7:
            return bytes(v)
    return None


def _pb_attrs(kvs):
    return {_one(kv, 1, b"").decode(): _pb_any(_one(kv, 2, b"")) for kv in kvs}


def _pb_resources(req, scope_field, item_field):
    """Yields (resource attributes, item bytes)."""
    for rs in _all(req, 1):
        rattrs = _pb_attrs(_all(_one(rs, 1, b""), 1))
        for ss in _all(rs, scope_field):
            for it in _all(ss, item_field):
                yield rattrs, it


def pb_items(signal, req):
    items = []
    if signal == "traces":
        for rattrs, sp in _pb_resources(req, 2, 2):
            items.append({"resource": rattrs, "trace_id": bytes(_one(sp, 1, b"")),
                          "span_id": bytes(_one(sp, 2, b"")),
                          "parent_span_id": bytes(_one(sp, 4, b"")),
                          "name": _one(sp, 5, b"").decode(), "attrs": _pb_attrs(_all(sp, 9))})
    elif signal == "metrics":
        for rattrs, m in _pb_resources(req, 2, 2):
            name = _one(m, 1, b"").decode()
            for data_field in (5, 7):
                for data in _all(m, data_field):
                    for dp in _all(data, 1):
                        f = {n: v for n, _, v in fields(dp)}
                        value = (struct.unpack("<d", f[4])[0] if 4 in f
                                 else struct.unpack("<q", f[6])[0])
                        items.append({"resource": rattrs, "metric": name, "value": value,
                                      "attrs": _pb_attrs(_all(dp, 7))})
    elif signal == "logs":
        for rattrs, lr in _pb_resources(req, 2, 2):
            items.append({"resource": rattrs, "body": _pb_any(_one(lr, 5, b"")),
                          "trace_id": bytes(_one(lr, 9, b"")), "span_id": bytes(_one(lr, 10, b"")),
                          "attrs": _pb_attrs(_all(lr, 6))})
    return items


# ---- OTLP-JSON --------------------------------------------------------------------------------

def _js_any(v):
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    return None


def _js_attrs(kvs):
    return {kv["key"]: _js_any(kv.get("value", {})) for kv in kvs or []}


def js_items(signal, req):
    items = []
    key = {"traces": ("resourceSpans", "scopeSpans", "spans"),
           "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
           "logs": ("resourceLogs", "scopeLogs", "logRecords")}[signal]
    for rs in req.get(key[0], []):
        rattrs = _js_attrs(rs.get("resource", {}).get("attributes"))
        for ss in rs.get(key[1], []):
            for it in ss.get(key[2], []):
                if signal == "traces":
                    items.append({"resource": rattrs, "trace_id": bytes.fromhex(it.get("traceId", "")),
                                  "span_id": bytes.fromhex(it.get("spanId", "")),
                                  "parent_span_id": bytes.fromhex(it.get("parentSpanId", "")),
                                  "name": it.get("name", ""), "attrs": _js_attrs(it.get("attributes"))})
                elif signal == "logs":
                    items.append({"resource": rattrs, "body": _js_any(it.get("body", {})),
                                  "trace_id": bytes.fromhex(it.get("traceId", "")),
                                  "span_id": bytes.fromhex(it.get("spanId", "")),
                                  "attrs": _js_attrs(it.get("attributes"))})
                else:
                    for kind in ("gauge", "sum"):
                        for dp in it.get(kind, {}).get("dataPoints", []):
                            value = (float(dp["asDouble"]) if "asDouble" in dp
                                     else int(dp["asInt"]))
                            items.append({"resource": rattrs, "metric": it["name"], "value": value,
                                          "attrs": _js_attrs(dp.get("attributes"))})
    return items


# ---- the checks -------------------------------------------------------------------------------

def decode(path, signal, fmt, zstd=False):
    """Returns a list of records, each a list of normalised items."""
    recs = []
    for raw in read_records(path, fmt, zstd):
        if fmt == "json":
            recs.append(js_items(signal, json.loads(raw)))
        else:
            recs.append(pb_items(signal, raw))
    return recs


def _ids(seed, i):
    trace = b"sond" + struct.pack(">I", seed) + struct.pack(">Q", i // 4)
    return trace, struct.pack(">Q", i + 1)


def check_item(signal, it, seed):
    """Checks one item against what testgen derives from its index; returns the index."""
    i = it["attrs"].get("testgen.index")
    assert isinstance(i, int), "item without testgen.index: %r" % it
    want = {"testgen.index": i, "testgen.name": "item-%d" % i, "testgen.even": i % 2 == 0,
            "testgen.half": i / 2.0}
    assert it["attrs"] == want, "item %d attributes %r != %r" % (i, it["attrs"], want)
    assert it["resource"].get("service.name") == "testgen", "item %d resource %r" % (i, it["resource"])
    trace, span = _ids(seed, i)
    if signal == "traces":
        assert it["span_id"] == span, "span %d id %s" % (i, it["span_id"].hex())
        assert it["trace_id"] == trace, "span %d trace id %s" % (i, it["trace_id"].hex())
        assert it["name"] == "span-%d" % i, "span %d name %r" % (i, it["name"])
        parent = b"" if i % 4 == 0 else struct.pack(">Q", i - i % 4 + 1)
        assert it["parent_span_id"] == parent, "span %d parent %s" % (i, it["parent_span_id"].hex())
    elif signal == "metrics":
        if i % 2 == 0:
            assert it["metric"] == "testgen.gauge" and it["value"] == i / 2.0, "point %d: %r" % (i, it)
        else:
            assert it["metric"] == "testgen.sum" and it["value"] == i, "point %d: %r" % (i, it)
    else:
        assert it["body"] == "log-%d" % i, "log %d body %r" % (i, it["body"])
        assert it["span_id"] == span and it["trace_id"] == trace, "log %d ids" % i
    return i


def check_all(recs, signal, count, seed=0):
    """Every index in [0, count) exactly once, each item intact."""
    seen = {}
    for r, items in enumerate(recs):
        for it in items:
            i = check_item(signal, it, seed)
            assert i not in seen, "%s item %d twice (records %d and %d)" % (signal, i, seen[i], r)
            seen[i] = r
    missing = sorted(set(range(count)) - set(seen))
    assert not missing, "%d %s items missing, first %s" % (len(missing), signal, missing[:10])
    extra = sorted(set(seen) - set(range(count)))
    assert not extra, "unexpected %s items %s" % (signal, extra[:10])

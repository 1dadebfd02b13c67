"""gRPC peers for test_ebpf_http_grpc.py on python3-grpcio (Debian), with no generated code: the
methods of pkg.Service take and return raw bytes.

  server PORT [CERT KEY]   serves pkg.Service/Method until killed; prints "ready"
  client TARGET N CONC [CERT]
      one channel: N sequential Method calls, one that the server answers NOT_FOUND, then CONC
      concurrent calls (multiplexed on the same connection); prints their times as JSON.
  traceparent TARGET TP
      one Method call with the W3C traceparent TP in its metadata, as an SDK would send it.
  stream TARGET
      one call of the server-streaming pkg.Service/Stream: 5 replies b"part I", 20 ms apart.
  big TARGET SIZE
      on one channel: a pkg.Service/Big call (Method under another name) with a SIZE-byte
      request (echoed: several DATA frames per write both ways), then 3 small ones; prints their
      times as JSON.
  cancel TARGET
      on one channel: a call (sleep 2 s) the client cancels after 200 ms, one with a 300 ms
      deadline (sleep 2 s), then one answered; prints each call's time as JSON.

Method's request says what to do: b"sleep:MS" sleeps MS ms first, b"notfound" aborts NOT_FOUND;
the reply echoes the request."""
import concurrent.futures
import json
import sys
import time

import grpc


def method(request, context):
    if request == b"notfound":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request.startswith(b"sleep:"):
        time.sleep(int(request[6:]) / 1000.0)
    return b"echo:" + request


def stream(request, context):
    for i in range(5):
        time.sleep(0.02)
        yield b"part %d" % i


def server(port, cert=None, key=None):
    s = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.unary_unary_rpc_method_handler(method)
    streamer = grpc.unary_stream_rpc_method_handler(stream)
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pkg.Service", {"Method": handler, "Big": handler, "Stream": streamer}),))
    addr = "127.0.0.1:%d" % port
    if cert:
        with open(cert, "rb") as f:
            c = f.read()
        with open(key, "rb") as f:
            k = f.read()
        s.add_secure_port(addr, grpc.ssl_server_credentials([(k, c)]))
    else:
        s.add_insecure_port(addr)
    s.start()
    print("ready", flush=True)
    s.wait_for_termination()


def client(target, n, conc, cert=None):
    if cert:
        with open(cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        # The certificate is for CN=localhost.
        ch = grpc.secure_channel(target, creds,
                                 options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        ch = grpc.insecure_channel(target)
    grpc.channel_ready_future(ch).result(timeout=20)
    call = ch.unary_unary("/pkg.Service/Method")
    out = {"seq": []}
    for i in range(n):
        t = time.perf_counter()
        assert call(b"call %d" % i, timeout=20) == b"echo:call %d" % i
        out["seq"].append(time.perf_counter() - t)
    t = time.perf_counter()
    try:
        call(b"notfound", timeout=20)
        raise SystemExit("NOT_FOUND expected")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    out["notfound"] = time.perf_counter() - t
    # Concurrent calls that each take 300 ms on the server: in flight together on one connection.
    t = time.perf_counter()
    futs = [call.future(b"sleep:300", timeout=20) for _ in range(conc)]
    for f in futs:
        assert f.result() == b"echo:sleep:300"
    out["conc_total"] = time.perf_counter() - t
    ch.close()
    print(json.dumps(out), flush=True)


def traceparent(target, tp):
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary("/pkg.Service/Method")
        assert call(b"tp", metadata=(("traceparent", tp),), timeout=20) == b"echo:tp"
    print(json.dumps({}), flush=True)


def stream_client(target):
    with grpc.insecure_channel(target) as ch:
        t = time.perf_counter()
        got = list(ch.unary_stream("/pkg.Service/Stream")(b"go", timeout=20))
        assert got == [b"part %d" % i for i in range(5)], got
        print(json.dumps({"t": time.perf_counter() - t}), flush=True)


def big_client(target, size):
    out = {"seq": []}
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary("/pkg.Service/Big")
        for req in (b"b" * size, b"small 1", b"small 2", b"small 3"):
            t = time.perf_counter()
            assert call(req, timeout=20) == b"echo:" + req
            out["seq"].append(time.perf_counter() - t)
    print(json.dumps(out), flush=True)


def cancel_client(target):
    out = {}
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=20)
        call = ch.unary_unary("/pkg.Service/Method")
        t = time.perf_counter()
        f = call.future(b"sleep:2000", timeout=20)
        time.sleep(0.2)
        assert f.cancel(), "the call ended before it could be cancelled"
        out["cancelled"] = time.perf_counter() - t
        t = time.perf_counter()
        try:
            call(b"sleep:2000", timeout=0.3)
            raise SystemExit("DEADLINE_EXCEEDED expected")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
        out["deadline"] = time.perf_counter() - t
        t = time.perf_counter()
        assert call(b"after", timeout=20) == b"echo:after"
        out["after"] = time.perf_counter() - t
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "big":
        big_client(a[1], int(a[2]))
    elif a[0] == "cancel":
        cancel_client(a[1])
    elif a[0] == "stream":
        stream_client(a[1])
    elif a[0] == "traceparent":
        traceparent(a[1], a[2])
    elif a[0] == "server":
        server(int(a[1]), *a[2:4])
    else:
        client(a[1], int(a[2]), int(a[3]), *a[4:5])

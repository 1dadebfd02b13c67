#!/usr/bin/python3
"""Records the seeds of tests/fuzz/fuzz_h2.c: real HTTP/2 sessions between nghttp and nghttpd
(Debian nghttp2-client, nghttp2-server) and gRPC calls with grpcio (python3-grpcio) and
@grpc/grpc-js (tests/e2e/node, after npm ci), through a
TCP proxy that writes each connection's bytes, in the order they crossed, in the fuzz target's
record format. Run from anywhere: /usr/bin/python3 tests/fuzz/corpus/h2/.record.py [cancel]"""
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time

OUT = os.path.dirname(os.path.abspath(__file__))


def encode(mode, chunks, keep=None):
    """keep: capture at most this many bytes of each record, the rest marked uncaptured (what
    the BPF side does with large reads and writes)."""
    out = bytearray([mode])
    for from_server, data in chunks:
        for o in range(0, len(data), 65535):
            part = data[o:o + 65535]
            if keep is not None and len(part) > keep:
                lost = len(part) - keep
                out += bytes([(1 if from_server else 0) | 2]) + keep.to_bytes(2, "big")
                out += lost.to_bytes(2, "big") + part[:keep]
            else:
                out += bytes([1 if from_server else 0]) + len(part).to_bytes(2, "big") + part
    return bytes(out)


class Proxy:
    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sessions = []

    async def handle(self, reader, writer):
        chunks = []
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(r, w, from_server):
            while True:
                data = await r.read(65536)
                if not data:
                    break
                chunks.append((from_server, data))
                w.write(data)
                await w.drain()
            try:
                w.write_eof()
            except OSError:
                pass

        await asyncio.gather(pipe(reader, uw, False), pipe(ur, writer, True))
        writer.close()
        uw.close()
        self.sessions.append(chunks)

    def run(self, port, ready):
        async def main():
            srv = await asyncio.start_server(self.handle, "127.0.0.1", port)
            ready.set()
            async with srv:
                await srv.serve_forever()

        asyncio.run(main())


def start_proxy(port, upstream):
    p = Proxy(upstream)
    ready = threading.Event()
    threading.Thread(target=p.run, args=(port, ready), daemon=True).start()
    ready.wait()
    return p


def wait_sessions(p, n):
    for _ in range(100):
        if len(p.sessions) >= n:
            return
        time.sleep(0.1)
    sys.exit("sessions did not finish")


def save(name, chunks):
    for mode, suffix in ((1, "server"), (0, "client"), (3, "server-1byte")):
        with open(os.path.join(OUT, f"{name}-{suffix}"), "wb") as f:
            f.write(encode(mode, chunks))
    if sum(len(d) for _, d in chunks) > 20000:
        with open(os.path.join(OUT, f"{name}-truncated"), "wb") as f:
            f.write(encode(1, chunks, keep=4096))


def nghttp_sessions():
    docroot = tempfile.mkdtemp()
    for name, size in (("small", 12), ("big", 40000), ("index.html", 700)):
        with open(os.path.join(docroot, name), "wb") as f:
            f.write(b"y" * size)
    srv = subprocess.Popen(["nghttpd", "--no-tls", "-d", docroot, "-b", "7",
                            "--header-table-size", "8192", "18090"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    p = start_proxy(18091, 18090)
    base = "http://127.0.0.1:18091"
    runs = [
        ("multiplexed", ["nghttp", "-n", base + "/small", base + "/big", base + "/index.html",
                         base + "/missing?q=1"]),
        ("upload", ["nghttp", "-n", "-d", os.path.join(docroot, "big"), base + "/small"]),
        ("padded-table", ["nghttp", "-n", "-b", "13", "-c", "16384",
                          "-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          base + "/small", base + "/index.html"]),
        ("continuation", ["nghttp", "-n", "-H", "cookie: " + "c" * 30000, base + "/small"]),
    ]
    for i, (name, cmd) in enumerate(runs):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wait_sessions(p, i + 1)
        save("nghttp-" + name, p.sessions[i])
    n = len(runs)
    subprocess.run(["h2load", "-n", "20", "-c", "1", "-m", "5", base + "/small"], check=True,
                   stdout=subprocess.DEVNULL)
    wait_sessions(p, n + 1)
    save("h2load", p.sessions[n])
    srv.terminate()
    srv.wait()


def grpc_sessions():
    import grpc
    from concurrent import futures

    def say(req, ctx):
        if req == b"fail":
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return b"hello " + req

    def stream(req, ctx):
        for i in range(3):
            yield b"part %d" % i

    handler = grpc.method_handlers_generic_handler("helloworld.Greeter", {
        "SayHello": grpc.unary_unary_rpc_method_handler(say),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:18092")
    server.start()
    p = start_proxy(18093, 18092)
    with grpc.insecure_channel("127.0.0.1:18093") as ch:
        say_call = ch.unary_unary("/helloworld.Greeter/SayHello")
        say_call(b"world")
        say_call(b"again", metadata=(("traceparent",
                                      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),))
        try:
            say_call(b"fail")
        except grpc.RpcError:
            pass
        list(ch.unary_stream("/helloworld.Greeter/Stream")(b"x"))
        try:
            ch.unary_unary("/helloworld.Greeter/Missing")(b"x")
        except grpc.RpcError:
            pass
    wait_sessions(p, 1)
    save("grpc", p.sessions[0])
    server.stop(0)


GRPC_JS = r"""
const grpc = require('@grpc/grpc-js');
const id = (b) => b;
const def = {
  SayHello: {path: '/helloworld.Greeter/SayHello', requestStream: false, responseStream: false,
             requestSerialize: id, requestDeserialize: id, responseSerialize: id,
             responseDeserialize: id},
  Chat: {path: '/helloworld.Greeter/Chat', requestStream: true, responseStream: true,
         requestSerialize: id, requestDeserialize: id, responseSerialize: id,
         responseDeserialize: id},
};
const [mode, port] = process.argv.slice(1);
if (mode === 'server') {
  const s = new grpc.Server();
  s.addService(def, {
    SayHello: (call, cb) => call.request.toString() === 'fail'
        ? cb({code: grpc.status.NOT_FOUND, details: 'no'}) : cb(null, Buffer.from('hi ' + call.request)),
    Chat: (call) => { call.on('data', (m) => call.write(Buffer.concat([m, m]))); call.on('end', () => call.end()); },
  });
  s.bindAsync('127.0.0.1:' + port, grpc.ServerCredentials.createInsecure(), () => console.log('ready'));
} else {
  const C = grpc.makeGenericClientConstructor(def);
  const c = new C('127.0.0.1:' + port, grpc.credentials.createInsecure());
  const calls = [];
  for (let i = 0; i < 10; i++)
    calls.push(new Promise((res) => c.SayHello(Buffer.from(i === 3 ? 'fail' : 'n' + i), () => res())));
  calls.push(new Promise((res) => {
    const st = c.Chat(); st.on('data', () => {}); st.on('end', res); st.on('error', res);
    for (let i = 0; i < 3; i++) st.write(Buffer.from('m' + i)); st.end();
  }));
  Promise.all(calls).then(() => { c.close(); });
}
"""


def grpc_js_sessions():
    env = dict(os.environ, NODE_PATH=os.path.join(OUT, "../../../e2e/node/node_modules"))
    srv = subprocess.Popen(["node", "-e", GRPC_JS, "server", "18094"], env=env,
                           stdout=subprocess.PIPE)
    srv.stdout.readline()
    p = start_proxy(18095, 18094)
    subprocess.run(["node", "-e", GRPC_JS, "client", "18095"], env=env, check=True, timeout=60)
    wait_sessions(p, 1)
    save("grpc-js", p.sessions[0])
    srv.terminate()
    srv.wait()


def grpc_cancel_sessions():
    """grpcio calls the client gives up on: one cancelled (RST_STREAM CANCEL), one past its
    deadline (CANCEL once grpc-timeout ran out), then one answered on the same connection."""
    import grpc
    from concurrent import futures

    def slow(req, ctx):
        time.sleep(0.5)
        return b"late " + req

    handler = grpc.method_handlers_generic_handler("pkg.Service", {
        "Slow": grpc.unary_unary_rpc_method_handler(slow)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:18096")
    server.start()
    p = start_proxy(18097, 18096)
    with grpc.insecure_channel("127.0.0.1:18097") as ch:
        call = ch.unary_unary("/pkg.Service/Slow")
        f = call.future(b"cancel me")
        time.sleep(0.1)
        f.cancel()
        try:
            call(b"too slow", timeout=0.1)
        except grpc.RpcError:
            pass
        call(b"ok", timeout=5)
    wait_sessions(p, 1)
    save("grpc-cancel", p.sessions[0])
    server.stop(0)


if __name__ == "__main__":
    if sys.argv[1:] == ["cancel"]:  # only the newest seeds
        grpc_cancel_sessions()
        sys.exit(0)
    nghttp_sessions()
    grpc_sessions()
    grpc_js_sessions()

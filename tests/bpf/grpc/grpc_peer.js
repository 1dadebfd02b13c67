// gRPC peers for test_ebpf_http_grpc.py on @grpc/grpc-js (tests/e2e/node; run with NODE_PATH set
// to its node_modules), the same protocol as grpc_peer.py: raw-bytes pkg.Service/Method.
//   server PORT [CERT KEY]        prints "ready"
//   client TARGET N CONC [CERT]   prints the calls' times as JSON
"use strict";
const fs = require("fs");
const grpc = require("@grpc/grpc-js");

const id = (b) => b;
const def = {
  Method: {path: "/pkg.Service/Method", requestStream: false, responseStream: false,
           requestSerialize: id, requestDeserialize: id, responseSerialize: id,
           responseDeserialize: id},
};
const [mode, a1, a2, a3, a4] = process.argv.slice(2);

if (mode === "server") {
  const s = new grpc.Server();
  s.addService(def, {
    Method(call, cb) {
      const req = call.request.toString();
      if (req === "notfound") return cb({code: grpc.status.NOT_FOUND, details: "no such thing"});
      const ms = req.startsWith("sleep:") ? parseInt(req.slice(6)) : 0;
      setTimeout(() => cb(null, Buffer.from("echo:" + req)), ms);
    },
  });
  const creds = a2 ? grpc.ServerCredentials.createSsl(null, [{cert_chain: fs.readFileSync(a2),
                                                              private_key: fs.readFileSync(a3)}])
                   : grpc.ServerCredentials.createInsecure();
  s.bindAsync("127.0.0.1:" + a1, creds, (err) => {
    if (err) throw err;
    console.log("ready");
  });
} else {
  const Client = grpc.makeGenericClientConstructor(def, "Service");
  const creds = a4 ? grpc.credentials.createSsl(fs.readFileSync(a4))
                   : grpc.credentials.createInsecure();
  const c = new Client(a1, creds, a4 ? {"grpc.ssl_target_name_override": "localhost"} : {});
  const call = (req) => new Promise((resolve) => {
    const t = process.hrtime.bigint();
    c.Method(Buffer.from(req), {deadline: Date.now() + 20000}, (err, resp) => {
      resolve({err, resp, t: Number(process.hrtime.bigint() - t) / 1e9});
    });
  });
  (async () => {
    await new Promise((res, rej) => c.waitForReady(Date.now() + 20000, (e) => e ? rej(e) : res()));
    const out = {seq: []};
    for (let i = 0; i < parseInt(a2); i++) {
      const r = await call("call " + i);
      if (r.err || r.resp.toString() !== "echo:call " + i) throw r.err || new Error("bad reply");
      out.seq.push(r.t);
    }
    const nf = await call("notfound");
    if (!nf.err || nf.err.code !== grpc.status.NOT_FOUND) throw new Error("NOT_FOUND expected");
    out.notfound = nf.t;
    const t = process.hrtime.bigint();
    const rs = await Promise.all(Array.from({length: parseInt(a3)}, () => call("sleep:300")));
    for (const r of rs) if (r.err) throw r.err;
    out.conc_total = Number(process.hrtime.bigint() - t) / 1e9;
    c.close();
    console.log(JSON.stringify(out));
  })().catch((e) => { console.error(e); process.exit(1); });
}

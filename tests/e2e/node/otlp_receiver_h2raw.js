// A raw HTTP/2 client (Node's http2) for the otlp receiver's gRPC error cases: sends each request
// described in a JSON file and prints, as JSON, what came back (HTTP status, grpc-status and
// grpc-message from headers or trailers, body bytes).
//
// usage: node otlp_receiver_h2raw.js <http://host:port> <cases.json>
// cases: [{"path": "/...", "headers": {...}, "body_hex": "..." | "body_file": "...",
//          "stall": true (send headers and part of the body, never end: report when the
//          server closes the connection)}]
'use strict';

const fs = require('fs');
const http2 = require('http2');

const [url, casesFile] = process.argv.slice(2);
const cases = JSON.parse(fs.readFileSync(casesFile, 'utf8'));

function body(c) {
  if (c.body_file) return fs.readFileSync(c.body_file);
  return Buffer.from(c.body_hex || '', 'hex');
}

function one(c) {
  return new Promise((resolve) => {
    const started = Date.now();
    const session = http2.connect(url);
    const res = { status: 0, grpcStatus: null, grpcMessage: null, body: '' };
    let done = false;
    const finish = (extra) => {
      if (done) return;
      done = true;
      Object.assign(res, extra || {});
      session.destroy();
      resolve(res);
    };
    session.on('error', (e) => finish({ error: String(e.code || e.message) }));
    session.on('close', () => finish({ closedAfterMs: Date.now() - started }));
    const headers = Object.assign({
      ':method': 'POST',
      ':path': c.path,
      'content-type': 'application/grpc',
      te: 'trailers',
    }, c.headers || {});
    const req = session.request(headers, { endStream: false });
    const chunks = [];
    const grab = (h) => {
      if (h[':status']) res.status = h[':status'];
      if (h['grpc-status'] !== undefined) res.grpcStatus = Number(h['grpc-status']);
      if (h['grpc-message'] !== undefined) res.grpcMessage = decodeURIComponent(h['grpc-message']);
    };
    req.on('response', grab);
    req.on('trailers', grab);
    req.on('data', (d) => chunks.push(d));
    req.on('error', (e) => { res.streamError = String(e.code || e.message); });
    req.on('close', () => {
      res.body = Buffer.concat(chunks).toString('hex');
      res.rstCode = req.rstCode;
      if (!c.stall) finish();
    });
    const b = body(c);
    if (c.stall) {
      req.write(b.subarray(0, Math.max(1, b.length >> 1))); // never ends: the server must give up
      setTimeout(() => finish({ timedOut: true }), c.wait_ms || 10000);
    } else {
      req.end(b);
    }
  });
}

(async () => {
  const out = [];
  for (const c of cases) out.push(await one(c));
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

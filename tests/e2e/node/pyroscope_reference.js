// A Pyroscope stand-in for test_pyroscope.py: serves POST /ingest (Pyroscope's HTTP ingestion API:
// query parameters, the pprof as the multipart "profile" part or the raw body) and POST
// /push.v1.PusherService/Push (connect over HTTP/1.1, application/proto), over http or https
// (--cert/--key). Payloads are decoded with pprof-format and, for push.v1, with a protobuf-ts
// reflection type written from Pyroscope's published push.proto field numbers (no npm package
// ships them). Every request becomes a JSON line in --out; the first --fail-count requests are
// answered with --fail-status (connect's error JSON on the push path).
// With --grpc it serves push.v1.PusherService/Push over gRPC instead (@grpc/grpc-js, h2c or TLS),
// failing the first --fail-count calls with gRPC status --fail-code.
// Usage: node pyroscope_reference.js --out FILE [--grpc] [--cert C --key K]
//          [--fail-status N | --fail-code N] [--fail-count N]
'use strict';
const http = require('http');
const https = require('https');
const fs = require('fs');
const { MessageType } = require('@protobuf-ts/runtime');
const { summarize, recorder } = require('./parca_pyroscope_pprof');

const rec = recorder(process.argv);
const failStatus = Number(rec.arg('--fail-status', '0'));
let failLeft = Number(rec.arg('--fail-count', '0'));

const LabelPair = new MessageType('types.v1.LabelPair', [
  { no: 1, name: 'name', kind: 'scalar', T: 9 },
  { no: 2, name: 'value', kind: 'scalar', T: 9 },
]);
const RawSample = new MessageType('push.v1.RawSample', [
  { no: 1, name: 'raw_profile', localName: 'rawProfile', kind: 'scalar', T: 12 },
  { no: 2, name: 'ID', localName: 'id', kind: 'scalar', T: 9 },
]);
const RawProfileSeries = new MessageType('push.v1.RawProfileSeries', [
  { no: 1, name: 'labels', kind: 'message', repeat: 2, T: () => LabelPair },
  { no: 2, name: 'samples', kind: 'message', repeat: 2, T: () => RawSample },
]);
const PushRequest = new MessageType('push.v1.PushRequest', [
  { no: 1, name: 'series', kind: 'message', repeat: 2, T: () => RawProfileSeries },
]);

const connectCodes = { 400: 'invalid_argument', 401: 'unauthenticated', 429: 'resource_exhausted', 503: 'unavailable' };

function decodePush(body) {
  const m = PushRequest.fromBinary(body);
  return m.series.map((s) => ({
    labels: Object.fromEntries(s.labels.map((l) => [l.name, l.value])),
    ids: s.samples.map((x) => x.id),
    profiles: s.samples.map((x) => summarize(Buffer.from(x.rawProfile))),
  }));
}

async function handle(req, body) {
  const url = new URL(req.url, 'http://x');
  const r = {
    method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
    headers: {
      authorization: req.headers.authorization || null,
      orgid: req.headers['x-scope-orgid'] || null,
      contentType: req.headers['content-type'] || null,
      userAgent: req.headers['user-agent'] || null,
      extra: req.headers['x-extra'] || null,
      connect: req.headers['connect-protocol-version'] || null,
    },
  };
  if (url.pathname === '/ingest') {
    let prof = body;
    const ct = req.headers['content-type'] || '';
    if (ct.startsWith('multipart/form-data')) {
      const form = await new Response(body, { headers: { 'content-type': ct } }).formData();
      const part = form.get('profile');
      if (!part) throw new Error('no "profile" part');
      prof = Buffer.from(await part.arrayBuffer());
    }
    r.profile = summarize(prof);
  } else if (url.pathname === '/push.v1.PusherService/Push') {
    r.series = decodePush(body);
  } else {
    return [404, 'text/plain', 'not found', r];
  }
  return [200, url.pathname === '/ingest' ? 'text/plain' : 'application/proto', '', r];
}

function serve(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const body = Buffer.concat(chunks);
    let status, ctype, out, r;
    if (failLeft > 0) {
      failLeft--;
      r = { path: new URL(req.url, 'http://x').pathname, failed: failStatus };
      status = failStatus;
      const push = r.path.startsWith('/push.v1');
      ctype = push ? 'application/json' : 'text/plain';
      out = push ? JSON.stringify({ code: connectCodes[status] || 'unknown', message: 'injected' }) : 'injected failure';
    } else {
      try {
        [status, ctype, out, r] = await handle(req, body);
      } catch (e) {
        r = { error: String(e && e.stack || e) };
        [status, ctype, out] = [400, 'text/plain', String(e)];
      }
    }
    rec.write(r);
    res.writeHead(status, { 'content-type': ctype });
    res.end(out);
  });
}

const cert = rec.arg('--cert');
if (process.argv.includes('--grpc')) {
  const grpc = require('@grpc/grpc-js');
  const failCode = Number(rec.arg('--fail-code', '0'));
  const service = {
    Push: {
      path: '/push.v1.PusherService/Push', requestStream: false, responseStream: false,
      requestDeserialize: (b) => b, requestSerialize: (b) => b,
      responseSerialize: () => Buffer.alloc(0), responseDeserialize: () => ({}),
    },
  };
  const server = new grpc.Server();
  server.addService(service, {
    Push(call, cb) {
      const md = call.metadata.getMap();
      if (failLeft > 0) {
        failLeft--;
        rec.write({ path: service.Push.path, failed: failCode });
        cb({ code: failCode, details: 'injected' });
        return;
      }
      const r = {
        grpc: true, path: service.Push.path,
        headers: { authorization: md.authorization || null, orgid: md['x-scope-orgid'] || null,
          userAgent: md['user-agent'] || null, extra: md['x-extra'] || null },
      };
      try {
        r.series = decodePush(call.request);
      } catch (e) {
        rec.write({ error: String(e && e.stack || e) });
        cb({ code: grpc.status.INVALID_ARGUMENT, details: String(e) });
        return;
      }
      rec.write(r);
      cb(null, {});
    },
  });
  const creds = cert
    ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: fs.readFileSync(cert), private_key: fs.readFileSync(rec.arg('--key')) }])
    : grpc.ServerCredentials.createInsecure();
  server.bindAsync('127.0.0.1:0', creds, (err, port) => {
    if (err) throw err;
    process.stdout.write('listening ' + port + '\n');
  });
  process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
  return;
}
const server = cert
  ? https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(rec.arg('--key')) }, serve)
  : http.createServer(serve);
server.listen(0, '127.0.0.1', () => {
  process.stdout.write('listening ' + server.address().port + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

// A Parca stand-in for test_parca.py: a gRPC server (@grpc/grpc-js, h2c or TLS with --cert/--key)
// for parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw that decodes requests with the
// generated code of the npm @parca/client package (Parca's own schema) and the pprof with
// pprof-format. Every call becomes a JSON line in --out; the first --fail-count calls end with
// gRPC status --fail-code.
// Usage: node parca_reference.mjs --out FILE [--cert C --key K] [--fail-code N --fail-count N]
import { register, createRequire } from 'node:module';
import fs from 'node:fs';

register('./parca_esm_hook.mjs', import.meta.url);
const require = createRequire(import.meta.url);
const grpc = require('@grpc/grpc-js');
const { summarize, recorder } = require('./parca_pyroscope_pprof.js');
const { WriteRawRequest, WriteRawResponse } = await import(
  '@parca/client/dist/parca/profilestore/v1alpha1/profilestore.js');

const rec = recorder(process.argv);
const failCode = Number(rec.arg('--fail-code', '0'));
let failLeft = Number(rec.arg('--fail-count', '0'));

const service = {
  WriteRaw: {
    path: '/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw',
    requestStream: false,
    responseStream: false,
    requestDeserialize: (b) => WriteRawRequest.fromBinary(b),
    requestSerialize: (m) => Buffer.from(WriteRawRequest.toBinary(m)),
    responseSerialize: (m) => Buffer.from(WriteRawResponse.toBinary(m)),
    responseDeserialize: (b) => WriteRawResponse.fromBinary(b),
  },
};

function writeRaw(call, cb) {
  const md = call.metadata.getMap();
  if (failLeft > 0) {
    failLeft--;
    rec.write({ failed: failCode });
    cb({ code: failCode, details: 'injected' });
    return;
  }
  const m = call.request;
  let r;
  try {
    r = {
      authorization: md.authorization || null,
      userAgent: md['user-agent'] || null,
      extra: md['x-extra'] || null,
      tenant: m.tenant,
      normalized: m.normalized,
      series: m.series.map((s) => ({
        labels: s.labels.labels.map((l) => [l.name, l.value]),
        samples: s.samples.map((x) => ({ executableInfo: x.executableInfo.length, profile: summarize(Buffer.from(x.rawProfile)) })),
      })),
    };
  } catch (e) {
    rec.write({ error: String(e && e.stack || e) });
    cb({ code: grpc.status.INVALID_ARGUMENT, details: String(e) });
    return;
  }
  rec.write(r);
  cb(null, WriteRawResponse.create());
}

const server = new grpc.Server();
server.addService(service, { WriteRaw: writeRaw });
const cert = rec.arg('--cert');
const creds = cert
  ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: fs.readFileSync(cert), private_key: fs.readFileSync(rec.arg('--key')) }])
  : grpc.ServerCredentials.createInsecure();
server.bindAsync('127.0.0.1:0', creds, (err, port) => {
  if (err) throw err;
  process.stdout.write('listening ' + port + '\n');
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));

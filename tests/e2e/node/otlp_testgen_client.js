'use strict';
// Sends spans shaped exactly like testgen's (tests/plugins/testgen/testgen.c) to an OTLP receiver,
// over gRPC (@grpc/grpc-js) or HTTP protobuf, encoded with the same schema the reference backend
// decodes with. Lets a test feed an OTLP receiver with items its checker recognises.
const grpc = require('@grpc/grpc-js');
const http = require('node:http');
const { SIGNALS } = require('./otlp_reference.js');

const BASE_NS = 1700000000000000000n;
const be = (v, n) => Buffer.from(BigInt(v).toString(16).padStart(n * 2, '0'), 'hex');

function kv(key, value) {
  return { key, value };
}

// Spans [first, first + n) as one ExportTraceServiceRequest (plain object for fromObject).
function traces(first, n, seed = 0, batch = 0) {
  const spans = [];
  for (let i = first; i < first + n; i++) {
    const start = BASE_NS + BigInt(i) * 1000n;
    spans.push({
      traceId: Buffer.concat([Buffer.from('sond'), be(seed, 4), be(Math.floor(i / 4), 8)]),
      spanId: be(i + 1, 8),
      parentSpanId: i % 4 ? be(i - (i % 4) + 1, 8) : Buffer.alloc(0),
      name: `span-${i}`,
      kind: i % 4 === 0 ? 2 : 1,
      startTimeUnixNano: start.toString(),
      endTimeUnixNano: (start + 500n).toString(),
      attributes: [
        kv('testgen.index', { intValue: i }),
        kv('testgen.name', { stringValue: `item-${i}` }),
        kv('testgen.even', { boolValue: i % 2 === 0 }),
        kv('testgen.half', { doubleValue: i / 2 }),
      ],
      status: { code: 1 },
    });
  }
  return {
    resourceSpans: [
      {
        resource: {
          attributes: [
            kv('service.name', { stringValue: 'testgen' }),
            kv('testgen.batch', { intValue: batch }),
            kv('testgen.part', { intValue: 0 }),
          ],
        },
        scopeSpans: [{ scope: { name: 'sonde/testgen', version: '1' }, spans }],
      },
    ],
  };
}

function encode(obj) {
  const T = SIGNALS.traces.Req;
  return Buffer.from(T.encode(T.fromObject(obj)).finish());
}

// Resolves with the gRPC status of one Export call.
function sendGrpc(endpoint, obj) {
  const client = new grpc.Client(endpoint, grpc.credentials.createInsecure());
  return new Promise((res) => {
    client.makeUnaryRequest(
      `/${SIGNALS.traces.service}/Export`,
      (x) => x,
      (b) => b,
      encode(obj),
      (err) => {
        client.close();
        res(err ? err.code : 0);
      },
    );
  });
}

// Resolves with the HTTP status of one POST /v1/traces.
function sendHttp(endpoint, obj) {
  const body = encode(obj);
  const [host, port] = endpoint.split(':');
  return new Promise((res, rej) => {
    const req = http.request(
      { host, port, method: 'POST', path: '/v1/traces', headers: { 'content-type': 'application/x-protobuf', 'content-length': body.length } },
      (r) => {
        r.resume();
        r.on('end', () => res(r.statusCode));
      },
    );
    req.on('error', rej);
    req.end(body);
  });
}

module.exports = { traces, sendGrpc, sendHttp };

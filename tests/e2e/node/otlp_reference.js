'use strict';
// A reference OTLP backend for sonde's exporter tests. It decodes with schemas we did not write:
// the protobufjs code generated from opentelemetry-proto that @opentelemetry/otlp-transformer
// 0.57 ships (installed as "otlp-schema"; newer releases dropped it), served over
//   - gRPC by @grpc/grpc-js (identity and gzip; grpc-js has no zstd), or
//   - gRPC framing on node:http2 with zstd from fzstd (grpc-js cannot take zstd), and
//   - OTLP/HTTP on node:http: protobuf and JSON, Content-Encoding gzip / zstd.
// Behaviour knobs make it a misbehaving backend on demand: fail the first N requests with a gRPC
// code (optionally with RetryInfo) or an HTTP status (optionally with Retry-After), delay every
// answer, or answer with a partial_success.
//
// Used in-process by the e2e drivers (startReference) or as a CLI:
//   node otlp_reference.js --grpc 4317 --http 4318 [--impl grpc-js|http2] [--delay-ms N] ...
const grpc = require('@grpc/grpc-js');
const http = require('node:http');
const https = require('node:https');
const http2 = require('node:http2');
const zlib = require('node:zlib');
const fzstd = require('fzstd');
const protobuf = require('protobufjs/minimal');
const root = require('otlp-schema/build/src/generated/root');

const P = root.opentelemetry.proto;
const SIGNALS = {
  traces: {
    service: 'opentelemetry.proto.collector.trace.v1.TraceService',
    Req: P.collector.trace.v1.ExportTraceServiceRequest,
    Resp: P.collector.trace.v1.ExportTraceServiceResponse,
    rejectedKey: 'rejectedSpans',
    path: '/v1/traces',
  },
  metrics: {
    service: 'opentelemetry.proto.collector.metrics.v1.MetricsService',
    Req: P.collector.metrics.v1.ExportMetricsServiceRequest,
    Resp: P.collector.metrics.v1.ExportMetricsServiceResponse,
    rejectedKey: 'rejectedDataPoints',
    path: '/v1/metrics',
  },
  logs: {
    service: 'opentelemetry.proto.collector.logs.v1.LogsService',
    Req: P.collector.logs.v1.ExportLogsServiceRequest,
    Resp: P.collector.logs.v1.ExportLogsServiceResponse,
    rejectedKey: 'rejectedLogRecords',
    path: '/v1/logs',
  },
};

// Items in a decoded request, as otelcol counts them.
function countItems(signal, req) {
  let n = 0;
  if (signal === 'traces') {
    for (const rs of req.resourceSpans || [])
      for (const ss of rs.scopeSpans || []) n += (ss.spans || []).length;
  } else if (signal === 'logs') {
    for (const rl of req.resourceLogs || [])
      for (const sl of rl.scopeLogs || []) n += (sl.logRecords || []).length;
  } else {
    for (const rm of req.resourceMetrics || [])
      for (const sm of rm.scopeMetrics || [])
        for (const m of sm.metrics || []) {
          const d = m.gauge || m.sum || m.histogram || m.exponentialHistogram || m.summary;
          n += d ? (d.dataPoints || []).length : 0;
        }
  }
  return n;
}

// A request's identity across retries: its signal and the testgen.index of its first item.
function requestKey(signal, req) {
  const top = req.resourceSpans || req.resourceMetrics || req.resourceLogs || [];
  let item;
  for (const r of top) {
    for (const sc of r.scopeSpans || r.scopeMetrics || r.scopeLogs || []) {
      const list = sc.spans || sc.logRecords;
      if (list && list.length) item = list[0];
      for (const m of sc.metrics || []) {
        const d = m.gauge || m.sum;
        if (!item && d && d.dataPoints.length) item = d.dataPoints[0];
      }
      if (item) break;
    }
    if (item) break;
  }
  const kv = item && (item.attributes || []).find((a) => a.key === 'testgen.index');
  return `${signal}:${kv ? String(kv.value.intValue) : '?'}`;
}

// google.rpc.Status{code, message, details:[Any{RetryInfo{retry_delay}}]} written by hand with
// protobufjs' Writer: the well-known messages are three fields each.
function rpcStatusWithRetryInfo(code, message, delayMs) {
  const dur = protobuf.Writer.create();
  dur.uint32((1 << 3) | 0).int64(Math.floor(delayMs / 1000));
  dur.uint32((2 << 3) | 0).int32((delayMs % 1000) * 1e6);
  const ri = protobuf.Writer.create();
  ri.uint32((1 << 3) | 2).bytes(dur.finish());
  const any = protobuf.Writer.create();
  any.uint32((1 << 3) | 2).string('type.googleapis.com/google.rpc.RetryInfo');
  any.uint32((2 << 3) | 2).bytes(ri.finish());
  const st = protobuf.Writer.create();
  st.uint32((1 << 3) | 0).int32(code);
  st.uint32((2 << 3) | 2).string(message);
  st.uint32((3 << 3) | 2).bytes(any.finish());
  return Buffer.from(st.finish());
}

function hexToB64(obj) {
  // OTLP-JSON ids are hex; protobufjs' fromObject reads bytes as base64.
  if (Array.isArray(obj)) return obj.forEach(hexToB64);
  if (!obj || typeof obj !== 'object') return;
  for (const k of Object.keys(obj)) {
    if ((k === 'traceId' || k === 'spanId' || k === 'parentSpanId') && typeof obj[k] === 'string')
      obj[k] = Buffer.from(obj[k], 'hex').toString('base64');
    else hexToB64(obj[k]);
  }
}

function decompress(enc, buf) {
  if (!enc || enc === 'identity') return buf;
  if (enc === 'gzip') return zlib.gunzipSync(buf);
  if (enc === 'deflate') return zlib.inflateSync(buf);
  if (enc === 'zstd') return Buffer.from(fzstd.decompress(buf));
  throw new Error('unsupported encoding ' + enc);
}

class Reference {
  constructor(opts = {}) {
    this.opts = opts;
    this.behavior = Object.assign(
      {
        failFirst: 0, // fail this many requests (all signals together)
        grpcCode: 14, // UNAVAILABLE
        retryInfoMs: 0, // > 0: add RetryInfo with this delay to gRPC failures
        httpStatus: 503,
        retryAfter: null, // Retry-After header value on HTTP failures
        delayMs: 0, // wait before every answer
        partialReject: 0, // > 0: answer OK with partial_success rejecting this many
        hangFirst: 0, // hold this many requests (after failFirst) unrecorded for hangMs, then fail
        hangMs: 0,
      },
      opts.behavior || {},
    );
    this.reset();
  }

  reset() {
    this.received = { traces: [], metrics: [], logs: [] };
    this.items = { traces: 0, metrics: 0, logs: 0 };
    this.stats = { requests: 0, failed: 0, ok: 0, encodings: {}, contentTypes: {}, headers: [] };
    this.arrivals = []; // [ms, signal, items]
    this.log = []; // [ms, accepted] per request
  }

  // One decoded request: record it, then decide the answer. Returns {fail, code, ...} or {ok}.
  accept(signal, req, meta) {
    this.stats.requests++;
    this.stats.encodings[meta.encoding || 'identity'] =
      (this.stats.encodings[meta.encoding || 'identity'] || 0) + 1;
    if (meta.contentType)
      this.stats.contentTypes[meta.contentType] = (this.stats.contentTypes[meta.contentType] || 0) + 1;
    if (meta.headers && this.stats.headers.length < 5) this.stats.headers.push(meta.headers);
    const b = this.behavior;
    if (this.stats.failed < b.failFirst) {
      this.stats.failed++;
      this.log.push([Date.now(), false, requestKey(signal, req)]);
      return { fail: true };
    }
    if ((this.stats.hung || 0) < b.hangFirst) {
      this.stats.hung = (this.stats.hung || 0) + 1;
      this.log.push([Date.now(), false, requestKey(signal, req)]);
      return { fail: true, hang: true };
    }
    this.log.push([Date.now(), true, requestKey(signal, req)]);
    this.stats.ok++;
    const n = countItems(signal, req);
    this.items[signal] += n;
    this.arrivals.push([Date.now(), signal, n]);
    if (this.opts.keep !== false) this.received[signal].push(req);
    return { ok: true };
  }

  response(signal) {
    const s = SIGNALS[signal];
    const r = {};
    if (this.behavior.partialReject > 0)
      r.partialSuccess = { [s.rejectedKey]: this.behavior.partialReject, errorMessage: 'too old' };
    return s.Resp.fromObject(r);
  }

  later(fn, v) {
    const ms = v && v.hang ? this.behavior.hangMs : this.behavior.delayMs;
    if (ms > 0) setTimeout(fn, ms);
    else fn();
  }

  async startGrpc(port, tls) {
    const impl = this.opts.impl || 'grpc-js';
    if (impl === 'http2') return this.startHttp2(port, tls);
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 << 20 });
    for (const [signal, s] of Object.entries(SIGNALS)) {
      const def = {
        Export: {
          path: `/${s.service}/Export`,
          requestStream: false,
          responseStream: false,
          requestSerialize: (m) => Buffer.from(s.Req.encode(m).finish()),
          requestDeserialize: (b) => s.Req.decode(b),
          responseSerialize: (m) => Buffer.from(s.Resp.encode(m).finish()),
          responseDeserialize: (b) => s.Resp.decode(b),
        },
      };
      server.addService(def, {
        Export: (call, cb) => {
          const md = call.metadata.getMap();
          const v = this.accept(signal, call.request, {
            encoding: md['grpc-encoding'],
            contentType: 'application/grpc',
            headers: md,
          });
          this.later(() => {
            if (v.ok) return cb(null, this.response(signal));
            const b = this.behavior;
            const err = { code: b.grpcCode, details: 'reference backend says no' };
            if (b.retryInfoMs > 0) {
              const trailer = new grpc.Metadata();
              trailer.set(
                'grpc-status-details-bin',
                rpcStatusWithRetryInfo(b.grpcCode, err.details, b.retryInfoMs),
              );
              err.metadata = trailer;
            }
            cb(err);
          }, v);
        },
      });
    }
    const creds = tls
      ? grpc.ServerCredentials.createSsl(
          tls.ca || null,
          [{ cert_chain: tls.cert, private_key: tls.key }],
          !!tls.requireClientCert,
        )
      : grpc.ServerCredentials.createInsecure();
    this.grpcPort = await new Promise((res, rej) =>
      server.bindAsync(`127.0.0.1:${port}`, creds, (e, p) => (e ? rej(e) : res(p))),
    );
    this.grpcServer = server;
    return this.grpcPort;
  }

  // gRPC framing by hand on node:http2, for grpc-encoding zstd.
  async startHttp2(port) {
    const byPath = {};
    for (const [signal, s] of Object.entries(SIGNALS)) byPath[`/${s.service}/Export`] = signal;
    const server = http2.createServer();
    server.on('stream', (stream, headers) => {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        const signal = byPath[headers[':path']];
        const answer = (code, msg, body, extra) => {
          stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
          stream.on('wantTrailers', () =>
            stream.sendTrailers(Object.assign({ 'grpc-status': String(code), 'grpc-message': encodeURIComponent(msg) }, extra || {})),
          );
          if (body) {
            const f = Buffer.alloc(5);
            f.writeUInt32BE(body.length, 1);
            stream.end(Buffer.concat([f, body]));
          } else stream.end();
        };
        if (!signal) return answer(12, 'unknown method');
        let req;
        try {
          const buf = Buffer.concat(chunks);
          const len = buf.readUInt32BE(1);
          let msg = buf.subarray(5, 5 + len);
          if (buf[0] & 1) msg = decompress(headers['grpc-encoding'], msg);
          req = SIGNALS[signal].Req.decode(msg);
        } catch (e) {
          return answer(13, 'cannot decode: ' + e.message);
        }
        const v = this.accept(signal, req, { encoding: headers['grpc-encoding'], headers });
        this.later(() => {
          if (v.ok) return answer(0, '', Buffer.from(SIGNALS[signal].Resp.encode(this.response(signal)).finish()));
          const b = this.behavior;
          const extra = {};
          if (b.retryInfoMs > 0)
            extra['grpc-status-details-bin'] = rpcStatusWithRetryInfo(b.grpcCode, 'no', b.retryInfoMs).toString('base64');
          answer(b.grpcCode, 'reference backend says no', null, extra);
        }, v);
      });
    });
    await new Promise((res) => server.listen(port, '127.0.0.1', res));
    this.grpcPort = server.address().port;
    this.h2Server = server;
    return this.grpcPort;
  }

  async startHttp(port, tls) {
    const byPath = {};
    for (const [signal, s] of Object.entries(SIGNALS)) byPath[s.path] = signal;
    const handler = (req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const signal = byPath[req.url.split('?')[0]];
        if (req.method !== 'POST' || !signal) {
          res.writeHead(404);
          return res.end();
        }
        const ct = (req.headers['content-type'] || '').split(';')[0];
        let msg;
        try {
          const body = decompress(req.headers['content-encoding'], Buffer.concat(chunks));
          if (ct === 'application/json') {
            const obj = JSON.parse(body.toString('utf8'));
            hexToB64(obj);
            msg = SIGNALS[signal].Req.fromObject(obj);
          } else if (ct === 'application/x-protobuf') {
            msg = SIGNALS[signal].Req.decode(body);
          } else {
            res.writeHead(415);
            return res.end();
          }
        } catch (e) {
          res.writeHead(400, { 'content-type': 'text/plain' });
          return res.end('cannot decode: ' + e.message);
        }
        const v = this.accept(signal, msg, {
          encoding: req.headers['content-encoding'],
          contentType: ct,
          headers: req.headers,
        });
        this.later(() => {
          if (!v.ok) {
            const h = { 'content-type': 'text/plain' };
            if (this.behavior.retryAfter != null) h['retry-after'] = String(this.behavior.retryAfter);
            res.writeHead(this.behavior.httpStatus, h);
            return res.end('reference backend says no');
          }
          const r = this.response(signal);
          if (ct === 'application/json') {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify(SIGNALS[signal].Resp.toObject(r, { longs: String })));
          } else {
            res.writeHead(200, { 'content-type': 'application/x-protobuf' });
            res.end(Buffer.from(SIGNALS[signal].Resp.encode(r).finish()));
          }
        }, v);
      });
    };
    const server = tls
      ? https.createServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: !!tls.requireClientCert }, handler)
      : http.createServer(handler);
    server.keepAliveTimeout = 30000;
    await new Promise((res) => server.listen(port, '127.0.0.1', res));
    this.httpPort = server.address().port;
    this.httpServer = server;
    return this.httpPort;
  }

  async close() {
    if (this.grpcServer) {
      const s = this.grpcServer;
      this.grpcServer = null;
      s.forceShutdown();
    }
    for (const k of ['h2Server', 'httpServer']) {
      const s = this[k];
      if (!s) continue;
      this[k] = null;
      if (s.closeAllConnections) s.closeAllConnections();
      await new Promise((res) => s.close(() => res()));
    }
  }
}

async function startReference(opts = {}) {
  const r = new Reference(opts);
  if (opts.grpcPort !== undefined) await r.startGrpc(opts.grpcPort, opts.tls);
  if (opts.httpPort !== undefined) await r.startHttp(opts.httpPort, opts.httpTls);
  return r;
}

module.exports = { startReference, Reference, SIGNALS, countItems, requestKey };

if (require.main === module) {
  const a = process.argv.slice(2);
  const get = (k, d) => {
    const i = a.indexOf('--' + k);
    return i >= 0 ? a[i + 1] : d;
  };
  const opts = { impl: get('impl', 'grpc-js'), keep: false, behavior: {} };
  if (get('grpc')) opts.grpcPort = Number(get('grpc'));
  if (get('http')) opts.httpPort = Number(get('http'));
  if (get('delay-ms')) opts.behavior.delayMs = Number(get('delay-ms'));
  startReference(opts).then((r) => {
    console.log(JSON.stringify({ grpc: r.grpcPort, http: r.httpPort }));
    setInterval(() => console.log(JSON.stringify({ t: Date.now(), items: r.items, requests: r.stats.requests })), 1000);
  });
}

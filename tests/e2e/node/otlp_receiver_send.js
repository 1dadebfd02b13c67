// Sends known spans, metrics and logs to sonde's otlp receiver with the OpenTelemetry JS SDK and
// one of its OTLP exporters, then prints (JSON on stdout) what was sent, for the checker.
//
// usage: node otlp_receiver_send.js <grpc|proto|json> <grpc-or-http base url> <run id> [gzip]
'use strict';

const { diag, DiagConsoleLogger, DiagLogLevel } = require('@opentelemetry/api');
const { Resource } = require('@opentelemetry/resources');
const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { LoggerProvider, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const [kind, base, run, compression] = process.argv.slice(2);
if (!kind || !base || !run) {
  console.error('usage: otlp_receiver_send.js <grpc|proto|json> <url> <run> [gzip]');
  process.exit(2);
}
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);

const pkgs = {
  grpc: ['grpc', ''],
  proto: ['proto', ''],
  json: ['http', ''],
};
function exporter(signal) {
  const mod = require(`@opentelemetry/exporter-${signal}-otlp-${pkgs[kind][0]}`);
  const Ctor = mod[{ trace: 'OTLPTraceExporter', metrics: 'OTLPMetricExporter', logs: 'OTLPLogExporter' }[signal]];
  const path = { trace: '/v1/traces', metrics: '/v1/metrics', logs: '/v1/logs' }[signal];
  const noCert = !!process.env.E2E_TLS_NO_CLIENT_CERT;
  const opts = { url: kind === 'grpc' ? base : base + path, timeoutMillis: noCert ? 3000 : 10000 };
  if (compression) opts.compression = compression;
  const tlsDir = process.env.E2E_TLS_DIR;
  if (tlsDir && kind === 'grpc') {
    // TLS, and mTLS unless told to leave the client certificate out.
    const grpc = require('@grpc/grpc-js');
    const fs = require('fs');
    const rd = (n) => fs.readFileSync(`${tlsDir}/${n}`);
    opts.credentials = noCert ? grpc.credentials.createSsl(rd('ca.crt'))
      : grpc.credentials.createSsl(rd('ca.crt'), rd('client.key'), rd('client.crt'));
  }
  return new Ctor(opts);
}

// Exporter failures must fail the run, not only be logged.
function strict(exp) {
  const orig = exp.export.bind(exp);
  exp.export = (items, cb) =>
    orig(items, (res) => {
      if (res.code !== 0) {
        console.error(`export failed: ${res.error && res.error.message}`);
        process.exitCode = 1;
      }
      cb(res);
    });
  return exp;
}

const resource = new Resource({
  'service.name': `e2e-${kind}`,
  'e2e.run': run,
  'e2e.int': 42,
  'e2e.bool': true,
});
const N = 5;

async function traces() {
  const provider = new BasicTracerProvider({ resource });
  provider.addSpanProcessor(new SimpleSpanProcessor(strict(exporter('trace'))));
  const tracer = provider.getTracer('e2e-scope', '1.2.3');
  const out = [];
  const parent = tracer.startSpan('parent');
  for (let i = 0; i < N; i++) {
    const ctx = require('@opentelemetry/api').trace.setSpan(
      require('@opentelemetry/api').context.active(), parent);
    const span = tracer.startSpan(`span-${i}`, { attributes: { 'e2e.index': i, 'e2e.name': `item-${i}`, 'e2e.half': i / 2 + 0.25, 'e2e.list': ['a', `b${i}`] } }, ctx);
    span.addEvent('ev', { 'e2e.ev': i });
    span.end();
    const sc = span.spanContext();
    out.push({ name: `span-${i}`, traceId: sc.traceId, spanId: sc.spanId, parentSpanId: parent.spanContext().spanId, index: i });
  }
  parent.end();
  out.push({ name: 'parent', traceId: parent.spanContext().traceId, spanId: parent.spanContext().spanId, parentSpanId: '', index: -1 });
  await provider.forceFlush();
  await provider.shutdown();
  return out;
}

async function metrics() {
  const exp = strict(exporter('metrics'));
  const reader = new PeriodicExportingMetricReader({ exporter: exp, exportIntervalMillis: 600000 });
  const provider = new MeterProvider({ resource, readers: [reader] });
  const meter = provider.getMeter('e2e-scope', '1.2.3');
  const counter = meter.createCounter('e2e.counter', { description: 'a counter', unit: '1' });
  const hist = meter.createHistogram('e2e.histogram', { unit: 'ms' });
  const gauge = meter.createUpDownCounter('e2e.updown');
  for (let i = 0; i < N; i++) {
    counter.add(i + 1, { 'e2e.index': i });
    hist.record(i * 10 + 1, { 'e2e.index': i });
  }
  gauge.add(-7, { 'e2e.k': 'v' });
  await provider.forceFlush();
  await provider.shutdown();
  const pts = [];
  for (let i = 0; i < N; i++) {
    pts.push({ metric: 'e2e.counter', index: i, value: i + 1 });
    pts.push({ metric: 'e2e.histogram', index: i, count: 1, sum: i * 10 + 1 });
  }
  pts.push({ metric: 'e2e.updown', value: -7 });
  return pts;
}

async function logs() {
  const provider = new LoggerProvider({ resource });
  provider.addLogRecordProcessor(new SimpleLogRecordProcessor(strict(exporter('logs'))));
  const logger = provider.getLogger('e2e-scope', '1.2.3');
  const out = [];
  for (let i = 0; i < N; i++) {
    logger.emit({ severityNumber: 9, severityText: 'INFO', body: `log-${i}`, attributes: { 'e2e.index': i, 'e2e.name': `item-${i}` } });
    out.push({ body: `log-${i}`, index: i });
  }
  await provider.forceFlush();
  await provider.shutdown();
  return out;
}

(async () => {
  const spans = await traces();
  if (process.env.E2E_TLS_NO_CLIENT_CERT) { // only one signal: it is expected to fail
    process.stdout.write(JSON.stringify({ kind, run, spans, points: [], logs: [] }) + '\n');
    return;
  }
  const res = { kind, run, spans, points: await metrics(), logs: await logs() };
  process.stdout.write(JSON.stringify(res) + '\n');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

// Records known measurements with the OpenTelemetry JS metrics SDK and exports them to sonde's
// otlp receiver (OTLP/HTTP protobuf) in three collections, with delta or cumulative temporality,
// for e2e/prometheus. Prints the totals it recorded (JSON on stdout).
//
// usage: node prometheus_sdk_send.js <http base url> <delta|cumulative> <service name>
'use strict';

const { diag, DiagConsoleLogger, DiagLogLevel } = require('@opentelemetry/api');
const { Resource } = require('@opentelemetry/resources');
const {
  MeterProvider, PeriodicExportingMetricReader, View, ExponentialHistogramAggregation,
  ExplicitBucketHistogramAggregation,
} = require('@opentelemetry/sdk-metrics');
const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-proto');
const { AggregationTemporalityPreference } = require('@opentelemetry/exporter-metrics-otlp-http');

const [base, temporality, service] = process.argv.slice(2);
if (!base || !['delta', 'cumulative'].includes(temporality) || !service) {
  console.error('usage: prometheus_sdk_send.js <url> <delta|cumulative> <service>');
  process.exit(2);
}
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);

async function main() {
  const exporter = new OTLPMetricExporter({
    url: base + '/v1/metrics',
    temporalityPreference: temporality === 'delta' ? AggregationTemporalityPreference.DELTA
      : AggregationTemporalityPreference.CUMULATIVE,
  });
  // Exports only when flushed below, so each phase is one export.
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3600000 });
  const provider = new MeterProvider({
    resource: new Resource({ 'service.name': service, 'service.instance.id': 'sdk-1' }),
    readers: [reader],
    views: [
      new View({ instrumentName: 'exp.latency', aggregation: new ExponentialHistogramAggregation(160) }),
      new View({ instrumentName: 'http.duration',
        aggregation: new ExplicitBucketHistogramAggregation([0.1, 0.5, 1]) }),
    ],
  });
  const meter = provider.getMeter('sdk.test', '1.0');
  const requests = meter.createCounter('http.requests', { description: 'Requests.', unit: '{requests}' });
  const duration = meter.createHistogram('http.duration', { description: 'Request time.', unit: 's' });
  const inflight = meter.createUpDownCounter('http.inflight', { description: 'In flight.' });
  const exp = meter.createHistogram('exp.latency', { description: 'Latency.', unit: 's' });

  const total = { requests: 0, count: 0, sum: 0, inflight: 0, under_0_1: 0, exp_count: 0 };
  // Three phases, each exported: a delta exporter sends only what changed in the phase.
  const phases = [[0.05, 0.2, 0.3], [0.07, 0.6, 2.0, 0.01], [0.4]];
  for (const values of phases) {
    requests.add(values.length, { 'http.route': '/users/{id}' });
    total.requests += values.length;
    inflight.add(values.length % 2 ? 1 : -1);
    total.inflight += values.length % 2 ? 1 : -1;
    for (const v of values) {
      duration.record(v, { 'http.route': '/users/{id}' });
      exp.record(v);
      total.count++;
      total.sum += v;
      if (v <= 0.1) total.under_0_1++;
      total.exp_count++;
    }
    await reader.forceFlush();
  }
  await provider.shutdown();
  console.log(JSON.stringify(total));
}

main().catch((e) => { console.error(e); process.exit(1); });

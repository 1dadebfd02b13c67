'use strict';
// e2e: the fan-out isolation promise of config/pipelines/gateway.yaml. Three reference backends
// (tests/e2e/node/otlp_reference.js): a healthy gRPC one, a gRPC one that answers slowly, and an
// HTTP one that is down at first. testgen feeds the gateway pipelines (added next to the otlp
// receiver by an overlay config); then:
// Besides testgen, real OTLP clients send 200 more spans through the gateway's own otlp receiver
// (100 over gRPC with @grpc/grpc-js, 100 over HTTP protobuf), shaped like testgen's. Then:
//   - the healthy backend receives every item, field by field, as fast as in a run without the
//     bad backends (within a margin);
//   - the stopped backend's items wait in its queue and arrive once it starts;
//   - what overflows the small queues is counted in otelcol_exporter_enqueue_failed_*, and for
//     every exporter and signal sent + enqueue_failed + send_failed == produced, with the
//     backend holding exactly what `sent` says.
const path = require('node:path');
const fs = require('node:fs');
const { startReference } = require('./node/otlp_reference.js');
const H = require('./node/otlp_exporter_harness.js');
const client = require('./node/otlp_testgen_client.js');

const SRC = process.env.SONDE_SOURCE_DIR || path.resolve(__dirname, '../..');
const GATEWAY = path.join(SRC, 'config/pipelines/gateway.yaml');
const COUNT = 4000;
const SIGNALS = ['traces', 'metrics', 'logs'];
const ITEM = { traces: 'spans', metrics: 'metric_points', logs: 'log_records' };
const EXPORTERS = ['otlp/primary', 'otlp/secondary', 'otlphttp/archive'];
const SLOW_MS = 500;

function overlay(exporters) {
  const list = `[${exporters.join(', ')}]`;
  return `receivers:
  testgen:
    count: ${COUNT}
    per_batch: 40
    interval: 10ms
processors:
  batch:
    send_batch_size: 200
    timeout: 100ms
exporters:
  otlp/secondary:
    sending_queue:
      num_consumers: 2
      queue_size: 5
    retry_on_failure:
      initial_interval: 200ms
      max_interval: 1s
  otlphttp/archive:
    sending_queue:
      num_consumers: 1
      queue_size: 2
    retry_on_failure:
      initial_interval: 200ms
      max_interval: 1s
service:
  pipelines:
${SIGNALS.map((s) => `    ${s}:\n      receivers: [otlp, testgen]\n      exporters: ${list}`).join('\n')}
`;
}

async function runGateway(ports, exporters) {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'sonde-gw-'));
  const ov = path.join(dir, 'overlay.yaml');
  fs.writeFileSync(ov, overlay(exporters));
  const env = {
    SONDE_GATEWAY_GRPC_ENDPOINT: `127.0.0.1:${ports.inGrpc}`,
    SONDE_GATEWAY_HTTP_ENDPOINT: `127.0.0.1:${ports.inHttp}`,
    SONDE_GATEWAY_PRIMARY: `127.0.0.1:${ports.healthy}`,
    SONDE_GATEWAY_SECONDARY: `127.0.0.1:${ports.slow}`,
    SONDE_GATEWAY_ARCHIVE: `http://127.0.0.1:${ports.stopped}`,
    SONDE_GATEWAY_METRICS_ADDRESS: `127.0.0.1:${ports.metrics}`,
  };
  // runSonde writes one config; pass the gateway file first and the overlay after it.
  const s = await H.runSonde(fs.readFileSync(GATEWAY, 'utf8'), { env, extraConfigs: [ov] });
  s.overlayDir = dir;
  return s;
}

// Duration from the first to the last item arrival at a backend.
function span(ref) {
  const a = ref.arrivals;
  return a.length ? a[a.length - 1][0] - a[0][0] : 0;
}

async function ports() {
  const p = {};
  for (const k of ['inGrpc', 'inHttp', 'healthy', 'slow', 'stopped', 'metrics']) p[k] = await H.freePort();
  return p;
}

(async () => {
  const errs = [];
  const notes = [];
  // 1. Baseline: the healthy backend alone.
  let p = await ports();
  let healthy = await startReference({ grpcPort: p.healthy });
  let s = await runGateway(p, ['otlp/primary']);
  let baseline = 0;
  try {
    await H.waitFor(() => SIGNALS.every((g) => healthy.items[g] >= COUNT), 30000, 'baseline delivery');
    baseline = span(healthy);
    notes.push(`baseline: healthy backend got ${COUNT} items per signal in ${baseline} ms`);
  } catch (e) {
    errs.push('baseline: ' + e.message);
  }
  errs.push(...(await s.stop()).problems);
  await healthy.close();

  // 2. The same load with a slow and a stopped backend next to it.
  p = await ports();
  healthy = await startReference({ grpcPort: p.healthy });
  const slow = await startReference({ grpcPort: p.slow, behavior: { delayMs: SLOW_MS } });
  s = await runGateway(p, EXPORTERS);
  let stopped = null;
  const produced = { traces: COUNT + 200, metrics: COUNT, logs: COUNT };
  try {
    const sends = [];
    for (let k = 0; k < 10; k++) {
      sends.push(client.sendGrpc(`127.0.0.1:${p.inGrpc}`, client.traces(COUNT + k * 10, 10, 0, 1000 + k)));
      sends.push(client.sendHttp(`127.0.0.1:${p.inHttp}`, client.traces(COUNT + 100 + k * 10, 10, 0, 2000 + k)));
    }
    const st = await Promise.all(sends);
    const bad = st.filter((x, k) => x !== (k % 2 ? 200 : 0));
    if (bad.length) errs.push(`the otlp receiver answered ${JSON.stringify(st)}`);
    await H.waitFor(() => SIGNALS.every((g) => healthy.items[g] >= produced[g]), 30000, 'healthy delivery');
    await H.sleep(300);
    const took = span(healthy);
    notes.push(`with a slow and a stopped backend: healthy got ${JSON.stringify(produced)} items in ${took} ms`);
    if (took > baseline * 1.5 + 500) errs.push(`healthy backend slowed down: ${took} ms vs ${baseline} ms alone`);
    for (const g of SIGNALS) errs.push(...H.checkComplete(g, healthy.received[g], produced[g]));
    if (!/0 refusals/.test(s.log())) errs.push('the receiver (testgen) was refused: back-pressure leaked');

    // The stopped backend starts now; its queued items arrive.
    let m = await H.scrape(p.metrics);
    const queuedBefore = H.metric(m, 'otelcol_exporter_queue_size', { exporter: 'otlphttp/archive' });
    notes.push(`archive (stopped) queue before start: ${queuedBefore} requests`);
    stopped = await startReference({ httpPort: p.stopped });
    const settled = async () => {
      m = await H.scrape(p.metrics);
      return EXPORTERS.every((e) =>
        SIGNALS.every((g) => {
          const it = ITEM[g];
          const sum =
            H.metric(m, `otelcol_exporter_sent_${it}_total`, { exporter: e }) +
            H.metric(m, `otelcol_exporter_enqueue_failed_${it}_total`, { exporter: e }) +
            H.metric(m, `otelcol_exporter_send_failed_${it}_total`, { exporter: e });
          return sum === produced[g];
        }),
      );
    };
    await H.waitFor(settled, 60000, 'sent + enqueue_failed + send_failed == produced for every exporter').catch((e) => {
      errs.push(e.message);
    });
    await H.sleep(500);
    m = await H.scrape(p.metrics);
    const backends = { 'otlp/primary': healthy, 'otlp/secondary': slow, 'otlphttp/archive': stopped };
    for (const e of EXPORTERS) {
      for (const g of SIGNALS) {
        const it = ITEM[g];
        const sent = H.metric(m, `otelcol_exporter_sent_${it}_total`, { exporter: e });
        const enq = H.metric(m, `otelcol_exporter_enqueue_failed_${it}_total`, { exporter: e });
        const fail = H.metric(m, `otelcol_exporter_send_failed_${it}_total`, { exporter: e });
        notes.push(`${e} ${g}: sent ${sent}, enqueue_failed ${enq}, send_failed ${fail}, backend has ${backends[e].items[g]}`);
        if (sent + enq + fail !== produced[g]) errs.push(`${e} ${g}: ${sent}+${enq}+${fail} != ${produced[g]}`);
        if (backends[e].items[g] !== sent) errs.push(`${e} ${g}: backend has ${backends[e].items[g]} items, sent says ${sent}`);
        const { errs: fe, seen } = H.checkTestgen(g, backends[e].received[g]);
        errs.push(...fe.slice(0, 5));
        for (const [i, n] of seen) if (n !== 1) errs.push(`${e} ${g}: item ${i} arrived ${n} times`);
      }
    }
    for (const g of SIGNALS) {
      const enq = H.metric(m, `otelcol_exporter_enqueue_failed_${ITEM[g]}_total`, { exporter: 'otlphttp/archive' });
      if (!(enq > 0)) errs.push(`archive ${g}: a queue of 2 should have overflowed (enqueue_failed ${enq})`);
      if (!(stopped.items[g] > 0)) errs.push(`archive ${g}: nothing arrived after the backend started`);
    }
  } catch (e) {
    errs.push(e.stack || e.message);
  }
  errs.push(...(await s.stop()).problems);
  await healthy.close();
  await slow.close();
  if (stopped) await stopped.close();
  fs.rmSync(s.overlayDir, { recursive: true, force: true });
  for (const n of notes) console.log('# ' + n);
  if (errs.length) {
    console.log('not ok gateway_isolation\n  ' + errs.slice(0, 40).join('\n  '));
    console.log('sonde log (tail):\n' + s.log().split('\n').slice(-20).join('\n'));
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  console.log('ok gateway_isolation');
  console.log('1 passed, 0 failed');
})();

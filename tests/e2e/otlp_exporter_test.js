'use strict';
// e2e: testgen -> otlp_grpc / otlp_http exporter -> reference backend (tests/e2e/node/
// otlp_reference.js, decoding with opentelemetry-proto code we did not write). Every span, data
// point and log record is checked field by field; retries, permanent errors and partial success
// are checked against the exporter's self-metrics.
//   node otlp_exporter_test.js <case> [<case> ...]     (no case: all)
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { execFileSync } = require('node:child_process');
const { startReference } = require('./node/otlp_reference.js');
const H = require('./node/otlp_exporter_harness.js');

const COUNT = 200;
const PER_BATCH = 20;
const SIGNALS = ['traces', 'metrics', 'logs'];
const ITEM = { traces: 'spans', metrics: 'metric_points', logs: 'log_records' };

function yaml({ type, id = 'x', lines, metricsPort, retry = true, count = COUNT }) {
  const exp = `${type}/${id}`;
  return `receivers:
  testgen:
    count: ${count}
    per_batch: ${PER_BATCH}
    interval: 5ms
exporters:
  ${exp}:
${lines.map((l) => '    ' + l).join('\n')}
    timeout: 5s
    retry_on_failure:
      enabled: ${retry}
      initial_interval: 100ms
      max_interval: 200ms
      max_elapsed_time: 60s
service:
  telemetry:
    metrics:
      address: 127.0.0.1:${metricsPort}
  pipelines:
${SIGNALS.map((s) => `    ${s}:\n      receivers: [testgen]\n      exporters: [${exp}]`).join('\n')}
`;
}

// Self-signed CA, a server certificate for localhost/127.0.0.1 and a client certificate.
function makeCerts(dir) {
  const o = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: 'pipe' });
  o('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=sonde-test-ca');
  for (const [n, san] of [
    ['server', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    ['client', 'subjectAltName=DNS:client'],
  ]) {
    o('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${n}`);
    fs.writeFileSync(path.join(dir, `${n}.ext`), san + '\n');
    o('x509', '-req', '-in', `${n}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${n}.pem`, '-days', '2', '-extfile', `${n}.ext`);
  }
  const r = (f) => fs.readFileSync(path.join(dir, f));
  return { ca: r('ca.pem'), cert: r('server.pem'), key: r('server.key'), requireClientCert: true, dir };
}

async function waitItems(ref, count, ms = 30000) {
  await H.waitFor(() => SIGNALS.every((s) => ref.items[s] >= count), ms, `${count} items per signal (have ${JSON.stringify(ref.items)})`);
  await H.sleep(300); // a late duplicate would show now
}

function checkAll(ref, errs, count = COUNT) {
  for (const s of SIGNALS) errs.push(...H.checkComplete(s, ref.received[s], count));
}

async function checkMetrics(port, exp, want, errs) {
  const m = await H.scrape(port);
  for (const s of SIGNALS) {
    for (const [k, v] of Object.entries(want)) {
      const got = H.metric(m, `otelcol_exporter_${k}_${ITEM[s]}_total`, { exporter: exp });
      if (got !== v) errs.push(`${exp}: otelcol_exporter_${k}_${ITEM[s]}_total = ${got}, want ${v}`);
    }
  }
  return m;
}

// A normal run: start the backend, run sonde, check everything arrived intact.
async function delivery({ type, impl = 'grpc-js', lines, http = false, tls, check }) {
  const errs = [];
  const port = await H.freePort();
  const mport = await H.freePort();
  const ref = await startReference(http ? { httpPort: port, httpTls: tls } : { grpcPort: port, impl, tls });
  const ep = http ? `http${tls ? 's' : ''}://localhost:${port}` : tls ? `localhost:${port}` : `127.0.0.1:${port}`;
  const sonde = await H.runSonde(yaml({ type, lines: [`endpoint: ${ep}`, ...lines], metricsPort: mport }));
  try {
    await waitItems(ref, COUNT);
    checkAll(ref, errs);
    await checkMetrics(mport, `${type}/x`, { sent: COUNT, send_failed: 0, enqueue_failed: 0 }, errs);
    if (check) check(ref, errs);
  } catch (e) {
    errs.push(e.message);
  }
  errs.push(...(await sonde.stop()).problems);
  await ref.close();
  if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-15).join('\n'));
  return errs;
}

// The backend fails the first requests with `behavior`; data arrives once all the same.
async function retried({ type, http = false, impl = 'grpc-js', behavior, lines = [], check }) {
  const errs = [];
  const port = await H.freePort();
  const mport = await H.freePort();
  const ref = await startReference(http ? { httpPort: port, behavior } : { grpcPort: port, impl, behavior });
  const ep = http ? `http://127.0.0.1:${port}` : `127.0.0.1:${port}`;
  const extra = http ? [] : ['tls:', '  insecure: true'];
  const sonde = await H.runSonde(yaml({ type, lines: [`endpoint: ${ep}`, ...extra, ...lines], metricsPort: mport }));
  try {
    await waitItems(ref, COUNT);
    checkAll(ref, errs);
    await checkMetrics(mport, `${type}/x`, { sent: COUNT, send_failed: 0 }, errs);
    if (ref.stats.failed !== behavior.failFirst) errs.push(`backend failed ${ref.stats.failed} requests, want ${behavior.failFirst}`);
    if (check) check(ref, errs, sonde);
  } catch (e) {
    errs.push(e.message);
  }
  errs.push(...(await sonde.stop()).problems);
  await ref.close();
  if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-15).join('\n'));
  return errs;
}

// Every request fails permanently: nothing is retried, everything is counted as send_failed.
async function permanent({ type, http = false, behavior, logMatch }) {
  const errs = [];
  const port = await H.freePort();
  const mport = await H.freePort();
  const ref = await startReference(http ? { httpPort: port, behavior } : { grpcPort: port, behavior });
  const ep = http ? `http://127.0.0.1:${port}` : `127.0.0.1:${port}`;
  const extra = http ? [] : ['tls:', '  insecure: true'];
  const sonde = await H.runSonde(yaml({ type, lines: [`endpoint: ${ep}`, ...extra], metricsPort: mport }));
  const batches = (COUNT / PER_BATCH) * SIGNALS.length;
  try {
    await H.waitFor(async () => {
      const m = await H.scrape(mport);
      return SIGNALS.every((s) => H.metric(m, `otelcol_exporter_send_failed_${ITEM[s]}_total`, { exporter: `${type}/x` }) >= COUNT);
    }, 20000, 'send_failed to reach the count');
    await H.sleep(500); // a retry would show now
    await checkMetrics(mport, `${type}/x`, { sent: 0, send_failed: COUNT }, errs);
    if (ref.stats.requests !== batches) errs.push(`backend saw ${ref.stats.requests} requests, want ${batches} (no retries)`);
    if (logMatch && !logMatch.test(sonde.log())) errs.push(`log lacks ${logMatch}`);
  } catch (e) {
    errs.push(e.message);
  }
  errs.push(...(await sonde.stop()).problems);
  await ref.close();
  if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-15).join('\n'));
  return errs;
}

// Time from the first refused request to the accepted retry of the same request.
const firstOkAfterFirstFail = (ref) => {
  const f = ref.log.find((e) => !e[1]);
  const o = f && ref.log.find((e) => e[1] && e[2] === f[2]);
  return f && o ? o[0] - f[0] : -1;
};

const CASES = {
  grpc_none: () => delivery({ type: 'otlp', lines: ['compression: none', 'tls:', '  insecure: true'] }),
  grpc_gzip_headers: () =>
    delivery({
      type: 'otlp_grpc',
      lines: ['tls:', '  insecure: true', 'headers:', '  x-scope-orgid: tenant-1'],
      check: (ref, errs) => {
        const h = ref.stats.headers[0] || {};
        if (h['x-scope-orgid'] !== 'tenant-1') errs.push(`header x-scope-orgid: ${JSON.stringify(h)}`);
      },
    }),
  grpc_zstd: () =>
    delivery({
      type: 'otlp',
      impl: 'http2',
      lines: ['compression: zstd', 'compression_params:', '  level: 3', 'tls:', '  insecure: true'],
      check: (ref, errs) => {
        if (!ref.stats.encodings.zstd) errs.push(`no zstd request: ${JSON.stringify(ref.stats.encodings)}`);
      },
    }),
  grpc_gzip_wire: () =>
    delivery({
      type: 'otlp',
      impl: 'http2',
      lines: ['tls:', '  insecure: true'],
      check: (ref, errs) => {
        const h = ref.stats.headers[0] || {};
        if (h['grpc-encoding'] !== 'gzip' || h.te !== 'trailers' || h['grpc-timeout'] !== '5000m')
          errs.push(`request headers: ${JSON.stringify(h)}`);
      },
    }),
  grpc_mtls: async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sonde-certs-'));
    const tls = makeCerts(dir);
    const errs = await delivery({
      type: 'otlp',
      tls,
      lines: ['tls:', `  ca_file: ${dir}/ca.pem`, `  cert_file: ${dir}/client.pem`, `  key_file: ${dir}/client.key`],
    });
    fs.rmSync(dir, { recursive: true, force: true });
    return errs;
  },
  http_mtls: async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sonde-certs-'));
    const tls = makeCerts(dir);
    const errs = await delivery({
      type: 'otlphttp',
      http: true,
      tls,
      lines: ['tls:', `  ca_file: ${dir}/ca.pem`, `  cert_file: ${dir}/client.pem`, `  key_file: ${dir}/client.key`],
    });
    fs.rmSync(dir, { recursive: true, force: true });
    return errs;
  },
  // The backend goes away mid-run and comes back on the same port: the exporter reconnects.
  // A request the backend took just before dying may come again (at-least-once), none is lost.
  grpc_backend_restart: async () => {
    const errs = [];
    const port = await H.freePort();
    const mport = await H.freePort();
    let ref = await startReference({ grpcPort: port });
    const y = yaml({ type: 'otlp', lines: [`endpoint: 127.0.0.1:${port}`, 'tls:', '  insecure: true'], metricsPort: mport })
      .replace('interval: 5ms', 'interval: 100ms');
    const sonde = await H.runSonde(y);
    const got = { traces: [], metrics: [], logs: [] };
    try {
      await H.sleep(400);
      await ref.close();
      for (const s of SIGNALS) got[s].push(...ref.received[s]);
      await H.sleep(700);
      ref = await startReference({ grpcPort: port });
      await H.waitFor(async () => {
        const m = await H.scrape(mport);
        return SIGNALS.every((s) => H.metric(m, `otelcol_exporter_sent_${ITEM[s]}_total`, { exporter: 'otlp/x' }) >= COUNT);
      }, 30000, 'everything sent');
      await H.sleep(300);
      for (const s of SIGNALS) {
        got[s].push(...ref.received[s]);
        const { errs: fe, seen } = H.checkTestgen(s, got[s]);
        errs.push(...fe.slice(0, 5));
        for (let i = 0; i < COUNT; i++) if (!seen.get(i)) errs.push(`${s}: item ${i} lost`);
      }
      await checkMetrics(mport, 'otlp/x', { sent: COUNT, send_failed: 0 }, errs);
      if (!/Unavailable/.test(sonde.log())) errs.push('the backend restart was not noticed');
    } catch (e) {
      errs.push(e.message);
    }
    errs.push(...(await sonde.stop()).problems);
    await ref.close();
    if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-15).join('\n'));
    return errs;
  },
  http_proto_gzip: () =>
    delivery({
      type: 'otlphttp',
      http: true,
      lines: ['headers:', '  x-scope-orgid: tenant-2', 'compression_params:', '  level: 1'],
      check: (ref, errs) => {
        const h = ref.stats.headers[0] || {};
        if (h['content-encoding'] !== 'gzip' || h['x-scope-orgid'] !== 'tenant-2') errs.push(`headers ${JSON.stringify(h)}`);
      },
    }),
  http_proto_zstd: () =>
    delivery({
      type: 'otlp_http',
      http: true,
      lines: ['compression: zstd'],
      check: (ref, errs) => {
        if (!ref.stats.encodings.zstd) errs.push(`no zstd request: ${JSON.stringify(ref.stats.encodings)}`);
      },
    }),
  http_json: () =>
    delivery({
      type: 'otlp_http',
      http: true,
      lines: ['compression: none', 'encoding: json'],
      check: (ref, errs) => {
        if (!ref.stats.contentTypes['application/json']) errs.push(`content types ${JSON.stringify(ref.stats.contentTypes)}`);
      },
    }),
  grpc_retry_unavailable: () => retried({ type: 'otlp', behavior: { failFirst: 5, grpcCode: 14 } }),
  grpc_retry_info: () =>
    retried({
      type: 'otlp',
      behavior: { failFirst: 1, grpcCode: 8, retryInfoMs: 1500 },
      check: (ref, errs) => {
        const gap = firstOkAfterFirstFail(ref);
        if (gap < 1400) errs.push(`RetryInfo 1.5s not honoured: retried after ${gap} ms`);
      },
    }),
  grpc_permanent_invalid: () =>
    permanent({ type: 'otlp', behavior: { failFirst: 1e9, grpcCode: 3 }, logMatch: /InvalidArgument/ }),
  grpc_exhausted_without_retryinfo: () =>
    permanent({ type: 'otlp', behavior: { failFirst: 1e9, grpcCode: 8 }, logMatch: /ResourceExhausted/ }),
  http_retry_after: () =>
    retried({
      type: 'otlphttp',
      http: true,
      behavior: { failFirst: 1, httpStatus: 503, retryAfter: '1' },
      check: (ref, errs) => {
        const gap = firstOkAfterFirstFail(ref);
        if (gap < 900) errs.push(`Retry-After: 1 not honoured: retried after ${gap} ms`);
      },
    }),
  http_retry_502: () => retried({ type: 'otlphttp', http: true, behavior: { failFirst: 4, httpStatus: 502 } }),
  // A backend that hangs: the stream is reset at request_timeout (DEADLINE_EXCEEDED) and retried.
  grpc_deadline: () =>
    retried({
      type: 'otlp',
      behavior: { failFirst: 0, hangFirst: 2, hangMs: 4000 },
      lines: ['request_timeout: 500ms'],
      check: (ref, errs, sonde) => {
        if (!/DeadlineExceeded/.test(sonde.log())) errs.push('no DeadlineExceeded in the log');
      },
    }),
  http_deadline: () =>
    retried({
      type: 'otlphttp',
      http: true,
      behavior: { failFirst: 0, hangFirst: 2, hangMs: 4000 },
      lines: ['request_timeout: 500ms'],
      check: (ref, errs, sonde) => {
        if (!/deadline exceeded/.test(sonde.log())) errs.push('no deadline in the log');
      },
    }),
  // Shutdown while both backends hang: in-flight exports are cancelled at the core's deadline and
  // sonde exits cleanly (status 0, no leak under sanitizers) instead of waiting for them.
  shutdown_hung_backend: async () => {
    const errs = [];
    const gp = await H.freePort();
    const hp = await H.freePort();
    const mport = await H.freePort();
    const behavior = { hangFirst: 1e9, hangMs: 60000 };
    const g = await startReference({ grpcPort: gp, behavior });
    const h = await startReference({ httpPort: hp, behavior });
    const y = `receivers:
  testgen:
    count: 100
exporters:
  otlp:
    endpoint: 127.0.0.1:${gp}
    request_timeout: 60s
    timeout: 60s
    tls:
      insecure: true
  otlphttp:
    endpoint: http://127.0.0.1:${hp}
    request_timeout: 60s
    timeout: 60s
service:
  telemetry:
    metrics:
      address: 127.0.0.1:${mport}
  pipelines:
    traces:
      receivers: [testgen]
      exporters: [otlp, otlphttp]
`;
    const sonde = await H.runSonde(y, { args: ['--shutdown-timeout', '1s'] });
    await H.waitFor(() => g.stats.requests >= 10 && h.stats.requests >= 10, 10000, 'requests to hang').catch((e) => errs.push(e.message));
    const t0 = Date.now();
    errs.push(...(await sonde.stop()).problems);
    const took = Date.now() - t0;
    if (took > 8000) errs.push(`shutdown took ${took} ms with a 1s deadline`);
    if (!/cancelling \d+ export/.test(sonde.log()) || !/cancelled \d+ export/.test(sonde.log()))
      errs.push('in-flight exports were not cancelled');
    await g.close();
    await h.close();
    if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-12).join('\n'));
    return errs;
  },
  // Servers that never answer: one accepts TCP and stays silent (gRPC drops the connection once
  // streams expire without a byte from it; HTTP requests hit their deadline), one never completes
  // the TCP handshake (a full accept queue drops SYNs: connect timeout). Nothing hangs, sonde
  // keeps retrying and exits cleanly.
  silent_and_blackholed_servers: async () => {
    const errs = [];
    const net = require('node:net');
    const { spawn } = require('node:child_process');
    const silent = net.createServer(() => {});
    await new Promise((r) => silent.listen(0, '127.0.0.1', r));
    const sp = silent.address().port;
    const bp = await H.freePort();
    const hole = spawn('python3', ['-c', `
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", ${bp})); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", ${bp}))
    except BlockingIOError: pass
    fill.append(c)
print("ready", flush=True)
time.sleep(60)
`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => hole.stdout.once('data', r));
    const mport = await H.freePort();
    const exp = (name, ep, insecure) =>
      `  ${name}:\n    endpoint: ${ep}\n    request_timeout: 400ms\n    timeout: 400ms\n` + (insecure ? '    tls:\n      insecure: true\n' : '');
    const y = `receivers:
  testgen:
    count: 40
exporters:
${exp('otlp/silent', `127.0.0.1:${sp}`, true)}${exp('otlphttp/silent', `http://127.0.0.1:${sp}`, false)}${exp('otlp/hole', `127.0.0.1:${bp}`, true)}${exp('otlphttp/hole', `http://127.0.0.1:${bp}`, false)}service:
  telemetry:
    metrics:
      address: 127.0.0.1:${mport}
  pipelines:
    traces:
      receivers: [testgen]
      exporters: [otlp/silent, otlphttp/silent, otlp/hole, otlphttp/hole]
`;
    const sonde = await H.runSonde(y, { args: ['--shutdown-timeout', '1s'] });
    const want = [
      [/otlp\/silent: .*no answer from the server within request_timeout/, 'gRPC silent server: connection not dropped'],
      [/otlphttp\/silent: .*context deadline exceeded/, 'HTTP silent server: no deadline'],
      [/otlp\/hole: .*connect timeout/, 'gRPC black hole: no connect timeout'],
      [/otlphttp\/hole: .*connect timeout/, 'HTTP black hole: no connect timeout'],
    ];
    await H.waitFor(() => want.every(([re]) => re.test(sonde.log())), 15000, 'timeouts').catch(() => {});
    for (const [re, msg] of want) if (!re.test(sonde.log())) errs.push(msg);
    errs.push(...(await sonde.stop()).problems);
    hole.kill();
    silent.close();
    if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-20).join('\n'));
    return errs;
  },
  http_permanent_400: () =>
    permanent({ type: 'otlphttp', http: true, behavior: { failFirst: 1e9, httpStatus: 400 }, logMatch: /HTTP Status Code 400/ }),
  grpc_reconnect: async () => {
    // No backend at first: sends fail (connection refused) and wait in the retry loop; the
    // backend starts later and everything arrives once.
    const errs = [];
    const port = await H.freePort();
    const mport = await H.freePort();
    const sonde = await H.runSonde(
      yaml({ type: 'otlp', lines: [`endpoint: 127.0.0.1:${port}`, 'tls:', '  insecure: true'], metricsPort: mport }),
    );
    await H.sleep(1500);
    const ref = await startReference({ grpcPort: port });
    try {
      await waitItems(ref, COUNT, 45000);
      checkAll(ref, errs);
      await checkMetrics(mport, 'otlp/x', { sent: COUNT, send_failed: 0 }, errs);
      if (!/connection refused|ECONNREFUSED/i.test(sonde.log())) errs.push('no connection error was logged');
    } catch (e) {
      errs.push(e.message);
    }
    errs.push(...(await sonde.stop()).problems);
    await ref.close();
    if (errs.length) errs.push('sonde log:\n' + sonde.log().split('\n').slice(-15).join('\n'));
    return errs;
  },
};

// partial_success: answered OK with rejected items, which are logged and counted.
CASES.partial_success = async () => {
  const errs = [];
  for (const http of [false, true]) {
    const port = await H.freePort();
    const mport = await H.freePort();
    const type = http ? 'otlphttp' : 'otlp';
    const ref = await startReference(http ? { httpPort: port, behavior: { partialReject: 2 } } : { grpcPort: port, behavior: { partialReject: 2 } });
    const lines = http ? [`endpoint: http://127.0.0.1:${port}`, 'encoding: json'] : [`endpoint: 127.0.0.1:${port}`, 'tls:', '  insecure: true'];
    const sonde = await H.runSonde(yaml({ type, lines, metricsPort: mport }));
    try {
      await waitItems(ref, COUNT);
      const m = await checkMetrics(mport, `${type}/x`, { sent: COUNT, send_failed: 0 }, errs);
      const reqs = COUNT / PER_BATCH;
      for (const s of SIGNALS) {
        const got = H.metric(m, `otelcol_exporter_partial_success_rejected_${ITEM[s]}_total`, { exporter: `${type}/x` });
        if (got !== 2 * reqs) errs.push(`${type}: partial_success rejected ${ITEM[s]} = ${got}, want ${2 * reqs}`);
      }
      if (!/Partial success response/.test(sonde.log())) errs.push(`${type}: partial success not logged`);
    } catch (e) {
      errs.push(e.message);
    }
    errs.push(...(await sonde.stop()).problems);
    await ref.close();
  }
  return errs;
};

(async () => {
  const want = process.argv.slice(2);
  const names = want.length ? want : Object.keys(CASES);
  let passed = 0;
  let failed = 0;
  for (const n of names) {
    if (!CASES[n]) {
      console.log(`unknown case ${n}`);
      failed++;
      continue;
    }
    const t0 = Date.now();
    let errs;
    try {
      errs = await CASES[n]();
    } catch (e) {
      errs = [e.stack || String(e)];
    }
    if (errs.length) {
      failed++;
      console.log(`not ok ${n} (${Date.now() - t0} ms)\n  ` + errs.slice(0, 30).join('\n  '));
    } else {
      passed++;
      console.log(`ok ${n} (${Date.now() - t0} ms)`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();

'use strict';
// Helpers for the OTLP exporter and gateway e2e drivers: run sonde with a config, read its
// self-metrics, and check what testgen produced item by item as a reference backend decoded it.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');

const BUILD = process.env.SONDE_BUILD_DIR || path.resolve(__dirname, '../../../build');

async function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
    s.on('error', rej);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + (what || 'condition'));
    await sleep(50);
  }
}

// Starts sonde on a config text; resolves once it logged "ready".
async function runSonde(yaml, opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sonde-otlp-'));
  const cfg = path.join(dir, 'config.yaml');
  fs.writeFileSync(cfg, yaml);
  const bin = path.join(BUILD, 'bin', 'sonde');
  const args = ['--config', cfg];
  for (const extra of opts.extraConfigs || []) args.push('--config', extra);
  args.push(...(opts.args || []));
  const proc = spawn(bin, args, {
    env: Object.assign({}, process.env, opts.env || {}),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  let exited = null;
  proc.on('exit', (code, sig) => (exited = { code, sig }));
  const s = {
    proc,
    dir,
    log: () => out,
    exited: () => exited,
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        await waitFor(() => exited, 20000, 'sonde to exit');
      }
      fs.rmSync(dir, { recursive: true, force: true });
      // A clean drain exits 0; sanitizer builds report memory errors and leaks in the log.
      const problems = [];
      if (exited.code !== 0) problems.push(`sonde exited with ${exited.code ?? exited.sig}`);
      const m = out.match(/ERROR: (Address|Leak)Sanitizer.*|runtime error:.*/);
      if (m) problems.push('sanitizer: ' + m[0]);
      return Object.assign({ problems }, exited);
    },
  };
  await waitFor(() => /ready in/.test(out) || exited, 10000, 'sonde to start').catch(() => {});
  if (exited || !/ready in/.test(out)) throw new Error('sonde did not start:\n' + out);
  return s;
}

function get(url) {
  return new Promise((res, rej) => {
    http
      .get(url, (r) => {
        let b = '';
        r.on('data', (d) => (b += d));
        r.on('end', () => res(b));
      })
      .on('error', rej);
  });
}

// Prometheus text -> { 'name{labels}': value } with labels as written, plus a lookup helper.
async function scrape(port) {
  const text = await get(`http://127.0.0.1:${port}/metrics`);
  const m = {};
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const i = line.lastIndexOf(' ');
    m[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return m;
}

// Sum of a metric over series whose labels include every k="v" in want.
function metric(m, name, want = {}) {
  let sum = 0;
  for (const [k, v] of Object.entries(m)) {
    const b = k.indexOf('{');
    const n = b < 0 ? k : k.slice(0, b);
    if (n !== name) continue;
    const labels = b < 0 ? '' : k.slice(b);
    if (Object.entries(want).every(([lk, lv]) => labels.includes(`${lk}="${lv}"`))) sum += v;
  }
  return sum;
}

// ---- testgen's items, as tests/plugins/testgen/testgen.c documents them -------------------------

const BASE_NS = 1700000000000000000n;
const hex = (b) => Buffer.from(b || []).toString('hex');
const be = (v, n) => BigInt(v).toString(16).padStart(n * 2, '0');
const str = (v) => (v === undefined || v === null ? '0' : v.toString());

// AnyValue is a oneof: protobufjs names the member that is set in `value`.
function attrsOf(list) {
  const o = {};
  for (const kv of list || []) {
    const v = kv.value || {};
    const which = v.value;
    o[kv.key] = which === 'intValue' ? Number(str(v.intValue)) : which ? v[which] : undefined;
  }
  return o;
}

function checkItemAttrs(a, i, where, errs) {
  const want = { 'testgen.index': i, 'testgen.name': `item-${i}`, 'testgen.even': i % 2 === 0, 'testgen.half': i / 2 };
  if (Object.keys(a).length !== 4) errs.push(`${where}: ${Object.keys(a).length} attributes, want 4`);
  for (const [k, v] of Object.entries(want))
    if (a[k] !== v) errs.push(`${where}: attribute ${k}=${JSON.stringify(a[k])}, want ${JSON.stringify(v)}`);
}

function checkResource(res, where, errs) {
  const a = attrsOf(res && res.attributes);
  if (a['service.name'] !== 'testgen') errs.push(`${where}: resource service.name=${a['service.name']}`);
  if (typeof a['testgen.batch'] !== 'number') errs.push(`${where}: resource without testgen.batch`);
  if (typeof a['testgen.part'] !== 'number') errs.push(`${where}: resource without testgen.part`);
}

function checkScope(sc, where, errs) {
  if (!sc || sc.name !== 'sonde/testgen' || sc.version !== '1') errs.push(`${where}: scope ${JSON.stringify(sc)}`);
}

// Checks every item of every request against testgen's formulas; returns {errs, seen: Map i->n}.
function checkTestgen(signal, requests, seed = 0) {
  const errs = [];
  const seen = new Map();
  const note = (i) => seen.set(i, (seen.get(i) || 0) + 1);
  const traceHex = (i) => '736f6e64' + be(seed, 4) + be(Math.floor(i / 4), 8);
  for (const req of requests) {
    if (signal === 'traces') {
      for (const rs of req.resourceSpans) {
        checkResource(rs.resource, 'traces', errs);
        for (const ss of rs.scopeSpans) {
          checkScope(ss.scope, 'traces', errs);
          for (const sp of ss.spans) {
            const a = attrsOf(sp.attributes);
            const i = a['testgen.index'];
            const w = `span ${i}`;
            note(i);
            checkItemAttrs(a, i, w, errs);
            if (hex(sp.traceId) !== traceHex(i)) errs.push(`${w}: trace_id ${hex(sp.traceId)}`);
            if (hex(sp.spanId) !== be(i + 1, 8)) errs.push(`${w}: span_id ${hex(sp.spanId)}`);
            const parent = i % 4 ? be(i - (i % 4) + 1, 8) : '';
            if (hex(sp.parentSpanId) !== parent) errs.push(`${w}: parent ${hex(sp.parentSpanId)}`);
            if (sp.name !== `span-${i}`) errs.push(`${w}: name ${sp.name}`);
            if (sp.kind !== (i % 4 === 0 ? 2 : 1)) errs.push(`${w}: kind ${sp.kind}`);
            const st = BASE_NS + BigInt(i) * 1000n;
            if (str(sp.startTimeUnixNano) !== st.toString()) errs.push(`${w}: start ${str(sp.startTimeUnixNano)}`);
            if (str(sp.endTimeUnixNano) !== (st + 500n).toString()) errs.push(`${w}: end ${str(sp.endTimeUnixNano)}`);
            if (!sp.status || sp.status.code !== 1) errs.push(`${w}: status ${JSON.stringify(sp.status)}`);
          }
        }
      }
    } else if (signal === 'metrics') {
      for (const rm of req.resourceMetrics) {
        checkResource(rm.resource, 'metrics', errs);
        for (const sm of rm.scopeMetrics) {
          checkScope(sm.scope, 'metrics', errs);
          for (const m of sm.metrics) {
            const isGauge = m.name === 'testgen.gauge';
            if (!isGauge && m.name !== 'testgen.sum') errs.push(`metric name ${m.name}`);
            if (m.unit !== '1') errs.push(`${m.name}: unit ${m.unit}`);
            const d = isGauge ? m.gauge : m.sum;
            if (!d) {
              errs.push(`${m.name}: wrong data type`);
              continue;
            }
            if (!isGauge && (!d.isMonotonic || d.aggregationTemporality !== 2))
              errs.push(`${m.name}: monotonic=${d.isMonotonic} temporality=${d.aggregationTemporality}`);
            for (const dp of d.dataPoints) {
              const a = attrsOf(dp.attributes);
              const i = a['testgen.index'];
              const w = `point ${i}`;
              note(i);
              checkItemAttrs(a, i, w, errs);
              if (isGauge !== (i % 2 === 0)) errs.push(`${w}: in ${m.name}`);
              if (isGauge && dp.asDouble !== i / 2) errs.push(`${w}: asDouble ${dp.asDouble}`);
              if (!isGauge && str(dp.asInt) !== String(i)) errs.push(`${w}: asInt ${str(dp.asInt)}`);
              if (str(dp.startTimeUnixNano) !== BASE_NS.toString()) errs.push(`${w}: start ${str(dp.startTimeUnixNano)}`);
              if (str(dp.timeUnixNano) !== (BASE_NS + BigInt(i) * 1000n).toString()) errs.push(`${w}: time ${str(dp.timeUnixNano)}`);
            }
          }
        }
      }
    } else {
      for (const rl of req.resourceLogs) {
        checkResource(rl.resource, 'logs', errs);
        for (const sl of rl.scopeLogs) {
          checkScope(sl.scope, 'logs', errs);
          for (const lr of sl.logRecords) {
            const a = attrsOf(lr.attributes);
            const i = a['testgen.index'];
            const w = `log ${i}`;
            note(i);
            checkItemAttrs(a, i, w, errs);
            if (!lr.body || lr.body.stringValue !== `log-${i}`) errs.push(`${w}: body ${JSON.stringify(lr.body)}`);
            if (lr.severityText !== 'INFO' || lr.severityNumber !== 9) errs.push(`${w}: severity ${lr.severityText}/${lr.severityNumber}`);
            if (hex(lr.traceId) !== traceHex(i)) errs.push(`${w}: trace_id ${hex(lr.traceId)}`);
            if (hex(lr.spanId) !== be(i + 1, 8)) errs.push(`${w}: span_id ${hex(lr.spanId)}`);
            const t = BASE_NS + BigInt(i) * 1000n;
            if (str(lr.timeUnixNano) !== t.toString()) errs.push(`${w}: time ${str(lr.timeUnixNano)}`);
            if (str(lr.observedTimeUnixNano) !== (t + 1n).toString()) errs.push(`${w}: observed ${str(lr.observedTimeUnixNano)}`);
          }
        }
      }
    }
  }
  return { errs, seen };
}

// Every index in [0, count) exactly once.
function checkComplete(signal, requests, count, seed = 0) {
  const { errs, seen } = checkTestgen(signal, requests, seed);
  for (let i = 0; i < count; i++) {
    const n = seen.get(i) || 0;
    if (n !== 1) errs.push(`${signal}: item ${i} arrived ${n} times`);
    if (errs.length > 20) break;
  }
  for (const i of seen.keys()) if (i < 0 || i >= count) errs.push(`${signal}: unexpected item ${i}`);
  return errs;
}

module.exports = { BUILD, freePort, sleep, waitFor, runSonde, scrape, metric, checkTestgen, checkComplete };

// Drives headless Chromium (Debian `chromium`) over the DevTools protocol to use sonde's flame graph
// page like a person would: real key presses into the search box, real mouse clicks on frames and
// buttons, and prints what it saw as JSON for test_flamegraph.py to check. Needs Node's WebSocket
// (node --experimental-websocket on Node 20; built in from 22).
//   node flamegraph_browser.js <page url> <out dir> <frame to zoom> <search text> <service>
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [url, outDir, zoomName, searchText, service] = process.argv.slice(2);
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';

function startBrowser() {
  prof = fs.mkdtempSync(path.join(os.tmpdir(), 'sonde-chromium-'));
  const args = ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-dev-shm-usage', '--remote-debugging-port=0', '--window-size=1400,900',
    `--user-data-dir=${prof}`, 'about:blank'];
  const child = spawn(chromium, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error('chromium did not start:\n' + err)), 30000);
    child.stderr.on('data', (d) => {
      err += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ child, ws: m[1] });
      }
    });
    child.on('exit', (code) => reject(new Error(`chromium exited ${code}:\n${err}`)));
  });
}

class CDP {
  constructor(ws) {
    this.ws = ws;
    this.id = 0;
    this.pending = new Map();
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.id && this.pending.has(m.id)) {
        const { resolve, reject } = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error) reject(new Error(JSON.stringify(m.error)));
        else resolve(m.result);
      }
    };
  }
  send(method, params = {}, sessionId) {
    const id = ++this.id;
    this.ws.send(JSON.stringify({ id, method, params, sessionId }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
}

let child = null;
let prof = null;

// Chromium's profile directory goes once the browser is gone.
function cleanup() {
  if (child) child.kill();
  if (prof) {
    const p = prof;
    prof = null;
    const rm = () => fs.rmSync(p, { recursive: true, force: true });
    if (child && child.exitCode === null) child.once('exit', rm);
    else rm();
  }
}

async function main() {
  const b = await startBrowser();
  child = b.child;
  const wsUrl = b.ws;
  const ws = new WebSocket(wsUrl);
  await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
  const cdp = new CDP(ws);
  const { targetId } = await cdp.send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  const s = (m, p) => cdp.send(m, p, sessionId);
  await s('Page.enable');
  await s('Runtime.enable');
  await s('Emulation.setDeviceMetricsOverride',
    { width: 1400, height: 900, deviceScaleFactor: 1, mobile: false });

  const evaluate = async (expr) => {
    const r = await s('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) throw new Error(expr + ': ' + JSON.stringify(r.exceptionDetails));
    return r.result.value;
  };
  const waitFor = async (expr, what, ms = 20000) => {
    const end = Date.now() + ms;
    for (;;) {
      let v;
      try { v = await evaluate(expr); } catch (e) { v = undefined; }
      if (v) return v;
      if (Date.now() > end) throw new Error('timed out waiting for ' + what);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const click = async (x, y) => {
    for (const type of ['mouseMoved', 'mousePressed', 'mouseReleased'])
      await s('Input.dispatchMouseEvent', { type, x, y, button: 'left', clickCount: 1 });
  };
  const clickSel = async (sel) => {
    const r = await evaluate(`(() => { const b = document.querySelector(${JSON.stringify(sel)})
      .getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; })()`);
    await click(r[0], r[1]);
  };
  const frames = `[...document.querySelectorAll('#chart .frame')]`;
  const shot = async (name) => {
    const { data } = await s('Page.captureScreenshot', { format: 'png' });
    fs.writeFileSync(path.join(outDir, name), Buffer.from(data, 'base64'));
  };
  const out = {};

  await s('Page.navigate', { url });
  await waitFor('window.sondeFlame && sondeFlame.view && sondeFlame.view.total > 0', 'a flame graph');
  // no refresh under the test's feet
  await clickSel('#live');
  out.pwnedLive = await evaluate('!!window.pwned || !!document.querySelector("#chart img, header img")');
  out.live = await evaluate(`document.getElementById('live').checked`);
  out.first = await evaluate(`({names: ${frames}.map((e) => e.dataset.name), view: sondeFlame.view,
    chart: document.getElementById('chart').getBoundingClientRect().toJSON(),
    roots: ${frames}.filter((e) => e.dataset.depth === '0').map((e) => e.getBoundingClientRect().toJSON())})`);

  // search: real key presses into the box
  await clickSel('#search');
  await s('Input.insertText', { text: searchText });
  await waitFor(`sondeFlame.view.hits > 0`, 'search hits');
  out.search = await evaluate(`({hits: sondeFlame.view.hits,
    hl: ${frames}.filter((e) => e.classList.contains('hl')).map((e) => e.dataset.name),
    text: document.getElementById('matches').textContent})`);
  await shot('flamegraph-search.png');
  await evaluate(`(() => { const i = document.getElementById('search'); i.value = '';
    i.dispatchEvent(new Event('input')); })()`);

  // zoom: click the frame
  const r = await evaluate(`(() => { const e = ${frames}.find((e) => e.dataset.name === ${JSON.stringify(zoomName)});
    if (!e) return null; const b = e.getBoundingClientRect(); return [b.x + Math.min(b.width / 2, 20), b.y + b.height / 2, b.width]; })()`);
  if (!r) throw new Error('no frame ' + zoomName + ' to click');
  out.beforeZoomWidth = r[2];
  await click(r[0], r[1]);
  await waitFor(`sondeFlame.view.focus === ${JSON.stringify(zoomName)}`, 'zoom');
  out.zoom = await evaluate(`(() => { const e = ${frames}.find((e) => e.dataset.name === ${JSON.stringify(zoomName)});
    return {width: e.getBoundingClientRect().width, names: ${frames}.map((e) => e.dataset.name),
      crumbs: document.getElementById('crumbs').textContent, top: e.getBoundingClientRect().top}; })()`);
  await shot('flamegraph-zoom.png');
  // Escape zooms out again
  for (const type of ['keyDown', 'keyUp'])
    await s('Input.dispatchKeyEvent', { type, key: 'Escape', code: 'Escape', windowsVirtualKeyCode: 27 });
  await waitFor(`sondeFlame.view.focus === 'all'`, 'Escape to zoom out');
  out.escape = true;

  // icicle: the root row moves from the bottom to the top
  await clickSel('#reset');
  await clickSel('#mode');
  await waitFor(`sondeFlame.icicle === true`, 'icicle');
  out.icicle = await evaluate(`({chart: document.getElementById('chart').getBoundingClientRect().toJSON(),
    roots: ${frames}.filter((e) => e.dataset.depth === '0').map((e) => e.getBoundingClientRect().toJSON())})`);
  await shot('flamegraph-icicle.png');

  // filter by service
  await evaluate(`(() => { const sel = document.getElementById('service'); sel.value = ${JSON.stringify(service)};
    sel.dispatchEvent(new Event('change')); })()`);
  await waitFor(`sondeFlame.service === ${JSON.stringify(service)}`, 'service filter');
  out.filtered = await evaluate(`({names: ${frames}.map((e) => e.dataset.name), view: sondeFlame.view,
    services: [...document.getElementById('service').options].map((o) => o.value)})`);

  // diff of this window against the one before
  await clickSel('#diff');
  await waitFor(`sondeFlame.data && sondeFlame.data.base !== undefined`, 'diff data');
  out.diff = await evaluate(`({view: sondeFlame.view, status: document.getElementById('status').textContent,
    colours: ${frames}.map((e) => [e.dataset.name, e.style.background])})`);
  await shot('flamegraph-diff.png');

  // timeline: drag over the oldest slot only (the batch of 6 minutes ago), then shift+drag over
  // the newest as the baseline
  await evaluate(`(() => { const sel = document.getElementById('service'); sel.value = '';
    sel.dispatchEvent(new Event('change')); })()`);
  const tb = await evaluate(`document.getElementById('timeline').getBoundingClientRect().toJSON()`);
  const drag = async (x0, x1, shift) => {
    const y = tb.top + tb.height / 2, modifiers = shift ? 8 : 0;
    await s('Input.dispatchMouseEvent', { type: 'mouseMoved', x: x0, y, modifiers });
    await s('Input.dispatchMouseEvent', { type: 'mousePressed', x: x0, y, button: 'left', clickCount: 1, modifiers });
    await s('Input.dispatchMouseEvent', { type: 'mouseMoved', x: x1, y, button: 'left', modifiers });
    await s('Input.dispatchMouseEvent', { type: 'mouseReleased', x: x1, y, button: 'left', clickCount: 1, modifiers });
  };
  await drag(tb.left + 1, tb.left + tb.width * 0.05, false);
  await waitFor(`sondeFlame.custom && sondeFlame.view.total === 10`, 'the window picked on the timeline');
  await drag(tb.right - tb.width * 0.05, tb.right - 1, true);
  await waitFor(`sondeFlame.base && sondeFlame.view.base === 12`, 'the baseline picked on the timeline');
  out.timeline = await evaluate(`({view: sondeFlame.view, window: document.getElementById('window').value,
    status: document.getElementById('status').textContent,
    sel: [...document.querySelectorAll('#timeline .sel')].map((e) => e.className),
    colours: Object.fromEntries(${frames}.map((e) => [e.dataset.name, e.style.background]))})`);
  await shot('flamegraph-timeline.png');

  // snapshot button, then the snapshot file on its own (file://, no server)
  await clickSel('#snap');
  const sp = await waitFor(`(/snapshot written to (.*)/.exec(document.getElementById('status').textContent) || [])[1]`, 'snapshot');
  out.snapshot = { path: sp };
  await s('Page.navigate', { url: 'file://' + sp });
  await waitFor('window.sondeFlame && sondeFlame.view && sondeFlame.view.total > 0', 'snapshot graph');
  out.snapshot.names = await evaluate(`${frames}.map((e) => e.dataset.name)`);
  out.snapshot.view = await evaluate('sondeFlame.view');
  out.snapshot.services = await evaluate(`[...document.getElementById('service').options].map((o) => o.value)`);
  // names are text: a service named like markup never becomes an element
  out.pwned = await evaluate('!!window.pwned || !!document.querySelector("#chart img, header img")');
  await shot('flamegraph-snapshot.png');

  ws.close();
  cleanup();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  cleanup();
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 2000).unref(); // an open socket must not keep it alive
});

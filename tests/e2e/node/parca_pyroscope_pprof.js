// What the Pyroscope and Parca reference servers report of a pprof payload (gzipped or not),
// decoded with the npm pprof-format package (Datadog's, not our schema). Also checks the rules of
// Parca's normalizer: string 0 is "", ids are position + 1, one value per sample type.
'use strict';
const zlib = require('zlib');
const { Profile } = require('pprof-format');

function summarize(buf) {
  const gz = buf.length > 2 && buf[0] === 0x1f && buf[1] === 0x8b;
  const p = Profile.decode(gz ? zlib.gunzipSync(buf) : buf);
  const str = (i) => p.stringTable.strings[Number(i)];
  const problems = [];
  if (p.stringTable.strings[0] !== '') problems.push('string 0 is not empty');
  for (const [what, list] of [['location', p.location], ['function', p.function], ['mapping', p.mapping]])
    list.forEach((x, i) => { if (Number(x.id) !== i + 1) problems.push(`${what} ${i} has id ${x.id}`); });
  const locs = new Map(p.location.map((l) => [Number(l.id), l]));
  const fns = new Map(p.function.map((f) => [Number(f.id), f]));
  for (const s of p.sample) {
    if (s.value.length !== p.sampleType.length) problems.push('sample with ' + s.value.length + ' values');
    for (const id of s.locationId) if (!locs.has(Number(id))) problems.push('missing location ' + id);
  }
  return {
    gzipped: gz,
    problems,
    sampleTypes: p.sampleType.map((t) => [str(t.type), str(t.unit)]),
    periodType: p.periodType ? [str(p.periodType.type), str(p.periodType.unit)] : null,
    period: Number(p.period),
    timeNanos: String(p.timeNanos),
    durationNanos: String(p.durationNanos),
    samples: p.sample.map((s) => ({
      // per location, its lines' function names (innermost first), leaf location first
      stack: s.locationId.map((id) => locs.get(Number(id)).line.map((ln) => str(fns.get(Number(ln.functionId)).name))),
      values: s.value.map(Number),
    })),
    mappings: p.mapping.map((m) => ({ filename: str(m.filename), buildId: str(m.buildId) })),
  };
}

// A JSON line per request to the file named by --out.
function recorder(argv) {
  const fs = require('fs');
  const arg = (name, def) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : def; };
  const out = arg('--out');
  return {
    arg,
    write(rec) { fs.appendFileSync(out, JSON.stringify(rec) + '\n'); },
  };
}

module.exports = { summarize, recorder };

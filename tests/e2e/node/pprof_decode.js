// Decodes a gzipped pprof file with the npm pprof-format package (Datadog's, not our schema) and
// prints what test_pprof.py checks, as JSON: string 0, sample types, samples with their stacks
// resolved to function names (per location: lines innermost first), values and labels, mappings.
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const { Profile } = require('pprof-format');

const p = Profile.decode(zlib.gunzipSync(fs.readFileSync(process.argv[2])));
const str = (i) => p.stringTable.strings[Number(i)];
const fns = new Map(p.function.map((f) => [Number(f.id), f]));
const locs = new Map(p.location.map((l) => [Number(l.id), l]));
const out = {
  strings0: p.stringTable.strings[0],
  sampleTypes: p.sampleType.map((t) => [str(t.type), str(t.unit)]),
  period: Number(p.period),
  samples: p.sample.map((s) => ({
    stack: s.locationId.map((id) => locs.get(Number(id)).line.map((ln) => str(fns.get(Number(ln.functionId)).name))),
    values: s.value.map(Number),
    labels: Object.fromEntries(s.label.map((l) => [str(l.key), Number(l.str) ? str(l.str) : Number(l.num)])),
  })),
  mappings: p.mapping.map((m) => ({
    id: Number(m.id), filename: str(m.filename), buildId: str(m.buildId),
    hasFunctions: !!m.hasFunctions, hasInlineFrames: !!m.hasInlineFrames,
  })),
};
// Every location id a sample names exists, every line's function exists.
for (const s of p.sample) for (const id of s.locationId) if (!locs.has(Number(id))) throw new Error('location ' + id);
process.stdout.write(JSON.stringify(out));

// The comparison's shared setup, in each system's own format.
//
//   node setup.js chains --system aemos|baseline --url URL --from A --to B
//        [--prefix sensor-] [--concurrency 8]
//     registers one chain per sensor {prefix}{A..B-1} (5 digits): `temperature > 25` on that
//     sensor, a Fahrenheit transform, and a notification to the device of the same name,
//     state temperatureAlert = warning, cleared to normal, sent when the state changes.
//   node setup.js quiet --system aemos|baseline --out FILE --size N --from A --to B
//        [--variants 8] [--prefix sensor-]
//     writes FILE: `variants` lines, each N readings (a JSON array's items without brackets)
//     of random sensors in A..B-1 at values 15.0 to 24.9 (below every chain's threshold), no
//     time (the systems stamp arrival): the quiet part of batch.lua's batches.
'use strict';
const fs = require('node:fs');

const [command, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
const system = opt('system');
if (system !== 'aemos' && system !== 'baseline') {
  console.error('--system aemos|baseline is required');
  process.exit(2);
}
const prefix = opt('prefix', 'sensor-');
const from = parseInt(opt('from', '0'), 10);
const to = parseInt(opt('to', '100'), 10);
const name = (i) => `${prefix}${String(i).padStart(5, '0')}`;

// aemos's format (API.md, "Rule chains").
const aemosChain = (i) => ({
  id: `bench-${name(i)}`,
  name: `High temperature ${name(i)}`,
  nodes: [
    { type: 'filter', sensor: name(i), condition: 'temperature > 25' },
    { type: 'transform', set: { temperature_f: 'temperature * 9 / 5 + 32' } },
    {
      type: 'action',
      action: 'notify',
      device: name(i),
      state: { name: 'temperatureAlert', value: 'warning', clear: 'normal' },
    },
  ],
});

// The seed's format (seed 001 §2 "Rule Chain Execution"), with the two fields the baseline
// adds to mirror aemos's `clear` and `"on": "change"` (benches/baseline/README.md).
const baselineChain = (i) => ({
  id: `bench-${name(i)}`,
  name: `High temperature ${name(i)}`,
  nodes: [
    { type: 'filter', config: { sensorUUID: name(i), variableName: 'temperature', condition: 'value > 25' } },
    { type: 'transform', config: { action: 'convertToFahrenheit' } },
    {
      type: 'action',
      config: {
        action: 'sendNotification',
        deviceUuid: name(i),
        deviceId: i,
        deviceStateId: i,
        stateName: 'temperatureAlert',
        newStateValue: 'warning',
        clearStateValue: 'normal',
        notifyOn: 'change',
      },
    },
  ],
});

async function chains() {
  const url = opt('url');
  if (!url) throw new Error('--url is required');
  const concurrency = parseInt(opt('concurrency', '8'), 10);
  const make = system === 'aemos' ? aemosChain : baselineChain;
  let next = from;
  let done = 0;
  const started = Date.now();
  const one = async () => {
    while (next < to) {
      const i = next++;
      const res = await fetch(`${url.replace(/\/$/, '')}/api/v1/rulechains`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(make(i)),
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`chain ${name(i)}: ${res.status} ${text}`);
      done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, one));
  console.log(JSON.stringify({ system, registered: done, from, to, seconds: (Date.now() - started) / 1000 }));
}

function quiet() {
  const out = opt('out');
  if (!out) throw new Error('--out is required');
  const size = parseInt(opt('size', '990'), 10);
  const variants = parseInt(opt('variants', '8'), 10);
  // mulberry32: the same fragments on every run and for both systems.
  let seed = 7;
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const lines = [];
  for (let v = 0; v < variants; v++) {
    const items = [];
    for (let k = 0; k < size; k++) {
      const s = name(from + Math.floor(random() * (to - from)));
      const value = (150 + Math.floor(random() * 100)) / 10; // 15.0 .. 24.9
      items.push(
        system === 'aemos'
          ? JSON.stringify({ sensor: s, variable: 'temperature', value })
          : JSON.stringify({ sensor: s, variableName: 'temperature', value: value.toFixed(1) }),
      );
    }
    lines.push(items.join(','));
  }
  fs.writeFileSync(out, lines.join('\n') + '\n');
}

const commands = { chains, quiet };
if (!commands[command]) {
  console.error('usage: node setup.js chains|quiet --system aemos|baseline ...');
  process.exit(2);
}
Promise.resolve(commands[command]()).catch((e) => {
  console.error(e.message);
  process.exit(1);
});

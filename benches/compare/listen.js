// A stock socket.io-client 4.x for the comparison: joins the rooms of the devices
// {prefix}{from..from+count-1}, takes every `device-state-change`, and answers on stdin:
//   report START_MS END_MS  -> one JSON line: notifications received in [START, END) per
//                              second, and the reading-to-notification latency of those
//                              whose reading was sent in [START, END) (received then or
//                              later), p50/p90/p99/max in ms
//   quit
// Usage: node listen.js URL [--prefix sensor-] [--from 0] [--count 100]
//        [--transport websocket|polling] [--chunk 1000]
// Prints {"ready": true, ...} once every subscribe is acknowledged.
//
// Latency: benches/compare/single.lua and batch.lua write the wall-clock time (ms) at which
// wrk writes the request into the reading's value, as its six decimals (time mod 1,000,000).
// Both systems put the value the chain read in the notification (metadata.values.temperature),
// so the send time of the reading behind each notification is recovered here with the same
// clock (same machine), whatever the system stamps: latency = (now - encoded) mod 1,000,000
// ms. A notification carrying a newer reading than the one that was evaluated (the
// baseline's worker reads the sensor's latest value) is timed from that newer reading.
'use strict';
const path = require('node:path');
const readline = require('node:readline');
const { io } = require(require.resolve('socket.io-client', {
  paths: [path.join(__dirname, '../baseline'), __dirname],
}));

const [url, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
if (!url) {
  console.error('usage: node listen.js URL [--prefix P] [--from N] [--count N]');
  process.exit(2);
}
const prefix = opt('prefix', 'sensor-');
const from = parseInt(opt('from', '0'), 10);
const count = parseInt(opt('count', '100'), 10);
const chunk = parseInt(opt('chunk', '1000'), 10);
const transport = opt('transport', 'websocket');
const devices = Array.from({ length: count }, (_, k) => `${prefix}${String(from + k).padStart(5, '0')}`);

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const recvAt = [];
const sentAt = [];
let undecoded = 0;
let datastreams = 0;
const byState = {};

const MOD = 1000000;
function sendTime(n, now) {
  const v = n && n.metadata && n.metadata.values && Number(n.metadata.values.temperature);
  if (!Number.isFinite(v)) return null;
  const encoded = Math.round((v - Math.floor(v)) * MOD) % MOD;
  const lag = (((now % MOD) - encoded) % MOD + MOD) % MOD;
  return now - lag;
}

const socket = io(url, { transports: [transport], reconnection: true });
socket.on('device-state-change', (n) => {
  const now = Date.now();
  recvAt.push(now);
  const sent = sendTime(n, now);
  if (sent === null) undecoded++;
  sentAt.push(sent === null ? NaN : sent);
  const state = n && n.metadata && n.metadata.newValue;
  byState[state] = (byState[state] || 0) + 1;
});
socket.on('datastream', () => datastreams++);
socket.on('connect_error', (e) => process.stderr.write(`listen: connect_error ${e}\n`));
socket.on('disconnect', (reason) => process.stderr.write(`listen: disconnect ${reason}\n`));
let ready = false;
socket.on('connect', async () => {
  try {
    for (let i = 0; i < devices.length; i += chunk) {
      await socket.timeout(30000).emitWithAck('subscribe', { devices: devices.slice(i, i + chunk) });
    }
    if (!ready) out({ ready: true, devices: devices.length, transport });
    ready = true;
  } catch (e) {
    process.stderr.write(`listen: subscribe failed: ${e}\n`);
    process.exit(1);
  }
});

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k];
}

function report(start, end) {
  let inWindow = 0;
  const lat = [];
  for (let i = 0; i < recvAt.length; i++) {
    if (recvAt[i] >= start && recvAt[i] < end) inWindow++;
    const s = sentAt[i];
    if (s >= start && s < end) lat.push(recvAt[i] - s);
  }
  lat.sort((a, b) => a - b);
  const seconds = (end - start) / 1000;
  return {
    received_total: recvAt.length,
    received_in_window: inWindow,
    notifications_per_s: seconds > 0 ? inWindow / seconds : null,
    latency_samples: lat.length,
    latency_p50_ms: percentile(lat, 50),
    latency_p90_ms: percentile(lat, 90),
    latency_p99_ms: percentile(lat, 99),
    latency_max_ms: lat.length ? lat[lat.length - 1] : null,
    undecoded,
    datastream_events: datastreams,
    by_state: byState,
  };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, a, b] = line.trim().split(/\s+/);
  if (cmd === 'report') out(report(Number(a), Number(b)));
  else if (cmd === 'quit') process.exit(0);
});
rl.on('close', () => process.exit(0));

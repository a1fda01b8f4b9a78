// benches/compare.sh's arithmetic and output.
//   node report.js record JSON   -> one result line from compare.sh's raw measurements
//   node report.js table RESULTS.jsonl OUT.json META_JSON
//                                -> the table (stdout) with both systems and the ratio per
//                                   figure, and the same as JSON in OUT.json
'use strict';
const fs = require('node:fs');

const [command, ...args] = process.argv.slice(2);

function record(raw) {
  const r = JSON.parse(raw);
  const w = r.wrk;
  const seconds = w.duration_us / 1e6;
  const ok = Math.max(0, w.requests - w.status_errors);
  const readings = ok * r.readings_per_request;
  const window = (r.t1 - r.t0) / 1000;
  const l = r.listen || {};
  const out = {
    system: r.system,
    level: r.level,
    shape: r.shape,
    connections: r.connections,
    readings_per_request: r.readings_per_request,
    seconds,
    requests: w.requests,
    non_2xx: w.status_errors,
    socket_errors: w.connect_errors + w.read_errors + w.write_errors + w.timeouts,
    accepted_readings: readings,
    accepted_readings_per_s: readings / seconds,
    request_latency_p50_ms: w.latency_p50_us / 1000,
    request_latency_p90_ms: w.latency_p90_us / 1000,
    request_latency_p99_ms: w.latency_p99_us / 1000,
    rule_evaluations_per_s: (r.evaluations_t1 - r.evaluations_t0) / window,
    rule_evaluations_until_drained: r.evaluations_t2 - r.evaluations_t0,
    notifications_per_s: l.notifications_per_s ?? null,
    notifications_in_window: l.received_in_window ?? null,
    notifications_per_1000_readings: readings > 0 && l.latency_samples != null ? (1000 * l.latency_samples) / readings : null,
    notify_latency_samples: l.latency_samples ?? null,
    notify_latency_p50_ms: l.latency_p50_ms ?? null,
    notify_latency_p90_ms: l.latency_p90_ms ?? null,
    notify_latency_p99_ms: l.latency_p99_ms ?? null,
    notify_latency_max_ms: l.latency_max_ms ?? null,
    notifications_undecoded: l.undecoded ?? null,
    cpu_seconds: r.cpu.total,
    cpu_seconds_by_process: r.cpu.by_process,
    cpu_seconds_per_reading: readings > 0 ? r.cpu.total / readings : null,
    drain_seconds: (r.t2 - r.t1) / 1000,
    drained: r.drained,
    backlog_at_window_end: r.backlog_t1,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

// Figures compared, and which way is better.
const FIGURES = [
  ['accepted_readings_per_s', 'accepted readings/s', 'higher'],
  ['rule_evaluations_per_s', 'rule evaluations/s', 'higher'],
  ['notifications_per_s', 'notifications/s (socket.io-client)', 'higher'],
  ['request_latency_p50_ms', 'request latency p50 ms', 'lower'],
  ['request_latency_p99_ms', 'request latency p99 ms', 'lower'],
  ['notify_latency_p50_ms', 'reading->notification p50 ms', 'lower'],
  ['notify_latency_p99_ms', 'reading->notification p99 ms', 'lower'],
  ['cpu_seconds_per_reading', 'CPU seconds per reading', 'lower'],
];
// The issue's targets (issue 15), as "aemos better by" factors.
function target(level, key) {
  if (key === 'accepted_readings_per_s') return level.startsWith('batch') ? 300 : 10;
  if (key === 'notify_latency_p99_ms' && level.startsWith('single')) return 10;
  if (key === 'cpu_seconds_per_reading') return 20;
  return null;
}

const fmt = (v) => {
  if (v === null || v === undefined || Number.isNaN(v)) return '-';
  if (typeof v !== 'number') return String(v);
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 10) return v.toFixed(1);
  if (a >= 0.01) return v.toFixed(3);
  return v.toExponential(2);
};

function table(resultsFile, outFile, meta) {
  const rows = fs.readFileSync(resultsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const levels = [...new Set(rows.map((r) => r.level))];
  const by = (system, level) => rows.find((r) => r.system === system && r.level === level);
  const comparison = [];
  for (const level of levels) {
    const b = by('baseline', level);
    const a = by('aemos', level);
    for (const [key, label, better] of FIGURES) {
      const bv = b ? b[key] : null;
      const av = a ? a[key] : null;
      const ratio = bv && av !== null && av !== undefined ? av / bv : null;
      const betterBy = ratio === null ? null : better === 'higher' ? ratio : ratio > 0 ? 1 / ratio : null;
      const t = target(level, key);
      comparison.push({
        level,
        figure: key,
        label,
        better,
        baseline: bv,
        aemos: av,
        ratio_aemos_over_baseline: ratio,
        aemos_better_by: betterBy,
        target_better_by: t,
        target_met: t === null || betterBy === null ? null : betterBy >= t,
      });
    }
  }
  const head = ['level', 'figure', 'baseline', 'aemos', 'aemos/baseline', 'aemos better by', 'target'];
  const body = comparison.map((c) => [
    c.level,
    c.label,
    fmt(c.baseline),
    fmt(c.aemos),
    fmt(c.ratio_aemos_over_baseline),
    c.aemos_better_by === null ? '-' : `${fmt(c.aemos_better_by)}x`,
    c.target_better_by === null ? '' : `>=${c.target_better_by}x ${c.target_met === null ? '?' : c.target_met ? 'met' : 'MISSED'}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  let last = null;
  for (const r of body) {
    if (last !== null && r[0] !== last) console.log('');
    last = r[0];
    console.log(line(r));
  }
  // What the ratios rest on: whether both systems sent the same notifications (per 1,000
  // readings), and how far processing lagged ingestion.
  console.log('');
  const dhead = ['system', 'level', 'readings', 'notif./1000 readings', 'evaluations until drained', 'backlog at window end', 'drain s', 'CPU s'];
  const dbody = rows.map((r) => [
    r.system,
    r.level,
    fmt(r.accepted_readings),
    fmt(r.notifications_per_1000_readings),
    fmt(r.rule_evaluations_until_drained),
    fmt(r.backlog_at_window_end),
    fmt(r.drain_seconds),
    fmt(r.cpu_seconds),
  ]);
  const dw = dhead.map((h, i) => Math.max(h.length, ...dbody.map((r) => r[i].length)));
  const dline = (r) => r.map((c, i) => (i < 2 ? c.padEnd(dw[i]) : c.padStart(dw[i]))).join('  ');
  console.log(dline(dhead));
  console.log(dw.map((w) => '-'.repeat(w)).join('  '));
  for (const r of dbody) console.log(dline(r));
  const notes = rows
    .filter((r) => !r.drained || r.non_2xx > 0 || r.socket_errors > 0 || (r.notifications_undecoded || 0) > 0)
    .map((r) => `${r.system} ${r.level}: ${r.drained ? '' : `not drained after ${r.drain_seconds}s; `}` +
      `${r.non_2xx} non-2xx, ${r.socket_errors} socket errors, ${r.notifications_undecoded || 0} undecoded notifications`);
  if (notes.length) {
    console.log('');
    for (const n of notes) console.log(`note: ${n}`);
  }
  fs.writeFileSync(outFile, JSON.stringify({ meta: JSON.parse(meta), results: rows, comparison }, null, 2) + '\n');
}

if (command === 'record') record(args[0]);
else if (command === 'table') table(args[0], args[1], args[2] || '{}');
else {
  console.error('usage: node report.js record JSON | table RESULTS.jsonl OUT.json [META]');
  process.exit(2);
}

'use strict';
// The seed's worker process (seed 001 §1 "WORKER PROCESS(ES) x N", §2 "PROCESSING"):
// a BullMQ Worker (concurrency RULE_ENGINE_WORKER_CONCURRENCY, default 20) takes
// 'telemetry-data' jobs, looks the sensor's rule chains up in the Redis index, fetches each
// chain, collects the sensor's and the device's data, executes filter -> transform -> action,
// and publishes a state change to the Redis pub/sub bridge for the main server's Socket.IO.
const { Worker } = require('bullmq');
const C = require('./common');

const CONCURRENCY = parseInt(process.env.RULE_ENGINE_WORKER_CONCURRENCY || '20', 10);

// src/config/redis.js: the shared connection (BullMQ and the index).
const redisConnection = C.connect('worker-bullmq');
// The store (MySQL in the seed, see server.js): RuleChain rows, sensor data, device state.
const db = C.connect('worker-store');
// notificationBridge.initializePublisher(): its own connection (seed 000 §2.3.1).
const publisher = C.connect('worker-bridge-publisher');

// DeviceStateInstance: the state's new value written and the old one returned in one step, so
// that 20 concurrent jobs x N processes announce each change once; the change is appended to
// the history stream (INSERT INTO DeviceStateInstance, seed 001 §2 Node 3).
db.defineCommand('setDeviceState', {
  numberOfKeys: 1,
  lua: `
    local old = redis.call('HGET', KEYS[1], ARGV[1])
    if old == ARGV[2] then return {1, old} end
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('XADD', 'device-state-instances', '*', 'device', ARGV[3], 'state', ARGV[1], 'value', ARGV[2])
    return {0, old or false}
  `,
});

// src/ruleEngine/indexing/RuleChainIndex.js (seed 000 §1.2.2 and §1.3.1).
const extractSensorUuidsFromConfig = (config) =>
  [config.UUID, config.uuid, config.sensorUUID].filter((u) => typeof u === 'string' && u);
async function buildIndexForSensor(sensorUUID) {
  // The cache miss: every filter node's config scanned (the seed's full table scan).
  const nodes = await db.hgetall(C.FILTER_NODES);
  const ruleChainIds = new Set();
  for (const [ruleChainId, configs] of Object.entries(nodes)) {
    for (const config of JSON.parse(configs)) {
      if (extractSensorUuidsFromConfig(config || {}).includes(sensorUUID)) ruleChainIds.add(ruleChainId);
    }
  }
  const ids = [...ruleChainIds];
  await redisConnection.set(C.INDEX_PREFIX + sensorUUID, JSON.stringify(ids), 'EX', C.INDEX_TTL_SECONDS);
  return ids;
}
async function getRuleChainsForSensor(sensorUUID) {
  const cached = await redisConnection.get(C.INDEX_PREFIX + sensorUUID);
  if (cached) return JSON.parse(cached);
  return buildIndexForSensor(sensorUUID);
}

// Conditions of the seed's filter nodes: "value > 25" (`value` is the filter's variable,
// config.variableName, or the reading's), other names are the sensor's variables; comparisons
// (> >= < <= == = !=) against numbers, joined by AND (binding tighter) and OR. A variable
// without a value makes its comparison false.
const ATOM = /^\s*([A-Za-z_][\w.-]*)\s*(>=|<=|==|!=|=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$/;
function evaluateCondition(condition, sensorData, variableName) {
  return condition.split(/\s+OR\s+/i).some((clause) =>
    clause.split(/\s+AND\s+/i).every((atom) => {
      const m = ATOM.exec(atom);
      if (!m) throw new Error(`cannot evaluate condition: ${condition}`);
      const name = m[1] === 'value' ? variableName : m[1];
      const x = parseFloat(sensorData[name]);
      const y = parseFloat(m[3]);
      if (Number.isNaN(x)) return false;
      switch (m[2]) {
        case '>': return x > y;
        case '>=': return x >= y;
        case '<': return x < y;
        case '<=': return x <= y;
        case '!=': return x !== y;
        default: return x === y;
      }
    }),
  );
}

// Transform nodes (seed 001 §2 Node 2).
function transform(config, ctx) {
  if (config.action === 'convertToFahrenheit') {
    const c = ctx.values[ctx.variableName];
    ctx.values.valueCelsius = c;
    ctx.values.valueFahrenheit = (c * 9) / 5 + 32;
    ctx.values[`${ctx.variableName}_f`] = ctx.values.valueFahrenheit;
  }
}

let evaluations = 0;
let published = 0;

// notificationManager.queueStateChangeNotification in a worker: no Socket.IO here, so the
// bridge (seed 000 §2.2.2). MQTT and CoAP are not published from workers (seed 000 §2.3.3:
// they silently fail there).
async function queueStateChangeNotification(metadata, ruleChainId) {
  const notification = {
    type: 'device-state-change',
    deviceUuid: metadata.deviceUuid,
    deviceId: metadata.deviceId,
    ruleChainId,
    metadata: {
      stateName: metadata.stateName,
      newValue: metadata.newValue,
      oldValue: metadata.oldValue,
      values: metadata.values,
    },
    timestamp: new Date().toISOString(),
  };
  await publisher.publish(
    C.NOTIFICATION_CHANNEL,
    JSON.stringify({
      type: 'socket',
      event: 'device-state-change',
      notification,
      broadcastAll: false,
      rooms: [`device-uuid-${metadata.deviceUuid}`, `device-${metadata.deviceId}`],
    }),
  );
  published++;
}

// Action nodes (seed 001 §2 Node 3): sendNotification updates the device state and announces
// it. The seed's chains announce every time the filter passes; aemos announces when a chain
// becomes active and, with a `clear`, when it stops holding (`"on": "change"`, its default).
// To send the same notifications as aemos the action here notifies only when the state
// changes: newStateValue while the filter passes, clearStateValue after (`notifyOn: "every"`
// gives the seed's literal behaviour).
async function action(config, ctx, active, ruleChainId) {
  if (config.action !== 'sendNotification') return;
  const stateName = config.stateName || String(config.deviceStateId);
  const every = config.notifyOn === 'every';
  const current = ctx.deviceData[stateName];
  let target;
  if (active) {
    if (current === config.newStateValue && !every) return;
    target = config.newStateValue;
  } else {
    if (config.clearStateValue === undefined || current !== config.newStateValue) return;
    target = config.clearStateValue;
  }
  const [unchanged, old] = await db.setDeviceState(
    `device:${config.deviceUuid}:state`, stateName, target, config.deviceUuid);
  if (unchanged === 1 && !every) return; // another job announced it first
  await queueStateChangeNotification(
    {
      deviceUuid: config.deviceUuid,
      deviceId: config.deviceId,
      stateName,
      newValue: target,
      oldValue: old === null || old === false ? (active ? config.clearStateValue || '' : '') : old,
      values: ctx.values,
    },
    ruleChainId,
  );
}

// ruleChainService.execute: filter -> transform -> action.
async function execute(chain, ctx) {
  let passed = true;
  for (const node of chain.nodes) {
    if (node.type === 'filter') {
      passed = evaluateCondition(node.config.condition, ctx.sensorData, node.config.variableName || ctx.variableName);
      if (!passed) break;
    } else if (node.type === 'transform') {
      transform(node.config || {}, ctx);
    } else if (node.type === 'action') {
      await action(node.config || {}, ctx, true, chain.id);
    }
  }
  if (!passed) {
    for (const node of chain.nodes) {
      if (node.type === 'action') await action(node.config || {}, ctx, false, chain.id);
    }
  }
}

// ruleChainService.trigger(sensorUUID) (seed 001 §2).
async function trigger(sensorUUID, payload) {
  const ids = await getRuleChainsForSensor(sensorUUID);
  for (const id of ids) {
    // Fetch RuleChain + nodes.
    const raw = await db.get(C.RULECHAIN_PREFIX + id);
    if (!raw) continue;
    const chain = JSON.parse(raw);
    const act = chain.nodes.find((n) => n.type === 'action') || { config: {} };
    const filter = chain.nodes.find((n) => n.type === 'filter') || { config: {} };
    const deviceUuid = (act.config || {}).deviceUuid;
    // Collect context data (parallel): _collectSensorData, _collectDeviceData.
    const [sensorData, deviceData] = await Promise.all([
      db.hgetall(`sensor:${sensorUUID}:latest`),
      deviceUuid ? db.hgetall(`device:${deviceUuid}:state`) : Promise.resolve({}),
    ]);
    const variableName = filter.config.variableName || payload.variableName || 'value';
    const values = {};
    for (const [k, v] of Object.entries(sensorData)) values[k] = parseFloat(v);
    await execute(chain, { sensorUUID, sensorData, deviceData, variableName, values });
    evaluations++;
  }
}

// RuleEngineWorker.processEvent (seed 001 §2).
async function processEvent(job) {
  const { eventType, payload } = job.data;
  if (eventType === 'telemetry-data') return trigger(payload.sensorUUID, payload);
  return undefined; // 'scheduled' events: no schedules in this baseline
}

// Counters for benches/compare.sh, added to Redis every 200 ms (not part of the seed).
let flushed = { evaluations: 0, published: 0 };
const flush = async () => {
  const e = evaluations - flushed.evaluations;
  const p = published - flushed.published;
  if (e === 0 && p === 0) return;
  flushed = { evaluations, published };
  await db.multi().hincrby(C.STATS_KEY, 'evaluations', e).hincrby(C.STATS_KEY, 'published', p).exec();
};
const flushTimer = setInterval(() => flush().catch(() => {}), 200);

const worker = new Worker(C.QUEUE_NAME, processEvent, {
  connection: redisConnection,
  concurrency: CONCURRENCY,
});
worker.on('failed', (job, err) => console.error(`job ${job && job.id} failed: ${err.message}`));
worker.on('error', (err) => console.error('worker error:', err.message));
console.log(`baseline worker ${process.pid}: concurrency ${CONCURRENCY}`);

const shutdown = async () => {
  clearInterval(flushTimer);
  setTimeout(() => process.exit(0), 2000).unref();
  try {
    await worker.close();
    await flush();
  } finally {
    process.exit(0);
  }
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

'use strict';
// The seed's main server process (seed 001 §1 "MAIN SERVER PROCESS(ES)", §2 "INGESTION"),
// rebuilt minimally: Express ingestion -> store -> 201 -> (nextTick) BullMQ job; rule chain
// registration; Socket.IO fed by the Redis pub/sub notification bridge. See README.md for
// what is faithful and what is simplified.
//
// Environment: PORT (3100), REDIS_PORT (6390), SERVERS (1: one process; N > 1: N Express +
// Socket.IO processes under node:cluster, standing in for the seed's load-balanced main
// servers, each subscribed to the bridge as the seed's are).
const cluster = require('node:cluster');
const http = require('node:http');
const express = require('express');
const { Server } = require('socket.io');
const { Queue } = require('bullmq');
const C = require('./common');

const PORT = parseInt(process.env.PORT || '3100', 10);
const SERVERS = parseInt(process.env.SERVERS || '1', 10);

if (SERVERS > 1 && cluster.isPrimary) {
  for (let i = 0; i < SERVERS; i++) cluster.fork();
  cluster.on('exit', (w, code, signal) => {
    console.error(`server process ${w.process.pid} exited (${signal || code})`);
    process.exitCode = 1;
  });
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(), 500).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return;
}

// src/config/redis.js: the shared connection BullMQ uses.
const redisConnection = C.connect('server-bullmq');
// The store. The seed INSERTs each reading into MySQL (DataStream.create(), seed 001 §2 step
// 2). Here Redis stands in for MySQL so that nothing else has to be installed: a reading is
// one entry of the Redis stream `datastreams` (the table; the entry id is the row id) plus
// the sensor's latest value per variable in the hash `sensor:{uuid}:latest` (what the
// worker's _collectSensorData reads back). Its own connection, as a MySQL pool would be.
// Durability: Redis's AOF with fsync every second (start.sh), weaker than InnoDB's fsync per
// commit and than aemos's 200 after the WAL sync, so the store is, if anything, cheaper here
// than in the seed.
const store = C.connect('server-store');
// src/ruleEngine/core/RuleEngineQueue.js. Completed jobs are trimmed to the last 1,000
// (failed to the last 5,000) so that Redis does not grow by a job per reading for ever.
const ruleEngineQueue = new Queue(C.QUEUE_NAME, {
  connection: redisConnection,
  defaultJobOptions: { removeOnComplete: 1000, removeOnFail: 5000 },
});

// src/ruleEngine/core/RuleEngineEventBus.js (seed 000 §1.2.1, verbatim in substance).
const RuleEngineEventBus = {
  emit: async (eventType, payload, options = {}) =>
    ruleEngineQueue.add(
      eventType,
      { eventType, payload, enqueuedAt: new Date().toISOString() },
      options,
    ),
  emitBulk: async (eventType, payloads) => {
    const enqueuedAt = new Date().toISOString();
    return ruleEngineQueue.addBulk(
      payloads.map((payload) => ({ name: eventType, data: { eventType, payload, enqueuedAt } })),
    );
  },
};

const app = express();
app.disable('x-powered-by');
app.use(express.json({ limit: '16mb' }));
const httpServer = http.createServer(app);
const io = new Server(httpServer, { cors: { origin: '*' } });

// src/utils/notificationManager.js, queueDataStreamNotification (seed 000 §2.2.3): readings
// buffered per sensor variable and broadcast once per second (max 1 update/s per telemetry),
// the buffer capped at 1,000 entries.
const dataBuffers = new Map();
const MAX_BUFFER = 1000;
const notificationManager = {
  queueDataStreamNotification(ds) {
    const key = `${ds.sensorUUID}\u0000${ds.variableName}`;
    if (dataBuffers.size >= MAX_BUFFER && !dataBuffers.has(key)) return;
    dataBuffers.set(key, ds);
  },
  processPendingNotifications() {
    for (const ds of dataBuffers.values()) {
      io.to(`device-uuid-${ds.deviceUuid}`).emit('datastream', {
        device: ds.deviceUuid,
        sensor: ds.sensorUUID,
        variable: ds.variableName,
        value: ds.value,
        time: ds.recievedAt,
      });
    }
    dataBuffers.clear();
  },
};
setInterval(() => notificationManager.processPendingNotifications(), 1000).unref();

// 1. Lookup telemetry: variableName -> telemetryDataId (seed 001 §2 step 1; a SELECT in the
// seed). Cached in the process after the first lookup, which the seed does not do: in the
// baseline's favour.
const telemetryIds = new Map();
async function telemetryDataId(sensorUUID, variableName) {
  const key = `${sensorUUID}\u0000${variableName}`;
  const known = telemetryIds.get(key);
  if (known !== undefined) return known;
  const hash = `telemetry:${sensorUUID}`;
  let id = await store.hget(hash, variableName);
  if (id === null) {
    const next = await store.incr('telemetry:next');
    await store.hsetnx(hash, variableName, next);
    id = await store.hget(hash, variableName);
  }
  id = Number(id);
  telemetryIds.set(key, id);
  return id;
}

// A reading of the seed's body: {"value": "25.5", "variableName": "temperature",
// "recievedAt": "..."}. The seed's deviceAuth middleware resolves the device token to
// req.sensorId / req.deviceUuid; the benchmark runs aemos in dev mode (no credentials), so
// the baseline takes the sensor from the body (`sensor` or `sensorUUID`) the way aemos's dev
// mode does, and the device is the sensor's name (aemos's dev-mode default).
function parseReading(b) {
  if (!b || typeof b !== 'object') return { error: 'body must be an object' };
  const sensorUUID = b.sensorUUID || b.sensor;
  const variableName = b.variableName;
  const value = b.value;
  if (typeof sensorUUID !== 'string' || !sensorUUID) return { error: 'sensor is required' };
  if (typeof variableName !== 'string' || !variableName) return { error: 'variableName is required' };
  if (value === undefined || value === null || Number.isNaN(parseFloat(value))) {
    return { error: 'value must be a number' };
  }
  const at = b.recievedAt || b.receivedAt;
  return {
    reading: {
      sensorUUID,
      deviceUuid: b.deviceUuid || sensorUUID,
      variableName,
      value: String(value),
      recievedAt: typeof at === 'string' ? at : typeof at === 'number' ? new Date(at).toISOString() : new Date().toISOString(),
    },
  };
}

// 2. INSERT INTO DataStream (see "The store" above).
function insertInto(multi, r, tid) {
  multi.xadd(C.DATASTREAM_STREAM, '*', 'sensor', r.sensorUUID, 'telemetryDataId', tid,
    'value', r.value, 'recievedAt', r.recievedAt);
  multi.hset(`sensor:${r.sensorUUID}:latest`, r.variableName, r.value);
}

function telemetryEvent(ds) {
  return {
    sensorUUID: ds.sensorUUID,
    dataStreamId: ds.id,
    telemetryDataId: ds.telemetryDataId,
    recievedAt: ds.recievedAt,
  };
}

// dataStreamController.createDataStreamWithToken (seed 001 §2).
async function createDataStream(req, res) {
  const { reading, error } = parseReading(req.body);
  if (error) return res.status(400).json({ error });
  try {
    const tid = await telemetryDataId(reading.sensorUUID, reading.variableName);
    const multi = store.multi();
    insertInto(multi, reading, tid);
    const [[err, id]] = await multi.exec();
    if (err) throw err;
    const newDataStream = { id, telemetryDataId: tid, ...reading };
    // 3. The response is sent before the rule engine is involved.
    res.status(201).json({ data: newDataStream });
    // 4. process.nextTick: the real-time datastream notification, then the rule engine event.
    process.nextTick(async () => {
      notificationManager.queueDataStreamNotification(newDataStream);
      try {
        await RuleEngineEventBus.emit('telemetry-data', telemetryEvent(newDataStream));
      } catch (e) {
        console.error('enqueue failed:', e.message);
      }
    });
  } catch (e) {
    res.status(500).json({ error: e.message });
  }
}
app.post('/api/v1/datastreams/token', createDataStream);
app.post('/api/v1/datastreams', createDataStream);

// Not in the seeds, which have no batch route: the benchmark's batches of 1,000 readings. A
// body {"datastreams": [reading, ...]} is handled as that many single readings would be (one
// DataStream row and one 'telemetry-data' job per reading), but with one round trip for all
// the INSERTs (the seed's own recommendation, seed 000 §3.3 "write buffering (batch inserts)")
// and one BullMQ addBulk for all the jobs: the cheapest batch path this design allows.
app.post('/api/v1/datastreams/batch', async (req, res) => {
  const items = Array.isArray(req.body) ? req.body : req.body && req.body.datastreams;
  if (!Array.isArray(items) || items.length === 0) {
    return res.status(400).json({ error: 'datastreams must be a non-empty array' });
  }
  const readings = [];
  for (let i = 0; i < items.length; i++) {
    const { reading, error } = parseReading(items[i]);
    if (error) return res.status(400).json({ error, index: i });
    readings.push(reading);
  }
  try {
    const tids = await Promise.all(readings.map((r) => telemetryDataId(r.sensorUUID, r.variableName)));
    const multi = store.multi();
    readings.forEach((r, i) => insertInto(multi, r, tids[i]));
    const results = await multi.exec();
    const created = readings.map((r, i) => {
      const [err, id] = results[2 * i];
      if (err) throw err;
      return { id, telemetryDataId: tids[i], ...r };
    });
    res.status(201).json({ data: { count: created.length, first: created[0].id, last: created[created.length - 1].id } });
    process.nextTick(async () => {
      for (const ds of created) notificationManager.queueDataStreamNotification(ds);
      try {
        await RuleEngineEventBus.emitBulk('telemetry-data', created.map(telemetryEvent));
      } catch (e) {
        console.error('enqueue failed:', e.message);
      }
    });
  } catch (e) {
    res.status(500).json({ error: e.message });
  }
});

// Rule chains in the seed's format (seed 001 §2 "Rule Chain Execution"):
// {"id", "name", "nodes": [{"type": "filter", "config": {"sensorUUID", "variableName",
//  "condition": "value > 25"}}, {"type": "transform", "config": {"action":
//  "convertToFahrenheit"}}, {"type": "action", "config": {"action": "sendNotification",
//  "deviceUuid", "deviceId", "deviceStateId", "stateName", "newStateValue",
//  "clearStateValue", "notifyOn": "change"|"every"}}]}.
// Stored as one document (RuleChain + its nodes); the filter configs also go to the table the
// index's cache miss scans. The sensor's index entry is rebuilt on registration (write-through)
// so a new chain takes effect for the next reading, as aemos's do; without it the entry would
// stay stale for up to its 1-hour TTL.
const extractSensorUuidsFromConfig = (config) =>
  [config.UUID, config.uuid, config.sensorUUID].filter((u) => typeof u === 'string' && u);

app.post('/api/v1/rulechains', async (req, res) => {
  const chain = req.body;
  if (!chain || !Array.isArray(chain.nodes) || chain.nodes.length === 0) {
    return res.status(400).json({ error: 'nodes must be a non-empty array' });
  }
  const filters = chain.nodes.filter((n) => n && n.type === 'filter');
  const uuids = [...new Set(filters.flatMap((n) => extractSensorUuidsFromConfig(n.config || {})))];
  if (filters.length === 0 || uuids.length === 0) {
    return res.status(400).json({ error: 'a filter node with config.sensorUUID is required' });
  }
  for (const n of filters) {
    if (typeof (n.config || {}).condition !== 'string') {
      return res.status(400).json({ error: 'a filter node needs config.condition' });
    }
  }
  try {
    const id = chain.id !== undefined ? String(chain.id) : String(await store.incr('rulechain:next'));
    const doc = { ...chain, id };
    const multi = store.multi();
    multi.set(C.RULECHAIN_PREFIX + id, JSON.stringify(doc));
    multi.hset(C.FILTER_NODES, id, JSON.stringify(filters.map((n) => n.config)));
    for (const u of uuids) multi.sadd(`rulechain:sensor-set:${u}`, id);
    await multi.exec();
    for (const u of uuids) {
      const ids = await store.smembers(`rulechain:sensor-set:${u}`);
      await redisConnection.set(C.INDEX_PREFIX + u, JSON.stringify(ids), 'EX', C.INDEX_TTL_SECONDS);
    }
    res.status(201).json({ data: doc });
  } catch (e) {
    res.status(500).json({ error: e.message });
  }
});

app.get('/api/v1/health', (req, res) => res.json({ status: 'ok', pid: process.pid }));

// Socket.IO (src/utils/socketManager.js). The seed's clients join rooms `device-uuid-{id}`;
// the join event is not shown in the seeds, so the baseline takes aemos's `subscribe`
// ({"rooms": [...]} or {"devices": [...]}, acknowledged), and the same listener serves both.
function roomsOf(payload) {
  if (typeof payload === 'string') return [payload];
  if (Array.isArray(payload)) return payload.filter((r) => typeof r === 'string');
  if (payload && typeof payload === 'object') {
    const rooms = Array.isArray(payload.rooms) ? payload.rooms : [];
    const devices = Array.isArray(payload.devices) ? payload.devices.map((d) => `device-uuid-${d}`) : [];
    return [...rooms, ...devices].filter((r) => typeof r === 'string');
  }
  return [];
}
io.on('connection', (socket) => {
  socket.on('subscribe', (payload, ack) => {
    const rooms = roomsOf(payload);
    socket.join(rooms);
    if (typeof ack === 'function') ack({ ok: true, rooms: rooms.length });
  });
  socket.on('unsubscribe', (payload, ack) => {
    for (const r of roomsOf(payload)) socket.leave(r);
    if (typeof ack === 'function') ack({ ok: true });
  });
});

// notificationBridge.initializeSubscriber (seed 000 §2.2.1, verbatim in substance).
const subscriber = C.connect('server-bridge-subscriber');
subscriber.subscribe(C.NOTIFICATION_CHANNEL).catch((e) => {
  console.error('subscribe failed:', e.message);
  process.exit(1);
});
subscriber.on('message', (channel, message) => {
  let notification;
  try {
    notification = JSON.parse(message);
  } catch {
    return;
  }
  if (notification.type === 'socket') {
    const { event, notification: data, broadcastAll, rooms } = notification;
    if (broadcastAll) {
      io.emit(event, data);
    } else if (rooms && rooms.length > 0) {
      rooms.forEach((room) => io.to(room).emit(event, data));
    }
  }
});

httpServer.listen(PORT, '127.0.0.1', () => {
  console.log(`baseline server ${process.pid} listening on 127.0.0.1:${PORT}`);
});
const shutdown = () => {
  httpServer.close();
  io.close();
  Promise.allSettled([ruleEngineQueue.close(), store.quit(), subscriber.quit()]).finally(() =>
    process.exit(0),
  );
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

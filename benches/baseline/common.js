'use strict';
// What server.js and worker.js share: the seed's names (seed 001 §1, "REDIS" box) and the
// Redis connections. Redis listens on a private port (start.sh), never the default 6379.
const { Redis } = require('ioredis');

const REDIS_HOST = process.env.REDIS_HOST || '127.0.0.1';
const REDIS_PORT = parseInt(process.env.REDIS_PORT || '6390', 10);

// One ioredis client. `maxRetriesPerRequest: null` is what BullMQ requires of the connections
// it is handed.
const connect = (name) =>
  new Redis({
    host: REDIS_HOST,
    port: REDIS_PORT,
    maxRetriesPerRequest: null,
    connectionName: name,
  });

module.exports = {
  connect,
  // src/ruleEngine/core/RuleEngineQueue.js: the BullMQ queue of the seed.
  QUEUE_NAME: 'rule-engine-events',
  // src/services/notificationBridgeService.js: the pub/sub channel workers publish to.
  NOTIFICATION_CHANNEL: 'notifications:device-state-change',
  // src/ruleEngine/indexing/RuleChainIndex.js: sensor -> [ruleChainId], TTL 1 hour.
  INDEX_PREFIX: 'rulechain:sensor:',
  INDEX_TTL_SECONDS: 3600,
  // Stand-ins for the seed's MySQL tables (see server.js, "The store").
  DATASTREAM_STREAM: 'datastreams', // DataStream rows
  RULECHAIN_PREFIX: 'rulechain:doc:', // RuleChain + its RuleChainNode rows, one JSON document
  FILTER_NODES: 'rulechain:filters', // RuleChainNode WHERE type = 'filter': id -> [configs]
  STATS_KEY: 'bench:stats', // counters for benches/compare.sh (not part of the seed)
};

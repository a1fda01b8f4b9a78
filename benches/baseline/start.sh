#!/usr/bin/env bash
# Starts the baseline: redis-server on a private port with its own temporary directory, the
# main server (server.js) and WORKERS worker processes (worker.js), all in the background.
# Prints the run directory on the last line of stdout; it holds `pids` ("name pid" lines), the
# logs and Redis's files. Stop with: bash stop.sh RUN_DIR.
#
# Environment:
#   PORT=3100          HTTP and Socket.IO
#   REDIS_PORT=6390    private, not Redis's default 6379
#   WORKERS=2          worker processes. The seeds deploy 5 (seed 000 §3.2 and seed 001 §6,
#                      "10k req/s": 5 workers x concurrency 20) on their own machines; this
#                      machine has 2 cores, so the default is 2, one per core (WORKERS=5 for
#                      the seeds' number).
#   CONCURRENCY=20     per worker (RULE_ENGINE_WORKER_CONCURRENCY, the seed's default)
#   SERVERS=1          main server processes (N > 1: node:cluster, standing in for the seeds'
#                      2 or 3 load-balanced main servers)
#   BASELINE_FSYNC=everysec   Redis appendfsync (the seed's Redis runs with AOF, seed 001 §6;
#                      `always` syncs before every reply, closer to MySQL's durable INSERT)
#   RUN_DIR            default: a new temporary directory
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
PORT=${PORT:-3100}
REDIS_PORT=${REDIS_PORT:-6390}
WORKERS=${WORKERS:-2}
CONCURRENCY=${CONCURRENCY:-20}
SERVERS=${SERVERS:-1}
BASELINE_FSYNC=${BASELINE_FSYNC:-everysec}
RUN_DIR=${RUN_DIR:-$(mktemp -d -t aemos-baseline.XXXXXX)}
mkdir -p "$RUN_DIR/redis"
: > "$RUN_DIR/pids"
[ -d node_modules ] || { echo "start.sh: run install.sh first" >&2; exit 1; }
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "start.sh: something already answers on port $REDIS_PORT" >&2; exit 1
fi
if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
  echo "start.sh: something already listens on port $PORT" >&2; exit 1
fi

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR/redis" --save '' \
  --appendonly yes --appendfsync "$BASELINE_FSYNC" --daemonize no \
  --logfile "$RUN_DIR/redis.log" > /dev/null 2>&1 &
echo "redis $!" >> "$RUN_DIR/pids"
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "start.sh: redis did not start (see $RUN_DIR/redis.log)" >&2; exit 1; }

export REDIS_PORT PORT SERVERS
NODE_ENV=production node "$HERE/server.js" > "$RUN_DIR/server.log" 2>&1 &
echo "server $!" >> "$RUN_DIR/pids"
for i in $(seq "$WORKERS"); do
  NODE_ENV=production RULE_ENGINE_WORKER_CONCURRENCY="$CONCURRENCY" node "$HERE/worker.js" > "$RUN_DIR/worker-$i.log" 2>&1 &
  echo "worker-$i $!" >> "$RUN_DIR/pids"
done
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:$PORT/api/v1/health" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/api/v1/health" >/dev/null || { echo "start.sh: server did not start (see $RUN_DIR/server.log)" >&2; exit 1; }
for i in $(seq "$WORKERS"); do
  for _ in $(seq 150); do
    grep -q 'concurrency' "$RUN_DIR/worker-$i.log" 2>/dev/null && break
    sleep 0.1
  done
done
echo "baseline up: http://127.0.0.1:$PORT, redis :$REDIS_PORT (appendfsync $BASELINE_FSYNC), $SERVERS server process(es), $WORKERS worker(s) x concurrency $CONCURRENCY" >&2
echo "$RUN_DIR"

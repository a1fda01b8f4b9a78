#!/usr/bin/env bash
# What registered but silent devices cost: memory per device (registry, presence watch in the
# engine) and batch ingestion throughput with and without them.
# Two data directories: "empty" (no devices) and "silent" (DEVICES registered through the API,
# each with one sensor of its own, none of them ever sending). The same batch load
# (`aemos-loadgen http`: JSON, 1,000 readings per request over 10,000 other sensors, 8
# connections) runs against a server on each, alternating ROUNDS times; each restart on
# "silent" also times the start (the presence watches come back).
# Usage: [DEVICES=100000] [ROUNDS=2] [SECONDS_EACH=20] bash benches/devices/silent-devices.sh [path/to/release/aemos]
# (aemos-loadgen from the same target directory; python3)
set -euo pipefail
cd "$(dirname "$0")"
AEMOS=${1:-${CARGO_TARGET_DIR:-../../target}/release/aemos}
DEVICES=${DEVICES:-100000}
ROUNDS=${ROUNDS:-2}
SECONDS_EACH=${SECONDS_EACH:-20}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
LOADGEN=$(dirname "$AEMOS")/aemos-loadgen
server=""
start_server() {  # $1: data dir
  local t0; t0=$(date +%s.%N)
  RUST_LOG=warn "$AEMOS" serve --data-dir "$1" --http-addr 127.0.0.1:3997 \
    --mqtt-addr 127.0.0.1:0 --mqtt5-addr off --coap-addr 127.0.0.1:0 2>>"$WORK/log" &
  server=$!
  until curl -sf localhost:3997/api/v1/health/readiness >/dev/null; do sleep 0.05; done
  started=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$server/status; }
ingest() {  # prints requests/s
  "$LOADGEN" --json "$WORK/run.json" http --url http://127.0.0.1:3997 --format json \
    --connections 8 --batch 1000 --sensors 10000 --variables 1 --seconds "$SECONDS_EACH" >/dev/null
  python3 -c "import json; print(json.load(open('$WORK/run.json'))['figures']['requests_per_sec'])"
}

start_server "$WORK/silent"
sleep 2
before=$(rss_kb)
t0=$(date +%s)
python3 register.py "$DEVICES" 3997  # (the working directory is this one)
sleep 5
after=$(rss_kb)
echo "== $DEVICES devices registered in $(( $(date +%s) - t0 )) s"
echo "== server RSS: ${before} kB before, ${after} kB after: $(( (after - before) * 1024 / DEVICES )) bytes per silent device"
curl -s localhost:3997/api/v1/metrics/prometheus | grep -E "^aemos_engine_(chains|keys)" || true
stop_server

for round in $(seq "$ROUNDS"); do
  start_server "$WORK/empty"
  echo "== round $round, no devices (started in ${started} s): $(ingest) requests/s of 1,000 readings"
  stop_server
  start_server "$WORK/silent"
  echo "== round $round, $DEVICES silent devices (started in ${started} s, RSS $(rss_kb) kB): $(ingest) requests/s of 1,000 readings"
  stop_server
done

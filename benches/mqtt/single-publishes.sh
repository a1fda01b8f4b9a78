#!/usr/bin/env bash
# One reading per MQTT publish into the embedded broker (issue 13): `aemos serve` in dev mode
# with no chains, then `aemos-loadgen mqtt --batch 1` from DEVICES clients (each its own
# client id, QoS 1, INFLIGHT unacknowledged publishes each) for SECONDS_EACH, ROUNDS times.
# The durable rate is the server's `aemos_mqtt_readings_total` over the window; the load
# generator prints it with the server's CPU per reading (`--server-pid`).
# Usage: [DEVICES=1000] [INFLIGHT=10] [SECONDS_EACH=15] [ROUNDS=2] bash benches/mqtt/single-publishes.sh [path/to/release/aemos]
# (aemos-loadgen from the same directory)
set -euo pipefail
cd "$(dirname "$0")"
AEMOS=${1:-${CARGO_TARGET_DIR:-../../target}/release/aemos}
LOADGEN=$(dirname "$AEMOS")/aemos-loadgen
DEVICES=${DEVICES:-1000}
INFLIGHT=${INFLIGHT:-10}
SECONDS_EACH=${SECONDS_EACH:-15}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || true
RUST_LOG=warn "$AEMOS" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:3996 \
  --mqtt-addr 127.0.0.1:18833 --mqtt5-addr off --coap-addr 127.0.0.1:0 --pg-addr off \
  --flight-addr off --mqtt-max-connections $((DEVICES + 1000)) 2>"$WORK/log" &
server=$!
until curl -sf localhost:3996/api/v1/health/readiness >/dev/null; do sleep 0.2; done
for round in $(seq "$ROUNDS"); do
  echo "== round $round: $DEVICES devices x $INFLIGHT in flight, 1 reading per publish, ${SECONDS_EACH}s"
  "$LOADGEN" mqtt --mqtt 127.0.0.1:18833 --url http://127.0.0.1:3996 --devices "$DEVICES" \
    --batch 1 --inflight "$INFLIGHT" --seconds "$SECONDS_EACH" --server-pid "$server" 2>&1 | tail -14
done
curl -s localhost:3996/api/v1/metrics/prometheus | grep -E "^aemos_mqtt_(dropped|lost|throttled)" || true

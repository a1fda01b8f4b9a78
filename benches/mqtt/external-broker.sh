#!/usr/bin/env bash
# aemos as a client of a real Mosquitto (`--mqtt-broker`), QoS 1 acknowledged to the broker
# only after the WAL sync: `aemos-loadgen mqtt` publishes to Mosquitto, and the rate reported is
# what aemos made durable (its aemos_mqtt_readings_total). One reading per publish, then
# batches of 100, and the embedded broker with the same load for comparison.
# Usage: [PUBLISHERS=100] [SECONDS_EACH=20] [INFLIGHT=1000] bash benches/mqtt/external-broker.sh [release dir]
set -euo pipefail
cd "$(dirname "$0")"
BIN=${1:-${CARGO_TARGET_DIR:-../../target}/release}
PUBLISHERS=${PUBLISHERS:-100}
SECONDS_EACH=${SECONDS_EACH:-20}
INFLIGHT=${INFLIGHT:-1000}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/mosquitto.conf" <<CONF
listener 18831 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages $INFLIGHT
max_queued_messages 1000000
CONF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>"$WORK/mosquitto.log" &
sleep 0.5
run() { # label, serve flags..., then -- mqtt address
  local label=$1; shift
  local flags=() ; while [ "$1" != "--" ]; do flags+=("$1"); shift; done; shift
  local mqtt=$1
  rm -rf "$WORK/data"
  RUST_LOG=warn "$BIN/aemos" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:3997 \
    --mqtt-addr 127.0.0.1:18832 --mqtt5-addr off --coap-addr 127.0.0.1:0 --pg-addr off \
    --flight-addr off "${flags[@]}" 2>"$WORK/log" &
  local server=$!
  until curl -sf localhost:3997/api/v1/health/readiness >/dev/null; do sleep 0.2; done
  sleep 1
  for batch in 1 100; do
    echo "== $label: $PUBLISHERS publishers, $batch reading(s) per publish, ${SECONDS_EACH}s"
    "$BIN/aemos-loadgen" mqtt --mqtt "$mqtt" --url http://127.0.0.1:3997 --devices "$PUBLISHERS" \
      --batch "$batch" --inflight 50 --seconds "$SECONDS_EACH" 2>&1 | tail -12
  done
  echo "== $label: server CPU seconds $(awk '{print ($14+$15)/100}' /proc/$server/stat), RSS $(awk '/VmRSS/ {print $2 " kB"}' /proc/$server/status)"
  kill $server; wait $server 2>/dev/null || true
}
run "external Mosquitto" --mqtt-broker mqtt://127.0.0.1:18831 -- 127.0.0.1:18831
run "embedded rumqttd" -- 127.0.0.1:18832

#!/usr/bin/env bash
# Device commands end to end: `aemos serve` (dev mode), then `aemos-loadgen commands`: DEVICES
# registered devices, each its own MQTT client that obeys and acknowledges at once and
# publishes seed 003's seven values every TELEMETRY (issue 11's `--interval 1s`), and
# CONCURRENCY API clients posting setFanSpeed, one command in flight per device. Prints the
# load's table (acknowledged commands/s, 202 and call-to-ack latencies, the server's ack
# histogram) and the server's RSS before and after.
# Usage: [DEVICES=10000] [SECONDS_EACH=20] [CONCURRENCY=200] [TELEMETRY=1s] bash benches/commands/commands-bench.sh [path/to/release/aemos]
# (aemos-loadgen from the same target directory)
set -euo pipefail
cd "$(dirname "$0")"
AEMOS=${1:-${CARGO_TARGET_DIR:-../../target}/release/aemos}
LOADGEN=$(dirname "$AEMOS")/aemos-loadgen
DEVICES=${DEVICES:-10000}
SECONDS_EACH=${SECONDS_EACH:-20}
CONCURRENCY=${CONCURRENCY:-200}
TELEMETRY=${TELEMETRY:-1s}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || true
RUST_LOG=warn "$AEMOS" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:3998 \
  --mqtt-addr 127.0.0.1:18830 --mqtt5-addr off --coap-addr 127.0.0.1:0 2>"$WORK/log" &
server=$!
until curl -sf localhost:3998/api/v1/health/readiness >/dev/null; do sleep 0.2; done
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$server/status; }
echo "== server RSS before devices: $(rss)"
telemetry=()
[ "$TELEMETRY" != off ] && telemetry=(--telemetry-interval "$TELEMETRY")
"$LOADGEN" commands --url http://127.0.0.1:3998 --mqtt 127.0.0.1:18830 --devices "$DEVICES" \
  --concurrency "$CONCURRENCY" --seconds "$SECONDS_EACH" --server-pid "$server" "${telemetry[@]}"
echo "== server RSS after: $(rss)"
curl -s localhost:3998/api/v1/metrics/prometheus | grep -E "^aemos_commands_(created|sent|closed)_total" || true

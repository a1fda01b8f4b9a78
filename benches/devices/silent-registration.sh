#!/usr/bin/env bash
# Memory per registered silent device and restart time: starts AEMOS (dev mode) on an empty
# data directory, registers N devices through POST /api/v1/devices (8 keep-alive connections),
# prints the server RSS per device, then restarts it on the same directory and times readiness.
# Usage: bash benches/devices/silent-registration.sh path/to/aemos [N=20000] [PORT=3991]
set -euo pipefail
AEMOS=$1; N=${2:-20000}; PORT=${3:-3991}
D=$(mktemp -d)
RUST_LOG=warn "$AEMOS" serve --data-dir "$D" --http-addr 127.0.0.1:$PORT --mqtt-addr 127.0.0.1:0 --mqtt5-addr off --coap-addr 127.0.0.1:0 2>>$D.log &
S=$!
until curl -sf localhost:$PORT/api/v1/health/readiness >/dev/null; do sleep 0.1; done
sleep 2
before=$(awk '/VmRSS/ {print $2}' /proc/$S/status)
t0=$(date +%s)
python3 "$(dirname "$0")/register.py" "$N" "$PORT"
t1=$(date +%s)
sleep 5
after=$(awk '/VmRSS/ {print $2}' /proc/$S/status)
echo "$N devices in $((t1-t0)) s; RSS $before -> $after kB: $(( (after - before) * 1024 / N )) bytes per device"
curl -s localhost:$PORT/api/v1/metrics/prometheus | grep -E "^aemos_(rule_chains|engine_watched)" || true
# restart time
kill $S; wait $S 2>/dev/null || true
t0=$(date +%s.%N)
RUST_LOG=warn "$AEMOS" serve --data-dir "$D" --http-addr 127.0.0.1:$PORT --mqtt-addr 127.0.0.1:0 --mqtt5-addr off --coap-addr 127.0.0.1:0 2>>$D.log &
S=$!
until curl -sf localhost:$PORT/api/v1/health/readiness >/dev/null; do sleep 0.05; done
python3 -c "import time; print(f'restart with $N devices: ready in {time.time() - $t0:.1f} s')"
echo "RSS after restart: $(awk '/VmRSS/ {print $2}' /proc/$S/status) kB"
kill $S; wait $S 2>/dev/null || true
rm -rf "$D" "$D.log"

#!/usr/bin/env bash
# Device commands end to end: `aemos serve` (dev mode), `aemos simulate --devices N` obeying and
# acknowledging over MQTT, wrk posting setFanSpeed commands round-robin over the devices. Prints
# wrk's rate and latency, the commands acknowledged, and the server's histogram of the time
# from API call to ack (aemos_command_ack_seconds), and the server's RSS.
# Usage: [DEVICES=10000] [SECONDS_EACH=20] [CONNECTIONS=50] bash benches/commands/commands-bench.sh [path/to/release/aemos]
set -euo pipefail
cd "$(dirname "$0")"
AEMOS=${1:-${CARGO_TARGET_DIR:-../../target}/release/aemos}
DEVICES=${DEVICES:-10000}
SECONDS_EACH=${SECONDS_EACH:-20}
CONNECTIONS=${CONNECTIONS:-50}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
RUST_LOG=warn "$AEMOS" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:3998 \
  --mqtt-addr 127.0.0.1:18830 --mqtt5-addr off --coap-addr 127.0.0.1:0 2>"$WORK/log" &
server=$!
until curl -sf localhost:3998/api/v1/health/readiness >/dev/null; do sleep 0.2; done
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$server/status; }
echo "== server RSS before devices: $(rss)"
start=$(date +%s)
"$AEMOS" simulate --devices "$DEVICES" --interval 60s --register --url http://127.0.0.1:3998 \
  --mqtt 127.0.0.1:18830 > "$WORK/sim.out" 2>"$WORK/sim.err" &
sim=$!
until [ "$(curl -s localhost:3998/api/v1/devices | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -ge "$DEVICES" ]; do sleep 1; done
sleep 5  # the last connections
echo "== $DEVICES devices registered and connected in $(( $(date +%s) - start )) s; server RSS: $(rss)"
echo "== wrk: setFanSpeed commands, $CONNECTIONS connections, ${SECONDS_EACH}s"
DEVICES="$DEVICES" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" -s commands.lua --latency http://127.0.0.1:3998 \
  | grep -E "Requests/sec|Latency|99%|Non-2xx|requests in"
sleep 3
curl -s localhost:3998/api/v1/metrics/prometheus | grep -E "^aemos_command(s_created_total|s_sent_total|s_closed_total|_ack_seconds_(bucket|count|sum))" | python3 -c '
import sys
buckets = []
for line in sys.stdin:
    name, value = line.rsplit(" ", 1)
    if "_bucket" in name:
        le = name.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    else:
        print(name, value.strip())
total = buckets[-1][1] if buckets else 0
for q in (0.5, 0.99):
    for le, n in buckets:
        if total and n >= q * total:
            print(f"ack p{int(q*100)} <= {le*1000:g} ms (histogram bucket)")
            break
'
echo "== server RSS after: $(rss)"
kill "$sim"

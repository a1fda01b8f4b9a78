#!/usr/bin/env bash
# Identity's cost on ingestion: the same wrk loads against `aemos serve` in dev mode (no
# credential) and in production mode (device tokens; the batch device owns all 10,000 sensors).
# Usage: [ROUNDS=3] [LOADS=batch] [SECONDS_EACH=20] bash benches/wrk/auth-bench.sh [path/to/release/aemos]
# (needs wrk and python3)
# With COUNT=instructions, the server runs under valgrind's callgrind instead and the script
# prints the instructions it executed for REQUESTS batch requests (instrumentation on only
# while they run): exact and repeatable on a machine without hardware counters, where wrk's
# rates drift by more than the 5% being measured.
set -euo pipefail
cd "$(dirname "$0")"
AEMOS=${1:-${CARGO_TARGET_DIR:-../../target}/release/aemos}
SECONDS_EACH=${SECONDS_EACH:-20}
# Runs alternate dev and production ROUNDS times (the machine's drift hits both alike);
# LOADS picks the loads ("batch", "single" or both).
ROUNDS=${ROUNDS:-1}
LOADS=${LOADS:-batch single}
SECRET=bench-secret-of-at-least-thirty-two-bytes
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 - "$WORK" <<'PY'
import json, sys, random
random.seed(7)
work = sys.argv[1]
readings = [{"sensor": f"sensor-{random.randrange(10000):05d}", "variable": "temperature",
             "value": round(random.uniform(15, 30), 2)} for _ in range(1000)]
json.dump({"readings": readings}, open(f"{work}/body.json", "w"))
json.dump({"id": "gateway", "sensors": [f"sensor-{i:05d}" for i in range(10000)]},
          open(f"{work}/gateway.json", "w"))
PY
jwt() { python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=")
head = b({"alg": "HS256", "typ": "JWT"}) + b"." + b({"sub": "bench", "role": "admin", "exp": int(time.time()) + 3600})
sig = base64.urlsafe_b64encode(hmac.new(sys.argv[1].encode(), head, hashlib.sha256).digest()).rstrip(b"=")
print((head + b"." + sig).decode())
PY
}
REQUESTS=${REQUESTS:-300}
COUNT=${COUNT:-}
# Posts the batch body REQUESTS times on one keep-alive connection; fails on any non-200.
post_batches() { # token
  python3 - "$WORK/body.json" "$REQUESTS" "$1" <<'PY'
import http.client, sys
body = open(sys.argv[1], "rb").read()
headers = {"content-type": "application/json"}
if sys.argv[3]:
    headers["authorization"] = "Bearer " + sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", 3999, timeout=600)
for _ in range(int(sys.argv[2])):
    c.request("POST", "/api/v1/write", body, headers)
    r = c.getresponse(); r.read()
    assert r.status == 200, (r.status, r.reason)
PY
}
run() { # mode
  rm -rf "$WORK/data"
  local extra=() wrap=()
  [ "$1" = production ] && extra=(--mode production --jwt-secret "$SECRET")
  if [ "$COUNT" = instructions ]; then
    # Quiet background: no engine tick or persistence while counting.
    extra+=(--engine-tick 1h --persist-interval 1h)
    wrap=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.$1.%p")
  fi
  RUST_LOG=warn "${wrap[@]}" "$AEMOS" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:3999 \
    --mqtt-addr 127.0.0.1:0 --mqtt5-addr off --coap-addr 127.0.0.1:0 "${extra[@]}" 2>"$WORK/log" &
  local pid=$!
  until curl -sf localhost:3999/api/v1/health/readiness >/dev/null; do sleep 0.2; done
  local batch_token="" single_token=""
  if [ "$1" = production ]; then
    local admin; admin=$(jwt)
    batch_token=$(curl -s localhost:3999/api/v1/devices -H "authorization: Bearer $admin" \
      -H 'content-type: application/json' --data-binary @"$WORK/gateway.json" | python3 -c 'import json,sys; b=sys.stdin.read(); print(json.loads(b).get("token") or sys.exit("no token: " + b))')
    single_token=$(curl -s localhost:3999/api/v1/devices -H "authorization: Bearer $admin" \
      -H 'content-type: application/json' -d '{"id": "purifier-1", "sensors": ["purifier-1-s"]}' | python3 -c 'import json,sys; b=sys.stdin.read(); print(json.loads(b).get("token") or sys.exit("no token: " + b))')
  else
    single_token=""
  fi
  if [ "$COUNT" = instructions ]; then
    post_batches "$batch_token" # warm up: first-touch allocations, lazy statics
    callgrind_control -i on "$pid" >/dev/null
    post_batches "$batch_token"
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local ir; ir=$(cat "$WORK"/callgrind."$1".* | awk '/^totals:/ {s += $2} END {print s}')
    rm -f "$WORK"/callgrind."$1".*
    echo "== $1: $ir instructions for $REQUESTS requests of 1000 readings ($((ir / REQUESTS / 1000)) per reading)"
    return
  fi
  if [[ " $LOADS " == *" batch "* ]]; then
  echo "== $1: batches of 1000 readings, 8 connections"
  BODY_FILE="$WORK/body.json" TOKEN="$batch_token" wrk -t2 -c8 -d"${SECONDS_EACH}s" -s batch.lua --latency http://127.0.0.1:3999 \
    | grep -E "Requests/sec|Latency|99%|Non-2xx"
  fi
  if [[ " $LOADS " == *" single "* ]]; then
  echo "== $1: single readings (/api/v1/datastreams/token), 50 connections"
  if [ -n "$single_token" ]; then
    TOKEN="$single_token" wrk -t2 -c50 -d"${SECONDS_EACH}s" -s single-reading.lua --latency http://127.0.0.1:3999 \
      | grep -E "Requests/sec|Latency|99%|Non-2xx"
  else
    SENSOR=purifier-1-s wrk -t2 -c50 -d"${SECONDS_EACH}s" -s single-reading.lua --latency http://127.0.0.1:3999 \
      | grep -E "Requests/sec|Latency|99%|Non-2xx"
  fi
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do
  run dev
  run production
done

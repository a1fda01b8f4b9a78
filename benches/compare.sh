#!/usr/bin/env bash
# aemos against the seeds' design (benches/baseline/), on this machine, same workload, same
# load levels, one after the other (issue 15).
#
# Usage: bash benches/compare.sh [path/to/release/dir]
#   the directory holding the `aemos` binary (cargo build --release -p aemos-api), or the
#   binary itself; default: $CARGO_TARGET_DIR/release, else target/release.
#
# Levels: one reading per request at 10, 50 and 200 connections with CHAINS (100) chains,
# then batches of BATCH_SIZE (1,000) readings at BATCH_CONNECTIONS (8) with BATCH_CHAINS
# (10,000) chains. Each level runs SECONDS_EACH (20) seconds of wrk, then waits until the
# system has processed everything it accepted (at most DRAIN_MAX seconds).
#
# Per level and system:
#   accepted readings/s      wrk: (requests - responses >= 400) x readings per request / duration
#   request latency p50/p99  wrk's latency distribution
#   rule evaluations/s       during the wrk window. Baseline: chain executions counted by the
#                            workers. aemos: readings taken in by the rule engine
#                            (aemos_engine_readings_total less its device-seen marks,
#                            aemos_engine_presence_marks_total); each reading of this workload
#                            is read by exactly one chain, so that is one evaluation per reading
#   notifications/s          `device-state-change` events received by listen.js (a stock
#                            socket.io-client in every device's room) during the wrk window
#   reading->notification    p50/p99 over the notifications of readings sent during the
#                            window, received then or while draining (listen.js says how)
#   CPU seconds per reading  utime + stime from /proc of every process of the system
#                            (baseline: redis-server, the node server, the workers; aemos: the
#                            one process) from wrk's start until drained, / accepted readings
# The table gives both systems, aemos/baseline per figure, and "aemos better by" (the ratio,
# or its inverse where lower is better), with the issue's targets. The same goes to OUT.
#
# Environment: SECONDS_EACH=20, OUT=compare-results.json, SYSTEMS="baseline aemos",
#   SINGLE_CONNECTIONS="10 50 200", BATCH_CONNECTIONS=8 (empty: no batch level),
#   BATCH_SIZE=1000, TOGGLING=10 (readings per batch that cross the threshold), CHAINS=100,
#   BATCH_CHAINS=10000, TOGGLE_EVERY=10 (a toggling sensor's chain changes state every that
#   many of its readings), BATCH_TOGGLE_EVERY=5 (the same in batches, whose 100 toggling
#   sensors get only TOGGLING readings per batch), THREADS=2 (wrk), WARMUP_SECONDS=3,
#   DRAIN_MAX=300 (the baseline's queue lags its ingestion: at batches it is still working
#   minutes after wrk stops, and what it does then counts in its CPU and latency),
#   WORKERS/SERVERS/CONCURRENCY/BASELINE_FSYNC (benches/baseline/start.sh),
#   BASELINE_PORT=3100, REDIS_PORT=6390, AEMOS_PORT=3210.
# Needs: node, wrk, redis-server (benches/baseline/install.sh installs them and the npm
# packages; run it once, it is idempotent).
set -euo pipefail
BENCHES=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCHES")
COMPARE=$BENCHES/compare
BASELINE=$BENCHES/baseline

RELEASE=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
SECONDS_EACH=${SECONDS_EACH:-20}
OUT=${OUT:-compare-results.json}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
SYSTEMS=${SYSTEMS:-baseline aemos}
SINGLE_CONNECTIONS=${SINGLE_CONNECTIONS-10 50 200}
BATCH_CONNECTIONS=${BATCH_CONNECTIONS-8}
BATCH_SIZE=${BATCH_SIZE:-1000}
TOGGLING=${TOGGLING:-10}
CHAINS=${CHAINS:-100}
BATCH_CHAINS=${BATCH_CHAINS:-10000}
TOGGLE_EVERY=${TOGGLE_EVERY:-10}
BATCH_TOGGLE_EVERY=${BATCH_TOGGLE_EVERY:-5}
THREADS=${THREADS:-2}
WARMUP_SECONDS=${WARMUP_SECONDS:-3}
DRAIN_MAX=${DRAIN_MAX:-300}
BASELINE_PORT=${BASELINE_PORT:-3100}
REDIS_PORT=${REDIS_PORT:-6390}
AEMOS_PORT=${AEMOS_PORT:-3210}
export REDIS_PORT

die() { echo "compare.sh: $*" >&2; exit 2; }
AEMOS=""
if [[ " $SYSTEMS " == *" aemos "* ]]; then
  case $RELEASE in /*) ;; *) RELEASE=$PWD/$RELEASE ;; esac
  AEMOS=$RELEASE/aemos
  [ -f "$RELEASE" ] && AEMOS=$RELEASE # the binary itself is accepted too
  [ -x "$AEMOS" ] || die "no aemos binary at $AEMOS.
  Build it first (cargo build --release -p aemos-api) and pass its directory:
    bash benches/compare.sh path/to/target/release
  or run the baseline alone: SYSTEMS=baseline bash benches/compare.sh"
fi
for tool in node wrk redis-server redis-cli curl; do
  command -v "$tool" >/dev/null || die "$tool is missing: run bash benches/baseline/install.sh"
done
[ -d "$BASELINE/node_modules" ] || die "npm packages missing: run bash benches/baseline/install.sh"
if [ "$CHAINS" -lt "$THREADS" ] || [ "$BATCH_CHAINS" -lt "$CHAINS" ] || [ "$BATCH_SIZE" -le "$TOGGLING" ]; then
  die "needs THREADS <= CHAINS <= BATCH_CHAINS and TOGGLING < BATCH_SIZE"
fi

WORK=$(mktemp -d -t aemos-compare.XXXXXX)
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
BASELINE_RUN=""
AEMOS_PID=""
LISTEN_PID=""
cleanup() {
  [ -n "$LISTEN_PID" ] && kill "$LISTEN_PID" 2>/dev/null
  [ -n "$AEMOS_PID" ] && kill "$AEMOS_PID" 2>/dev/null && wait "$AEMOS_PID" 2>/dev/null
  [ -n "$BASELINE_RUN" ] && bash "$BASELINE/stop.sh" "$BASELINE_RUN"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
CLK_TCK=$(getconf CLK_TCK)
# Every pid of the given ones and of their descendants.
descendants() {
  local p kids
  for p in "$@"; do
    [ -d "/proc/$p" ] || continue
    echo "$p"
    kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -n "${kids// /}" ] && descendants $kids
  done
  return 0
}
# utime + stime (clock ticks) of a process and its descendants.
ticks_of() {
  local total=0 p t
  for p in $(descendants "$1"); do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
# "name=ticks ..." for the system's processes (SYSTEM_PROCS: "name:pid ...").
cpu_snapshot() {
  local e out=""
  for e in $SYSTEM_PROCS; do out+="${e%%:*}=$(ticks_of "${e#*:}") "; done
  echo "$out"
}
# Two snapshots -> {"total": seconds, "by_process": {"name": seconds, ...}}.
cpu_delta() {
  awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN {
    n = split(a, x, " "); for (i = 1; i <= n; i++) { split(x[i], kv, "="); before[kv[1]] = kv[2] }
    n = split(b, y, " "); out = ""; total = 0
    for (i = 1; i <= n; i++) {
      split(y[i], kv, "="); d = (kv[2] - before[kv[1]]) / hz; total += d
      out = out (out == "" ? "" : ",") sprintf("\"%s\":%.3f", kv[1], d)
    }
    printf "{\"total\":%.3f,\"by_process\":{%s}}", total, out
  }'
}

# The system's counters: "EVALUATIONS BACKLOG".
prom() { # metric name -> value (0 when absent)
  awk -v m="$1" '$1 == m {v = $2} END {printf "%d", v + 0}' "$WORK/metrics"
}
counters() {
  if [ "$SYSTEM" = baseline ]; then
    local evals backlog
    evals=$(redis-cli -p "$REDIS_PORT" hget bench:stats evaluations)
    backlog=$(redis-cli -p "$REDIS_PORT" eval "return redis.call('llen', KEYS[1]) + redis.call('llen', KEYS[2]) + redis.call('zcard', KEYS[3]) + redis.call('zcard', KEYS[4])" 4 \
      bull:rule-engine-events:wait bull:rule-engine-events:active bull:rule-engine-events:prioritized bull:rule-engine-events:delayed)
    echo "${evals:-0} ${backlog:-0}"
  else
    curl -sf "http://127.0.0.1:$AEMOS_PORT/api/v1/metrics/prometheus" > "$WORK/metrics" || : > "$WORK/metrics"
    local engine accepted notified
    # The engine counts a device-seen mark beside each device's readings: not evaluations.
    engine=$(( $(prom aemos_engine_readings_total) - $(prom aemos_engine_presence_marks_total) ))
    accepted=$(prom aemos_readings_accepted_total)
    notified=$(prom aemos_notifications_total)
    # Backlog: readings made durable that the engine has not taken in yet.
    echo "$engine $((accepted > engine ? accepted - engine : 0)) $notified"
  fi
}
# Waits until everything accepted is processed. Baseline: its queue empty and its counters
# still for a second. aemos: its counters (engine readings, notifications) still for a second
# with every accepted reading taken in by the engine, or still for 3 s (should the two
# counters not meet). Sets DRAINED.
drain() {
  local deadline=$(( $(date +%s) + DRAIN_MAX )) prev="" cur still=0 backlog
  DRAINED=false
  while [ "$(date +%s)" -lt "$deadline" ]; do
    cur=$(counters)
    backlog=$(echo "$cur" | cut -d' ' -f2)
    if [ "$cur" = "$prev" ]; then
      still=$((still + 1))
      if [ "$backlog" = 0 ] && [ "$still" -ge 2 ]; then DRAINED=true; return; fi
      if [ "$SYSTEM" = aemos ] && [ "$still" -ge 6 ]; then DRAINED=true; return; fi
    else
      still=0
    fi
    prev=$cur
    sleep 0.5
  done
}

start_listener() { # devices
  coproc LISTEN { exec node "$COMPARE/listen.js" "$URL" --count "$1" 2>>"$WORK/listen.err"; }
  LISTEN_PID=$LISTEN_PID
  local line=""
  read -r -t 60 line <&"${LISTEN[0]}" || true
  [[ $line == *'"ready":true'* ]] || die "listen.js did not subscribe: $line $(cat "$WORK/listen.err")"
}
stop_listener() {
  echo quit >&"${LISTEN[1]}" 2>/dev/null || true
  wait "$LISTEN_PID" 2>/dev/null || true
  LISTEN_PID=""
}

run_wrk() { # shape connections seconds -> wrk output in $WORK/wrk.out
  local shape=$1 c=$2 s=$3
  if [ "$shape" = single ]; then
    SYSTEM=$SYSTEM THREADS=$THREADS SENSORS=$CHAINS TOGGLE_EVERY=$TOGGLE_EVERY \
      wrk -t"$THREADS" -c"$c" -d"${s}s" --timeout 10s --latency -s "$COMPARE/single.lua" "$URL" > "$WORK/wrk.out" 2>&1
  else
    SYSTEM=$SYSTEM THREADS=$THREADS SENSORS=$CHAINS TOGGLE_EVERY=$BATCH_TOGGLE_EVERY TOGGLING=$TOGGLING \
      QUIET_FILE="$WORK/quiet-$SYSTEM.txt" \
      wrk -t"$THREADS" -c"$c" -d"${s}s" --timeout 10s --latency -s "$COMPARE/batch.lua" "$URL" > "$WORK/wrk.out" 2>&1
  fi
  grep -q '^WRKJSON ' "$WORK/wrk.out" || die "wrk failed: $(cat "$WORK/wrk.out")"
}

run_level() { # shape connections
  local shape=$1 c=$2 devices rpr level
  if [ "$shape" = single ]; then devices=$CHAINS; rpr=1; level="single-$c"; else devices=$BATCH_CHAINS; rpr=$BATCH_SIZE; level="batch-$c"; fi
  echo "== $SYSTEM $level (${SECONDS_EACH}s)" >&2
  start_listener "$devices"
  local c0 cpu0 t0 t1 c1 t2 c2 cpu1 listen
  c0=$(counters); cpu0=$(cpu_snapshot); t0=$(now_ms)
  run_wrk "$shape" "$c" "$SECONDS_EACH"
  t1=$(now_ms); c1=$(counters)
  drain
  t2=$(now_ms); cpu1=$(cpu_snapshot); c2=$(counters)
  echo "report $t0 $t1" >&"${LISTEN[1]}"
  read -r -t 30 listen <&"${LISTEN[0]}" || listen='{}'
  stop_listener
  local raw
  raw=$(printf '{"system":"%s","level":"%s","shape":"%s","connections":%d,"readings_per_request":%d,"t0":%s,"t1":%s,"t2":%s,"evaluations_t0":%s,"evaluations_t1":%s,"evaluations_t2":%s,"backlog_t1":%s,"cpu":%s,"drained":%s,"wrk":%s,"listen":%s}' \
    "$SYSTEM" "$level" "$shape" "$c" "$rpr" "$t0" "$t1" "$t2" "${c0%% *}" "${c1%% *}" "${c2%% *}" \
    "$(echo "$c1" | cut -d' ' -f2)" "$(cpu_delta "$cpu0" "$cpu1")" \
    "$DRAINED" "$(sed -n 's/^WRKJSON //p' "$WORK/wrk.out")" "$listen")
  node "$COMPARE/report.js" record "$raw" | tee -a "$RESULTS" | node -e '
    const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const f = (v, d = 0) => v === null ? "-" : Number(v).toFixed(d);
    console.error(`   ${f(r.accepted_readings_per_s)} readings/s, p50/p99 ${f(r.request_latency_p50_ms, 1)}/${f(r.request_latency_p99_ms, 1)} ms, ` +
      `${f(r.rule_evaluations_per_s)} evaluations/s, ${f(r.notifications_per_s)} notifications/s, ` +
      `notify p50/p99 ${f(r.notify_latency_p50_ms)}/${f(r.notify_latency_p99_ms)} ms, ` +
      `${r.cpu_seconds_per_reading === null ? "-" : r.cpu_seconds_per_reading.toExponential(2)} CPU s/reading, ` +
      `drained ${r.drained} after ${f(r.drain_seconds, 1)} s`);'
}

register() { # from to
  node "$COMPARE/setup.js" chains --system "$SYSTEM" --url "$URL" --from "$1" --to "$2" >&2
}

start_system() {
  if [ "$SYSTEM" = baseline ]; then
    URL=http://127.0.0.1:$BASELINE_PORT
    BASELINE_RUN=$(PORT=$BASELINE_PORT RUN_DIR="$WORK/baseline" bash "$BASELINE/start.sh" | tail -1)
    SYSTEM_PROCS=$(awk '{print $1 ":" $2}' "$BASELINE_RUN/pids" | tr '\n' ' ')
  else
    URL=http://127.0.0.1:$AEMOS_PORT
    mkdir -p "$WORK/aemos"
    RUST_LOG=${RUST_LOG:-warn} "$AEMOS" serve --mode dev --data-dir "$WORK/aemos/data" \
      --http-addr "127.0.0.1:$AEMOS_PORT" --mqtt-addr 127.0.0.1:0 --mqtt5-addr off \
      --coap-addr 127.0.0.1:0 --pg-addr off --flight-addr off > "$WORK/aemos/log" 2>&1 &
    AEMOS_PID=$!
    SYSTEM_PROCS="aemos:$AEMOS_PID"
    local i
    for i in $(seq 600); do
      curl -sf "$URL/api/v1/health/readiness" >/dev/null && break
      kill -0 "$AEMOS_PID" 2>/dev/null || die "aemos exited: $(tail -20 "$WORK/aemos/log")"
      sleep 0.1
    done
    curl -sf "$URL/api/v1/health/readiness" >/dev/null || die "aemos not ready after 60 s: $(tail -20 "$WORK/aemos/log")"
    echo "aemos up: $URL (pid $AEMOS_PID, $("$AEMOS" --version 2>/dev/null || echo aemos))" >&2
  fi
}
stop_system() {
  if [ "$SYSTEM" = baseline ]; then
    bash "$BASELINE/stop.sh" "$BASELINE_RUN"
    BASELINE_RUN=""
  else
    kill "$AEMOS_PID" 2>/dev/null || true
    wait "$AEMOS_PID" 2>/dev/null || true
    AEMOS_PID=""
  fi
}

for SYSTEM in $SYSTEMS; do
  [ "$SYSTEM" = baseline ] || [ "$SYSTEM" = aemos ] || die "unknown system $SYSTEM"
  start_system
  register 0 "$CHAINS"
  if [ "$WARMUP_SECONDS" -gt 0 ]; then
    echo "== $SYSTEM warm-up (${WARMUP_SECONDS}s, not measured)" >&2
    run_wrk single 10 "$WARMUP_SECONDS"
    drain
  fi
  for c in $SINGLE_CONNECTIONS; do run_level single "$c"; done
  if [ -n "$BATCH_CONNECTIONS" ]; then
    register "$CHAINS" "$BATCH_CHAINS"
    node "$COMPARE/setup.js" quiet --system "$SYSTEM" --out "$WORK/quiet-$SYSTEM.txt" \
      --size $((BATCH_SIZE - TOGGLING)) --from "$CHAINS" --to "$BATCH_CHAINS"
    for c in $BATCH_CONNECTIONS; do run_level batch "$c"; done
  fi
  stop_system
done

META=$(printf '{"date":"%s","host_cores":%d,"seconds_each":%s,"systems":"%s","single_connections":"%s","batch_connections":"%s","batch_size":%d,"toggling_per_batch":%d,"chains":%d,"batch_chains":%d,"toggle_every":%d,"batch_toggle_every":%d,"wrk_threads":%d,"baseline":{"workers":%d,"servers":%d,"concurrency":%d,"redis_appendfsync":"%s","node":"%s","redis":"%s"},"aemos":"%s","git":"%s"}' \
  "$(date -u +%FT%TZ)" "$(nproc)" "$SECONDS_EACH" "$SYSTEMS" "$SINGLE_CONNECTIONS" "$BATCH_CONNECTIONS" \
  "$BATCH_SIZE" "$TOGGLING" "$CHAINS" "$BATCH_CHAINS" "$TOGGLE_EVERY" "$BATCH_TOGGLE_EVERY" "$THREADS" "${WORKERS:-2}" "${SERVERS:-1}" \
  "${CONCURRENCY:-20}" "${BASELINE_FSYNC:-everysec}" "$(node --version)" \
  "$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')" "${AEMOS:-}" \
  "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)")
echo >&2
node "$COMPARE/report.js" table "$RESULTS" "$OUT" "$META"
echo "(written to $OUT)" >&2

#!/usr/bin/env bash
# Stops what start.sh started (by the pids it recorded) and removes its run directory.
# Usage: bash stop.sh RUN_DIR [--keep]
set -uo pipefail
RUN_DIR=${1:?usage: stop.sh RUN_DIR [--keep]}
[ -f "$RUN_DIR/pids" ] || { echo "stop.sh: no $RUN_DIR/pids" >&2; exit 1; }
# Node processes first (they close their Redis connections), Redis last.
tac "$RUN_DIR/pids" | while read -r name pid; do
  [ "$name" = redis ] && continue
  kill "$pid" 2>/dev/null
done
for _ in $(seq 30); do
  alive=0
  while read -r name pid; do
    [ "$name" = redis ] && continue
    kill -0 "$pid" 2>/dev/null && alive=1
  done < "$RUN_DIR/pids"
  [ $alive = 0 ] && break
  sleep 0.1
done
while read -r name pid; do
  if [ "$name" = redis ]; then kill "$pid" 2>/dev/null; else kill -9 "$pid" 2>/dev/null; fi
done < "$RUN_DIR/pids"
redis_pid=$(awk '$1 == "redis" {print $2}' "$RUN_DIR/pids")
for _ in $(seq 50); do
  [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null || break
  sleep 0.1
done
[ "${2:-}" = --keep ] || rm -rf "$RUN_DIR"

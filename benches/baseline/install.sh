#!/usr/bin/env bash
# Installs what the baseline and benches/compare.sh need, from the package registries only:
# Debian's redis-server and wrk (when missing), and the pinned npm packages of
# package-lock.json (express, bullmq, ioredis, socket.io, socket.io-client). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
command -v node >/dev/null || { echo "install.sh: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm is required" >&2; exit 1; }
# npm ci wipes and reinstalls node_modules: skipped when the tree was installed after the last
# change of the lock (npm's own hidden lockfile is newer). msgpackr-extract's install script
# (an optional native speed-up of BullMQ's msgpackr) is not run by npm 11's default policy;
# msgpackr then uses its JavaScript code.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
echo "baseline: redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/'), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), node $(node --version), npm packages installed"

#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders, the chain compiler, the MQTT codecs and the CoAP message path (cargo-fuzz, libFuzzer).
# Usage: [FUZZ_JOBS=N] [FUZZ_MERGE=0] bash fuzz/run.sh [SECONDS_PER_TARGET]   (default 600 s,
# every core; FUZZ_MERGE=0 leaves fuzz/corpus as it is)
# Needs a nightly toolchain and cargo-fuzz (`cargo install --locked cargo-fuzz`). Starts from
# fuzz/seeds and what fuzz/corpus holds, runs each target for the given time on every core,
# then minimizes the corpus back into fuzz/corpus/{target}, which the suite replays
# (ingest/tests/never_panic.rs, engine/tests/it/fuzz_corpus.rs). A crash is left in
# fuzz/artifacts/{target} and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aemos-fuzz}"
jobs=${FUZZ_JOBS:-$(nproc)}
for target in decoders chains mqtt_packets coap_messages; do
  work=$(mktemp -d)
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run -O "$target" "$work" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -fork="$jobs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tail -20
  if [ "${FUZZ_MERGE:-1}" = 0 ]; then
    rm -rf "$work"
    echo "$target: fuzzed (FUZZ_MERGE=0: corpus left as it is)"
    continue
  fi
  # Minimize: the smallest set of inputs that covers what the whole found.
  rm -rf "corpus/$target.min" && mkdir "corpus/$target.min"
  cargo +nightly fuzz run -O "$target" "corpus/$target.min" "$work" "corpus/$target" -- -merge=1 2>&1 | tail -3
  rm -rf "corpus/$target" "$work" && mv "corpus/$target.min" "corpus/$target"
  echo "$target: $(ls "corpus/$target" | wc -l) inputs in the corpus"
done

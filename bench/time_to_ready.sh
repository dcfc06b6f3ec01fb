#!/usr/bin/env bash
# Time from process start to /readyz 200 for an OFA-large-sized model (random weights) already
# in the cache, as a pod restarts after its init container: MODEL_ID resolved offline from the
# cache, no warm-up. Once with only pytorch_model.bin (what the hub ships), once after
# `ofa-entail convert` wrote model.safetensors. Also times the sha256 pass an online start
# makes to verify the cached files against the hub's listing. Loopback only; stops by itself.
#
# Usage: bench/time_to_ready.sh [RUNS]   (needs ~6 GB free in $TMPDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
BIN=target/release/ofa-entail
PORT=${PORT:-18124}
[ -x "$BIN" ] || cargo build --release -p ofa-entail
cache=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$cache"' EXIT
snap=$cache/models/iic--ofa_visual-entailment_snli-ve_large_en/snapshots/master
"$BIN" random-model --out "$snap" >/dev/null
python3 tools/safetensors_to_pytorch_bin.py "$snap" >/dev/null
rm "$snap/model.safetensors"

ready_after() { # prints seconds from spawn to ready
  local t0 t1
  t0=$(date +%s.%N)
  MODEL_CACHE=$cache MODEL_OFFLINE=1 WARMUP=false HOST=127.0.0.1 PORT=$PORT DRAIN_DELAY=0 \
    "$BIN" serve > "$cache/server.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null; do
    kill -0 $! 2>/dev/null || { cat "$cache/server.log" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s.%N)
  kill -TERM $! && wait $! 2>/dev/null || true
  echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n'
}

measure() { # label
  cat "$snap"/*.bin "$snap"/*.safetensors > /dev/null 2>&1 || true # page cache warm, as on a restart
  local times=()
  for _ in $(seq "$RUNS"); do times+=("$(ready_after)"); done
  printf '%-44s %s s\n' "$1" "${times[*]}"
}

echo "machine: $(nproc) cores, $(uname -m); $(date -u +%F)"
measure "pytorch_model.bin ($(du -h "$snap/pytorch_model.bin" | cut -f1))"
"$BIN" convert --model-dir "$snap" 2>&1 | sed 's/^/convert: /'
measure "model.safetensors ($(du -h "$snap/model.safetensors" | cut -f1))"
printf '%-44s %s\n' "sha256 of pytorch_model.bin (online check)" \
  "$(cargo run --release -q -p ofa-hub --example hash_file -- "$snap/pytorch_model.bin" | cut -d' ' -f3-)"

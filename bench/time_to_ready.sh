#!/usr/bin/env bash
# Time from process start to /readyz 200 for an OFA-large-sized model (random weights) already
# in the cache, as a pod restarts: `ofa-entail serve` with MODEL_ID resolved from the cache, no
# warm-up. The model is first downloaded from a local hub double (bench/hub_double.py) serving
# it as the hub does (pytorch_model.bin), then timed offline (MODEL_OFFLINE=1) and online (the
# listing fetched and the cache checked against it), with only pytorch_model.bin and again after
# `convert` wrote model.safetensors. Loopback only; stops by itself.
#
# Usage: bench/time_to_ready.sh [RUNS]   (needs ~6 GB free in $TMPDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
BIN=target/release/ofa-entail
PORT=${PORT:-18124}
HUB_PORT=${HUB_PORT:-18125}
ID=iic/ofa_visual-entailment_snli-ve_large_en
[ -x "$BIN" ] || cargo build --release -p ofa-entail
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$BIN" random-model --out "$work/repo" >/dev/null
python3 tools/safetensors_to_pytorch_bin.py "$work/repo" >/dev/null
rm "$work/repo/model.safetensors"
python3 bench/hub_double.py "$work/repo" "$HUB_PORT" &
until curl -sf "http://127.0.0.1:$HUB_PORT/api/v1/models/$ID/repo/files" >/dev/null; do sleep 0.2; done
export MODELSCOPE_ENDPOINT=http://127.0.0.1:$HUB_PORT MODEL_CACHE=$work/cache MODEL_ID=$ID
t0=$(date +%s.%N)
snap=$("$BIN" download --convert=false 2>/dev/null)
printf '%-52s %.1f s\n' "download 1.8 GB over loopback, verified" "$(echo "$(date +%s.%N) - $t0" | bc -l)"

ready_after() { # offline: true|false; prints seconds from spawn to ready
  local t0 t1
  t0=$(date +%s.%N)
  MODEL_OFFLINE=$1 WARMUP=false HOST=127.0.0.1 PORT=$PORT DRAIN_DELAY=0 \
    "$BIN" serve > "$work/server.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null; do
    kill -0 $! 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s.%N)
  kill -TERM $! && wait $! 2>/dev/null || true
  echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n'
}

measure() { # label offline
  sync # no writeback of the download or conversion during the timed runs
  cat "$snap"/*.bin "$snap"/*.safetensors > /dev/null 2>&1 || true # page cache warm, as on a restart
  local times=()
  for _ in $(seq "$RUNS"); do times+=("$(ready_after "$2")"); done
  printf '%-52s %s s\n' "$1" "${times[*]}"
}

echo "machine: $(nproc) cores, $(uname -m); $(date -u +%F)"
measure "pytorch_model.bin, offline" true
measure "pytorch_model.bin, online (listing + manifest check)" false
"$BIN" convert --model-dir "$snap" 2>&1 | sed 's/^/convert: /'
measure "model.safetensors, offline" true
measure "model.safetensors, online (listing + manifest check)" false
printf '%-52s %s\n' "sha256 of pytorch_model.bin (a cache without manifest)" \
  "$(cargo run --release -q -p ofa-hub --example hash_file -- "$snap/pytorch_model.bin" | cut -d' ' -f3-)"

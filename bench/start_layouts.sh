#!/usr/bin/env bash
# Process start → ready (`serve`, WARMUP=false, page cache warm) for f32 and int8, from the
# checkpoint (dense weights transposed or quantised at every start) and from the engine layout
# `convert --precision` wrote (used as it is), alternated with the reference's import + load
# (`time_large.py load`) on the same weights, in one run. Medians of RUNS each.
#
# Usage: bench/start_layouts.sh MODEL_DIR [RUNS] [REFERENCE_DIR]
#   MODEL_DIR: an OFA-large directory with pytorch_model.bin (the reference's
#   large_random_bin_only works; model.safetensors and the layouts are written into it).
#   REFERENCE_DIR: where ../shared/reference/setup.sh built the reference (optional).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$1
RUNS=${2:-3}
REF=${3:-}
BIN=target/release/ofa-entail
PORT=${PORT:-18126}
[ -x "$BIN" ] || cargo build --release -p ofa-entail
"$BIN" convert --model-dir "$DIR" >/dev/null 2>&1 # model.safetensors: both sides memory-map it
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

ready_after() { # precision; prints seconds from spawn to ready
  local t0 t1
  t0=$(date +%s.%N)
  MODEL_DIR=$DIR PRECISION=$1 WARMUP=false HOST=127.0.0.1 PORT=$PORT DRAIN_DELAY=0 \
    "$BIN" serve > "$work/server.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null; do
    kill -0 $! 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s.%N)
  grep -o '"weights":"[^"]*"' "$work/server.log" >> "$work/weights.txt" || true
  kill -TERM $! && wait $! 2>/dev/null || true
  echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n'
}

reference_load() { # on its own pytorch_model.bin-only copy of the weights when setup.sh made one
  local model=$DIR
  [ -d "$REF/large_random_bin_only" ] && model=$REF/large_random_bin_only
  (cd "$REF" && venv/bin/python time_large.py load --model "$model" --out "$work/ref.json" >/dev/null 2>&1)
  python3 -c "import json; r=json.load(open('$work/ref.json')); print(f\"{r['import_s'] + r['pipeline_load_s']:.2f}\")"
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
for p in f32 int8; do "$BIN" convert --model-dir "$DIR" --precision $p >/dev/null 2>&1; done
sync # no writeback of the new files during the timed starts
for round in $(seq "$RUNS"); do
  cat "$DIR"/*.safetensors > /dev/null # page cache warm, as on a restart
  for p in f32 int8; do
    # The layout moved aside (not rewritten: nothing is written while starts are timed).
    mv "$DIR/engine-cpu-$p.safetensors" "$work/aside"
    times[$p-checkpoint]+="$(ready_after $p) "
    mv "$work/aside" "$DIR/engine-cpu-$p.safetensors"
    times[$p-converted]+="$(ready_after $p) "
  done
  [ -n "$REF" ] && times[reference]+="$(reference_load) "
done
for k in f32-checkpoint f32-converted int8-checkpoint int8-converted reference; do
  [ -n "${times[$k]:-}" ] || continue
  printf '%-18s %s  median %s s\n' "$k" "${times[$k]}" "$(echo "${times[$k]}" | median)"
done
sort "$work/weights.txt" | uniq -c

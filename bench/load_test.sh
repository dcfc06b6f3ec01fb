#!/usr/bin/env bash
# Load test of `ofa-entail serve` with `hey` (Debian package): throughput and p50/p95/p99 at
# several concurrencies, with batching on (MAX_BATCH_SIZE=8) and off (1), plus overload.
# Loopback only; bounded request counts; stops by itself.
#
# Usage: bench/load_test.sh [MODEL_DIR] [REQUESTS_PER_RUN]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR=${1:-fixtures/tiny_ofa_ve}
N=${2:-200}
IMAGE=fixtures/golden/images/grace_hopper.jpg
BIN=target/release/ofa-entail
PORT=${PORT:-18123}
command -v hey >/dev/null || { echo "needs hey (apt-get install hey)" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release -p ofa-entail
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

boundary=ofaentailboundary
{
  printf -- '--%s\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' "$boundary"
  cat "$IMAGE"
  printf -- '\r\n--%s\r\nContent-Disposition: form-data; name="text"\r\n\r\na woman in a military uniform.\r\n--%s--\r\n' "$boundary" "$boundary"
} > "$work/body"

start_server() { # batch_size max_queue timeout
  MODEL_DIR=$MODEL_DIR HOST=127.0.0.1 PORT=$PORT RATE_LIMIT=off MAX_BATCH_SIZE=$1 MAX_QUEUE=$2 \
    REQUEST_TIMEOUT=$3 DRAIN_DELAY=0 "$BIN" serve > "$work/server.log" 2>&1 &
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && return 0
    sleep 0.5
  done
  echo "server did not become ready" >&2; exit 1
}
stop_server() { kill -TERM %1 2>/dev/null || true; wait %1 2>/dev/null || true; }

run() { # concurrency requests (rounded down to a multiple of the concurrency, as hey sends)
  set -- "$1" $(( $2 / $1 * $1 ))
  hey -n "$2" -c "$1" -m POST -T "multipart/form-data; boundary=$boundary" -D "$work/body" \
    "http://127.0.0.1:$PORT/predict" > "$work/hey.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/hey.txt")
  p50=$(awk '/ 50% in/ {print $3}' "$work/hey.txt")
  p95=$(awk '/ 95% in/ {print $3}' "$work/hey.txt")
  p99=$(awk '/ 99% in/ {print $3}' "$work/hey.txt")
  codes=$(awk '/Status code distribution/ {f=1; next} f && /\[/ {printf "%s%s", sep, $1 $2; sep=" "} f && !/\[/ && NF==0 {f=0}' "$work/hey.txt")
  printf '| %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %s |\n' "$batching" "$1" "$2" "$rps" \
    "$(echo "$p50 * 1000" | bc -l)" "$(echo "$p95 * 1000" | bc -l)" "$(echo "$p99 * 1000" | bc -l)" "$codes"
}

echo "model: $MODEL_DIR; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| batching | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | statuses |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for batch in 1 8; do
  batching=$([ "$batch" = 1 ] && echo "off (1)" || echo "on ($batch)")
  start_server "$batch" 1024 300
  run 1 $((N / 4)) > /dev/null 2>&1   # warm-up
  for c in 1 8 32; do run "$c" "$N"; done
  stop_server
done
# Overload: a small queue and a short deadline; p99 must stay bounded by REQUEST_TIMEOUT.
batching="on (8), MAX_QUEUE=16, REQUEST_TIMEOUT=5"
start_server 8 16 5
run 64 "$((N * 2))"
stop_server

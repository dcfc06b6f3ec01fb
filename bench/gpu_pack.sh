#!/usr/bin/env bash
# Builds what bench/gpu_check.sh runs on a GPU machine that has the driver but no Rust toolchain:
# the `--features cuda` binary, the golden test executables and the per-operation timer
# (crates/ofa-model/examples/gpu_ops.rs), stripped, in one xz archive
# (one dictionary over all three, so their shared CUDA kernels are stored once: ~12 MB).
#
# Usage: bench/gpu_pack.sh [OUT]   (default .gpu/bundle.tar.xz; CUDA_COMPUTE_CAP as for the
# toolchain, 90 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.gpu/bundle.tar.xz}
eval "$(tools/cuda-toolchain.sh "${CUDA_TOOLCHAIN_DIR:-.cuda}")"
target=${CUDA_TARGET_DIR:-target/cuda}
# One cargo run: built separately, the packages would resolve their dependencies' features
# differently and compile candle's CUDA kernels twice.
artifacts=$(cargo build --release --features ofa-entail/cuda,ofa-model/cuda \
  -p ofa-entail --bin ofa-entail -p ofa-model --test golden --test generic --example gpu_ops \
  --target-dir "$target" --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
while read -r name exe; do cp "$exe" "$stage/$name"; done <<<"$artifacts"
for exe in ofa-entail gpu_ops golden generic; do
  [ -x "$stage/$exe" ] || { echo "$exe was not built" >&2; exit 1; }
done
strip "$stage"/*
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - . | xz --lzma2=preset=9e,dict=192MiB -T1 >"$out.tmp"
mv "$out.tmp" "$out"
ls -l "$out" >&2

#!/usr/bin/env bash
# The GPU device check: on a machine with an NVIDIA GPU and its driver (no Rust toolchain, no
# network needed), from the repo plus the bundle bench/gpu_pack.sh made:
#   1. the golden tests on the GPU (f32 against the reference; bf16/f16 against f32), with the
#      CUDA graphs (the tests' default there) and without,
#   2. `bench --json`, batch sizes 1 to 64, in f32 and bf16 (OFA-large, random weights) without
#      CUDA graphs, then batch sizes 1 to 8 with them (the default; each shape's check in
#      `cuda_graphs`), and bf16 with the ResNet channels-first; the time
#      of each kind of operation at batch 16 (and 64 in bf16) (gpu_ops), and each stage's
#      time per kind of operation inside the model (`bench --profile-ops`),
#   3. a short `serve` load test per precision, and in bf16 with CUDA graphs (one client for
#      latency, 64 for throughput), with GPU memory from /metrics and /info,
#   4. a GPU ordinal that does not exist: one clear error, no panic.
# Prints one JSON summary on stdout; logs and raw results go to CHECK_OUT (a temporary
# directory by default). Finishes in about 5 to 6 minutes on an H100/H200 (each step is bounded).
#
# Usage: bench/gpu_check.sh [BUNDLE]   (a .tar.xz from bench/gpu_pack.sh, or a directory with
# ofa-entail, golden and generic; default .gpu/bundle.tar.xz). GPU_DEVICE picks the GPU (0).
# The CUDA 13 libraries (cuBLAS, cuBLASLt, cudart, cuRAND) are looked for in CUDA_LIBS, the
# CUDA toolkit and Python's nvidia-* wheels (a PyTorch for CUDA 13 has them).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bundle=${1:-.gpu/bundle.tar.xz}
gpu=${GPU_DEVICE:-0}
out=${CHECK_OUT:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
bin=$work/ofa-entail
port=${PORT:-18765}
log() { echo "[gpu_check $(date +%T)] $*" >&2; }
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

if [ -d "$bundle" ]; then cp "$bundle"/* "$work/"; else xz -dc "$bundle" | tar -C "$work" -xf -; fi
[ -x "$bin" ] || { echo "no ofa-entail in $bundle" >&2; exit 1; }

# Run-time libraries: the binary links cuBLAS, cuBLASLt, cudart and cuRAND from CUDA 13.
lib_dirs() {
  echo "${CUDA_LIBS:-}"
  echo /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib
  python3 -c 'import site; print(" ".join(p + "/nvidia/" + s + "/lib" for p in site.getsitepackages() for s in ("cu13", "cublas", "cuda_runtime", "curand")))' 2>/dev/null
}
libpath=""
missing=""
for lib in libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libcurand.so.10; do
  found=""
  for d in $(lib_dirs); do [ -e "$d/$lib" ] && { found=$d; break; }; done
  [ -n "$found" ] || found=$(dirname "$(timeout 30 find / -xdev -name "$lib" 2>/dev/null | head -n 1)" 2>/dev/null)
  if [ -n "$found" ] && [ "$found" != . ]; then
    case ":$libpath:" in *":$found:"*) ;; *) libpath=$libpath:$found ;; esac
  else
    missing="$missing $lib"
  fi
done
export LD_LIBRARY_PATH=${libpath#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
log "libraries from ${libpath#:}${missing:+; missing:$missing}"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader \
  >"$out/nvidia_smi.csv" 2>&1

log "golden tests on GPU $gpu"
# golden_plain: the same executable with CUDA graphs off.
for t in golden generic golden_plain; do
  exe=${t%_plain}
  graphs=8
  [ "$t" = golden_plain ] && graphs=0
  start=$(date +%s%N)
  timeout 240 env GPU_DEVICE="$gpu" OFA_FIXTURES="$root/fixtures" OFA_TEST_CUDA_GRAPHS=$graphs \
    OFA_PRECISION_REPORT="$out/precision.json" RUST_BACKTRACE=1 \
    "$work/$exe" --test-threads=1 >"$out/test_$t.log" 2>&1
  echo "$? $(( ($(date +%s%N) - start) / 1000000 ))ms" >"$out/test_$t.rc"
done

for p in f32 bf16; do
  log "operations $p"
  timeout 60 env GPU_DEVICE="$gpu" "$work/gpu_ops" "$p" >"$out/ops_$p.jsonl" 2>"$out/ops_$p.log"
  log "bench $p"
  timeout 240 env GPU_DEVICE="$gpu" CUDA_GRAPHS_MAX_BATCH=0 RESNET_LAYOUT=channels-last \
    "$bin" bench --precision "$p" --batch-sizes 1,2,4,8,16,32,64 --iterations 5 --json >"$out/bench_$p.json" 2>"$out/bench_$p.log"
  echo $? >"$out/bench_$p.rc"
  log "bench $p with CUDA graphs"
  timeout 120 env GPU_DEVICE="$gpu" CUDA_GRAPHS_MAX_BATCH=8 "$bin" bench --precision "$p" \
    --batch-sizes 1,2,4,8 --iterations 5 --json >"$out/bench_${p}_graphs.json" 2>"$out/bench_${p}_graphs.log"
  echo $? >"$out/bench_${p}_graphs.rc"
done
# The ResNet's blocks channels-first, as the GPU ran them before 2026-12-01, against
# bench_bf16's channels-last at each batch size (`auto`, the default elsewhere, times both at
# load on the largest batch only: `resnet_layout_tuning` in the other runs).
log "bench bf16, ResNet channels-first"
timeout 90 env GPU_DEVICE="$gpu" RESNET_LAYOUT=channels-first CUDA_GRAPHS_MAX_BATCH=0 "$bin" bench --precision bf16 \
  --batch-sizes 1,16,64 --iterations 3 --json >"$out/bench_bf16_nchw.json" 2>"$out/bench_bf16_nchw.log"
echo $? >"$out/bench_bf16_nchw.rc"
# Where each stage's time goes, per kind of operation (synchronised around each).
for p in f32:1 bf16:1,64; do
  log "bench ${p%%:*}, per operation"
  timeout 90 env GPU_DEVICE="$gpu" CUDA_GRAPHS_MAX_BATCH=0 "$bin" bench --precision "${p%%:*}" --batch-sizes "${p#*:}" \
    --iterations 1 --profile-ops --json >"$out/profile_${p%%:*}.json" 2>"$out/profile_${p%%:*}.log"
done
log "operations bf16 at batch 64"
timeout 90 env GPU_DEVICE="$gpu" "$work/gpu_ops" bf16 64 >"$out/ops_bf16_b64.jsonl" 2>"$out/ops_bf16_b64.log"

log "serve load tests"
timeout 120 "$bin" random-model --out "$work/large" >"$out/random_model.log" 2>&1
image=fixtures/golden/images/grace_hopper.jpg
get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
for p in bf16 f32 bf16_graphs; do
  graphs=0
  [ "$p" = bf16_graphs ] && graphs=8
  MODEL_DIR=$work/large GPU_DEVICE=$gpu PRECISION=${p%_graphs} HOST=127.0.0.1 PORT=$port \
    RATE_LIMIT=off MAX_BATCH_SIZE=32 MAX_QUEUE=512 DRAIN_DELAY=0 LOG_FORMAT=json \
    CUDA_GRAPHS_MAX_BATCH=$graphs "$bin" serve >"$out/serve_$p.log" 2>&1 &
  server=$!
  ready=0
  for _ in $(seq 240); do
    get "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && { ready=1; break; }
    kill -0 $server 2>/dev/null || break
    sleep 0.5
  done
  echo $ready >"$out/serve_$p.ready"
  if [ $ready = 1 ]; then
    timeout 60 python3 bench/gpu_load.py --port $port --image $image --concurrency 1 --seconds 10 \
      >"$out/load_${p}_c1.json" 2>>"$out/serve_$p.log"
    timeout 60 python3 bench/gpu_load.py --port $port --image $image --concurrency 64 --seconds 15 \
      >"$out/load_${p}_c64.json" 2>>"$out/serve_$p.log"
    get "http://127.0.0.1:$port/metrics" >"$out/metrics_$p.txt" 2>&1
    get "http://127.0.0.1:$port/info" >"$out/info_$p.json" 2>&1
  fi
  kill -TERM $server 2>/dev/null
  wait $server 2>/dev/null
  port=$((port + 1))
done

log "a GPU that does not exist"
timeout 60 env GPU_DEVICE=99 "$bin" predict --model-dir fixtures/tiny_ofa_ve --image $image \
  --text "a woman." >"$out/bad_device.log" 2>&1
echo $? >"$out/bad_device.rc"

python3 - "$out" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
def text(name):
    p = out / name
    return p.read_text(errors="replace") if p.exists() else ""
def load(name):
    try:
        return json.loads(text(name))
    except ValueError:
        return None
s = {"gpu": text("nvidia_smi.csv").strip(), "out": str(out)}
for t in ("golden", "generic", "golden_plain"):
    rc, secs = (text(f"test_{t}.rc").split() + ["?", "?"])[:2]
    log = text(f"test_{t}.log")
    s[f"test_{t}"] = {"exit": rc, "time": secs,
                      "result": (re.findall(r"test result: .*", log) or [log[-1500:]])[-1],
                      "failures": re.findall(r"---- (\S+) stdout ----", log)}
s["precision_vs_f32"] = load("precision.json")
for p in ("f32", "bf16", "bf16_b64"):
    ops = [json.loads(l) for l in text(f"ops_{p}.jsonl").splitlines() if l.startswith("{")]
    s[f"ops_{p}_ms"] = {o["op"]: o["ms"] for o in ops} or text(f"ops_{p}.log")[-800:]
for p in ("f32", "bf16", "f32_graphs", "bf16_graphs", "bf16_nchw"):
    b = load(f"bench_{p}.json")
    s[f"bench_{p}"] = ({k: b.get(k) for k in ("device", "gpu", "gpu_memory_used_bytes", "load_ms", "cuda_graphs", "resnet_layout", "resnet_layout_tuning")}
                       | {"batches": [{k: x[k] for k in ("batch_size", "resnet_ms", "encoder_ms", "decoder_ms", "total_ms", "model_pairs_per_s")} for x in b["batches"]]}
                       if b else {"exit": text(f"bench_{p}.rc").strip(), "log": text(f"bench_{p}.log")[-1500:]})
for p in ("f32", "bf16", "bf16_graphs"):
    m = text(f"metrics_{p}.txt")
    grab = lambda name: (re.findall(rf"^{name} (\S+)$", m, re.M) or [None])[0]
    info = load(f"info_{p}.json") or {}
    s[f"serve_{p}"] = {"ready": text(f"serve_{p}.ready").strip() == "1",
                       "c1": load(f"load_{p}_c1.json"), "c64": load(f"load_{p}_c64.json"),
                       "gpu_memory_used_bytes": grab("ofa_gpu_memory_used_bytes"),
                       "gpu_memory_total_bytes": grab("ofa_gpu_memory_total_bytes"),
                       "batch_size_sum": grab("ofa_batch_size_sum"), "batch_size_count": grab("ofa_batch_size_count"),
                       "info_gpu_memory": info.get("gpu_memory"), "info_device": (info.get("model") or {}).get("device"),
                       "resnet_layout": (info.get("model") or {}).get("resnet_layout"),
                       "resnet_layout_tuning": (info.get("model") or {}).get("resnet_layout_tuning")}
    graphs = [l for l in text(f"serve_{p}.log").splitlines() if '"cuda_graphs"' in l]
    if graphs:
        s[f"serve_{p}"]["cuda_graphs"] = graphs[-1][-3000:]
    if not s[f"serve_{p}"]["ready"]:
        s[f"serve_{p}"]["log"] = text(f"serve_{p}.log")[-1500:]
for p in ("f32", "bf16"):
    b = load(f"profile_{p}.json")
    s[f"profile_{p}"] = ({x["batch_size"]: [f'{o["stage"]} {o["op"]}: {o["ms"]:.2f} ms / {o["calls"]}' for o in x.get("ops") or []]
                         for x in b["batches"]} | {"resnet_layout": b.get("resnet_layout"), "resnet_layout_tuning": b.get("resnet_layout_tuning")}
                         if b else text(f"profile_{p}.log")[-1500:])
bad = text("bad_device.log")
s["bad_device"] = {"exit": text("bad_device.rc").strip(), "message": bad.strip()[-400:],
                   "panicked": "panicked" in bad}
(out / "summary.json").write_text(json.dumps(s, indent=1))
print(json.dumps(s, indent=1))
PY

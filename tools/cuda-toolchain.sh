#!/usr/bin/env bash
# Installs a pinned CUDA 13.0 compiler toolchain from NVIDIA's PyPI wheels into DIR (idempotent)
# and prints the `export` lines that make `cargo build --release --features cuda` work, also on a
# machine with no GPU and no driver:
#
#   eval "$(tools/cuda-toolchain.sh .cuda)"
#   cargo build --release -p ofa-entail --features cuda
#
# Why 13.0.x: driver 580 (CUDA 13.0) refuses PTX from a newer nvcc, so pip must not pick the
# newest wheels. CUDA_COMPUTE_CAP defaults to 90 (H100/H200; candle's kernel build turns it into
# sm_90a); set it to 80 (A100), 89 (L4), … for other GPUs.
#
# No wheel ships libcuda (it comes with the driver), so this builds a link stub,
# lib/stubs/libcuda.so (soname libcuda.so.1), for the linker only. It never goes on a run-time
# library path: on a GPU machine it would shadow the real driver. DIR/stub-runtime/libcuda.so.1
# exists to run a CUDA build where there is no driver (it then fails cleanly: no device).
set -euo pipefail

dir=${1:?usage: tools/cuda-toolchain.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cap=${CUDA_COMPUTE_CAP:-90}
python=${PYTHON:-python3}

# name==version: each on the 13.0 line.
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.0.2.14
)
cu="$dir/nvidia/cu13"
stamp="$dir/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "installing the CUDA 13.0 toolchain into $dir" >&2
  "$python" -m pip install -q --disable-pip-version-check --no-deps --upgrade --target "$dir" "${pins[@]}" >&2
  printf '%s' "${pins[*]}" >"$stamp"
fi
[ -x "$cu/bin/nvcc" ] || { echo "nvcc missing from $cu/bin after installing the wheels" >&2; exit 1; }

# The wheels ship only versioned names; `-lcublas` and friends need the plain ones.
for lib in cudart cublas cublasLt curand nvrtc; do
  versioned=$(cd "$cu/lib" && ls "lib$lib.so."* 2>/dev/null | sort | head -n 1)
  [ -n "$versioned" ] || { echo "lib$lib.so.* missing from $cu/lib" >&2; exit 1; }
  ln -sfn "$versioned" "$cu/lib/lib$lib.so"
done

# The driver-API link stub: every cu* entry point of this cuda.h (after its macros turned the
# names into their _v2/_ptds forms) and of the cudarc sources in the cargo registry, each
# answering CUDA_ERROR_NO_DEVICE (100).
stub="$cu/lib/stubs/libcuda.so"
if [ ! -f "$stub" ] || [ "$stub" -ot "$stamp" ]; then
  mkdir -p "$cu/lib/stubs" "$dir/stub-runtime"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  {
    echo '#include <cuda.h>' | cc -E -I "$cu/include" -x c - 2>/dev/null |
      grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' || true
    registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
    if [ -d "$registry" ]; then
      find "$registry" -maxdepth 7 -path '*cudarc-*/src/driver/sys/*.rs' -print0 2>/dev/null |
        xargs -0 -r grep -ohE 'pub (unsafe )?fn cu[A-Za-z0-9_]+' | awk '{print $NF}' || true
    fi
  } | grep -vE '^cu(GetErrorString|GetErrorName)$' | grep -E '^cu[A-Z]' | sort -u >"$work/names"
  {
    echo '/* Link stub for the CUDA driver API: no device here. */'
    echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = "no CUDA driver: link stub"; return 0; }'
    echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'
    sed 's/.*/int &(void) { return 100; }/' "$work/names"
  } >"$work/stub.c"
  cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$stub" "$work/stub.c"
  ln -sfn "$stub" "$dir/stub-runtime/libcuda.so.1"
  echo "link stub: $(wc -l <"$work/names") driver entry points" >&2
fi

cat <<EOF
export CUDA_HOME=$cu
export NVCC=$cu/bin/nvcc
export PATH=$cu/bin:\$PATH
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=$cap
EOF

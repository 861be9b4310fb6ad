#!/usr/bin/env bash
# Builds the CUDA variant of vishguard on a machine without a GPU or CUDA packages:
#
#   benches/build-cuda.sh            # release binary: target-cuda/release/vishguard
#   benches/build-cuda.sh --check    # type-check only (`cargo check --features cuda`)
#
# nvcc comes from pinned PyPI wheels in a virtualenv (Debian main has no CUDA toolkit). 13.0.x
# emits PTX that driver 580 (CUDA 13) loads; a newer nvcc may emit PTX an older driver cannot.
# candle links the CUDA libraries dynamically, so linking needs libcuda/libcublas/libcurand/
# libnvrtc: where they are absent, stub libraries exporting the symbols cudarc declares are
# made (they are only for the linker; the GPU host's real libraries are loaded at run time).
# The binary then needs, at start: libcuda.so.1 (the driver) and libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13, libcudart.so.13 (the `nvidia-*` cu13
# wheels provide them: LD_LIBRARY_PATH=.../site-packages/nvidia/cu13/lib).
# A cold build takes ~30 min on 2 cores (candle-kernels' PTX and its MoE library ~15 min).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CUDA_VENV:-$HOME/.cache/vishguard-cuda-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
CUDA_HOME=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}

# Link-time stubs for the libraries a GPU host has and this machine lacks.
cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(p["manifest_path"].rsplit("/", 1)[0])
        break')
lib="$CUDA_HOME/lib"
for spec in driver:cuda:libcuda.so.1 cublas:cublas:libcublas.so.13 \
            cublaslt:cublasLt:libcublasLt.so.13 curand:curand:libcurand.so.10 \
            nvrtc:nvrtc:libnvrtc.so.13; do
  IFS=: read -r dir name soname <<<"$spec"
  [ -e "$lib/lib$name.so" ] && continue
  stub=$(mktemp -d)
  grep -oE "pub unsafe fn [A-Za-z0-9_]+" "$cudarc/src/$dir/sys/mod.rs" | awk '{print "void " $4 "(void){}"}' \
    | sort -u >"$stub/$name.c"
  cc -shared -fPIC -o "$lib/lib$name.so" -Wl,-soname,"$soname" "$stub/$name.c"
  rm -rf "$stub"
done
[ -e "$lib/libcudart.so" ] || ln -s libcudart.so.13 "$lib/libcudart.so"

if [ "${1:-}" = --check ]; then
  cargo check --features cuda
else
  cargo build --release --features cuda
  ls -la "$CARGO_TARGET_DIR/release/vishguard"
fi

#!/usr/bin/env bash
# Builds kd with `--features cuda` on a machine without a system CUDA toolkit (or without a
# GPU): the CUDA 13.0 compiler, headers and libraries come from NVIDIA's PyPI wheels, and the
# driver library is a link-time stub (the real libcuda.so.1 comes with the GPU's driver).
#
#   scripts/build-cuda.sh [COMPUTE_CAP]      (default 90: H100 / H200)
#
# The binary lands in $CARGO_TARGET_DIR-cuda/release/kd; run it with the CUDA 13 libraries
# (cuBLAS, cuRAND, runtime) on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
cap=${1:-90}
root=${KD_CUDA_DIR:-$HOME/.cache/kd/cuda}
mkdir -p "$root/wheels"
pip_get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 -d "$root/wheels" "$@"
}
for p in nvidia-cuda-nvcc nvidia-cuda-crt nvidia-nvvm nvidia-cuda-runtime nvidia-cuda-cccl \
  nvidia-cublas nvidia-cuda-nvrtc; do
  pip_get "$p>=13.0,<13.1"
done
pip_get "nvidia-curand>=10.4,<10.5"
for w in "$root"/wheels/*.whl; do unzip -q -o "$w" -d "$root"; done
cuda="$root/nvidia/cu13"
(cd "$cuda/lib" && for l in cublas cublasLt curand nvrtc cudart; do
  ln -sf "$(ls lib$l.so.* | head -n 1)" "lib$l.so"
done)
# Link-time stub of the driver API: every cu* entry point of cudarc's bindings.
cargo fetch -q
bindings=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-*/src/driver/sys/mod.rs | tail -n 1)
mkdir -p "$cuda/lib/stubs"
grep -oE "pub unsafe fn cu[A-Za-z0-9_]+" "$bindings" | awk '{print $4}' | sort -u |
  sed 's/.*/void &(void) {}/' > "$root/libcuda-stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda/lib/stubs/libcuda.so" "$root/libcuda-stub.c"
export CUDA_ROOT="$cuda" PATH="$cuda/bin:$PATH" CUDA_COMPUTE_CAP="$cap"
export LIBRARY_PATH="$cuda/lib:$cuda/lib/stubs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}-cuda"
cargo build --release --features cuda --bin kd
echo "built $CARGO_TARGET_DIR/release/kd (sm_$cap)"

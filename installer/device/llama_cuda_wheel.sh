#!/usr/bin/env bash
# Run HERE, on the CPU: a CUDA build of the pinned llama-cpp-python for the lent GPU machine (Hopper, sm_90),
# which has nvcc but no network, and where pip's source build takes longer than a device call.
#
#   bash installer/device/llama_cuda_wheel.sh DEST_DIR
#
# The build:
# - CUDA 13.0, the toolkit of this machine's image (nvcc 13.0, the GPU machine's version); cuBLAS, which the
#   image lacks, comes from the registry's nvidia-cublas 13.0 wheel, for headers and linking only: at run
#   time libcublas.so.13 is the one the GPU machine's PyTorch already installs (the device scripts put its
#   folder on LD_LIBRARY_PATH).
# - GGML_BACKEND_DL: ggml's CPU and CUDA backends are separate libraries loaded at run time
#   (engine/policy/llama_backends.py loads them from the package's lib folder), so the same wheel imports and
#   runs on a machine with no NVIDIA driver: the CUDA backend fails to load there and
#   llama_supports_gpu_offload() answers False.
# - GGML_CUDA_NO_VMM: the image has no libcuda stub to link against; ggml's CUDA memory pool then grows by
#   plain allocations instead of virtual-memory mappings.
# - GGML_NATIVE=OFF: the CPU backend portable, as the CPU build of installer/setup.sh.
# Cached (the wheel as built, under ~/.cache/star-desktop/wheels/); DEST_DIR gets it cut down by
# installer/device/slim_wheel.py (103 MB -> 25 MB: one copy of each library, no PTX). Prints the build time
# (49 min on 2 cores).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${1:?usage: llama_cuda_wheel.sh DEST_DIR}"
py="${PYTHON:-$repo/.venv/bin/python}"
version="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$repo/pyproject.toml")"
cublas_version="13.0.2.14"
flags="-DGGML_CUDA=on -DGGML_BACKEND_DL=ON -DGGML_CUDA_NO_VMM=ON -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=90"
key="$(echo "$version $cublas_version $flags" | sha256sum | cut -c1-12)"
cache="${STAR_WHEEL_CACHE:-$HOME/.cache/star-desktop/wheels}/llama-cuda-${version}-${key}"

if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  command -v nvcc >/dev/null || { echo "llama_cuda_wheel: no nvcc here (CUDA 13.0 toolkit needed)"; exit 1; }
  nvcc --version | grep -q 'release 13\.0' || echo "llama_cuda_wheel: warning: nvcc is not 13.0 ($(nvcc --version | tail -1))"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$work" "nvidia-cublas==$cublas_version"
  (cd "$work" && "$py" -m zipfile -e nvidia_cublas-*.whl cublas)
  cu="$work/cublas/nvidia/cu13"
  ln -s libcublas.so.13 "$cu/lib/libcublas.so"
  ln -s libcublasLt.so.13 "$cu/lib/libcublasLt.so"
  export CMAKE_ARGS="$flags -DCMAKE_LIBRARY_PATH=$cu/lib -DCMAKE_CUDA_FLAGS=-I$cu/include -DCMAKE_CXX_FLAGS=-I$cu/include"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
  echo "llama_cuda_wheel: compiling llama-cpp-python $version for CUDA sm_90 ($flags); long on few cores, once"
  start=$(date +%s)
  "$py" -m pip wheel -q --no-deps --no-cache-dir -w "$work/out" "llama-cpp-python==$version"
  mkdir -p "$cache"
  mv "$work"/out/llama_cpp_python-*.whl "$cache/"
  echo "llama_cuda_wheel: built in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s on $(nproc) cores"
fi
mkdir -p "$dest"
# The CPU wheel of setup.sh has the same file name: only one llama-cpp-python wheel may sit in DEST_DIR.
rm -f "$dest"/llama_cpp_python-*.whl
# 103 MB as built; what the device call carries is cut to what `import llama_cpp` loads (installer/device/slim_wheel.py).
"$py" "$repo/installer/device/slim_wheel.py" "$cache"/llama_cpp_python-*.whl "$dest"

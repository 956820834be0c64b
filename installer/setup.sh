#!/usr/bin/env bash
# Sets up (or reuses) the repo's virtual environment in .venv and installs what this machine can use.
#
#   bash installer/setup.sh                 core engine (CPU)
#   bash installer/setup.sh --dev           + test tools
#   bash installer/setup.sh --with a,b      + extras from pyproject.toml (torch, llama, onnx, export, train, desktop, serve)
#
# A GPU (nvidia-smi) adds the `gpu` extra and builds llama.cpp with CUDA when `llama` is asked for.
# A second run with the same request and an unchanged pyproject.toml does nothing (stamp file).
# STAR_SETUP_DRY_RUN=1 prints the install commands instead of running them (the tests read the plan).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${STAR_PYTHON:-python3}"
dry_run="${STAR_SETUP_DRY_RUN:-}"
run() { if [ -n "$dry_run" ]; then echo "+ $*"; else "$@"; fi; }

extras=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) extras+=(dev) ;;
    --with) IFS=',' read -r -a more <<<"$2"; extras+=("${more[@]}"); shift ;;
    --with=*) IFS=',' read -r -a more <<<"${1#--with=}"; extras+=("${more[@]}") ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- what this machine offers -------------------------------------------------------------
gpu="none"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
fi
cuda_toolkit="none"
if command -v nvcc >/dev/null 2>&1; then
  cuda_toolkit="$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
fi
if [ "$gpu" != "none" ]; then extras+=(gpu); fi

# Unique, sorted, comma-joined extras.
extras_csv="$(printf '%s\n' "${extras[@]:-}" | sed '/^$/d' | sort -u | paste -sd, -)"

echo "star setup: python=$($python --version 2>&1 | cut -d' ' -f2) gpu=${gpu} cuda-toolkit=${cuda_toolkit} extras=[${extras_csv}]"

# --- idempotence ----------------------------------------------------------------------------
stamp="$venv/.star-setup"
want="$(cat "$repo/pyproject.toml" "$repo/installer/setup.sh" | sha256sum | cut -c1-16) extras=[${extras_csv}] gpu=${gpu}"
if [ -z "$dry_run" ] && [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
  echo "star setup: .venv is up to date (nothing to do)"
  exit 0
fi

[ -x "$venv/bin/python" ] || run "$python" -m venv "$venv"
pip=(run "$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip setuptools wheel >/dev/null

# torch: on CPU take the CPU build (pip finds it on local disk where the machine keeps one); a bare
# `torch` requirement would pull a multi-GB CUDA build onto a laptop that cannot use it.
if [[ ",${extras_csv}," == *",torch,"* || ",${extras_csv}," == *",train,"* || ",${extras_csv}," == *",export,"* ]]; then
  if [[ ",${extras_csv}," == *",dev,"* ]]; then
    # The tests' oracle, sam2's SAM2ImagePredictor, imports torchvision, which needs the torch it was
    # built with: take the matching pair (local disk where the machine keeps it; CUDA build, runs on CPU).
    "${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1"
  elif [ "$gpu" = "none" ]; then
    "${pip[@]}" install "torch==2.13.0" 2>/dev/null \
      || "${pip[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

# llama.cpp is compiled by pip; pick the build flags here.
if [[ ",${extras_csv}," == *",llama,"* ]]; then
  if [ "$gpu" != "none" ] && [ "$cuda_toolkit" != "none" ]; then
    export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=on"
    echo "star setup: building llama-cpp-python with CUDA"
  else
    # Portable CPU build: -march=native would not run on another CPU of the same family.
    export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=OFF"
  fi
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
fi

# pip's own wheel cache ignores CMAKE_ARGS (a CPU build could be reused on a GPU machine), so built
# The project's cache folder, as engine.fileio.cache_dir names it ($STAR_CACHE_DIR, else ~/.cache/star-desktop).
cache="${STAR_CACHE_DIR:-$HOME/.cache/star-desktop}"

# llama.cpp wheels live in a cache keyed by version and flags; CI and later runs reuse them.
if [[ ",${extras_csv}," == *",llama,"* ]]; then
  llama_version="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$repo/pyproject.toml")"
  key="$(echo "${llama_version} ${CMAKE_ARGS}" | sha256sum | cut -c1-12)"
  wheel_dir="${STAR_WHEEL_CACHE:-$cache/wheels}/llama-${llama_version}-${key}"
  if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "star setup: compiling llama-cpp-python ${llama_version} (${CMAKE_ARGS# }); several minutes, once"
    "${pip[@]}" wheel --no-deps --no-cache-dir -w "$wheel_dir" "llama-cpp-python==${llama_version}"
  fi
  "${pip[@]}" install --no-deps "$wheel_dir"/llama_cpp_python-*.whl
fi

# star-export's GGUF converter: llama.cpp's convert_hf_to_gguf.py + conversion/ + gguf-py/ from the sdist
# of the SAME llama-cpp-python version (the converter is on no package index; never copied into the repo).
if [[ ",${extras_csv}," == *",export,"* ]]; then
  llama_version="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$repo/pyproject.toml")"
  conv_dir="${STAR_CONVERTER_DIR:-$cache/llama-converter-${llama_version}}"
  if [ ! -f "$conv_dir/convert_hf_to_gguf.py" ]; then
    src_dir="$cache/src"
    mkdir -p "$src_dir" "$conv_dir.partial"
    [ -f "$src_dir/llama_cpp_python-${llama_version}.tar.gz" ] || \
      "${pip[@]}" download --no-binary :all: --no-deps -d "$src_dir" "llama-cpp-python==${llama_version}"
    tar xzf "$src_dir/llama_cpp_python-${llama_version}.tar.gz" -C "$conv_dir.partial" --strip-components=3 \
      "llama_cpp_python-${llama_version}/vendor/llama.cpp/convert_hf_to_gguf.py" \
      "llama_cpp_python-${llama_version}/vendor/llama.cpp/conversion" \
      "llama_cpp_python-${llama_version}/vendor/llama.cpp/gguf-py"
    rm -rf "$conv_dir" && mv "$conv_dir.partial" "$conv_dir"
    echo "star setup: llama.cpp converter ${llama_version} unpacked to $conv_dir"
  fi
fi

target="$repo"
[ -n "$extras_csv" ] && target="$repo[$extras_csv]"
"${pip[@]}" install -e "$target"

# onnxruntime (the `onnx` extra) and onnxruntime-gpu (the `gpu` extra) install the same `onnxruntime`
# module: with both, whichever came last wins and the GPU may sit idle (only CPUExecutionProvider). On a
# GPU machine keep the GPU build alone, reinstalled whole after both are removed.
if [ "$gpu" != "none" ] && [[ ",${extras_csv}," == *",onnx,"* ]]; then
  echo "star setup: keeping onnxruntime-gpu only (onnxruntime and onnxruntime-gpu share one module)"
  "${pip[@]}" uninstall -y onnxruntime onnxruntime-gpu
  "${pip[@]}" install "$(sed -n 's/.*"\(onnxruntime-gpu[^"]*\)".*/\1/p' "$repo/pyproject.toml")"
fi

# sam2 from PyPI declares an isolated torch build; install it beside ours without its deps.
if [[ ",${extras_csv}," == *",torch,"* || ",${extras_csv}," == *",train,"* || ",${extras_csv}," == *",export,"* ]]; then
  SAM2_BUILD_CUDA=0 "${pip[@]}" install --no-deps --no-build-isolation "sam2==1.1.0"
fi

# labelme, only as the tests' reference reader of labelme files (its own dependencies would pull a model zoo).
if [[ ",${extras_csv}," == *",dev,"* ]]; then
  "${pip[@]}" install --no-deps "labelme==6.3.1"
fi

[ -n "$dry_run" ] && exit 0
echo "$want" >"$stamp"
echo "star setup: ready ($venv)"

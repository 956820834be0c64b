#!/usr/bin/env bash
# Run HERE (not on the lent GPU machine): what installer/device/check.sh and scale.sh install THERE.
# The lent machine has Python 3.12, torch, CuPy, transformers, peft, accelerate, pyarrow, onnxruntime and
# pytest, and no network (docs/gpu.md); this adds the pinned TRL, what it lacks (datasets, SAM 2 and its
# config stack, pycocotools, diskcache), a CUDA build of the pinned
# llama-cpp-python (installer/device/llama_cuda_wheel.sh: compiled here once, cached) and llama.cpp's GGUF
# converter. All of it lands in .whl/ (ignored by git), which each device call carries: carry [".whl"].
# The tool carries at most 64 MiB per call, the repository's tracked files included: the end says whether
# this fits. The machine's own transformers serves there (5.17 when last seen): the pinned 5.24 wheel
# (13 MB) does not fit beside the CUDA llama.cpp.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$repo/.whl"
py="${PYTHON:-$repo/.venv/bin/python}"
exclude="$repo/.git/info/exclude"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p "$dest"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
# datasets twice: 5.2 wants pyarrow >= 24; the device scripts fall back to 4.8 (+ its fsspec) where the machine's
# is older. diskcache: llama-cpp-python imports it, and the machine lacks it.
for spec in trl==1.16.0 datasets==5.2.0 datasets==4.8.0 fsspec==2026.2.0 dill==0.4.0 \
    multiprocess==0.70.18 regex==2026.11.19 hydra-core==1.3.8 omegaconf==2.3.1 pycocotools==2.0.11 pysodmetrics==1.6.2 \
    diskcache==5.6.3; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$dest" "$spec"
done
# Only sdists on PyPI: built here as pure-Python wheels (sam2 without its optional CUDA extension, as setup.sh installs it).
SAM2_BUILD_CUDA=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" \
  sam2==1.1.0 iopath==0.1.10 antlr4-python3-runtime==4.9.3
# The CUDA llama.cpp wheel (replaces any other llama-cpp-python wheel in .whl/).
PYTHON="$py" bash "$repo/installer/device/llama_cuda_wheel.sh" "$dest"
# llama.cpp's converter of the same version, as installer/setup.sh unpacks it for star-export.
version="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$repo/pyproject.toml")"
conv="${STAR_CONVERTER_DIR:-$HOME/.cache/star-desktop/llama-converter-$version}"
[ -f "$conv/convert_hf_to_gguf.py" ] || { echo "wheels.sh: no converter at $conv: run bash installer/setup.sh --with export"; exit 1; }
rm -rf "$dest/llama-converter"
cp -r "$conv" "$dest/llama-converter"
find "$dest/llama-converter" -name __pycache__ -prune -exec rm -rf {} +

ls -la "$dest"
tracked=$(cd "$repo" && git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb "$dest" | cut -f1)
total=$((tracked + carried))
echo "wheels.sh: .whl $((carried / 1048576)) MiB + tracked files $((tracked / 1048576)) MiB = $((total / 1048576)) MiB of the 64 MiB a call carries"
[ "$total" -lt $((64 * 1048576)) ] || { echo "wheels.sh: over the carry limit"; exit 1; }

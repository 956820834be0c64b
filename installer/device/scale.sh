#!/usr/bin/env bash
# Real scale on a GPU: `star-export scale --device cuda` for the 7B shape (Qwen2.5-VL-7B + StAR's LoRA,
# random weights) with SAM 2.1-L, N = 1 / 8 / 32, and the transformers reference (bf16, on the GPU) in the
# same run. A call of its own, after installer/device/check.sh:
#     run(command="bash installer/device/scale.sh", carry=[".whl"], timeout_s=600)
# It needs a llama-cpp-python built with CUDA among the wheels (.whl/llama_cpp_python-*.whl; pip's
# source build on the device takes longer than a call). Without one the policy rows run on the CPU:
# the script says so in device.log and stops, since those rows would not answer the question.
# The targets (docs/benchmarks.md): N = 32 end to end under 3 s per query, at least 5x the reference,
# N = 8 under 2x N = 1.
# Dry run here (the shape's CI form, CPU, a minute):
#     STAR_DEVICE_PY=.venv/bin/python DEVICE=cpu SHRUNK=1 bash installer/device/scale.sh
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
out="${OUT:-/tmp/star-device-out}"
mkdir -p "$out"
logfile="$out/device.log"
device="${DEVICE:-cuda}"
shape="${SHAPE:-qwen2.5-vl-7b}"
py="${STAR_DEVICE_PY:-}"
say() { echo "[scale $(date +%T)] $*" | tee -a "$logfile"; }

if [ -z "$py" ]; then
  py=python3
  site=/tmp/star-site
  # shellcheck disable=SC2046
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    $(ls .whl/*.whl | grep -v -e '/datasets-' -e '/fsspec-') >> "$logfile" 2>&1 \
    || { say "wheel install failed (did wheels.sh run here, and does the call carry .whl?)"; exit 1; }
  export PYTHONPATH="$site:$repo"
else
  export PYTHONPATH="$repo"
fi

if [ "$device" = cuda ]; then
  offload=$("$py" -c "import llama_cpp; print(bool(llama_cpp.llama_supports_gpu_offload()))" 2>>"$logfile")
  if [ "$offload" != True ]; then
    say "llama-cpp-python here has no GPU offload (a CPU build): the policy rows would not be the GPU's; stopping"
    exit 3
  fi
fi

extra=()
[ -n "${SHRUNK:-}" ] && extra+=(--shrunk --image 320x240)
# 1280 x 960 photo, 32 tokens per sample; the work folder on the machine's own disk (the checkpoint is 17 GB).
say "star-export scale --shape $shape --device $device ${extra[*]}"
timeout 570 "$py" -m export.cli scale --shape "$shape" --device "$device" --reference bf16 \
  --work /tmp/star-scale --json "$out/scale-$shape-$device.json" --clean "${extra[@]}" >> "$logfile" 2>&1
rc=$?
say "exit $rc$([ "$rc" = 124 ] && echo ' (time limit)')"
sed -n '/^policy Q4_K_M/,$p' "$logfile" | head -60
exit $rc

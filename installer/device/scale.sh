#!/usr/bin/env bash
# The 7B shape on a GPU, a call of its own after installer/device/check.sh, run only where the first call
# left device time (the device tool starts no machine with under 4 minutes left; docs/gpu.md):
#     run(command="bash installer/device/scale.sh", carry=[".whl"], timeout_s=600)
# `star-export scale --shape qwen2.5-vl-7b --device cuda --segmenter torch --no-lora`: the random 7B checkpoint
# written on the machine by the repository's own writer (without StAR's LoRA: the merged network has the same
# shape, and the merge is a CPU export cost, measured in docs/benchmarks.md), exported to Q4_K_M + f16 mmproj
# there (16 cores), then N = 1 / 8 / 32 end to end on the GPU (llama.cpp CUDA, SAM 2.1-L in PyTorch
# bf16, the vote on the device) against transformers bf16 on the same GPU. Targets (docs/benchmarks.md):
# N = 32 end to end under 3 s per query, at least 5x the reference, N = 8 under 2x N = 1. Each N is decoded
# again with a top-k cut before top-p and greedily: on the GPU the sampler chain runs on the host, once per
# sample and step, over the whole vocabulary (SHAPE=qwen2.5-vl-3b for the 3B).
# It stops at once where llama.cpp cannot offload (a CPU build): those rows would not answer the question.
# Dry run here (the shape's CI form, CPU, a minute):
#     STAR_DEVICE_PY=.venv/bin/python DEVICE=cpu bash installer/device/scale.sh
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
start=$(date +%s)
out="${OUT:-/tmp/star-device-out}"
mkdir -p "$out"
logfile="$out/device.log"
device="${DEVICE:-cuda}"
shape="${SHAPE:-qwen2.5-vl-7b}"
py="${STAR_DEVICE_PY:-}"
say() { echo "[scale $(date +%T) +$(( $(date +%s) - start ))s] $*" | tee -a "$logfile"; }

if [ -z "$py" ]; then
  py=python3
  # shellcheck source=installer/device/install_wheels.sh
  source "$repo/installer/device/install_wheels.sh" || exit 1
else
  export PYTHONPATH="$repo"
fi

extra=()
if [ "$device" = cuda ]; then
  offload=$("$py" -c "from engine.policy.llama_lib import gpu_offload; print(gpu_offload())" 2>>"$logfile")
  if [ "$offload" != True ]; then
    say "llama.cpp here has no GPU offload: the policy rows would not be the GPU's; stopping"
    exit 3
  fi
else
  extra+=(--shrunk --image 320x240 --counts 1,2 --tokens 4)
fi
# 1280 x 960 photo, 32 tokens per sample; the work folder on the machine's own disk (~40 GB at the peak).
say "star-export scale --shape $shape --device $device --segmenter torch ${extra[*]}"
timeout $(( ${DEADLINE_S:-520} - ($(date +%s) - start) )) "$py" -m export.cli scale --shape "$shape" --device "$device" \
  --segmenter torch --no-lora --samplings top-k-40 greedy --reference bf16 --work /tmp/star-scale --json "$out/scale-$shape.json" --clean "${extra[@]}" \
  >> "$logfile" 2>&1
rc=$?
say "exit $rc$([ "$rc" = 124 ] && echo ' (time limit)')"
sed -n '/^policy Q4_K_M/,/^wrote/p' "$logfile" | head -60
exit $rc

#!/usr/bin/env bash
# The project's GPU checks, as ONE prepared call on a lent GPU machine (15 minutes of device time per task,
# 10 per call, the start included; no network there). Prepare here first (docs/gpu.md):
#     bash installer/device/wheels.sh
# then, through the device tool, from the repo root there:
#     run(command="bash installer/device/check.sh", carry=[".whl"], timeout_s=600)
# What it answers, most important first, each step under its own time limit and all of them under one
# deadline (DEADLINE_S, default 510 s from the start, installs included), so the call ends inside 9 minutes:
#   1. policy-nano: llama.cpp's CUDA offload on the nano bundle (installer/device/policy_gpu.py): the greedy
#      answer to the sample scene on the GPU identical to the CPU's (text, tokens, mask); N = 1 / 8 / 32 on both;
#   2. scale-3b: `star-export scale --shape qwen2.5-vl-3b --device cuda --segmenter torch`: a random 3B-shape
#      checkpoint written on the machine by the repository's own writer, exported (Q4_K_M + f16 mmproj), then
#      N = 1 / 8 / 32 end to end on the GPU (llama.cpp CUDA + SAM 2.1-L in PyTorch bf16 + the vote on the
#      device) against transformers bf16 on the same GPU (the targets: docs/benchmarks.md);
#   3. gpu-tests: the CUDA IoU-clustering kernel against the CPU engine, the nano trainers' CUDA losses;
#   4. product-path: the vote on the GPU against the CPU's (installer/device/product_path.py);
#   5. voting-bench and segment-bench: the CUDA rows of `star bench voting` and `star bench segment`;
#   6. track-bench: `star bench track` on the GPU (SAM 2.1 tiny and large, 300 frames of 1280 x 720).
# Everything lands in $OUT: device.log, summary.txt and a JSON per part (at most 8 files come back).
# Dry run here, on the CPU (no installs; the GPU rows skip, the 3B becomes its shrunk CI form):
#     STAR_DEVICE_PY=.venv/bin/python DEVICES=cpu bash installer/device/check.sh
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
start=$(date +%s)
deadline=$((start + ${DEADLINE_S:-510}))
out="${OUT:-/tmp/star-device-out}"
mkdir -p "$out"
logfile="$out/device.log"
: > "$out/summary.txt"
devices="${DEVICES:-cpu cuda}"
py="${STAR_DEVICE_PY:-}"
gpu=1
case " $devices " in *" cuda "*) ;; *) gpu=0 ;; esac

say() { echo "[device $(date +%T) +$(( $(date +%s) - start ))s] $*" | tee -a "$logfile"; }
step() {  # step NAME SECONDS COMMAND...: output to the log; exit status to summary.txt; never past the deadline
  local name=$1 limit=$2 rc left
  shift 2
  left=$((deadline - $(date +%s)))
  if [ "$left" -lt 15 ]; then
    say "$name: skipped (deadline)"; echo "$name skipped" >> "$out/summary.txt"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name (limit ${limit}s): $*"
  timeout "$limit" "$@" >> "$logfile" 2>&1
  rc=$?
  say "$name: exit $rc$([ "$rc" = 124 ] && echo ' (time limit)')"
  echo "$name $rc" >> "$out/summary.txt"
}

if [ -z "$py" ]; then
  py=python3
  # shellcheck source=installer/device/install_wheels.sh
  source "$repo/installer/device/install_wheels.sh" || exit 1
else
  export PYTHONPATH="$repo"
fi

say "machine: $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi'); $(nproc) cores"
"$py" - >> "$logfile" 2>&1 <<'EOF'
import importlib.metadata as m, platform, torch
names = ["torch", "transformers", "trl", "datasets", "peft", "accelerate", "sam2", "cupy-cuda13x", "onnxruntime",
         "pyarrow", "llama_cpp_python"]
def v(n):
    try:
        return m.version(n)
    except m.PackageNotFoundError:
        return "-"
print("python", platform.python_version(), {n: v(n) for n in names})
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from engine.policy.llama_lib import gpu_offload
print("llama.cpp gpu offload", gpu_offload())
EOF

step policy-nano 120 "$py" installer/device/policy_gpu.py --json "$out/policy-nano.json"
if [ "$gpu" = 1 ]; then
  scale=(--shape qwen2.5-vl-3b --device cuda)
else
  scale=(--shape qwen2.5-vl-3b --device cpu --shrunk --image 320x240 --counts 1,2 --tokens 4)
fi
# The work folder on the machine's own disk (the 3B checkpoint and its GGUFs take ~16 GB), removed after.
step scale-3b 300 "$py" -m export.cli scale "${scale[@]}" --segmenter torch --reference bf16 \
  --work /tmp/star-scale-3b --json "$out/scale-3b.json" --clean
step gpu-tests 90 "$py" -m pytest -q -p no:cacheprovider -o addopts= --timeout 80 -m gpu -rs \
  tests/engine/test_voting.py tests/training/test_nano_warmup.py
step product-path 40 "$py" installer/device/product_path.py --json "$out/product-path.json" --size 1024 --counts 8,32
# Eight threads and N = 8 / 32: at one thread its CPU rows (pycocotools, a float matmul at 2048 px) ran past
# 50 s before the CUDA rows.
step voting-bench 60 "$py" -m engine.cli --threads 8 bench voting --counts 8,32 --repeat 3 --json "$out/voting.json"
# PyTorch only: the lent machine's onnxruntime is the CPU build (its rows would be the CPU's, slowly).
seg=(--device cuda)
[ "$gpu" = 1 ] || seg=(--device cpu --models shrunk)
step segment-bench 45 "$py" -m engine.cli bench segment "${seg[@]}" --backends torch --repeat 3 --json "$out/segment.json"
# star track's cost at real size: SAM 2.1 tiny and large following one object through 300 frames of
# 1280 x 720, against sam2's own init_state (every frame decoded to the device first).
trk=(--device cuda --models tiny,large --frames 300)
[ "$gpu" = 1 ] || trk=(--device cpu --models shrunk --frames 12 --width 320 --height 180)
step track-bench 120 "$py" -m engine.cli --threads 8 bench track "${trk[@]}" --json "$out/track.json"

say "summary: $(tr '\n' ';' < "$out/summary.txt")"
sed -n '/^nano bundle, greedy/,/^ *cuda *32/p' "$logfile"
sed -n '/^policy Q4_K_M/,/^wrote/p' "$logfile" | head -60

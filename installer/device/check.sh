#!/usr/bin/env bash
# The project's GPU checks, as ONE prepared call on a lent GPU machine (the device tool's own notes:
# 15 minutes of device time per task, 10 per call, the start included). Prepare here first:
#     bash installer/device/wheels.sh
# then, through the device tool, from the repo root there:
#     run(command="bash installer/device/check.sh", carry=[".whl"], timeout_s=600)
# What it runs, most important first, each under its own time limit (together 9 minutes 5 s at most, inside
# the call's 10; the dry run below took 5 on two CPU cores, its nano-bench at the limit):
#   1. the GPU tests: the CUDA IoU-clustering kernel against the CPU engine, the nano trainers'
#      losses on CUDA against the CPU's (tests marked gpu; everything else in those files too);
#   2. the product path's vote on the GPU against the CPU's (installer/device/product_path.py: the masks stay
#      on the device, the CUDA kernel votes; best must match the CPU bit for bit, consensus within 1e-4);
#   3. star-train nano-bench on cpu and cuda: the nano recipe's time on a GPU, projected from each stage's
#      s/step with the recipe's own settings (never measured on a GPU yet);
#   4. star bench voting (its CUDA rows) and star bench segment --device cuda.
# Everything lands in $OUT (device.log, *.json: at most 8 files come back). Locally, a dry run on the CPU:
#     STAR_DEVICE_PY=.venv/bin/python DEVICES=cpu BENCH_STEPS=1 bash installer/device/check.sh
# (no install; the GPU tests skip, the benches run their CPU rows).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
out="${OUT:-/tmp/star-device-out}"
mkdir -p "$out"
logfile="$out/device.log"
devices="${DEVICES:-cpu cuda}"
steps="${BENCH_STEPS:-3}"
threads="${BENCH_THREADS:-8}"
py="${STAR_DEVICE_PY:-}"

say() { echo "[device $(date +%T)] $*" | tee -a "$logfile"; }
step() {  # step NAME SECONDS COMMAND...: the command's output goes to the log; its exit status to summary.txt
  local name=$1 limit=$2 rc
  shift 2
  say "$name: $*"
  timeout "$limit" "$@" >> "$logfile" 2>&1
  rc=$?
  say "$name: exit $rc$([ "$rc" = 124 ] && echo ' (time limit)')"
  echo "$name $rc" >> "$out/summary.txt"
}

if [ -z "$py" ]; then
  py=python3
  site=/tmp/star-site
  # datasets 5.2 needs pyarrow >= 24 and fsspec <= 2026.9; else 4.8 with its fsspec (both wheels travel).
  datasets=$("$py" - <<'EOF'
from importlib.metadata import version
from packaging.version import Version as V
new = V(version("pyarrow")) >= V("24") and V(version("fsspec")) <= V("2026.9.0")
print(".whl/datasets-5.2.0-py3-none-any.whl" if new else ".whl/datasets-4.8.0-py3-none-any.whl .whl/fsspec-2026.2.0-py3-none-any.whl")
EOF
)
  wheels=$(ls .whl/*.whl | grep -v -e '/datasets-' -e '/fsspec-')
  say "installing into $site: $(echo $wheels $datasets | xargs -n1 basename | tr '\n' ' ')"
  # shellcheck disable=SC2086
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" $wheels $datasets \
    >> "$logfile" 2>&1 || { say "wheel install failed (did wheels.sh run here, and does the call carry .whl?)"; exit 1; }
  export PYTHONPATH="$site:$repo"
else
  export PYTHONPATH="$repo"
fi

say "machine: $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
"$py" - >> "$logfile" 2>&1 <<'EOF'
import importlib.metadata as m, platform, torch
names = ["torch", "transformers", "trl", "datasets", "peft", "accelerate", "sam2", "cupy-cuda13x", "onnxruntime", "pyarrow"]
def v(n):
    try:
        return m.version(n)
    except m.PackageNotFoundError:
        return "-"
print("python", platform.python_version(), {n: v(n) for n in names})
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

step gpu-tests 120 "$py" -m pytest -q -p no:cacheprovider -o addopts= --timeout 100 -m gpu -rs \
  tests/engine/test_voting.py tests/training/test_nano_warmup.py
step product-path 30 "$py" installer/device/product_path.py --json "$out/product-path.json" --size 1024 --counts 8,32
step nano-bench 300 "$py" -m training.cli nano-bench --device $devices --steps "$steps" \
  --warm 2 --workers 8 --threads "$threads" --json "$out/nano-bench.json"
step voting-bench 50 "$py" -m engine.cli bench voting --repeat 3 --json "$out/voting.json"
# PyTorch only: the lent machine's onnxruntime is the CPU build (its rows would be the CPU's, slowly).
seg=(--device cuda)
case " $devices " in *" cuda "*) ;; *) seg=(--device cpu --models shrunk) ;; esac
step segment-bench 45 "$py" -m engine.cli bench segment "${seg[@]}" --backends torch --repeat 3 --json "$out/segment.json"

say "summary: $(tr '\n' ';' < "$out/summary.txt")"
sed -n '/^nano recipe stages/,/^full recipe/p; /^cpu \/ cuda/p' "$logfile"

#!/usr/bin/env bash
# Run HERE (not on the lent GPU machine): the wheels that installer/device/check.sh installs THERE.
# The lent machine has Python 3.12, torch, CuPy, transformers, peft, accelerate, pyarrow, onnxruntime and
# pytest, and no network (the device tool's notes on the lent machine); this adds the pinned versions the project's CI
# runs (transformers, TRL) and what it lacks (datasets, SAM 2 and its config stack, pycocotools). The
# wheels land in .whl/ (ignored by git, ~18 MB), which the device call carries: carry [".whl"].
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$repo/.whl"
py="${PYTHON:-$repo/.venv/bin/python}"
exclude="$repo/.git/info/exclude"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p "$dest"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
# datasets twice: 5.2 wants pyarrow >= 24; check.sh falls back to 4.8 (+ its fsspec) where the machine's is older.
for spec in transformers==5.24.0 trl==1.16.0 datasets==5.2.0 datasets==4.8.0 fsspec==2026.2.0 dill==0.4.0 \
    multiprocess==0.70.18 regex==2026.11.19 hydra-core==1.3.8 omegaconf==2.3.1 pycocotools==2.0.11 pysodmetrics==1.6.2; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$dest" "$spec"
done
# Only sdists on PyPI: built here as pure-Python wheels (sam2 without its optional CUDA extension, as setup.sh installs it).
SAM2_BUILD_CUDA=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" \
  sam2==1.1.0 iopath==0.1.10 antlr4-python3-runtime==4.9.3
du -sh "$dest"
ls "$dest"

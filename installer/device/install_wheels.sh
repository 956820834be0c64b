# Sourced by installer/device/check.sh and scale.sh on the GPU machine (no network there): installs the wheels
# that installer/device/wheels.sh put in .whl/ into /tmp/star-site and points the process at them.
# Expects: repo, py, logfile, and a say() function. Sets PYTHONPATH, STAR_CONVERTER_DIR and LD_LIBRARY_PATH.
site=/tmp/star-site
# datasets 5.2 needs pyarrow >= 24 and fsspec <= 2026.9; else 4.8 with its fsspec (both wheels travel).
datasets=$("$py" - <<'EOF'
from importlib.metadata import version
from packaging.version import Version as V
new = V(version("pyarrow")) >= V("24") and V(version("fsspec")) <= V("2026.9.0")
print(".whl/datasets-5.2.0-py3-none-any.whl" if new else ".whl/datasets-4.8.0-py3-none-any.whl .whl/fsspec-2026.2.0-py3-none-any.whl")
EOF
)
wheels=$(ls "$repo"/.whl/*.whl | grep -v -e '/datasets-' -e '/fsspec-')
say "installing into $site: $(echo $wheels $datasets | xargs -n1 basename | tr '\n' ' ')"
# shellcheck disable=SC2086
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" $wheels $datasets \
  >> "$logfile" 2>&1 || { say "wheel install failed (did wheels.sh run here, and does the call carry .whl?)"; return 1; }
export PYTHONPATH="$site:$repo"
# llama.cpp's converter (star-export's GGUF writer), unpacked by wheels.sh from the pinned sdist.
export STAR_CONVERTER_DIR="$repo/.whl/llama-converter"
# The CUDA llama.cpp wheel links cuBLAS and the CUDA runtime by soname (libcublas.so.13, libcudart.so.13): the
# machine's PyTorch brings both as pip packages, outside the loader's default path.
cuda_libs=$("$py" - <<'EOF'
import glob, sys
from pathlib import Path
dirs = []
for name in ("libcublas.so.13", "libcudart.so.13"):
    hits = [h for d in sys.path if d for h in glob.glob(f"{d}/nvidia/**/{name}", recursive=True)]
    if hits and str(Path(hits[0]).parent) not in dirs:
        dirs.append(str(Path(hits[0]).parent))
print(":".join(dirs))
EOF
)
say "CUDA libraries for llama.cpp from: ${cuda_libs:-nowhere (the CUDA backend will not load)}"
export LD_LIBRARY_PATH="${cuda_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

"""llama.cpp imported with its backends registered (engine/policy/llama_lib.py), for both kinds of build: the
CPU build of installer/setup.sh (backends linked in) and the CUDA wheel of installer/device/llama_cuda_wheel.sh
(GGML_BACKEND_DL: backends as separate libraries, loaded from the package's lib folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.models import require

REPO = Path(__file__).resolve().parents[2]
QUERY = "what coffee is served in"

ANSWER = """
import hashlib, json, sys
import llama_cpp
from engine.pipeline import load_reasoner
from engine.policy.llama_lib import gpu_offload, registered_backends
from engine.samples import sample_scene
image, _ = sample_scene()
reasoner = load_reasoner(device="cpu", max_samples=1)
result = reasoner.run(image, sys.argv[1], n=1)
reasoner.close()
print(json.dumps({"llama_cpp": llama_cpp.__file__, "backends": registered_backends(),
                  "gpu_offload": gpu_offload(), "text": result.samples[0].text,
                  "mask": hashlib.sha256(result.mask.tobytes()).hexdigest()}))
"""


def _answer(python_path: str) -> dict:
    env = {**os.environ, "PYTHONPATH": python_path, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", ANSWER, QUERY], env=env, capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cpu_build_registers_its_backends_and_offers_no_gpu_here():
    require("llama_cpp")
    import llama_cpp

    from engine.policy.llama_lib import gpu_offload, llama_modules, loaded_ggml

    L, M = llama_modules()
    assert L is llama_cpp and M.__name__ == "llama_cpp.mtmd_cpp"
    assert loaded_ggml(llama_cpp).ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    has_gpu = shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"]).returncode == 0
    if not has_gpu:
        assert gpu_offload() is False


def _cuda_wheel() -> Path | None:
    for wheel in sorted((REPO / ".whl").glob("llama_cpp_python-*.whl")):
        if any("libggml-cuda" in name for name in zipfile.ZipFile(wheel).namelist()):
            return wheel
    return None


def test_the_cuda_wheel_answers_on_the_cpu_exactly_as_the_cpu_build_does(tmp_path):
    """The CUDA wheel for the GPU machine, where installer/device/wheels.sh has built it: on a machine with no
    GPU visible its CUDA backend does not load, the CPU backend does (from the package's lib folder), it says
    it cannot offload, and the nano bundle's greedy answer and mask are the CPU build's, byte for byte."""
    require("llama_cpp")
    wheel = _cuda_wheel()
    if wheel is None:
        pytest.skip("no CUDA llama-cpp-python wheel in .whl/ (bash installer/device/wheels.sh builds it)")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    for lib in (site / "llama_cpp" / "lib").iterdir():  # zip extraction drops the execute bits
        lib.chmod(0o755)
    cuda = _answer(f"{site}{os.pathsep}{REPO}")
    ours = _answer(str(REPO))
    assert Path(cuda["llama_cpp"]).is_relative_to(site) and not Path(ours["llama_cpp"]).is_relative_to(site)
    assert cuda["backends"] >= 1 and cuda["gpu_offload"] is False
    assert (cuda["text"], cuda["mask"]) == (ours["text"], ours["mask"])
    assert "cup" in cuda["text"]  # the sample scene's answer (README), not an empty one

"""The GPU product path's decisions, tested on a CPU: which ONNX graph and flag a TensorRT build uses and the
precision the manifest records, the installer's GPU branch (one ONNX Runtime) under a faked nvidia-smi,
star doctor's warning for two ONNX Runtimes, and the GPU bench's bandwidth on CUDA 13's properties."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fp16, flag, expected", [
    (False, True, ("fp32", False, "fp32")),
    (False, False, ("fp32", False, "fp32")),
    (True, True, ("fp16", True, "fp16")),    # TensorRT 10.x: the FP16 graph, and the flag
    (True, False, ("fp16", False, "fp16")),  # TensorRT 11.x: strongly typed, FP16 comes from the graph
])
def test_a_tensorrt_build_takes_the_graph_of_its_precision(fp16, flag, expected):
    from export.tensorrt import plan_engine

    plan = plan_engine(fp16, flag)
    assert (plan.onnx, plan.fp16_flag, plan.precision) == expected


def test_engine_precision_is_read_from_the_inspector_and_checked_against_the_manifest(tmp_path):
    from engine.bundle import Manifest, SegmenterSpec, read_manifest, write_manifest
    from export.tensorrt import precision_from_layers
    from export.verify import check_engine_precision

    half = {"Layers": [{"Name": "conv", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
                       {"Name": "mm", "Outputs": [{"Format/Datatype": "Row major linear Half format"}]}]}
    full = {"Layers": [{"Name": "conv", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}]}
    assert precision_from_layers(half) == "fp16" and precision_from_layers(full) == "fp32"

    (tmp_path / "sam2").mkdir()
    for name in ("sam2_encoder.onnx", "sam2_decoder.onnx", "sam2_encoder.engine", "sam2_decoder.engine"):
        (tmp_path / "sam2" / name).write_bytes(name.encode())
    spec = SegmenterSpec(encoder_onnx="sam2/sam2_encoder.onnx", decoder_onnx="sam2/sam2_decoder.onnx",
                         encoder_engine="sam2/sam2_encoder.engine", decoder_engine="sam2/sam2_decoder.engine",
                         engine_precision="fp16", image_size=256)
    write_manifest(tmp_path, Manifest(name="t", segmenter=spec))
    bundle = read_manifest(tmp_path)
    assert bundle.manifest.segmenter.engine_precision == "fp16"
    ok = check_engine_precision(bundle, precision_of=lambda path: "fp16")
    assert ok.ok and "fp16" in ok.detail
    wrong = check_engine_precision(bundle, precision_of=lambda path: "fp32" if "decoder" in str(path) else "fp16")
    assert not wrong.ok and "sam2/sam2_decoder.engine computes in fp32" in wrong.detail

    data = json.loads((tmp_path / "bundle.json").read_text())
    data["segmenter"]["engine_precision"] = "int8"
    (tmp_path / "bundle.json").write_text(json.dumps(data))
    from engine.errors import ModelFileError

    with pytest.raises(ModelFileError, match="segmenter.engine_precision"):
        read_manifest(tmp_path)


def _setup_plan(tmp_path: Path, extras: str, gpu: bool) -> list[str]:
    """The install commands installer/setup.sh would run (its dry run), with or without a faked GPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200'\n" if gpu else "#!/bin/sh\nexit 9\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STAR_SETUP_DRY_RUN": "1"}
    proc = subprocess.run(["bash", str(REPO / "installer" / "setup.sh"), "--with", extras], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def test_the_installer_keeps_one_onnx_runtime_on_a_gpu_machine(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    plan = _setup_plan(tmp_path, "onnx", gpu=True)
    install = next(i for i, c in enumerate(plan) if " install -e " in c)
    assert "gpu" in plan[install] and "onnx" in plan[install]  # both extras asked ...
    after = plan[install + 1:]
    removal = next(i for i, c in enumerate(after) if "uninstall -y onnxruntime onnxruntime-gpu" in c)
    reinstall = after[removal + 1]
    assert " install onnxruntime-gpu" in reinstall and " onnxruntime " not in reinstall + " "  # ... one remains
    cpu_plan = _setup_plan(tmp_path, "onnx", gpu=False)
    assert not any("uninstall" in c or "onnxruntime-gpu" in c for c in cpu_plan)
    assert not any(",gpu" in c or "gpu," in c for c in cpu_plan)


def test_doctor_warns_when_both_onnx_runtimes_are_installed():
    from engine.doctor import onnxruntime_conflict

    assert onnxruntime_conflict({"onnxruntime": "1.32.0"}) is None
    assert onnxruntime_conflict({"onnxruntime-gpu": "1.32.0"}) is None
    warning = onnxruntime_conflict({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.0"})
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in warning


def test_the_bandwidth_bound_reads_what_cuda_13_gives():
    from engine.bench.voting import theoretical_bandwidth

    # CUDA 12 properties (an H100 SXM: 2,619 MHz HBM3 clock as the runtime reports it, 5,120-bit bus)
    assert theoretical_bandwidth({"memoryClockRate": 2619000, "memoryBusWidth": 5120}) == \
        pytest.approx(2 * 2619000e3 * 5120 / 8)
    # CUDA 13 dropped memoryClockRate: no KeyError, no number (the bench uses its measured copy)
    assert theoretical_bandwidth({"memoryBusWidth": 5120, "name": b"NVIDIA H200"}) is None

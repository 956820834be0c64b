"""Ctrl-C in the middle of a long command, then the same command again: it resumes and finishes with
nothing lost or counted twice. (star eval's own case is in tests/engine/test_eval.py.)"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.models import require

REPO = Path(__file__).resolve().parents[2]


def _interrupt_when(args: list[str], ready, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `args`, send SIGINT once `ready()` holds, and return the finished process."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_a_training_stage_interrupted_and_rerun_logs_every_step_once(tmp_path):
    require("torch")
    require("sam2")
    out = tmp_path / "sam"
    args = [sys.executable, "-m", "training.cli", "nano-sam", "--out", str(out), "--steps", "8", "--batch", "1",
            "--image-size", "64", "--embed-dim", "8", "--d-model", "32", "--eval-every", "100", "--eval-scenes", "2",
            "--save-every", "3", "--threads", "1", "--quiet"]
    log = out / "log.jsonl"

    def past_a_checkpoint() -> bool:  # a checkpoint at step 3, and steps logged after it
        return (out / "checkpoint" / "state.pt").exists() and log.exists() and log.read_text().count("\n") >= 4

    first = _interrupt_when(args, past_a_checkpoint)
    steps_then = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    if first.returncode != 0:  # (a very fast machine may finish before the signal)
        assert first.returncode == 130, first.stderr
        assert "re-run the same command" in first.stderr and "Traceback" not in first.stderr
        assert max(steps_then) < 8
    second = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert second.returncode == 0, second.stderr
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == list(range(1, 9)), steps


def test_star_export_interrupted_and_rerun_makes_one_whole_bundle(tiny_qwen, tiny_sam2, tmp_path):
    require("llama_cpp")
    require("onnxruntime")
    out = tmp_path / "bundle"
    args = [sys.executable, "-m", "export.cli", "bundle", "--model", str(tiny_qwen.hf_dir), "--quant", "Q8_0",
            "--checkpoint", str(tiny_sam2.checkpoint), "--config", str(tiny_sam2.config), "--out", str(out),
            "--no-verify"]
    first = _interrupt_when(args, lambda: any(out.glob("policy/*.gguf")))
    if first.returncode != 0:
        assert first.returncode == 130, first.stderr
        assert "re-run the same command" in first.stderr and "Traceback" not in first.stderr
    second = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert second.returncode == 0, second.stderr
    from engine.bundle import load_bundle

    bundle = load_bundle(out, verify="full")
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "bundle.json"
                     and not p.name.startswith("."))
    assert on_disk == sorted(bundle.manifest.files), on_disk  # no half-written or duplicate file left behind

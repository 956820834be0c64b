"""`star doctor --bundle --gpu-mem`: the fit arithmetic against a hand count from the nano policy's
own configuration (not from the GGUF header the code reads)."""

import json
import math

import pytest

from engine.bundle import default_bundle_dir
from engine.cli import main as star
from engine.fit import CUDA_CONTEXT_BYTES, HEADROOM, PROMPT_RESERVE, fit_report, parse_size
from training.nano.policy_model import NanoPolicyConfig


def _hand_count(n: int, max_new_tokens: int, gpu: bool) -> int:
    c = NanoPolicyConfig()
    root = default_bundle_dir()
    manifest = json.loads((root / "bundle.json").read_text())
    files = sum((root / manifest["policy"][k]).stat().st_size for k in ("model", "mmproj"))
    files += sum((root / manifest["segmenter"][k]).stat().st_size for k in ("encoder_onnx", "decoder_onnx"))
    head_dim = c.hidden // c.heads
    kv = c.layers * (PROMPT_RESERVE + n * max_new_tokens) * c.kv_heads * (2 * head_dim) * 2
    patches = (c.image_size // 14) ** 2
    vision = c.vision_heads * patches ** 2 * 4
    logits = n * c.vocab_size * 4
    return files + kv + vision + logits + (CUDA_CONTEXT_BYTES if gpu else 0)


def test_terms_and_largest_n_match_a_hand_count():
    gpu_mem = 640 * 2**20
    report = fit_report(default_bundle_dir(), samples=[1, 8, 32], max_new_tokens=1024, gpu_mem=gpu_mem)
    gpu = next(t for t in report["targets"] if t["gpu"])
    assert report["vision_patches"] == 256
    for row in gpu["rows"]:
        assert row["total"] == _hand_count(row["n"], 1024, gpu=True)
        assert row["fits"] == (row["total"] <= HEADROOM * gpu_mem)
    # total(N) = fixed + N x per_sample: the largest N solves fixed + N x per_sample <= 0.9 x memory.
    fixed = _hand_count(0, 1024, gpu=True)
    per_sample = _hand_count(1, 1024, gpu=True) - fixed
    assert gpu["largest_n"] == min(256, math.floor((HEADROOM * gpu_mem - fixed) / per_sample))
    assert 0 < gpu["largest_n"] < 256  # the memory was chosen so that the limit binds


def test_a_gpu_too_small_for_one_sample_says_zero():
    report = fit_report(default_bundle_dir(), samples=[1], max_new_tokens=1024, gpu_mem=256 * 2**20)
    gpu = next(t for t in report["targets"] if t["gpu"])
    assert gpu["largest_n"] == 0 and not gpu["rows"][0]["fits"]


@pytest.mark.parametrize("text,expected", [("24G", 24 * 2**30), ("24GiB", 24 * 2**30), ("16000M", 16000 * 2**20),
                                           ("1.5g", int(1.5 * 2**30)), ("8e9", 8 * 10**9)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


def test_doctor_prints_the_fit(capsys):
    assert star(["doctor", "--bundle", str(default_bundle_dir()), "--gpu-mem", "24G", "--samples", "1,8"]) == 0
    out = capsys.readouterr().out
    assert "GPU with 24 GiB" in out and "largest N that fits: 256 (the engine's limit)" in out
    with pytest.raises(SystemExit) as exit_:
        star(["doctor", "--bundle", str(default_bundle_dir()), "--gpu-mem", "lots"])
    assert exit_.value.code == 2
    assert "expected a size" in capsys.readouterr().err

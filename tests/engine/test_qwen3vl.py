"""Qwen3-VL end to end on a tiny random model of the real classes: llama.cpp's converter (the one
star-export runs) and runtime against transformers, and star-export detecting the family and its
0..1000 answer frame."""

import json

import numpy as np
import pytest

from engine.policy.hf_inputs import teacher_forced_logits
from engine.policy.types import SamplingParams
from tests import models
from tests.models import require

QUERIES = ("the red circle", "what keeps food cold")


@pytest.fixture(scope="module")
def tiny_qwen3_gguf(tiny_qwen3, tmp_path_factory):
    return models.convert_tiny_qwen(tiny_qwen3, tmp_path_factory.mktemp("tiny_qwen3_gguf"))


@pytest.fixture(scope="module")
def square_image(tiny_qwen3):
    # the processor pins the model input to 128 x 128; mtmd then sees the same pixels
    s = tiny_qwen3.image_size
    return np.random.default_rng(1).integers(0, 256, (s, s, 3), dtype=np.uint8)


def _llama(path, gguf):
    from engine.policy.llama_backend import LlamaPolicy

    return LlamaPolicy(path, gguf.mmproj, family="qwen3-vl", frame="qwen3-1000", n_ctx=2048, max_samples=4, threads=1)


@pytest.mark.parametrize("path,tolerance", [("model_f32", 1e-2), ("model_q8", 4e-2)])
def test_llama_cpp_matches_transformers(path, tolerance, tiny_qwen3, tiny_qwen3_gguf, square_image):
    require("torch").set_num_threads(1)
    from engine.policy.hf_backend import TransformersPolicy

    ref = TransformersPolicy(tiny_qwen3.hf_dir)
    assert (ref.family, ref.frame) == ("qwen3-vl", "qwen3-1000")
    policy = _llama(getattr(tiny_qwen3_gguf, path), tiny_qwen3_gguf)
    assert policy.architecture == "qwen3vl"
    text = "<think>a</think> <answer>[]</answer>"
    assert policy.tokenize(text) == ref.tokenizer(text, add_special_tokens=False).input_ids
    exact = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=16, ignore_stop=True)
    for query in QUERIES:
        greedy = ref.sample(square_image, query, 1, exact)[0].token_ids
        tensors = ref.inputs(square_image, query)
        assert policy.prompt_logits(square_image, query).shape[0] >= len(ref.tokenizer)
        assert policy.timings.prefill_tokens == tensors["input_ids"].shape[1]
        theirs = teacher_forced_logits(ref.model, tensors, greedy)
        ours = policy.forced_logits(square_image, query, greedy)
        rel = np.abs(ours - theirs).max(axis=1) / np.abs(theirs).max(axis=1)
        assert rel.max() < tolerance, rel
        top2 = np.sort(theirs, axis=1)[:, -2:]
        gap = (top2[:, 1] - top2[:, 0]) / np.abs(theirs).max(axis=1)
        safe = next((t for t, g in enumerate(gap[:-1]) if g <= 2 * tolerance), len(greedy))
        assert policy.sample(square_image, query, 1, exact)[0].token_ids[:safe] == greedy[:safe]


def test_star_export_detects_qwen3_vl(tiny_qwen3, tmp_path, square_image):
    from engine.bundle import load_bundle
    from engine.policy.llama_backend import LlamaPolicy
    from export.cli import main

    out = tmp_path / "bundle"
    assert main(["policy", "--model", str(tiny_qwen3.hf_dir), "--quant", "Q8_0", "--out", str(out)]) == 0
    spec = json.loads((out / "bundle.json").read_text())["policy"]
    assert (spec["family"], spec["frame"], spec["quant"]) == ("qwen3-vl", "qwen3-1000", "Q8_0")
    b = load_bundle(out)
    p = b.manifest.policy
    policy = LlamaPolicy(b.path(p.model), b.path(p.mmproj), family=p.family, frame=p.frame, n_ctx=2048, threads=1)
    out = policy.sample(square_image, QUERIES[0], 2, SamplingParams(seed=0, max_new_tokens=8))
    assert all(len(c.token_ids) >= 1 for c in out)

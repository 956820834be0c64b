"""Real shapes: the published configurations in `export.shapes`, the random checkpoints built from them,
and the CI-sized models that keep the real vision layout (patch 14 / 16, merge 2, window 112, the
full-attention and DeepStack block pattern, the real vocabulary) run at the real frame against
transformers, so every change exercises windowed attention on the 60 x 60 grid."""

import json
import math

import numpy as np
import pytest

from export.shapes import SHAPES, get_shape
from tests.models import require

QUERY = "the thing that keeps food cold"


@pytest.mark.parametrize("name", list(SHAPES))
def test_hand_count_of_parameters_matches_transformers(name):
    """The shapes' hand count against the parameters transformers instantiates (on the meta device);
    the published sizes: 3.75 B, 8.29 B, 8.77 B."""
    require("torch")
    from export.random_checkpoint import hf_config, tensor_shapes

    shape = get_shape(name)
    counted = sum(math.prod(s) for s in tensor_shapes(shape, hf_config(shape)).values())
    assert counted == shape.parameter_count()
    published = {"qwen2.5-vl-3b": 3.75e9, "qwen2.5-vl-7b": 8.29e9, "qwen3-vl-8b": 8.77e9}[name]
    assert abs(counted - published) / published < 0.005


def test_shrunk_keeps_the_real_vision_layout():
    for shape in SHAPES.values():
        small = shape.shrunk()
        assert small.vision_layout == shape.vision_layout
        assert small.text["vocab_size"] == shape.text["vocab_size"]
        assert small.processor == shape.processor and small.frame == shape.frame


@pytest.fixture(scope="module", params=["qwen2.5-vl-3b", "qwen3-vl-8b"])
def shrunk(request, tmp_path_factory):
    require("torch")
    require("transformers")
    from export.random_checkpoint import write_random_checkpoint

    shape = get_shape(request.param).shrunk()
    root = tmp_path_factory.mktemp(shape.name)
    return shape, write_random_checkpoint(shape, root / "hf")


def test_random_checkpoint_has_the_keys_save_pretrained_writes(shrunk, tmp_path):
    """Our tensor-by-tensor writer against transformers' own save_pretrained of the same config."""
    import torch
    from safetensors import safe_open

    from export.random_checkpoint import hf_config, model_class

    shape, hf = shrunk
    ours = json.loads((hf / "model.safetensors.index.json").read_text())["weight_map"]
    shapes = {}
    for shard in sorted(set(ours.values())):
        with safe_open(str(hf / shard), "pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
                assert f.get_slice(key).get_dtype() == "BF16"
    model = model_class(shape)(hf_config(shape)).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "ref")
    theirs = {}
    for shard in (tmp_path / "ref").glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            theirs.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    assert shapes == theirs


@pytest.fixture(scope="module")
def converted(shrunk, tmp_path_factory):
    require("llama_cpp")
    from export.converter import convert

    shape, hf = shrunk
    root = tmp_path_factory.mktemp(shape.name + "-gguf")
    model = convert(hf, root / "model-f32.gguf", outtype="f32", declare_pre="qwen2").path
    mmproj = convert(hf, root / "mmproj-f32.gguf", outtype="f32", mmproj=True, declare_pre="qwen2").path
    return shape, hf, model, mmproj


def test_gguf_matches_transformers_at_the_real_frame(converted):
    """Teacher-forced logits over 8 greedy tokens at the protocol's frame (840 x 840 -> 60 x 60 patches in
    windows of 8 x 8, full attention in blocks 7/15/23/31; Qwen3-VL: a 1280 x 960 photo at native size,
    DeepStack taps 8/16/24); the prompt has the same number of tokens on both sides."""
    from engine.policy.llama_backend import LlamaPolicy
    from export.quant_types import QUANTS
    from export.scale import photo_like
    from export.scale_reference import logit_errors, reference_parity_logits

    shape, hf, model, mmproj = converted
    image = photo_like(1280, 960)
    ref = reference_parity_logits(hf, image, QUERY, frame=shape.frame, steps=8)
    if shape.model_type == "qwen2_5_vl":
        assert ref["image_grid_thw"] == [1, 60, 60] and ref["image_tokens"] == 900
    else:
        assert ref["image_grid_thw"] == [1, 60, 80] and ref["image_tokens"] == 1200
    family = "qwen2.5-vl" if shape.model_type == "qwen2_5_vl" else "qwen3-vl"
    policy = LlamaPolicy(model, mmproj, family=family, frame=shape.frame, max_samples=1, n_ctx=4096, threads=2)
    try:
        ours = policy.forced_logits(image, QUERY, ref["tokens"])
        assert policy.timings.prefill_tokens == ref["prompt_tokens"]
    finally:
        policy.close()
    errors = logit_errors(ours, ref["logits"], QUANTS["F32"].logit_tolerance)
    assert errors["ok"], errors
    assert np.isfinite(ours).all()


def test_a_gguf_pair_of_the_real_layout_becomes_a_bundle_of_its_family(converted, tmp_path, capsys):
    """`star-export policy --gguf` on the converter's own files at the published vocabulary and vision layout:
    the family and the frame come out as the published checkpoint's, with no Hugging Face folder."""
    from engine.gguf_reader import read_gguf
    from export.cli import main

    shape, _hf, model, mmproj = converted
    out = tmp_path / "bundle"
    capsys.readouterr()
    assert main(["policy", "--gguf", str(model), "--mmproj", str(mmproj), "--link", "--no-verify", "--out", str(out)]) == 0
    assert f"{shape.text['vocab_size']} tokens" in capsys.readouterr().err
    spec = json.loads((out / "bundle.json").read_text())["policy"]
    family = "qwen2.5-vl" if shape.model_type == "qwen2_5_vl" else "qwen3-vl"
    assert (spec["family"], spec["frame"], spec["quant"]) == (family, shape.frame, "F32")
    assert len(read_gguf(out / spec["model"]).metadata["tokenizer.ggml.tokens"]) == shape.text["vocab_size"]


def test_scale_benchmark_runs_end_to_end_on_the_shrunk_shape(tmp_path):
    """`star-export scale`'s whole path (random checkpoint + LoRA, star-export, the engine, SAM 2 in both
    runtimes, the vote, the transformers reference, parity) on the 7B's shrunk form with a shrunk SAM 2."""
    require("llama_cpp")
    require("onnxruntime")
    require("sam2")
    from engine.segment.shrunk import write_shrunk_config
    from export.scale import report, run_scale

    sam = write_shrunk_config(tmp_path / "sam2.1_hiera_shrunk.yaml")
    result = run_scale(get_shape("qwen2.5-vl-7b").shrunk(), "shrunk", str(sam), tmp_path / "work", counts=[1, 2],
                       tokens=4, image_wh=(320, 240), reference=["fp32"], parity=True, parity_steps=4, threads=2,
                       samplings=("greedy",), log=lambda _line: None)
    assert {"random checkpoint", "merge LoRA", "convert to GGUF", "quantize Q4_K_M", "mmproj", "SAM 2 ONNX",
            "quantize Q8_0", "GGUF pair -> bundle (copied)", "GGUF pair -> bundle (linked)"} <= set(result["export"])
    assert not (tmp_path / "work" / "gguf-linked").exists()  # the road's bundles are measured, then removed
    assert all(s["peak_rss_bytes"] > 0 for s in result["export"].values())
    assert {"policy/model-q4_k_m.gguf", "policy/model-q8_0.gguf", "policy/model-f16.gguf", "policy/mmproj-f16.gguf",
            "sam2/sam2_encoder.onnx", "sam2/sam2_decoder.onnx"} <= set(result["files"])
    one, two = result["policy"]
    assert (one["n"], two["n"]) == (1, 2) and two["decode_tokens"] == 2 * one["decode_tokens"] > 0
    assert one["prefill_tokens"] == result["reference"][0]["prompt_tokens"]
    assert result["parity"]["F16"]["ok"] and result["parity"]["Q8_0"]["ok"]
    assert all(r["decode_ms_greedy"] > 0 for r in result["policy"])
    assert "end to end per query" in report(result) and "by sampler chain" in report(result)


def test_parity_only_at_f32_with_an_f32_mmproj(tmp_path):
    """`star-export scale --parity-only --parity-quants F32`: only the F32 GGUF and f32 mmproj are written (no
    Q4 / Q8 bundle, no SAM 2, no cost runs), and their logits match transformers fp32 within F32's tolerance
    at the real frame."""
    require("llama_cpp")
    from export.scale import report, run_scale

    result = run_scale(get_shape("qwen2.5-vl-3b").shrunk(), "none", "unused.yaml", tmp_path / "work", counts=[1],
                       tokens=1, image_wh=(320, 240), parity_quants=("F32",), parity_only=True, parity_steps=3,
                       threads=2, log=lambda _line: None)
    assert "F32 GGUF + f32 mmproj" in result["export"] and "SAM 2 ONNX" not in result["export"]
    assert result["policy"] is None and result["end_to_end"] is None
    assert set(result["parity"]) == {"steps", "transformers", "F32"}
    f32 = result["parity"]["F32"]
    assert f32["ok"] and f32["prompt_tokens_agree"] and f32["mmproj"].endswith("mmproj-f32.gguf"), f32
    # The same files again as llama.cpp chooses (flash attention): a second, separately timed forward pass
    auto = f32["flash_attention_auto"]
    assert auto["agreement"] > 0 and 0 <= auto["max_rel_error"] < 0.05 and auto["forced_ms"] > 0 < f32["forced_ms"]
    assert {"bundle-f32/policy/model-f32.gguf", "bundle-f32/policy/mmproj-f32.gguf"} <= set(result["files"])
    assert "mmproj-f32.gguf" in report(result)

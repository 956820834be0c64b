"""The tiny models of the real architectures that tests build for themselves (no downloads).

`require(module)` skips a test when an optional runtime is missing, except under the README's test
command (STAR_TEST_FULL=1), where a missing runtime is a failure: CI must not pass by skipping.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from export.bpe_tokenizer import QWEN_SPECIALS


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("STAR_TEST_FULL") == "1":
            pytest.fail(f"{module} is required under the full test command but is missing: {exc}")
        pytest.skip(f"{module} is not installed")


@dataclass
class TinySam2:
    config: Path
    checkpoint: Path
    overrides: list[str]     # hydra overrides of sam2.1_hiera_t.yaml that give the same model
    image_size: int


def build_tiny_sam2(root: Path, image_size: int = 256, seed: int = 0) -> TinySam2:
    require("torch")
    require("sam2")
    from engine.segment.shrunk import shrunk_overrides, write_random_checkpoint, write_shrunk_config

    config = write_shrunk_config(root / "sam2.1_hiera_shrunk.yaml", image_size=image_size)
    checkpoint = write_random_checkpoint(config, root / "sam2.1_hiera_shrunk.pt", seed=seed)
    return TinySam2(config, checkpoint, ["++" + o for o in shrunk_overrides(image_size=image_size)], image_size)


def sam2_predictor(tiny: TinySam2):
    """The upstream reference for a tiny SAM 2: sam2's own build path (hydra compose of the packaged config +
    overrides) and SAM2ImagePredictor, on the CPU."""
    require("torch")
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", str(tiny.checkpoint), device="cpu",
                       hydra_overrides_extra=tiny.overrides)
    pred = SAM2ImagePredictor(model)
    s = tiny.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]  # hard-coded for 1024 upstream
    return pred


@dataclass
class NanoSam2:
    config: Path
    checkpoint: Path


def import_nano_sam2(root: Path) -> NanoSam2:
    """The shipped nano bundle's SAM as a PyTorch SAM 2 (`star-export import-sam`: the weights moved from its ONNX
    graphs; the memory modules, which the graphs never held, untrained), set up as `star-train nano-sam-video
    --init pass-through` starts: the memory attention passing the image features through, so every frame's
    mask is one the trained decoder makes. Its object-score head, also never held by the graphs, says "in
    view" on every frame: at its initialization it says "not in view", and SAM 2's video path then empties
    every mask, leaving nothing to compare."""
    require("torch")
    require("onnxruntime")
    import torch

    from engine.bundle import default_bundle_dir
    from engine.segment.torch_backend import build_model
    from export.cli import main
    from training.nano.clips import make_clip
    from training.nano.sam_video import _frames_tensor, pass_through_init

    assert main(["import-sam", "--bundle", str(default_bundle_dir()), "--out", str(root)]) == 0
    config, checkpoint = root / "sam2.yaml", root / "sam2.pt"
    model = build_model(config, checkpoint)
    pass_through_init(model, _frames_tensor([make_clip(i, frames=2).frames[0] for i in range(4)], model.image_size))
    head = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(10.0)
    torch.save({"model": model.state_dict()}, checkpoint)
    return NanoSam2(config, checkpoint)


@dataclass
class TinySam2Onnx:
    encoder: Path
    decoder: Path


# ---- a tiny random Qwen2.5-VL (transformers) and its GGUF conversion -------------------------------

@dataclass
class TinyQwen:
    hf_dir: Path
    image_size: int            # square model input (frame pixels-<S>)


def _tiny_tokenizer():
    """A 400-token byte-level BPE with Qwen2's split regex and Qwen's special tokens."""
    from engine.protocol import build_prompt
    from export.bpe_tokenizer import world_bpe_tokenizer

    corpus = [build_prompt(q) for q in ("the red circle", "what keeps food cold", "all the triangles")]
    corpus += ['<think>The red circle is left.</think><answer>[{"label": "red circle", "bbox_2d": [10,20,30,40], '
               '"point_2d": [20,30]}]</answer>'] * 5
    return world_bpe_tokenizer(corpus, 400)


def _save_random(model_class, cfg, tokenizer, root: Path, image_size: int, *, patch: int, seed: int) -> TinyQwen:
    """A randomly initialised model of `model_class`, saved with its tokenizer and an image processor
    pinned to image_size x image_size."""
    import torch
    from transformers import Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    model = model_class(cfg).eval()
    with torch.no_grad():  # random init leaves norms at 1 and biases at 0: perturb so parity sees them
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = root / "hf"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    px = image_size * image_size
    Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px, patch_size=patch, merge_size=2,
                             temporal_patch_size=2).save_pretrained(out)
    return TinyQwen(out, image_size)


def build_tiny_qwen25vl(root: Path, image_size: int = 112, seed: int = 0, width: int = 64) -> TinyQwen:
    """Real Qwen2.5-VL classes, shrunk: LM hidden 64 x 2 layers, vision depth 4 (the converter needs
    >= 4 blocks), a 400-token byte-level BPE with Qwen2's split regex and Qwen's special tokens. `width`
    256 makes every LM matrix row a whole K-quant block (llama.cpp quantizes such rows to Q4_K / Q6_K)."""
    require("torch")
    require("transformers")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    fast = _tiny_tokenizer()
    ids = {t: fast.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(fast), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,  # sections: head_dim / 2
                                          "mrope_section": [width // 32, 3 * width // 64, 3 * width // 64]},
                         tie_word_embeddings=False),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=width,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1, 3]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], tie_word_embeddings=False)
    return _save_random(Qwen2_5_VLForConditionalGeneration, cfg, fast, root, image_size, patch=14, seed=seed)


def build_tiny_qwen3vl(root: Path, image_size: int = 128, seed: int = 0) -> TinyQwen:
    """Real Qwen3-VL classes, shrunk: LM hidden 64 x 4 layers (interleaved M-RoPE), vision depth 4 with
    DeepStack taps after blocks 0-2, patch 16, the same home-made tokenizer as the Qwen2.5-VL fixture.
    (llama.cpp 0.3.36 aborts on a 2-layer Qwen3-VL text model with two DeepStack taps; 4 layers run.)"""
    require("torch")
    require("transformers")
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    fast = _tiny_tokenizer()
    ids = {t: fast.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                          "mrope_interleaved": True},
                         tie_word_embeddings=False),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=(image_size // 16) ** 2, deepstack_visual_indexes=[0, 1, 2]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    return _save_random(Qwen3VLForConditionalGeneration, cfg, fast, root, image_size, patch=16, seed=seed)


@dataclass
class TinyQwenGguf:
    model_f32: Path
    model_q8: Path
    mmproj: Path


def convert_tiny_qwen(tiny: TinyQwen, root: Path) -> TinyQwenGguf:
    require("llama_cpp")
    from export.converter import convert
    from export.quantize import quantize_model

    f32 = convert(tiny.hf_dir, root / "model-f32.gguf", declare_pre="qwen2").path
    mmproj = convert(tiny.hf_dir, root / "mmproj-f32.gguf", mmproj=True, declare_pre="qwen2").path
    q8 = quantize_model(f32, root / "model-q8_0.gguf", "Q8_0")
    return TinyQwenGguf(f32, q8, mmproj)


# ---- a complete tiny bundle, made by star-export itself ------------------------------------------


def build_tiny_bundle(tiny_qwen: TinyQwen, tiny_sam2: TinySam2, root: Path, quant: str = "Q8_0") -> Path:
    """Both tiny models through `star-export bundle` (the command a user runs), verified at the end."""
    require("llama_cpp")
    require("onnxruntime")
    from export.cli import main

    out = root / "bundle"
    rc = main(["bundle", "--model", str(tiny_qwen.hf_dir), "--quant", quant, "--checkpoint", str(tiny_sam2.checkpoint),
               "--config", str(tiny_sam2.config), "--out", str(out), "--name", "tiny-random"])
    assert rc == 0, "star-export bundle failed on the tiny models"
    return out


# ---- GGUF files edited by llama.cpp's own gguf-py (wrong architectures, templates, vocabularies) ---------


def edit_gguf(src: Path, dst: Path, *, set_fields: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of `src` with metadata fields replaced, added or dropped, written by gguf-py's GGUFWriter
    (as llama.cpp's own gguf_new_metadata script does it); tensors unchanged."""
    import gguf

    set_fields = dict(set_fields or {})
    reader = gguf.GGUFReader(str(src))
    arch = set_fields.pop("general.architecture", None) or reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch=arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in drop:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, set_fields.pop(field.name, field.contents()), kind, sub_type=sub)
    for key, value in set_fields.items():  # new fields: strings and whole numbers are all the tests add
        writer.add_key_value(key, value, gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.UINT32)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return dst

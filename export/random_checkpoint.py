"""Architecture-exact Hugging Face checkpoints with random weights, written tensor by tensor.

The model is instantiated on PyTorch's `meta` device (no memory) only to learn the names and shapes
transformers itself expects; each tensor is then drawn, cast to bf16 and written into ~4 GB safetensors
shards, so a 7B checkpoint never needs more than one shard in memory. The weights are random but
well-scaled (normal, std 0.02; norms near 1) so every layer stays finite, as trained weights do.
A LoRA adapter of StAR's shape can be written beside it (PEFT's file layout, non-zero B).

The tokenizer is a small byte-level BPE with Qwen's special tokens (`training.nano.policy_model`);
the embedding and LM head keep the published vocabulary size, so the cost of every matrix is real and
only the text part of a prompt tokenizes into a few more pieces than Qwen's own vocabulary would give.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from engine.errors import StarError
from engine.fileio import write_json_atomically, write_text_atomically

from .shapes import RealShape, get_shape
from .stages import check_free_space

SHARD_BYTES = 4 * 2**30
CHUNK_ELEMENTS = 2**26      # draw huge tensors (embeddings) in pieces: 256 MB of fp32 at a time
STD = 0.02
COMPLETE = ".star-random-complete.json"  # written last: a folder without it is an interrupted build


def hf_config(shape: RealShape, tokenizer=None):
    """The transformers config object of a shape; special-token ids from `tokenizer` when given (a
    tokenizer made here puts Qwen's special tokens at its own ids)."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    ids = dict(shape.ids)
    if tokenizer is not None:
        for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
                           ("vision_token_id", "<|vision_pad|>"), ("eos_token_id", "<|im_end|>")):
            ids[key] = tokenizer.convert_tokens_to_ids(token)
        ids["bos_token_id"] = None
    text = {**shape.text, "tie_word_embeddings": shape.tie_word_embeddings, "bos_token_id": ids["bos_token_id"],
            "eos_token_id": ids["eos_token_id"]}
    common = dict(text_config=text, vision_config=dict(shape.vision), tie_word_embeddings=shape.tie_word_embeddings,
                  image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
                  vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"])
    if shape.model_type == "qwen2_5_vl":
        cfg = Qwen2_5_VLConfig(**common, eos_token_id=ids["eos_token_id"])
        cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    else:
        cfg = Qwen3VLConfig(**common)
        cfg.architectures = ["Qwen3VLForConditionalGeneration"]
    return cfg


def model_class(shape: RealShape):
    import transformers

    name = "Qwen2_5_VLForConditionalGeneration" if shape.model_type == "qwen2_5_vl" else "Qwen3VLForConditionalGeneration"
    return getattr(transformers, name)


def tensor_shapes(shape: RealShape, cfg) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> shape, as `save_pretrained` of this class writes them (tied weights once)."""
    import torch

    with torch.device("meta"):
        model = model_class(shape)(cfg)
    state = model.state_dict()
    try:  # save_pretrained's own renaming (Qwen2.5-VL is saved under its legacy `visual.*` / `model.layers.*` names)
        from transformers.core_model_loading import revert_weight_conversion

        state = revert_weight_conversion(model, state)
    except ImportError:  # transformers without weight conversions saves the module names as they are
        pass
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shape.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _is_norm(key: str) -> bool:
    leaf = key.rsplit(".", 2)
    return key.endswith(".weight") and any(p in ("norm", "norm1", "norm2", "ln_q", "q_norm", "k_norm",
                                                 "input_layernorm", "post_attention_layernorm")
                                           for p in leaf[-2:-1])


def random_tensor(key: str, shape: tuple[int, ...], seed: int):
    """One tensor in bf16, drawn from a generator seeded by (seed, key): the same key gives the same
    values whatever order tensors are written in."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    numel = 1
    for s in shape:
        numel *= s
    out = torch.empty(numel, dtype=torch.bfloat16)
    for start in range(0, numel, CHUNK_ELEMENTS):
        stop = min(numel, start + CHUNK_ELEMENTS)
        chunk = torch.randn(stop - start, generator=gen) * STD
        if _is_norm(key):
            chunk += 1.0
        out[start:stop] = chunk.to(torch.bfloat16)
    return out.view(shape)


def _write_shards(tensors: dict[str, tuple[int, ...]], out: Path, seed: int, progress=None) -> dict[str, str]:
    """Group keys into shards of about SHARD_BYTES (bf16) and write each; returns key -> shard file."""
    from safetensors.torch import save_file

    groups: list[list[str]] = [[]]
    size = 0
    for key, shp in tensors.items():
        nbytes = 2
        for s in shp:
            nbytes *= s
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    weight_map = {}
    for i, keys in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: random_tensor(k, tensors[k], seed) for k in keys}, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
        if progress:
            progress(name)
    return weight_map


def scale_tokenizer():
    """The byte-level BPE (Qwen2's split, Qwen's special tokens) the random checkpoints carry."""
    from engine.protocol import build_prompt

    from .bpe_tokenizer import world_bpe_tokenizer

    queries = ("the red circle", "what keeps food cold", "the shape on the left", "something to sit on",
               "the largest animal")
    corpus = [build_prompt(q) for q in queries]
    corpus += ['<think>The red circle is left.</think><answer>[{"label": "red circle", "bbox_2d": [10,20,30,40], '
               '"point_2d": [20,30]}]</answer>'] * 5
    # 600 pieces: the merges this corpus supports; the StAR prompt then takes ~300 tokens (Qwen's own
    # vocabulary, at about 4 characters a token, gives ~250), so the prefill is not undercounted.
    return world_bpe_tokenizer(corpus, 600)


def save_processor(shape: RealShape, out: Path) -> None:
    from transformers import Qwen2VLImageProcessorPil

    p = shape.processor
    Qwen2VLImageProcessorPil(min_pixels=p["min_pixels"], max_pixels=p["max_pixels"], patch_size=p["patch_size"],
                             merge_size=p["merge_size"], temporal_patch_size=p["temporal_patch_size"]).save_pretrained(out)


def write_random_checkpoint(shape: str | RealShape, out: str | Path, *, seed: int = 0, progress=None) -> Path:
    """A Hugging Face folder (config, tokenizer, image processor, sharded bf16 safetensors + index) of
    the shape with random weights. Reuses a finished folder with the same shape and seed."""
    shape = get_shape(shape) if isinstance(shape, str) else shape
    out = Path(out)
    stamp = {"shape": shape.name, "seed": seed, "text": shape.text, "vision": shape.vision}
    if _complete(out, stamp):
        return out
    tokenizer = scale_tokenizer()
    cfg = hf_config(shape, tokenizer)
    tensors = tensor_shapes(shape, cfg)
    total = 2 * sum(_numel(s) for s in tensors.values())
    check_free_space(out, total + 2**28, f"a random {shape.name} checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPLETE).unlink(missing_ok=True)
    for stale in out.glob("*.safetensors"):
        stale.unlink()
    cfg.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_processor(shape, out)
    weight_map = _write_shards(tensors, out, seed, progress)
    write_text_atomically(out / "model.safetensors.index.json",
                          json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    write_json_atomically(out / COMPLETE, stamp, indent=None)
    return out


def write_random_lora(shape: str | RealShape, base: str | Path, out: str | Path, *, seed: int = 1) -> Path:
    """A PEFT-layout LoRA adapter of the shape's rank on every target linear layer of the language model
    (the layout StAR releases). B is non-zero (a trained adapter's is), so the merge changes weights."""
    import torch
    from safetensors.torch import save_file

    shape = get_shape(shape) if isinstance(shape, str) else shape
    if shape.lora is None:
        raise StarError(f"{shape.name} has no StAR adapter shape")
    out = Path(out)
    stamp = {"shape": shape.name, "seed": seed, "lora": [shape.lora.rank, shape.lora.alpha]}
    if _complete(out, stamp):
        return out
    index = json.loads((Path(base) / "model.safetensors.index.json").read_text())["weight_map"]
    lm_prefixes = ("model.language_model.layers.", "model.layers.")  # the saved layout of either family
    cfg = hf_config(shape)
    shapes = tensor_shapes(shape, cfg)
    tensors = {}
    for key in index:
        if not key.startswith(lm_prefixes) or not key.endswith(".weight"):
            continue
        module = key[:-len(".weight")]
        if module.rsplit(".", 1)[-1] not in shape.lora.target_modules:
            continue
        rows, cols = shapes[key]
        r = shape.lora.rank
        a = random_tensor(module + ".lora_A", (r, cols), seed).to(torch.float32) / STD * (1.0 / cols ** 0.5)
        b = random_tensor(module + ".lora_B", (rows, r), seed).to(torch.float32) / STD * 1e-3
        # Module paths as transformers 5 names them (PEFT matches keys to the loaded model's modules; the
        # exporter's merge reads either layout).
        module = module.replace("model.layers.", "model.language_model.layers.", 1) \
            if module.startswith("model.layers.") else module
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": shape.lora.rank, "lora_alpha": shape.lora.alpha,
              "lora_dropout": 0.0, "bias": "none", "target_modules": rf".*language_model\.layers\.\d+\..*\.({'|'.join(shape.lora.target_modules)})",
              "base_model_name_or_path": Path(base).name, "use_rslora": False, "use_dora": False}
    write_json_atomically(out / "adapter_config.json", config, indent=1)
    write_json_atomically(out / COMPLETE, stamp, indent=None)
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _complete(out: Path, stamp: dict) -> bool:
    try:
        return json.loads((out / COMPLETE).read_text()) == json.loads(json.dumps(stamp))
    except (OSError, ValueError):
        return False

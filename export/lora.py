"""Merge a LoRA adapter into a Hugging Face checkpoint, shard by shard: W += scale * B @ A.

Written out rather than through PEFT's `merge_and_unload` so that a 7B merge never holds the whole
model in memory, and so that the adapter key styles in the wild all load: PEFT's saved format
(`base_model.model.<module>.lora_A.weight`), StAR's renamed one (`.lora_A.default.weight`), and
module paths from either transformers layout of Qwen-VL (`model.layers.*` before 4.52,
`model.language_model.layers.*` after). The tests check the result against PEFT itself.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelFileError
from engine.policy.adapters import read_lora_folder

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


@dataclass
class LoraAdapter:
    rank: int
    scale: float
    pairs: dict[str, tuple]  # module path -> (A [r, in], B [out, r]) torch tensors
    config: dict


def _layout_variants(module: str) -> list[str]:
    """The same module under both transformers layouts of Qwen2.5-VL / Qwen3-VL checkpoints."""
    variants = [module]
    if module.startswith("model.language_model."):
        variants.append("model." + module[len("model.language_model."):])
    elif module.startswith("model.") and not module.startswith("model.visual."):
        variants.append("model.language_model." + module[len("model."):])
    if module.startswith("language_model."):
        variants.append("model." + module)
    if module.startswith("visual."):
        variants.append("model." + module)
    elif module.startswith("model.visual."):
        variants.append(module[len("model."):])
    return variants


def read_adapter(adapter_dir: str | Path) -> LoraAdapter:
    from safetensors.torch import load_file

    config, weights = read_lora_folder(adapter_dir)
    root = weights.parent
    if config.get("use_dora"):
        raise ModelFileError(f"{root}: DoRA adapters are not supported by this merge")
    if config.get("modules_to_save"):
        raise ModelFileError(f"{root}: adapters with modules_to_save ({config['modules_to_save']}) are not supported")
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    scale = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ModelFileError(f"{root}: per-module rank_pattern / alpha_pattern are not supported")
    parts: dict[str, dict] = {}
    for key, tensor in load_file(str(weights)).items():
        m = _KEY.match(key)
        if not m:
            raise ModelFileError(f"{root}: unexpected adapter key {key!r}")
        parts.setdefault(m["module"], {})[m["ab"]] = tensor
    pairs = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise ModelFileError(f"{root}: module {module} has lora_{''.join(ab)} but not both A and B")
        pairs[module] = (ab["A"], ab["B"])
    return LoraAdapter(rank, scale, pairs, config)


def _shards(model_dir: Path) -> list[Path]:
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise ModelFileError(f"{model_dir} has no .safetensors weights (pickled .bin checkpoints are refused)")
    return shards


def _merged_dtype(dtype, torch):
    """A merged bf16 weight is stored as float16: the merged folder only feeds the F16 / quantized GGUF,
    float16 keeps 3 more mantissa bits than bf16 (the sum W + scale * B @ A is rounded 8x finer) at the
    same size, and trained linear weights lie far inside its range. Other dtypes stay as they are."""
    return torch.float16 if dtype == torch.bfloat16 else dtype


def merge_adapter(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, *, progress=None) -> Path:
    """Write `out_dir`: the base checkpoint with the adapter merged, every other file copied."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    model_dir, out = Path(model_dir), Path(out_dir)
    adapter = read_adapter(adapter_dir)
    shards = _shards(model_dir)
    names = {}
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            names.update({k: shard for k in f.keys()})
    targets = {}
    for module, pair in adapter.pairs.items():
        key = next((v + ".weight" for v in _layout_variants(module) if v + ".weight" in names), None)
        if key is None:
            raise ModelFileError(f"the adapter does not fit this base model: it changes {module}, which "
                                 f"{model_dir} does not have (is it the adapter's base model?)")
        targets[key] = pair
    out.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy2(item, out / item.name)
    merged = 0
    for shard in shards:
        tensors = {}
        with safe_open(str(shard), "pt") as f:
            metadata = f.metadata()
            for key in f.keys():
                w = f.get_tensor(key)
                if key in targets:
                    a, b = targets[key]
                    if (b.shape[0], a.shape[1]) != tuple(w.shape) or a.shape[0] != b.shape[1]:
                        raise ModelFileError(f"the adapter does not fit this base model: {key} is {tuple(w.shape)}, "
                                             f"the adapter's B@A is {(b.shape[0], a.shape[1])}")
                    delta = (b.to(torch.float32) @ a.to(torch.float32)) * adapter.scale
                    merged_w = w.to(torch.float32) + delta
                    w = merged_w.to(_merged_dtype(w.dtype, torch) if merged_w.abs().max() < 60000 else w.dtype)
                    merged += 1
                tensors[key] = w.contiguous()
        save_file(tensors, str(out / shard.name), metadata=metadata or {"format": "pt"})
        if progress:
            progress(shard.name)
    if merged != len(targets):  # pragma: no cover - every target key came from some shard
        raise ModelFileError(f"merged {merged} of {len(targets)} adapter modules")
    return out

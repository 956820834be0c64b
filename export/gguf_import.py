"""`star-export import`: a bundle's policy (GGUF + mmproj) back into a Hugging Face folder.

A shipped bundle may be the only copy of a trained policy (the nano bundle's training folders lived on a
machine that is gone); training goes on from Hugging Face weights. The importer does not hand-write
llama.cpp's tensor names and rearrangements (fused QKV split, Conv3D patch embedding cut in two, ...):
it asks the converter itself. A probe model of the same config is converted twice at F32, once with
every value set to its tensor's number and once to its position inside the tensor, so each GGUF value
says exactly which Hugging Face value it came from. The real GGUF values are then put back there. A
converter that computes anything instead of moving values shows up as non-integer, odd or out-of-range
probes: refused.

The config, tokenizer and image processor come from a `--like` folder of the same architecture (the
GGUF's vocabulary is checked against it); the weights come only from the GGUF files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.gguf_reader import GgufFile, read_gguf
from engine.offline import from_local

from .converter import convert
from .policy import detect

# Copied from the --like folder next to the imported weights (everything but weights and training state).
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "preprocessor_config.json", "chat_template.jinja", "chat_template.json")
# Float32 holds every integer up to 2**24 exactly: the largest tensor a position probe can name.
MAX_PROBE_ELEMENTS = 1 << 24


@dataclass
class ImportResult:
    out_dir: Path
    tensors: int           # Hugging Face tensors written
    gguf_types: dict       # GGUF tensor type -> how many tensors came from it (what precision was lost)


def _build_like(like: Path):
    """A float32 model of the --like folder's config (random weights, replaced before use). Written with
    transformers' own save_pretrained, so the files carry the checkpoint names the converter reads."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = from_local(AutoConfig, like, "--like")
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    too_big = [n for n, p in model.state_dict().items() if p.numel() > MAX_PROBE_ELEMENTS]
    if too_big:
        raise ModelFileError(f"{too_big[0]} has more than 2**24 values: the importer's probes cannot name them "
                             "(it is made for small policies such as the nano one)")
    return model


def _save(model, like: Path, out: Path) -> None:
    model.save_pretrained(out)
    for side in SIDE_FILES:
        if (like / side).is_file():
            shutil.copy2(like / side, out / side)


def _write_probe(model, like: Path, out: Path, kind: str) -> list[str]:
    """`model` saved with tensor number i holding 2 (i + 1) everywhere ("id": even, so a converter that adds
    to a tensor shows) or its flat positions ("pos"); returns the tensor names in number order."""
    import torch

    state = model.state_dict()
    names = sorted(state)
    with torch.no_grad():
        for i, name in enumerate(names):
            t = state[name]
            t.copy_(torch.full_like(t, 2.0 * (i + 1)) if kind == "id"
                    else torch.arange(t.numel(), dtype=torch.float32).reshape(t.shape))
    _save(model, like, out)
    return names


def _probe_files(model, like: Path, work: Path, declare: str | None) -> tuple[list[str], dict[str, dict[str, GgufFile]]]:
    """Convert the id and position probes, LM and mmproj: {"id": {"model": GgufFile, "mmproj": ...}, "pos": ...}."""
    files: dict[str, dict[str, GgufFile]] = {}
    names: list[str] = []
    for kind in ("id", "pos"):
        names = _write_probe(model, like, work / f"probe-{kind}", kind)
        files[kind] = {
            part: read_gguf(convert(work / f"probe-{kind}", work / f"probe-{kind}-{part}.gguf", outtype="f32",
                                    mmproj=part == "mmproj", declare_pre=declare).path)
            for part in ("model", "mmproj")}
    return names, files


def _check_vocab(model: GgufFile, like: Path) -> None:
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    tok_path = like / "tokenizer.json"
    if tokens is None or not tok_path.is_file():
        return
    vocab = json.loads(tok_path.read_text()).get("model", {}).get("vocab", {})
    by_id = {i: t for t, i in vocab.items()} if isinstance(vocab, dict) else {}
    if by_id and any(by_id.get(i) not in (None, t) for i, t in enumerate(tokens[:len(by_id)])):
        raise ModelFileError(f"{model.path.name}'s vocabulary differs from {tok_path}: --like must be a folder of "
                             "the model the GGUF was exported from (same tokenizer)")


def import_policy(model_gguf: str | Path, mmproj_gguf: str | Path, like: str | Path, out_dir: str | Path) -> ImportResult:
    """Write `out_dir` (model.safetensors, float32, plus the --like folder's config and tokenizer files)."""
    import torch

    like, out_dir = Path(like), Path(out_dir)
    source = detect(like)  # a Qwen2.5-VL / Qwen3-VL folder, and its pre-tokenizer for the converter
    real = {"model": read_gguf(model_gguf), "mmproj": read_gguf(mmproj_gguf)}
    _check_vocab(real["model"], like)
    model = _build_like(like)
    with tempfile.TemporaryDirectory(prefix="star-import-") as work:
        names, probes = _probe_files(model, like, Path(work), source.custom_tokenizer)
        state = model.state_dict()
        weights = {name: np.full(state[name].numel(), np.nan, np.float32) for name in names}
        types: dict[str, int] = {}
        for part in ("model", "mmproj"):
            ids, pos, values = probes["id"][part], probes["pos"][part], real[part]
            missing, extra = sorted(set(ids.tensors) - set(values.tensors)), sorted(set(values.tensors) - set(ids.tensors))
            if missing or extra:
                what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the --like config does not have,"
                raise ModelFileError(f"{values.path.name} {what} (and {len(missing) + len(extra) - 1} more): not a "
                                     f"{source.family} policy of the --like folder's config")
            for gname in ids.tensors:
                _place(gname, ids.read(gname), pos.read(gname), values, names, weights)
                types[values.type_name(gname)] = types.get(values.type_name(gname), 0) + 1
    unfilled = [n for n, w in weights.items() if np.isnan(w).any()]
    if unfilled:
        raise ModelFileError(f"the GGUF files do not hold every weight of the model: {unfilled[0]} "
                             f"(and {len(unfilled) - 1} more) stay unset")
    with torch.no_grad():
        for name, w in weights.items():
            state[name].copy_(torch.from_numpy(w.reshape(tuple(state[name].shape))))
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _save(model, like, tmp)
    (tmp / "imported.json").write_text(json.dumps(
        {"model": str(model_gguf), "mmproj": str(mmproj_gguf), "like": str(like), "gguf_types": types}, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return ImportResult(out_dir, len(weights), types)


def _place(gname: str, ids: np.ndarray, pos: np.ndarray, real: GgufFile, names: list[str], weights: dict) -> None:
    """Scatter the real values of GGUF tensor `gname` to the Hugging Face positions its probes name."""
    values = real.read(gname)
    if values.shape != ids.shape:
        raise ModelFileError(f"{real.path.name}: {gname} has shape {values.shape}, the --like config gives {ids.shape}")
    ids, pos, values = ids.ravel(), pos.ravel(), values.ravel()
    if not (np.all(ids == np.round(ids)) and np.all(pos == np.round(pos))):
        raise ModelFileError(f"llama.cpp's converter computes {gname} from the weights instead of moving them: "
                             "this tensor cannot be imported")
    for code in np.unique(ids).astype(int):
        tid = code // 2
        if code % 2 or not 1 <= tid <= len(names):
            raise ModelFileError(f"llama.cpp's converter changes the values of {gname}: it cannot be imported")
        here = ids == code
        target = weights[names[tid - 1]]
        where = pos[here].astype(np.int64)
        if where.min() < 0 or where.max() >= target.size:
            raise ModelFileError(f"llama.cpp's converter changes the values of {gname}: it cannot be imported")
        target[where] = values[here]

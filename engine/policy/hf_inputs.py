"""Model inputs for the transformers Qwen2.5-VL / Qwen3-VL classes, built exactly like the llama.cpp
path builds its prompt (ChatML, one image, the prompt family's text), for batches of (image, query[,
completion]) rows. Training, parity checks and the transformers reference backend all use this, so
the three can never drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..protocol import build_prompt, chatml_prompt, resize_for_model

IGNORE_INDEX = -100


def checkpoint_frame(root, family: str) -> str:
    """The answer frame of a Hugging Face checkpoint: Qwen3-VL answers on its 0..1000 grid; released
    Qwen2.5-VL models in an 840 x 840 frame; a checkpoint whose image processor is pinned to one square
    size (the nano policy) answers in that size's pixels."""
    import json
    import math
    from pathlib import Path

    if family == "qwen3-vl":
        return "qwen3-1000"
    try:
        size = json.loads((Path(root) / "preprocessor_config.json").read_text()).get("size", {})
        lo, hi = size.get("shortest_edge"), size.get("longest_edge")
    except (OSError, ValueError, AttributeError):
        return "qwen2.5-840"
    if lo and lo == hi and math.isqrt(int(lo)) ** 2 == int(lo):
        return f"pixels-{math.isqrt(int(lo))}"
    return "qwen2.5-840"


def image_tokens(grid_thw) -> int:
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // 4  # the 2x2 spatial merge


def encode_batch(tokenizer, processor, images: Sequence[Any], queries: Sequence[str], *, frame: str,
                 family: str = "star", completions: Sequence[str] | None = None, training: bool = False,
                 pad_id: int | None = None) -> dict[str, Any]:
    """Tokenize rows of (image, query[, completion]) into right-padded tensors: input_ids, attention_mask,
    pixel_values, image_grid_thw, mm_token_type_ids, and with completions `labels` (-100 outside them).
    Images are resized to the frame first."""
    import torch

    pils = [resize_for_model(im, frame) for im in images]
    vision = processor(images=pils, return_tensors="pt")
    grids = vision["image_grid_thw"]
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    rows = []
    for i, query in enumerate(queries):
        n_img = image_tokens(grids[i])
        placeholder = "<|vision_start|>" + "<|image_pad|>" * n_img + "<|vision_end|>"
        prompt = tokenizer(chatml_prompt(build_prompt(query, family, training=training), placeholder),
                           add_special_tokens=False).input_ids
        completion = [] if completions is None else tokenizer(completions[i], add_special_tokens=False).input_ids
        rows.append((prompt, completion))
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        seq = p + c
        ids[i, :len(seq)] = torch.tensor(seq)
        attention[i, :len(seq)] = 1
        if c:
            labels[i, len(p):len(seq)] = torch.tensor(c)
    # transformers 5 needs mm_token_type_ids, or image tokens silently get 1-D positions (docs/engine.md, "Runtime facts").
    mm = (ids == image_id).long()
    tensors = dict(input_ids=ids, attention_mask=attention, pixel_values=vision["pixel_values"],
                   image_grid_thw=grids, mm_token_type_ids=mm)
    if completions is not None:
        tensors["labels"] = labels
    return tensors


def blank_like(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Mid-grey images of the same sizes: the "is the image used at all?" control (docs/nano.md, "The real-vs-blank diagnostic")."""
    return [np.full_like(np.asarray(im), 128) for im in images]


def teacher_forced_logits(model, tensors: dict, tokens: list[int]) -> np.ndarray:
    """transformers logits over prompt + `tokens`, from the prompt's last position on: [len(tokens) + 1,
    vocab], row t predicting the token after tokens[:t] (the layout of LlamaPolicy.forced_logits)."""
    import torch

    n = tensors["input_ids"].shape[1]
    extra = torch.tensor([tokens], dtype=torch.long)
    forced = {**tensors, "input_ids": torch.cat([tensors["input_ids"], extra], 1),
              "attention_mask": torch.ones(1, n + len(tokens), dtype=torch.long),
              "mm_token_type_ids": torch.cat([tensors["mm_token_type_ids"], torch.zeros_like(extra)], 1)}
    with torch.no_grad():
        return model(**forced).logits[0, n - 1:].float().numpy()

"""A reasoner Result as JSON (masks as COCO RLE, coordinates in original pixels) and as pictures
(mask PNG, overlay PNG); what `star segment` writes and the app exports."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from .fileio import write_atomically, write_text_atomically
from .pipeline import Result
from .rle import encode

OVERLAY_RGB = (255, 40, 90)
SAMPLE_RGB = (40, 160, 255)


def result_to_dict(result: Result, *, sample_masks: bool = True) -> dict:
    samples = []
    for s in result.samples:
        targets = []
        for j, t in enumerate(s.targets):
            target = {"box": list(t.box), "point": list(t.point), "label": t.label}
            if j < len(s.scores):
                target["score"] = s.scores[j]
            if sample_masks and j < len(s.mask_rows):
                target["mask"] = encode(result.object_masks[s.mask_rows[j]])
            targets.append(target)
        samples.append({"index": s.index, "status": s.status, "reason": s.reason, "finish_reason": s.finish_reason,
                        "thinking": s.thinking, "answer": s.answer_text, "text": s.text, "targets": targets})
    clusters, vote = [], None
    if result.vote is not None:
        v = result.vote
        clusters = [{"id": c.id, "votes": c.votes, "ratio": c.ratio, "mean_score": c.mean_score, "label": c.label,
                     "selected": c.id in v.selected,
                     "members": [{"sample": m.sample, "object": m.obj, "score": m.score} for m in c.members]}
                    for c in v.clusters]
        by_index = {m.index: m for c in v.clusters for m in c.members}
        vote = {"k": v.k, "valid_runs": v.valid_runs, "no_object_votes": v.no_object_votes, "abstained": v.abstained,
                "selected": v.selected, "reason": v.reason, "backend": v.backend,
                # "best" mode: the member whose mask stands for each selected cluster (empty for consensus)
                "chosen": [{"sample": by_index[i].sample, "object": by_index[i].obj} for i in v.chosen_members
                           if i in by_index]}
    t = result.timings
    return {"query": result.query, "image_size": list(result.image_size), "n": len(result.samples),
            "mask": encode(result.mask), "no_object": bool(result.no_object), "area": int(result.mask.sum()),
            "samples": samples, "clusters": clusters, "vote": vote,
            "timings": {**asdict(t), "decode_tokens_per_s": t.decode_tokens_per_s},
            "bundle": result.bundle, "cancelled": result.cancelled, "sampling": _sampling_dict(result.sampling)}


def _sampling_dict(sampling) -> dict | None:
    # What a run's samples were decoded with, so a saved result says how to reproduce it (temperature 0 = greedy).
    if sampling is None:
        return None
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k, "seed": sampling.seed,
            "max_new_tokens": sampling.max_new_tokens, "constrained": sampling.constrained}


def overlay(image: np.ndarray, mask: np.ndarray, rgb=OVERLAY_RGB, alpha: float = 0.5) -> np.ndarray:
    """The image with the mask tinted and its outline drawn at full strength."""
    out = image.astype(np.float32).copy()
    colour = np.array(rgb, np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * colour
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out[edge] = colour
    return out.clip(0, 255).astype(np.uint8)


def save_outputs(result: Result, image: np.ndarray, out_dir: str | Path, stem: str = "result") -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out / f"{stem}_mask.png", "overlay": out / f"{stem}_overlay.png", "json": out / f"{stem}.json"}
    write_atomically(paths["mask"], lambda p: Image.fromarray(result.mask.astype(np.uint8) * 255).save(p, format="PNG"))
    write_atomically(paths["overlay"], lambda p: Image.fromarray(overlay(image, result.mask)).save(p, format="PNG"))
    write_text_atomically(paths["json"], json.dumps(result_to_dict(result), indent=1))
    return paths

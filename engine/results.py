"""A reasoner Result as JSON (masks as COCO RLE, coordinates in original pixels) and as pictures
(mask PNG, overlay PNG); what `star segment` writes and the app exports."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import OutputError
from .pipeline import Result
from .rle import encode

OVERLAY_RGB = (255, 40, 90)
SAMPLE_RGB = (40, 160, 255)


def _target(t) -> dict:
    """A target's box, point and label as the JSON names them."""
    return {"box": list(t.box), "point": list(t.point), "label": t.label}


def result_to_dict(result: Result, *, sample_masks: bool = True, should_stop=None) -> dict | None:
    """The result as JSON-ready data (every sample's masks as RLE unless `sample_masks` is False). Encoding
    32 masks of a 24 MP image takes about two seconds on a CPU: `should_stop` (a callable) is asked between
    masks, and when it says so the conversion is abandoned and None returned (the app quitting)."""
    samples = []
    for s in result.samples:
        targets = []
        for j, t in enumerate(s.targets):
            target = _target(t)
            if j < len(s.scores):
                target["score"] = s.scores[j]
            if should_stop is not None and should_stop():
                return None
            if sample_masks and j < len(s.mask_rows):
                target["mask"] = encode(result.host_mask(s.mask_rows[j]))
            targets.append(target)
        samples.append({"index": s.index, "status": s.status, "reason": s.reason, "finish_reason": s.finish_reason,
                        "thinking": s.thinking, "reasoning_problem": s.reasoning_problem, "answer": s.answer_text,
                        "text": s.text, "targets": targets,
                        "full_frame": [_target(t) for t in s.full_frame],
                        "featureless": [_target(t) for t in s.featureless]})
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
            "bundle": result.bundle, "cancelled": result.cancelled, "sampling": _sampling_dict(result.sampling),
            "notes": list(result.notes)}


def result_from_dict(data: dict) -> Result:
    """The inverse of `result_to_dict` (with its sample masks): a Result rebuilt from its JSON form, as a
    result that crossed the network (`star serve`) arrives. `result_to_dict` of it gives `data` back."""
    from .pipeline import SampleResult, Timings
    from .policy.types import SamplingParams
    from .protocol import Target
    from .rle import decode
    from .voting import Cluster, Member, VoteResult

    w, h = (int(v) for v in data["image_size"])

    def target(t: dict) -> Target:
        return Target(tuple(t["box"]), tuple(t["point"]), t.get("label"))

    samples, masks, index = [], [], {}
    for s in data["samples"]:
        rows, scores = [], []
        for j, t in enumerate(s["targets"]):
            if "mask" in t:
                index[(s["index"], j)] = len(masks)
                rows.append(len(masks))
                masks.append(decode(t["mask"]))
            if "score" in t:
                scores.append(t["score"])
        samples.append(SampleResult(s["index"], s["text"], s["status"], s["thinking"], s["answer"], s["reason"],
                                    s["finish_reason"], [target(t) for t in s["targets"]], rows, scores,
                                    s.get("reasoning_problem", ""), [target(t) for t in s.get("full_frame", [])],
                                    [target(t) for t in s.get("featureless", [])]))
    object_masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    mask = decode(data["mask"])
    vote = None
    if data.get("vote") is not None:
        v = data["vote"]

        def member(m: dict) -> Member:
            row = index.get((m["sample"], m["object"]))
            tgt = data["samples"][m["sample"]]["targets"][m["object"]]
            return Member(row if row is not None else -1, m["sample"], m["object"], m["score"], tgt.get("label"),
                          int(object_masks[row].sum()) if row is not None else 0)

        clusters = [Cluster(c["id"], [member(m) for m in c["members"]], c["votes"], c["ratio"], c["mean_score"],
                            c["label"]) for c in data["clusters"]]
        chosen = [index.get((c["sample"], c["object"]), -1) for c in v.get("chosen", [])]
        vote = VoteResult(mask, bool(data["no_object"]), v["k"], clusters, list(v["selected"]), chosen,
                          v["valid_runs"], v["no_object_votes"], v["abstained"], reason=v["reason"],
                          backend=v["backend"])
    timings = Timings(**{k: v for k, v in data["timings"].items() if k != "decode_tokens_per_s"})
    sampling = None if data.get("sampling") is None else SamplingParams(**data["sampling"])
    return Result(query=data["query"], image_size=(w, h), mask=mask, no_object=bool(data["no_object"]),
                  samples=samples, object_masks=object_masks, vote=vote, timings=timings, bundle=data["bundle"],
                  cancelled=bool(data["cancelled"]), sampling=sampling, notes=list(data.get("notes", [])))


def _sampling_dict(sampling) -> dict | None:
    # What a run's samples were decoded with, so a saved result says how to reproduce it (temperature 0 = greedy).
    if sampling is None:
        return None
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k, "seed": sampling.seed,
            "max_new_tokens": sampling.max_new_tokens, "constrained": sampling.constrained}


OVERLAY_BAND = 256  # rows tinted at a time: the float work is one band, not the image (62 MP: 0.75 GB a copy)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch a pixel outside it (4-neighbourhood; the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(image: np.ndarray, mask: np.ndarray, rgb=OVERLAY_RGB, alpha: float = 0.5) -> np.ndarray:
    """The image with the mask tinted and its outline drawn at full strength. Done in bands of rows, so it
    costs the output image and one band, whatever the image's size."""
    out = np.array(image, dtype=np.uint8)  # a copy, written band by band
    colour = np.array(rgb, np.float32)
    height = mask.shape[0]
    for top in range(0, height, OVERLAY_BAND):
        bottom = min(height, top + OVERLAY_BAND)
        rows = mask[top:bottom]
        if not rows.any():
            continue
        # The outline of these rows depends on one row either side: computed on the band with its neighbours.
        above, below = max(0, top - 1), min(height, bottom + 1)
        edge = mask_outline(mask[above:below])[top - above:top - above + bottom - top]
        band = out[top:bottom]
        band[rows] = np.clip((1 - alpha) * band[rows].astype(np.float32) + alpha * colour, 0, 255).astype(np.uint8)
        band[edge] = colour.astype(np.uint8)
    return out


def prepare_output_dir(out_dir: str | Path) -> Path:
    """The output folder, created if needed and checked writable, before any model time is spent on a run."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; choose a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".star-write-check.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write into --out {out}: {exc.strerror or exc}; choose another folder") from None
    return out


def save_outputs(result: Result, image: np.ndarray, out_dir: str | Path, stem: str = "result", *,
                 payload: dict | None = None) -> dict[str, Path]:
    """Write the mask PNG, the overlay PNG and the result JSON of one run as a set: all three are written
    into a temporary folder inside `out_dir` and moved into place only when every one is complete (a full
    disk leaves the previous set untouched). The JSON, moved last, names the other two with their SHA-256.
    `payload`: the run's `result_to_dict`, when the caller already made it (its masks are encoded once)."""
    out = prepare_output_dir(out_dir)
    names = {"mask": f"{stem}_mask.png", "overlay": f"{stem}_overlay.png", "json": f"{stem}.json"}
    staging = out / f".{stem}.{os.getpid()}.partial"
    try:
        staging.mkdir(exist_ok=True)
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(staging / names["mask"], format="PNG")
        Image.fromarray(overlay(image, result.mask)).save(staging / names["overlay"], format="PNG")
        record = dict(payload if payload is not None else result_to_dict(result))
        record["files"] = {kind: {"name": names[kind], "sha256": _sha256(staging / names[kind])}
                           for kind in ("mask", "overlay")}
        (staging / names["json"]).write_text(json.dumps(record, indent=1))
        for kind in ("mask", "overlay", "json"):  # renames inside one folder: no space needed, nothing half-written
            (staging / names[kind]).replace(out / names[kind])
    except OSError as exc:
        raise OutputError(f"could not write the results into {out}: {exc.strerror or exc}; "
                          "nothing of this run was kept there") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {kind: out / name for kind, name in names.items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

"""Scores of predictors that use no reasoning, on a nano split: what "learned nothing" looks like.

- empty: always answers "no object".
- all-objects: the union of every object in the scene.
- random-object: one object of the scene, chosen at random (seeded).
- largest-object: the object with the largest visible area.

Given a segmenter, also the other end of the scale:
- gold-answer: the row's own answer (the right objects, exact boxes and points) through that segmenter,
  scored like `star eval` scores a direct prediction (the OR of the answer's masks): the most any policy can
  reach with this SAM, i.e. how much of the gap to 1.0 is the segmenter's and how much the policy's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.data.parquet import mask_from_cell
from engine.metrics import IoUAccumulator
from engine.rle import decode

BASELINES = ("empty", "all-objects", "random-object", "largest-object")


def _predict(name: str, objects: list[np.ndarray], shape, rng) -> np.ndarray:
    if name == "empty" or not objects:
        return np.zeros(shape, dtype=bool)
    if name == "all-objects":
        return np.logical_or.reduce(objects)
    if name == "random-object":
        return objects[rng.integers(len(objects))]
    return max(objects, key=lambda m: int(m.sum()))


def gold_answer_mask(segmenter, image: dict, completion: str, frame: str, shape) -> np.ndarray:
    """The row's own answer through `segmenter`: what the engine does with a perfect policy's answer."""
    from engine.images import load_image
    from engine.protocol import parse_answer

    rgb = load_image(image["bytes"], exif=False)
    answer = parse_answer(completion, (rgb.shape[1], rgb.shape[0]), frame)
    if not answer.targets:
        return np.zeros(shape, dtype=bool)
    boxes = np.asarray([t.box for t in answer.targets], np.float32)
    points = np.asarray([t.point for t in answer.targets], np.float32)
    return segmenter.segment(segmenter.embed(rgb), boxes, points).masks.any(0)


def score_baselines(data: str | Path, limit: int | None = None, seed: int = 0, segmenter=None) -> dict:
    """Every baseline's metrics on the split (first `limit` rows); "gold-answer" too when a segmenter is given."""
    import pyarrow.parquet as pq

    files = sorted(Path(data).glob("*.parquet")) if Path(data).is_dir() else [Path(data)]
    names = BASELINES + (("gold-answer",) if segmenter is not None else ())
    accs = {name: IoUAccumulator("lisa") for name in names}
    rng = np.random.default_rng(seed)
    columns = ["mask", "scene_objects", "reasoning_type"] + (["image", "completion", "frame"] if segmenter is not None else [])
    seen = 0
    for file in files:
        for row in pq.read_table(file, columns=columns).to_pylist():
            gt = mask_from_cell(row["mask"]).astype(np.uint8)
            masks = [decode(o["rle"]) for o in json.loads(row["scene_objects"])]
            meta = {"reasoning_type": row["reasoning_type"]}
            for name in BASELINES:
                accs[name].add(_predict(name, masks, gt.shape, rng), gt, meta)
            if segmenter is not None:
                accs["gold-answer"].add(gold_answer_mask(segmenter, row["image"], row["completion"], row["frame"],
                                                         gt.shape), gt, meta)
            seen += 1
            if limit and seen >= limit:
                return {name: acc.result() for name, acc in accs.items()}
    return {name: acc.result() for name, acc in accs.items()}

"""Scores of predictors that use no reasoning, on a nano split: what "learned nothing" looks like.

- empty: always answers "no object".
- all-objects: the union of every object in the scene.
- random-object: one object of the scene, chosen at random (seeded).
- largest-object: the object with the largest visible area.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def score_baselines(data: str | Path, limit: int | None = None, seed: int = 0) -> dict:
    import pyarrow.parquet as pq

    files = sorted(Path(data).glob("*.parquet")) if Path(data).is_dir() else [Path(data)]
    accs = {name: IoUAccumulator("lisa") for name in BASELINES}
    rng = np.random.default_rng(seed)
    seen = 0
    for file in files:
        table = pq.read_table(file, columns=["mask", "scene_objects", "reasoning_type"])
        for mask, objects, rtype in zip(*(table.column(c).to_pylist() for c in ("mask", "scene_objects", "reasoning_type"))):
            gt = np.asarray(mask, dtype=np.uint8)
            masks = [decode(o["rle"]) for o in json.loads(objects)]
            for name, acc in accs.items():
                acc.add(_predict(name, masks, gt.shape, rng), gt, {"reasoning_type": rtype})
            seen += 1
            if limit and seen >= limit:
                return {name: acc.result() for name, acc in accs.items()}
    return {name: acc.result() for name, acc in accs.items()}

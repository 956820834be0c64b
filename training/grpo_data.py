"""Training rows for GRPO / REST: ReasonSeg-X-style parquet -> a `datasets.Dataset` in TRL's
conversational format, with the columns the StAR rewards read.

Each row: `prompt` (system + user text of the recipe's prompt family; TRL puts the image in front of
the text, as the engine's ChatML does), `image` (resized to the policy frame, as the reference resizes
to 840 x 840), `solution` (GT boxes and points in that frame, docs/protocol.md §7) and
`solution_masks` (the instance masks in that frame, COCO RLE JSON). Instances come from an `instances`
column (RLE list, as the nano world writes); without one, the row's mask is a single instance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _instance_column(path: str | Path) -> list[str | None]:
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    out: list[str | None] = []
    for file in files:
        pf = pq.ParquetFile(file)
        if "instances" in pf.schema_arrow.names:
            out.extend(pf.read(columns=["instances"]).column("instances").to_pylist())
        else:
            out.extend([None] * pf.metadata.num_rows)
    return out


def frame_masks(instances: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """Instance masks resized (nearest) to the frame's (width, height); empty ones are dropped."""
    from PIL import Image

    out = []
    for m in instances:
        img = Image.fromarray(np.asarray(m, dtype=np.uint8) * 255)
        if img.size != size:
            img = img.resize(size, Image.NEAREST)
        m = np.asarray(img) > 127
        if m.any():
            out.append(m)
    return out


# Qwen3-VL answers on a 0..1000 grid and has no fixed input size; its training images are resized to
# 840 x 840 as the Qwen2.5-VL reference's are, the rewards work in those pixels (`answer_grid`).
GRID_TRAINING_SIDE = 840


def training_row(query: str, image, instances: list[np.ndarray], *, family: str, frame: str) -> dict:
    from engine.protocol import SYSTEM_PROMPT, build_prompt, get_frame, resize_for_model
    from engine.rle import encode

    from .rewards import gt_targets_from_masks

    grid = get_frame(frame).model_input_size is None
    pil = resize_for_model(image, f"pixels-{GRID_TRAINING_SIDE}" if grid else frame)
    masks = frame_masks(instances, pil.size)
    return {
        "prompt": [{"role": "system", "content": SYSTEM_PROMPT},
                   {"role": "user", "content": build_prompt(query, family, training=True)}],
        "image": pil,
        "solution": json.dumps(gt_targets_from_masks(masks)),
        "solution_masks": json.dumps([encode(m) for m in masks]),
        "answer_grid": GRID_TRAINING_SIDE if grid else 0,
    }


# Datasets of people's own labels that training reads through the engine's readers (`KIND:PATH`).
ANNOTATION_KINDS = ("labelme", "coco")


def annotation_spec(data: str) -> tuple[str, str] | None:
    """(kind, path) when `data` names a labelme folder or COCO file as `labelme:FOLDER` / `coco:FILE`."""
    kind, sep, path = str(data).partition(":")
    return (kind, path) if sep and kind in ANNOTATION_KINDS and path else None


def training_samples(data: str, options: dict | None = None):
    """(samples, instances per sample or None): a ReasonSeg-X parquet with its `instances` column, or a
    labelme / COCO dataset (`labelme:FOLDER`, its train split unless `options` say otherwise: the held-out
    images stay out of training; files that cannot be used are skipped and counted)."""
    from engine.data import open_dataset

    spec = annotation_spec(data)
    if spec is None:
        return open_dataset("hf", data), _instance_column(data)
    reader = open_dataset(spec[0], spec[1], on_error="skip", **{"split": "train", **(options or {})})
    if reader.problems:
        log.warning("%s: %d file(s) left out (%s)", data, len(reader.problems), dict(reader.skipped))
    return reader, None


def iter_rows(data: str, *, family: str, frame: str, limit: int | None = None, skip: int = 0,
              reasoning_types: list[str] | tuple[str, ...] = (), options: dict | None = None):
    """Training rows from row `skip` on: `limit` of them at most, only of `reasoning_types` when given
    (a row without a reasoning_type never matches a filter). `options`: the reader's, for `KIND:PATH` data."""
    from engine.rle import decode

    reader, instances = training_samples(data, options)
    kept = 0
    for i, sample in enumerate(reader):
        if i < skip:
            continue
        if limit is not None and kept >= limit:
            break
        if reasoning_types and sample.meta.get("reasoning_type") not in reasoning_types:
            continue
        kept += 1
        if instances is not None and instances[i]:
            masks = [decode(r) for r in json.loads(instances[i])]
        else:
            masks = sample.load_instances()
        yield training_row(sample.query, sample.load_image(), masks, family=family, frame=frame)


def build_dataset(recipe):
    """The recipe's training rows as a `datasets.Dataset` (images stored as PNG in Arrow)."""
    from datasets import Dataset, Features, Image, Value

    features = Features({"prompt": [{"role": Value("string"), "content": Value("string")}], "image": Image(),
                         "solution": Value("string"), "solution_masks": Value("string"),
                         "answer_grid": Value("int32")})
    rows = list(iter_rows(recipe.data, family=recipe.prompt_family, frame=recipe.frame, limit=recipe.limit,
                          skip=recipe.skip, reasoning_types=recipe.reasoning_types, options=recipe.data_options))
    if not rows:
        raise ValueError(f"{recipe.data} holds no training rows" + (f" after row {recipe.skip}" if recipe.skip else "")
                         + (f" of types {recipe.reasoning_types}" if recipe.reasoning_types else ""))
    return Dataset.from_list(rows, features=features)

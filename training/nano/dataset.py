"""Nano world splits in the ReasonSeg-X Hugging Face parquet format (what `star eval` reads), plus the
training columns: `solution` (targets in the policy's frame), `instances` (COCO RLE per target),
`labels`, `scene_objects` (every object with its RLE), and `completion` (a reasoning trace + answer for the supervised warm-up)."""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.protocol import format_answer, get_frame, pixel_frame_factors
from engine.rle import encode

from ..rewards import gt_targets_from_masks
from .queries import REASONING_TYPES, Query, make_query, with_article
from .wide import SALT, SPECS, WORLDS, wide_query, wide_scene
from .world import Scene, SceneObject, make_scene

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2, "shift": 3}
# How the warm-up's completion reasons. "short": the query's steps alone (the shipped bundle's warm-up), so
# a comparison is named in one step with nothing written out. "listed": first every object with its box,
# left to right (and, for size comparisons, every object's size), then the same steps: the answer is then
# picked from, and its box copied from, text the trace has already written.
TRACES = ("short", "listed")
LISTING = "The objects from left to right: "  # label_mentions pins repeated labels inside these steps by order
SIZES = "Their sizes: "
LISTING_STEPS = (LISTING, SIZES)


@dataclass(frozen=True)
class NanoConfig:
    image_size: int = 224  # the scene (original image) is square
    frame: str = "pixels-224"  # the policy's input and answer frame (8x8 image tokens)
    empty_rate: float = 0.1
    types: tuple[str, ...] = REASONING_TYPES
    max_objects: int | None = None  # None: the world's default (1-6); a curriculum starts lower
    trace: str = "short"  # one of TRACES
    # training/nano/wide.py: "classic" (the shipped bundle's world; image_size square scenes), "wide" or
    # "shift" (any size and aspect; image_size is not used)
    world: str = "classic"

    def __post_init__(self):
        if self.trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {self.trace!r}")
        if self.world not in WORLDS:
            raise ValueError(f"world must be one of {WORLDS}, got {self.world!r}")


def _to_frame(values: list[int], factor_x: float, factor_y: float) -> list[int]:
    # original -> frame with the same rounding the parser uses the other way
    return [int(v / (factor_x if i % 2 == 0 else factor_y) + 0.5) for i, v in enumerate(values)]


@dataclass
class NanoExample:
    """One scene, its query, and the answer the policy should give (targets in the policy's frame)."""

    scene: Scene
    query: Query
    targets: list[SceneObject]
    solution: list[dict]  # [{"bbox_2d", "point_2d"}] in the frame
    completion: str  # reasoning trace + answer, for the supervised warm-up
    listed: list[SceneObject]  # the objects the trace lists with their boxes, in its order (none in a short trace)


def _listing_steps(scene: Scene, query: Query, fx: float, fy: float) -> tuple[list[SceneObject], list[str]]:
    """The listed trace's first steps: every object and its box in the frame, left to right by centroid
    (so "leftmost", "left of" read off the order), and its size (sqrt of its area in frame pixels, one
    coordinate token) when the query compares sizes."""
    listed = sorted(scene.objects, key=lambda o: o.centroid[0])
    boxes = [_to_frame(t["bbox_2d"], fx, fy) for t in gt_targets_from_masks([o.mask for o in listed])]
    items = [f"{with_article(o.label)} [{','.join(map(str, b))}]" for o, b in zip(listed, boxes)]
    steps = [LISTING + ", ".join(items)]
    if query.sizes:
        sizes = [int(np.sqrt(o.area / (fx * fy)) + 0.5) for o in listed]
        steps.append(SIZES + ", ".join(f"the {o.label} {s}" for o, s in zip(listed, sizes)))
    return listed, steps


def make_scene_example(split: str, index: int, config: NanoConfig = NanoConfig()) -> NanoExample:
    """The scene, query and answer of row `index`, fully determined by (split, index, config)."""
    # crc32, not hash(): str hashes change from one process to the next.
    seed = [SPLIT_SEEDS.get(split, zlib.crc32(split.encode())), index]
    if config.world == "classic":
        rng = np.random.default_rng(seed)
        for _ in range(20):
            n_objects = None if config.max_objects is None else int(rng.integers(1, config.max_objects + 1))
            scene = make_scene(rng, config.image_size, n_objects=n_objects)
            query = make_query(scene, rng, config.types, config.empty_rate)
            if query is not None:
                break
        else:  # pragma: no cover - every scene has at least one object, so some family always fits
            raise RuntimeError("could not make a query")
    else:
        scene, query = _wide_scene_and_query(np.random.default_rng(seed + [SALT[config.world]]), config)
    h, w = scene.image.shape[:2]
    by_id = {o.id: o for o in scene.objects}
    targets = [by_id[i] for i in query.targets]
    fx, fy = pixel_frame_factors(get_frame(config.frame), (w, h))
    solution = [{"bbox_2d": _to_frame(t["bbox_2d"], fx, fy), "point_2d": _to_frame(t["point_2d"], fx, fy)}
                for t in gt_targets_from_masks([o.mask for o in targets])]
    answer = [{"label": o.label, **s} for o, s in zip(targets, solution)]
    listed, first = _listing_steps(scene, query, fx, fy) if config.trace == "listed" else ([], [])
    think = ". ".join(first + query.steps) + "."
    completion = f"<think> {think} </think> <answer>{format_answer(answer)}</answer>"
    return NanoExample(scene, query, targets, solution, completion, listed)


def _wide_scene_and_query(rng: np.random.Generator, config: NanoConfig) -> tuple[Scene, Query]:
    spec = SPECS[config.world]
    most = spec.scene.objects[1] if config.max_objects is None else min(config.max_objects, spec.scene.objects[1])
    for _ in range(50):
        scene = wide_scene(rng, spec, most)
        query = wide_query(scene, rng, spec, config.types, config.empty_rate)
        if query is not None:
            return scene, query
    raise RuntimeError("could not make a scene and query")  # pragma: no cover - 50 tries never all fail


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255 if pixels.dtype == bool else pixels).save(buf, "PNG")
    return buf.getvalue()


def make_example(split: str, index: int, config: NanoConfig = NanoConfig()) -> dict:
    """One parquet row, fully determined by (split, index, config)."""
    ex = make_scene_example(split, index, config)
    scene, query, targets = ex.scene, ex.query, ex.targets
    h, w = scene.image.shape[:2]
    union = np.zeros((h, w), dtype=bool)
    for o in targets:
        union |= o.mask
    labels = [o.label for o in targets]
    return {
        "image": {"bytes": _png(scene.image), "path": None},
        "text": query.text,
        # the classic splits keep the grid form they were published with; the wider world's images reach
        # thousands of pixels a side, so their masks are stored as PNG (the HF Image form star eval reads too)
        "mask": union.tolist() if config.world == "classic" else {"bytes": _png(union), "path": None},
        "image_id": f"nano-{split}-{index:06d}",
        "ann_id": "0",
        "img_height": h,
        "img_width": w,
        "reasoning_type": query.reasoning_type,
        "solution": json.dumps(ex.solution),
        "instances": json.dumps([encode(o.mask) for o in targets]),
        "labels": json.dumps(labels),
        # Every visible object of the scene (for multi-object stage-1 data and baselines).
        "scene_objects": json.dumps([{"id": o.id, "label": o.label, "rle": encode(o.mask)} for o in scene.objects]),
        "completion": ex.completion,
        "frame": config.frame,
    }


def write_split(out_dir: str | Path, split: str, count: int, config: NanoConfig = NanoConfig(), *, rows_per_file: int = 2000,
                progress: bool = False) -> list[Path]:
    """Write `count` rows as `<out>/<split>-NNNNN-of-MMMMM.parquet` (temporary name, then renamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = max(1, -(-count // rows_per_file))
    written = []
    indices = range(count)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"nano {split}", unit="scene")
    rows = []
    for index in indices:
        rows.append(make_example(split, index, config))
        if len(rows) == rows_per_file or index == count - 1:
            part = len(written)
            path = out / f"{split}-{part:05d}-of-{files:05d}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(pa.Table.from_pylist(rows), tmp, compression="zstd")
            tmp.replace(path)
            written.append(path)
            rows = []
    return written

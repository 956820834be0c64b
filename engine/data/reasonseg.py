"""ReasonSeg (and ReasonSeg-X/-R in the original layout): `*.jpg` + same-stem `.json` with polygons.

The ground truth is rasterised exactly as LISA does (docs/protocol.md §9), with OpenCV, so the
pixels match the published evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..images import image_size
from .sample import OnError, Reader, Sample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_annotation(path: Path) -> dict:
    """ReasonSeg JSON; some files are cp1252, not UTF-8 (the reference retries the same way)."""
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252"))


def _polygon(shape, height: int, width: int) -> tuple[str, np.ndarray]:
    """(label, int32 points [1, P, 2]) of one shape, truncated toward zero as the reference does; ValueError
    for a shape without label or points, non-finite points, or points so far off the image (beyond 4x its
    size) that they can only be damage (1e12 overflowed int32 and OpenCV's rasterizer)."""
    if not isinstance(shape, dict) or "label" not in shape or "points" not in shape:
        raise ValueError("a shape without 'label' or 'points'")
    try:
        pts = np.asarray(shape["points"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("a shape whose points are not numbers") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or not len(pts) or not np.isfinite(pts).all():
        raise ValueError(f"a shape whose points are not [[x, y], ...] finite numbers (shape {list(pts.shape)})")
    bound = 4 * max(height, width)
    if np.abs(pts).max() > bound:
        raise ValueError(f"polygon points up to {np.abs(pts).max():.3g} on a {width}x{height} image")
    return str(shape["label"]), pts.astype(np.int32)[None]


def rasterize_shapes(shapes: list[dict], height: int, width: int) -> np.ndarray:
    """LISA's get_mask_from_json: drop `flag`, largest polygon first, outline then fill, 255 for ignore."""
    polygons, areas = [], []
    for shape in shapes:
        label, pts = _polygon(shape, height, width)
        if label.lower() == "flag":  # deprecated, meaningless annotations
            continue
        probe = np.zeros((height, width), dtype=np.uint8)
        cv2.polylines(probe, pts, True, 1, 1)
        cv2.fillPoly(probe, pts, 1)
        areas.append(probe.sum())
        polygons.append((label, pts))
    mask = np.zeros((height, width), dtype=np.uint8)
    # np.argsort(...)[::-1], not a stable sort: ties then fall in the reference's order.
    for index in np.argsort(areas)[::-1].astype(np.int32):
        label, pts = polygons[index]
        value = 255 if "ignore" in label.lower() else 1
        cv2.polylines(mask, pts, True, value, 1)
        cv2.fillPoly(mask, pts, value)
    return mask


class ReasonSegReader(Reader):
    """A split folder (e.g. ReasonSeg/test). Evaluation uses text[0]; `all_queries` yields every text."""

    kind = "reasonseg"

    def __init__(self, path: str | Path, *, all_queries: bool = False, on_error: OnError = "raise"):
        super().__init__(on_error)
        self.root = Path(path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ReasonSeg folder not found: {self.root}")
        self.images = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.all_queries = all_queries

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        for image_path in self.images:
            json_path = image_path.with_suffix(".json")
            if not json_path.is_file():
                self._problem(str(image_path), "no annotation file beside it (same name, .json)")
                continue
            try:
                anno = read_annotation(json_path)
                texts = anno["text"]
                texts = [texts] if isinstance(texts, str) else list(texts)
                shapes = anno["shapes"]
                if not texts or not isinstance(shapes, list):
                    raise ValueError("'text' is empty or 'shapes' is not a list")
            except (ValueError, KeyError, TypeError) as exc:
                self._problem(str(json_path), f"malformed annotation ({exc})")
                continue
            meta = {"is_sentence": bool(anno.get("is_sentence", False)), "file": image_path.name}
            meta["query_type"] = "long" if meta["is_sentence"] else "short"
            for key in ("reasoning_type",):
                if key in anno:
                    meta[key] = anno[key]

            def gt(image_path=image_path, shapes=shapes) -> np.ndarray:
                width, height = image_size(image_path, exif=True)  # LISA reads with cv2 (EXIF applied)
                return rasterize_shapes(shapes, height, width)

            for i, text in enumerate(texts if self.all_queries else texts[:1]):
                sid = image_path.stem if i == 0 else f"{image_path.stem}#{i}"
                yield Sample(sid, str(text), image_path, gt, dict(meta), exif=True)

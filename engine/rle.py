"""COCO run-length encoding of masks (pycocotools), in the JSON-friendly form results use."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def encode(mask: np.ndarray) -> dict:
    """bool HxW -> {"size": [H, W], "counts": str} (compressed COCO RLE)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode expects a 2-D mask, got shape {mask.shape}")
    # a bool array is read as uint8 without a copy; the one copy left is the column-major order COCO counts in
    as_bytes = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    rle = coco_mask.encode(np.asfortranarray(as_bytes))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> bool HxW."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE is a dict with 'size' [H, W] and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        obj = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        obj = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(obj).astype(bool)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygon parts -> one bool mask (parts summed, as the RefCOCO loaders do)."""
    rles = coco_mask.frPyObjects(polygons, height, width)
    m = coco_mask.decode(rles)
    return (m.sum(axis=2) > 0) if m.ndim == 3 else m.astype(bool)

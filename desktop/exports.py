"""What the app exports, each written atomically: the mask PNG (0/255), the overlay PNG, COCO results
JSON (compressed RLE, as pycocotools reads it) and labelme JSON (labelme 5's "mask" shapes: the bbox
corners and a base64 PNG of the mask cropped to them, pixel-exact, unlike polygons)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from engine.fileio import write_atomically
from engine.results import overlay
from engine.rle import encode

Objects = list[tuple[str, np.ndarray]]  # (label, bool mask [H, W]): Annotation.final_objects / Outcome.final_objects

LABELME_VERSION = "5.5.0"


def write_mask_png(mask: np.ndarray, path) -> Path:
    return write_atomically(path, lambda p: Image.fromarray(mask.astype(np.uint8) * 255).save(p, format="PNG"))


def write_overlay_png(image: np.ndarray, mask: np.ndarray, path, rgb=(255, 40, 90), alpha: float = 0.5) -> Path:
    return write_atomically(path, lambda p: Image.fromarray(overlay(image, mask, rgb, alpha)).save(p, format="PNG"))


def _bbox(mask: np.ndarray) -> list[int]:
    """[x, y, width, height] of the mask's pixels (COCO's convention)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def coco_json(objects: Objects, size: tuple[int, int], image_name: str, description: str) -> dict:
    """A COCO file with one image of `size` (width, height) and one annotation per object (RLE segmentations)."""
    w, h = size
    labels = []
    annotations = []
    for i, (label, mask) in enumerate(objects, start=1):
        if label not in labels:
            labels.append(label)
        annotations.append({"id": i, "image_id": 1, "category_id": labels.index(label) + 1, "iscrowd": 0,
                            "segmentation": encode(mask), "area": int(mask.sum()), "bbox": _bbox(mask),
                            "attributes": {"query": description}})
    return {"info": {"description": f"StAR Desktop: {description}"},
            "images": [{"id": 1, "file_name": image_name, "width": w, "height": h}],
            "annotations": annotations,
            "categories": [{"id": i, "name": name} for i, name in enumerate(labels, start=1)]}


def _png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")  # bool -> 1-bit PNG, as labelme writes it
    return base64.b64encode(buf.getvalue()).decode("ascii")


def labelme_json(objects: Objects, size: tuple[int, int], image_name: str, description: str) -> dict:
    """labelme JSON with one pixel-exact "mask" shape per object (labelme 5.x's own mask form)."""
    w, h = size
    shapes = []
    for label, mask in objects:
        x, y, bw, bh = _bbox(mask)
        shapes.append({"label": label, "points": [[x, y], [x + bw - 1, y + bh - 1]], "group_id": None,
                       "description": description, "shape_type": "mask", "flags": {},
                       "mask": _png_b64(mask[y:y + bh, x:x + bw])})
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_name, "imageData": None,
            "imageHeight": h, "imageWidth": w}



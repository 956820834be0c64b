"""Fixture datasets in every format `star eval` reads, written from the same items (image, query, GT).

An item is (id, rgb uint8 HxWx3, query, gt uint8 HxW with 0 / 1 / 255 ignore, meta dict). Ignore
pixels survive only where the format has them (ReasonSeg's "ignore" polygons); elsewhere they
become background. GT regions are axis-aligned rectangles so every format can express them exactly.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Item:
    id: str
    image: np.ndarray
    query: str
    rects: list[tuple[int, int, int, int]]  # target rectangles, inclusive pixel corners (x1, y1, x2, y2)
    ignore: list[tuple[int, int, int, int]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def gt(self, with_ignore: bool = True) -> np.ndarray:
        h, w = self.image.shape[:2]
        gt = np.zeros((h, w), np.uint8)
        for x1, y1, x2, y2 in self.rects:
            gt[y1:y2 + 1, x1:x2 + 1] = 1
        for x1, y1, x2, y2 in self.ignore if with_ignore else ():
            gt[y1:y2 + 1, x1:x2 + 1] = 255
        return gt


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def _polygon(rect, label):
    x1, y1, x2, y2 = rect
    return {"label": label, "points": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]}


def write_reasonseg(root: Path, items: list[Item]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for it in items:
        Image.fromarray(it.image).save(root / f"{it.id}.png")
        shapes = [_polygon(r, "target") for r in it.rects] + [_polygon(r, "ignore") for r in it.ignore]
        anno = {"text": [it.query], "is_sentence": it.meta.get("is_sentence", False), "shapes": shapes}
        if "reasoning_type" in it.meta:
            anno["reasoning_type"] = it.meta["reasoning_type"]
        (root / f"{it.id}.json").write_text(json.dumps(anno))
    return root


def write_parquet(path: Path, items: list[Item]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "image": [{"bytes": _png(it.image), "path": None} for it in items],
        "text": [it.query for it in items],
        "mask": [(it.gt(with_ignore=False) == 1).tolist() for it in items],
        "image_id": [it.id for it in items],
        "ann_id": ["0"] * len(items),
        "img_height": [it.image.shape[0] for it in items],
        "img_width": [it.image.shape[1] for it in items],
        "reasoning_type": [it.meta.get("reasoning_type", "referring") for it in items],
        "is_sentence": [bool(it.meta.get("is_sentence", False)) for it in items],
    })
    pq.write_table(table, path)
    return path


def write_refcoco(root: Path, items: list[Item]) -> Path:
    folder = root / "refcoco"
    folder.mkdir(parents=True, exist_ok=True)
    img_dir = root / "images" / "mscoco" / "images" / "train2014"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns, refs = [], [], []
    for i, it in enumerate(items):
        name = f"COCO_{i}.png"
        Image.fromarray(it.image).save(img_dir / name)
        h, w = it.image.shape[:2]
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        # COCO polygons run along pixel edges: x2 + 1 / y2 + 1 covers the inclusive corner pixels.
        polys = [[x1, y1, x2 + 1, y1, x2 + 1, y2 + 1, x1, y2 + 1] for x1, y1, x2, y2 in it.rects]
        anns.append({"id": 100 + i, "image_id": i, "segmentation": polys})
        refs.append({"ref_id": i, "ann_id": 100 + i, "image_id": i, "split": "val", "sentences": [{"sent": it.query}]})
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))
    with open(folder / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    return root


def write_cod(root: Path, items: list[Item]) -> Path:
    (root / "Imgs").mkdir(parents=True, exist_ok=True)
    (root / "GT").mkdir(parents=True, exist_ok=True)
    for it in items:
        Image.fromarray(it.image).save(root / "Imgs" / f"{it.id}.png")
        Image.fromarray((it.gt(with_ignore=False) == 1).astype(np.uint8) * 255).save(root / "GT" / f"{it.id}.png")
    return root


def write_mmr(root: Path, items: list[Item]) -> Path:
    from pycocotools import mask as coco_mask

    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for it in items:
        Image.fromarray(it.image).save(root / "images" / f"{it.id}.png")
        h, w = it.image.shape[:2]
        answers = []
        for rect in it.rects:
            part = Item(it.id, it.image, it.query, [rect]).gt(with_ignore=False)
            rle = coco_mask.encode(np.asfortranarray(part))
            answers.append({"segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
        records.append({"file_name": f"{it.id}.png", "image_id": it.id, "height": h, "width": w,
                        "questions": [it.query], "answers": [answers]})
    (root / "mmr.json").write_text(json.dumps(records))
    return root / "mmr.json"


WRITERS = {"reasonseg": write_reasonseg, "reasonseg-x": write_parquet, "refcoco": write_refcoco, "cod": write_cod,
           "mmr": write_mmr}


def write_dataset(kind: str, root: Path, items: list[Item]) -> str:
    """Write `items` as `kind` under root; returns the --data spec."""
    target = root / "data.parquet" if kind == "reasonseg-x" else root
    return f"{kind}:{WRITERS[kind](target, items)}"

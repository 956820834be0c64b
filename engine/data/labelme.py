"""`labelme:FOLDER`: the labelme / X-AnyLabeling files beside a folder's images (recursive), as samples of
(image, query, target mask), the form `star eval` and training read.

What a file holds becomes samples this way:
- objects: shapes with an area (polygons, rectangles, circles, masks) that share a label and a group_id form
  one object; within an object a shape lying wholly inside the others is a hole (labelme has no holes;
  this is how a group carries one). Points, lines and line strips have no area and are not targets.
- queries (`queries=`): `descriptions` - every distinct shape description is a query whose target is all
  the objects carrying it (what this project's app, `star label` and `star serve` write); `labels` - every
  usable label is a referring query made from it ("the cup", "all the cups": `engine.data.referring`);
  `both`; `auto` (the default) - descriptions in files that have them, labels elsewhere.
- labels naming an ignore region (containing "ignore", as ReasonSeg's do) are never queries: their pixels
  are 255 in every sample's ground truth, left out of the scores.
- `flag=NAME` keeps only the files whose labelme flag NAME is set (e.g. the images an annotator marked
  done); `split=` / `holdout=` / `split_seed=` / `split_file=` choose a held-out split (`engine.data.holdout`).

A file that cannot be used is counted and named with its reason (`problems`), never dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..annotations import is_labelme_document, shape_pixels
from ..images import image_size
from .holdout import HoldOut
from .referring import label_query, usable_label
from .sample import OnError, Reader, Sample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
QUERY_MODES = ("auto", "descriptions", "labels", "both")


@dataclass
class LabelledObject:
    label: str
    mask: np.ndarray           # bool HxW
    descriptions: frozenset    # the distinct non-empty descriptions of its shapes


def group_mask(masks: list[np.ndarray]) -> np.ndarray:
    """One object's pixels from its shapes' pixels: the largest first; a shape wholly inside what is there
    already is a hole and is cut out, any other is added."""
    out = np.zeros_like(masks[0])
    for m in sorted(masks, key=lambda m: -int(m.sum())):
        if out.any() and m.any() and not (m & ~out).any():
            out &= ~m
        else:
            out |= m
    return out


def document_objects(document: dict, height: int, width: int) -> tuple[list[LabelledObject], int]:
    """The objects of a labelme document and how many shapes had no area; ValueError for a damaged shape."""
    groups: dict[tuple, list[tuple[np.ndarray, str]]] = {}
    no_area = 0
    for n, shape in enumerate(document["shapes"]):
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"shape {n} has no label")
        try:
            pixels = shape_pixels(shape, height, width)
        except (ValueError, TypeError, KeyError, IndexError, OSError) as exc:
            raise ValueError(f"shape {n} ({label!r}) cannot be drawn: {exc}") from None
        if pixels is None:
            no_area += 1
            continue
        gid = shape.get("group_id")
        key = (label, gid if gid is not None else f"#{n}")
        description = shape.get("description")
        groups.setdefault(key, []).append((pixels, description.strip() if isinstance(description, str) else ""))
    objects = [LabelledObject(label, group_mask([m for m, _ in parts]), frozenset(d for _, d in parts if d))
               for (label, _), parts in groups.items()]
    return objects, no_area


def sample_targets(objects: list[LabelledObject], mode: str, key: str, seed: int) -> list[tuple[str, str, list[int]]]:
    """(query, source, indices of the objects it covers) for each sample an image gives."""
    scored = [i for i, o in enumerate(objects) if "ignore" not in o.label.lower()]
    by_description: dict[str, list[int]] = {}
    for i in scored:
        for d in sorted(objects[i].descriptions):
            by_description.setdefault(d, []).append(i)
    by_label: dict[str, list[int]] = {}
    for i in scored:
        if usable_label(objects[i].label):
            by_label.setdefault(objects[i].label, []).append(i)
    out = []
    if mode in ("descriptions", "both") or (mode == "auto" and by_description):
        out += [(d, "description", idx) for d, idx in by_description.items()]
    if mode in ("labels", "both") or (mode == "auto" and not by_description):
        out += [(label_query(label, len(idx), key, seed), "label", idx) for label, idx in by_label.items()]
    return out


class LabelmeReader(Reader):
    """A folder of images with labelme / X-AnyLabeling JSON beside them (searched recursively)."""

    kind = "labelme"

    def __init__(self, path: str | Path, *, queries: str = "auto", flag: str | None = None, seed: int | str = 0,
                 split: str = "all", holdout: float | str = 0.2, split_seed: int | str = 0,
                 split_file: str | Path | None = None, on_error: OnError = "raise"):
        super().__init__(on_error)
        self.root = Path(path).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"labelme folder not found: {self.root}")
        if queries not in QUERY_MODES:
            raise ValueError(f"queries={queries!r}: choose one of {', '.join(QUERY_MODES)}")
        self.queries, self.flag, self.seed = queries, flag, int(seed)
        self.holdout = HoldOut(self.root, split=split, fraction=holdout, seed=split_seed, split_file=split_file)
        self.skipped: Counter = Counter()  # reason -> files left out
        self.entries = self._scan()
        self._samples: list[Sample] | None = None

    def _skip(self, reason: str, path: Path, detail: str = "") -> None:
        self.skipped[reason] += 1
        self._problem(str(path), reason + (f" ({detail})" if detail else ""))

    def _scan(self) -> list[tuple[Path, Path, dict]]:
        """(annotation file, image, document) for every usable file in the chosen split, in path order."""
        entries = []
        for json_path in sorted(self.root.rglob("*.json")):
            if any(part.startswith(".") for part in json_path.relative_to(self.root).parts):
                continue  # hidden folders: tools' caches, this project's run journals
            try:
                document = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                self._skip("unreadable JSON", json_path, str(exc)[:80])
                continue
            if not is_labelme_document(document):
                continue  # another tool's file (a result JSON, a COCO file): not an annotation
            image = self._image_of(json_path, document)
            if image is None:
                self._skip("no image beside it", json_path)
                continue
            if self.flag is not None and not (document.get("flags") or {}).get(self.flag):
                self.skipped[f"flag {self.flag!r} not set"] += 1
                continue
            if not self.holdout.keeps(image):
                continue
            entries.append((json_path, image, document))
        return entries

    def _image_of(self, json_path: Path, document: dict) -> Path | None:
        named = document.get("imagePath")
        if isinstance(named, str) and named:
            candidate = (json_path.parent / named.replace("\\", "/")).resolve()
            if candidate.is_file() and self.root in candidate.parents:
                return candidate
        stem = json_path.name[: -len(".labelme.json")] if json_path.name.endswith(".labelme.json") else json_path.stem
        return next((json_path.with_name(stem + s).resolve() for s in IMAGE_SUFFIXES
                     if json_path.with_name(stem + s).is_file()), None)

    def samples(self) -> list[Sample]:
        """Every sample, built once (the objects of each file are drawn to count its queries)."""
        if self._samples is None:
            self._samples = list(self._build())
        return self._samples

    def _build(self) -> Iterator[Sample]:
        for json_path, image, document in self.entries:
            try:
                width, height = image_size(image, exif=True)  # labelme applies EXIF orientation
                declared = (document.get("imageWidth"), document.get("imageHeight"))
                if all(isinstance(v, int) for v in declared) and declared != (width, height):
                    raise ValueError(f"the file says {declared[0]}x{declared[1]}, the image is {width}x{height}")
                objects, _ = document_objects(document, height, width)
            except (ValueError, OSError) as exc:
                self._skip("unusable annotation", json_path, str(exc)[:120])
                continue
            rel = image.relative_to(self.root).as_posix()
            targets = sample_targets(objects, self.queries, rel, self.seed)
            if not targets:
                self.skipped["no object to ask for"] += 1
                continue
            ignore = [o.mask for o in objects if "ignore" in o.label.lower()]
            for query, source, idx in targets:
                def objects_of(document=document, image=image) -> list[LabelledObject]:
                    w, h = image_size(image, exif=True)
                    return document_objects(document, h, w)[0]

                def gt(idx=tuple(idx), objects_of=objects_of) -> np.ndarray:
                    objs = objects_of()
                    out = np.zeros(objs[0].mask.shape, np.uint8)
                    for i in idx:
                        out[objs[i].mask] = 1
                    for o in objs:
                        if "ignore" in o.label.lower():
                            out[o.mask] = 255
                    return out

                def instances(idx=tuple(idx), objects_of=objects_of) -> list[np.ndarray]:
                    objs = objects_of()
                    return [objs[i].mask for i in idx]

                label = Counter(objects[i].label for i in idx).most_common(1)[0][0]  # what the objects are called
                meta = {"file": rel, "query_source": source, "objects": len(idx), "ignore_regions": len(ignore),
                        "label": label}
                yield Sample(f"{rel}|{source}|{query}", query, image, gt, meta, exif=True, instances_loader=instances)

    def __len__(self) -> int:
        return len(self.samples())

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples())

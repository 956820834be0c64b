"""`coco:INSTANCES_JSON`: a COCO instances file (from any tool, this project's `star label --coco` and the
app's export included) as samples of (image, query, target mask).

Per image, each category present is a referring query made from its name ("the dog", "all the dogs":
`engine.data.referring`) whose target is every instance of it, crowd regions (iscrowd RLE) included; an
annotation that carries its own query (`attributes.query`, as this project writes) is also a query of its
own (`queries=` auto | descriptions | labels | both, as for labelme folders). Masks are pycocotools'
own: polygons through `frPyObjects`, RLE decoded. Images are looked for under `image_dir=` (default: the
JSON's folder, then its `images/` and its parent's `images/`); `split=` etc. as `engine.data.holdout`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .holdout import HoldOut
from .labelme import QUERY_MODES
from .refcoco import annotation_mask
from .referring import label_query, usable_label
from .sample import OnError, Reader, Sample


class CocoReader(Reader):
    kind = "coco"

    def __init__(self, path: str | Path, *, image_dir: str | Path | None = None, queries: str = "auto",
                 seed: int | str = 0, split: str = "all", holdout: float | str = 0.2, split_seed: int | str = 0,
                 split_file: str | Path | None = None, on_error: OnError = "raise"):
        super().__init__(on_error)
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"COCO instances file not found: {self.path}")
        if queries not in QUERY_MODES:
            raise ValueError(f"queries={queries!r}: choose one of {', '.join(QUERY_MODES)}")
        try:
            coco = json.loads(self.path.read_text(encoding="utf-8"))
            images, annotations = coco["images"], coco["annotations"]
            categories = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path} is not a COCO instances file ({exc})") from None
        self.queries, self.seed = queries, int(seed)
        self.image_dirs = [Path(image_dir)] if image_dir else [self.path.parent, self.path.parent / "images",
                                                                self.path.parent.parent / "images"]
        self.holdout = HoldOut(self.image_dirs[0].resolve(), split=split, fraction=holdout, seed=split_seed,
                               split_file=split_file)
        self.categories = categories
        self.skipped: Counter = Counter()
        by_image = defaultdict(list)
        for ann in annotations:
            by_image[ann.get("image_id")].append(ann)
        self.entries = []
        for img in images:
            path = self._find(img.get("file_name", ""))
            if path is None:
                self.skipped["image not found"] += 1
                self._problem(str(img.get("file_name")), f"image not found under {', '.join(map(str, self.image_dirs))}")
                continue
            if self.holdout.keeps(path):
                self.entries.append((img, path, by_image.get(img.get("id"), [])))

    def _find(self, name: str) -> Path | None:
        return next((d / name for d in self.image_dirs if name and (d / name).is_file()), None)

    def _targets(self, img: dict, anns: list[dict]) -> list[tuple[str, str, list[int]]]:
        by_category: dict[int, list[int]] = defaultdict(list)
        by_query: dict[str, list[int]] = defaultdict(list)
        for i, ann in enumerate(anns):
            by_category[ann.get("category_id")].append(i)
            query = (ann.get("attributes") or {}).get("query") if isinstance(ann.get("attributes"), dict) else None
            if isinstance(query, str) and query.strip():
                by_query[query.strip()].append(i)
        out = []
        if self.queries in ("descriptions", "both") or (self.queries == "auto" and by_query):
            out += [(q, "description", idx) for q, idx in by_query.items()]
        if self.queries in ("labels", "both") or (self.queries == "auto" and not by_query):
            for cid, idx in by_category.items():
                name = self.categories.get(cid, "")
                if usable_label(name):
                    out.append((label_query(name, len(idx), str(img.get("file_name")), self.seed), "label", idx))
        return out

    def samples(self) -> list[Sample]:
        out = []
        for img, path, anns in self.entries:
            targets = self._targets(img, anns)
            if not targets:
                self.skipped["no object to ask for"] += 1
                continue
            for query, source, idx in targets:
                chosen = [anns[i] for i in idx]

                def gt(chosen=chosen, img=img) -> np.ndarray:
                    h, w = int(img["height"]), int(img["width"])
                    out = np.zeros((h, w), np.uint8)
                    for ann in chosen:
                        out[annotation_mask(ann["segmentation"], h, w)] = 1
                    return out

                def instances(chosen=chosen, img=img) -> list[np.ndarray]:
                    h, w = int(img["height"]), int(img["width"])
                    return [annotation_mask(ann["segmentation"], h, w).astype(bool) for ann in chosen]

                names = Counter(self.categories.get(a.get("category_id"), "") for a in chosen)
                meta = {"file": img.get("file_name"), "query_source": source, "objects": len(idx),
                        "image_id": img.get("id"), "label": names.most_common(1)[0][0] or None}
                out.append(Sample(f"{img.get('id')}|{source}|{query}", query, path, gt, meta, exif=False,
                                  instances_loader=instances))
        return out

    def __len__(self) -> int:
        return len(self.samples())

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples())

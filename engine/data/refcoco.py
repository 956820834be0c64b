"""RefCOCO / RefCOCO+ / RefCOCOg: COCO `instances.json` + `refs(<split_by>).p`; one sample per sentence.

The refs file is a Python pickle: it can run code when loaded, so it is read only when the caller
says it trusts the file (`trust_pickle=True`). A JSON export of the same list needs no trust.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..rle import decode, polygons_to_mask
from .sample import OnError, Reader, Sample

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    return decode(segmentation)


def _load_refs(path: Path, trust_pickle: bool) -> list[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if not trust_pickle:
        raise DatasetError(
            f"{path} is a Python pickle, which can execute code when loaded. Load it only if you trust "
            "where it came from: pass trust_pickle=True (CLI: --trust-pickle), or convert it to JSON."
        )
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - the caller vouched for this file


class RefCocoReader(Reader):
    kind = "refcoco"

    def __init__(
        self,
        root: str | Path,
        *,
        dataset: str = "refcoco",
        split: str = "val",
        split_by: str | None = None,
        image_dir: str | Path | None = None,
        trust_pickle: bool = False,
        on_error: OnError = "raise",
    ):
        super().__init__(on_error)
        root = Path(root)
        folder = root / dataset if (root / dataset).is_dir() else root
        split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
        instances = folder / "instances.json"
        refs_path = next((p for p in (folder / f"refs({split_by}).p", folder / f"refs({split_by}).json") if p.is_file()), None)
        if not instances.is_file() or refs_path is None:
            raise FileNotFoundError(f"Expected instances.json and refs({split_by}).p under {folder}")
        coco = json.loads(instances.read_text())
        self.images = {img["id"]: img for img in coco["images"]}
        self.anns = {ann["id"]: ann for ann in coco["annotations"]}
        self.refs = [r for r in _load_refs(refs_path, trust_pickle) if r.get("split") == split]
        self.image_dir = Path(image_dir) if image_dir else root / "images" / "mscoco" / "images" / "train2014"
        self.dataset, self.split = dataset, split

    def __len__(self) -> int:
        return sum(len(r.get("sentences", [])) for r in self.refs)

    def __iter__(self) -> Iterator[Sample]:
        for ref in self.refs:
            ann = self.anns.get(ref.get("ann_id"))
            img = self.images.get(ref.get("image_id"))
            if ann is None or img is None:
                self._problem(f"ref {ref.get('ref_id')}", "its annotation or image is not in instances.json")
                continue
            path = self.image_dir / img["file_name"]

            def gt(ann=ann, img=img) -> np.ndarray:
                return annotation_mask(ann["segmentation"], img["height"], img["width"]).astype(np.uint8)

            for k, sent in enumerate(ref.get("sentences", [])):
                meta = {"ref_id": ref.get("ref_id"), "image_id": img["id"], "ann_id": ann["id"], "dataset": self.dataset}
                yield Sample(f"{ref.get('ref_id')}:{k}", sent["sent"], path, gt, meta, exif=False)

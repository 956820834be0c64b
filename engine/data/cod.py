"""Camouflaged-object sets (COD10K, CAMO, NC4K, CHAMELEON): `<set>/Imgs/*.jpg` + `<set>/GT/*.png`, by stem."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..images import load_image
from .sample import OnError, Reader, Sample

IMAGE_DIRS = ("Imgs", "imgs", "Image", "image", "Images", "images", "Imgs_test")
GT_DIRS = ("GT", "gt", "GT_Object", "Mask", "mask", "masks", "Masks")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def load_cod_gt(path: Path) -> np.ndarray:
    """The 0..255 map as stored (what the S/E/F measures take)."""
    return load_image(path, exif=False)[:, :, 0]


class CodReader(Reader):
    """GT masks are binarised at > 128 for IoU; `meta['gt_path']` keeps the 0..255 map for sod_scores."""

    kind = "cod"

    def __init__(self, root: str | Path, *, query: str = "the camouflaged object", on_error: OnError = "raise"):
        super().__init__(on_error)
        root = Path(root)
        self.image_dir, self.gt_dir = _first_dir(root, IMAGE_DIRS), _first_dir(root, GT_DIRS)
        if self.image_dir is None or self.gt_dir is None:
            raise FileNotFoundError(f"Expected an image folder ({'/'.join(IMAGE_DIRS[:2])}) and a GT folder (GT/gt) under {root}")
        self.images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.gts = {p.stem: p for p in self.gt_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        self.query = query
        self.set_name = root.name

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        for image_path in self.images:
            gt_path = self.gts.get(image_path.stem)
            if gt_path is None:
                self._problem(str(image_path), f"no ground truth with the same name in {self.gt_dir}")
                continue
            meta = {"set": self.set_name, "gt_path": str(gt_path)}
            yield Sample(image_path.stem, self.query, image_path, lambda p=gt_path: (load_cod_gt(p) > 128).astype(np.uint8), meta, exif=False)

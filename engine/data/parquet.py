"""The Hugging Face parquet copies (ReasonSeg, ReasonSeg-X, ReasonSeg-R, MMR exports).

Columns: image (HF Image: {bytes, path}), text, mask (2-D bool list, or an HF Image), image_id, ann_id,
img_height, img_width, and for ReasonSeg-X reasoning_type. Read one record batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..images import load_image
from .sample import OnError, Reader, Sample

META_COLUMNS = ("image_id", "ann_id", "img_height", "img_width", "reasoning_type", "is_sentence", "file_name")


def mask_from_cell(cell: Any) -> np.ndarray:
    """A mask cell as Python gives it: an HF Image ({bytes, path}; non-zero = inside) or a 2-D bool list."""
    if isinstance(cell, dict) and ("bytes" in cell or "path" in cell):  # mask stored as an image
        return load_image(cell["bytes"] if cell.get("bytes") else cell["path"], exif=False)[:, :, 0] > 0
    return np.asarray(cell, dtype=bool)


def _bool_grid(list_scalar) -> np.ndarray:
    """A list<list<bool>> parquet cell -> bool HxW without going through Python objects."""
    rows = list_scalar.values  # ListArray: one entry per row
    height = len(rows)
    if height == 0:
        return np.zeros((0, 0), dtype=bool)
    flat = rows.flatten().to_numpy(zero_copy_only=False)
    if flat.size % height:
        raise ValueError("mask rows have different lengths")
    return flat.reshape(height, flat.size // height).astype(bool)


class ParquetReader(Reader):
    kind = "hf"

    def __init__(self, path: str | Path, *, batch_size: int = 8, on_error: OnError = "raise"):
        import pyarrow.parquet as pq

        super().__init__(on_error)
        path = Path(path)
        if path.is_dir():
            self.files = sorted(path.rglob("*.parquet"))
        elif path.is_file():
            self.files = [path]
        else:
            raise FileNotFoundError(f"Parquet file or folder not found: {path}")
        if not self.files:
            raise FileNotFoundError(f"No .parquet files under {path}")
        self._pq = pq
        self.batch_size = batch_size
        self._rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def __len__(self) -> int:
        return self._rows

    def __iter__(self) -> Iterator[Sample]:
        import pyarrow as pa

        for file in self.files:
            pf = self._pq.ParquetFile(file)
            names = set(pf.schema_arrow.names)
            missing = {"image", "text", "mask"} - names
            if missing:
                self._problem(str(file), f"missing columns {sorted(missing)}")
                continue
            row = 0
            for batch in pf.iter_batches(batch_size=self.batch_size):
                table = pa.Table.from_batches([batch])
                mask_col = table.column("mask")
                mask_is_grid = pa.types.is_list(mask_col.type) or pa.types.is_large_list(mask_col.type)
                images = table.column("image").to_pylist()
                texts = table.column("text").to_pylist()
                metas = {c: table.column(c).to_pylist() for c in META_COLUMNS if c in names}
                for i in range(table.num_rows):
                    where = f"{file.name} row {row}"
                    row += 1
                    try:
                        sample = self._sample(file, where, i, images[i], texts[i], mask_col, mask_is_grid, metas)
                    except (ValueError, TypeError, KeyError, OSError) as exc:
                        self._problem(where, str(exc))
                        continue
                    yield sample

    def _sample(self, file: Path, where: str, i: int, image: Any, text: Any, mask_col, mask_is_grid: bool, metas: dict) -> Sample:
        if isinstance(image, dict):
            source = image.get("bytes") or (file.parent / image["path"] if image.get("path") else None)
        else:
            source = image
        if source is None:
            raise ValueError("row has no image bytes or path")
        if isinstance(text, list):
            text = text[0] if text else ""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("row has no query text")
        meta = {c: v[i] for c, v in metas.items() if v[i] is not None}
        if "is_sentence" in meta:
            meta["query_type"] = "long" if meta["is_sentence"] else "short"
        mask = _bool_grid(mask_col[i]) if mask_is_grid else mask_from_cell(mask_col[i].as_py())
        h, w = meta.get("img_height"), meta.get("img_width")
        if h is not None and w is not None and mask.shape != (h, w):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but img_width x img_height is {w}x{h}")
        gt = mask.astype(np.uint8)
        sid = f"{meta.get('image_id', where)}:{meta.get('ann_id', i)}" if "image_id" in meta else where
        # The HF copies were loaded with PIL and no EXIF transpose; keep that so pixels match the GT.
        return Sample(str(sid), text, bytes(source) if isinstance(source, (bytes, bytearray)) else source, lambda gt=gt: gt, meta, exif=False)

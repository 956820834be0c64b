"""Benchmark readers behind one `Sample` type, opened by kind: `open_dataset("reasonseg", path)`."""

from __future__ import annotations

from pathlib import Path

from .coco import CocoReader
from .cod import CodReader
from .labelme import LabelmeReader
from .mmr import MmrReader
from .parquet import ParquetReader
from .reasonseg import ReasonSegReader, rasterize_shapes
from .refcoco import RefCocoReader
from .sample import Reader, Sample

READERS: dict[str, type[Reader]] = {
    "reasonseg": ReasonSegReader,
    "hf": ParquetReader,
    "reasonseg-hf": ParquetReader,
    "reasonseg-x": ParquetReader,
    "reasonseg-r": ParquetReader,
    "parquet": ParquetReader,
    "refcoco": RefCocoReader,
    "cod": CodReader,
    "mmr": MmrReader,
    "labelme": LabelmeReader,   # labelme / X-AnyLabeling / this project's files beside a folder's images
    "coco": CocoReader,         # a COCO instances JSON
}


def open_dataset(kind: str, path: str | Path, **options) -> Reader:
    """A reader for `kind` (see READERS) at `path`; options go to the reader (e.g. on_error="skip")."""
    try:
        reader = READERS[kind.lower()]
    except KeyError:
        raise ValueError(f"Unknown dataset kind {kind!r}; choose one of {', '.join(READERS)}.") from None
    return reader(path, **options)


def parse_data_spec(spec: str) -> tuple[str, str]:
    """`KIND:PATH` (the CLI's --data) -> (kind, path)."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ValueError(f"--data wants KIND:PATH (e.g. reasonseg:/data/ReasonSeg/test), got {spec!r}")
    return kind, path


__all__ = ["Sample", "Reader", "READERS", "open_dataset", "parse_data_spec", "rasterize_shapes",
           "ReasonSegReader", "ParquetReader", "RefCocoReader", "CodReader", "MmrReader",
           "LabelmeReader", "CocoReader"]

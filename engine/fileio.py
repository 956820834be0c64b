"""Writing files so that a reader never sees half of one: write a temporary sibling, then rename."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """The per-user cache of the project ($STAR_CACHE_DIR, else ~/.cache/star-desktop): hash stamps,
    compiled kernels, crash logs."""
    return Path(os.environ.get("STAR_CACHE_DIR") or Path.home() / ".cache" / "star-desktop")


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary name next to `path`, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json_atomically(path: str | Path, payload, indent: int | None = 1) -> Path:
    """`payload` as JSON at `path` (numpy scalars written as numbers), atomically: the project's one JSON
    writer."""
    import json

    return write_text_atomically(path, json.dumps(payload, indent=indent, default=_plain))


def _plain(value):
    """numpy scalars and arrays as Python numbers and lists; anything else is an error, as json's."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

"""CPU IoU kernel for `engine.voting`: `iou_cpu.c`, compiled on first use with the system C compiler and
loaded through ctypes.

Why compiled at run time and not shipped as a wheel: the source is 80 lines with no dependencies, a
machine that compiled llama.cpp has a compiler, and the library is built for the CPU it runs on. It is
cached under ~/.cache/star-desktop/kernels/ by a hash of the source, the compiler and the machine, so a
change to any of them rebuilds it. Without a compiler (or with STAR_CPU_KERNEL=0) the vote uses numpy
crop pairs instead; both are exact integer counts, so results do not depend on which one ran.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("iou_cpu.c")
FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 120


class CropTable(ctypes.Structure):
    """One row per mask, as `crop_t` in iou_cpu.c."""

    _fields_ = [("y0", ctypes.c_int64), ("c0", ctypes.c_int64), ("rows", ctypes.c_int64), ("cols", ctypes.c_int64),
                ("offset", ctypes.c_int64)]


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cache_dir() -> Path:
    from ..fileio import cache_dir

    return cache_dir() / "kernels"


def _library_path(compiler: str) -> Path:
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join((compiler, *FLAGS, platform.machine(), platform.system())).encode())
    return _cache_dir() / f"iou_cpu-{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile next to the target and rename: two processes building at once never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S)
        if proc.returncode != 0:
            raise OSError(f"{compiler} failed: {proc.stderr.strip()[-400:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_failure = ""


@lru_cache(maxsize=1)
def library():
    """The loaded kernel, or None (the reason is in unavailable_reason())."""
    global _failure
    if os.environ.get("STAR_CPU_KERNEL", "1") == "0":
        _failure = "disabled by STAR_CPU_KERNEL=0"
        return None
    compiler = _compiler()
    if compiler is None:
        _failure = "no C compiler found (set CC)"
        return None
    try:
        path = _library_path(compiler)
        if not path.exists():
            _build(compiler, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        _failure = f"could not build or load {SOURCE.name}: {exc}"
        return None
    i64, p64 = ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
    words = ctypes.POINTER(ctypes.c_uint64)
    lib.star_row_intersections.argtypes = [ctypes.POINTER(CropTable), i64, words, i64, p64, i64, p64]
    lib.star_upper_intersections.argtypes = [ctypes.POINTER(CropTable), i64, words, p64]
    lib.star_row_intersections.restype = lib.star_upper_intersections.restype = ctypes.c_int
    return lib


def unavailable_reason() -> str:
    """Why the C kernel is not in use ('' when it is)."""
    return "" if library() is not None else _failure


def _ptr(array: np.ndarray, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


class PackedCrops:
    """Every mask's bit-packed crop in one contiguous word buffer plus its geometry table, the layout
    iou_cpu.c reads. `crops`: engine.voting._Crop or None (empty mask) per mask."""

    def __init__(self, crops, lib):
        self.lib = lib
        self.n = len(crops)
        self.table = (CropTable * max(1, self.n))()
        sizes = [0 if c is None else c.words.size for c in crops]
        self.words = np.zeros(max(1, sum(sizes)), dtype=np.uint64)
        offset = 0
        for k, (crop, size) in enumerate(zip(crops, sizes)):
            if crop is None:
                self.table[k] = CropTable(0, 0, 0, 0, 0)
                continue
            self.words[offset:offset + size] = crop.words.reshape(-1)
            rows, cols = crop.words.shape
            self.table[k] = CropTable(crop.y0, crop.c0, rows, cols, offset)
            offset += size
        self._words_ptr = _ptr(self.words, ctypes.c_uint64)

    def row(self, i: int, others) -> np.ndarray:
        """Intersections of mask i with each of `others` (int64)."""
        others = np.ascontiguousarray(np.asarray(others, dtype=np.int64).reshape(-1))
        out = np.zeros(len(others), dtype=np.int64)
        status = self.lib.star_row_intersections(self.table, self.n, self._words_ptr, int(i), _ptr(others, ctypes.c_int64),
                                                 len(others), _ptr(out, ctypes.c_int64))
        if status != 0:
            raise IndexError(f"mask index out of range (0..{self.n - 1}): {i} or one of {others.tolist()}")
        return out

    def upper(self) -> np.ndarray:
        """n x n intersections, filled on and above the diagonal (zeros below)."""
        out = np.zeros((self.n, self.n), dtype=np.int64)
        self.lib.star_upper_intersections(self.table, self.n, self._words_ptr, _ptr(out, ctypes.c_int64))
        return out

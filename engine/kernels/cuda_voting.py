"""GPU IoU engine for `engine.voting`: launches `iou_cluster.cu` through CuPy (NVRTC, compiled once).

Why CuPy RawModule and not a compiled extension: the source compiles on the user's machine for the
GPU it has (no per-architecture wheels, no build step in the installer), CuPy is one pip wheel, and
CuPy takes torch tensors zero-copy through `__cuda_array_interface__`, so SAM 2's masks never leave
the GPU. Only the M x M intersections, M areas and the final bit-packed mask come back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("iou_cluster.cu")
PACK_THREADS = 256
COMBINE_THREADS = 256


def _cupy():
    import cupy  # noqa: F401 - optional dependency (extra `gpu`)

    return cupy


def unavailable_reason() -> str:
    """Why the GPU path cannot run here, in one sentence ('' when it can)."""
    try:
        cp = _cupy()
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"CuPy is not importable ({exc.__class__.__name__}: {exc}); install the 'gpu' extra."
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device is visible."
    except Exception as exc:
        return f"the CUDA runtime reports no usable device ({exc})."
    return ""


def is_device_array(x) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def accepts(masks: Sequence) -> bool:
    """True when every mask lives on a CUDA device and CuPy can launch the kernels."""
    return bool(masks) and all(is_device_array(m) for m in masks) and unavailable_reason() == ""


@lru_cache(maxsize=1)
def _module():
    cp = _cupy()
    return cp.RawModule(code=SOURCE.read_text(), options=("--std=c++14",))


def _as_kernel_input(cp, mask):
    """(cupy array viewed as uint8 or float32, kind) without a copy when the dtype allows it."""
    arr = cp.asarray(mask)  # zero-copy for torch CUDA tensors and CuPy arrays
    if arr.dtype == cp.bool_ or arr.dtype == cp.uint8:
        return cp.ascontiguousarray(arr).view(cp.uint8), "u8"
    if arr.dtype == cp.float32:
        return cp.ascontiguousarray(arr), "f32"
    # bf16 / fp16 / other logits: threshold at 0 on the device (one extra pass).
    return cp.ascontiguousarray(arr > 0).view(cp.uint8), "u8"


class CudaVoteEngine:
    """Packs M device masks, computes all intersections in one more launch, combines on the device."""

    name = "cuda"

    def __init__(self, masks: Sequence):
        cp = _cupy()
        self.cp = cp
        inputs = [_as_kernel_input(cp, m) for m in masks]
        kinds = {k for _, k in inputs}
        if len(kinds) > 1:  # mixed dtypes: bring all to uint8
            inputs = [(a if k == "u8" else (a > 0).view(cp.uint8), "u8") for a, k in inputs]
        kind = inputs[0][1]
        arrays = [a for a, _ in inputs]
        self.shape = tuple(arrays[0].shape)
        self.m = len(arrays)
        self.pixels = int(np.prod(self.shape))
        self.words = (self.pixels + 31) // 32
        self._keep = arrays  # the pointers below must outlive the launch
        pointers = np.array([a.data.ptr for a in arrays], dtype=np.uint64)
        vectorized = int(all(p % 16 == 0 for p in pointers))
        d_pointers = cp.asarray(pointers)
        self.packed = cp.empty((self.m, self.words), dtype=cp.uint32)
        d_areas = cp.zeros(self.m, dtype=cp.uint64)
        pack = _module().get_function("pack_bits_u8" if kind == "u8" else "pack_bits_f32")
        grid = ((self.words + PACK_THREADS - 1) // PACK_THREADS, self.m)
        pack(grid, (PACK_THREADS,), (d_pointers, np.int64(self.pixels), np.int64(self.words), np.int32(vectorized), self.packed, d_areas))

        d_inter = cp.zeros((self.m, self.m), dtype=cp.uint64)
        tiles = (self.m + 31) // 32
        upper_tiles = tiles * (tiles + 1) // 2
        sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        chunks = (self.words + 31) // 32
        splits = max(1, min(chunks, (4 * sms + upper_tiles - 1) // upper_tiles))
        per_split = ((self.words + splits - 1) // splits + 31) // 32 * 32
        splits = (self.words + per_split - 1) // per_split
        gram = _module().get_function("and_popcount_gram")
        gram((tiles, tiles, splits), (256,), (self.packed, np.int32(self.m), np.int64(self.words), np.int64(per_split), d_inter))

        # The only host round trip before the vote: M areas and M x M intersections.
        self.areas = cp.asnumpy(d_areas).astype(np.int64)
        upper = cp.asnumpy(d_inter).astype(np.int64)
        self.inter = np.triu(upper) + np.triu(upper, 1).T

    def intersections(self, i: int, others: Sequence[int]) -> np.ndarray:
        return self.inter[i, list(others)]

    def intersection_matrix(self) -> np.ndarray:
        return self.inter

    def combine(self, parts: list[tuple[list[int], np.ndarray | None]], pixel_threshold: float) -> np.ndarray:
        cp = self.cp
        offsets, members, weights, weighted = [0], [], [], []
        for idx, w in parts:
            members.extend(idx)
            weights.extend([0.0] * len(idx) if w is None else list(np.asarray(w, dtype=np.float32)))
            weighted.append(0 if w is None else 1)
            offsets.append(len(members))
        out = cp.empty(self.words, dtype=cp.uint32)
        if not parts:
            return np.zeros(self.shape, dtype=bool)
        blocks = min(4096, (self.words + COMBINE_THREADS - 1) // COMBINE_THREADS)
        combine = _module().get_function("combine_parts")
        combine((blocks,), (COMBINE_THREADS,), (
            self.packed, np.int64(self.words), np.int32(len(parts)), cp.asarray(offsets, dtype=cp.int32),
            cp.asarray(members, dtype=cp.int32), cp.asarray(weights, dtype=cp.float32), cp.asarray(weighted, dtype=cp.int32),
            np.float32(pixel_threshold), out,
        ))
        bits = np.unpackbits(cp.asnumpy(out).view(np.uint8), bitorder="little")[: self.pixels]
        return bits.reshape(self.shape).astype(bool)

"""SAM 2's pre- and post-processing in NumPy, shared by every segmenter backend.

The reference (`sam2.utils.transforms.SAM2Transforms`) uses torchvision: resize straight to S x S
(bilinear, antialiased, aspect not kept), normalise, and upsample the low-resolution mask logits
bilinearly (align_corners=False) to the original size. ONNX Runtime and TensorRT have no torchvision,
so the same arithmetic lives here once: separable resampling written as sparse weight matrices, which
also keeps memory bounded for huge images (rows are processed in chunks).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Labels of SAM's prompt encoder: a foreground click, and the two corners of a box.
POINT_LABEL = 1
BOX_TOP_LEFT = 2
BOX_BOTTOM_RIGHT = 3

# Rows of the source image converted to float at once while resizing (bounded memory).
_ROW_CHUNK = 1024


@lru_cache(maxsize=32)
def antialias_weights(in_size: int, out_size: int) -> sparse.csr_matrix:
    """[out, in] weights of PyTorch's `interpolate(mode="bilinear", antialias=True, align_corners=False)`.

    PIL-style: a triangle filter stretched by the scale when downsampling, clipped at the borders and
    renormalised, as ATen's `_compute_indices_min_size_weights_aa` does.
    """
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    rows, cols, vals = [], [], []
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)   # int() truncates, as the C++ cast does
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((j - center + 0.5) * invscale), 0.0, None)
        total = w.sum()
        if total > 0:
            w = w / total
        rows.extend([i] * len(j))
        cols.extend(j.tolist())
        vals.extend(w.tolist())
    return sparse.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(out_size, in_size))


@lru_cache(maxsize=32)
def bilinear_weights(in_size: int, out_size: int) -> sparse.csr_matrix:
    """[out, in] weights of `interpolate(mode="bilinear", align_corners=False)` without antialiasing."""
    scale = in_size / out_size
    src = np.maximum(scale * (np.arange(out_size) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = (src - i0).astype(np.float32)
    l0 = (1.0 - l1).astype(np.float32)
    rows = np.concatenate([np.arange(out_size), np.arange(out_size)])
    m = sparse.csr_matrix((np.concatenate([l0, l1]), (rows, np.concatenate([i0, i1]))), shape=(out_size, in_size))
    m.sum_duplicates()  # i0 == i1 at the last row: the two weights add up to 1
    return m


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> normalised float32 [1, 3, size, size], as SAM2Transforms does."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    wy = antialias_weights(h, size)
    wx_t = antialias_weights(w, size).T.tocsr()
    out = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):
        # Horizontal pass chunk by chunk (the only full-resolution float data), then vertical.
        narrow = np.empty((h, size), dtype=np.float32)
        for r0 in range(0, h, _ROW_CHUNK):
            block = image[r0:r0 + _ROW_CHUNK, :, c].astype(np.float32) / np.float32(255.0)
            narrow[r0:r0 + _ROW_CHUNK] = np.asarray(block @ wx_t)
        out[c] = np.asarray(wy @ narrow)
    out = (out - MEAN[:, None, None]) / STD[:, None, None]
    return out[None]


def prompts_to_model(boxes: np.ndarray | None, points: np.ndarray | None, orig_hw: tuple[int, int],
                     size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [K, 4] (x1, y1, x2, y2) and points [K, 2] in original pixels -> SAM point prompts.

    Returns coords float32 [K, P, 2] in the model's input frame and labels int32 [K, P]; a box becomes
    its two corners labelled 2 and 3 and comes before the click (label 1), as in SAM2ImagePredictor.
    """
    if boxes is None and points is None:
        raise ValueError("a prompt needs a box, a point, or both")
    h, w = orig_hw
    parts, labels = [], []
    k = None
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        k = len(boxes)
        parts.append(boxes.reshape(-1, 2, 2))
        labels.append(np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.int32), (k, 1)))
    if points is not None:
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        if k is not None and len(points) != k:
            raise ValueError(f"{k} boxes but {len(points)} points: give one point per box")
        k = len(points)
        parts.append(points[:, None, :])
        labels.append(np.full((k, 1), POINT_LABEL, np.int32))
    coords = np.concatenate(parts, axis=1).copy()
    if not np.isfinite(coords).all():
        raise ValueError("prompt coordinates must be finite numbers")
    # Same float32 operation order as SAM2Transforms.transform_coords (divide, then scale).
    coords[..., 0] = coords[..., 0] / np.float32(w)
    coords[..., 1] = coords[..., 1] / np.float32(h)
    coords *= np.float32(size)
    return coords, np.concatenate(labels, axis=1)


def interactive_prompt_to_model(points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None,
                                orig_hw: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """One interactive prompt: clicks [P, 2] with labels [P] (1 adds, 0 removes) and an optional box
    (x1, y1, x2, y2), original pixels -> coords float32 [1, P', 2] and labels int32 [1, P'] in the model's
    frame. The box's corners come first, as SAM2ImagePredictor.predict concatenates them."""
    parts, kinds = [], []
    if box is not None:
        parts.append(np.asarray(box, dtype=np.float32).reshape(2, 2))
        kinds.append(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int32))
    if points is not None and len(points):
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = np.asarray(labels, dtype=np.int32).reshape(-1)
        if len(lab) != len(pts) or not np.isin(lab, (0, POINT_LABEL)).all():
            raise ValueError("give one label per click: 1 adds, 0 removes")
        parts.append(pts)
        kinds.append(lab)
    if not parts:
        raise ValueError("a prompt needs a box, a click, or both")
    coords = np.concatenate(parts)[None].copy()
    if not np.isfinite(coords).all():
        raise ValueError("prompt coordinates must be finite numbers")
    h, w = orig_hw
    coords[..., 0] = coords[..., 0] / np.float32(w)
    coords[..., 1] = coords[..., 1] / np.float32(h)
    coords *= np.float32(size)
    return coords, np.concatenate(kinds)[None]


def select_best(logits: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multimask output [K, 3, h, w] + scores [K, 3] -> the top-scoring mask of each prompt.

    Ties go to the later mask, as StAR's `np.argsort(scores)[::-1][0]` picks.
    Returns (logits [K, h, w], scores [K], chosen index [K]).
    """
    m = scores.shape[1]
    idx = (m - 1) - np.argmax(scores[:, ::-1], axis=1)
    rows = np.arange(len(scores))
    return logits[rows, idx], scores[rows, idx], idx


def upsample_logits(logits: np.ndarray, orig_hw: tuple[int, int], rows: slice | None = None) -> np.ndarray:
    """Low-res logits [K, h, w] -> float32 [K, H, W] (or the given output row range)."""
    k, lh, lw = logits.shape
    h, w = orig_hw
    wy = bilinear_weights(lh, h)
    if rows is not None:
        wy = wy[rows]
    wx_t = bilinear_weights(lw, w).T.tocsr()
    out = np.empty((k, wy.shape[0], w), dtype=np.float32)
    for i in range(k):
        tall = np.asarray(wy @ logits[i].astype(np.float32))        # [rows, lw]
        out[i] = np.asarray(tall @ wx_t)
    return out


def logits_to_masks(logits: np.ndarray, orig_hw: tuple[int, int], threshold: float = 0.0,
                    row_chunk: int = 512) -> np.ndarray:
    """Low-res logits [K, h, w] -> bool masks [K, H, W] at the original size, upsampled in row chunks
    so that only the boolean output is held at full resolution."""
    h, w = orig_hw
    masks = np.empty((logits.shape[0], h, w), dtype=bool)
    for r0 in range(0, h, row_chunk):
        sl = slice(r0, min(h, r0 + row_chunk))
        masks[:, sl] = upsample_logits(logits, orig_hw, sl) > threshold
    return masks

"""Video object segmentation scores as DAVIS defines them (Pont-Tuset et al., "The 2017 DAVIS Challenge"),
which ReVOS, MeViS and ReasonVOS report: J, the region similarity (the IoU of two masks; 1 when both are
empty), and F, the boundary F-measure (a predicted boundary pixel counts as right when a true boundary pixel
lies within a disk of 0.008 of the image diagonal, and the other way for recall), and J&F, their mean.

A sequence's J and F are means over its frames; a benchmark's are means over its (video, expression)
pairs, as the reasoning-video papers report them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

BOUNDARY_TOLERANCE = 0.008  # of the image diagonal: DAVIS's bound


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: |pred & gt| / |pred | gt| for two boolean H x W masks; 1 when both are empty (nothing to find,
    nothing found)."""
    pred, gt = _pair(pred, gt)
    union = int(np.count_nonzero(pred | gt))
    return 1.0 if union == 0 else int(np.count_nonzero(pred & gt)) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a boolean mask: a pixel is on the boundary when it differs from its right,
    lower or lower-right neighbour (pixels past the edge read as its own row's or column's neighbours, as
    DAVIS's `seg2bmap` does), so the boundary lies half a pixel towards the origin."""
    m = np.asarray(mask, bool)
    right = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    below = np.zeros_like(m)
    below[:-1, :] = m[1:, :]
    diagonal = np.zeros_like(m)
    diagonal[:-1, :-1] = m[1:, 1:]
    edges = (m ^ right) | (m ^ below) | (m ^ diagonal)
    edges[-1, :] = m[-1, :] ^ right[-1, :]   # the last row has no row below: only its right neighbour counts
    edges[:, -1] = m[:, -1] ^ below[:, -1]   # the last column: only the pixel below counts
    edges[-1, -1] = False
    return edges


def _disk(radius: int) -> np.ndarray:
    """The pixels within `radius` of the centre (x^2 + y^2 <= r^2), as a (2r + 1) square uint8 kernel."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius).astype(np.uint8)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F: the harmonic mean of boundary precision and recall, a boundary pixel matched when the other mask's
    boundary lies within `tolerance` of the image diagonal (rounded up to whole pixels; >= 1: pixels).
    Both boundaries empty: 1; one empty: 0."""
    import cv2

    pred, gt = _pair(pred, gt)
    radius = int(tolerance if tolerance >= 1 else math.ceil(tolerance * math.hypot(*gt.shape)))
    pred_edges, gt_edges = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pred_edges.sum()), int(gt_edges.sum())
    if n_pred == 0 or n_gt == 0:
        return 1.0 if n_pred == n_gt else 0.0
    kernel = _disk(radius)
    near_gt = cv2.dilate(gt_edges.astype(np.uint8), kernel).astype(bool)
    near_pred = cv2.dilate(pred_edges.astype(np.uint8), kernel).astype(bool)
    precision = int((pred_edges & near_gt).sum()) / n_pred
    recall = int((gt_edges & near_pred).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class SequenceScore:
    """One (video, expression)'s scores: means over its frames."""
    j: float
    f: float
    frames: int

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def sequence_score(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> SequenceScore:
    """J and F of a sequence from its (predicted, true) masks frame by frame (a missing prediction: an empty
    mask of the frame's size)."""
    js, fs = [], []
    for pred, gt in pairs:
        pred = np.zeros(np.shape(gt), bool) if pred is None else pred
        js.append(region_similarity(pred, gt))
        fs.append(boundary_f_measure(pred, gt))
    if not js:
        raise ValueError("a sequence with no frames has no score")
    return SequenceScore(float(np.mean(js)), float(np.mean(fs)), len(js))


def summarize(scores: dict[str, list[SequenceScore]]) -> dict[str, dict]:
    """{kind: {"j", "f", "jf", "sequences"}} from each kind's sequences (e.g. "referring", "reasoning"),
    and "overall": the mean of the referring and reasoning means, as ReVOS's evaluation reports it (with
    one of them only, that one's: MeViS). Expressions with no target in the video count in neither."""
    out = {}
    for kind, items in scores.items():
        if items:
            j, f = float(np.mean([s.j for s in items])), float(np.mean([s.f for s in items]))
            out[kind] = {"j": j, "f": f, "jf": (j + f) / 2, "sequences": len(items)}
    parts = [out[k] for k in ("referring", "reasoning") if k in out]
    if parts:
        j, f = float(np.mean([p["j"] for p in parts])), float(np.mean([p["f"] for p in parts]))
        out["overall"] = {"j": j, "f": f, "jf": (j + f) / 2, "sequences": sum(p["sequences"] for p in parts)}
    return out


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(f"masks of different shapes or not 2-D: {pred.shape} and {gt.shape}")
    return pred, gt

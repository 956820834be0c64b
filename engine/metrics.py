"""Benchmark metrics: gIoU / cIoU under the published conventions, and the COD/SOD measures.

LISA's conventions are the default (docs/protocol.md §9). The others exist so that a published
number can be reproduced exactly; `CONVENTIONS` says which paper each one reproduces.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import ShapeMismatchError

IGNORE = 255


@dataclass(frozen=True)
class Convention:
    """How a benchmark's ground truth and degenerate samples are scored.

    ignore: "exclude" drops ignore pixels (255) from intersection AND union (LISA);
            "foreground" folds them into the object (the Hugging Face copies StAR/Seg-Zero used).
    empty_empty: score of a sample whose GT and prediction are both empty: 1.0, 0.0, or "skip"
            (left out of gIoU and of the sample count).
    """

    name: str
    ignore: Literal["exclude", "foreground"] = "exclude"
    empty_empty: float | Literal["skip"] = 1.0


CONVENTIONS: dict[str, Convention] = {
    # LISA (ReasonSeg's authors): ignore excluded, empty/empty = 1.0, cIoU = sum I / sum U.
    "lisa": Convention("lisa"),
    # StAR's calculate_iou.py on the HF copies: ignore pixels are already foreground; U == 0 -> 1.0.
    "star": Convention("star", ignore="foreground", empty_empty=1.0),
    # Seg-Zero on the HF copies: skips samples with an empty GT and an empty prediction.
    "seg-zero": Convention("seg-zero", ignore="foreground", empty_empty="skip"),
    # VisionReasoner on the HF copies: scores them 0.
    "visionreasoner": Convention("visionreasoner", ignore="foreground", empty_empty=0.0),
}


def get_convention(name: str | Convention = "lisa") -> Convention:
    if isinstance(name, Convention):
        return name
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"Unknown metric convention {name!r}; choose one of {', '.join(CONVENTIONS)}.") from None


def _as_gt(gt: np.ndarray) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ShapeMismatchError(f"A ground-truth mask must be 2-D (H, W), got shape {gt.shape}.")
    if gt.dtype == bool:
        return gt.astype(np.uint8)
    values = np.unique(gt)
    if not np.isin(values, (0, 1, IGNORE)).all():
        raise ValueError(
            f"Ground truth must hold only 0, 1 and 255 (ignore); found {values[:8].tolist()}. "
            "A 0/255 object map (COD style) is scored with sod_scores, or binarise it first."
        )
    return gt


def _as_pred(pred: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if pred is None:
        return None
    pred = np.asarray(pred)
    if pred.shape != shape:
        raise ShapeMismatchError(f"Prediction shape {pred.shape} differs from ground truth {shape}; masks are never resized silently.")
    return pred if pred.dtype == bool else pred > 0


class PreparedGt:
    """One ground truth made ready once, so that many predictions (a vote sweep, N' sub-samples) are counted
    cheaply under both ignore treatments: `counts(pred)` -> (I, U) excluding ignore pixels (LISA) and
    (I, U) with them folded into the object (the HF copies)."""

    def __init__(self, gt: np.ndarray):
        gt = _as_gt(gt)
        self.shape = gt.shape
        self.target = gt == 1
        ignore = gt == IGNORE
        self.ignore = ignore if ignore.any() else None
        self.target_fg = self.target | ignore if self.ignore is not None else self.target

    def counts(self, pred: np.ndarray | None) -> tuple[int, int, int, int]:
        """(I, U) with ignore excluded, then (I, U) with ignore as foreground; None is an empty prediction."""
        pred = _as_pred(pred, self.shape)
        if pred is None:
            return 0, int(np.count_nonzero(self.target)), 0, int(np.count_nonzero(self.target_fg))
        fg = int(np.count_nonzero(pred & self.target_fg)), int(np.count_nonzero(pred | self.target_fg))
        if self.ignore is None:
            return (*fg, *fg)
        kept = pred & ~self.ignore
        return int(np.count_nonzero(kept & self.target)), int(np.count_nonzero(kept | self.target)), *fg

    def intersection_union(self, pred: np.ndarray | None, convention: str | Convention = "lisa") -> tuple[int, int]:
        return pick_counts(self.counts(pred), convention)


def pick_counts(counts: Sequence[int], convention: str | Convention = "lisa") -> tuple[int, int]:
    """The (I, U) a convention uses from PreparedGt.counts' four numbers."""
    conv = get_convention(convention)
    return (counts[0], counts[1]) if conv.ignore == "exclude" else (counts[2], counts[3])


def intersection_union(pred: np.ndarray | None, gt: np.ndarray, convention: str | Convention = "lisa") -> tuple[int, int]:
    """Integer intersection and union of one sample. `pred=None` (a failure) is an empty mask."""
    return PreparedGt(gt).intersection_union(pred, convention)


@dataclass
class _Sums:
    iou: float = 0.0
    intersection: int = 0
    union: int = 0
    n: int = 0

    def scores(self) -> dict:
        return {
            "giou": self.iou / self.n if self.n else 0.0,
            # LISA divides by (sum U + 1e-10): an all-empty split scores 0.
            "ciou": self.intersection / self.union if self.union else 0.0,
            "n": self.n,
            "intersection": self.intersection,
            "union": self.union,
        }


class IoUAccumulator:
    """Running gIoU / cIoU over a split, overall and per group (reasoning type, short/long, ...)."""

    def __init__(self, convention: str | Convention = "lisa"):
        self.convention = get_convention(convention)
        self._overall = _Sums()
        self._groups: dict[str, dict[Hashable, _Sums]] = defaultdict(lambda: defaultdict(_Sums))

    def add_counts(self, intersection: int, union: int, groups: dict[str, Hashable] | None = None) -> float | None:
        """Add one sample by its integer counts; returns its IoU (None when the convention skips it)."""
        if union == 0:
            if self.convention.empty_empty == "skip":
                return None
            iou = float(self.convention.empty_empty)
        else:
            iou = intersection / union
        for sums in [self._overall, *(self._groups[k][v] for k, v in (groups or {}).items())]:
            sums.iou += iou
            sums.intersection += intersection
            sums.union += union
            sums.n += 1
        return iou

    def add_failure(self, union: int = 0, groups: dict[str, Hashable] | None = None) -> float:
        """Add an item the system failed on (no prediction, or no readable ground truth): IoU 0 in gIoU, and
        its ground-truth area (when known) in cIoU's union. Never skipped: a failure is not an empty-empty."""
        for sums in [self._overall, *(self._groups[k][v] for k, v in (groups or {}).items())]:
            sums.union += union
            sums.n += 1
        return 0.0

    def add(self, pred: np.ndarray | None, gt: np.ndarray, groups: dict[str, Hashable] | None = None) -> float | None:
        return self.add_counts(*intersection_union(pred, gt, self.convention), groups)

    def result(self) -> dict:
        out = self._overall.scores()
        out["convention"] = self.convention.name
        out["groups"] = {key: {value: sums.scores() for value, sums in values.items()} for key, values in self._groups.items()}
        return out


def segmentation_scores(
    preds: Sequence[np.ndarray | None],
    gts: Sequence[np.ndarray],
    convention: str | Convention = "lisa",
    groups: dict[str, Sequence[Hashable]] | None = None,
) -> dict:
    """gIoU and cIoU of a split.

    preds: bool HxW arrays, or None for a failed / missing prediction (scored as an empty mask).
    gts: uint8 HxW with 0 / 1 / 255 (ignore).
    groups: optional per-sample fields to break the scores down by, e.g. {"reasoning_type": [...]}.
    Returns {"giou", "ciou", "n", "intersection", "union", "convention", "groups"}.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths.")
    for key, values in (groups or {}).items():
        if len(values) != len(gts):
            raise ValueError(f"group {key!r} has {len(values)} values for {len(gts)} samples.")
    acc = IoUAccumulator(convention)
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        acc.add(pred, gt, {k: v[i] for k, v in (groups or {}).items()})
    return acc.result()


# --------------------------------------------------------------------------------------------
# COD / SOD measures (Seg-R1 reports these), with PySODMetrics' conventions:
# GT binarised at > 128, predictions divided by 255 and min-max normalised per image.
# --------------------------------------------------------------------------------------------

_EPS = np.spacing(1)


def _prepare_sod(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ShapeMismatchError(f"Prediction {pred.shape} and ground truth {gt.shape} must be the same 2-D shape.")
    p = pred.astype(np.float64) / 255.0
    lo, hi = p.min(), p.max()
    if hi != lo:
        p = (p - lo) / (hi - lo)
    return p, gt > 128


def _mean_std_score(x: np.ndarray) -> float:
    mean = x.mean()
    std = x.std(ddof=1) if x.size > 1 else 0.0
    return 2 * mean / (mean * mean + 1 + std + _EPS)


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    n = pred.size
    x, y = pred.mean(), gt.mean()
    sx = ((pred - x) ** 2).sum() / (n - 1 + _EPS)
    sy = ((gt - y) ** 2).sum() / (n - 1 + _EPS)
    sxy = ((pred - x) * (gt - y)).sum() / (n - 1 + _EPS)
    a = 4 * x * y * sxy
    b = (x * x + y * y) * (sx + sy)
    if a != 0:
        return a / (b + _EPS)
    return 1.0 if b == 0 else 0.0


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al. 2017) on a normalised prediction and a bool GT."""
    y = gt.mean()
    if y == 0:
        return float(1 - pred.mean())
    if y == 1:
        return float(pred.mean())
    obj = _mean_std_score(pred[gt]) * y + _mean_std_score(1 - pred[~gt]) * (1 - y)
    h, w = gt.shape
    cy, cx = np.argwhere(gt).mean(axis=0).round()
    cy, cx = int(cy) + 1, int(cx) + 1
    area = h * w
    w_lt, w_rt, w_lb = cx * cy / area, cy * (w - cx) / area, (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    region = (
        _ssim(pred[:cy, :cx], gt[:cy, :cx]) * w_lt
        + _ssim(pred[:cy, cx:], gt[:cy, cx:]) * w_rt
        + _ssim(pred[cy:, :cx], gt[cy:, :cx]) * w_lb
        + _ssim(pred[cy:, cx:], gt[cy:, cx:]) * w_rb
    )
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


def _enhanced_sum(fg_fg, fg_bg, n_gt_fg: int, size: int):
    """Sum of the enhanced-alignment matrix from counts (scalar or one per threshold)."""
    pred_fg = fg_fg + fg_bg
    pred_bg = size - pred_fg
    if n_gt_fg == 0:
        return pred_bg
    if n_gt_fg == size:
        return pred_fg
    bg_fg = n_gt_fg - fg_fg
    bg_bg = pred_bg - bg_fg
    mp = pred_fg / size
    mg = n_gt_fg / size
    total = 0.0
    for count, a, b in ((fg_fg, 1 - mp, 1 - mg), (fg_bg, 1 - mp, -mg), (bg_fg, -mp, 1 - mg), (bg_bg, -mp, -mg)):
        align = 2 * a * b / (a * a + b * b + _EPS)
        total = total + (align + 1) ** 2 / 4 * count
    return total


def e_measure_curve(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """E-measure at the 256 thresholds 255..0 of the 8-bit prediction."""
    q = (pred * 255).astype(np.uint8)
    fg_hist = np.bincount(q[gt], minlength=256)
    bg_hist = np.bincount(q[~gt], minlength=256)
    fg_fg = np.cumsum(fg_hist[::-1])
    fg_bg = np.cumsum(bg_hist[::-1])
    return _enhanced_sum(fg_fg, fg_bg, int(gt.sum()), gt.size) / (gt.size - 1 + _EPS)


def e_measure_adaptive(pred: np.ndarray, gt: np.ndarray) -> float:
    """E-measure with the prediction thresholded at min(2 * mean, 1)."""
    binary = pred >= min(2 * pred.mean(), 1.0)
    fg_fg = int(np.count_nonzero(binary & gt))
    fg_bg = int(np.count_nonzero(binary & ~gt))
    return float(_enhanced_sum(fg_fg, fg_bg, int(gt.sum()), gt.size) / (gt.size - 1 + _EPS))


def _gauss7(sigma: float = 5.0) -> np.ndarray:
    r = np.arange(-3, 4, dtype=np.float64)
    h = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h / h.sum()


def weighted_f_measure(pred: np.ndarray, gt: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure (Margolin et al. 2014); 0 for an empty GT, as PySODMetrics scores it."""
    from scipy.ndimage import convolve, distance_transform_edt

    if not gt.any():
        return 0.0
    dist, (iy, ix) = distance_transform_edt(~gt, return_indices=True)
    err = np.abs(pred - gt)
    # Background pixels borrow the error of their nearest foreground pixel before smoothing.
    err_nearest = err[iy, ix]
    err_nearest[gt] = err[gt]
    smoothed = convolve(err_nearest, weights=_gauss7(), mode="constant", cval=0)
    min_err = np.where(gt & (smoothed < err), smoothed, err)
    weight = np.where(gt, 1.0, 2 - np.exp(np.log(0.5) / 5 * dist))
    ew = min_err * weight
    tpw = gt.sum() - ew[gt].sum()
    fpw = ew[~gt].sum()
    recall = 1 - ew[gt].mean()
    precision = tpw / (tpw + fpw + _EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + _EPS))


def sod_scores(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]) -> dict:
    """S-measure, E-measure (adaptive / mean / max), weighted F-measure and MAE over a split.

    preds, gts: uint8 0..255 maps of equal shape (predictions may be soft).
    """
    sm, em_adp, wfm, mae, curves = [], [], [], [], []
    for pred, gt in zip(preds, gts, strict=True):
        p, g = _prepare_sod(pred, gt)
        sm.append(s_measure(p, g))
        em_adp.append(e_measure_adaptive(p, g))
        curves.append(e_measure_curve(p, g))
        wfm.append(weighted_f_measure(p, g))
        mae.append(float(np.abs(p - g).mean()))
    if not sm:
        raise ValueError("sod_scores needs at least one prediction.")
    curve = np.mean(np.asarray(curves, dtype=np.float64), axis=0)
    return {
        "sm": float(np.mean(sm)),
        "em_adp": float(np.mean(em_adp)),
        "em_mean": float(curve.mean()),
        "em_max": float(curve.max()),
        "wfm": float(np.mean(wfm)),
        "mae": float(np.mean(mae)),
        "n": len(sm),
    }

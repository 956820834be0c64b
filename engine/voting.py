"""StAR's test-time scaling: mask-level majority voting over N sampled answers (docs/protocol.md §6).

The vote is reproduced step for step from the reference, tie-breaking included. What is ours is
how IoUs are computed: exact integer popcounts on bit-packed masks cropped to their bounding box
(CPU), or one CUDA kernel on masks that stay on the GPU (`engine.kernels.cuda_voting`). Both hand
integer intersections and areas to the same clustering code, so they agree exactly.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np

from .errors import ShapeMismatchError
from .host import to_host
from .kernels import cpu_iou

# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteConfig:
    """StAR's defaults. `mode`: "best" keeps one member per cluster, "consensus" a weighted pixel vote."""

    mode: Literal["best", "consensus"] = "best"
    iou_threshold: float = 0.85
    no_object_threshold: float = 0.5
    vote_threshold: float = 0.2
    pixel_threshold: float = 0.5

    def __post_init__(self):
        if self.mode not in ("best", "consensus"):
            raise ValueError(f"mode must be 'best' or 'consensus', got {self.mode!r}")


# StAR's sweep grid (docs/protocol.md §6).
STAR_SWEEP_GRID = {
    "no_object_threshold": (0.5, 0.6, 0.7),
    "iou_threshold": (0.75, 0.8, 0.85),
    "vote_threshold": (0.1, 0.15, 0.2, 0.25),
    "pixel_threshold": (0.5, 0.6, 0.7),
    "mode": ("consensus", "best"),
}


@dataclass(frozen=True)
class Member:
    """One candidate mask: object `obj` of sample `sample`."""

    index: int  # position in the sample-major candidate order
    sample: int
    obj: int
    score: float
    label: str | None
    area: int


@dataclass
class Cluster:
    id: int
    members: list[Member]
    votes: int  # distinct samples among the members
    ratio: float  # votes / valid runs
    mean_score: float
    label: str | None  # the most common label (first seen wins ties)

    @property
    def representative(self) -> Member:
        return self.members[0]


@dataclass
class VoteResult:
    mask: np.ndarray  # bool HxW; all False when there is no object
    no_object: bool
    k: int  # the most common positive object count (0 when it did not come to that)
    clusters: list[Cluster] = field(default_factory=list)
    selected: list[int] = field(default_factory=list)  # cluster ids, in selection order
    chosen_members: list[int] = field(default_factory=list)  # "best" mode: the member index kept per selected cluster
    valid_runs: int = 0
    no_object_votes: int = 0
    abstained: int = 0
    object_counts: list[int | None] = field(default_factory=list)  # per sample; None = abstained
    reason: str = ""
    backend: str = "cpu"

    @property
    def labels(self) -> list[str | None]:
        by_id = {c.id: c for c in self.clusters}
        return [by_id[i].label for i in self.selected]


# --------------------------------------------------------------------------------------------
# IoU engines: exact integer intersections and areas
# --------------------------------------------------------------------------------------------


class IoUEngine(Protocol):
    """What the clustering needs from a set of candidate masks."""

    name: str
    areas: np.ndarray  # int64 [M]

    def intersections(self, i: int, others: Sequence[int]) -> np.ndarray: ...

    def intersection_matrix(self) -> np.ndarray: ...

    def combine(self, parts: list[tuple[list[int], np.ndarray | None]], pixel_threshold: float) -> np.ndarray: ...


@dataclass
class _Crop:
    y0: int  # first row
    c0: int  # first 64-pixel word column
    words: np.ndarray  # uint64 [rows, word columns]

    @property
    def y1(self) -> int:
        return self.y0 + self.words.shape[0]

    @property
    def c1(self) -> int:
        return self.c0 + self.words.shape[1]


def _has_true(block: np.ndarray) -> bool:
    flat = block.reshape(-1)
    return bool(flat[flat.argmax()]) if flat.size else False


def _row_span(mask: np.ndarray) -> tuple[int, int] | None:
    """First and one-past-last row holding a pixel, touching little more than the rows outside them.

    numpy's bool argmax stops at the first True, so the top is found by scanning forward; the bottom
    by testing blocks upward from the last row, doubling their height (a reversed view would copy).
    """
    height, width = mask.shape
    flat = mask.reshape(-1)
    first = int(flat.argmax()) if flat.size else 0
    if not flat.size or not flat[first]:
        return None
    y0 = first // width
    y, step = height, 32
    while True:
        lo = max(y0, y - step)
        if _has_true(mask[lo:y]):
            rows = np.flatnonzero(mask[lo:y].any(axis=1))
            return y0, lo + int(rows[-1]) + 1
        y, step = lo, step * 2


def pack_mask(mask: np.ndarray) -> _Crop | None:
    """Bit-pack a bool mask, cropped to its bounding box on a 64-pixel column grid (None if empty).

    Every crop starts on a multiple of 64 columns, so word k of any crop covers the same pixels
    as word k of another crop with the same c0: intersections are plain AND + popcount.
    """
    span = _row_span(mask)
    if span is None:
        return None
    y0, y1 = span
    band = mask[y0:y1]
    cols = np.flatnonzero(band.any(axis=0))
    x0 = int(cols[0]) // 64 * 64
    x1 = x0 + -(-(int(cols[-1]) + 1 - x0) // 64) * 64  # whole 64-pixel words
    packed = np.packbits(band[:, x0:x1], axis=1)
    if x1 > mask.shape[1]:  # the last word runs past the image edge: zero-fill it
        full = np.zeros((packed.shape[0], (x1 - x0) // 8), dtype=np.uint8)
        full[:, : packed.shape[1]] = packed
        packed = full
    return _Crop(y0, x0 // 64, packed.view(np.uint64))


def _crop_intersection(a: _Crop | None, b: _Crop | None) -> int:
    if a is None or b is None:
        return 0
    y0, y1 = max(a.y0, b.y0), min(a.y1, b.y1)
    c0, c1 = max(a.c0, b.c0), min(a.c1, b.c1)
    if y0 >= y1 or c0 >= c1:
        return 0
    wa = a.words[y0 - a.y0 : y1 - a.y0, c0 - a.c0 : c1 - a.c0]
    wb = b.words[y0 - b.y0 : y1 - b.y0, c0 - b.c0 : c1 - b.c0]
    return int(np.bitwise_count(wa & wb).sum())


class CpuBitEngine:
    """Bit-packed, bounding-box-cropped masks: memory ~ the objects' boxes / 8, not M x H x W.

    Intersections come from the compiled kernel (engine.kernels.cpu_iou: one C call per row of pairs, one for
    the whole matrix) when a C compiler is available, else from numpy crop pairs; both count the same bits
    exactly."""

    name = "cpu"

    def __init__(self, masks: Sequence[np.ndarray], *, use_kernel: bool = True):
        self.masks = masks  # kept by reference (no copy) for the final combination
        crops = [pack_mask(np.ascontiguousarray(m, dtype=bool)) for m in masks]
        self.areas = np.array([0 if c is None else int(np.bitwise_count(c.words).sum()) for c in crops], dtype=np.int64)
        lib = cpu_iou.library() if use_kernel else None
        # The kernel reads its own contiguous copy of the crops; the per-crop arrays are kept only without it.
        self.packed = cpu_iou.PackedCrops(crops, lib) if lib is not None else None
        self.crops = None if self.packed is not None else crops
        self.kernel = "c" if self.packed is not None else "numpy"

    def intersections(self, i: int, others: Sequence[int]) -> np.ndarray:
        if self.packed is not None:
            return self.packed.row(i, others)
        return np.array([_crop_intersection(self.crops[i], self.crops[j]) for j in others], dtype=np.int64)

    def intersection_matrix(self) -> np.ndarray:
        """All M x M intersections (symmetric, areas on the diagonal)."""
        n = len(self.areas)
        if self.packed is not None:
            upper = self.packed.upper()
        else:
            upper = np.zeros((n, n), dtype=np.int64)
            for i in range(n):
                upper[i, i:] = self.intersections(i, range(i, n))
        return upper + np.triu(upper, 1).T

    def combine(self, parts: list[tuple[list[int], np.ndarray | None]], pixel_threshold: float) -> np.ndarray:
        """OR of the parts; a part is one member (weights None) or a weighted pixel vote of several."""
        shape = np.asarray(self.masks[0]).shape
        out = np.zeros(shape, dtype=bool)
        for members, weights in parts:
            if weights is None:
                out |= np.asarray(self.masks[members[0]], dtype=bool)
            else:
                out |= _weighted_vote([self.masks[m] for m in members], weights, pixel_threshold)
        return out


def _weighted_vote(masks: list[np.ndarray], weights: np.ndarray, threshold: float, chunk_pixels: int = 1 << 22) -> np.ndarray:
    """Pixel kept where sum(w_m * mask_m) >= threshold, in float32 like the reference's tensordot.

    Computed over bands of rows so memory stays bounded for 4096x4096 masks and many members.
    """
    h, w = np.asarray(masks[0]).shape
    out = np.empty((h, w), dtype=bool)
    rows = max(1, chunk_pixels // max(1, w * len(masks)))
    with np.errstate(invalid="ignore", divide="ignore"):
        for y in range(0, h, rows):
            band = np.stack([np.asarray(m[y : y + rows]) for m in masks], axis=0).astype(np.float32)
            out[y : y + rows] = np.tensordot(weights, band, axes=(0, 0)) >= np.float32(threshold)
    return out


def consensus_weights(scores: Sequence[float]) -> np.ndarray:
    """SAM-score weights as the reference computes them (float32; uniform if every score <= 0)."""
    s = np.asarray(scores, dtype=np.float32)
    if np.all(s <= 0):
        s = np.ones_like(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / s.sum()


def pairwise_iou(masks) -> np.ndarray:
    """IoU matrix (N x N, float64) of bool masks [N, H, W]; two empty masks have IoU 0."""
    masks = list(masks) if not isinstance(masks, np.ndarray) else masks
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float64)
    _check_shapes([np.asarray(m).shape for m in masks])
    engine = CpuBitEngine(masks)
    inter = engine.intersection_matrix()
    return iou_from_counts(inter, engine.areas[:, None], engine.areas[None, :])


def iou_from_counts(inter, area_a, area_b) -> np.ndarray:
    """IoU from integer counts (broadcasting); an empty union gives 0, as two empty masks must."""
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _check_shapes(shapes: list[tuple]) -> tuple[int, int]:
    first = shapes[0]
    if len(first) != 2:
        raise ShapeMismatchError(f"Candidate masks must be 2-D (H, W); got shape {first}.")
    for s in shapes[1:]:
        if s != first:
            raise ShapeMismatchError(f"All candidate masks must have one shape; got {first} and {s}.")
    return first


# --------------------------------------------------------------------------------------------
# The vote
# --------------------------------------------------------------------------------------------


@dataclass
class Candidates:
    """The samples flattened to candidates in sample-major order, plus the per-sample tallies."""

    members: list[Member]
    masks: list
    object_counts: list[int | None]
    valid_runs: int
    no_object_votes: int
    abstained: int


def collect_candidates(samples: Sequence) -> Candidates:
    """samples: one entry per completion: None (failed: abstains), [] (no object) or a list of
    (mask, score[, label]) per object."""
    members, masks, counts = [], [], []
    valid = no_object = abstained = 0
    for s, objects in enumerate(samples):
        if objects is None:
            abstained += 1
            counts.append(None)
            continue
        valid += 1
        objects = list(objects)
        counts.append(len(objects))
        if not objects:
            no_object += 1
            continue
        for o, obj in enumerate(objects):
            mask, score = obj[0], float(obj[1])
            label = obj[2] if len(obj) > 2 else None
            members.append(Member(len(members), s, o, score, label or None, 0))
            masks.append(mask)
    if masks:
        _check_shapes([tuple(np.shape(m)) for m in masks])
    return Candidates(members, masks, counts, valid, no_object, abstained)


def most_common_positive_count(counts: Iterable[int | None]) -> int:
    """K: the most common positive object count; ties go to the first seen (Counter.most_common)."""
    positive = [c for c in counts if c is not None and c > 0]
    return Counter(positive).most_common(1)[0][0] if positive else 0


def cluster_candidates(members: list[Member], iou_to_reps: Callable[[int, list[int]], np.ndarray], threshold: float, valid_runs: int) -> list[Cluster]:
    """Greedy: a candidate joins the FIRST cluster whose first member has IoU >= threshold with it."""
    groups: list[list[Member]] = []
    reps: list[int] = []
    for cand in members:
        target = None
        if reps:
            ious = iou_to_reps(cand.index, reps)
            hits = np.flatnonzero(ious >= threshold)
            target = int(hits[0]) if hits.size else None
        if target is None:
            groups.append([cand])
            reps.append(cand.index)
        else:
            groups[target].append(cand)
    clusters = []
    for cid, group in enumerate(groups):
        votes = len({m.sample for m in group})
        labels = Counter(m.label for m in group if m.label is not None)
        clusters.append(
            Cluster(
                id=cid,
                members=group,
                votes=votes,
                ratio=votes / max(1, valid_runs),
                # np.mean over the same floats in the same order as the reference: identical ties.
                mean_score=float(np.mean(np.array([m.score for m in group], dtype=np.float64))),
                label=labels.most_common(1)[0][0] if labels else None,
            )
        )
    return clusters


def select_clusters(clusters: list[Cluster], k: int, vote_threshold: float) -> list[Cluster]:
    """Vote-ratio filter (all clusters if none passes), sort by (votes, mean score) descending, top K."""
    kept = [c for c in clusters if c.ratio >= vote_threshold] or clusters
    # sorted(..., reverse=True) is stable: equal keys keep their cluster order, as in the reference.
    ranked = sorted(kept, key=lambda c: (c.votes, c.mean_score), reverse=True)
    return ranked[: min(len(ranked), k)]


def _best_member(cluster: Cluster) -> Member:
    return max(cluster.members, key=lambda m: (m.score, m.area))


def _decide(cands: Candidates, engine: IoUEngine | None, config: VoteConfig, shape: tuple[int, int], iou_to_reps=None) -> VoteResult:
    base = dict(valid_runs=cands.valid_runs, no_object_votes=cands.no_object_votes, abstained=cands.abstained,
                object_counts=cands.object_counts, backend=engine.name if engine else "cpu")
    empty = np.zeros(shape, dtype=bool)
    if cands.valid_runs == 0:
        return VoteResult(empty, True, 0, reason="every sample failed to parse (no valid run)", **base)
    if cands.no_object_votes / cands.valid_runs >= config.no_object_threshold:
        return VoteResult(empty, True, 0, reason=f"{cands.no_object_votes} of {cands.valid_runs} valid runs say there is no such object", **base)
    k = most_common_positive_count(cands.object_counts)
    if k <= 0 or not cands.members:
        return VoteResult(empty, True, k, reason="no candidate masks", **base)
    members = [replace(m, area=int(engine.areas[m.index])) for m in cands.members]
    if iou_to_reps is None:
        def iou_to_reps(i, reps):
            return iou_from_counts(engine.intersections(i, reps), engine.areas[i], engine.areas[reps])

    clusters = cluster_candidates(members, iou_to_reps, config.iou_threshold, cands.valid_runs)
    selected = select_clusters(clusters, k, config.vote_threshold)
    if config.mode == "best":
        chosen = [_best_member(c).index for c in selected]
        parts = [([i], None) for i in chosen]
    else:
        chosen = []
        parts = [([m.index for m in c.members], consensus_weights([m.score for m in c.members])) for c in selected]
    mask = engine.combine(parts, config.pixel_threshold)
    return VoteResult(mask, not mask.any(), k, clusters, [c.id for c in selected], chosen,
                      reason=f"{len(selected)} of {len(clusters)} clusters selected (K = {k})", **base)


def _build_engine(masks: list, backend: str) -> IoUEngine:
    if backend in ("auto", "cuda"):
        from .kernels import cuda_voting

        if cuda_voting.accepts(masks):
            return cuda_voting.CudaVoteEngine(masks)
        if backend == "cuda":
            raise RuntimeError("backend='cuda' needs CuPy, a CUDA GPU and masks on it; " + cuda_voting.unavailable_reason())
    # Masks on a GPU without a usable kernel: vote on host copies rather than fail.
    return CpuBitEngine([to_host(m) for m in masks])


def majority_vote(samples: Sequence, config: VoteConfig = VoteConfig(), *, shape: tuple[int, int] | None = None, backend: str = "auto") -> VoteResult:
    """StAR's mask-level majority vote.

    Args:
        samples: one entry per completion: None (failed to parse: abstains), [] (no object), or a list of
            (mask: bool H x W in the original image's pixels, score: float, label: str | None) per object.
        config: the vote's settings (mode, cluster IoU threshold, no-object and vote thresholds; StAR's defaults).
        shape: (H, W) of the result when no sample has a mask (otherwise taken from the masks).
        backend: "auto" uses the CUDA kernel when the masks already live on a GPU, else the CPU engine.
    Returns:
        VoteResult: the final mask (bool H x W, all False for no object), the majority's object count k, the
        clusters of matching masks across samples and which were selected, and the vote counts.
    """
    cands = collect_candidates(samples)
    out_shape = tuple(np.shape(cands.masks[0])) if cands.masks else tuple(shape or (0, 0))
    engine = _build_engine(cands.masks, backend) if cands.masks else None
    return _decide(cands, engine, config, out_shape)


def sweep(samples: Sequence, configs: Iterable[VoteConfig] | None = None, *, shape: tuple[int, int] | None = None,
          reduce: Callable[[VoteResult], object] | None = None, backend: str = "auto") -> list[tuple[VoteConfig, object]]:
    """Re-run the vote for many configurations on the same candidates, computing IoUs once.

    configs: defaults to StAR's full grid. reduce: maps each VoteResult to what you keep (e.g. its
    intersection and union with the ground truth), so 216 full-size masks need not be held at once.
    """
    configs = list(configs) if configs is not None else grid_configs()
    cands = collect_candidates(samples)
    out_shape = tuple(np.shape(cands.masks[0])) if cands.masks else tuple(shape or (0, 0))
    engine = _build_engine(cands.masks, backend) if cands.masks else None
    iou = None
    if engine is not None:
        inter = engine.intersection_matrix()
        iou = iou_from_counts(inter, engine.areas[:, None], engine.areas[None, :])
    reduce = reduce or (lambda r: r)
    return [(cfg, reduce(_decide(cands, engine, cfg, out_shape, (lambda i, reps: iou[i, reps]) if iou is not None else None))) for cfg in configs]


def grid_configs(grid: dict | None = None) -> list[VoteConfig]:
    """Every combination of a sweep grid (StAR's by default)."""
    grid = grid or STAR_SWEEP_GRID
    keys = list(grid)
    return [VoteConfig(**dict(zip(keys, values))) for values in itertools.product(*(grid[k] for k in keys))]


__all__ = ["VoteConfig", "VoteResult", "Cluster", "Member", "majority_vote", "pairwise_iou", "sweep", "grid_configs",
           "STAR_SWEEP_GRID", "iou_from_counts", "most_common_positive_count", "consensus_weights", "pack_mask", "CpuBitEngine"]

"""Tracks and the decisions made about them frame by frame: when a track is lost (its object score stays low,
or its mask jumps), and which of the policy's new objects continue which track when it is asked again.

A track's mask on a frame comes from the segmenter's memory of the earlier frames; nothing here knows how.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LOW_SCORE = 0.0        # SAM 2's object score logit: below 0 it says the object is not in the frame
LOW_SCORE_FRAMES = 3   # lost after this many frames in a row below LOW_SCORE
JUMP_AREA = 4.0        # a mask growing or shrinking by more than this factor from one frame to the next...
JUMP_IOU = 0.1         # ...or overlapping the last one less than this (both non-empty): a jump
MATCH_IOU = 0.3        # a new object's box continues the track whose last mask's box it overlaps this much


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return 0.0 if union == 0 else int(np.count_nonzero(a & b)) / union


@dataclass
class LossRule:
    """When a track counts as lost: its object score below `low_score` for `low_frames` frames in a row, or
    its mask jumping (area ratio over `jump_area`, or IoU with the last frame's under `jump_iou`)."""
    low_score: float = LOW_SCORE
    low_frames: int = LOW_SCORE_FRAMES
    jump_area: float = JUMP_AREA
    jump_iou: float = JUMP_IOU

    def jumped(self, last: np.ndarray | None, mask: np.ndarray) -> bool:
        if last is None:
            return False
        a, b = int(np.count_nonzero(last)), int(np.count_nonzero(mask))
        if a == 0 or b == 0:
            return False  # leaving or entering the frame is the score's business, not a jump
        return max(a, b) / min(a, b) > self.jump_area or mask_iou(last, mask) < self.jump_iou


@dataclass
class Track:
    """One object followed through the clip: its id (1..255, the label value in the per-frame PNGs), the
    label the policy gave it, and how its last frames went."""
    id: int
    label: str | None = None
    last_mask: np.ndarray | None = field(default=None, repr=False)
    low_run: int = 0          # frames in a row with a low object score
    lost: bool = False
    lost_at: int | None = None
    reason: str | None = None

    def update(self, frame: int, mask: np.ndarray, score: float, rule: LossRule) -> bool:
        """Record this frame's mask and object score; True when the track has just been lost here."""
        if self.lost:
            return False
        jumped = rule.jumped(self.last_mask, mask)
        self.low_run = self.low_run + 1 if score < rule.low_score else 0
        if mask.any():
            self.last_mask = mask
        if jumped or self.low_run >= rule.low_frames:
            self.lost, self.lost_at = True, frame
            self.reason = "mask jumped" if jumped else f"object score under {rule.low_score} for {self.low_run} frames"
            return True
        return False

    def resume(self) -> None:
        """Follow it again from a new prompt (the tracker's next mask becomes its reference)."""
        self.lost, self.low_run, self.reason, self.last_mask = False, 0, None, None


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of a mask's pixels, inclusive; None when empty."""
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def box_iou(a, b) -> float:
    """IoU of two inclusive pixel boxes (x1, y1, x2, y2)."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def match_objects(tracks: list[Track], boxes: list, min_iou: float = MATCH_IOU) -> list[int | None]:
    """For each new object's box (the policy's answer, x1, y1, x2, y2), the id of the track it continues: the
    track whose last mask's box it overlaps at least `min_iou`, each track taken once, best overlaps first;
    None for a new object. Boxes, not masks: the answer's box is the policy's own, while a mask would be
    another segmenter's reading of it."""
    last = [(ti, mask_box(t.last_mask)) for ti, t in enumerate(tracks) if t.last_mask is not None]
    pairs = sorted(((box_iou(tb, b), ti, bi) for ti, tb in last if tb is not None
                    for bi, b in enumerate(boxes) if b is not None), reverse=True)
    taken_tracks, out = set(), [None] * len(boxes)
    for iou, ti, bi in pairs:
        if iou < min_iou:
            break
        if ti in taken_tracks or out[bi] is not None:
            continue
        taken_tracks.add(ti)
        out[bi] = tracks[ti].id
    return out

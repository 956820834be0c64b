"""What a video tracker is measured against: followers with the interface of `VideoMemoryTracker` (prompt a
track on a frame; propagate back or forth) that use no memory at all.

- `StillFollower`: the key frame's mask on every frame (nothing moves);
- `BoxFollower`: SAM on every frame, prompted with the key frame's answer (box and point) where it was.

Their object score is always positive, so only a mask jump (`tracks.LossRule`: a box follower's mask
changing 4x in area, or leaving its last place) makes `track()` ask again with them.
The third baseline, the policy asked on every frame, is `every_frame()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..frames import FrameSource


class _Follower:
    def __init__(self, segmenter, source: FrameSource):
        self.segmenter, self.source = segmenter, source
        self.prompts: dict[int, tuple] = {}   # track -> (box, point)
        self.key_masks: dict[int, np.ndarray] = {}

    def _segment(self, rgb: np.ndarray, prompts: dict[int, tuple]) -> dict[int, np.ndarray]:
        if not prompts:
            return {}
        ids = sorted(prompts)
        boxes = [prompts[t][0] for t in ids]
        points = [prompts[t][1] for t in ids]
        out = self.segmenter.segment(self.segmenter.embed(rgb),
                                     boxes=None if any(b is None for b in boxes) else np.asarray(boxes, np.float32),
                                     points=None if any(p is None for p in points) else np.asarray(points, np.float32))
        return {t: out.masks[i] for i, t in enumerate(ids)}

    def prompt(self, frame: int, track: int, box=None, point=None) -> np.ndarray:
        self.prompts[track] = (box, point)
        mask = self._segment(self.source.frame(frame).rgb, {track: (box, point)})[track]
        self.key_masks[track] = mask
        return mask

    def _frame_masks(self, frame: int) -> dict[int, np.ndarray]:
        raise NotImplementedError

    def propagate(self, start: int, *, reverse: bool = False,
                  max_frames: int | None = None) -> Iterator[tuple[int, dict[int, tuple[np.ndarray, float]]]]:
        order = range(start, -1, -1) if reverse else range(start, len(self.source))
        for i, frame in enumerate(order):
            if max_frames is not None and i > max_frames:
                return
            yield frame, {t: (m, 1.0) for t, m in self._frame_masks(frame).items()}


class StillFollower(_Follower):
    """The key frame's mask on every frame."""

    def _frame_masks(self, frame: int) -> dict[int, np.ndarray]:
        return dict(self.key_masks)


class BoxFollower(_Follower):
    """SAM on every frame from the key frame's box and point, where they were."""

    def _frame_masks(self, frame: int) -> dict[int, np.ndarray]:
        return self._segment(self.source.frame(frame).rgb, self.prompts)


def every_frame(reasoner, source: FrameSource, query: str, n: int, sampling) -> Iterator[tuple[int, np.ndarray, float]]:
    """The policy asked on every frame: (position, its final mask, milliseconds) per frame."""
    import time

    for position in range(len(source)):
        t0 = time.perf_counter()
        result = reasoner.run(source.frame(position).rgb, query, n, sampling=sampling)
        yield position, np.asarray(result.mask, bool), (time.perf_counter() - t0) * 1e3

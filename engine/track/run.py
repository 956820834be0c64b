"""Reason once, follow it through a video: the policy answers on a key frame exactly as `star segment` does
(N samples and the vote), each object of its answer becomes a track prompted with the answer's box and
point, and SAM 2's memory follows every track back to the clip's start and on to its end. When a track is
lost (`tracks.LossRule`), the policy is asked again on that frame: each new object that overlaps a track's
last mask resumes it, the others start new tracks. A track still lost is asked for again later (an object
that left the frame may come back), the wait doubling after each ask that found nothing. Every ask is kept
with its frame, reasoning and answers.

`track()` yields one `FrameResult` per frame as it is made: the frames before the key frame first (going
back), then the key frame and those after it; a frame where the policy was asked again comes twice, the
second time with the new answer's tracks (a writer keeps the last).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..frames import FrameSource
from .tracks import LossRule, Track, match_objects

MIN_FRAMES_BETWEEN_ASKS = 5  # a track lost soon after an ask waits this long: the policy is the costly part
# While a track stays lost it is asked for again every MIN_FRAMES_BETWEEN_ASKS x 2^k frames, k the asks in a
# row that neither found a lost track again nor started one: an object gone for good costs a few asks, not
# one every five frames.


@dataclass
class FrameResult:
    """One frame's masks (track id -> bool H x W at the frame's size) and object scores."""
    position: int                 # 0-based, among the frames the source gives
    index: int                    # the frame's index in the clip (stride applied)
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    lost: list[int] = field(default_factory=list)   # tracks lost on this frame


@dataclass
class Ask:
    """One time the policy was asked: on which frame, why, what it reasoned and answered, and what became of
    its objects (the track each continued or started)."""
    position: int
    reason: str                   # "key frame" or why a track was lost
    reasoning: str
    answers: list[dict]           # per object: label, box, point, score, track
    new_tracks: list[int]
    resumed_tracks: list[int]
    no_object: bool
    ms: float


class TrackRun:
    """State of one `track()` run: its tracks and asks, readable while it goes (for progress and output)."""

    def __init__(self):
        self.tracks: dict[int, Track] = {}
        self.asks: list[Ask] = []


@dataclass
class Resume:
    """Where a stopped run goes on: the last frame it finished going forward, each live track's mask there,
    and the frame of its last ask. The run's tracks and asks are restored in the `TrackRun` passed along."""
    position: int
    masks: dict[int, np.ndarray]
    last_ask: int


def _ask(reasoner, rgb: np.ndarray, query: str, n: int, sampling) -> tuple[object, list]:
    from ..annotations import answer_objects

    result = reasoner.run(rgb, query, n, sampling=sampling)
    return result, answer_objects(result)


def _answer_rows(objects, ids) -> list[dict]:
    return [{"label": o.label, "box": list(o.box) if o.box else None, "point": list(o.point) if o.point else None,
             "score": o.score, "track": tid} for o, tid in zip(objects, ids)]


def _prompt(tracker, position: int, track_id: int, obj) -> np.ndarray:
    return tracker.prompt(position, track_id, box=obj.box, point=obj.point)


def track(reasoner, source: FrameSource, query: str, tracker, *, key: int = 0, n: int = 1, sampling=None,
          rule: LossRule = LossRule(), reask: bool = True, run: TrackRun | None = None,
          resume: Resume | None = None) -> Iterator[FrameResult]:
    """Follow the answer to `query` on frame `key` of `source` through the clip (see the module's docstring).
    `tracker`: a `VideoMemoryTracker` on the same source. `run` collects the tracks and asks as it goes.
    `resume`: go on from a stopped run's last forward frame instead (its tracks re-seeded with their masks
    there; `run` holds its tracks and asks)."""
    import time

    run = run if run is not None else TrackRun()
    if not 0 <= key < len(source):
        raise ValueError(f"--key-frame {key}: the clip has {len(source)} frames")
    if resume is not None:
        yield from _resumed(reasoner, source, query, tracker, n, sampling, rule, reask, run, resume)
        return
    t0 = time.perf_counter()
    result, objects = _ask(reasoner, source.frame(key).rgb, query, n, sampling)
    ids = list(range(1, len(objects) + 1))
    for tid, obj in zip(ids, objects):
        # no last mask yet: the reference is the tracker's own mask on the key frame, not the image
        # segmenter's (the same SAM, another runtime: its mask may differ by a few pixels)
        run.tracks[tid] = Track(tid, obj.label)
        _prompt(tracker, key, tid, obj)
    run.asks.append(Ask(key, "key frame", result.samples[0].shown_reasoning if result.samples else "",
                        _answer_rows(objects, ids), ids, [], result.no_object, (time.perf_counter() - t0) * 1e3))
    if not objects:  # nothing to follow: every frame is empty
        for position in range(len(source)):
            yield FrameResult(position, position * source.stride, {}, {})
        return
    if key > 0:
        for position, outputs in tracker.propagate(key, reverse=True):
            if position == key:
                continue
            yield FrameResult(position, position * source.stride, {t: m for t, (m, _) in outputs.items()},
                              {t: s for t, (_, s) in outputs.items()})
    yield from _forward(reasoner, source, query, tracker, n, sampling, rule, reask, run, key, key)


def _resumed(reasoner, source, query, tracker, n, sampling, rule, reask, run, resume: Resume):
    live = {t: m for t, m in resume.masks.items() if m.any() and t in run.tracks and not run.tracks[t].lost}
    for tid, mask in live.items():
        tracker.prompt_mask(resume.position, tid, mask)
        run.tracks[tid].low_run, run.tracks[tid].last_mask = 0, mask
    if not live:  # nothing left to follow: the frames after stay empty, as the stopped run would have left them
        for position in range(resume.position, len(source)):
            yield FrameResult(position, position * source.stride, {}, {})
        return
    yield from _forward(reasoner, source, query, tracker, n, sampling, rule, reask, run, resume.position,
                        resume.last_ask)


def _forward(reasoner, source, query, tracker, n, sampling, rule, reask, run, start: int, last_ask: int):
    """From frame `start` to the clip's end, asking again where a track is lost (and later while it stays lost)."""
    import time

    fruitless = 0  # asks in a row that neither found a lost track again nor started one
    while start < len(source):
        restart = None
        for position, outputs in tracker.propagate(start):
            masks, scores, lost = {}, {}, []
            for tid, (mask, score) in outputs.items():
                track_ = run.tracks[tid]
                if track_.lost:
                    masks[tid], scores[tid] = np.zeros_like(mask), score  # a lost track shows nothing
                    continue
                if track_.update(position, mask, score, rule):
                    lost.append(tid)
                    masks[tid] = np.zeros_like(mask)
                else:
                    masks[tid] = mask
                scores[tid] = score
            yield FrameResult(position, position * source.stride, masks, scores, lost)
            wait = MIN_FRAMES_BETWEEN_ASKS * 2 ** fruitless
            if reask and position > start and position - last_ask >= wait and position + 1 < len(source) \
                    and any(t.lost for t in run.tracks.values()):
                restart = position
                break
        if restart is None:
            return
        last_ask = restart
        reasons = "; ".join(f"track {t.id}: {t.reason}" + ("" if t.lost_at == restart else f" (frame {t.lost_at})")
                            for t in run.tracks.values() if t.lost)
        t0 = time.perf_counter()
        result, objects = _ask(reasoner, source.frame(restart).rgb, query, n, sampling)
        candidates = list(run.tracks.values())
        was_lost = {t.id for t in candidates if t.lost}
        matched = match_objects(candidates, [o.box for o in objects])
        new, resumed, ids = [], [], []
        for obj, tid in zip(objects, matched):
            if tid is None:
                tid = max(run.tracks) + 1
                if tid > 255:
                    continue  # an indexed PNG holds 255 tracks
                run.tracks[tid] = Track(tid, obj.label)
                new.append(tid)
            else:
                run.tracks[tid].resume()
                resumed.append(tid)
            ids.append(tid)
            _prompt(tracker, restart, tid, obj)
        fruitless = 0 if new or was_lost & set(resumed) else fruitless + 1
        run.asks.append(Ask(restart, reasons, result.samples[0].shown_reasoning if result.samples else "",
                            _answer_rows(objects, ids), new, resumed, result.no_object,
                            (time.perf_counter() - t0) * 1e3))
        start = restart  # that frame again, with the new prompts: its result replaces the one given before

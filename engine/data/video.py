"""Reasoning and referring video segmentation benchmarks in their published layout: ReVOS (VISA, ECCV 2024)
and MeViS, which share it.

    ROOT/JPEGImages/<video>/<frame>.jpg
    ROOT/mask_dict.json                  {anno_id: [COCO RLE or null, one per frame of its video]}
    ROOT/meta_expressions*.json          {"videos": {<video>: {"frames": [<frame>, ...],
                                            "expressions": {<exp_id>: {"exp": text, "anno_id": [...],
                                                                       "obj_id": [...], "type_id": 0|1|2}}}}}

An expression's target on a frame is the union of its annotations' masks there (none: an empty mask).
ReVOS's `type_id` says what kind of expression it is: 0 referring, 1 reasoning, 2 one with no target in
the video; MeViS has none (every expression refers). ReVOS's published evaluation (VISA's `eval_revos.py`)
reports referring and reasoning apart and their mean as "overall"; the no-target expressions are in
neither.

`open_video_dataset("revos", ROOT)` reads `meta_expressions_valid_.json` (`split="train"`:
`meta_expressions_train_.json`), `open_video_dataset("mevis", ROOT)` reads `meta_expressions.json`; a
path to the JSON itself is taken as it is. Frames and masks are read when asked for, one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError

EXPRESSION_TYPES = {0: "referring", 1: "reasoning", 2: "no-target"}
META_FILES = {("revos", "valid"): "meta_expressions_valid_.json", ("revos", "train"): "meta_expressions_train_.json",
              ("mevis", "valid"): "meta_expressions.json", ("mevis", "train"): "meta_expressions.json"}
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class VideoExpression:
    """One (video, expression) of a benchmark: the query, its kind, the video's frames in order, and the
    target mask per frame (read on demand)."""
    id: str                       # "<video>/<exp_id>"
    video: str
    query: str
    kind: str                     # "referring", "reasoning" or "no-target"
    frames: tuple[Path, ...]
    annotations: tuple[str, ...]  # anno_ids into the mask dict
    _masks: dict = field(repr=False, compare=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def _rles(self, index: int) -> list:
        rles = []
        for anno in self.annotations:
            per_frame = self._masks.get(anno)
            if per_frame is None:
                raise DatasetError(f"{self.id}: annotation {anno} is not in mask_dict.json")
            if index >= len(per_frame):
                raise DatasetError(f"{self.id}: annotation {anno} has {len(per_frame)} frames, not {len(self)}")
            if per_frame[index]:
                rles.append(per_frame[index])
        return rles

    def load_object_masks(self, index: int) -> list[np.ndarray]:
        """The target's objects seen on frame `index`, one bool H x W mask each (annotations absent there left
        out)."""
        from ..rle import decode

        return [m for m in (np.asarray(decode(r), bool) for r in self._rles(index)) if m.any()]

    def load_mask(self, index: int) -> np.ndarray:
        """The target on frame `index`: bool H x W, the union of the expression's annotations there."""
        from ..images import load_image
        from ..rle import union

        rles = self._rles(index)
        if rles:
            return union(rles)
        h, w = load_image(self.frames[index]).shape[:2]
        return np.zeros((h, w), bool)


class VideoDataset:
    """The (video, expression) pairs of one benchmark file, in the file's order."""

    def __init__(self, kind: str, path: str | Path, *, split: str = "valid"):
        kind = kind.lower()
        if (kind, split) not in META_FILES:
            raise ValueError(f"video dataset kind {kind!r} with split {split!r}: choose revos or mevis, "
                             "valid or train")
        path = Path(path)
        meta = path if path.is_file() else path / META_FILES[(kind, split)]
        root = meta.parent
        for needed in (meta, root / "mask_dict.json", root / "JPEGImages"):
            if not needed.exists():
                raise DatasetError(f"{path}: no {needed.name} (a {kind} folder holds JPEGImages/, mask_dict.json "
                                   f"and {META_FILES[(kind, split)]})")
        self.kind, self.root = kind, root
        try:
            videos = json.loads(meta.read_text())["videos"]
            self._masks = json.loads((root / "mask_dict.json").read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{meta}: not a {kind} expressions file ({exc})") from None
        self.items = [item for name, video in videos.items() for item in self._expressions(name, video)]

    def _expressions(self, name: str, video: dict) -> Iterator[VideoExpression]:
        folder = self.root / "JPEGImages" / name
        frames = tuple(_frame_path(folder, frame) for frame in video.get("frames", []))
        for exp_id, expression in video.get("expressions", {}).items():
            kind = EXPRESSION_TYPES.get(expression.get("type_id", 0), "referring")
            annotations = tuple(str(a) for a in expression.get("anno_id", []))
            yield VideoExpression(f"{name}/{exp_id}", name, str(expression.get("exp", "")).strip(), kind, frames,
                                  annotations, self._masks)

    def __iter__(self) -> Iterator[VideoExpression]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _frame_path(folder: Path, frame: str) -> Path:
    """A frame's image: `<frame>.jpg` as the benchmarks store them, else another image suffix."""
    for suffix in FRAME_SUFFIXES:
        candidate = folder / f"{frame}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{frame}.jpg"


def open_video_dataset(kind: str, path: str | Path, **options) -> VideoDataset:
    """The (video, expression) pairs of a `revos` or `mevis` folder (or expressions file)."""
    return VideoDataset(kind, path, **options)

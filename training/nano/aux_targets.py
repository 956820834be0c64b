"""Training-only dense targets for the nano policy's image tokens: what each 28x28 cell of the frame
contains and where it is. They exist because a tiny VLM trained on answers alone learns to ignore
the image (docs/nano.md, "The real-vs-blank diagnostic"): asking every image token to say "a red circle covers me, its box is
here" and "I am row 3, column 5" makes the vision path carry the facts the answer must copy.
The heads that read them are dropped at export; the exported model is plain Qwen2.5-VL."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shapes import COLOURS, KINDS
from .world import Scene

KIND_IDS = {k: i for i, k in enumerate(KINDS)}
COLOUR_IDS = {c: i for i, c in enumerate(COLOURS)}
CELL = 28  # frame pixels per image token (14-pixel patches, 2x2 merge)
MIN_COVER = 0.2  # a cell "contains" its dominant object when it covers this much of the cell


@dataclass
class CellTargets:
    """Per image token, raster order (rows of the frame first)."""

    objectness: np.ndarray  # float32 [T]
    kind: np.ndarray  # int64 [T], -100 where empty
    colour: np.ndarray  # int64 [T], -100 where empty
    ltrb: np.ndarray  # float32 [T, 4]: cell centre to box edges, / frame size
    box: np.ndarray  # float32 [T, 4]: absolute x1 y1 x2 y2 / frame size
    row: np.ndarray  # int64 [T]
    col: np.ndarray  # int64 [T]


def object_cells(mask: np.ndarray, frame_size: int) -> np.ndarray:
    """The image tokens (raster indices) an object occupies: cells it covers >= MIN_COVER, else its
    best-covered cell (a small object still has somewhere to be pointed at)."""
    h, w = mask.shape
    grid = frame_size // CELL
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(mask.astype(np.float32), ys[:-1], axis=0), xs[:-1], axis=1)
    cover = (sums / np.outer(np.diff(ys), np.diff(xs))).reshape(-1)
    cells = np.nonzero(cover >= MIN_COVER)[0]
    return cells if len(cells) else np.array([int(cover.argmax())])


def cell_targets(scene: Scene, frame_size: int) -> CellTargets:
    h, w = scene.image.shape[:2]
    grid = frame_size // CELL
    t = grid * grid
    sx, sy = frame_size / w, frame_size / h
    cover = np.zeros((len(scene.objects), grid, grid), dtype=np.float32)
    boxes = np.zeros((len(scene.objects), 4), dtype=np.float32)
    # Cell edges in original pixels; coverage = mean of the object's mask over the cell.
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    for k, obj in enumerate(scene.objects):
        m = obj.mask.astype(np.float32)
        sums = np.add.reduceat(np.add.reduceat(m, ys[:-1], axis=0), xs[:-1], axis=1)
        cover[k] = sums / np.outer(np.diff(ys), np.diff(xs))
        rows, cols = np.nonzero(obj.mask)
        boxes[k] = (cols.min() * sx, rows.min() * sy, (cols.max() + 1) * sx, (rows.max() + 1) * sy)
    row, col = np.divmod(np.arange(t), grid)
    objectness = np.zeros(t, np.float32)
    kind = np.full(t, -100, np.int64)
    colour = np.full(t, -100, np.int64)
    ltrb = np.zeros((t, 4), np.float32)
    box = np.zeros((t, 4), np.float32)
    if len(scene.objects):
        flat = cover.reshape(len(scene.objects), t)
        dominant = flat.argmax(0)
        present = flat.max(0) >= MIN_COVER
        centre_x, centre_y = (col + 0.5) * CELL, (row + 0.5) * CELL
        for i in np.nonzero(present)[0]:
            obj = scene.objects[dominant[i]]
            b = boxes[dominant[i]]
            objectness[i] = 1.0
            kind[i], colour[i] = KIND_IDS[obj.kind], COLOUR_IDS[obj.colour]
            ltrb[i] = (centre_x[i] - b[0], centre_y[i] - b[1], b[2] - centre_x[i], b[3] - centre_y[i])
            box[i] = b
    return CellTargets(objectness, kind, colour, ltrb / frame_size, box / frame_size, row.astype(np.int64),
                       col.astype(np.int64))


@dataclass
class LabelMention:
    """Where a completion names a scene object: characters [start, end) of the completion, and which object."""

    start: int
    end: int
    object_index: int  # index into scene.objects


ANSWER_LABEL = '"label": "'
DESCRIBE = "I see "  # the trace's last step lists the targets in answer order (queries._describe)


def label_mentions(completion: str, scene: Scene, target_ids: list[int], listed_ids: list[int] = (),
                   listing_prefixes: tuple[str, ...] = ()) -> list[LabelMention]:
    """Every place the completion names an object it means: the answer's k-th label is target k; in the
    trace, a label unique in the scene is that object, in the final "I see ..." step the n-th mention of
    a repeated label is the n-th target with that label, and inside a step that starts with one of
    `listing_prefixes` (a listed trace's object list) the n-th mention is the n-th of `listed_ids` with it.
    Mentions that cannot be pinned to one object (a repeated label elsewhere) are left out rather than guessed."""
    index_of = {o.id: i for i, o in enumerate(scene.objects)}
    counts: dict[str, int] = {}
    for o in scene.objects:
        counts[o.label] = counts.get(o.label, 0) + 1
    answer_at = completion.find("<answer>")
    trace = completion if answer_at < 0 else completion[:answer_at]
    describe_at = trace.rfind(DESCRIBE)
    mentions: list[LabelMention] = []
    for o in scene.objects:  # the trace
        spans = _occurrences(trace, o.label)
        if counts[o.label] == 1:
            mentions += [LabelMention(s, s + len(o.label), index_of[o.id]) for s in spans]
    lists = _step_spans(trace, listing_prefixes)
    for label in {o.label for o in scene.objects if counts[o.label] > 1}:
        same = [index_of[t] for t in target_ids if scene.objects[index_of[t]].label == label]
        late = [s for s in _occurrences(trace, label) if describe_at >= 0 and s > describe_at]
        mentions += [LabelMention(s, s + len(label), k) for s, k in zip(late, same)]
        listed = [index_of[t] for t in listed_ids if scene.objects[index_of[t]].label == label]
        everywhere = _occurrences(trace, label) if lists else []
        for a, b in lists:
            inside = [s for s in everywhere if a <= s < b]
            mentions += [LabelMention(s, s + len(label), k) for s, k in zip(inside, listed)]
    if answer_at >= 0:  # the answer
        field = answer_at
        for t in target_ids:
            field = completion.find(ANSWER_LABEL, field)
            if field < 0:
                break
            field += len(ANSWER_LABEL)
            label = scene.objects[index_of[t]].label
            if completion.startswith(label, field):
                mentions.append(LabelMention(field, field + len(label), index_of[t]))
    return sorted(mentions, key=lambda m: m.start)


def _step_spans(trace: str, prefixes: tuple[str, ...]) -> list[tuple[int, int]]:
    """[start, end) of every step (up to the next ". ") that begins with one of `prefixes`."""
    spans = []
    for prefix in prefixes:
        at = trace.find(prefix)
        while at >= 0:
            end = trace.find(". ", at)
            spans.append((at, len(trace) if end < 0 else end))
            at = trace.find(prefix, at + 1)
    return spans


def _occurrences(text: str, word: str) -> list[int]:
    """Starts of `word` in `text` as whole words ("red ball" is not inside "red balls")."""
    out, at = [], text.find(word)
    while at >= 0:
        before = text[at - 1] if at else " "
        after = text[at + len(word)] if at + len(word) < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            out.append(at)
        at = text.find(word, at + 1)
    return out

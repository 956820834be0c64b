"""An image's annotation as an annotator edits it: a list of labelled objects, each a full-resolution mask
with the SAM prompt that made it (when one did), an undo / redo history, and its two file forms: the app's
autosave (RLE masks and prompts, exact) and labelme JSON beside the image (polygons, what labelme and
X-AnyLabeling open; the same shapes `star label` writes). No Qt here: the window drives it.

Objects are immutable and the history keeps whole object lists, so an undo step costs a list of references,
not copies of masks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.annotations import (
    DEFAULT_LABEL,
    labelme_document,
    make_shape,
    mask_polygons,
    read_labelme_document,
    shape_pixels,
)
from engine.rle import decode, encode

from .shapes import shift_mask, traced_shapes, translate

HISTORY_LIMIT = 100  # undo steps kept per image


@dataclass(frozen=True)
class Prompt:
    """What SAM was asked for an object: clicks (x, y, 1 adds / 0 removes) and an optional box, original pixels."""
    clicks: tuple[tuple[float, float, int], ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def empty(self) -> bool:
        return not self.clicks and self.box is None

    def with_click(self, x: float, y: float, positive: bool) -> Prompt:
        return replace(self, clicks=self.clicks + ((float(x), float(y), int(positive)),))

    def with_box(self, box) -> Prompt:
        x1, y1, x2, y2 = (float(v) for v in box)
        return replace(self, box=(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))

    def as_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(clicks [P, 2], labels [P], box [4]) as Segmenter.refine takes them."""
        pts = np.array([c[:2] for c in self.clicks], np.float64) if self.clicks else None
        labels = np.array([c[2] for c in self.clicks], np.int32) if self.clicks else None
        box = None if self.box is None else np.array(self.box, np.float64)
        return pts, labels, box

    def to_json(self) -> dict:
        return {"clicks": [list(c) for c in self.clicks], "box": None if self.box is None else list(self.box)}

    @classmethod
    def from_json(cls, data: dict | None) -> Prompt:
        if not data:
            return cls()
        clicks = tuple((float(x), float(y), int(k)) for x, y, k in data.get("clicks") or ())
        box = data.get("box")
        return cls(clicks, None if box is None else tuple(float(v) for v in box))


@dataclass(frozen=True)
class AnnotatedObject:
    label: str
    mask: np.ndarray = field(compare=False)  # bool [H, W]
    prompt: Prompt = Prompt()
    query: str | None = None  # the query whose result made it (None: drawn by hand or loaded from a file)
    score: float | None = None
    # The labelme shapes that describe this object, each with its place in the file (None: drawn or traced
    # here, written after the file's own): written back as they are (type, points, description, flags,
    # group_id, every key this app does not know); a rename changes only their label, a hand edit only the
    # points it moved. Empty for objects SAM made, and once SAM has reshaped the mask.
    shapes: tuple = field(default=(), compare=False)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def edited(self, **changes) -> AnnotatedObject:
        """This object with `changes`; a new mask drops the file's shapes (they no longer describe it)."""
        if "mask" in changes:
            changes.setdefault("shapes", ())
        return replace(self, **changes)

    def editable_shapes(self) -> list[dict]:
        """The shapes a hand edit works on: the object's own, else polygons traced from its mask."""
        if self.shapes:
            return [shape for _, shape in self.shapes]
        return traced_shapes(self.mask, self.label, description=self.query or "")

    def with_shapes(self, shapes: list[dict], size: tuple[int, int]) -> AnnotatedObject:
        """This object outlined by `shapes`, the edited forms of editable_shapes() in the same order: its
        mask becomes what they cover, a file's shapes keep their places, and the SAM prompt (which no longer
        describes the outline) is dropped."""
        places = [i for i, _ in self.shapes] if self.shapes else [None] * len(shapes)
        w, h = size
        return replace(self, mask=shapes_mask(shapes, h, w), shapes=tuple(zip(places, shapes)), prompt=Prompt())

    def moved(self, dx: float, dy: float, size: tuple[int, int]) -> AnnotatedObject:
        """The whole object moved by (dx, dy) pixels, its SAM prompt with it. An object with shapes moves
        them (points stay floats); a mask alone moves by whole pixels, so it stays exactly itself."""
        if not self.shapes:
            dx, dy = round(dx), round(dy)
        box = self.prompt.box
        prompt = Prompt(tuple((x + dx, y + dy, k) for x, y, k in self.prompt.clicks),
                        None if box is None else (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy))
        if not self.shapes:
            return replace(self, mask=shift_mask(self.mask, dx, dy), prompt=prompt)
        shapes = [translate(shape, dx, dy) for _, shape in self.shapes]
        w, h = size
        return replace(self, mask=shapes_mask(shapes, h, w), prompt=prompt,
                       shapes=tuple((i, shape) for (i, _), shape in zip(self.shapes, shapes)))


class Annotation:
    """The objects of one image of `size` (width, height), with undo / redo."""

    def __init__(self, size: tuple[int, int], objects: list[AnnotatedObject] | None = None, *,
                 document: dict | None = None, other_shapes: tuple = ()):
        """document: the labelme file's top-level fields other than its shapes (version, flags, imagePath,
        imageData, any key of another tool), written back as they were; other_shapes: (place, shape) of the
        file's shapes that are no object here (points, lines, anything unreadable), written back untouched."""
        self.size = (int(size[0]), int(size[1]))
        self.objects: list[AnnotatedObject] = list(objects or [])
        self.document = dict(document) if document is not None else None
        self.other_shapes = tuple(other_shapes)
        self.selected: int | None = 0 if self.objects else None
        self._undo: list[tuple[list[AnnotatedObject], int | None]] = []
        self._redo: list[tuple[list[AnnotatedObject], int | None]] = []

    # ---- history ------------------------------------------------------------------------------------
    def _apply(self, objects: list[AnnotatedObject], selected: int | None) -> None:
        self._undo.append((self.objects, self.selected))
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        self.objects, self.selected = objects, selected

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        return self._step(self._undo, self._redo)

    def redo(self) -> bool:
        return self._step(self._redo, self._undo)

    def _step(self, source: list, target: list) -> bool:
        """Move one state from `source` to the present, the present onto `target` (False: nothing to move)."""
        if not source:
            return False
        target.append((self.objects, self.selected))
        self.objects, self.selected = source.pop()
        return True

    # ---- edits (each one undo step) -------------------------------------------------------------------
    def add_result(self, objects: list[AnnotatedObject], query: str) -> None:
        """A finished query's objects, replacing those an earlier run of the same query made (asking again
        does not pile up copies); objects from other queries and hand edits stay."""
        kept = [o for o in self.objects if o.query != query or o.query is None]
        self._apply(kept + list(objects), len(kept) if objects else (self.selected if kept else None))

    def add_object(self, obj: AnnotatedObject) -> int:
        """A new object, made whole (the app never lists an empty one); it becomes the selected one."""
        self._apply(self.objects + [obj], len(self.objects))
        return self.selected

    def set_object(self, index: int, obj: AnnotatedObject) -> None:
        objects = list(self.objects)
        objects[index] = obj
        self._apply(objects, index)

    def rename(self, index: int, label: str) -> None:
        label = " ".join(label.split()) or DEFAULT_LABEL
        if self.objects[index].label != label:
            self.set_object(index, replace(self.objects[index], label=label))

    def remove(self, index: int) -> None:
        objects = self.objects[:index] + self.objects[index + 1:]
        self._apply(objects, min(index, len(objects) - 1) if objects else None)

    def select(self, index: int | None) -> None:
        """Selection is not an edit: no undo step."""
        self.selected = index if index is not None and 0 <= index < len(self.objects) else None

    # ---- views ----------------------------------------------------------------------------------------
    @property
    def current(self) -> AnnotatedObject | None:
        return None if self.selected is None else self.objects[self.selected]

    def union(self) -> np.ndarray:
        w, h = self.size
        out = np.zeros((h, w), bool)
        for o in self.objects:
            out |= o.mask
        return out

    def labels(self) -> list[tuple[str, int]]:
        """The label list: each label used, with how many objects carry it, in first-use order."""
        counts: dict[str, int] = {}
        for o in self.objects:
            counts[o.label] = counts.get(o.label, 0) + 1
        return list(counts.items())

    def final_objects(self) -> list[tuple[str, np.ndarray]]:
        """(label, mask) of every object with pixels: what the exports write."""
        return [(o.label, o.mask) for o in self.objects if o.mask.any()]

    # ---- files ----------------------------------------------------------------------------------------
    def to_autosave(self) -> dict:
        return {"size": list(self.size),
                "objects": [{"label": o.label, "mask": encode(o.mask), "prompt": o.prompt.to_json(), "query": o.query,
                             "score": o.score, "shapes": [list(entry) for entry in o.shapes]} for o in self.objects],
                "document": self.document, "other_shapes": [list(entry) for entry in self.other_shapes]}

    @classmethod
    def from_autosave(cls, data: dict) -> Annotation:
        objects = [AnnotatedObject(str(o["label"]), decode(o["mask"]), Prompt.from_json(o.get("prompt")), o.get("query"),
                                   o.get("score"), tuple((_place(i), s) for i, s in o.get("shapes") or ()))
                   for o in data["objects"]]
        return cls(tuple(data["size"]), objects, document=data.get("document"),
                   other_shapes=tuple((int(i), s) for i, s in data.get("other_shapes") or ()))

    def to_labelme(self, image_name: str, description: str = "") -> dict:
        """labelme JSON. Objects read from a labelme file and not reshaped give back their own shapes (a
        rename changes only the label); every other object becomes one polygon per connected part (holes kept
        by zero-width cuts, as `star label` writes them), its parts sharing a group_id the file does not use
        yet. Shapes keep their order in the file, new ones follow; the file's own fields stay as they were
        (its version too: the shapes written here need nothing newer)."""
        placed: list[tuple[tuple[int, int], dict]] = [((0, i), shape) for i, shape in self.other_shapes]
        used = {s.get("group_id") for o in self.objects for _, s in o.shapes} | \
            {s.get("group_id") for _, s in self.other_shapes if isinstance(s, dict)}
        next_group = 1 + max([g for g in used if isinstance(g, int)], default=0)
        for n, o in enumerate(self.objects):
            if o.shapes:
                # Several shapes read back as one object only when they share a group_id: shapes traced
                # here from a mask of several parts get a new one.
                group = next_group if len(o.shapes) > 1 and any(s.get("group_id") is None for _, s in o.shapes) \
                    else None
                next_group += group is not None
                for i, shape in o.shapes:
                    if _shape_label(shape) != o.label:
                        shape = {**shape, "label": o.label}
                    if group is not None and shape.get("group_id") is None:
                        shape = {**shape, "group_id": group}
                    placed.append(((0, i) if i is not None else (1, n), shape))
                continue
            polygons = mask_polygons(o.mask)
            group = None
            if len(polygons) > 1:
                group, next_group = next_group, next_group + 1
            placed += [((1, n), make_shape(o.label, "polygon", poly, o.score, group_id=group, description=o.query or ""))
                       for poly in polygons]
        shapes = [shape for _, shape in sorted(placed, key=lambda entry: entry[0])]
        if self.document is None:
            w, h = self.size
            return labelme_document(image_name, w, h, shapes, description=description)
        return {**self.document, "shapes": shapes}

    @classmethod
    def from_labelme(cls, data: dict, size: tuple[int, int]) -> Annotation:
        """A labelme / X-AnyLabeling file's polygons, rectangles, circles and masks as objects (shapes that
        share a label and a group_id form one object, and keep the shapes they came from); points, lines and
        shapes that cannot be read carry no area and are kept aside, to be written back untouched."""
        w, h = size
        groups: dict[tuple, np.ndarray] = {}
        sources: dict[tuple, list] = {}
        other = []
        for n, shape in enumerate(data.get("shapes") or []):
            try:
                pixels = shape_pixels(shape, h, w) if isinstance(shape, dict) else None
            except (ValueError, TypeError, KeyError, IndexError, OSError):
                pixels = None
            if pixels is None:
                other.append((n, shape))
                continue
            gid = shape.get("group_id")
            key = (_shape_label(shape), gid if gid is not None else f"#{n}")
            if key not in groups:
                groups[key] = np.zeros((h, w), bool)
                sources[key] = []
            groups[key] |= pixels
            sources[key].append((n, shape))
        objects = [AnnotatedObject(key[0], groups[key], shapes=tuple(sources[key])) for key in groups]
        return cls(size, objects, document={k: v for k, v in data.items() if k != "shapes"}, other_shapes=tuple(other))


def _place(index) -> int | None:
    return None if index is None else int(index)


def shapes_mask(shapes, height: int, width: int) -> np.ndarray:
    """The pixels a list of labelme shapes covers together (shapes without an area add none)."""
    out = np.zeros((height, width), bool)
    for shape in shapes:
        pixels = shape_pixels(shape, height, width)
        if pixels is not None:
            out |= pixels
    return out


def _shape_label(shape: dict) -> str:
    return str(shape.get("label") or DEFAULT_LABEL)


def read_labelme(path: Path, size: tuple[int, int]) -> Annotation | None:
    """The annotation in a labelme file beside an image, or None when there is none, it is not a labelme
    file, or it cannot be read (never fatal: the app starts from the last result instead)."""
    data = read_labelme_document(path)
    return None if data is None else Annotation.from_labelme(data, size)

"""A reasoning-segmentation result as annotation shapes: labelme / X-AnyLabeling polygons, rectangles and
points, and the labelme file that both tools open.

The final mask becomes one polygon per connected part (outer boundary; labelme polygons have no holes),
labelled with the answer object it overlaps most and scored by that object's vote share (N > 1) or
SAM's predicted IoU (N = 1). The answer's boxes and points can be added as rectangles and points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELME_VERSION = "5.5.0"  # the labelme file format the files declare (X-AnyLabeling reads it too)
DEFAULT_LABEL = "object"


@dataclass
class AnswerObject:
    """One object of the final answer, in original image pixels."""
    label: str
    score: float
    box: tuple[int, int, int, int] | None
    point: tuple[int, int] | None
    mask: np.ndarray            # bool HxW: this object's own mask (SAM's, for the chosen sample)


def answer_objects(result) -> list[AnswerObject]:
    """The objects behind `result.mask`: N = 1, sample 0's targets with SAM's scores; N > 1, one per
    selected vote cluster (its chosen member's box, point and mask; scored by the cluster's vote share)."""
    if result.no_object or result.cancelled:
        return []
    objects = []
    if result.vote is None:
        sample = result.samples[0] if result.samples else None
        for obj, (target, row) in enumerate(zip(sample.targets if sample else [], sample.mask_rows if sample else [])):
            score = sample.scores[obj] if obj < len(sample.scores) else None
            objects.append(AnswerObject(target.label or DEFAULT_LABEL, _unit(score), target.box, target.point,
                                        result.host_mask(row)))
        return objects
    vote = result.vote
    by_id = {c.id: c for c in vote.clusters}
    for pos, cid in enumerate(vote.selected):
        cluster = by_id[cid]
        # "best" mode names the kept member (by candidate index); "consensus" blends them: show the best one's box
        chosen = vote.chosen_members[pos] if pos < len(vote.chosen_members) else None
        member = next((m for m in cluster.members if m.index == chosen), None) \
            or max(cluster.members, key=lambda m: (m.score, m.area))
        sample = result.samples[member.sample]
        target = sample.targets[member.obj]
        objects.append(AnswerObject(cluster.label or target.label or DEFAULT_LABEL, _unit(cluster.ratio), target.box,
                                    target.point, result.host_mask(sample.mask_rows[member.obj])))
    return objects


def _unit(score) -> float | None:
    return None if score is None else float(min(1.0, max(0.0, score)))


def mask_polygons(mask: np.ndarray, epsilon: float = 0.0, epsilon_factor: float | None = None) -> list[list[list[float]]]:
    """One closed polygon (first point repeated at the end) per 8-connected part of `mask`, in pixel
    coordinates. labelme polygons have no holes, so each hole is joined to its part's outline by a
    zero-width cut (the outline walks in to the hole, around it the other way, and back out): the
    polygon then covers the part without its holes. `epsilon` > 0 simplifies each outline by
    Douglas-Peucker with that tolerance in pixels (0: exact; `epsilon_factor`, when given, sets it per outline as
    a share of the outline's length instead)."""
    import cv2

    m = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)  # lossless
    if not contours:
        return []

    def simplified(contour) -> np.ndarray:
        tolerance = epsilon if epsilon_factor is None else epsilon_factor * cv2.arcLength(contour, True)
        if tolerance > 0 and len(contour) > 4:  # lossy: the outline moves by up to `tolerance`
            contour = cv2.approxPolyDP(contour, tolerance, True)
        return contour.reshape(-1, 2).astype(float)

    polygons = []
    for i, contour in enumerate(contours):
        if hierarchy[0][i][3] != -1:  # a hole: joined to its parent below
            continue
        pts = simplified(contour)
        if len(pts) < 3:  # a part one pixel thin: its box, so the polygon still covers it
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)
        child = hierarchy[0][i][2]
        while child != -1:
            hole = simplified(contours[child])
            if len(hole) >= 3:
                d = ((pts[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
                a, b = np.unravel_index(np.argmin(d), d.shape)
                ring = np.roll(hole, -b, axis=0)
                pts = np.concatenate([pts[:a + 1], ring, ring[:1], pts[a:]])
            child = hierarchy[0][child][0]
        polygons.append([[float(x), float(y)] for x, y in pts] + [[float(pts[0][0]), float(pts[0][1])]])
    return polygons


def rasterize(polygons: list[list[list[float]]], height: int, width: int) -> np.ndarray:
    """The pixels a list of polygons covers, as labelme fills them (even-odd: a hole joined by a cut stays
    empty), outline pixels included except along the cuts into holes."""
    from PIL import Image, ImageDraw

    out = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(out)
    for poly in polygons:
        draw.polygon([(float(x), float(y)) for x, y in poly], fill=1, outline=1)
    return np.asarray(out, dtype=bool)


def shape_pixels(shape: dict, height: int, width: int) -> np.ndarray | None:
    """The pixels a labelme / X-AnyLabeling shape covers, filled as labelme's own `shape_to_mask` fills them
    (PIL, outline included); a `mask` shape is its PNG placed at its first point. None for the shapes
    without an area (points, lines, line strips). ValueError / KeyError / OSError for a damaged shape."""
    from PIL import Image, ImageDraw

    kind = shape.get("shape_type") or "polygon"
    pts = [(float(x), float(y)) for x, y in shape.get("points") or []]
    if kind == "mask":
        return _mask_shape(shape, pts, height, width)
    out = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(out)
    if kind in ("polygon", "oriented_rectangle", "rotation") and len(pts) >= 3:  # rotation: X-AnyLabeling's box
        draw.polygon(pts, fill=1, outline=1)
    elif kind == "rectangle" and len(pts) >= 2:  # labelme: 2 corners; X-AnyLabeling: all 4
        (x0, y0), (x1, y1) = pts[0], pts[2] if len(pts) == 4 else pts[1]
        draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), fill=1, outline=1)
    elif kind == "circle" and len(pts) == 2:
        (cx, cy), (px, py) = pts
        r = float(np.hypot(px - cx, py - cy))
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), fill=1, outline=1)
    else:
        return None
    return np.asarray(out, dtype=bool)


def _mask_shape(shape: dict, pts: list, height: int, width: int) -> np.ndarray | None:
    import base64
    import io

    from PIL import Image

    if not shape.get("mask") or not pts:
        return None
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))).astype(bool)
    if crop.ndim == 3:
        crop = crop[..., 0]
    x0, y0 = (int(v) for v in pts[0])  # truncated, as labelme places it
    out = np.zeros((height, width), bool)
    if x0 < 0 or y0 < 0:
        raise ValueError(f"a mask placed at ({x0}, {y0}), outside the image")
    ch, cw = crop[: max(0, height - y0), : max(0, width - x0)].shape
    out[y0:y0 + ch, x0:x0 + cw] = crop[:ch, :cw]
    return out


def make_shape(label: str, shape_type: str, points: list, score: float | None, *, group_id: int | None = None,
               description: str = "") -> dict:
    """A shape with every field labelme and X-AnyLabeling write."""
    return {"label": label, "shape_type": shape_type, "points": points, "score": score, "attributes": {},
            "description": description, "difficult": False, "direction": 0, "flags": {}, "group_id": group_id,
            "kie_linking": []}


def result_shapes(result, *, show_masks: bool = True, show_boxes: bool = False, show_points: bool = False,
                  epsilon: float = 0.0, epsilon_factor: float | None = None) -> list[dict]:
    """The shapes of a result: polygons of the final mask's parts, and optionally the answer's boxes and
    points. Shapes of one answer object share a group_id (1, 2, ...) when there are several objects. Each
    mask polygon's description is the query, so the file says what it answers (`labelme:` datasets read it
    back as the query to train and evaluate on; boxes and points, which are not the target, carry none)."""
    objects = answer_objects(result)
    query = str(getattr(result, "query", "") or "")
    group = (lambda i: i + 1) if len(objects) > 1 else (lambda i: None)
    shapes = []
    if show_masks and objects:
        for poly in mask_polygons(result.mask, epsilon, epsilon_factor):
            part = rasterize([poly], *result.mask.shape)
            owner = int(np.argmax([np.count_nonzero(part & o.mask) for o in objects]))
            shapes.append(make_shape(objects[owner].label, "polygon", poly, objects[owner].score, group_id=group(owner),
                                     description=query))
    for i, o in enumerate(objects):
        if show_boxes and o.box is not None:
            x0, y0, x1, y1 = (float(v) for v in o.box)
            shapes.append(make_shape(o.label, "rectangle", [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], o.score,
                                     group_id=group(i)))
        if show_points and o.point is not None:
            shapes.append(make_shape(o.label, "point", [[float(o.point[0]), float(o.point[1])]], o.score,
                                     group_id=group(i)))
    return shapes


def labelme_document(image_name: str, width: int, height: int, shapes: list[dict], *, description: str = "") -> dict:
    """A labelme file's content (no embedded image: it lies beside the JSON)."""
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_name, "imageData": None,
            "imageHeight": int(height), "imageWidth": int(width), "description": description}


def labelme_path(image: Path) -> Path:
    """Where labelme and X-AnyLabeling look for an image's annotation: beside it, same stem, .json."""
    return image.with_suffix(".json")


def fallback_labelme_path(image: Path) -> Path:
    """Where this project writes an image's labelme file when the same-stem .json beside it is somebody
    else's file (a result JSON, a tool's own record): never over it, beside it under this name."""
    return image.with_name(image.stem + ".labelme.json")


def is_labelme_document(data) -> bool:
    """A labelme / X-AnyLabeling annotation: an object with a list of shapes (each an object) and at least
    one of labelme's file fields."""
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and \
        all(isinstance(shape, dict) for shape in data["shapes"]) and \
        any(key in data for key in ("version", "imagePath", "imageHeight", "imageWidth"))


def read_labelme_document(path: Path) -> dict | None:
    """The labelme document in `path`, or None when there is no file, or it is not a labelme file, or it
    cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if is_labelme_document(data) else None


def labelme_file(image: Path) -> Path | None:
    """The labelme file that annotates `image`: the same-stem .json when it is one, else this project's
    fallback name when that is one; None when the image has none (a foreign same-stem file is not one)."""
    for path in (labelme_path(image), fallback_labelme_path(image)):
        if path.is_file() and read_labelme_document(path) is not None:
            return path
    return None


def labelme_target(image: Path) -> Path:
    """Where to write `image`'s labelme file: the same-stem .json, unless a file that is not a labelme
    annotation is there (it is never overwritten), then `fallback_labelme_path`."""
    path = labelme_path(image)
    if path.exists() and read_labelme_document(path) is None:
        return fallback_labelme_path(image)
    return path


def write_labelme(image: Path, document: dict) -> Path:
    """Write `document` as `image`'s labelme file (atomically) where `labelme_target` says; returns the path."""
    from .fileio import write_json_atomically

    return write_json_atomically(labelme_target(image), document, indent=2)

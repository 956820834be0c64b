"""Editing an object's outline by hand, as labelme does, without Qt: the shapes a person edits (a file's own
labelme shapes, or polygons traced from a SAM mask), their vertex handles, and the edits themselves (move
a vertex, add one on an edge, delete one, move the whole object). Every edit returns new shape dicts: a
shape keeps every key it had (description, flags, group_id, attributes, keys of other tools) and only its
points change, so a labelme file re-saved after an edit differs in that shape's points alone.

Coordinates are original image pixels, floats, as in labelme files."""

from __future__ import annotations

import math

import numpy as np

from engine.annotations import make_shape, mask_polygons

TRACE_EPSILON = 1.0  # px: a SAM mask's outline traced for editing drops staircase vertices, moves <= 1 px
MIN_POLYGON = 3  # a polygon keeps at least this many vertices (labelme's rule)


def _points(shape: dict) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in shape.get("points") or []]


def _closed_repeat(pts: list) -> bool:
    """A polygon written with its first point repeated at the end (`star label` and OpenCV tracings do)."""
    return len(pts) > MIN_POLYGON and pts[0] == pts[-1]


def traced_shapes(mask: np.ndarray, label: str, *, description: str = "") -> list[dict]:
    """Polygons tracing a mask's parts, for an object SAM made (it has no shapes of its own yet)."""
    shapes = []
    for poly in mask_polygons(mask, TRACE_EPSILON):
        pts = [list(p) for p in poly]
        if _closed_repeat([tuple(p) for p in pts]):
            pts = pts[:-1]
        shapes.append(make_shape(label, "polygon", pts, None, description=description))
    return shapes


def rectangle_shape(label: str, x1: float, y1: float, x2: float, y2: float) -> dict:
    """A hand-drawn rectangle, stored as labelme stores one: two corners, top-left first."""
    return make_shape(label, "rectangle", [[min(x1, x2), min(y1, y2)], [max(x1, x2), max(y1, y2)]], None)


def polygon_shape(label: str, points) -> dict:
    return make_shape(label, "polygon", [[float(x), float(y)] for x, y in points], None)


def handles(shape: dict) -> list[tuple[float, float]]:
    """The vertices a person can drag: a polygon's points (a repeated closing point once), a rectangle's
    four corners, a circle's centre and rim point; none for other shapes (they can only be moved whole)."""
    kind = shape.get("shape_type") or "polygon"
    pts = _points(shape)
    if kind == "polygon":
        return pts[:-1] if _closed_repeat(pts) else pts
    if kind == "rectangle" and len(pts) >= 2:
        (x1, y1), (x2, y2) = pts[0], pts[2] if len(pts) == 4 else pts[1]
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if kind == "circle" and len(pts) == 2:
        return pts
    return []


def outline(shape: dict) -> list[tuple[float, float]]:
    """The closed outline drawn for a shape (a circle as a 64-gon); empty when it has no area."""
    kind = shape.get("shape_type") or "polygon"
    if kind in ("polygon", "rectangle"):
        return handles(shape)
    if kind == "circle" and len(handles(shape)) == 2:
        (cx, cy), (px, py) = handles(shape)
        r = math.hypot(px - cx, py - cy)
        return [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    return []


def _with_handles(shape: dict, pts: list[tuple[float, float]]) -> dict:
    """`shape` with its handles at `pts`, written back in the shape's own point layout."""
    kind = shape.get("shape_type") or "polygon"
    old = _points(shape)
    if kind == "polygon":
        new = [[x, y] for x, y in pts]
        if _closed_repeat(old):
            new.append(list(new[0]))
        return {**shape, "points": new}
    if kind == "rectangle":
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        corners = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]] if len(old) == 4 else [[x1, y1], [x2, y2]]
        return {**shape, "points": corners}
    return {**shape, "points": [[x, y] for x, y in pts]}


def move_vertex(shape: dict, k: int, x: float, y: float) -> dict:
    """Vertex k dragged to (x, y), with any vertex at the same spot. A rectangle's corner drags its two
    edges (the opposite corner stays)."""
    pts = handles(shape)
    if (shape.get("shape_type") or "polygon") == "rectangle":
        ox, oy = pts[(k + 2) % 4]
        return _with_handles(shape, [(ox, oy), (float(x), float(y))])
    # Vertices at one spot move as one: a traced outline joins each hole by a cut that passes a point twice.
    at = pts[k]
    return _with_handles(shape, [(float(x), float(y)) if p == at else p for p in pts])


def insert_vertex(shape: dict, edge: int, x: float, y: float) -> dict | None:
    """A new vertex at (x, y) on the polygon edge from vertex `edge` to the next (None: not a polygon)."""
    if (shape.get("shape_type") or "polygon") != "polygon":
        return None
    pts = handles(shape)
    pts.insert(edge + 1, (float(x), float(y)))
    return _with_handles(shape, pts)


def delete_vertex(shape: dict, k: int) -> dict | None:
    """The polygon without vertex k (None: not a polygon, or it would fall below three vertices)."""
    pts = handles(shape)
    if (shape.get("shape_type") or "polygon") != "polygon" or len(pts) <= MIN_POLYGON:
        return None
    del pts[k]
    return _with_handles(shape, pts)


def translate(shape: dict, dx: float, dy: float) -> dict:
    """The whole shape moved by (dx, dy); every point moves, whatever the shape type."""
    return {**shape, "points": [[float(x) + dx, float(y) + dy] for x, y in _points(shape)]}


def shift_mask(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """A mask moved by whole pixels; what leaves the image is cut off (as a shape moved past the edge is)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) < w and abs(dy) < h:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def nearest_vertex(shapes: list[dict], x: float, y: float, tolerance: float) -> tuple[int, int] | None:
    """(shape, vertex) of the handle nearest (x, y) within `tolerance`, else None."""
    best, found = tolerance, None
    for s, shape in enumerate(shapes):
        for k, (px, py) in enumerate(handles(shape)):
            d = math.hypot(px - x, py - y)
            if d < best or (d == best and found is None):  # the first of coincident vertices
                best, found = d, (s, k)
    return found


def nearest_edge(shapes: list[dict], x: float, y: float, tolerance: float) -> tuple[int, int, float, float] | None:
    """(shape, edge, px, py): the polygon edge nearest (x, y) within `tolerance` and the point on it
    nearest (x, y); edge k runs from vertex k to the next. Only polygons take new vertices."""
    best, found = tolerance, None
    for s, shape in enumerate(shapes):
        if (shape.get("shape_type") or "polygon") != "polygon":
            continue
        pts = handles(shape)
        for k in range(len(pts)):
            (ax, ay), (bx, by) = pts[k], pts[(k + 1) % len(pts)]
            length2 = (bx - ax) ** 2 + (by - ay) ** 2
            t = 0.0 if length2 == 0 else min(1.0, max(0.0, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length2))
            px, py = ax + t * (bx - ax), ay + t * (by - ay)
            d = math.hypot(px - x, py - y)
            if d <= best:
                best, found = d, (s, k, px, py)
    return found

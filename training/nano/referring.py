"""Plain referring queries of the wider nano world, the kind StAR's first stage trains on and the first
thing a person types: colour + kind ("the red circle"), kind alone ("the cup", "all the stars"), a colour
group ("all the red shapes"), position ("the object on the left", "the one in the top right corner",
"the blue star on the right"), size ("the small red circle") and "between".

Each family follows queries.py's contract: (scene, rng, want_empty) -> Query | None, None when the query
would be ambiguous in the scene (two objects nearly as far left, two equally small circles).
"""

from __future__ import annotations

import numpy as np

from .queries import REFERRING, Query, _describe, _plural, referring
from .shapes import COLOURS, KINDS
from .world import Scene, SceneObject

EXTREME_MARGIN = 0.08  # of the image side: the winner must beat the runner-up by this much
SIZE_RATIO = 1.8  # "the small X" needs the other X to be at least this much larger


def _labels(scene: Scene) -> dict[str, list[SceneObject]]:
    groups: dict[str, list[SceneObject]] = {}
    for o in scene.objects:
        groups.setdefault(o.label, []).append(o)
    return groups


def _position_key(scene: Scene, where: str):
    """A score that is largest for the object most `where`, in units of the image's own sides."""
    w, h = scene.size
    terms = {"left": lambda o: -o.centroid[0] / w, "right": lambda o: o.centroid[0] / w,
             "top": lambda o: -o.centroid[1] / h, "bottom": lambda o: o.centroid[1] / h}
    parts = [terms[p] for p in where.split()]
    return lambda o: sum(f(o) for f in parts)


def _most(objects: list[SceneObject], key, margin: float) -> SceneObject | None:
    ranked = sorted(objects, key=key, reverse=True)
    if len(ranked) >= 2 and key(ranked[0]) - key(ranked[1]) < margin:
        return None
    return ranked[0]


def kind_only(scene, rng, want_empty):
    kinds = sorted({o.kind for o in scene.objects})
    if want_empty:
        absent = [k for k in KINDS if k not in kinds]
        kind = absent[rng.integers(len(absent))] if absent else None
        if kind is None:
            return None
        return Query(f"the {kind}", REFERRING, [], [f"The query names a {kind}", _describe([])])
    kind = kinds[rng.integers(len(kinds))]
    targets = [o for o in scene.objects if o.kind == kind]
    text = f"the {kind}" if len(targets) == 1 else f"all the {_plural(kind)}"
    return Query(text, REFERRING, [o.id for o in targets], [f"The query names every {kind}", _describe(targets)])


def colour_group(scene, rng, want_empty):
    """'all the red shapes' (plain geometric shapes only) or 'all the red things' (any object)."""
    colours = list(COLOURS)
    colour = colours[rng.integers(len(colours))]
    shapes_only = bool(rng.random() < 0.5)
    targets = [o for o in scene.objects if o.colour == colour and (KINDS[o.kind].is_shape or not shapes_only)]
    if bool(targets) == want_empty:
        return None
    noun = ("shapes", "shape") if shapes_only else ("things", "object")
    text = f"all the {colour} {noun[0]}" if len(targets) != 1 or rng.random() < 0.5 else f"the {colour} {noun[1]}"
    return Query(text, REFERRING, [o.id for o in targets], [f"The query asks for {colour} {noun[0]}", _describe(targets)])


POSITIONS = ("left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right")


def position(scene, rng, want_empty):
    """The object most to one side or corner; or, among objects sharing a label, the one on that side."""
    if want_empty:
        return None
    where = POSITIONS[rng.integers(len(POSITIONS))]
    key = _position_key(scene, where)
    groups = [g for g in _labels(scene).values() if len(g) >= 2]
    phrase = f"in the {where} corner" if " " in where else ("on the " if where in ("left", "right") else "at the ") + where
    if groups and rng.random() < 0.5:  # "the red circle on the left"
        group = groups[rng.integers(len(groups))]
        obj = _most(group, key, EXTREME_MARGIN * (2 if " " in where else 1))
        if obj is None:
            return None
        text = f"the {obj.label} {phrase}"
        steps = [f"There are {len(group)} {_plural(obj.label)}", f"I pick the one {phrase}", _describe([obj])]
    else:
        if len(scene.objects) < 2:
            return None
        obj = _most(scene.objects, key, EXTREME_MARGIN * (2 if " " in where else 1))
        if obj is None:
            return None
        noun = "shape" if all(KINDS[o.kind].is_shape for o in scene.objects) and rng.random() < 0.5 else "object"
        text = f"the {noun} {phrase}"
        steps = [f"The query asks for the {noun} {phrase}", f"The {obj.label} is furthest {where}", _describe([obj])]
    return Query(text, REFERRING, [obj.id], steps)


def sized(scene, rng, want_empty):
    """'the small red circle' / 'the big cup' when exactly two objects share the name and differ clearly."""
    if want_empty:
        return None
    by_label = _labels(scene)
    by_kind: dict[str, list[SceneObject]] = {}
    for o in scene.objects:
        by_kind.setdefault(o.kind, []).append(o)
    options = [(label, g) for label, g in by_label.items() if len(g) == 2]
    options += [(kind, g) for kind, g in by_kind.items() if len(g) == 2]
    if not options:
        return None
    name, pair = options[rng.integers(len(options))]
    small, big = sorted(pair, key=lambda o: o.area)
    if big.area < SIZE_RATIO * small.area:
        return None
    want_small = bool(rng.random() < 0.5)
    obj = small if want_small else big
    adjective = ("small", "smaller", "little")[rng.integers(3)] if want_small else ("big", "bigger", "large")[rng.integers(3)]
    text = f"the {adjective} {name}"
    steps = [f"There are two {_plural(name)}", f"The {'smaller' if want_small else 'larger'} one is the answer",
             _describe([obj])]
    return Query(text, REFERRING, [obj.id], steps)


def between(scene, rng, want_empty):
    """'the object between the A and the B': A and B unique by name, the target's centre inside the band
    joining them (and no other object near its edge)."""
    if want_empty:
        return None
    groups = {label: g[0] for label, g in _labels(scene).items() if len(g) == 1}
    if len(groups) < 2:
        return None
    names = sorted(groups)
    i, j = rng.choice(len(names), 2, replace=False)
    a, b = groups[names[i]], groups[names[j]]
    (ax, ay), (bx, by) = a.centroid, b.centroid
    w, h = scene.size
    length = float(np.hypot((bx - ax) / w, (by - ay) / h))
    if length < 0.3:
        return None

    def where(o):  # (fraction along a->b, distance from the line), in image-side units
        px, py = (o.centroid[0] - ax) / w, (o.centroid[1] - ay) / h
        dx, dy = (bx - ax) / w / length, (by - ay) / h / length
        return (px * dx + py * dy) / length, abs(px * dy - py * dx)

    inside, near = [], []
    for o in scene.objects:
        if o is a or o is b:
            continue
        t, d = where(o)
        if 0.2 < t < 0.8 and d < 0.12:
            inside.append(o)
        elif -0.05 < t < 1.05 and d < 0.25:
            near.append(o)  # borderline: would make the answer debatable
    if len(inside) != 1 or near:
        return None
    text = f"the object between the {a.label} and the {b.label}"
    steps = [f"I find the {a.label} and the {b.label}", "Then I look between them", _describe(inside)]
    return Query(text, REFERRING, [inside[0].id], steps)


FAMILIES = (referring, kind_only, colour_group, position, sized, between)

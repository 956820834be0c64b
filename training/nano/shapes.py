"""The nano world's object kinds: how each is drawn, and the facts the world's queries rely on.

A renderer draws an object of radius r at (cx, cy) with rotation `angle` as a list of parts, each a
bool mask with its own colour role ("body" takes the object's colour; other roles have fixed
colours), so objects look like what they are (an apple has a stem and a leaf, a car has wheels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 215, 40),
    "green": (50, 160, 60),
    "blue": (40, 80, 210),
    "purple": (140, 60, 180),
    "pink": (240, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "brown": (130, 80, 40),
}
PART_COLOURS = {"white-band": (245, 245, 245), "stem": (100, 60, 25), "leaf": (40, 150, 50), "wheel": (30, 30, 30), "window": (170, 210, 240), "trunk": (110, 70, 35), "roof": (150, 40, 35)}

Part = tuple[np.ndarray, str]  # (mask, colour role)


def _canvas(size: tuple[int, int]):
    img = Image.new("L", size, 0)
    return img, ImageDraw.Draw(img)


def _mask(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8) > 0


def _rotate(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _regular(cx, cy, r, n, angle, inner=None):
    pts = []
    for k in range(n * (2 if inner else 1)):
        radius = r if (inner is None or k % 2 == 0) else r * inner
        a = angle - math.pi / 2 + k * math.pi * 2 / (n * (2 if inner else 1))
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


def _polygon(size, pts) -> np.ndarray:
    img, d = _canvas(size)
    d.polygon(pts, fill=255)
    return _mask(img)


def _ellipse(size, box) -> np.ndarray:
    img, d = _canvas(size)
    d.ellipse(box, fill=255)
    return _mask(img)


def circle(size, cx, cy, r, angle) -> list[Part]:
    return [(_ellipse(size, (cx - r, cy - r, cx + r, cy + r)), "body")]


def square(size, cx, cy, r, angle) -> list[Part]:
    return [(_polygon(size, _regular(cx, cy, r * 1.15, 4, angle + math.pi / 4)), "body")]


def triangle(size, cx, cy, r, angle) -> list[Part]:
    return [(_polygon(size, _regular(cx, cy, r * 1.2, 3, angle)), "body")]


def hexagon(size, cx, cy, r, angle) -> list[Part]:
    return [(_polygon(size, _regular(cx, cy, r * 1.05, 6, angle)), "body")]


def star(size, cx, cy, r, angle) -> list[Part]:
    return [(_polygon(size, _regular(cx, cy, r * 1.2, 5, angle, inner=0.45)), "body")]


def apple(size, cx, cy, r, angle) -> list[Part]:
    body = _ellipse(size, (cx - r, cy - r * 0.85, cx + r, cy + r * 0.95))
    stem = _polygon(size, [(cx - r * 0.08, cy - r * 0.8), (cx + r * 0.08, cy - r * 0.8), (cx + r * 0.12, cy - r * 1.25), (cx - r * 0.02, cy - r * 1.25)])
    leaf = _ellipse(size, (cx + r * 0.1, cy - r * 1.2, cx + r * 0.6, cy - r * 0.9))
    return [(body, "body"), (stem & ~body, "stem"), (leaf & ~body, "leaf")]


def banana(size, cx, cy, r, angle) -> list[Part]:
    outer = _ellipse(size, (cx - r, cy - r * 0.7, cx + r, cy + r * 0.7))
    inner = _ellipse(size, (cx - r * 0.95, cy - r * 0.95, cx + r * 0.95, cy + r * 0.35))
    return [(outer & ~inner, "body")]


def ball(size, cx, cy, r, angle) -> list[Part]:
    body = _ellipse(size, (cx - r, cy - r, cx + r, cy + r))
    img, d = _canvas(size)
    d.line(_rotate([(cx - r, cy), (cx + r, cy)], cx, cy, angle), fill=255, width=max(2, int(r * 0.25)))
    band = _mask(img) & body
    return [(body & ~band, "body"), (band, "white-band")]


def cup(size, cx, cy, r, angle) -> list[Part]:
    body = _polygon(size, [(cx - r * 0.75, cy - r * 0.8), (cx + r * 0.55, cy - r * 0.8), (cx + r * 0.4, cy + r * 0.8), (cx - r * 0.6, cy + r * 0.8)])
    img, d = _canvas(size)
    d.ellipse((cx + r * 0.25, cy - r * 0.5, cx + r * 1.0, cy + r * 0.35), outline=255, width=max(2, int(r * 0.18)))
    handle = _mask(img) & ~body
    return [(body | handle, "body")]


def car(size, cx, cy, r, angle) -> list[Part]:
    body = _polygon(size, [(cx - r, cy - r * 0.1), (cx - r * 0.5, cy - r * 0.15), (cx - r * 0.3, cy - r * 0.55), (cx + r * 0.35, cy - r * 0.55),
                           (cx + r * 0.55, cy - r * 0.15), (cx + r, cy - r * 0.1), (cx + r, cy + r * 0.35), (cx - r, cy + r * 0.35)])
    window = _polygon(size, [(cx - r * 0.2, cy - r * 0.45), (cx + r * 0.3, cy - r * 0.45), (cx + r * 0.45, cy - r * 0.18), (cx - r * 0.3, cy - r * 0.18)])
    wr = r * 0.25
    wheels = _ellipse(size, (cx - r * 0.65 - wr, cy + r * 0.35 - wr, cx - r * 0.65 + wr, cy + r * 0.35 + wr)) | \
        _ellipse(size, (cx + r * 0.6 - wr, cy + r * 0.35 - wr, cx + r * 0.6 + wr, cy + r * 0.35 + wr))
    return [(body & ~wheels & ~window, "body"), (window & ~wheels, "window"), (wheels, "wheel")]


def house(size, cx, cy, r, angle) -> list[Part]:
    walls = _polygon(size, [(cx - r * 0.75, cy - r * 0.1), (cx + r * 0.75, cy - r * 0.1), (cx + r * 0.75, cy + r * 0.9), (cx - r * 0.75, cy + r * 0.9)])
    roof = _polygon(size, [(cx - r * 0.95, cy - r * 0.1), (cx, cy - r), (cx + r * 0.95, cy - r * 0.1)])
    door = _polygon(size, [(cx - r * 0.15, cy + r * 0.4), (cx + r * 0.15, cy + r * 0.4), (cx + r * 0.15, cy + r * 0.9), (cx - r * 0.15, cy + r * 0.9)])
    return [(walls & ~door, "body"), (door, "stem"), (roof & ~walls, "roof")]


def tree(size, cx, cy, r, angle) -> list[Part]:
    crown = _polygon(size, [(cx - r * 0.8, cy + r * 0.45), (cx, cy - r), (cx + r * 0.8, cy + r * 0.45)])
    trunk = _polygon(size, [(cx - r * 0.15, cy + r * 0.45), (cx + r * 0.15, cy + r * 0.45), (cx + r * 0.15, cy + r), (cx - r * 0.15, cy + r)])
    return [(crown, "body"), (trunk & ~crown, "trunk")]


@dataclass(frozen=True)
class Kind:
    name: str
    render: Callable[..., list[Part]]
    colours: tuple[str, ...]  # the colours this kind comes in
    is_shape: bool = False  # a plain geometric shape (vs a drawn object)
    corners: int | None = None  # for shapes (and the house's roof does not count)
    affordances: frozenset[str] = frozenset()
    rotates: bool = True


ANY = tuple(COLOURS)
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("circle", circle, ANY, True, 0, frozenset({"roll"})),
    Kind("square", square, ANY, True, 4, frozenset({"stack"})),
    Kind("triangle", triangle, ANY, True, 3),
    Kind("hexagon", hexagon, ANY, True, 6, frozenset({"stack"})),
    Kind("star", star, ANY, True, 10),
    Kind("apple", apple, ("red", "green"), affordances=frozenset({"eat", "grow"}), rotates=False),
    Kind("banana", banana, ("yellow",), affordances=frozenset({"eat", "grow"}), rotates=False),
    Kind("ball", ball, ("red", "blue", "orange", "purple", "pink"), affordances=frozenset({"roll", "play"})),
    Kind("cup", cup, ("white", "blue", "red", "brown", "purple"), affordances=frozenset({"drink", "hold"}), rotates=False),
    Kind("car", car, ("red", "blue", "yellow", "black", "white", "orange"), affordances=frozenset({"drive", "roll"}), rotates=False),
    Kind("house", house, ("white", "yellow", "brown", "pink"), affordances=frozenset({"live"}), rotates=False),
    Kind("tree", tree, ("green",), affordances=frozenset({"grow", "shade"}), rotates=False),
)}

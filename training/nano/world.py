"""Scenes of the nano world: varied backgrounds, 1-6 objects with colour, size, texture and partial
occlusion, and the exact visible mask of every instance. Deterministic for a given RNG seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .shapes import COLOURS, KINDS, PART_COLOURS

TEXTURES = ("solid", "solid", "striped", "dotted")
BACKGROUNDS = ("plain", "gradient", "noise", "tiles")
# The wider world's extra backgrounds: what a person draws on (white, black, any flat colour) and
# photograph-like clutter (smooth blotches at several scales).
PLAIN_BACKGROUNDS = ("white", "black", "flat")
WIDE_BACKGROUNDS = BACKGROUNDS + PLAIN_BACKGROUNDS + ("photo",)
MIN_CONTRAST = 70.0  # RGB distance an object's colour keeps from the background under it (wide world)
MIN_VISIBLE_FRACTION = 0.6  # an occluded object keeps at least this much of itself
MIN_VISIBLE_PIXELS = 60


@dataclass(frozen=True)
class SceneSpec:
    """What a scene is drawn from. The default is the classic world the shipped bundle was trained on
    (its splits stay reproducible bit for bit); `training.nano.wide` names the wider ones."""

    backgrounds: tuple[str, ...] = BACKGROUNDS
    radius: tuple[float, float] = (0.055, 0.17)  # an object's radius, as a share of the shorter side
    objects: tuple[int, int] = (1, 6)  # fewest and most objects
    contrast: bool = False  # re-pick an object's colour that would vanish into the background under it


CLASSIC = SceneSpec()


@dataclass
class SceneObject:
    id: int
    kind: str
    colour: str
    texture: str
    radius: float
    cx: float
    cy: float
    mask: np.ndarray = field(repr=False)  # visible pixels, bool HxW

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def centroid(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()), float(ys.mean())

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass
class Scene:
    image: np.ndarray  # uint8 HxWx3
    objects: list[SceneObject]
    background: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def _muted(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(90, 200, 3)
    return base * 0.5 + base.mean() * 0.5


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, sigma: float) -> np.ndarray:
    """Noise with features about `cell` pixels wide: a coarse random grid resized bilinearly."""
    from PIL import Image

    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.normal(0, sigma, (gh, gw, 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(coarse[:, :, c], mode="F").resize((w, h), Image.BILINEAR))
                     for c in range(3)], axis=-1)


def _background(rng: np.random.Generator, h: int, w: int, kinds: tuple[str, ...] = BACKGROUNDS) -> tuple[np.ndarray, str]:
    kind = kinds[rng.integers(len(kinds))]
    if kind in ("white", "black", "flat"):
        level = {"white": (235, 255), "black": (0, 25)}.get(kind)
        base = np.full(3, rng.uniform(*level)) if level else rng.uniform(0, 255, 3)
        img = np.broadcast_to(base, (h, w, 3)).copy()
        return img + rng.normal(0, 2, (h, w, 1)), kind
    if kind == "photo":
        side = min(h, w)
        img = rng.uniform(40, 220, 3) + sum(_smooth_noise(rng, h, w, max(2, int(side * f)), s)
                                            for f, s in ((0.5, 45), (0.15, 25), (0.03, 12)))
        return img + rng.normal(0, 6, (h, w, 1)), kind
    # Muted colours: objects (saturated) stand out, as a learnable world needs.
    base = _muted(rng)
    if kind == "plain":
        img = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == "gradient":
        other = _muted(rng)
        t = np.linspace(0, 1, h if rng.random() < 0.5 else w)
        ramp = t[:, None, None] if len(t) == h else t[None, :, None]
        img = base * (1 - ramp) + other * ramp
        img = np.broadcast_to(img, (h, w, 3)).copy()
    elif kind == "noise":
        coarse = rng.normal(0, 18, (h // 8 + 1, w // 8 + 1, 1))
        img = base + np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
    else:
        tile = int(rng.integers(12, 32))
        yy, xx = np.mgrid[:h, :w]
        checker = ((yy // tile + xx // tile) % 2)[:, :, None]
        img = base + checker * rng.uniform(-25, 25)
    img = img + rng.normal(0, 4, (h, w, 1))
    return img, kind


def _paint(img: np.ndarray, mask: np.ndarray, rgb, texture: str, rng: np.random.Generator, cx: float, cy: float) -> None:
    colour = np.asarray(rgb, dtype=np.float64) + rng.normal(0, 8, 3)
    if texture == "solid":
        img[mask] = colour
        return
    yy, xx = np.nonzero(mask)
    if texture == "striped":
        angle = rng.uniform(0, math.pi)
        phase = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        dark = (np.floor(phase / 4) % 2) == 1
    else:  # dotted
        dark = ((xx % 7) < 3) & ((yy % 7) < 3)
    shade = colour * 0.6 if colour.mean() > 60 else colour + 70
    img[yy, xx] = np.where(dark[:, None], shade, colour)


def _draw_object(size, kind_name, cx, cy, r, angle):
    kind = KINDS[kind_name]
    return kind.render(size, cx, cy, r, angle if kind.rotates else 0.0)


def _contrasting_colour(rng, kind_def, colour: str, background: np.ndarray) -> str | None:
    """`colour` if it stands out from `background` (the mean colour under the object), else another of the
    kind's colours that does (None when none does)."""
    def far(c):
        return float(np.linalg.norm(np.asarray(COLOURS[c], np.float64) - background)) >= MIN_CONTRAST
    if far(colour):
        return colour
    others = [c for c in kind_def.colours if far(c)]
    return others[rng.integers(len(others))] if others else None


def make_scene(rng: np.random.Generator, size: int = 224, n_objects: int | None = None, kinds: list[str] | None = None,
               *, width: int | None = None, height: int | None = None, spec: SceneSpec = CLASSIC) -> Scene:
    """A scene of `width` x `height` (default `size` square) with `n_objects` (default: spec.objects) objects
    of the given kinds (default all), drawn from `spec` (default: the classic world)."""
    h, w = height or size, width or size
    img, background = _background(rng, h, w, spec.backgrounds)
    plain = img.copy() if spec.contrast else None
    names = kinds or list(KINDS)
    n = n_objects if n_objects is not None else int(rng.integers(spec.objects[0], spec.objects[1] + 1))
    side = min(w, h)
    placed: list[tuple[SceneObject, np.ndarray]] = []  # (object, full mask)
    for _ in range(n):
        for _attempt in range(30):
            kind = names[rng.integers(len(names))]
            r = float(rng.uniform(*spec.radius) * side)
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            parts = _draw_object((w, h), kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
            full = np.logical_or.reduce([m for m, _ in parts])
            if full.sum() < MIN_VISIBLE_PIXELS:
                continue
            # Every earlier object must stay visible enough once this one covers part of it.
            if all(((o.mask & ~full).sum() >= max(MIN_VISIBLE_FRACTION * f.sum(), MIN_VISIBLE_PIXELS)) for o, f in placed):
                break
        else:
            continue
        kind_def = KINDS[kind]
        colour = kind_def.colours[rng.integers(len(kind_def.colours))]
        if plain is not None:
            colour = _contrasting_colour(rng, kind_def, colour, plain[full].mean(0))
            if colour is None:
                continue
        texture = TEXTURES[rng.integers(len(TEXTURES))] if kind_def.is_shape or kind == "ball" else "solid"
        for mask, role in parts:
            rgb = COLOURS[colour] if role == "body" else PART_COLOURS.get(role, COLOURS["white"])
            _paint(img, mask, rgb, texture if role == "body" else "solid", rng, cx, cy)
        for other, _ in placed:
            other.mask = other.mask & ~full
        placed.append((SceneObject(len(placed), kind, colour, texture, r, cx, cy, full.copy()), full))
    image = np.clip(img, 0, 255).astype(np.uint8)
    return Scene(image, [o for o, _ in placed], background)

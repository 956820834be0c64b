"""The wider nano world: any background (white, black, any flat colour, photograph-like clutter, and the
classic four), objects from small to large, up to eight of them, any image size and aspect ratio, plain
referring queries beside the reasoning ones, and the phrasings people use (training/nano/phrasing.py).

Three worlds, named by `NanoConfig.world`:
- "classic": the world the shipped bundle was trained on, unchanged (its splits are reproducible bit for bit);
- "wide": the wider world, for training and its in-distribution test;
- "shift": the same kinds of scenes and queries drawn further out (sizes up to 1,600 px and 3:1 aspects,
  objects smaller and larger, wordings and synonyms the training streams never use, more typos), for the
  shift split: what a model meets one step outside what it was trained on.

An image of any size is handled as the engine runs it: the policy sees it resized to its square frame
(pixels-224, aspect not kept, docs/protocol.md §2) and answers in that frame; SAM sees the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import referring
from .phrasing import SHIFT, TRAIN, Wording, rephrased
from .queries import REASONING_TYPES, Query, make_query
from .world import BACKGROUNDS, Scene, SceneSpec, make_scene

WORLDS = ("classic", "wide", "shift")
# Plain backgrounds weigh double: they are what a person draws on and what the classic world lacked.
_BACKGROUNDS = BACKGROUNDS + ("white", "white", "black", "black", "flat", "flat", "photo", "photo")


@dataclass(frozen=True)
class WorldSpec:
    scene: SceneSpec
    sides: tuple[int, int]  # the longer side, log-uniform between these (pixels)
    max_aspect: float  # longer / shorter side, log-uniform from 1 up to this
    wording: Wording
    referring_share: float  # share of queries that are plain referring ones (the rest: StAR's four types)


SPECS = {
    "wide": WorldSpec(SceneSpec(_BACKGROUNDS, radius=(0.03, 0.3), objects=(1, 8), contrast=True),
                      sides=(96, 640), max_aspect=2.0, wording=TRAIN, referring_share=0.5),
    "shift": WorldSpec(SceneSpec(_BACKGROUNDS, radius=(0.025, 0.34), objects=(1, 8), contrast=True),
                       sides=(100, 1600), max_aspect=3.0, wording=SHIFT, referring_share=0.5),
}
SALT = {"wide": 1, "shift": 2}  # keeps each world's scenes apart from the classic ones at the same index
MIN_SIDE = 64


def image_size(rng: np.random.Generator, spec: WorldSpec) -> tuple[int, int]:
    """(width, height) of a scene of this world."""
    lo, hi = spec.sides
    longer = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    aspect = math.exp(rng.uniform(0.0, math.log(spec.max_aspect)))
    shorter = max(MIN_SIDE, longer / aspect)
    a, b = int(round(longer)), int(round(shorter))
    return (a, b) if rng.random() < 0.5 else (b, a)


def wide_scene(rng: np.random.Generator, spec: WorldSpec, most: int | None = None) -> Scene:
    """A scene of this world with 1..`most` objects (default: the world's range) and at least one placed
    (a tiny image, or no colour standing out from the background, can leave none: then it draws again)."""
    while True:
        width, height = image_size(rng, spec)
        n_objects = None if most is None else int(rng.integers(1, most + 1))  # None: make_scene draws it
        scene = make_scene(rng, width=width, height=height, spec=spec.scene, n_objects=n_objects)
        if scene.objects:
            return scene


def referring_query(scene, rng: np.random.Generator, empty_rate: float, attempts: int = 40) -> Query | None:
    want_empty = bool(rng.random() < empty_rate)
    for _ in range(attempts):
        family = referring.FAMILIES[rng.integers(len(referring.FAMILIES))]
        query = family(scene, rng, want_empty)
        if query is not None:
            return query
    return None


def wide_query(scene, rng: np.random.Generator, spec: WorldSpec, types: tuple[str, ...], empty_rate: float) -> Query | None:
    """A plain referring query (spec.referring_share of them) or one of StAR's reasoning types in `types`,
    rephrased with the world's wording."""
    reasoning = tuple(t for t in types if t in REASONING_TYPES)
    if not reasoning or rng.random() < spec.referring_share:
        query = referring_query(scene, rng, empty_rate)
    else:
        query = make_query(scene, rng, reasoning, empty_rate)
    return None if query is None else rephrased(query, rng, spec.wording)

"""Out-of-world probes: the simplest things a new user tries after the sample scene, and how a bundle
answers them. Each probe is a scene and a query with a known answer:

- plain-colour-kind: a few objects on a white, black or flat canvas of any size, "the red circle";
- plain-position: the same canvases, "the shape on the left", "the blue star in the top right corner";
- absent: objects on a plain canvas, a query for one that is not there (the answer is "no object");
- blank: an empty canvas (no object);
- photo: photograph-like clutter and no object (no object).

Reported per family: how often the answer's mask has IoU >= 0.5 with the truth (or, where nothing is
there, how often it says "no object"), reasoning texts that are not readable prose (engine/honesty.py),
and full-frame masks (>= 90 % of an image whose objects cover less than half of it), with the engine's
mask guards (engine/honesty.py) on and off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.honesty import DEFAULT_MAX_MASK_SHARE, MaskGuard

from . import referring
from .queries import referring as colour_kind
from .shapes import KINDS
from .world import SceneSpec, make_scene

FAMILIES = ("plain-colour-kind", "plain-position", "absent", "blank", "photo")
PLAIN = SceneSpec(("white", "black", "flat"), radius=(0.06, 0.2), objects=(1, 5), contrast=True)
PHOTO = SceneSpec(("photo",), objects=(0, 0))
SIZES = ((320, 240), (240, 320), (224, 224), (640, 480), (1024, 768), (150, 400))


@dataclass
class Probe:
    family: str
    image: np.ndarray
    query: str
    truth: np.ndarray  # bool HxW; all False where the answer is "no object"


def _scene(rng, spec: SceneSpec, n_objects: int | None = None):
    w, h = SIZES[rng.integers(len(SIZES))]
    return make_scene(rng, width=w, height=h, spec=spec, n_objects=n_objects)


def make_probe(family: str, index: int) -> Probe:
    """Probe `index` of `family`, fully determined by the two."""
    rng = np.random.default_rng([FAMILIES.index(family), index, 9])
    for _ in range(100):
        if family in ("blank", "photo"):
            scene = _scene(rng, PLAIN if family == "blank" else PHOTO, n_objects=0)
            kind = list(KINDS)[rng.integers(len(KINDS))]
            colour = KINDS[kind].colours[rng.integers(len(KINDS[kind].colours))]
            return Probe(family, scene.image, f"the {colour} {kind}", np.zeros(scene.image.shape[:2], bool))
        scene = _scene(rng, PLAIN)
        if not scene.objects:
            continue
        if family == "plain-colour-kind":
            query = colour_kind(scene, rng, False)
        elif family == "plain-position":
            query = referring.position(scene, rng, False)
        else:
            query = colour_kind(scene, rng, True)
        if query is None:
            continue
        truth = np.zeros(scene.image.shape[:2], bool)
        for o in scene.objects:
            if o.id in query.targets:
                truth |= o.mask
        return Probe(family, scene.image, query.text, truth)
    raise RuntimeError(f"no {family} probe fits")  # pragma: no cover


def run_probes(reasoner, count: int = 20, n: int = 1, families: tuple[str, ...] = FAMILIES) -> dict:
    """Every family's probes through `reasoner` (N = n, the bundle's recommended decoding): per family the
    share answered right, unreadable reasoning texts, and full-frame masks with the guards on and off."""
    from engine.honesty import full_frame_rows
    from engine.pipeline import sampling_for

    out = {}
    keep = reasoner.mask_guard
    try:
        for family in families:
            right = unreadable = full_guarded = full_raw = 0
            for i in range(count):
                probe = make_probe(family, i)
                sampling = sampling_for(n, seed=i, constrained=reasoner.grammar(None),
                                        temperature=reasoner.temperature(None))
                objects_share = probe.truth.mean()
                for raw, guard in ((True, MaskGuard.off()), (False, keep)):  # the model's answer, then what is shown
                    reasoner.mask_guard = guard
                    result = reasoner.run(probe.image, probe.query, n, sampling=sampling)
                    full = bool(full_frame_rows(result.mask[None], DEFAULT_MAX_MASK_SHARE) and objects_share < 0.5)
                    if raw:
                        full_raw += full
                    else:
                        full_guarded += full
                unreadable += sum(bool(s.reasoning_problem) for s in result.samples)
                if probe.truth.any():
                    inter = (result.mask & probe.truth).sum()
                    right += bool(not result.no_object and inter >= 0.5 * (result.mask | probe.truth).sum())
                else:
                    right += bool(result.no_object)
            out[family] = {"probes": count, "right": right, "right_share": right / count,
                           "unreadable_traces": unreadable, "samples": count * n,
                           "full_frame_unguarded": full_raw, "full_frame_shown": full_guarded}
    finally:
        reasoner.mask_guard = keep
    return out

"""The nano world in motion: clips of the classic world's scenes whose objects slide and turn, pass in front
of one another, leave the frame and come back, seen by a camera that pans; every frame with the exact
visible mask of every object. A clip's query is asked about its first frame (StAR's reasoning types or a
plain referring query), and its targets are the same objects on every frame.

`write_revos(out, clips)` writes them in ReVOS's layout (JPEGImages/, mask_dict.json,
meta_expressions_valid_.json), so `star eval --data revos:OUT` measures a tracker on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .queries import REASONING_TYPES, REFERRING, make_query
from .shapes import COLOURS, KINDS, PART_COLOURS
from .world import CLASSIC, MIN_VISIBLE_PIXELS, TEXTURES, Scene, SceneObject, _background, _draw_object, _paint

CLIP_SEED = 7  # the clips' split seed (the image splits use 0-3)
TRAIN_CLIPS_FROM = 1_000_000  # training draws clips from this index on; `star-train nano-clips` (the test split) below it


@dataclass
class Mover:
    """An object and how it moves: position and angle per frame (pixels of the world canvas)."""
    id: int
    kind: str
    colour: str
    texture: str
    radius: float
    x: float
    y: float
    angle: float
    vx: float
    vy: float
    spin: float
    paint_seed: int

    def at(self, t: int) -> tuple[float, float, float]:
        return self.x + self.vx * t, self.y + self.vy * t, self.angle + self.spin * t


@dataclass
class Clip:
    frames: list[np.ndarray]                     # uint8 H x W x 3, the camera's view
    masks: list[dict[int, np.ndarray]]           # per frame: object id -> visible mask (bool H x W)
    query: str
    reasoning_type: str
    targets: list[int]
    labels: dict[int, str] = field(default_factory=dict)


def _render(background: np.ndarray, movers: list[Mover], t: int, view: tuple[int, int, int, int]):
    """The world at frame t cropped to `view` (x, y, w, h): the image and each object's visible mask."""
    x0, y0, w, h = view
    canvas = background.copy()
    size = (canvas.shape[1], canvas.shape[0])
    full: dict[int, np.ndarray] = {}
    for m in movers:  # later objects pass in front of earlier ones
        cx, cy, angle = m.at(t)
        parts = _draw_object(size, m.kind, cx, cy, m.radius, angle)
        rng = np.random.default_rng(m.paint_seed)  # the same paint on every frame
        for mask, role in parts:
            rgb = COLOURS[m.colour] if role == "body" else PART_COLOURS.get(role, COLOURS["white"])
            _paint(canvas, mask, rgb, m.texture if role == "body" else "solid", rng, cx, cy)
        whole = np.logical_or.reduce([mask for mask, _ in parts])
        for other in full:
            full[other] &= ~whole
        full[m.id] = whole
    image = np.clip(canvas, 0, 255).astype(np.uint8)[y0:y0 + h, x0:x0 + w]
    return np.ascontiguousarray(image), {i: np.ascontiguousarray(mk[y0:y0 + h, x0:x0 + w]) for i, mk in full.items()}


def make_clip(index: int, *, frames: int = 24, size: int = 224, pan: int = 64, objects: tuple[int, int] = (2, 5),
              referring_share: float = 0.5) -> Clip:
    """Clip `index` (deterministic): a `size` square camera panning `pan` pixels across a wider world, 2-5
    objects moving up to 3 px a frame (some leave the view and come back), the query asked about frame 0."""
    rng = np.random.default_rng([CLIP_SEED, index])
    world_w, world_h = size + pan, size
    background, _ = _background(rng, world_h, world_w, CLASSIC.backgrounds)
    movers = []
    for i in range(int(rng.integers(objects[0], objects[1] + 1))):
        kind = list(KINDS)[rng.integers(len(KINDS))]
        kind_def = KINDS[kind]
        r = float(rng.uniform(*CLASSIC.radius) * size)
        texture = TEXTURES[rng.integers(len(TEXTURES))] if kind_def.is_shape or kind == "ball" else "solid"
        speed, heading = float(rng.uniform(0.5, 3.0)), float(rng.uniform(0, 2 * math.pi))
        movers.append(Mover(i, kind, kind_def.colours[rng.integers(len(kind_def.colours))], texture, r,
                            float(rng.uniform(r, world_w - r)), float(rng.uniform(r, world_h - r)),
                            float(rng.uniform(0, 2 * math.pi)), speed * math.cos(heading), speed * math.sin(heading),
                            float(rng.uniform(-0.05, 0.05)) if kind_def.rotates else 0.0, int(rng.integers(2**31))))
    views = [(int(round(pan * t / max(1, frames - 1))), 0, size, size) for t in range(frames)]
    rendered = [_render(background, movers, t, views[t]) for t in range(frames)]
    first_image, first_masks = rendered[0]
    visible = [m for m in movers if first_masks[m.id].sum() >= MIN_VISIBLE_PIXELS]
    scene = Scene(first_image, [SceneObject(m.id, m.kind, m.colour, m.texture, m.radius, *m.at(0)[:2],
                                            first_masks[m.id]) for m in visible], "clip")
    types = (REFERRING,) if rng.random() < referring_share else REASONING_TYPES
    query = make_query(scene, rng, types, empty_rate=0.0) if scene.objects else None
    if query is None or not query.targets:
        return make_clip(index + 100_003, frames=frames, size=size, pan=pan, objects=objects,
                         referring_share=referring_share)
    return Clip([img for img, _ in rendered], [mk for _, mk in rendered], query.text, query.reasoning_type,
                list(query.targets), {m.id: f"{m.colour} {m.kind}" for m in movers})


def write_revos(out: str | Path, clips: list[Clip]) -> Path:
    """The clips in ReVOS's layout: one video per clip, one expression each (type_id 0 for a referring query,
    1 for a reasoning one), one annotation per target object (COCO RLE per frame, null where it is out of
    view)."""
    from PIL import Image

    from engine.fileio import write_json_atomically
    from engine.rle import encode

    out = Path(out)
    masks, videos = {}, {}
    for c, clip in enumerate(clips):
        name = f"nano-clip-{c:04d}"
        folder = out / "JPEGImages" / name
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"{t:05d}" for t in range(len(clip.frames))]
        for frame_name, image in zip(names, clip.frames):
            Image.fromarray(image).save(folder / f"{frame_name}.jpg", quality=95)
        anno_ids = []
        for target in clip.targets:
            anno = str(len(masks))
            masks[anno] = [encode(m[target]) if m[target].any() else None for m in clip.masks]
            anno_ids.append(int(anno))
        videos[name] = {"vid_id": name, "frames": names, "expressions": {"0": {
            "exp": clip.query, "obj_id": clip.targets, "anno_id": anno_ids,
            "type_id": 0 if clip.reasoning_type == REFERRING else 1}}}
    write_json_atomically(out / "mask_dict.json", masks, indent=None)
    write_json_atomically(out / "meta_expressions_valid_.json", {"videos": videos}, indent=None)
    return out

"""A person's labelled folder, simulated: scenes of the wider or shifted nano world (ones the shipped bundle
was not trained on) saved as images with labelme files beside them, written through the engine's labelme
writer (the one the app and `star label` write through), each object a polygon labelled with its colour
and kind ("red circle"). `held-out.txt` lists the first `held_out` images, so `star-train adapt` can keep
exactly those out (`--data-options "{split_file: DIR/held-out.txt}"`); folders of one seed share them, and
a smaller folder's training images are a larger one's first ones (K = 50 within K = 200 within K = 800)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SALT = 7  # keeps these scenes apart from every split the nano recipe writes


def write_labelled_folder(out: str | Path, images: int, held_out: int, *, world: str = "shift", seed: int = 0,
                          progress: bool = False) -> Path:
    """`images` labelled scenes (after the first `held_out`, those to train on) in `out`; returns the folder."""
    from PIL import Image
    from tqdm import tqdm

    from engine.annotations import labelme_document, make_shape, mask_polygons, write_labelme

    from .wide import SPECS, wide_scene

    if not 0 < held_out < images:
        raise ValueError(f"held_out must be between 1 and images - 1, got {held_out} of {images}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([SALT, seed])
    names = []
    for i in tqdm(range(images), desc=f"{world} scenes", disable=not progress):
        scene = wide_scene(rng, SPECS[world])
        name = f"{world}-{i:04d}.png"
        Image.fromarray(scene.image).save(out / name)
        shapes = [make_shape(obj.label, "polygon", poly, None, group_id=k + 1)
                  for k, obj in enumerate(scene.objects) for poly in mask_polygons(obj.mask)]
        h, w = scene.image.shape[:2]
        write_labelme(out / name, labelme_document(name, w, h, shapes))
        names.append(name)
    (out / "held-out.txt").write_text("# the images star-train adapt measures on (split_file)\n" +
                                      "".join(f"{n}\n" for n in names[:held_out]))
    return out

"""Per-frame masks as indexed PNGs the way DAVIS, YouTube-VOS and their evaluation tools read them: pixel
value 0 is the background and k is track k, with the PASCAL VOC colour map as the palette (so a viewer shows
track 1 dark red, 2 dark green, 3 olive, 4 dark blue, ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def voc_palette(size: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: uint8 [size, 3]; colour k spreads the bits of k over R, G and B from the
    most significant bit down."""
    palette = np.zeros((size, 3), np.uint8)
    for index in range(size):
        value, colour = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette[index] = colour
    return palette


def label_image(masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """uint8 H x W: 0 where no track is, k where track k's mask is (a later track over an earlier one where
    two overlap, as the trackers' outputs are written). Track ids must be 1..255."""
    out = np.zeros(shape, np.uint8)
    for track, mask in sorted(masks.items()):
        if not 1 <= track <= 255:
            raise ValueError(f"track ids go from 1 to 255 in an indexed PNG, got {track}")
        out[np.asarray(mask, bool)] = track
    return out


def write_indexed_png(path: str | Path, labels: np.ndarray) -> Path:
    """`labels` (uint8 H x W) as a palette PNG with the VOC colour map, written atomically."""
    from PIL import Image

    from ..fileio import write_atomically

    image = Image.fromarray(np.asarray(labels, np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    return write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def read_indexed_png(path: str | Path) -> np.ndarray:
    """The label values of an indexed PNG (uint8 H x W), not its colours."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image if image.mode in ("P", "L") else image.convert("L"), np.uint8).copy()

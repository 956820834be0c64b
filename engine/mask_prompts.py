"""The prompt a mask implies: its tight box and the point deepest inside it. What StAR's rewards score an
answer against, and what an oracle gives a tracker on its key frame (`star eval --key-answer gold`)."""

from __future__ import annotations

import numpy as np


def box_and_deep_point(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """Args: mask, bool H x W, not empty. Returns ([x1, y1, x2, y2] inclusive, [x, y]) in the mask's pixels:
    the tight box and the centre of the largest inscribed circle (argmax of the Euclidean distance transform,
    the image border counting as background, so the point never sits on an edge)."""
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("an instance mask is empty")
    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    py, px = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())], [int(px), int(py)]

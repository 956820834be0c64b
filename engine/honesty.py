"""What the engine will not present as an answer: a reasoning text that is not readable prose, a mask
that fills (nearly) the whole image, and a mask on a featureless region.

A small or lost model can write tags or answer JSON inside its <think> part, give a box around the
whole picture that SAM then fills edge to edge, or point at an empty canvas where SAM still paints a
region. None of these is an answer a person can use, and showing them as "reasoning" and "the object"
misleads. The reasoner keeps the raw text (results carry it) but marks it, and treats a full-frame or
featureless mask as the segmenter finding nothing there, saying so in the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A mask covering at least this share of the image is taken as "no object found", not as the object.
# 1.0 keeps every mask (for images whose object really does fill the frame).
DEFAULT_MAX_MASK_SHARE = 0.9
# A mask whose surroundings (its bounding box grown by half its size on every side) span fewer grey levels
# than this (1st to 99th percentile, in the widest of the three channels, 0-255) outlines nothing in the
# picture: a blank canvas or an empty wall. 16 sits above the noise of a photographed sheet of paper
# (sigma 2-3 levels) and far below any object a person could see against its background. 0 keeps every mask.
DEFAULT_MIN_MASK_CONTRAST = 16.0
# At most this many pixels of a region are read to measure its spread (a strided sample): enough for the
# percentiles, and a 32-sample vote on a 12-megapixel photo stays cheap.
_CONTRAST_SAMPLE = 65_536


@dataclass(frozen=True)
class MaskGuard:
    """When a segmenter's mask is taken as "nothing found" instead of as the object: it covers at least
    `max_share` of the image (1.0: never), or it is empty or its surroundings span fewer than `min_contrast`
    grey levels (0: never)."""
    max_share: float = DEFAULT_MAX_MASK_SHARE
    min_contrast: float = DEFAULT_MIN_MASK_CONTRAST

    @classmethod
    def off(cls) -> MaskGuard:
        """Every mask kept, whatever it covers."""
        return cls(max_share=1.0, min_contrast=0.0)

    @classmethod
    def of_args(cls, args) -> MaskGuard:
        """The guard a command line asked for (--max-mask-share, --min-mask-contrast)."""
        return cls(max_share=args.max_mask_share, min_contrast=args.min_mask_contrast)

_MARKUP = re.compile(r"</?\s*(think|answer)\b|[<>{}]|\"(bbox_2d|point_2d|label)\"|\b(bbox_2d|point_2d)\b")
_REPEAT = re.compile(r"\b(\w+)(?:\W+\1\b){5,}", re.IGNORECASE)


def reasoning_problem(thinking: str) -> str:
    """Why a sample's reasoning text is not readable prose ("" when it is): empty, markup or answer JSON
    inside it, a word repeated over and over, or text that is mostly not letters."""
    text = (thinking or "").strip()
    if not text:
        return "no reasoning was written"
    if _MARKUP.search(text):
        return "tags or answer JSON inside the reasoning"
    if _REPEAT.search(text):
        return "a word repeated over and over"
    letters = sum(c.isalpha() or c.isspace() for c in text)
    if letters < 0.6 * len(text):
        return "mostly symbols, not words"
    return ""


def shown_reasoning(thinking: str, problem: str | None = None) -> str:
    """The reasoning as a person should see it: the text itself, or one sentence saying why it is not shown.
    `problem`: its reasoning_problem when already known."""
    problem = reasoning_problem(thinking) if problem is None else problem
    return thinking.strip() if not problem else f"(the model's reasoning is not readable: {problem})"


def full_frame_rows(object_masks, max_share: float) -> list[int]:
    """Rows of `object_masks` ([M, H, W], NumPy or a GPU tensor) whose mask covers >= max_share of the image."""
    import numpy as np  # here: the CLI imports this module for its defaults and stays light to start

    from .host import to_host
    if max_share >= 1.0 or len(object_masks) == 0:
        return []
    m = object_masks.reshape(len(object_masks), -1)
    covered = to_host(m.sum(1))
    return [int(r) for r in np.nonzero(covered >= max_share * m.shape[1])[0]]


def region_contrast(rgb, box: tuple[int, int, int, int]) -> float:
    """Grey levels spanned (1st to 99th percentile, widest channel) by `rgb` [H, W, 3] inside `box`
    (x0, y0, x1, y1, exclusive ends) grown by half its width and height on every side, clipped to the image."""
    import numpy as np
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    gx, gy = max(2, (x1 - x0) // 2), max(2, (y1 - y0) // 2)
    region = rgb[max(0, y0 - gy):min(h, y1 + gy), max(0, x0 - gx):min(w, x1 + gx)]
    step = max(1, int(np.ceil(np.sqrt(region.shape[0] * region.shape[1] / _CONTRAST_SAMPLE))))
    pixels = region[::step, ::step].reshape(-1, region.shape[-1]).astype(np.float32)
    low, high = np.percentile(pixels, [1, 99], axis=0)
    return float((high - low).max())


def featureless_rows(rgb, object_masks, min_contrast: float) -> list[int]:
    """Rows of `object_masks` ([M, H, W], NumPy or a GPU tensor) that outline nothing in `rgb`: an empty
    mask, or one on a featureless region (its surroundings span fewer than `min_contrast` grey levels,
    region_contrast)."""
    import numpy as np

    from .host import to_host  # here, as numpy: the CLI imports this module for its defaults
    if min_contrast <= 0 or len(object_masks) == 0:
        return []
    rows_any, cols_any = to_host(object_masks.any(2)), to_host(object_masks.any(1))  # [M, H], [M, W]
    out = []
    for r in range(len(object_masks)):
        ys, xs = np.flatnonzero(rows_any[r]), np.flatnonzero(cols_any[r])
        if not len(ys) or region_contrast(rgb, (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)) < min_contrast:
            out.append(r)
    return out

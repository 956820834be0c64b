"""What the engine will not present as an answer: a reasoning text that is not readable prose, and a mask
that fills (nearly) the whole image.

A small or lost model can write tags or answer JSON inside its <think> part, or give a box around the
whole picture that SAM then fills edge to edge. Neither is an answer a person can use, and showing them as
"reasoning" and "the object" misleads. The reasoner keeps the raw text (results carry it) but marks it,
and treats a full-frame mask as the segmenter finding nothing there, saying so in the result.
"""

from __future__ import annotations

import re

# A mask covering at least this share of the image is taken as "no object found", not as the object.
# 1.0 keeps every mask (for images whose object really does fill the frame).
DEFAULT_MAX_MASK_SHARE = 0.9

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
    import numpy as np  # here: the CLI imports this module for its default and stays light to start
    if max_share >= 1.0 or len(object_masks) == 0:
        return []
    m = object_masks.reshape(len(object_masks), -1)
    covered = m.sum(1)
    if hasattr(covered, "detach"):  # torch
        covered = covered.detach().cpu().numpy()
    elif not isinstance(covered, np.ndarray) and hasattr(covered, "get"):  # CuPy
        covered = covered.get()
    return [int(r) for r in np.nonzero(covered >= max_share * m.shape[1])[0]]

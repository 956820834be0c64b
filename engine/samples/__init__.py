"""The bundled sample scene (a nano-world test scene and its query): what the README's first command and
the end-to-end benchmarks run on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SCENE_PNG = Path(__file__).resolve().parent / "scene.png"


def sample_query() -> str:
    return json.loads(SCENE_PNG.with_suffix(".json").read_text())["query"]


def sample_scene() -> tuple[np.ndarray, str]:
    """(RGB image, query) of the sample scene."""
    from ..images import load_image

    return load_image(SCENE_PNG), sample_query()

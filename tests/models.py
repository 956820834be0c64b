"""The tiny models of the real architectures that tests build for themselves (no downloads).

`require(module)` skips a test when an optional runtime is missing, except under the README's test
command (STAR_TEST_FULL=1), where a missing runtime is a failure: CI must not pass by skipping.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("STAR_TEST_FULL") == "1":
            pytest.fail(f"{module} is required under the full test command but is missing: {exc}")
        pytest.skip(f"{module} is not installed")


@dataclass
class TinySam2:
    config: Path
    checkpoint: Path
    overrides: list[str]     # hydra overrides of sam2.1_hiera_t.yaml that give the same model
    image_size: int


def build_tiny_sam2(root: Path, image_size: int = 256, seed: int = 0) -> TinySam2:
    require("torch")
    require("sam2")
    from engine.segment.shrunk import shrunk_overrides, write_random_checkpoint, write_shrunk_config

    config = write_shrunk_config(root / "sam2.1_hiera_shrunk.yaml", image_size=image_size)
    checkpoint = write_random_checkpoint(config, root / "sam2.1_hiera_shrunk.pt", seed=seed)
    return TinySam2(config, checkpoint, ["++" + o for o in shrunk_overrides(image_size=image_size)], image_size)


@dataclass
class TinySam2Onnx:
    encoder: Path
    decoder: Path


def export_tiny_sam2_onnx(tiny: TinySam2, root: Path) -> TinySam2Onnx:
    require("onnxruntime")
    require("onnxscript")
    from engine.segment.torch_backend import build_model
    from engine.segment.onnx_export import export_sam2_onnx

    result = export_sam2_onnx(build_model(tiny.config, tiny.checkpoint), root)
    return TinySam2Onnx(result.encoder, result.decoder)

"""The forms a SAM 2 segmenter can take on disk, declared once: a bundle's manifest names them as
bundle-relative paths (`engine.bundle.SegmenterSpec`), the engine opens them as paths
(`engine.segment.SegmenterFiles`), and the schema checks and the exporter copy them by these names
(`SEGMENTER_PATHS`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass
class SegmenterForms(Generic[P]):
    """Any subset of the forms: the PyTorch pair, the ONNX graphs, TensorRT engines, float16 graphs."""
    config: P | None = None             # SAM 2 Hydra YAML (the PyTorch backend)
    checkpoint: P | None = None         # .pt / .safetensors (the PyTorch backend)
    encoder_onnx: P | None = None
    decoder_onnx: P | None = None
    encoder_engine: P | None = None     # TensorRT .engine files
    decoder_engine: P | None = None
    encoder_onnx_fp16: P | None = None  # float16 graphs (float32 inputs / outputs), used on a GPU
    decoder_onnx_fp16: P | None = None

    def named(self) -> dict:
        """The forms present, by name."""
        return {name: value for name in SEGMENTER_PATHS if (value := getattr(self, name)) is not None}


SEGMENTER_PATHS = tuple(f.name for f in fields(SegmenterForms))

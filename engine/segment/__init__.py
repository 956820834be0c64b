"""SAM 2 segmenters behind one seam: `embed(image)` once, `segment(embedding, boxes, points)` batched.

Backends: PyTorch + `sam2` (the reference), ONNX Runtime, TensorRT (never executed here). They share
pre/post-processing (`transforms`) and the embedding cache (`base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailableError, ModelFileError
from ..segmenter_forms import SegmenterForms
from .base import Embedding, EmbeddingCache, Refinement, Segmenter, SegmentOutput, pixels_key

__all__ = ["Embedding", "EmbeddingCache", "Refinement", "SegmentOutput", "Segmenter", "SegmenterFiles", "pixels_key",
           "load_segmenter", "BACKENDS"]

BACKENDS = ("tensorrt", "onnx", "torch")


@dataclass
class SegmenterFiles(SegmenterForms[Path]):
    """Where one SAM 2 lives on disk, in each form a bundle may carry (any subset: `SegmenterForms`)."""

    def onnx_pair(self, device: str) -> tuple[Path, Path]:
        """fp16 graphs on a GPU when the bundle has them (half the memory traffic); fp32 on the CPU, where
        ONNX Runtime has few fp16 kernels and would insert casts around most nodes."""
        half = (self.encoder_onnx_fp16, self.decoder_onnx_fp16)
        if device != "cpu" and all(p is not None and Path(p).is_file() for p in half):
            return half
        return self.encoder_onnx, self.decoder_onnx

    def has(self, backend: str) -> bool:
        need = {"torch": (self.config, self.checkpoint), "onnx": (self.encoder_onnx, self.decoder_onnx),
                "tensorrt": (self.encoder_engine, self.decoder_engine)}[backend]
        return all(p is not None and Path(p).is_file() for p in need)


def _build(backend: str, files: SegmenterFiles, device: str, threads: int | None, cache) -> Segmenter:
    if backend == "torch":
        from .torch_backend import load_torch_segmenter
        return load_torch_segmenter(files.config, files.checkpoint, device, cache=cache)
    if backend == "onnx":
        from .onnx_backend import OnnxSegmenter
        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        encoder, decoder = files.onnx_pair(device)
        return OnnxSegmenter(encoder, decoder, providers=providers, threads=threads, cache=cache)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTSegmenter
        return TensorRTSegmenter(files.encoder_engine, files.decoder_engine, cache=cache)
    raise ValueError(f"unknown segmenter backend {backend!r}; choose one of {BACKENDS} or 'auto'")


def load_segmenter(files: SegmenterFiles, backend: str = "auto", *, device: str = "auto",
                   threads: int | None = None, cache: EmbeddingCache | None = None) -> Segmenter:
    """The segmenter for these files. `auto` tries TensorRT, ONNX Runtime, then PyTorch, among the forms
    present, and says why each was passed over if none loads."""
    if backend != "auto":
        if not files.has(backend):
            raise ModelFileError(f"the {backend} segmenter needs files this bundle does not have ({files})")
        return _build(backend, files, device, threads, cache)
    reasons = []
    for name in BACKENDS:
        if name == "tensorrt" and device == "cpu":
            continue
        if not files.has(name):
            reasons.append(f"{name}: no files")
            continue
        try:
            return _build(name, files, device, threads, cache)
        except BackendUnavailableError as exc:
            reasons.append(f"{name}: {exc}")
    raise BackendUnavailableError("no segmenter backend could be loaded: " + "; ".join(reasons))

"""SAM 2 through ONNX Runtime: the encoder and decoder graphs written by `star-export sam2`.

The execution provider is chosen automatically (TensorRT EP, then CUDA EP, then CPU) among those this
onnxruntime build offers, and the choice is reported by `describe()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError
from .base import EmbeddingCache, Segmenter

PREFERRED_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("the ONNX segmenter needs onnxruntime: `bash installer/setup.sh --with onnx`") from None
    return onnxruntime


def choose_providers(available: list[str], requested: list[str] | None = None) -> list[str]:
    """Providers to ask for, best first: the requested ones (all must exist) or the preferred order."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(f"ONNX Runtime here offers {available}, not {missing}")
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]


class OnnxSegmenter(Segmenter):
    name = "onnx"

    def __init__(self, encoder: str | Path, decoder: str | Path, *, providers: list[str] | None = None,
                 threads: int | None = None, cache: EmbeddingCache | None = None):
        super().__init__(cache)
        ort = _ort()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = choose_providers(ort.get_available_providers(), providers)
        self.encoder = self._session(ort, encoder, options, chosen)
        self.decoder = self._session(ort, decoder, options, chosen)
        self.providers = self.encoder.get_providers()
        shape = self.encoder.get_inputs()[0].shape
        if len(shape) != 4 or not isinstance(shape[2], int):
            raise ModelFileError(f"{encoder} does not look like a SAM 2 encoder (input shape {shape})")
        self.image_size = int(shape[2])
        names = {i.name for i in self.decoder.get_inputs()}
        if not {"point_coords", "point_labels", "image_embed"} <= names:
            raise ModelFileError(f"{decoder} does not look like a SAM 2 decoder (inputs {sorted(names)})")

    @staticmethod
    def _session(ort, path, options, providers):
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"ONNX file {path} does not exist")
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise ModelFileError(f"ONNX file {path} could not be loaded ({str(exc)[:200]})") from None

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] != "CPUExecutionProvider"

    def _encode(self, pixels: np.ndarray) -> tuple[dict[str, Any], int]:
        embed, hr0, hr1 = self.encoder.run(None, {"pixels": np.ascontiguousarray(pixels, np.float32)})
        features = {"image_embed": embed, "high_res_0": hr0, "high_res_1": hr1}
        return features, sum(a.nbytes for a in features.values())

    def _decode(self, features, coords, labels):
        low, iou = self.decoder.run(None, {**features, "point_coords": coords.astype(np.float32),
                                           "point_labels": labels.astype(np.int32)})
        return low, iou

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers}

"""SAM 2 through ONNX Runtime: the encoder and decoder graphs written by `star-export sam2`.

The execution provider is chosen automatically (TensorRT EP, then CUDA EP, then CPU) among those this
onnxruntime build offers, and the choice is reported by `describe()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError, unavailable
from .base import EmbeddingCache, Segmenter

PREFERRED_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise unavailable("onnxruntime", exc, "the ONNX segmenter needs onnxruntime: "
                                              "`bash installer/setup.sh --with onnx`") from None
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

    @property
    def device_outputs(self) -> bool:
        """On the CUDA or TensorRT provider, with torch's CUDA at hand: the decoder writes its outputs into
        CUDA tensors (IO binding) and the masks stay on the GPU for the vote (device_segment)."""
        if not self.on_gpu:
            return False
        try:
            import torch
        except ImportError:
            return False
        return torch.cuda.is_available()

    def device_segment(self, embedding, boxes=None, points=None, *, device: str = "cuda"):
        """(bool masks [K, H, W] as torch tensors on `device`, the chosen masks' scores as NumPy). The decoder's
        outputs are bound to tensors allocated there (ONNX Runtime's IO binding with a device pointer), so on
        the GPU neither the logits nor the masks visit the host. (`device="cpu"` runs the same binding on
        the host: how it is tested without a GPU.)"""
        import torch

        from .base import _check_prompts
        from .device_masks import best_masks
        from .transforms import prompts_to_model
        boxes, points = _check_prompts(boxes, points)
        coords, labels = prompts_to_model(boxes, points, embedding.orig_hw, self.image_size)
        target = torch.device(device)
        index = (target.index if target.index is not None else torch.cuda.current_device()) if target.type == "cuda" else 0
        k, s = len(coords), self.image_size // 4
        shapes = {"low_res_logits": (k, 3, s, s), "iou_scores": (k, 3)}
        # an FP16 graph may keep FP16 outputs: the buffers take the graph's declared output types
        dtypes = {o.name: np.float16 if o.type == "tensor(float16)" else np.float32 for o in self.decoder.get_outputs()}
        out = {name: torch.empty(shape, dtype=torch.float16 if dtypes[name] == np.float16 else torch.float32,
                                 device=target) for name, shape in shapes.items()}
        binding = self.decoder.io_binding()
        for name, value in {**embedding.features, "point_coords": coords.astype(np.float32),
                            "point_labels": labels.astype(np.int32)}.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, tensor in out.items():
            binding.bind_output(name, target.type, index, dtypes[name], list(tensor.shape), tensor.data_ptr())
        self.decoder.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return best_masks(torch, out["low_res_logits"], out["iou_scores"], embedding.orig_hw, self.mask_threshold)

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers}

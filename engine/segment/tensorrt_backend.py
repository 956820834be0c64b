"""SAM 2 through TensorRT engines (built by `star-export sam2 --tensorrt`), run with CUDA buffers.

NEVER EXECUTED: TensorRT could not be installed on any machine the project has run on (docs/export.md, "TensorRT").
Written against the documented Python API shared by TensorRT 10 and 11 (`deserialize_cuda_engine`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`); buffers are torch CUDA tensors. The code
around it (shape bookkeeping, errors when the library or a GPU is missing) is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError
from .base import EmbeddingCache, Segmenter

# TensorRT dtype names -> torch dtype names (both libraries are imported lazily).
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (`pip install tensorrt` on a machine with a CUDA GPU)"
    try:
        import torch
    except ImportError:
        return "the TensorRT backend uses torch CUDA tensors as buffers; torch is not installed"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible"
    return None


class _Engine:
    """One deserialised engine with its execution context."""

    def __init__(self, trt, runtime, path: Path):
        if not path.is_file():
            raise ModelFileError(f"TensorRT engine {path} does not exist")
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFileError(f"TensorRT could not load {path}: built by another TensorRT version or GPU? "
                                 "Rebuild it with `star-export sam2 --tensorrt` on this machine")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _DTYPES[engine.get_tensor_dtype(n).name] for n in names}

    def run(self, torch, feeds: dict[str, Any], stream) -> dict[str, Any]:
        keep = []
        for name in self.inputs:
            t = feeds[name]
            t = t.to(device="cuda", dtype=getattr(torch, self.dtypes[name])).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out[name] = torch.empty(shape, dtype=getattr(torch, self.dtypes[name]), device="cuda")
            self.context.set_tensor_address(name, out[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return out


class TensorRTSegmenter(Segmenter):
    name = "tensorrt"

    def __init__(self, encoder: str | Path, decoder: str | Path, *, cache: EmbeddingCache | None = None):
        super().__init__(cache)
        reason = unavailable_reason()
        if reason:
            raise BackendUnavailableError(reason + "; use backend='onnx' or 'torch' instead")
        import tensorrt as trt
        import torch
        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.encoder = _Engine(trt, runtime, Path(encoder))
        self.decoder = _Engine(trt, runtime, Path(decoder))
        self.stream = torch.cuda.Stream()
        self.image_size = int(self.encoder.engine.get_tensor_shape("pixels")[2])
        # the decoder's optimization profile bounds the points per prompt (export.tensorrt.decoder_profiles)
        self.max_points = int(self.decoder.engine.get_tensor_profile_shape("point_coords", 0)[2][1])

    @property
    def on_gpu(self) -> bool:
        return True

    def _encode(self, pixels: np.ndarray):
        out = self.encoder.run(self.torch, {"pixels": self.torch.from_numpy(pixels)}, self.stream)
        return out, sum(t.numel() * t.element_size() for t in out.values())

    device_outputs = True  # the engine's outputs are CUDA tensors already: the vote can stay on the GPU

    def _decode_device(self, features, coords, labels):
        feeds = {**features, "point_coords": self.torch.from_numpy(coords), "point_labels": self.torch.from_numpy(labels)}
        out = self.decoder.run(self.torch, feeds, self.stream)
        return out["low_res_logits"], out["iou_scores"]

    def _decode(self, features, coords, labels):
        low, iou = self._decode_device(features, coords, labels)
        return low.float().cpu().numpy(), iou.float().cpu().numpy()

    def device_segment(self, embedding, boxes=None, points=None):
        """(bool masks [K, H, W] on the GPU, the chosen masks' scores as NumPy), as the PyTorch backend's."""
        from .base import _check_prompts
        from .device_masks import best_masks
        from .transforms import prompts_to_model
        boxes, points = _check_prompts(boxes, points)
        coords, labels = prompts_to_model(boxes, points, embedding.orig_hw, self.image_size)
        low, iou = self._decode_device(embedding.features, coords, labels)
        return best_masks(self.torch, low, iou, embedding.orig_hw, self.mask_threshold)

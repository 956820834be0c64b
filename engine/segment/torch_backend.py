"""SAM 2 through PyTorch and the upstream `sam2` package: the reference backend, CPU or CUDA.

Loading never runs code from a file: checkpoints are read with `torch.load(weights_only=True)` (or
safetensors) and loaded strictly into a model built from a SAM 2 YAML read as data (`sam2_config`: an
allow-list of sam2 classes and plain values; hydra's `instantiate` is never called on a config).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError, unavailable
from .base import EmbeddingCache, Segmenter
from .sam2_graph import FEATURE_NAMES, build_graphs

# What `sam2.build_sam.build_sam2` adds to every config (apply_postprocessing=True), as StAR builds it.
POSTPROCESSING_OVERRIDES = {
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
}
# What `sam2.build_sam.build_sam2_video_predictor` adds for video: masks from clicks binarized before the
# memory encoder (what the user saw is what is remembered), and small holes filled in the low-res masks.
VIDEO_PREDICTOR = "sam2.sam2_video_predictor.SAM2VideoPredictor"
VIDEO_OVERRIDES = {"binarize_mask_from_pts_for_mem_enc": True, "fill_hole_area": 8}


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise unavailable("torch", exc, "the PyTorch segmenter needs torch and sam2: run `bash installer/setup.sh "
                                        "--with torch`, or use an ONNX bundle (backend='onnx')") from None
    return torch


def resolve_config(config: str | Path) -> Path:
    """A SAM 2 config: a YAML path, or a name from the sam2 package ("sam2.1_hiera_l",
    "configs/sam2.1/sam2.1_hiera_l.yaml")."""
    path = Path(config)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    try:
        import sam2
    except ImportError:
        raise BackendUnavailableError("the sam2 package is not installed: `bash installer/setup.sh --with torch`") from None
    root = Path(sam2.__file__).parent
    name = str(config)
    candidates = [root / name, root / f"{name}.yaml", *root.glob(f"configs/**/{Path(name).stem}.yaml")]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ModelFileError(f"SAM 2 config {config!s} not found (a YAML file, or a name such as sam2.1_hiera_l)")


def load_state_dict(checkpoint: str | Path) -> dict:
    """Weights from a `.pt` ({"model": state_dict} as Meta ships them, or a bare state dict) or
    `.safetensors` file; never executes pickled code."""
    torch = _torch()
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelFileError(f"SAM 2 checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"SAM 2 checkpoint {path} could not be read ({exc.__class__.__name__}: "
                             f"{str(exc)[:200]}); is it a complete SAM 2 .pt file?") from None
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(hasattr(v, "shape") for v in sd.values()):
        raise ModelFileError(f"{path} holds no SAM 2 state dict (expected {{'model': {{name: tensor}}}})")
    return sd


def build_model(config: str | Path, checkpoint: str | Path | None = None, device: str = "cpu", *,
                video: bool = False):
    """Build SAM2Base from a config and load a checkpoint strictly (what build_sam2 does, but for config
    files anywhere on disk, read as data, and with clear errors); `video`: sam2's SAM2VideoPredictor with
    the settings `build_sam2_video_predictor` gives it (the same weights: memory modules included)."""
    torch = _torch()
    from .sam2_config import merge, read_model_config

    model_config = merge(read_model_config(resolve_config(config)), POSTPROCESSING_OVERRIDES)
    if video:
        model_config = {**merge(model_config, VIDEO_OVERRIDES), "_target_": VIDEO_PREDICTOR}
    # The config's sizes are checked on a model built without memory (its tensors on the meta device)
    # before the real one is built: a YAML's `embed_dim: 1000000` is a refusal, not a 100 GB allocation.
    shapes = {k: tuple(v.shape) for k, v in _build(model_config, config, meta=True).state_dict().items()}
    sd = load_state_dict(checkpoint) if checkpoint is not None else None
    if sd is not None:
        wrong = [f"{k}: config {shapes[k]}, checkpoint {tuple(sd[k].shape)}"
                 for k in shapes.keys() & sd.keys() if tuple(sd[k].shape) != shapes[k]]
        if wrong:
            raise ModelFileError(f"checkpoint {checkpoint} does not fit config {config}: {len(wrong)} tensors of "
                                 f"another shape (e.g. {'; '.join(sorted(wrong)[:2])})")
    else:
        numel = sum(int(np.prod(shape)) for shape in shapes.values())
        if numel > MAX_SAM2_VALUES:
            raise ModelFileError(f"SAM 2 config {config} describes {numel / 1e9:.1f} G weights, beyond any SAM 2 "
                                 f"(the largest published, hiera-L, has 0.22 G; limit {MAX_SAM2_VALUES / 1e9:.0f} G)")
    model = _build(model_config, config)
    if sd is not None:
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ModelFileError(
                f"checkpoint {checkpoint} does not fit config {config}: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ModelFileError(f"checkpoint {checkpoint} has non-finite weights in {bad[:3]}")
    return model.to(device).eval()


MAX_SAM2_VALUES = 2_000_000_000  # weights and buffers of a config built without a checkpoint to hold it to
_FACTORIES = ("empty", "zeros", "ones", "full", "rand", "randn", "empty_strided")


def _build(model_config: dict, config, *, meta: bool = False):
    """SAM2Base from a checked config; `meta`: every tensor a module creates is put on the meta device (shapes
    without memory; small tensors made otherwise, e.g. linspace for drop-path rates, stay real)."""
    torch = _torch()
    from torch.overrides import TorchFunctionMode

    from .sam2_config import build_from_config

    factories = {getattr(torch, name) for name in _FACTORIES}

    class OnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in factories and kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    try:
        with OnMeta() if meta else contextlib.nullcontext():
            return build_from_config(model_config)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError, IndexError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not meta:
            raise  # a real build's RuntimeError is an allocation failing, not the config's fault
        raise ModelFileError(f"SAM 2 config {config} does not describe a model sam2 can build "
                             f"({exc.__class__.__name__}: {str(exc)[:200]})") from None


class TorchSegmenter(Segmenter):
    """The upstream SAM 2 modules driven with this project's shared pre/post-processing."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", *, bf16: bool | None = None, cache: EmbeddingCache | None = None):
        super().__init__(cache)
        torch = _torch()
        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = int(model.image_size)
        # StAR runs SAM under bf16 autocast on CUDA; on CPU full precision is both faster and exact.
        self.bf16 = (self.device.type == "cuda") if bf16 is None else bf16
        self._encoder, self._decoder = build_graphs(self.model)

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def device_outputs(self) -> bool:
        """Masks can stay on the GPU (device_segment) for the vote there."""
        return self.on_gpu

    def _context(self):
        torch = self.torch
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.bf16:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        return stack

    def _encode(self, pixels: np.ndarray) -> tuple[dict[str, Any], int]:
        with self._context():
            maps = self._encoder(self.torch.from_numpy(pixels).to(self.device))
        features = dict(zip(FEATURE_NAMES, maps))
        return features, sum(f.numel() * f.element_size() for f in maps)

    def _decode_torch(self, features, coords: np.ndarray, labels: np.ndarray):
        torch = self.torch
        with self._context():
            low, iou = self._decoder(*(features[n] for n in FEATURE_NAMES),
                                     torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device))
        return low.float(), iou.float()

    def _decode(self, features, coords, labels):
        low, iou = self._decode_torch(features, coords, labels)
        return low.cpu().numpy(), iou.cpu().numpy()

    def device_masks(self, embedding, boxes=None, points=None):
        """bool masks [K, H, W] left on this backend's device (CUDA: for the voting kernel, no host
        copy), with the same selection and upsampling as `segment`."""
        return self.device_segment(embedding, boxes, points)[0]

    def device_segment(self, embedding, boxes=None, points=None):
        """(bool masks [K, H, W] on this backend's device, SAM's scores of the chosen masks as NumPy): what
        the pipeline votes on where the masks are; only the K scores come to the host."""
        from .base import _check_prompts
        from .device_masks import best_masks
        from .transforms import prompts_to_model
        boxes, points = _check_prompts(boxes, points)
        coords, labels = prompts_to_model(boxes, points, embedding.orig_hw, self.image_size)
        low, iou = self._decode_torch(embedding.features, coords, labels)
        return best_masks(self.torch, low, iou, embedding.orig_hw, self.mask_threshold)

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device), "bf16": self.bf16}


def load_torch_segmenter(config: str | Path, checkpoint: str | Path | None, device: str = "auto",
                         **kwargs) -> TorchSegmenter:
    torch = _torch()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError("device='cuda' was asked for, but PyTorch sees no CUDA GPU; use device='cpu'")
    return TorchSegmenter(build_model(config, checkpoint, "cpu"), device, **kwargs)

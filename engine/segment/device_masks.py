"""SAM's multimask output -> the chosen masks at the original size, computed where the logits are (a CUDA
device, for the pipeline's vote on the GPU). The same selection as transforms.select_best (ties to the later
mask, StAR's argsort) and the same upsampling as SAM2Transforms.postprocess_masks (bilinear,
align_corners=False), in torch. Shared by every backend that can hand back device tensors: PyTorch, TensorRT,
and ONNX Runtime on its CUDA provider through IO binding."""

from __future__ import annotations

import numpy as np


def best_masks(torch, low, iou, orig_hw: tuple[int, int], threshold: float = 0.0):
    """low [K, 3, h, w] and iou [K, 3] torch tensors (any device) -> (bool masks [K, H, W] on that device,
    the chosen masks' scores as float32 NumPy: only K numbers cross to the host)."""
    low, iou = low.float(), iou.float()
    if not bool(torch.isfinite(low).all() & torch.isfinite(iou).all()):  # see base.check_finite
        from ..errors import ModelFileError
        from .base import NON_FINITE

        raise ModelFileError(NON_FINITE)
    m = iou.shape[1]
    idx = (m - 1) - torch.argmax(iou.flip(1), dim=1)
    rows = torch.arange(len(idx), device=low.device)
    best = low[rows, idx][:, None]
    with torch.inference_mode():
        up = torch.nn.functional.interpolate(best, tuple(orig_hw), mode="bilinear", align_corners=False)
    return up[:, 0] > threshold, iou[rows, idx].cpu().numpy().astype(np.float32)

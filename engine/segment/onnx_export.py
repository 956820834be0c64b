"""SAM 2 -> ONNX graphs (used by `star-export sam2` and `star bench segment`): an image encoder and a prompt decoder with dynamic prompt and point counts.

It sits in the engine rather than in export/ because `star bench segment` exports the graphs it times and
the engine must not import the exporter; both trace the modules of `sam2_graph` that the PyTorch backend
runs, so the two cannot drift apart. `export/sam2.py` calls it for bundles.

The graphs are `sam2_graph.build_graphs` (what the PyTorch backend runs) and hold only the network; resizing, normalisation, prompt transforms and upsampling are the
engine's shared NumPy code (engine.segment.transforms), so every backend sees identical inputs.

Encoder: pixels float32 [1, 3, S, S] -> image_embed [1, C, S/16, S/16], high_res_0 [1, C/8, S/4, S/4],
         high_res_1 [1, C/4, S/8, S/8]
Decoder: the three maps + point_coords float32 [K, P, 2] (model frame) + point_labels int32 [K, P]
         -> low_res_logits float32 [K, 3, S/4, S/4], iou_scores float32 [K, 3]
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .sam2_graph import FEATURE_NAMES, build_graphs

ENCODER_INPUTS = ["pixels"]
ENCODER_OUTPUTS = list(FEATURE_NAMES)
DECODER_INPUTS = [*FEATURE_NAMES, "point_coords", "point_labels"]
DECODER_OUTPUTS = ["low_res_logits", "iou_scores"]
OPSET = 18


@dataclass
class OnnxExport:
    encoder: Path
    decoder: Path
    image_size: int
    seconds: float


def export_sam2_onnx(model, out_dir: str | Path, *, encoder_name: str = "sam2_encoder.onnx",
                     decoder_name: str = "sam2_decoder.onnx") -> OnnxExport:
    """Export a loaded SAM2Base (eval, CPU, fp32) to two ONNX files in `out_dir` (written to temporary
    names and renamed at the end, so an interrupted export never leaves a file that looks complete)."""
    import torch

    model = model.cpu().float().eval()
    s = int(model.image_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Example inputs made outside inference_mode; K >= 2 and P >= 2 or the exporter fixes those dims.
    pixels = torch.randn(1, 3, s, s)
    encoder, decoder = build_graphs(model)
    with torch.no_grad():
        embed, hr0, hr1 = encoder(pixels)
    coords = torch.rand(3, 3, 2) * s
    labels = torch.tensor([[2, 3, 1]] * 3, dtype=torch.int32)

    enc_path, dec_path = out_dir / encoder_name, out_dir / decoder_name
    k = torch.export.Dim("prompts", min=1, max=4096)
    p = torch.export.Dim("points", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export(encoder, (pixels,), enc_path, ENCODER_INPUTS, ENCODER_OUTPUTS, None)
        _export(decoder, (embed, hr0, hr1, coords, labels), dec_path, DECODER_INPUTS, DECODER_OUTPUTS,
                {"image_embed": None, "high_res_0": None, "high_res_1": None,
                 "point_coords": {0: k, 1: p}, "point_labels": {0: k, 1: p}})
    return OnnxExport(enc_path, dec_path, s, time.perf_counter() - t0)


def _export(module, args, path: Path, inputs, outputs, dynamic_shapes) -> None:
    import torch

    tmp = path.with_name(path.name + ".partial")
    program = torch.onnx.export(module, args, dynamo=True, input_names=inputs, output_names=outputs,
                                dynamic_shapes=dynamic_shapes, opset_version=OPSET, optimize=True, verbose=False)
    program.save(str(tmp), external_data=False)
    tmp.replace(path)

"""`star-export import-sam`: SAM 2 ONNX graphs back to a PyTorch checkpoint.

Checked against the weights the graphs were exported from (the tiny bundle's random checkpoint: moved
tensors bit-exact, the solved position embedding to float32 rounding), and on the shipped nano bundle,
whose checkpoint is gone, against ONNX Runtime running the bundle's own graphs through the engine.
"""

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelFileError
from tests.models import require

REPO = Path(__file__).resolve().parents[2]
NANO = REPO / "engine" / "models" / "nano"
# Parameters no image graph uses (video memory, mask prompts, object-score head): left at initialization.
UNUSED_PREFIXES = ("memory_", "maskmem_", "mask_downsample", "obj_ptr", "no_obj", "no_mem_pos_enc",
                   "sam_prompt_encoder.mask_downscaling", "sam_mask_decoder.pred_obj_score_head")


def _state(path):
    import torch

    return {k: v.numpy() for k, v in torch.load(path, weights_only=True, map_location="cpu")["model"].items()}


def test_import_gives_back_the_exported_weights(tiny_sam2, tiny_bundle, tmp_path, capsys):
    require("onnx")
    from export.cli import main

    assert main(["import-sam", "--bundle", str(tiny_bundle), "--out", str(tmp_path / "sam")]) == 0
    assert "outputs match the graphs" in capsys.readouterr().err
    original, imported = _state(tiny_sam2.checkpoint), _state(tmp_path / "sam" / "sam2.pt")
    assert set(imported) == set(original)
    used = [n for n in original if not n.startswith(UNUSED_PREFIXES)]
    assert len(used) > 150
    for name in used:
        if name == "image_encoder.trunk.pos_embed":  # solved back from its bicubic interpolation
            np.testing.assert_allclose(imported[name], original[name], rtol=0, atol=1e-5 * np.abs(original[name]).max())
        else:
            np.testing.assert_array_equal(imported[name], original[name], err_msg=name)
    assert not (tmp_path / "sam.partial").exists()


def test_the_nano_segmenter_imported_segments_as_the_shipped_graphs(tmp_path):
    require("onnxruntime")
    from engine.bundle import load_bundle
    from engine.segment import load_segmenter
    from engine.segment.torch_backend import TorchSegmenter, build_model
    from export.sam_import import import_segmenter
    from training.nano.world import make_scene

    result = import_segmenter(NANO / "sam2" / "sam2_encoder.onnx", NANO / "sam2" / "sam2_decoder.onnx", tmp_path / "sam")
    assert result.solved == 1 and result.moved > 150
    shipped = load_segmenter(load_bundle(NANO).segmenter_files(), "onnx", device="cpu", threads=1)
    ours = TorchSegmenter(build_model(result.config, result.checkpoint, "cpu"), "cpu", bf16=False)
    scene = make_scene(np.random.default_rng(7), 224)
    boxes = np.array([[int(x) for x in np.argwhere(o.mask)[:, ::-1].min(0)] + [int(x) for x in np.argwhere(o.mask)[:, ::-1].max(0)]
                      for o in scene.objects], np.float32)
    a = shipped.segment(shipped.embed(scene.image), boxes=boxes)
    b = ours.segment(ours.embed(scene.image), boxes=boxes)
    assert len(boxes) >= 1 and a.masks.any()
    inter = (a.masks & b.masks).sum((1, 2))
    union = np.maximum((a.masks | b.masks).sum((1, 2)), 1)
    assert (inter / union).min() > 0.999
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)


def test_graphs_of_two_segmenters_are_refused(tiny_bundle, tmp_path):
    require("onnx")
    from export.sam_import import import_segmenter

    with pytest.raises(ModelFileError, match="not a segmenter of this config|do not come from this config"):
        import_segmenter(tiny_bundle / "sam2" / "sam2_encoder.onnx", NANO / "sam2" / "sam2_decoder.onnx", tmp_path / "x")
    with pytest.raises(ModelFileError, match="is not an ONNX model"):
        (tmp_path / "bad.onnx").write_bytes(b"not a model")
        import_segmenter(tmp_path / "bad.onnx", NANO / "sam2" / "sam2_decoder.onnx", tmp_path / "x")
    assert not (tmp_path / "x").exists()

"""`star-train nano-sam-video`: from the shipped nano SAM (imported from its ONNX graphs), two clips of
training change the memory modules and nothing of the image path (the bundle's own graphs accept the result
beside them), and the result is a SAM 2 that `star track` can load as a video predictor; with the decoder
trained too, the decoder moves, the rest of the image path stays, and the graphs refuse it beside them."""

import shutil

import pytest

from tests.models import require


@pytest.mark.timeout(600)
def test_two_clips_train_the_memory_and_leave_the_image_path_alone(tmp_path):
    require("torch")
    require("onnx")
    import torch

    from engine.bundle import default_bundle_dir
    from engine.segment.torch_backend import build_model
    from export.cli import main as export_main
    from training.cli import main
    from training.nano.sam_video import MEMORY_MODULES

    assert export_main(["import-sam", "--bundle", str(default_bundle_dir()), "--out", str(tmp_path / "sam")]) == 0
    start = f"{tmp_path / 'sam' / 'sam2.yaml'}:{tmp_path / 'sam' / 'sam2.pt'}"
    assert main(["nano-sam-video", "--sam", start, "--out", str(tmp_path / "video"), "--steps", "2", "--frames", "3",
                 "--quiet"]) == 0
    before = torch.load(tmp_path / "sam" / "sam2.pt", weights_only=True)["model"]
    after = torch.load(tmp_path / "video" / "sam2.pt", weights_only=True)["model"]
    assert before.keys() == after.keys()
    memory = [k for k in after if any(k == m or k.startswith(m + ".") for m in MEMORY_MODULES)]
    image = [k for k in after if k not in memory]
    assert memory and len(image) > 100
    assert all(torch.equal(before[k], after[k]) for k in image)
    assert sum(not torch.equal(before[k], after[k]) for k in memory) > len(memory) // 2
    predictor = build_model(tmp_path / "video" / "sam2.yaml", tmp_path / "video" / "sam2.pt", video=True)
    assert type(predictor).__name__ == "SAM2VideoPredictor"
    bundle = tmp_path / "bundle"  # the graphs themselves judge that the image path is untouched
    shutil.copytree(default_bundle_dir(), bundle)
    assert export_main(["sam2", "--checkpoint", str(tmp_path / "video" / "sam2.pt"), "--config",
                        str(tmp_path / "video" / "sam2.yaml"), "--video", "--keep-graphs", "--out", str(bundle)]) == 0


@pytest.mark.timeout(600)
def test_training_the_decoder_too_moves_it_and_the_graphs_refuse_it_beside_them(tmp_path, capsys):
    require("torch")
    require("onnx")
    import torch

    from engine.bundle import default_bundle_dir
    from export.cli import main as export_main
    from training.cli import main
    from training.nano.sam_video import DECODER, MEMORY_MODULES

    assert export_main(["import-sam", "--bundle", str(default_bundle_dir()), "--out", str(tmp_path / "sam")]) == 0
    start = f"{tmp_path / 'sam' / 'sam2.yaml'}:{tmp_path / 'sam' / 'sam2.pt'}"
    assert main(["nano-sam-video", "--sam", start, "--out", str(tmp_path / "video"), "--steps", "3", "--frames", "3",
                 "--train", "memory+decoder", "--quiet"]) == 0
    before = torch.load(tmp_path / "sam" / "sam2.pt", weights_only=True)["model"]
    after = torch.load(tmp_path / "video" / "sam2.pt", weights_only=True)["model"]
    memory = {k for k in after if any(k == m or k.startswith(m + ".") for m in MEMORY_MODULES)}
    decoder = [k for k in after if k.startswith(DECODER + ".") and k not in memory]
    assert decoder and sum(not torch.equal(before[k], after[k]) for k in decoder) > len(decoder) // 2
    rest = [k for k in after if k not in memory and k not in decoder]
    assert all(torch.equal(before[k], after[k]) for k in rest)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    capsys.readouterr()
    assert export_main(["sam2", "--checkpoint", str(tmp_path / "video" / "sam2.pt"), "--config",
                        str(tmp_path / "video" / "sam2.yaml"), "--video", "--keep-graphs", "--out", str(bundle)]) != 0
    assert "differs from the bundle's graphs" in capsys.readouterr().err


@pytest.mark.timeout(600)
def test_a_pass_through_memory_gives_the_decoder_the_image_features_whatever_the_memory_holds(tmp_path):
    """`--init pass-through` on a SAM imported from image graphs: the memory attention's output is the image
    features plus the no-memory embedding (what the mask decoder was trained on), within the fit's error, and
    does not depend on the memory yet."""
    require("torch")
    require("onnx")
    import torch

    from engine.bundle import default_bundle_dir
    from engine.segment.torch_backend import build_model
    from export.cli import main as export_main
    from training.nano.clips import make_clip
    from training.nano.sam_video import _frames_tensor, pass_through_init

    assert export_main(["import-sam", "--bundle", str(default_bundle_dir()), "--out", str(tmp_path / "sam")]) == 0
    model = build_model(tmp_path / "sam" / "sam2.yaml", tmp_path / "sam" / "sam2.pt")
    fit = pass_through_init(model, _frames_tensor([make_clip(i, frames=2).frames[0] for i in range(4)], model.image_size))
    assert 0.9 < fit <= 1.0
    image = _frames_tensor([make_clip(50, frames=2).frames[1]], model.image_size)  # a frame the fit never saw
    with torch.no_grad():
        _, feats, pos, _ = model._prepare_backbone_features(model.forward_image(image))
        expected = feats[-1] + model.no_mem_embed
        outputs = []
        for seed in (0, 1):
            generator = torch.Generator().manual_seed(seed)
            memory = torch.randn(feats[-1].shape[0], 1, model.mem_dim, generator=generator)
            outputs.append(model.memory_attention(curr=[feats[-1]], curr_pos=[pos[-1]], memory=memory,
                                                  memory_pos=torch.randn(memory.shape, generator=generator),
                                                  num_obj_ptr_tokens=0))
    assert torch.equal(outputs[0], outputs[1])
    residual = (outputs[0] - expected).pow(2).sum() / (expected - expected.mean((0, 1))).pow(2).sum()
    assert residual < 0.1

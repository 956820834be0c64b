"""`star-train nano-sam-video`: from the shipped nano SAM (imported from its ONNX graphs), two clips of
training change the memory modules and nothing of the image path, and the result is a SAM 2 that
`star track` can load as a video predictor."""

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

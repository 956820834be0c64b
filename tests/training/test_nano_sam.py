"""The nano segmenter's trainer: the positional-attention initialisation does what it claims, and a
run with it trains, saves and resumes (the init is not re-applied over a checkpoint)."""

import json

import numpy as np

from tests.models import require


def _small(tmp_path, **kw):
    from training.nano.segmenter import SamTrainConfig

    return SamTrainConfig(str(tmp_path / "sam"), steps=2, batch=1, image_size=128, eval_every=2, eval_scenes=1,
                          save_every=2, **kw)


def test_pe_init_makes_cross_attention_a_position_matcher(tmp_path):
    torch = require("torch")
    require("sam2")
    from training.nano.segmenter import SamTrainer

    trainer = SamTrainer(_small(tmp_path, pe_init=True))
    model = trainer.model
    pe = model.sam_prompt_encoder.pe_layer
    points = torch.tensor([[[0.30, 0.40], [0.32, 0.41], [0.80, 0.10], [0.05, 0.95]]])
    with torch.no_grad():
        enc = pe._pe_encoding(points)[0]  # [4, d]: sin | cos of the random Fourier features
        t = model.sam_mask_decoder.transformer
        for attn in [t.layers[0].cross_attn_image_to_token, t.layers[-1].cross_attn_token_to_image,
                     t.final_attn_token_to_image]:
            heads = attn.num_heads
            q = attn.q_proj(enc[:1]).view(heads, -1)
            k = attn.k_proj(enc).view(4, heads, -1)
            score = (q[None] * k).sum(-1)  # [4 points, heads]
            # by hand: each head's score is gain^2 * sum over its frequencies of cos(2 pi b . (p - q))
            b = pe.positional_encoding_gaussian_matrix  # [2, d/2]
            phase = 2 * np.pi * ((2 * points[0] - 1) @ b)  # the PE layer maps [0,1] to [-1,1] first
            per_head = q.shape[1] // 2
            gain = float(attn.q_proj.weight.abs().max())
            for h in range(heads):
                freqs = [(h * per_head + j) % (enc.shape[1] // 2) for j in range(per_head)]
                expected = gain ** 2 * torch.cos(phase[:, freqs] - phase[:1, freqs]).sum(-1)
                np.testing.assert_allclose(score[:, h], expected, rtol=1e-4, atol=1e-4)
            assert bool((score[0] > score[2]).all() and (score[0] > score[3]).all())


def test_sam_trainer_with_pe_init_trains_and_resumes(tmp_path):
    torch = require("torch")
    require("sam2")
    from training.nano.segmenter import SamTrainer

    SamTrainer(_small(tmp_path, pe_init=True)).run(progress=False)
    records = [json.loads(x) for x in (tmp_path / "sam" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    saved = torch.load(tmp_path / "sam" / "checkpoint" / "sam2_nano.pt", weights_only=True)["model"]
    resumed = SamTrainer(_small(tmp_path, pe_init=True))
    assert resumed.step == 2
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, saved[name]), name  # the checkpoint, not a fresh init


def test_mask_outputs_best_vs_all_by_hand():
    """One object, three outputs: output 0 is the object, 1 and 2 are empty. "best" scores output 0
    alone; "all" averages the three (each computed by hand from BCE + dice)."""
    torch = require("torch")
    from training.nano.segmenter import sam_losses

    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, 2:6, 2:6] = True
    logits = torch.full((1, 3, 8, 8), -20.0)
    logits[0, 0][gt[0]] = 20.0
    iou = torch.zeros(1, 3)
    best = sam_losses(logits, iou, gt, "bce+dice", "best")
    every = sam_losses(logits, iou, gt, "bce+dice", "all")
    # output 0: BCE ~ 0, dice ~ 0; an empty output: BCE = 16/64 * 20, dice = 1 - 1/17
    empty = 16 / 64 * 20 + (1 - 1 / 17)
    assert float(best["mask"]) < 1e-3
    assert float(every["mask"]) == __import__("pytest").approx(2 * empty / 3, rel=1e-3)
    assert float(best["train_iou"]) == float(every["train_iou"]) == 1.0


def test_sam_trainer_on_the_wider_world(tmp_path):
    """wide_share = 1: every scene at its own size and aspect; the box jitter stays inside each image's
    own width and height; validation reports the wide scenes beside the classic ones."""
    require("torch")
    require("sam2")
    from training.nano.segmenter import SamTrainer, jittered_box

    trainer = SamTrainer(_small(tmp_path, wide_share=1.0))
    shapes = {trainer.scene("train", i)[0].image.shape[:2] for i in range(6)}
    assert any(h != w for h, w in shapes)
    assert trainer.scene("val", 0, wide=False)[0].image.shape[:2] == (224, 224)
    trainer.run(progress=False)
    records = [json.loads(x) for x in (tmp_path / "sam" / "log.jsonl").read_text().splitlines()]
    assert {"val_miou_box_point", "val_wide_miou_box_point"} <= set(records[-1])
    rng = np.random.default_rng(0)
    for _ in range(200):  # a 300 x 100 image: x up to 299, y up to 99
        box = jittered_box([250, 60, 299, 99], rng, 0.5, (300, 100))
        assert 0 <= box[0] <= box[2] <= 299 and 0 <= box[1] <= box[3] <= 99


def test_sam_trainer_starts_from_a_checkpoint(tiny_sam2, tmp_path):
    """--init: the run starts from the given weights (not a fresh or PE init) at the checkpoint's own input
    size, with the config beside it; a checkpoint without its config is refused."""
    torch = require("torch")
    import pytest

    from engine.errors import ModelFileError
    from training.nano.segmenter import SamTrainer

    start = torch.load(tiny_sam2.checkpoint, weights_only=True)["model"]
    trainer = SamTrainer(_small(tmp_path, init=str(tiny_sam2.checkpoint)))  # _small asks for 128 px; the checkpoint is 256
    assert trainer.image_size == tiny_sam2.image_size == 256
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, start[name]), name
    trainer.run(progress=False)
    moved = torch.load(tmp_path / "sam" / "checkpoint" / "sam2_nano.pt", weights_only=True)["model"]
    assert any(not torch.equal(moved[n], start[n]) for n in start)
    lonely = tmp_path / "lonely.pt"
    lonely.write_bytes(tiny_sam2.checkpoint.read_bytes())
    with pytest.raises(ModelFileError, match="config lonely.yaml is not beside it"):
        SamTrainer(_small(tmp_path / "b", init=str(lonely)))

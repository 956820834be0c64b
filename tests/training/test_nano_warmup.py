"""The nano warm-up: it trains, logs the image-vs-blank diagnostic and resumes exactly where it stopped;
its supervised-attention, naming and read-out losses by hand; its schedule; prefetch workers; devices."""

import json
import math

import numpy as np
import pytest

from tests.models import require


def test_warmup_trains_logs_and_resumes(nano_small, tmp_path):
    torch = require("torch")
    from training.nano.queries import REFERRING
    from training.nano.warmup import Phase, Warmup, WarmupConfig

    curriculum = (Phase(2, (REFERRING,), 2), Phase(10 ** 9, (REFERRING,), None))
    cfg = WarmupConfig(str(nano_small), str(tmp_path / "run"), steps=2, batch=2, eval_every=2, save_every=2,
                       eval_rows=2, curriculum=curriculum, lr=1e-3, warmup_steps=1)
    w = Warmup(cfg)
    enc, _ = w.batch(w.examples("warmup", 0, 2, w.data_config(curriculum[0])))
    eos = w.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row in enc["labels"]:  # every target completion ends the turn with EOS, then padding
        supervised = row[row != -100]
        assert int(supervised[-1]) == eos and int((supervised == eos).sum()) == 1
    w.run(progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert {"image_gain", "val_digits", "val_digits_blank", "aux_row", "aux_col", "aux_kind"} <= set(records[-1])
    assert records[-1]["image_gain"] == pytest.approx(records[-1]["val_digits_blank"] - records[-1]["val_digits"])

    # The checkpoint holds the model, the aux heads and the optimizer: a resumed run continues the count
    # and starts from the saved weights (not the initial ones).
    w2 = Warmup(WarmupConfig(**{**cfg.__dict__, "steps": 3}))
    assert w2.step == 2
    saved = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=True)
    assert saved["step"] == 2 and saved["optimizer"]["state"]
    from transformers import Qwen2_5_VLForConditionalGeneration

    init = Qwen2_5_VLForConditionalGeneration.from_pretrained(nano_small)
    assert not torch.equal(init.lm_head.weight, w2.model.lm_head.weight)
    w2.run(progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]


def test_vision_pretraining_changes_only_the_tower_and_the_warmup_continues(nano_small, tmp_path):
    torch = require("torch")
    from engine.errors import ModelFileError
    from training.cli import main
    from training.nano.queries import REFERRING
    from training.nano.vision_pretrain import VisionPretrain, VisionPretrainConfig
    from training.nano.warmup import Phase, Warmup, WarmupConfig

    with pytest.raises(ModelFileError, match="no warm-up checkpoint"):
        VisionPretrain(VisionPretrainConfig(str(tmp_path / "nothing")))
    curriculum = (Phase(10 ** 9, (REFERRING,), 2),)
    cfg = WarmupConfig(str(nano_small), str(tmp_path / "run"), steps=1, batch=2, eval_every=1, save_every=1,
                       eval_rows=2, curriculum=curriculum, lr=1e-3, warmup_steps=1, kind_weight=2.0)
    Warmup(cfg).run(progress=False)
    ckpt = tmp_path / "run" / "checkpoint"
    settings = (ckpt / "warmup.json").read_text()
    before = Warmup(cfg).model.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    import shutil

    for copy in ("same-seed", "other-seed"):
        shutil.copytree(tmp_path / "run", tmp_path / copy)
    assert main(["nano-vision", "--warmup", str(tmp_path / "run"), "--steps", "3", "--batch", "2", "--lr", "1e-2",
                 "--eval-every", "3", "--eval-scenes", "4", "--quiet"]) == 0
    after = Warmup(WarmupConfig(**{**cfg.__dict__, "steps": 2}))
    assert after.step == 1  # the warm-up's step count and settings are the folder's own
    assert (ckpt / "warmup.json").read_text() == settings
    changed = {k for k, v in after.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".visual." in k or k.startswith("visual.") for k in changed)
    assert any("merger" in k for k in changed)  # the merger is the tower's last part: it feeds the LM
    log = [json.loads(line) for line in (tmp_path / "run" / "vision-pretrain.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert all(0.0 <= r["kind_acc"] <= 1.0 for r in log if "kind_acc" in r) and "kind_acc" in log[-1]
    # --seed draws the training scenes: step 1's loss (before any update) repeats with the default seed only
    first_loss = {}
    for copy, seed in (("same-seed", "13"), ("other-seed", "14")):
        assert main(["nano-vision", "--warmup", str(tmp_path / copy), "--steps", "1", "--batch", "2", "--seed", seed,
                     "--eval-scenes", "2", "--quiet"]) == 0
        first_loss[copy] = json.loads((tmp_path / copy / "vision-pretrain.jsonl").read_text().splitlines()[1])["loss"]
    assert first_loss["same-seed"] == pytest.approx(log[1]["loss"], rel=1e-5)
    assert first_loss["other-seed"] != pytest.approx(log[1]["loss"], rel=1e-3)
    after.run(progress=False)  # the warm-up goes on from the new tower
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 2




def test_attention_supervision_by_hand(nano_small, tmp_path):
    """With uniform attention, the loss is -log(cells / sequence length) for every coordinate of every
    object; the object's cells are where its mask covers >= 20% of a 28-pixel cell."""
    torch = require("torch")
    from training.nano.aux_targets import object_cells
    from training.nano.dataset import NanoConfig
    from training.nano.warmup import Warmup, WarmupConfig

    mask = np.zeros((112, 112), bool)
    mask[30:60, 60:100] = True  # the same object as test_cell_targets_by_hand: cells (1, 2) and (1, 3)
    assert object_cells(mask, 112).tolist() == [1 * 4 + 2, 1 * 4 + 3]
    assert object_cells(np.pad(np.ones((3, 3), bool), ((50, 59), (50, 59))), 112).tolist() == [1 * 4 + 1]

    w = Warmup(WarmupConfig(str(nano_small), str(tmp_path / "run"), attn_heads=((1, 0),), batch=2))
    examples = [e for i in range(30) if (e := w.examples("val", i, 1, NanoConfig(image_size=112, frame="pixels-112"))[0]).targets][:2]
    enc, targets = w.batch(examples)
    ids = enc["input_ids"]
    at = w.coords.answer_positions(ids[:, :-1], enc["labels"][:, 1:])
    T = ids.shape[1]
    uniform = torch.full((2, 2, T, T), 1.0 / T)
    got = w.attention_loss([None, uniform], ids, at, targets["pointers"])["aux_attn"]
    assert [len(p) for p in targets["pointers"]] == [6 * len(ex.targets) for ex in examples]
    sizes = [len(c) for ex in targets["pointers"] for c in ex]
    assert float(got) == pytest.approx(float(np.mean([-np.log(n / T) for n in sizes])), rel=1e-5)
    losses = w.losses(enc, targets)  # the real forward pass (eager attention) gives a finite loss
    assert np.isfinite(losses["aux_attn"].item()) and losses["aux_attn"].item() > 0

    # A listed trace: 4 coordinates per listed object, left to right, then 6 per target; each must line
    # up with a coordinate token of the row, or the loss would skip the row.
    listed = [w.examples("val", i, 1, NanoConfig(image_size=112, frame="pixels-112", trace="listed"))[0] for i in range(2)]
    enc, targets = w.batch(listed)
    at = w.coords.answer_positions(enc["input_ids"][:, :-1], enc["labels"][:, 1:])
    for b, ex in enumerate(listed):
        leftmost = min(ex.scene.objects, key=lambda o: o.centroid[0])
        assert len(targets["pointers"][b]) == 4 * len(ex.scene.objects) + 6 * len(ex.targets) == int(at[b].sum())
        assert all(c.tolist() == object_cells(leftmost.mask, 112).tolist() for c in targets["pointers"][b][:4])
    T = enc["input_ids"].shape[1]
    got = w.attention_loss([None, torch.full((2, 2, T, T), 1.0 / T)], enc["input_ids"], at, targets["pointers"])["aux_attn"]
    sizes = [len(c) for ex in targets["pointers"] for c in ex]
    assert float(got) == pytest.approx(float(np.mean([-np.log(n / T) for n in sizes])), rel=1e-5)


@pytest.mark.parametrize("trace", ["short", "listed"])
def test_naming_supervision_by_hand(nano_small, tmp_path, trace):
    """The rows the naming loss supervises predict exactly the tokens that spell each mentioned object's
    label; with uniform attention the loss is the mean of -log(cells / sequence length) over those rows."""
    torch = require("torch")
    from training.nano.aux_targets import label_mentions, object_cells
    from training.nano.dataset import LISTING, SIZES, NanoConfig
    from training.nano.warmup import Warmup, WarmupConfig

    w = Warmup(WarmupConfig(str(nano_small), str(tmp_path / "run"), name_heads=((1, 1),), label_weight=1.0, batch=2))
    config = NanoConfig(image_size=112, frame="pixels-112", trace=trace)
    examples = [e for i in range(30) if (e := w.examples("val", i, 1, config)[0]).targets][:2]
    enc, targets = w.batch(examples)
    ids = enc["input_ids"]
    expected = []
    for b, ex in enumerate(examples):
        mentions = label_mentions(ex.completion, ex.scene, ex.query.targets, [o.id for o in ex.listed], (LISTING, SIZES))
        if trace == "listed":  # every listed object is named in the listing
            assert len(mentions) >= len(ex.scene.objects) + 2
        assert len(targets["namings"][b]) == len(mentions) >= 2  # the trace and the answer name each target
        for (rows, cells), m in zip(targets["namings"][b], mentions):
            spelt = w.tokenizer.decode(ids[b, torch.as_tensor(rows) + 1])
            assert spelt.strip(' "') == ex.completion[m.start:m.end]
            assert cells.tolist() == object_cells(ex.scene.objects[m.object_index].mask, 112).tolist()
            expected += [-np.log(len(cells) / ids.shape[1])] * len(rows)
    T = ids.shape[1]
    got = w.naming_loss([None, torch.full((2, 2, T, T), 1.0 / T)], ids, targets["namings"])["aux_name"]
    assert float(got) == pytest.approx(float(np.mean(expected)), rel=1e-5)
    losses = w.losses(enc, targets)  # the real forward pass gives a finite loss
    assert np.isfinite(losses["aux_name"].item()) and losses["aux_name"].item() > 0
    assert "aux_attn" not in losses  # the coordinate heads are not supervised unless asked
    with pytest.raises(ValueError, match="go together"):
        Warmup(WarmupConfig(str(nano_small), str(tmp_path / "run2"), label_weight=1.0))


def test_warmup_learning_rate_schedule_by_hand():
    from training.nano.warmup import WarmupConfig, learning_rate

    ramp = WarmupConfig("m", "o", steps=1000, lr=1e-3, warmup_steps=100)
    assert learning_rate(ramp, 0) == pytest.approx(1e-5) and learning_rate(ramp, 99) == pytest.approx(1e-3)
    assert learning_rate(ramp, 900) == pytest.approx(1e-3)  # constant without decay_from
    cosine = WarmupConfig("m", "o", steps=1000, lr=1e-3, warmup_steps=100, decay_from=600, final_lr=1e-4)
    assert learning_rate(cosine, 599) == pytest.approx(1e-3)
    assert learning_rate(cosine, 800) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # halfway: cos(pi/2) = 0
    assert learning_rate(cosine, 1000) == pytest.approx(1e-4) and learning_rate(cosine, 5000) == pytest.approx(1e-4)
    # a leg that stops at step 700 of a cosine that ends at 1,000 (the run continues with other settings)
    leg = WarmupConfig("m", "o", steps=700, lr=1e-3, warmup_steps=100, decay_from=600, final_lr=1e-4, decay_until=1000)
    assert learning_rate(leg, 650) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 50 / 400)))
    assert learning_rate(leg, 800) == pytest.approx(learning_rate(cosine, 800))


def test_answer_readout_loss_and_resume_from_a_checkpoint_without_it(nano_small, tmp_path):
    torch = require("torch")
    from training.nano.queries import REFERRING
    from training.nano.warmup import Phase, Warmup, WarmupConfig

    curriculum = (Phase(10 ** 9, (REFERRING,), 2),)
    cfg = WarmupConfig(str(nano_small), str(tmp_path / "run"), steps=1, batch=2, eval_every=100, save_every=1,
                       eval_rows=2, curriculum=curriculum, warmup_steps=1)
    Warmup(cfg).run(progress=False)  # answer_weight 0: no aux_answer term
    state_path = tmp_path / "run" / "checkpoint" / "state.pt"
    # A checkpoint from before the answer read-out: one optimizer group, no "answer." keys.
    state = torch.load(state_path, weights_only=True)
    state["aux"] = {k: v for k, v in state["aux"].items() if not k.startswith("answer.")}
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]
    torch.save(state, state_path)
    w = Warmup(WarmupConfig(**{**cfg.__dict__, "steps": 2, "answer_weight": 1.0}))
    assert w.step == 1 and len(w.optimizer.param_groups) == 2
    examples = w.examples("warmup", 0, 2, w.data_config(curriculum[0]))
    enc, targets = w.batch(examples)
    losses = w.losses(enc, targets)
    # By hand: the read-out at the answer's coordinate positions against (value + 0.5) / frame, L1 x 10.
    tensors = dict(enc)
    labels = tensors.pop("labels")
    with torch.no_grad():
        final = w.model(**tensors, output_hidden_states=True, use_cache=False).hidden_states[-1]
    expected = []
    for b, ex in enumerate(examples):
        values = [v for s in ex.solution for v in s["bbox_2d"] + s["point_2d"]]
        # A coordinate is a number token right after "[" or "," (the "2" of "bbox_2d" follows "_").
        decode = lambda i: w.tokenizer.decode([int(i)]).strip()  # noqa: E731
        rows = [t for t in range(labels.shape[1] - 1) if int(labels[b, t + 1]) >= 0
                and decode(labels[b, t + 1]).isdigit() and decode(tensors["input_ids"][b, t]).endswith(("[", ","))]
        assert len(rows) == len(values)
        with torch.no_grad():
            for t, v in zip(rows, values):
                expected.append(abs(float(w.aux.answer(final[b, t])) - (v + 0.5) / w.frame_size))
    assert float(losses["aux_answer"]) == pytest.approx(10 * np.mean(expected), rel=1e-4)
    w.run(progress=False)
    saved = torch.load(state_path, weights_only=True)
    assert saved["step"] == 2 and len(saved["optimizer"]["param_groups"]) == 2 and "answer.weight" in saved["aux"]
    assert Warmup(WarmupConfig(**{**cfg.__dict__, "steps": 3, "answer_weight": 1.0})).step == 2  # new format resumes


def test_prefetch_workers_give_the_same_batches_and_the_same_training(nano_small, tmp_path):
    """Batches made by spawned workers are the ones the trainer makes itself (the stream is a function of
    the step), so a run with workers logs the same losses as one without, step for step."""
    require("torch")
    from functools import partial

    from training.nano.prefetch import Prefetcher
    from training.nano.queries import REFERRING
    from training.nano.warmup import Phase, Warmup, WarmupConfig, WarmupData

    curriculum = (Phase(1, (REFERRING,), 2), Phase(10 ** 9, (REFERRING,), None))  # the phase changes at step 1
    common = dict(steps=3, batch=2, eval_every=3, save_every=3, eval_rows=2, curriculum=curriculum, warmup_steps=1,
                  attn_heads=((1, 0),))
    cfg = WarmupConfig(str(nano_small), str(tmp_path / "here"), **common)
    own = WarmupData(nano_small, cfg)
    with Prefetcher(partial(WarmupData, nano_small, cfg), workers=2, stop=3) as ahead:
        for step in range(3):
            (enc_a, tgt_a), (enc_b, tgt_b) = own(step), ahead(step)
            assert enc_a.keys() == enc_b.keys() and tgt_a.keys() == tgt_b.keys()
            for key in enc_a:
                np.testing.assert_array_equal(enc_a[key], enc_b[key])
            for key in ("objectness", "kind", "box"):
                np.testing.assert_array_equal(tgt_a[key], tgt_b[key])
            for cells_a, cells_b in zip(tgt_a["pointers"], tgt_b["pointers"]):
                assert [c.tolist() for c in cells_a] == [c.tolist() for c in cells_b]

    Warmup(cfg).run(progress=False)
    Warmup(WarmupConfig(str(nano_small), str(tmp_path / "workers"), workers=2, **common)).run(progress=False)
    logs = [[json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("here", "workers")]
    assert [r["step"] for r in logs[1]] == [1, 2, 3] and all("s_data" in r for r in logs[1])
    for a, b in zip(*logs):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6) and b["aux_attn"] == pytest.approx(a["aux_attn"], rel=1e-6)


def test_training_device_is_never_a_silent_fallback():
    torch = require("torch")
    from engine.devices import resolve_torch_device
    from engine.errors import BackendUnavailableError

    assert resolve_torch_device("cpu") == "cpu"
    assert resolve_torch_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
            resolve_torch_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_torch_device("gpu")


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _torch_cuda(), reason="needs torch with a CUDA GPU")
def test_warmup_and_sam_losses_agree_on_cpu_and_cuda(tmp_path):
    """The trainers' device paths (every tensor they make on the training device) give the CPU's losses on
    the same batch: the warm-up with every loss of the shipped last leg, and SAM's."""
    torch = require("torch")
    from training.nano.bench import SHIPPED_POLICY
    from training.nano.segmenter import SamTrainConfig, SamTrainer
    from training.nano.warmup import Warmup, WarmupConfig, curriculum_until

    losses = {}
    for device in ("cpu", "cuda"):
        cfg = WarmupConfig(str(SHIPPED_POLICY), str(tmp_path / device), batch=4, curriculum=curriculum_until(0, 0),
                           attn_heads=((2, 0), (3, 0)), name_heads=((2, 1), (3, 1)), label_weight=1.0,
                           answer_weight=1.0, coord_sigma=3.0, device=device)
        w = Warmup(cfg)
        assert next(w.model.parameters()).device.type == device
        with torch.no_grad():
            losses[device] = {k: float(v) for k, v in w.losses(*w.to_device(*w.data(7))).items()}
    assert losses["cpu"].keys() == losses["cuda"].keys() and "aux_name" in losses["cpu"] and "aux_attn" in losses["cpu"]
    for key, value in losses["cpu"].items():
        assert losses["cuda"][key] == pytest.approx(value, rel=1e-2, abs=1e-2), key  # cuDNN convs run TF32

    sam = {}
    for device in ("cpu", "cuda"):
        trainer = SamTrainer(SamTrainConfig(str(tmp_path / f"sam-{device}"), steps=1, batch=1, eval_scenes=1, device=device))
        with torch.no_grad():
            sam[device] = {k: float(v) for k, v in trainer.scene_loss(*trainer.scene("train", 3)).items()}
    for key, value in sam["cpu"].items():
        assert sam["cuda"][key] == pytest.approx(value, rel=1e-2, abs=1e-2), key  # cuDNN convs run TF32


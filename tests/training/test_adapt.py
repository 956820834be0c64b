"""`star-train adapt` end to end on the shipped nano bundle and a labelled folder of nano scenes (written
through the engine's labelme writer): the stages, the new bundle and its report, an interrupt and the same
command resuming, and the refusals."""

import json
from pathlib import Path

import pytest

from tests.models import require
from tests.training.test_grpo import _labelled_folder

REPO = Path(__file__).resolve().parents[2]
NANO = REPO / "engine" / "models" / "nano"
LIKE = REPO / "training" / "nano" / "checkpoints" / "warmup-3000"


def _settings(folder: Path, out: Path, **kw):
    from training.adapt import AdaptSettings

    base = dict(data=f"labelme:{folder}", bundle=str(NANO), out=str(out), like=str(LIKE), steps=2,
                data_options={"holdout": 0.25, "queries": "labels"}, max_new_tokens=96, max_completion_length=96,
                threads=2)
    return AdaptSettings(**(base | kw))


@pytest.mark.timeout(900)
def test_adapt_interrupted_then_resumed_writes_a_verified_bundle_with_its_before_and_after(tmp_path):
    require("trl")
    require("llama_cpp")
    from engine.bundle import load_bundle
    from engine.pipeline import load_reasoner
    from engine.samples import sample_scene
    from training.adapt import adapt, work_dir

    folder = _labelled_folder(tmp_path / "labelled", count=12)
    out = tmp_path / "nano-adapted"
    lines = []

    def stop_after_training(line: str) -> None:
        lines.append(line)
        if line.startswith("GRPO took"):
            raise KeyboardInterrupt  # Ctrl-C between training and export

    with pytest.raises(KeyboardInterrupt):
        adapt(_settings(folder, out, warm_start="never"), log=stop_after_training, progress=False)
    assert not out.exists()
    state = json.loads((work_dir(out) / "state.json").read_text())
    assert {"plan", "base", "estimate", "before", "warm", "train"} <= set(state) and "export" not in state

    lines.clear()
    report = adapt(_settings(folder, out, warm_start="never"), log=lines.append, progress=False)
    assert [line for line in lines if line.endswith("done before, kept")] == \
        [f"{s}: done before, kept" for s in ("plan", "base", "estimate", "before", "warm", "train")]
    assert any(line.startswith("estimate on this machine: about") for line in lines)
    assert set(state["estimate"]) == {"evaluation before", "warm start", "GRPO", "evaluation after"}
    assert state["estimate"]["warm start"] == 0 and state["estimate"]["GRPO"] > 0  # --warm-start never
    assert not work_dir(out).exists()
    assert report.weights == "all"  # the nano's 3.1 M parameters: every weight, no adapter
    bundle = load_bundle(out, verify="full")
    adapted = bundle.manifest.policy.source["adapted"]
    assert adapted["from_bundle"] == "nano" and adapted["steps"] == 2
    assert adapted["before_giou"] == report.before["giou"] and adapted["after_giou"] == report.after["giou"]
    assert bundle.manifest.verification["policy loads"]["ok"]
    shipped = load_bundle(NANO).manifest.policy
    ours = bundle.manifest.policy
    assert (ours.frame, ours.quant, ours.prompt_family, ours.answer_grammar, ours.vote_temperature, ours.source["output"]) \
        == (shipped.frame, shipped.quant, shipped.prompt_family, shipped.answer_grammar, shipped.vote_temperature, "f32")
    assert bundle.manifest.segmenter.source["taken_from"] == "nano"
    saved = json.loads((out / "adapt-report.json").read_text())
    assert saved["held_out_samples"] == report.held_out_samples >= 2 and saved["better"] == report.better
    assert (out / "adapt-report.png").stat().st_size > 1000
    assert report.before["items"] == report.after["items"] == report.held_out_samples
    reasoner = load_reasoner(out, threads=2)  # the README's main job on the adapted bundle
    assert reasoner.bundle["policy"]["adapted"]["after_giou"] == report.after["giou"]  # what the app shows
    try:
        image, query = sample_scene()
        assert reasoner.run(image, query).samples[0].text.startswith("<think>")
    finally:
        reasoner.close()


def test_adapt_refuses_in_one_line(tmp_path, capsys):
    from training.cli import main

    few = _labelled_folder(tmp_path / "few", count=2)
    exists = tmp_path / "exists"
    exists.mkdir()
    common = ["adapt", "--bundle", str(NANO), "--like", str(LIKE)]
    cases = [
        (["--data", f"labelme:{few}", "--out", str(exists)], "exists; name a new folder"),
        (["--data", f"labelme:{few}", "--out", str(tmp_path / "a")], "held-out samples usable (need"),
        (["--data", f"reasonseg:{few}", "--out", str(tmp_path / "b")], "adapt trains on labelme:FOLDER or coco:FILE"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(common + argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "a").exists()


def test_without_the_policys_weights_and_no_like_adapt_says_what_to_give(tmp_path):
    """A copy of the nano bundle is any bundle: its recorded source is not on disk and no --like is known."""
    import shutil

    from training.adapt import AdaptError, default_like, hf_weights

    assert default_like(NANO) == str(LIKE)  # the shipped bundle's own is found
    copy = tmp_path / "copy"
    shutil.copytree(NANO, copy)
    assert default_like(copy) is None
    with pytest.raises(AdaptError, match="give --like HF_FOLDER"):
        hf_weights(copy, None, tmp_path / "base", print)


def test_a_mask_derived_answer_parses_to_the_masks_box_and_a_point_deep_inside():
    """The warm start's completion, by hand: a 40 x 20 rectangle at (60, 100) in a 224 x 224 image, answered
    in the nano frame (pixels-224) and on Qwen3-VL's grid."""
    import numpy as np

    from engine.protocol import parse_answer
    from training.warm_start import mask_answer

    mask = np.zeros((224, 224), bool)
    mask[100:120, 60:100] = True
    text = mask_answer("the red bar", "red bar", [mask], "pixels-224")
    answer = parse_answer(text, (224, 224), "pixels-224")
    assert answer.status == "ok" and answer.thinking == "The query asks for a red bar. I see a red bar."
    (target,) = answer.targets
    assert target.label == "red bar" and tuple(target.box) == (60, 100, 99, 119)
    x, y = target.point
    # the largest inscribed circle of a 20-pixel-tall bar has radius 10: its centre is 9+ pixels from every edge
    assert min(x - 60, 99 - x, y - 100, 119 - y) >= 9
    grid = parse_answer(mask_answer("the red bar", "red bar", [mask], "qwen3-1000"), (224, 224), "qwen3-1000")
    assert grid.status == "ok" and abs(grid.targets[0].box[0] - 60) <= 1 and abs(grid.targets[0].box[3] - 119) <= 1


@pytest.mark.timeout(900)
def test_the_warm_start_runs_before_grpo_and_continues_into_it(tmp_path):
    require("trl")
    require("llama_cpp")
    from engine.bundle import load_bundle
    from training.adapt import adapt

    folder = _labelled_folder(tmp_path / "labelled", count=12)
    out = tmp_path / "warm"
    lines = []
    report = adapt(_settings(folder, out, warm_start="always", warm_steps=3, steps=1, weights="lora", replay="none"),
                   log=lines.append, progress=False)
    assert report.warm_start and report.weights == "lora"  # the warm start's adapter continued by GRPO and any(line.startswith("warm start: 3 supervised steps") for line in lines)
    assert load_bundle(out).manifest.policy.source["adapted"]["warm_start_steps"] == 3


def test_a_label_query_is_also_learnt_mirrored_and_a_persons_description_is_not():
    """The warm start's mirrored rows by hand: a bar at x 60..99 of a 224-wide image lies at x 124..163 in
    its mirror image (223 - 99, 223 - 60); "the cup on the left" would change its meaning, so a query from a
    description gets no mirrored row."""
    import numpy as np

    from engine.protocol import parse_answer
    from training.warm_start import answer_rows

    class Labelled:
        query, meta = "the red bar", {"query_source": "label", "label": "red bar"}

        def load_instances(self):
            mask = np.zeros((224, 224), bool)
            mask[100:120, 60:100] = True
            return [mask]

        def load_image(self):
            rgb = np.zeros((224, 224, 3), np.uint8)
            rgb[100:120, 60:100] = (255, 0, 0)
            return rgb

    class Described(Labelled):
        query, meta = "the bar on the left", {"query_source": "description", "label": "red bar"}

    rows = answer_rows([Labelled(), Described()], "pixels-224")
    assert [(row.sample.query, row.mirrored) for row in rows] == \
        [("the red bar", False), ("the red bar", True), ("the bar on the left", False)]
    boxes = [parse_answer(row.completion, (224, 224), "pixels-224").targets[0].box for row in rows[:2]]
    assert [tuple(b) for b in boxes] == [(60, 100, 99, 119), (124, 100, 163, 119)]
    assert rows[1].image()[110, 124:164, 0].min() == 255 and rows[1].image()[110, 60:100, 0].max() == 0


def test_rehearsal_is_the_shipped_bundles_own_world_and_nothing_for_another(tmp_path, monkeypatch):
    """The warm start's rehearsal rows: the nano world's training rows with the traces the shipped policy was
    warmed up on (their answers parse), for the shipped bundle only; `--replay none` turns it off."""
    import shutil

    from engine.protocol import parse_answer
    from training import adapt
    from training.adapt import AdaptSettings, rehearsal

    monkeypatch.setattr(adapt, "REPLAY_ROWS", 5)
    settings = AdaptSettings(data="labelme:x", bundle=str(NANO), out=str(tmp_path / "o"))
    rows = rehearsal(settings, NANO)
    assert len(rows) == 5 and all(r.completion.endswith("<|im_end|>") and not r.mirrored for r in rows)
    assert rows[0].sample.load_image().shape == (224, 224, 3)
    assert parse_answer(rows[0].completion, (224, 224), "pixels-224").status in ("ok", "empty")
    copy = tmp_path / "copy"
    shutil.copytree(NANO, copy)
    assert rehearsal(settings, copy) == []
    assert rehearsal(AdaptSettings(data="labelme:x", bundle=str(NANO), out="o", replay="none"), NANO) == []


def test_the_warm_start_is_600_steps_or_long_enough_to_show_a_large_folders_queries_one_and_a_half_times():
    """By hand: with rehearsal 2 of a step's 4 rows are new, without it all 4; 1.5 x 3,193 / 2 = 2,394.75."""
    from training.adapt import AdaptSettings, warm_step_count

    settings = AdaptSettings(data="labelme:x", bundle=str(NANO), out="o")
    assert warm_step_count(settings, 200, rehearsing=True) == 600
    assert warm_step_count(settings, 821, rehearsing=True) == 616
    assert warm_step_count(settings, 3193, rehearsing=True) == 2395
    assert warm_step_count(settings, 3193, rehearsing=False) == 1198
    assert warm_step_count(AdaptSettings(data="labelme:x", bundle=str(NANO), out="o", replay_share=0.25), 3193,
                           rehearsing=True) == 1597
    assert warm_step_count(AdaptSettings(data="labelme:x", bundle=str(NANO), out="o", warm_steps=50), 3193,
                           rehearsing=True) == 50

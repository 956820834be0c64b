"""ReVOS and MeViS folders in their published layout (JPEGImages/, mask_dict.json with COCO RLEs from
pycocotools, meta_expressions*.json), generated here, read by engine/data/video.py: the expressions, their
kinds, and each frame's target as the union of its annotations (checked against pycocotools' own decoding)."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from engine.data.video import open_video_dataset
from engine.errors import DatasetError

H, W, FRAMES = 48, 64, 3


def _rle(mask: np.ndarray):
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _box(x0, y0, x1, y1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _folder(root, meta_name, with_types=True):
    """Video "cats" (3 frames): a cat moving right (anno 1), another one appearing on frame 1 (anno 2)."""
    frames = [f"{i:05d}" for i in range(FRAMES)]
    (root / "JPEGImages" / "cats").mkdir(parents=True)
    for name in frames:
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "JPEGImages" / "cats" / f"{name}.jpg")
    first = [_box(4 + 8 * i, 10, 20 + 8 * i, 30) for i in range(FRAMES)]
    second = [None, _box(40, 30, 60, 44), _box(42, 30, 62, 44)]
    masks = {"1": [_rle(m) for m in first], "2": [None if m is None else _rle(m) for m in second]}
    (root / "mask_dict.json").write_text(json.dumps(masks))
    expressions = {"0": {"exp": "the cat on the left", "anno_id": [1], "obj_id": [0]},
                   "1": {"exp": "the animals that might chase a mouse", "anno_id": [1, 2], "obj_id": [0, 1]},
                   "2": {"exp": "the dog", "anno_id": [], "obj_id": []}}
    if with_types:
        for exp_id, type_id in (("0", 0), ("1", 1), ("2", 2)):
            expressions[exp_id]["type_id"] = type_id
    meta = {"videos": {"cats": {"vid_id": "cats", "frames": frames, "expressions": expressions}}}
    (root / meta_name).write_text(json.dumps(meta))
    return first, second


def test_a_revos_folder_reads_expressions_by_kind_and_targets_frame_by_frame(tmp_path):
    first, second = _folder(tmp_path, "meta_expressions_valid_.json")
    data = open_video_dataset("revos", tmp_path)
    assert [(e.id, e.kind, e.query) for e in data] == [
        ("cats/0", "referring", "the cat on the left"),
        ("cats/1", "reasoning", "the animals that might chase a mouse"),
        ("cats/2", "no-target", "the dog")]
    referring, reasoning, absent = data
    assert len(referring) == FRAMES and referring.frames[2].name == "00002.jpg"
    for i in range(FRAMES):
        assert (referring.load_mask(i) == first[i]).all()
        both = first[i] | (second[i] if second[i] is not None else False)
        assert (reasoning.load_mask(i) == both).all()
        assert absent.load_mask(i).shape == (H, W) and not absent.load_mask(i).any()
    assert reasoning.load_mask(1).sum() == 16 * 20 + 20 * 14  # hand count: two disjoint boxes


def test_a_mevis_folder_has_referring_expressions_only(tmp_path):
    _folder(tmp_path, "meta_expressions.json", with_types=False)
    data = open_video_dataset("mevis", tmp_path)
    assert {e.kind for e in data} == {"referring"} and len(data) == 3
    assert open_video_dataset("mevis", tmp_path / "meta_expressions.json").items[0].id == "cats/0"


def test_a_folder_that_is_not_a_benchmark_says_what_it_lacks(tmp_path):
    with pytest.raises(DatasetError, match="no meta_expressions_valid_.json"):
        open_video_dataset("revos", tmp_path)
    _folder(tmp_path, "meta_expressions_valid_.json")
    (tmp_path / "meta_expressions_valid_.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a revos expressions file"):
        open_video_dataset("revos", tmp_path)
    with pytest.raises(ValueError, match="choose revos or mevis"):
        open_video_dataset("davis", tmp_path)


@pytest.mark.timeout(600)
def test_star_eval_on_a_revos_folder_tracks_each_expression_and_reports_j_and_f(tiny_sam2, tmp_path, capsys):
    """The whole video evaluation on the generated ReVOS folder: the nano policy on each key frame, the tiny
    random SAM 2 following (the plumbing, not the scores), J / F per expression against the folder's masks,
    the report by kind, and a re-run that resumes instead of starting over."""
    from tests.models import require

    require("torch")
    require("llama_cpp")
    from engine.cli import main

    _folder(tmp_path / "revos", "meta_expressions_valid_.json")
    out = tmp_path / "eval"
    argv = ["--threads", "2", "eval", "--data", f"revos:{tmp_path / 'revos'}", "--sam2",
            f"{tiny_sam2.config}:{tiny_sam2.checkpoint}", "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["kind"], r["frames"]) for r in records] == [
        ("cats/0", "referring", FRAMES), ("cats/1", "reasoning", FRAMES), ("cats/2", "no-target", FRAMES)]
    assert all(0 <= r["j"] <= 1 and 0 <= r["f"] <= 1 and r["asks"][0] == 0 for r in records)
    report = json.loads((out / "report.json").read_text())
    scores = report["scores"]
    assert scores["overall"]["j"] == pytest.approx((scores["referring"]["j"] + scores["reasoning"]["j"]) / 2)
    assert report["expressions"] == 3 and "| overall |" in (out / "report.md").read_text()
    assert main(argv) == 0  # resumed: every expression already done, the report written again
    assert len((out / "results.jsonl").read_text().splitlines()) == 3


@pytest.mark.timeout(600)
def test_the_baselines_need_no_video_sam_and_the_still_one_repeats_the_key_frame(tmp_path, capsys):
    """--tracker still / box / policy with the shipped nano bundle (image segmenter only): reports written;
    on a clip whose frames are all alike, SAM from the key frame's box gives the still baseline's masks."""
    from tests.models import require

    require("llama_cpp")
    from engine.cli import main
    from engine.frames import FrameSource
    from engine.pipeline import load_reasoner
    from engine.track.baselines import BoxFollower, StillFollower

    _folder(tmp_path / "revos", "meta_expressions_valid_.json")
    for tracker in ("still", "box", "policy"):
        out = tmp_path / tracker
        argv = ["--threads", "2", "eval", "--data", f"revos:{tmp_path / 'revos'}", "--tracker", tracker,
                "--out", str(out), "--quiet"]
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert report["tracker"] == tracker and report["expressions"] == 3
        assert report["policy_calls_per_frame"] == (1.0 if tracker == "policy" else pytest.approx(1 / FRAMES))
    source = FrameSource([tmp_path / "revos" / "JPEGImages" / "cats" / "00000.jpg"] * 3)
    reasoner = load_reasoner(None, threads=2)
    try:
        still, box = StillFollower(reasoner.segmenter, source), BoxFollower(reasoner.segmenter, source)
        for follower in (still, box):
            follower.prompt(0, 1, box=(4, 10, 20, 30), point=(12, 20))
        a, b = dict(still.propagate(0)), dict(box.propagate(0))
        assert sorted(a) == sorted(b) == [0, 1, 2]
        assert all((a[f][1][0] == b[f][1][0]).all() and (a[f][1][0] == still.key_masks[1]).all() for f in a)
    finally:
        reasoner.close()


def test_each_object_of_a_target_reads_alone_and_gives_its_box_and_deepest_point(tmp_path):
    """load_object_masks: one mask per annotation seen on the frame (the second cat is absent on frame 0);
    box_and_deep_point by hand: a 16 x 20 box at x 4-19, y 10-29 is 8 px from its sides only at x = 11, 12
    and 8 or more px from its top and bottom at y = 17-22; the first of those in row order is (11, 17)."""
    from engine.mask_prompts import box_and_deep_point

    first, second = _folder(tmp_path, "meta_expressions_valid_.json")
    reasoning = open_video_dataset("revos", tmp_path).items[1]
    assert len(reasoning.load_object_masks(0)) == 1 and len(reasoning.load_object_masks(1)) == 2
    assert (reasoning.load_object_masks(1)[1] == second[1]).all()
    assert box_and_deep_point(first[0]) == ([4, 10, 19, 29], [11, 17])
    with pytest.raises(ValueError, match="empty"):
        box_and_deep_point(np.zeros((4, 4), bool))


@pytest.mark.timeout(600)
def test_a_gold_key_frame_measures_the_tracker_alone_without_asking_the_policy(tmp_path, capsys):
    """--key-answer gold: the target's own box and point prompt the tracker on the key frame; no policy call
    is made, and with the still follower every frame holds the mask SAM gives for that box and point."""
    from tests.models import require

    require("llama_cpp")
    from engine.cli import main
    from engine.pipeline import load_reasoner

    first, _ = _folder(tmp_path / "revos", "meta_expressions_valid_.json")
    out = tmp_path / "gold"
    argv = ["--threads", "2", "eval", "--data", f"revos:{tmp_path / 'revos'}", "--tracker", "still",
            "--key-answer", "gold", "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["key_answer"] == "gold" and report["policy_calls_per_frame"] == 0.0
    assert "the target's own box on the key frame" in (out / "report.md").read_text()
    reasoner = load_reasoner(None, threads=2)
    try:
        image = np.asarray(Image.open(tmp_path / "revos" / "JPEGImages" / "cats" / "00000.jpg").convert("RGB"))
        sam = reasoner.segmenter.segment(reasoner.segmenter.embed(image), boxes=np.array([[4, 10, 19, 29]], np.float32),
                                         points=np.array([[11, 17]], np.float32)).masks[0]
    finally:
        reasoner.close()
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    by_hand = np.mean([(sam & m).sum() / (sam | m).sum() for m in first])  # the still mask against each frame
    assert record["id"] == "cats/0" and record["asks"] == [] and record["j"] == pytest.approx(by_hand)

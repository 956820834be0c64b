"""The nano world: determinism, exact masks, query semantics on hand-built scenes, and round trips
through the engine's reader, parser and the training rewards."""

import json

import numpy as np
import pytest

from engine.data import open_dataset
from engine.protocol import parse_answer
from engine.rle import decode
from training import rewards as R
from training.nano import queries as Q
from training.nano.dataset import NanoConfig, make_example, write_split
from training.nano.world import Scene, SceneObject, make_scene


def test_examples_are_deterministic_and_splits_differ():
    a, b = make_example("train", 7), make_example("train", 7)
    assert a == b
    assert make_example("test", 7)["image"]["bytes"] != a["image"]["bytes"]


def test_scene_masks_are_disjoint_visible_and_big_enough():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = make_scene(rng, 160)
        masks = np.stack([o.mask for o in scene.objects])
        assert masks.sum(0).max() <= 1  # visible masks never overlap
        assert all(o.area >= 60 for o in scene.objects)
        assert scene.image.shape == (160, 160, 3) and scene.image.dtype == np.uint8


def _obj(i, kind, colour, x0, y0, s=10, size=100):
    m = np.zeros((size, size), bool)
    m[y0:y0 + s, x0:x0 + s] = True
    return SceneObject(i, kind, colour, "solid", s / 2, x0 + s / 2, y0 + s / 2, m)


def _scene(*objs):
    return Scene(np.zeros((100, 100, 3), np.uint8), list(objs), "plain")


class FixedRng:
    """Feeds chosen values to a family: integers() pops from a list; random() returns a constant."""

    def __init__(self, ints, u=0.9):
        self.ints, self.u = list(ints), u

    def integers(self, n):
        return self.ints.pop(0) % n

    def random(self):
        return self.u


def test_purpose_query_on_a_hand_built_scene():
    scene = _scene(_obj(0, "apple", "red", 5, 5), _obj(1, "car", "blue", 60, 5), _obj(2, "banana", "yellow", 40, 60))
    q = Q.purpose(scene, FixedRng([0, 0]), want_empty=False)  # "eat", first phrasing
    assert q.text == "something you could eat" and sorted(q.targets) == [0, 2] and q.reasoning_type == Q.PURPOSE
    assert Q.purpose(scene, FixedRng([list(Q.AFFORDANCE_QUERIES).index("live"), 0]), want_empty=False) is None  # no house
    q = Q.purpose(scene, FixedRng([list(Q.AFFORDANCE_QUERIES).index("live"), 0]), want_empty=True)
    assert q.targets == [] and "nothing" in q.steps[-1]


def test_relational_and_comparative_on_a_hand_built_scene():
    scene = _scene(_obj(0, "apple", "red", 5, 40), _obj(1, "car", "blue", 45, 40), _obj(2, "star", "red", 80, 40, s=16))
    q = Q.relational(scene, FixedRng([1, list(Q.RELATIONS).index("left of")]), want_empty=False)  # reference: blue car
    assert q.text == "the object left of the blue car" and q.targets == [0]
    q = Q.comparative(scene, FixedRng([0]), want_empty=False)  # largest: the 16 x 16 star
    assert q.text == "the largest object" and q.targets == [2]
    q = Q.comparative(scene, FixedRng([2]), want_empty=False)
    assert q.text == "the leftmost object" and q.targets == [0]


def test_label_mentions_by_hand():
    """Which object each name in a completion means: a unique label is its object anywhere; a repeated one
    only in the final "I see" step (n-th mention = n-th target with it) and in the answer (k-th label =
    target k); "red balls" does not contain a mention of "red ball"."""
    from training.nano.aux_targets import label_mentions

    scene = _scene(_obj(0, "ball", "red", 5, 5), _obj(1, "ball", "red", 60, 5), _obj(2, "car", "blue", 40, 60))
    text = ('<think> First I find the blue car. The red ball is near. There are red balls. '
            'I see a red ball and a red ball. </think> '
            '<answer>[{"label": "red ball", "bbox_2d": [60,5,70,15]}, {"label": "red ball", "bbox_2d": [5,5,15,15]}]</answer>')
    got = [(text[m.start:m.end], m.start, m.object_index) for m in label_mentions(text, scene, [1, 0])]
    see = text.index("I see")
    answer = text.index("<answer>")
    assert got == [("blue car", text.index("blue car"), 2),
                   ("red ball", text.index("red ball", see), 1), ("red ball", text.index("and a red ball") + 6, 0),
                   ("red ball", text.index("red ball", answer), 1), ("red ball", text.rindex("red ball"), 0)]
    assert label_mentions("<think> I see nothing like that in the image. </think> <answer>[]</answer>", scene, []) == []


def test_label_mentions_in_a_listed_trace_by_hand():
    """Inside the listing steps the n-th mention of a repeated label is the n-th listed object with it."""
    from training.nano.aux_targets import label_mentions
    from training.nano.dataset import LISTING, SIZES

    scene = _scene(_obj(0, "ball", "red", 60, 5), _obj(1, "ball", "red", 5, 5), _obj(2, "car", "blue", 40, 60))
    text = (f'<think> {LISTING}a red ball [5,5,15,15], a blue car [40,60,50,70], a red ball [60,5,70,15]. '
            f'{SIZES}the red ball 10, the blue car 10, the red ball 10. The red ball covers the most area. </think> '
            '<answer>[]</answer>')
    got = [(m.start, m.object_index) for m in label_mentions(text, scene, [], [1, 2, 0], (LISTING, SIZES))]
    balls = [i for i in range(len(text)) if text.startswith("red ball", i)]
    assert len(balls) == 5
    assert got == sorted([(balls[0], 1), (balls[1], 0), (balls[2], 1), (balls[3], 0), (text.index("blue car"), 2),
                          (text.index("the blue car") + 4, 2)])  # the last "red ball" step is not a list: left out
    assert [m.object_index for m in label_mentions(text, scene, [])] == [2, 2]  # without the listing, cars only


def test_listed_trace_by_hand():
    """Every object, left to right by centroid, with its box in the frame (here half the image's pixels),
    then its size (sqrt of its area in frame pixels) for size comparisons; then the short trace's steps."""
    from training.nano.dataset import LISTING, SIZES, _listing_steps

    scene = _scene(_obj(0, "apple", "red", 60, 40), _obj(1, "car", "blue", 5, 40, s=20), _obj(2, "star", "red", 30, 10, s=16))
    q = Q.comparative(scene, FixedRng([0]), want_empty=False)  # the largest: the 20 x 20 car
    assert q.targets == [1] and q.sizes
    listed, steps = _listing_steps(scene, q, 2.0, 2.0)
    assert [o.id for o in listed] == [1, 2, 0]
    # boxes inclusive in pixels: car 5..24 x 40..59 -> frame /2 rounded half up: 3, 20, 12, 30
    assert steps == [LISTING + "a blue car [3,20,12,30], a red star [15,5,23,13], a red apple [30,20,35,25]",
                     SIZES + "the blue car 10, the red star 8, the red apple 5"]
    q = Q.comparative(scene, FixedRng([2]), want_empty=False)  # leftmost: no sizes step
    assert len(_listing_steps(scene, q, 2.0, 2.0)[1]) == 1


def test_listed_completion_extends_the_short_one():
    from training.nano.dataset import LISTING, make_scene_example

    for i in range(12):
        short = make_scene_example("val", i, NanoConfig())
        listed = make_scene_example("val", i, NanoConfig(trace="listed"))
        assert listed.completion.startswith("<think> " + LISTING)
        assert listed.completion.endswith(short.completion[len("<think> "):])
        assert sorted(o.id for o in listed.listed) == sorted(o.id for o in listed.scene.objects) and short.listed == []
    with pytest.raises(ValueError, match="trace"):
        NanoConfig(trace="long")


def test_ambiguous_comparisons_are_refused():
    scene = _scene(_obj(0, "apple", "red", 5, 40), _obj(1, "car", "blue", 50, 40))  # same size
    assert Q.comparative(scene, FixedRng([0]), want_empty=False) is None


def test_compositional_corner_count():
    # two circles -> a shape with two corners: none; three stars... use trees: one tree -> no shape with 1 corner
    scene = _scene(_obj(0, "circle", "red", 5, 5), _obj(1, "circle", "blue", 30, 5), _obj(2, "circle", "green", 60, 5),
                   _obj(3, "triangle", "red", 5, 60), _obj(4, "square", "red", 60, 60))
    q = Q.compositional(scene, FixedRng([0, 0]), want_empty=False)  # count circles (3) -> triangle
    assert q.targets == [3] and "three circles" in q.steps[0]


@pytest.mark.parametrize("trace", ["short", "listed"])
def test_rows_round_trip_through_reader_parser_and_rewards(tmp_path, trace):
    config = NanoConfig(image_size=160, frame="pixels-80", trace=trace)
    paths = write_split(tmp_path, "val", 30, config, rows_per_file=16)
    assert len(paths) == 2 and all(p.exists() for p in paths)
    samples = list(open_dataset("reasonseg-x", tmp_path))
    assert len(samples) == 30 and {s.meta["reasoning_type"] for s in samples} <= set(Q.REASONING_TYPES)
    for i, sample in enumerate(samples):
        row = make_example("val", i, config)
        masks = [decode(r) for r in json.loads(row["instances"])]
        union = np.logical_or.reduce(masks) if masks else np.zeros((160, 160), bool)
        assert np.array_equal(sample.load_gt(), union.astype(np.uint8))
        answer = parse_answer(row["completion"], (160, 160), config.frame)
        assert answer.status == ("ok" if masks else "empty")
        # The answer, mapped back to original pixels, lands on its instance within the frame's rounding.
        for target, mask in zip(answer.targets, masks):
            x, y = target.point
            assert mask[min(y, 159), min(x, 159)] or mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any()
            assert R.box_iou_matrix([target.box], [R.gt_targets_from_masks([mask])[0]["bbox_2d"]])[0, 0] > 0.8
        # Its own completion earns full marks against its solution.
        if masks:
            assert R.visionreasoner_accuracy(row["completion"], row["solution"]) == pytest.approx(3.0)
            assert R.think_format_score(row["completion"]) == 1.0
            assert R.answer_format_score(row["completion"], with_label=True) == pytest.approx(2.0)
        assert R.non_repeat_score(row["completion"]) == 1.0


def test_star_train_cli_writes_splits(tmp_path):
    from training.cli import main

    assert main(["nano-data", "--out", str(tmp_path), "--train", "3", "--val", "0", "--test", "2", "--quiet", "--image-size", "96"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]


def test_baselines_empty_score_is_the_share_of_no_target_queries(tmp_path):
    from training.nano.baselines import score_baselines

    config = NanoConfig(image_size=96, frame="pixels-48", empty_rate=0.5)
    write_split(tmp_path, "val", 24, config)
    rows = [make_example("val", i, config) for i in range(24)]
    no_target = sum(r["labels"] == "[]" for r in rows)
    assert 0 < no_target < 24
    out = score_baselines(tmp_path)
    # LISA: an empty prediction scores 1 on an empty GT and 0 elsewhere.
    assert out["empty"]["giou"] == pytest.approx(no_target / 24)
    assert out["all-objects"]["n"] == 24


def test_gold_answer_baseline_is_the_segmenters_ceiling(tmp_path):
    """The rows' own answers through the shipped nano SAM (its world, 224 px): far above every no-reasoning
    baseline (measured 0.90 gIoU on the whole test split), a no-target row scores 1 (LISA: empty vs empty),
    and the CLI prints the row."""
    from engine.bundle import default_bundle_dir, load_bundle
    from engine.segment import load_segmenter
    from training.cli import main
    from training.nano.baselines import gold_answer_mask, score_baselines

    bundle = default_bundle_dir()
    config = NanoConfig(empty_rate=0.2)
    write_split(tmp_path, "test", 12, config)
    segmenter = load_segmenter(load_bundle(bundle).segmenter_files(), "onnx", device="cpu", threads=1)
    out = score_baselines(tmp_path, segmenter=segmenter)
    assert out["gold-answer"]["n"] == 12
    assert out["gold-answer"]["giou"] > 0.75
    assert out["gold-answer"]["giou"] > max(out[name]["giou"] for name in ("all-objects", "largest-object")) + 0.2
    rows = [make_example("test", i, config) for i in range(12)]
    empty = next(r for r in rows if r["labels"] == "[]")
    assert not gold_answer_mask(segmenter, empty["image"], empty["completion"], empty["frame"], (224, 224)).any()
    assert main(["nano-baselines", "--data", str(tmp_path), "--bundle", str(bundle)]) == 0


def test_nano_answers_split_naming_from_boxes(tmp_path):
    """A hand-made eval run on three rows: the row's own completion (every name right, every box exact), a
    right name with a box shifted by its own width (IoU 0 with its object), a name absent from the scene,
    and an unparseable answer."""
    from training.cli import main
    from training.nano.answers import read_answers

    config = NanoConfig(image_size=96, frame="pixels-96", empty_rate=0.0)
    write_split(tmp_path / "data", "test", 3, config)
    rows = [make_example("test", i, config) for i in range(3)]
    first = json.loads(rows[0]["solution"])[0]
    x1, y1, x2, y2 = first["bbox_2d"]
    label = json.loads(rows[0]["labels"])[0]
    shifted = json.dumps([{"label": label, "bbox_2d": [x2 + 1, y1, 2 * x2 - x1 + 1, y2], "point_2d": [x2 + 1, y1]}])
    texts = {0: [rows[0]["completion"], f"<think> x </think> <answer>{shifted}</answer>"],
             1: ['<think> x </think> <answer>[{"label": "plaid unicorn", "bbox_2d": [1,1,9,9], "point_2d": [4,4]}]</answer>'],
             2: ['<think> x </think> <answer>[{"bbox_2d": [1,2</answer>']}
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"bundle": {"policy": {"frame": "pixels-96"}}}))
    (run / "results.jsonl").write_text("".join(
        json.dumps({"id": f"{rows[i]['image_id']}:0", "samples": [{"text": t} for t in ts]}) + "\n" for i, ts in texts.items()))
    report = read_answers(run, tmp_path / "data")
    n_gold = len(json.loads(rows[0]["labels"]))
    assert n_gold == 1  # so the shifted answer names the gold set too
    assert (report.overall.samples, report.overall.failed, report.overall.exact) == (4, 1, 2)
    assert report.named == n_gold + 2 and report.named_in_scene == n_gold + 1
    assert report.box_ious[:n_gold] == [1.0] * n_gold and report.box_ious[n_gold] == 0.0
    assert main(["nano-answers", "--results", str(run), "--data", str(tmp_path / "data"), "--json", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["exact_label_set"] == 0.5

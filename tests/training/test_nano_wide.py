"""The wider nano world (training/nano/wide.py, referring.py, phrasing.py), the shift split and the probes.
Expected answers are worked out by hand on hand-built scenes; the classic world is pinned to the rows the
shipped bundle was trained and tested on."""

import hashlib
import json

import numpy as np
import pytest

from engine.protocol import parse_answer
from engine.rle import decode
from training.nano import phrasing as P
from training.nano import referring as R
from training.nano.dataset import NanoConfig, make_example, make_scene_example
from training.nano.queries import REFERRING
from training.nano.shapes import COLOURS
from training.nano.world import Scene, SceneObject

# sha256 over the first 40 train and test scenes of the classic world (pixels, queries, answers, masks), as
# generated when the shipped bundle was trained: a change to the world's code must not move these rows.
CLASSIC_FINGERPRINT = "0f41741eb3aca451318b5f000b29270809352f4e7bc30a15ecf647967f22cce1"


def test_the_classic_world_is_unchanged():
    h = hashlib.sha256()
    for split in ("train", "test"):
        for i in range(40):
            ex = make_scene_example(split, i)
            h.update(ex.scene.image.tobytes())
            h.update(ex.query.text.encode())
            h.update(json.dumps(ex.solution).encode())
            h.update(ex.completion.encode())
            for o in ex.scene.objects:
                h.update(o.mask.tobytes())
    assert h.hexdigest() == CLASSIC_FINGERPRINT


def _obj(i, kind, colour, x0, y0, s=10, w=200, h=100):
    m = np.zeros((h, w), bool)
    m[y0:y0 + s, x0:x0 + s] = True
    return SceneObject(i, kind, colour, "solid", s / 2, x0 + s / 2, y0 + s / 2, m)


def _scene(*objs, w=200, h=100):
    return Scene(np.zeros((h, w, 3), np.uint8), list(objs), "white")


class Rng:
    """integers() pops chosen values; random() pops from its own list (then stays at the last value)."""

    def __init__(self, ints, us=(0.9,)):
        self.ints, self.us = list(ints), list(us)

    def integers(self, lo, hi=None):
        n = lo if hi is None else hi - lo
        return self.ints.pop(0) % n + (0 if hi is None else lo)

    def random(self):
        return self.us.pop(0) if len(self.us) > 1 else self.us[0]


def test_position_picks_the_object_on_that_side_by_hand():
    # two red circles at x = 15 and x = 155 (of 200), a blue star in the middle
    scene = _scene(_obj(0, "circle", "red", 10, 40), _obj(1, "star", "blue", 90, 40), _obj(2, "circle", "red", 150, 40))
    q = R.position(scene, Rng([R.POSITIONS.index("left"), 0], us=[0.2]), False)  # the labelled form
    assert q.text == "the red circle on the left" and q.targets == [0] and q.reasoning_type == REFERRING
    q = R.position(scene, Rng([R.POSITIONS.index("right"), 0], us=[0.2]), False)
    assert q.text == "the red circle on the right" and q.targets == [2]
    q = R.position(scene, Rng([R.POSITIONS.index("right")], us=[0.9, 0.9]), False)  # any object
    assert q.text == "the object on the right" and q.targets == [2]
    # nothing stands out at the top: all three centres share y = 45
    assert R.position(scene, Rng([R.POSITIONS.index("top")], us=[0.9, 0.9]), False) is None
    assert R.position(scene, Rng([0]), True) is None  # a position query always has its object


def test_size_and_colour_group_and_kind_by_hand():
    scene = _scene(_obj(0, "circle", "red", 10, 10, s=8), _obj(1, "circle", "red", 60, 10, s=30),
                   _obj(2, "car", "red", 120, 10), _obj(3, "star", "blue", 160, 60))
    q = R.sized(scene, Rng([0, 0], us=[0.2]), False)  # "red circle" pair, small
    assert q.text == "the small red circle" and q.targets == [0]
    q = R.sized(scene, Rng([0, 0], us=[0.9]), False)
    assert q.text == "the big red circle" and q.targets == [1]
    # colour group: red + shapes only -> the two circles (the car is not a plain shape)
    q = R.colour_group(scene, Rng([0], us=[0.2, 0.2]), False)
    assert q.text == "all the red shapes" and sorted(q.targets) == [0, 1]
    q = R.colour_group(scene, Rng([0], us=[0.9, 0.9]), False)
    assert q.text == "all the red things" and sorted(q.targets) == [0, 1, 2]
    q = R.kind_only(scene, Rng([0]), False)  # kinds sorted: car, circle, star
    assert q.text == "the car" and q.targets == [2]
    q = R.kind_only(scene, Rng([1]), False)
    assert q.text == "all the circles" and sorted(q.targets) == [0, 1]
    q = R.kind_only(scene, Rng([0]), True)
    assert q.targets == [] and q.text not in ("the car", "the circle", "the star")


def test_between_by_hand():
    scene = _scene(_obj(0, "circle", "red", 10, 45), _obj(1, "star", "blue", 95, 45), _obj(2, "cup", "white", 180, 45))
    rng = np.random.default_rng(0)
    found = [q for q in (R.between(scene, rng, False) for _ in range(50)) if q is not None]
    assert found and all(q.targets == [1] for q in found)
    assert {q.text for q in found} <= {"the object between the red circle and the white cup",
                                       "the object between the white cup and the red circle"}


def test_shift_wording_never_uses_a_training_template():
    train = {t.split("{q}")[0] for t in P.TRAIN.commands}
    assert not train & {t.split("{q}")[0] for t in P.SHIFT.commands}
    rng = np.random.default_rng(1)
    for _ in range(300):
        text = P.rephrase("the red circle", rng, P.SHIFT).lower().strip('."?!')
        assert not any(text.startswith(p) for p in train if p)


@pytest.mark.parametrize("world", ["wide", "shift"])
def test_wide_rows_answer_in_the_frame_and_map_back_to_their_objects(world):
    """Any size and aspect: the row's answer, parsed the way the engine parses it, lands on the target
    objects' own boxes in the original image (within the frame's rounding)."""
    config = NanoConfig(world=world)
    sizes, backgrounds = set(), set()
    for i in range(40):
        ex = make_scene_example("shift" if world == "shift" else "train", i, config)
        h, w = ex.scene.image.shape[:2]
        sizes.add((w, h))
        backgrounds.add(ex.scene.background)
        answer = parse_answer(ex.completion, (w, h), config.frame)
        assert answer.status in ("ok", "empty") and len(answer.targets) == len(ex.targets)
        for target, obj in zip(answer.targets, ex.targets):
            ys, xs = np.nonzero(obj.mask)
            tolerance = max(w, h) / 224 + 1
            assert abs(target.box[0] - xs.min()) <= tolerance and abs(target.box[1] - ys.min()) <= tolerance
            assert abs(target.box[2] - xs.max()) <= tolerance + 1 and abs(target.box[3] - ys.max()) <= tolerance + 1
    assert len(sizes) == 40 and any(w != h for w, h in sizes)
    assert max(max(s) for s in sizes) > 300 and min(min(s) for s in sizes) < 200
    assert {"white", "black", "flat", "photo"} & backgrounds


def test_wide_rows_are_deterministic_and_apart_from_the_classic_ones():
    a = make_example("train", 3, NanoConfig(world="wide"))
    assert a == make_example("train", 3, NanoConfig(world="wide"))
    assert a["image"]["bytes"] != make_example("train", 3)["image"]["bytes"]
    assert a["image"]["bytes"] != make_example("train", 3, NanoConfig(world="shift"))["image"]["bytes"]
    with pytest.raises(ValueError, match="world"):
        NanoConfig(world="moon")


def test_shift_split_and_baselines_through_the_cli(tmp_path):
    """`star-train nano-data --world wide --shift N`: the reader's ground truth (a PNG mask) is the union of
    the row's target instances (written separately as RLE), and the baselines score it as counted here."""
    import pyarrow.parquet as pq

    from engine.data import open_dataset
    from training.cli import main
    from training.nano.baselines import score_baselines

    out = tmp_path / "wide"
    assert main(["nano-data", "--out", str(out), "--world", "wide", "--train", "0", "--val", "0", "--test", "4",
                 "--shift", "8", "--quiet"]) == 0
    shift = out / "shift-00000-of-00001.parquet"
    rows = pq.read_table(shift).to_pylist()
    samples = list(open_dataset("reasonseg-x", shift))
    assert len(samples) == len(rows) == 8
    empty, all_objects = [], []
    for row, sample in zip(rows, samples):
        gt = sample.gt_loader() > 0
        instances = [decode(r) for r in json.loads(row["instances"])]
        union = np.logical_or.reduce(instances) if instances else np.zeros_like(gt)
        assert gt.shape == (row["img_height"], row["img_width"]) and (gt == union).all()
        everything = np.logical_or.reduce([decode(o["rle"]) for o in json.loads(row["scene_objects"])])
        empty.append(float(not gt.any()))
        inter, uni = (everything & gt).sum(), (everything | gt).sum()
        all_objects.append(1.0 if uni == 0 else inter / uni)
    scores = score_baselines(shift)
    assert scores["empty"]["giou"] == pytest.approx(np.mean(empty))
    assert scores["all-objects"]["giou"] == pytest.approx(np.mean(all_objects), abs=1e-6)


def test_an_object_that_would_vanish_into_the_background_is_recoloured():
    from training.nano.shapes import KINDS
    from training.nano.world import _contrasting_colour

    white = np.array([250.0, 250, 250])
    rng = np.random.default_rng(0)
    for _ in range(20):
        colour = _contrasting_colour(rng, KINDS["cup"], "white", white)
        assert colour in KINDS["cup"].colours and colour != "white"
    assert _contrasting_colour(rng, KINDS["cup"], "blue", white) == "blue"
    assert _contrasting_colour(rng, KINDS["banana"], "yellow", np.array(COLOURS["yellow"], float)) is None


def test_warmup_mixes_worlds_by_row_index():
    from training.nano.warmup_data import _coin

    coins = [_coin(i) for i in range(2000)]
    assert coins == [_coin(i) for i in range(2000)]
    assert 0.45 < np.mean(np.asarray(coins) < 0.5) < 0.55


def test_probes_are_what_they_say():
    from training.nano.probes import FAMILIES, make_probe

    for i in range(5):
        for family in FAMILIES:
            p = make_probe(family, i)
            assert p.image.shape[:2] == p.truth.shape and p.image.shape[:2] != (0, 0)
            assert p.truth.any() == (family in ("plain-colour-kind", "plain-position"))
        blank = make_probe("blank", i).image.astype(float)
        assert blank.std(axis=(0, 1)).max() < 5  # one flat colour (plus a little noise)
        colour_kind = make_probe("plain-colour-kind", i)
        assert colour_kind.query.startswith(("the ", "all the "))


def test_star_train_nano_probes_on_the_shipped_bundle(tmp_path):
    """Two probes per family through the shipped bundle: the counts add up, and with the guard on no
    full-frame mask is shown."""
    from training.cli import main

    out = tmp_path / "probes.json"
    assert main(["nano-probes", "--count", "2", "--threads", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"plain-colour-kind", "plain-position", "absent", "blank", "photo"}
    for r in results.values():
        assert 0 <= r["right"] <= r["probes"] == 2 and 0 <= r["unreadable_traces"] <= r["samples"]
        assert r["full_frame_shown"] == 0 and r["full_frame_unguarded"] <= 2

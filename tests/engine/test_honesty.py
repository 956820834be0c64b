"""What the engine will not present as an answer (engine/honesty.py): unreadable reasoning is marked, not shown
as reasoning; a mask that fills the image is taken as "nothing found". Scripted completions in front of the
tiny bundle's real segmenter; the thresholds are set from the masks that segmenter actually paints, and the
expected outcome is worked out from those areas by hand."""

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.honesty import (
    MaskGuard,
    featureless_rows,
    full_frame_rows,
    reasoning_problem,
    region_contrast,
    shown_reasoning,
)
from engine.pipeline import LocalReasoner
from tests.scripted import BLUE, RED, ReplayPolicy, answer


@pytest.mark.parametrize("text, problem", [
    ("The query names a red circle. I see a red circle.", ""),
    ("First I find the blue car [10,20,30,40], then I look left of it.", ""),
    ("The query names square>", "tags"),
    ('The223,68]}, {"label": "s. The green apple', "tags"),
    ("I see <answer> a cup", "tags"),
    ("", "no reasoning"),
    ("   ", "no reasoning"),
    ("apple apple apple apple apple apple apple", "repeated"),
    ("1,2,3,4,5,6,7,8,9,10 ;;; ,,, 12 13 14", "symbols"),
])
def test_reasoning_problems_by_hand(text, problem):
    found = reasoning_problem(text)
    assert (problem in found) if problem else found == ""
    shown = shown_reasoning(text)
    assert shown == text.strip() if not problem else shown.startswith("(the model's reasoning is not readable")


def test_full_frame_rows_by_hand():
    masks = np.zeros((3, 10, 10), bool)
    masks[0] = True  # 100 %
    masks[1, :9] = True  # 90 %
    masks[2, :5] = True  # 50 %
    assert full_frame_rows(masks, 0.9) == [0, 1]
    assert full_frame_rows(masks, 0.95) == [0]
    assert full_frame_rows(masks, 1.0) == []  # 1 keeps every mask
    assert full_frame_rows(masks[:0], 0.9) == []


def test_region_contrast_by_hand():
    """A 40 x 40 canvas at 100 with the last ten columns at 200: a box grown by half its size on each side
    reads only the canvas (0 levels), or reaches the bright columns with more than 1 % of its pixels and
    spans 200 - 100 = 100 levels."""
    rgb = np.full((40, 40, 3), 100, np.uint8)
    rgb[:, 30:] = 200
    assert region_contrast(rgb, (5, 5, 15, 15)) == 0  # grown to x 0..20, y 0..20
    assert region_contrast(rgb, (20, 5, 26, 15)) == 0  # grown by 3 to x 17..29
    assert region_contrast(rgb, (22, 5, 28, 15)) == 100  # grown to x 19..31: column 30 is 1/12 of it
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 5:15, 5:15] = True
    masks[1, 5:15, 22:28] = True
    assert featureless_rows(rgb, masks, 16) == [0, 2]  # row 2 is empty: it outlines nothing either way
    assert featureless_rows(rgb, masks, 0) == []  # 0 keeps every mask
    assert featureless_rows(rgb, masks, 101) == [0, 1, 2]


def _reasoner(segmenter, texts, share):
    return LocalReasoner(ReplayPolicy(texts), segmenter, frame="pixels-112", bundle={"name": "tiny"},
                    mask_guard=MaskGuard(max_share=share, min_contrast=0.0))


def test_a_full_frame_mask_is_nothing_found(tiny_segmenter, scene_image):
    """The guard's threshold placed between the two masks' areas drops the larger only; below both, the
    answer becomes "no object" with a note, the targets kept in `full_frame`; at 1 nothing changes."""
    raw = _reasoner(tiny_segmenter, [answer(RED, BLUE)], 1.0).run(scene_image, "the red square and the blue circle", 1)
    shares = [float(raw.host_mask(r).mean()) for r in raw.samples[0].mask_rows]
    assert not raw.notes and len(shares) == 2 and min(shares) > 0
    small, large = sorted(range(2), key=lambda j: shares[j])
    if shares[small] < shares[large]:
        between = (shares[small] + shares[large]) / 2
        r = _reasoner(tiny_segmenter, [answer(RED, BLUE)], between).run(scene_image, "the red square", 1)
        s = r.samples[0]
        assert [t.label for t in s.targets] == [raw.samples[0].targets[small].label]
        assert [t.label for t in s.full_frame] == [raw.samples[0].targets[large].label]
        assert (r.mask == raw.host_mask(raw.samples[0].mask_rows[small])).all() and r.notes
    r = _reasoner(tiny_segmenter, [answer(RED, BLUE)], min(shares) * 0.99).run(scene_image, "the red square", 1)
    assert r.no_object and not r.mask.any() and r.samples[0].status == "empty" and len(r.samples[0].full_frame) == 2
    assert r.notes and "not used" in r.notes[0]
    from engine.results import result_to_dict

    d = result_to_dict(r)
    assert d["notes"] == r.notes and len(d["samples"][0]["full_frame"]) == 2


def test_a_vote_over_full_frame_masks_says_no_object(tiny_segmenter, scene_image):
    texts = [answer(RED), answer(RED), answer(BLUE)]
    raw = _reasoner(tiny_segmenter, texts, 1.0).run(scene_image, "the red square", 3)
    least = min(float(raw.host_mask(r).mean()) for s in raw.samples for r in s.mask_rows)
    r = _reasoner(tiny_segmenter, texts, least * 0.99).run(scene_image, "the red square", 3)
    assert r.no_object and not r.mask.any() and all(s.status == "empty" for s in r.samples)
    assert r.vote.no_object_votes == 3


def test_a_mask_on_a_blank_canvas_is_nothing_found(tiny_segmenter):
    """The same scripted answer on a blank canvas (a photographed sheet: level 245, noise sigma 2) and on that
    canvas with a red disc: the tiny SAM paints a region either way; on the blank canvas every mask is dropped
    as featureless and the answer is "no object" with a note, beside the disc it is kept."""
    rng = np.random.default_rng(0)
    blank = (245 + rng.normal(0, 2, (184, 224, 1))).clip(0, 255).repeat(3, 2).astype(np.uint8)
    disc = blank.copy()
    yy, xx = np.mgrid[:184, :224]
    disc[(yy - 40) ** 2 + (xx - 60) ** 2 < 15 ** 2] = (220, 30, 30)
    guard = MaskGuard(max_share=1.0)  # the default contrast; the random SAM's masks are large
    r = LocalReasoner(ReplayPolicy([answer(RED, BLUE)]), tiny_segmenter, frame="pixels-112", mask_guard=guard).run(
        blank, "the red square", 1)
    s = r.samples[0]
    assert r.no_object and not r.mask.any() and s.status == "empty" and len(s.featureless) == 2 and not s.full_frame
    assert any("featureless" in note for note in r.notes)
    from engine.results import result_to_dict

    assert [t["label"] for t in result_to_dict(r)["samples"][0]["featureless"]] == ["red square", "blue circle"]
    kept = LocalReasoner(ReplayPolicy([answer(RED)]), tiny_segmenter, frame="pixels-112", mask_guard=guard).run(
        disc, "the red square", 1)
    ys, xs = np.nonzero(kept.host_mask(0))
    # By hand: the mask's box holds the whole disc (x 45..75, y 25..55), so its surroundings hold all ~700 red
    # pixels, more than 1 % of even the whole 224 x 184 image: they span far more than 16 levels.
    assert xs.min() <= 45 and xs.max() >= 75 and ys.min() <= 25 and ys.max() >= 55
    assert not kept.no_object and not kept.samples[0].featureless and not kept.notes


def test_unreadable_reasoning_is_marked_everywhere(tiny_segmenter, scene_image):
    garbled = answer(RED).replace("looking", 'The query names square> "bbox_2d"')
    r = _reasoner(tiny_segmenter, [garbled], 1.0).run(scene_image, "the red square", 1)
    s = r.samples[0]
    assert s.reasoning_problem and s.shown_reasoning.startswith("(the model's reasoning is not readable")
    from engine.results import result_to_dict
    from engine.serve.requests import PredictParams, result_payload

    assert result_to_dict(r)["samples"][0]["reasoning_problem"] == s.reasoning_problem
    assert result_payload(r, PredictParams(text_prompt="the red square"))["description"] == s.shown_reasoning


def test_star_segment_on_a_blank_canvas_says_no_object(tmp_path):
    """The shipped nano bundle on a plain white 320 x 240 canvas: whatever it answers, the result is "no
    object" (nothing there to outline), and a trace that is not readable is not printed as reasoning."""
    from PIL import Image

    Image.fromarray(np.full((240, 320, 3), 250, np.uint8)).save(tmp_path / "blank.png")
    for query in ("the red circle", "the pink house", "the shape on the left"):
        run = subprocess.run([sys.executable, "-m", "engine.cli", "--threads", "1", "segment", str(tmp_path / "blank.png"), query,
                              "--json"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        d = json.loads(run.stdout)
        assert d["no_object"] and d["area"] == 0, (query, d["notes"])
        for s in d["samples"]:
            assert bool(s["reasoning_problem"]) == bool(reasoning_problem(s["thinking"]))

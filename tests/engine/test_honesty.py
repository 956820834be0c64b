"""What the engine will not present as an answer (engine/honesty.py): unreadable reasoning is marked, not shown
as reasoning; a mask that fills the image is taken as "nothing found". Scripted completions in front of the
tiny bundle's real segmenter; the thresholds are set from the masks that segmenter actually paints, and the
expected outcome is worked out from those areas by hand."""

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.honesty import full_frame_rows, reasoning_problem, shown_reasoning
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


def _reasoner(segmenter, texts, share):
    from engine.pipeline import Reasoner

    return Reasoner(ReplayPolicy(texts), segmenter, frame="pixels-112", bundle={"name": "tiny"}, max_mask_share=share)


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


def test_unreadable_reasoning_is_marked_everywhere(tiny_segmenter, scene_image):
    garbled = answer(RED).replace("looking", 'The query names square> "bbox_2d"')
    r = _reasoner(tiny_segmenter, [garbled], 1.0).run(scene_image, "the red square", 1)
    s = r.samples[0]
    assert s.reasoning_problem and s.shown_reasoning.startswith("(the model's reasoning is not readable")
    from engine.results import result_to_dict
    from engine.serve.requests import PredictParams, result_payload

    assert result_to_dict(r)["samples"][0]["reasoning_problem"] == s.reasoning_problem
    assert result_payload(r, PredictParams("the red square"))["description"] == s.shown_reasoning


def test_star_segment_on_a_blank_canvas_never_shows_a_full_frame_mask(tmp_path):
    """The shipped nano bundle on a plain white 320 x 240 canvas: whatever it answers, the final mask is not
    (nearly) the whole image, and a trace that is not readable is not printed as reasoning."""
    from PIL import Image

    Image.fromarray(np.full((240, 320, 3), 250, np.uint8)).save(tmp_path / "blank.png")
    for query in ("the red circle", "the pink house", "the shape on the left"):
        run = subprocess.run([sys.executable, "-m", "engine.cli", "--threads", "1", "segment", str(tmp_path / "blank.png"), query,
                              "--json"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        d = json.loads(run.stdout)
        assert d["area"] < 0.9 * 320 * 240
        for s in d["samples"]:
            assert bool(s["reasoning_problem"]) == bool(reasoning_problem(s["thinking"]))

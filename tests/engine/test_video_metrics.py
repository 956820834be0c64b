"""J, F and J&F (engine/video_metrics.py) against the DAVIS 2017 evaluation code's own results.

REFERENCE holds what `davis2017/metrics.py` of github.com/davisvideochallenge/davis2017-evaluation gives
for each generated case (`db_eval_iou(gt, pred)` and `f_measure(pred, gt)`, bound 0.008, run on these
very masks with OpenCV 4.14 and scikit-image 0.25); the engine's code was written from the paper's
definitions, not from that code."""

import numpy as np
import pytest

from engine.video_metrics import (
    boundary_f_measure,
    boundary_map,
    region_similarity,
    sequence_score,
    summarize,
)

REFERENCE = {
    "disk vs disk shifted by 3": (0.8806666666666667, 0.6147540983606558),
    "disk vs disk shifted by 12": (0.5978476352308127, 0.14754098360655737),
    "rect vs smaller rect": (0.7842857142857143, 0.0),
    "rect at the image edge": (0.946119307248236, 0.8367346938775511),
    "empty vs empty": (1.0, 1.0),
    "empty vs disk": (0.0, 0.0),
    "disk vs empty": (0.0, 0.0),
    "two disks vs one": (0.36063072227873855, 0.6019417475728156),
    "ring vs disk": (0.7498507462686567, 0.7980295566502463),
    "disk vs disk with 3 % pixels flipped": (0.8418206399278955, 0.22466422466422467),
    "thin line vs thin line 1 px off": (0.3333333333333333, 1.0),
    "854 x 480 ellipses": (0.8784948391622407, 0.4764521193092622),
}


def cases():
    """Generated (pred, gt) pairs: shapes drawn with numpy only, every case fixed by its seed."""
    out = []
    h, w = 120, 200
    yy, xx = np.mgrid[:h, :w]
    def disk(cx, cy, r): return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    def rect(x0, y0, x1, y1): return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    out.append(("disk vs disk shifted by 3", disk(100, 60, 30), disk(103, 60, 30)))
    out.append(("disk vs disk shifted by 12", disk(100, 60, 30), disk(112, 60, 30)))
    out.append(("rect vs smaller rect", rect(20, 20, 120, 90), rect(25, 24, 115, 85)))
    out.append(("rect at the image edge", rect(150, 0, 200, 120), rect(148, 2, 200, 120)))
    out.append(("empty vs empty", np.zeros((h, w), bool), np.zeros((h, w), bool)))
    out.append(("empty vs disk", np.zeros((h, w), bool), disk(50, 50, 10)))
    out.append(("disk vs empty", disk(50, 50, 10), np.zeros((h, w), bool)))
    out.append(("two disks vs one", disk(40, 40, 15) | disk(150, 80, 20), disk(40, 40, 15)))
    out.append(("ring vs disk", disk(100, 60, 40) & ~disk(100, 60, 20), disk(100, 60, 40)))
    rng = np.random.default_rng(7)
    noisy = disk(100, 60, 35) ^ (rng.random((h, w)) < 0.03)
    out.append(("disk vs disk with 3 % pixels flipped", noisy, disk(100, 60, 35)))
    out.append(("thin line vs thin line 1 px off", rect(10, 50, 190, 52), rect(10, 51, 190, 53)))
    big_y, big_x = np.mgrid[:480, :854]
    out.append(("854 x 480 ellipses", ((big_x - 400) / 200.0) ** 2 + ((big_y - 240) / 120.0) ** 2 <= 1,
                ((big_x - 410) / 190.0) ** 2 + ((big_y - 250) / 125.0) ** 2 <= 1))
    return out


@pytest.mark.parametrize("name,pred,gt", cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_j_and_f_match_the_davis_2017_reference(name, pred, gt):
    j, f = REFERENCE[name]
    assert region_similarity(pred, gt) == pytest.approx(j, abs=1e-12)
    assert boundary_f_measure(pred, gt) == pytest.approx(f, abs=1e-12)


def test_the_boundary_of_a_square_by_hand():
    """A 3 x 3 square at rows / columns 2..4 of a 7 x 7 image: its boundary sits half a pixel towards the
    origin, so row 1 and column 1 (the pixels before it) and the square's last row and column are marked."""
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    edges = boundary_map(mask)
    expected = np.zeros((7, 7), bool)
    expected[1, 1:5] = expected[1:5, 1] = True      # before the square: their right / lower neighbours differ
    expected[4, 2:5] = expected[2:5, 4] = True      # the square's own last row and column
    assert (edges == expected).all()


def test_a_sequence_and_a_benchmark_are_means_of_their_parts():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True                               # 16 pixels
    b = np.zeros((10, 10), bool)
    b[2:6, 2:4] = True                               # 8 of them
    seq = sequence_score([(a, a), (b, a), (None, np.zeros((10, 10), bool))])
    assert seq.frames == 3 and seq.j == pytest.approx((1 + 0.5 + 1) / 3)
    other = sequence_score([(None, a)])
    assert (other.j, other.f) == (0.0, 0.0)
    table = summarize({"referring": [seq, seq], "reasoning": [other], "no-target": [seq]})
    # ReVOS's "overall" is the mean of the referring and the reasoning means, not of all sequences
    assert table["overall"]["j"] == pytest.approx((seq.j + 0) / 2) and table["overall"]["sequences"] == 3
    assert table["reasoning"]["jf"] == 0.0 and table["no-target"]["sequences"] == 1
    assert summarize({"referring": [seq]})["overall"]["j"] == seq.j  # MeViS: referring only
    with pytest.raises(ValueError):
        sequence_score([])

"""engine.metrics against hand-computed LISA cases, pycocotools (IoU) and PySODMetrics (S/E/wF/MAE)."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from engine.errors import ShapeMismatchError
from engine.metrics import intersection_union, segmentation_scores, sod_scores


def _gt(rows):
    return np.array(rows, dtype=np.uint8)


def test_lisa_hand_computed():
    gt1 = _gt([[1, 1, 0, 255], [1, 1, 0, 255]])  # 4 object pixels, 2 ignore
    pred1 = np.array([[1, 0, 1, 1], [1, 0, 0, 1]], bool)  # I = 2; U = 4 + 1 (ignore pixels dropped)
    gt2 = _gt([[0, 0], [0, 0]])  # empty GT + empty pred -> 1.0
    pred2 = np.zeros((2, 2), bool)
    gt3 = _gt([[0, 1], [1, 1]])  # failed prediction -> I = 0, U = 3
    gt4 = _gt([[0, 0], [0, 0]])  # empty GT, non-empty pred -> 0
    pred4 = np.array([[1, 0], [0, 0]], bool)
    out = segmentation_scores([pred1, pred2, None, pred4], [gt1, gt2, gt3, gt4])
    assert out["giou"] == pytest.approx((2 / 5 + 1.0 + 0.0 + 0.0) / 4)
    assert out["ciou"] == pytest.approx((2 + 0 + 0 + 0) / (5 + 0 + 3 + 1))
    assert out["n"] == 4


def test_conventions_hand_computed():
    gt = _gt([[1, 255], [0, 0]])
    pred = np.array([[1, 1], [0, 0]], bool)
    assert intersection_union(pred, gt, "lisa") == (1, 1)
    assert intersection_union(pred, gt, "star") == (2, 2)  # ignore folded into the object
    empty = np.zeros((2, 2), np.uint8)
    none = np.zeros((2, 2), bool)
    for conv, giou, n in (("lisa", 0.75, 2), ("star", 0.75, 2), ("seg-zero", 0.5, 1), ("visionreasoner", 0.25, 2)):
        half = np.array([[1, 0], [0, 0]], bool)
        out = segmentation_scores([half, none], [_gt([[1, 1], [0, 0]]), empty], convention=conv)
        assert out["giou"] == pytest.approx(giou if conv != "seg-zero" else 0.5), conv
        assert out["n"] == n


def test_groups():
    gts = [_gt([[1, 0]]), _gt([[1, 1]]), _gt([[0, 1]])]
    preds = [np.array([[1, 0]], bool), np.array([[1, 0]], bool), None]
    out = segmentation_scores(preds, gts, groups={"reasoning_type": ["a", "b", "a"]})
    assert out["groups"]["reasoning_type"]["a"]["giou"] == pytest.approx(0.5)
    assert out["groups"]["reasoning_type"]["b"]["giou"] == pytest.approx(0.5)
    assert out["groups"]["reasoning_type"]["a"]["ciou"] == pytest.approx(1 / 2)


def test_iou_matches_pycocotools_on_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = rng.integers(1, 64, 2)
        gt = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        pred = rng.random((h, w)) < rng.random()
        i, u = intersection_union(pred, gt)
        if u == 0:
            continue
        a = coco_mask.encode(np.asfortranarray(pred.astype(np.uint8)))
        b = coco_mask.encode(np.asfortranarray(gt))
        assert i / u == pytest.approx(coco_mask.iou([a], [b], [0])[0, 0])


def test_shape_mismatch_and_bad_values_raise():
    with pytest.raises(ShapeMismatchError):
        segmentation_scores([np.zeros((2, 3), bool)], [np.zeros((3, 2), np.uint8)])
    with pytest.raises(ValueError, match="0, 1 and 255"):
        segmentation_scores([np.zeros((2, 2), bool)], [np.full((2, 2), 128, np.uint8)])


def _sod_reference(preds, gts):
    import py_sod_metrics as M

    sm, em, wfm, mae = M.Smeasure(), M.Emeasure(), M.WeightedFmeasure(), M.MAE()
    for p, g in zip(preds, gts):
        for m in (sm, em, wfm, mae):
            m.step(pred=p, gt=g)
    e = em.get_results()["em"]
    return {"sm": sm.get_results()["sm"], "em_adp": e["adp"], "em_mean": e["curve"].mean(), "em_max": e["curve"].max(),
            "wfm": wfm.get_results()["wfm"], "mae": mae.get_results()["mae"]}


def test_sod_scores_match_pysodmetrics():
    rng = np.random.default_rng(7)
    preds, gts = [], []
    for i in range(8):
        h, w = rng.integers(8, 70, 2)
        g = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        g[y:y + h // 3 + 1, x:x + w // 2] = 255
        if i == 5:
            g[:] = 0  # empty GT
        if i == 6:
            g[:] = 255  # all foreground
        p = rng.integers(0, 256, (h, w)).astype(np.uint8) if i % 2 else (g // 2 + rng.integers(0, 80, (h, w))).astype(np.uint8)
        if i == 7:
            p[:] = 77  # constant prediction (no min-max normalisation)
        preds.append(p)
        gts.append(g)
    ours, ref = sod_scores(preds, gts), _sod_reference(preds, gts)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-10, abs=1e-12), key

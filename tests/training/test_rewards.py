"""training.rewards against hand-computed cases (docs/protocol.md §7 and the reference reward code)."""

import itertools
import json

import numpy as np
import pytest

from training import rewards as R


def ans(objs, think="t"):
    return f"<think>{think}</think> <answer>{json.dumps(objs)}</answer>"


def test_think_format():
    assert R.think_format_score("<think>a\nb</think>\n <answer>[]</answer>") == 1.0
    assert R.think_format_score("<think>a</think><answer>[]</answer> trailing") == 0.0
    assert R.think_format_score("<answer>[]</answer>") == 0.0
    assert R.think_format_reward(None, ["<think></think><answer></answer>", [{"role": "assistant", "content": "x"}]]) == [1.0, 0.0]


def test_answer_format_star_and_visionreasoner():
    text = ans([{"label": "a", "bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2]}, {"label": " ", "bbox_2d": [1, 2, 3], "point_2d": [1, 2]}])
    assert R.answer_format_score(text, with_label=True) == pytest.approx((2 + 2 / 3) / 2)
    assert R.answer_format_score(text, with_label=False) == pytest.approx((2 + 1) / 2)
    assert R.answer_format_score("<answer>[{'bbox_2d': 1}]</answer>", with_label=True) == 0.0  # no repairs
    assert R.answer_format_score("<answer>[]</answer>", with_label=True) == 0.0


def test_non_repeat_zero_at_the_second_repeat():
    assert R.non_repeat_score("A. B.") == 1.0
    assert R.non_repeat_score("A. A.") == 1.0  # one repeat: still 1 (reference: repeats >= 2)
    assert R.non_repeat_score("A. A. A.") == 0.0
    assert R.non_repeat_score("A. B. A. B.") == 0.0
    assert R.non_repeat_score(" A .A. ..") == 1.0


def test_box_iou_plus_one_convention():
    assert R.box_iou_matrix([[0, 0, 9, 9]], [[5, 0, 14, 9]])[0, 0] == pytest.approx(50 / 150)
    assert R.box_iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 1.0  # a one-pixel box
    assert R.box_iou_matrix([[0, 0, 4, 4]], [[5, 5, 9, 9]])[0, 0] == 0.0


def test_pair_terms_by_hand():
    t = R.pair_terms([[0, 0, 10, 10], [0, 0, 10, 10]], [[5, 5], [11, 5]], [[2, 2, 12, 12]], [[30, 5]])
    # IoU 81 / 161 > 0.5; mean L1 = 2 < 10; point 25 px away and inside its own box
    assert t.box_iou[:, 0].tolist() == [1.0, 1.0] and t.box_l1[:, 0].tolist() == [1.0, 1.0]
    assert t.point[:, 0].tolist() == [1.0, 0.0]  # the second point is 19 px away but outside its box


def _brute_force_assignment(total: np.ndarray) -> float:
    m, n = total.shape
    if m <= n:
        return max(sum(total[i, p[i]] for i in range(m)) for p in itertools.permutations(range(n), m))
    return max(sum(total[p[j], j] for j in range(n)) for p in itertools.permutations(range(m), n))


def test_hungarian_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        m, n = (int(v) for v in rng.integers(1, 5, 2))
        total = rng.integers(0, 9, (m, n)).astype(float)
        assert R.matched_sum(total, 8.0) == pytest.approx(_brute_force_assignment(total))


def test_visionreasoner_and_stage1_with_m_not_n():
    gt = json.dumps([{"bbox_2d": [100, 100, 200, 200], "point_2d": [150, 150]}])
    good = {"label": "x", "bbox_2d": [101, 100, 200, 201], "point_2d": [150, 151]}
    bad = {"label": "y", "bbox_2d": [500, 500, 600, 600], "point_2d": [550, 550]}
    two = ans([bad, good])
    assert R.visionreasoner_accuracy(two, gt) == pytest.approx(3 / 2)
    assert R.star_stage1_accuracy(two, gt) == pytest.approx(3 / 2)  # counts differ: no bonus
    assert R.star_stage1_accuracy(ans([good]), gt) == pytest.approx(3 + 1)


def _masks(*rects, shape=(20, 20)):
    out = np.zeros((len(rects), *shape), bool)
    for k, (y0, y1, x0, x1) in enumerate(rects):
        out[k, y0:y1, x0:x1] = True
    return out


def test_mask_tier_boundaries():
    iou = np.array([0.3, 0.30001, 0.5, 0.5001, 0.7, 0.7001, 0.8, 0.8001, 0.9, 0.9001, 1.0])
    assert R.mask_tiers(iou).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # Exactly 1/2 and 9/10 as masks: the reference's + 1e-6 in the union puts them in the lower tier.
    half = R.mask_iou_matrix(_masks((0, 1, 0, 1)), _masks((0, 1, 0, 2)))
    assert R.mask_tiers(half)[0, 0] == 1.0
    nine = R.mask_iou_matrix(_masks((0, 1, 0, 9)), _masks((0, 1, 0, 10)))
    assert R.mask_tiers(nine)[0, 0] == 4.0


def test_stage1_with_masks_and_stage2():
    gt = json.dumps([{"bbox_2d": [0, 0, 9, 9], "point_2d": [5, 5]}, {"bbox_2d": [10, 10, 19, 19], "point_2d": [15, 15]}])
    text = ans([{"label": "a", "bbox_2d": [0, 0, 9, 9], "point_2d": [5, 5]}, {"label": "b", "bbox_2d": [10, 10, 19, 19], "point_2d": [15, 15]}])
    gt_masks = _masks((0, 10, 0, 10), (10, 20, 10, 20))
    pred_masks = _masks((0, 10, 0, 10), (10, 16, 10, 20))  # IoU 1.0 -> 5; IoU 0.6 -> 2
    assert R.star_stage1_accuracy(text, gt, pred_masks, gt_masks) == pytest.approx((5 + 3 + 2 + 3) / 2 + 1)
    assert R.star_stage2_accuracy(text, pred_masks, gt_masks) == pytest.approx(2 * (5 + 2) / 2)


def test_empty_and_malformed_answers():
    gt = json.dumps([{"bbox_2d": [0, 0, 9, 9], "point_2d": [5, 5]}])
    assert R.star_stage1_accuracy("<think>x</think><answer>[]</answer>", gt) == 0.0
    assert R.star_stage1_accuracy("no answer", gt) == 0.0
    assert R.star_stage1_accuracy(ans([{"bbox_2d": [0, 0, 9, 9, 1], "point_2d": [5, 5]}] * 4), gt) == 0.0
    assert R.star_stage1_accuracy(ans([{"bbox_2d": [0, 0, 9, 9]}]), gt) == 0.0
    # A correct "no object" answer: 0 in the reference, full accuracy when asked for.
    assert R.visionreasoner_accuracy("<answer>[]</answer>", "[]") == 0.0
    assert R.visionreasoner_accuracy("<answer>[]</answer>", "[]", reward_empty_match=True) == 3.0
    assert R.star_stage2_accuracy("<answer>[]</answer>", None, np.zeros((0, 4, 4), bool), reward_empty_match=True) == 10.0


def test_gt_targets_from_masks_by_hand():
    m = np.zeros((10, 12), bool)
    m[2:7, 3:10] = True  # rows 2..6, cols 3..9
    (t,) = R.gt_targets_from_masks([m])
    assert t["bbox_2d"] == [3, 2, 9, 6]
    assert t["point_2d"] == [5, 4]  # inscribed radius 3 along row 4 for cols 5..7; argmax takes the first
    full = np.ones((5, 5), bool)
    assert R.gt_targets_from_masks([full])[0]["point_2d"] == [2, 2]  # the border counts as background
    with pytest.raises(ValueError):
        R.gt_targets_from_masks([np.zeros((3, 3), bool)])


def test_star_reward_batches_one_segment_call_per_image():
    calls = []

    def box_segmenter(image, boxes, points):
        """Rasterises each box: a real, simple segmenter for checking the batching."""
        calls.append(len(boxes))
        h, w = image.shape[:2]
        out = np.zeros((len(boxes), h, w), bool)
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            out[k, y1:y2 + 1, x1:x2 + 1] = True
        return out

    img_a, img_b = np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 9, np.uint8)
    gt = [{"bbox_2d": [0, 0, 9, 9], "point_2d": [5, 5]}]
    gt_masks = [_masks((0, 10, 0, 10))]
    completions = [ans([{"label": "a", "bbox_2d": [0, 0, 9, 9], "point_2d": [5, 5]}]),
                   ans([{"label": "a", "bbox_2d": [0, 0, 9, 4], "point_2d": [5, 2]}, {"label": "b", "bbox_2d": [12, 12, 19, 19], "point_2d": [15, 15]}]),
                   "garbage",
                   ans([{"label": "a", "bbox_2d": [0, 0, 9, 9], "point_2d": [5, 5]}])]
    reward = R.StarAccuracyReward(stage=2, segment=box_segmenter)
    out = reward(None, completions, solution=[json.dumps(gt)] * 4, solution_masks=gt_masks * 4, image=[img_a, img_a.copy(), img_a.copy(), img_b])
    assert calls == [3, 1]  # every object of the three completions on image A (equal copies), then image B
    # completion 2: masks IoU 0.5 (-> 1 with the +1e-6) and 0 with the GT; max(M, N) = 2 -> 2 * 1 / 2
    assert out == pytest.approx([10.0, 1.0, 0.0, 10.0])


def test_qwen3_grid_answers_are_scored_in_the_training_pixels():
    """answer_grid = 840: a grid answer [100, 200, 300, 400] is the pixel box round(v * 839 / 999) =
    [84, 168, 252, 336] (by hand); the same answer read as pixels would miss the GT entirely."""
    gt = [{"bbox_2d": [84, 168, 252, 336], "point_2d": [168, 252]}]
    grid = ans([{"label": "a", "bbox_2d": [100, 200, 300, 400], "point_2d": [200, 300]}])
    assert R._predicted(grid, 840)[0].tolist() == [[84.0, 168.0, 252.0, 336.0]]
    assert R._predicted(grid, 840)[1].tolist() == [[168.0, 252.0]]
    assert R.visionreasoner_accuracy_reward(None, [grid], [json.dumps(gt)], answer_grid=[840]) == [3.0]
    assert R.visionreasoner_accuracy_reward(None, [grid], [json.dumps(gt)], answer_grid=[0]) == [0.0]
    seen = []

    def box_segmenter(image, boxes, points):
        seen.append(boxes.tolist())
        out = np.zeros((len(boxes), 840, 840), bool)
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            out[k, y1:y2 + 1, x1:x2 + 1] = True
        return out

    gt_mask = np.zeros((1, 840, 840), bool)
    gt_mask[0, 168:337, 84:253] = True
    reward = R.StarAccuracyReward(stage=1, segment=box_segmenter)
    out = reward(None, [grid], solution=[json.dumps(gt)], solution_masks=[gt_mask], image=[np.zeros((840, 840, 3), np.uint8)],
                 answer_grid=[840])
    assert seen == [[[84.0, 168.0, 252.0, 336.0]]]  # SAM is prompted in pixels
    assert out == pytest.approx([8.0 + 1.0])  # tier 5 + IoU + L1 + point, and the count bonus


def test_qwen3_training_rows_use_840_pixels():
    from training.grpo_data import training_row

    image = np.zeros((300, 500, 3), np.uint8)
    mask = np.zeros((300, 500), bool)
    mask[30:60, 50:100] = True
    row = training_row("the thing", image, [mask], family="star-stage2", frame="qwen3-1000")
    assert row["image"].size == (840, 840) and row["answer_grid"] == 840
    box = json.loads(row["solution"])[0]["bbox_2d"]
    assert box[0] == pytest.approx(50 * 840 / 500, abs=2) and box[3] == pytest.approx(59 * 840 / 300, abs=3)
    assert training_row("the thing", image, [mask], family="star", frame="qwen2.5-840")["answer_grid"] == 0

"""StAR / VisionReasoner rewards in TRL's signature: f(prompts, completions, **columns) -> list[float].

Conventions follow the reference reward code (docs/protocol.md §7): the answer JSON is parsed
without repairs, any exception scores 0, boxes use the +1 pixel convention, matching is Hungarian.
One place where the reference code and the shared protocol text differ, the code wins: the
non-repeat reward drops to 0 at the SECOND repeated sentence (`repeats >= 2`).

Columns a dataset provides: `solution` (JSON list of {"bbox_2d", "point_2d"} in the model frame),
and for the SAM-level terms `solution_masks` (instance masks: bool arrays or COCO RLE dicts) and
`image` (the training image in the model frame, e.g. 840 x 840). Qwen3-VL answers on a 0..1000 grid:
rows then carry `answer_grid` = the training image's side in pixels (0 for pixel frames), and every
predicted coordinate is converted to those pixels before the pixel thresholds and SAM see it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.mask_prompts import box_and_deep_point

_THINK_ANSWER = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
MAX_OBJECTS = 120  # the reference truncates both sides here

# (lower bound exclusive, tier) for the SAM-level mask reward
MASK_TIERS = ((0.9, 5.0), (0.8, 4.0), (0.7, 3.0), (0.5, 2.0), (0.3, 1.0))

SegmentFn = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
"""segment(image, boxes [K, 4], points [K, 2]) -> bool masks [K, H, W]: SAM, box + positive point, best mask."""


def completion_text(completion: Any) -> str:
    """TRL passes plain strings or conversational lists of {"role", "content"} messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal content parts
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return str(completion)


def answer_json(text: str) -> Any:
    """The JSON between the answer tags (no repairs, as the reference); raises when absent or invalid."""
    m = _ANSWER.search(text)
    if m is None:
        raise ValueError("no answer")
    return json.loads(m.group(1))


# --------------------------------------------------------------------------------------------
# Format and repetition
# --------------------------------------------------------------------------------------------


def think_format_score(text: str) -> float:
    return 1.0 if _THINK_ANSWER.fullmatch(text) else 0.0


def answer_format_score(text: str, with_label: bool) -> float:
    """VisionReasoner: +1 per valid box and point (max 2). StAR: +2/3 per box, point, label (max 2).
    Averaged over the answer's objects."""
    total = 0.0
    try:
        data = answer_json(text)
        count = len(data)
        for item in data:
            if not isinstance(item, dict):
                continue
            unit = 2.0 / 3.0 if with_label else 1.0
            score = 0.0
            box, point = item.get("bbox_2d"), item.get("point_2d")
            if isinstance(box, list) and len(box) == 4:
                score += unit
            if isinstance(point, list) and len(point) == 2:
                score += unit
            if with_label:
                label = item.get("label")
                if isinstance(label, str) and label.strip():
                    score += unit
            total += score / count
    except Exception:
        pass
    return total


def non_repeat_score(text: str) -> float:
    sentences = [s.strip() for s in text.split(".") if s.strip()]
    seen, repeats = set(), 0
    for sentence in sentences:
        if sentence in seen:
            repeats += 1
        if repeats >= 2:
            return 0.0
        seen.add(sentence)
    return 1.0


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def box_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Box IoU with the +1 pixel convention: area = (x2 - x1 + 1) * (y2 - y1 + 1)."""
    pred, gt = np.asarray(pred, dtype=np.float64).reshape(-1, 4), np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    xa = np.maximum(pred[:, None, 0], gt[None, :, 0])
    ya = np.maximum(pred[:, None, 1], gt[None, :, 1])
    xb = np.minimum(pred[:, None, 2], gt[None, :, 2])
    yb = np.minimum(pred[:, None, 3], gt[None, :, 3])
    inter = np.maximum(0, xb - xa + 1) * np.maximum(0, yb - ya + 1)
    area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_p[:, None] + area_g[None, :] - inter)


def mask_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """I / (U + 1e-6), as the reference (so an exact 0.5 lands in the tier below)."""
    # float64: pixel counts stay exact far beyond float32's 2**24 (a 4096 x 4096 mask).
    p = np.asarray(pred, dtype=bool).reshape(len(pred), -1).astype(np.float64)
    g = np.asarray(gt, dtype=bool).reshape(len(gt), -1).astype(np.float64)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return inter / (union + 1e-6)


def mask_tiers(iou: np.ndarray) -> np.ndarray:
    iou = np.asarray(iou, dtype=np.float64)
    out = np.zeros_like(iou)
    for bound, tier in reversed(MASK_TIERS):  # ascending bounds; the higher tier overwrites
        out[iou > bound] = tier
    return out


@dataclass
class PairTerms:
    box_iou: np.ndarray  # 1 where box IoU > 0.5
    box_l1: np.ndarray  # 1 where the mean |coordinate difference| < 10 px
    point: np.ndarray  # 1 where the point is < 30 px away AND inside the prediction's own box


def pair_terms(pred_boxes, pred_points, gt_boxes, gt_points) -> PairTerms:
    pb, pp = np.asarray(pred_boxes, np.float64).reshape(-1, 4), np.asarray(pred_points, np.float64).reshape(-1, 2)
    gb, gp = np.asarray(gt_boxes, np.float64).reshape(-1, 4), np.asarray(gt_points, np.float64).reshape(-1, 2)
    iou = box_iou_matrix(pb, gb)
    l1 = np.abs(pb[:, None, :] - gb[None, :, :]).mean(axis=2)
    dist = np.sqrt(((pp[:, None, :] - gp[None, :, :]) ** 2).sum(axis=2))
    inside = (pp[:, 0] >= pb[:, 0]) & (pp[:, 0] <= pb[:, 2]) & (pp[:, 1] >= pb[:, 1]) & (pp[:, 1] <= pb[:, 3])
    return PairTerms((iou > 0.5).astype(float), (l1 < 10).astype(float), ((dist < 30) & inside[:, None]).astype(float))


def matched_sum(total: np.ndarray, max_pair: float) -> float:
    """Hungarian matching on cost = max_pair - total; the sum of the matched totals."""
    rows, cols = linear_sum_assignment(max_pair - total)
    return float(total[rows, cols].sum())


def gt_targets_from_masks(masks: Sequence[np.ndarray]) -> list[dict]:
    """Per instance: the tight box [x1, y1, x2, y2] (inclusive) and the centre of its largest inscribed
    circle (engine.mask_prompts: argmax of the Euclidean distance transform; the image border counts as
    background)."""
    out = []
    for mask in masks:
        box, point = box_and_deep_point(mask)
        out.append({"bbox_2d": box, "point_2d": point})
    return out


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------


def _coords(values: list, width: int) -> np.ndarray:
    """[K, width] float array; anything else (ragged, wrong length) raises like the reference's numpy."""
    arr = np.array(values, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"expected [K, {width}] coordinates, got shape {arr.shape}")
    return arr


def _predicted(text: str, grid_side: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The answer's boxes and points; `grid_side` > 0: Qwen3-VL grid values -> pixels of that square image."""
    data = answer_json(text)
    boxes = [item["bbox_2d"] for item in data][:MAX_OBJECTS]
    points = [item["point_2d"] for item in data][:MAX_OBJECTS]
    boxes, points = _coords(boxes, 4), _coords(points, 2)
    if grid_side and len(boxes) and len(points) == len(boxes):
        from engine.protocol import grid_answer_to_pixels

        b, p = grid_answer_to_pixels(boxes, points, (grid_side, grid_side))
        return np.array(b, dtype=np.float64), np.array(p, dtype=np.float64)
    return boxes, points


def _ground_truth(solution: str | list) -> tuple[np.ndarray, np.ndarray]:
    data = json.loads(solution) if isinstance(solution, str) else solution
    data = data[:MAX_OBJECTS]
    return _coords([d["bbox_2d"] for d in data], 4), _coords([d["point_2d"] for d in data], 2)


def _empty_case(n_pred: int, n_gt: int, full: float, reward_empty_match: bool) -> float | None:
    """The reference scores every answer with no boxes, or a GT with none, as 0 (numpy fails on the
    empty arrays). `reward_empty_match` gives a correct "no object" answer the full accuracy instead;
    worlds with no-target queries (the nano world) need it to be learnable."""
    if n_pred and n_gt:
        return None
    return full if (reward_empty_match and n_pred == 0 and n_gt == 0) else 0.0


def visionreasoner_accuracy(text: str, solution, *, reward_empty_match: bool = False, grid_side: int = 0) -> float:
    try:
        pb, pp = _predicted(text, grid_side)
        gb, gp = _ground_truth(solution)
        empty = _empty_case(len(pb), len(gb), 3.0, reward_empty_match)
        if empty is not None:
            return empty
        t = pair_terms(pb, pp, gb, gp)
        return matched_sum(t.box_iou + t.box_l1 + t.point, 3.0) / max(len(pb), len(gb))
    except Exception:
        return 0.0


def star_stage1_accuracy(text: str, solution, pred_masks: np.ndarray | None = None, gt_masks: np.ndarray | None = None,
                         *, reward_empty_match: bool = False, grid_side: int = 0) -> float:
    """mask tier + box IoU + L1 + point per pair (max 8; max 3 without masks), Hungarian, / max(M, N),
    plus 1 when the object counts match."""
    try:
        pb, pp = _predicted(text, grid_side)
        gb, gp = _ground_truth(solution)
        empty = _empty_case(len(pb), len(gb), 9.0 if gt_masks is not None else 4.0, reward_empty_match)
        if empty is not None:
            return empty
        t = pair_terms(pb, pp, gb, gp)
        total, cap = t.box_iou + t.box_l1 + t.point, 3.0
        if pred_masks is not None and gt_masks is not None:
            total, cap = total + mask_tiers(mask_iou_matrix(pred_masks, gt_masks[:MAX_OBJECTS])), 8.0
        return matched_sum(total, cap) / max(len(pb), len(gb)) + (1.0 if len(pb) == len(gb) else 0.0)
    except Exception:
        return 0.0


def star_stage2_accuracy(text: str, pred_masks: np.ndarray | None, gt_masks: np.ndarray, *, reward_empty_match: bool = False) -> float:
    """2 x (Hungarian sum of mask tiers / max(M, N)) (max 10)."""
    try:
        pb, _ = _predicted(text)
        empty = _empty_case(len(pb), len(gt_masks), 10.0, reward_empty_match)
        if empty is not None:
            return empty
        if pred_masks is None:
            return 0.0
        tiers = mask_tiers(mask_iou_matrix(pred_masks, gt_masks[:MAX_OBJECTS]))
        return 2.0 * matched_sum(tiers, 5.0) / max(len(pred_masks), len(gt_masks))
    except Exception:
        return 0.0


# --------------------------------------------------------------------------------------------
# TRL reward functions
# --------------------------------------------------------------------------------------------


def think_format_reward(prompts, completions, **_) -> list[float]:
    """TRL reward: 1.0 per completion of the form <think>...</think> <answer>...</answer>, else 0.0 (§7)."""
    return [think_format_score(completion_text(c)) for c in completions]


def star_answer_format_reward(prompts, completions, **_) -> list[float]:
    """TRL reward: StAR's answer format, 2/3 per valid bbox_2d, point_2d and label, averaged over objects (max 2)."""
    return [answer_format_score(completion_text(c), with_label=True) for c in completions]


def visionreasoner_answer_format_reward(prompts, completions, **_) -> list[float]:
    """TRL reward: VisionReasoner's answer format, +1 per valid bbox_2d and point_2d, averaged over objects (max 2)."""
    return [answer_format_score(completion_text(c), with_label=False) for c in completions]


def non_repeat_reward(prompts, completions, **_) -> list[float]:
    """TRL reward: 1.0 unless the completion repeats a sentence (from its second repetition, as the reference)."""
    return [non_repeat_score(completion_text(c)) for c in completions]


def _grid_sides(answer_grid, n: int) -> list[int]:
    return [0] * n if answer_grid is None else [int(g or 0) for g in answer_grid]


def visionreasoner_accuracy_reward(prompts, completions, solution, answer_grid=None, **_) -> list[float]:
    """TRL reward: VisionReasoner's accuracy (box IoU + L1 + point per Hungarian-matched pair, max 3) against
    the `solution` column; `answer_grid` > 0 reads grid answers (Qwen3-VL) in that many pixels."""
    return [visionreasoner_accuracy(completion_text(c), s, grid_side=g)
            for c, s, g in zip(completions, solution, _grid_sides(answer_grid, len(completions)))]


def decode_masks(masks: Any) -> np.ndarray:
    """Instance masks from a dataset column: a bool array [K, H, W], a list of arrays, or COCO RLEs
    (also as a JSON string of them)."""
    if isinstance(masks, str):
        masks = json.loads(masks)
    if isinstance(masks, np.ndarray):
        return masks.astype(bool)
    out = []
    for m in masks:
        if isinstance(m, dict):
            from engine.rle import decode

            out.append(decode(m))
        else:
            out.append(np.asarray(m, dtype=bool))
    return np.stack(out) if out else np.zeros((0, 0, 0), dtype=bool)


def _image_key(image: Any) -> bytes:
    import hashlib

    arr = np.asarray(image)
    return hashlib.blake2b(arr.tobytes() + str(arr.shape).encode(), digest_size=16).digest()


class StarAccuracyReward:
    """StAR's accuracy reward for stage 1 or 2 with SAM in the loop.

    All objects of all completions that share an image go to the segmenter in ONE call (GRPO groups
    share their prompt's image), so a batch costs one image embedding per distinct image.
    Without a segmenter, stage 1 falls back to the box/point terms (as the reference does without
    masks) and stage 2 cannot be scored (raises).
    """

    def __init__(self, stage: int, segment: SegmentFn | None = None, *, reward_empty_match: bool = False):
        if stage not in (1, 2):
            raise ValueError("stage must be 1 or 2")
        if stage == 2 and segment is None:
            raise ValueError("the stage-2 reward is mask-only: it needs a segmenter")
        self.stage, self.segment, self.reward_empty_match = stage, segment, reward_empty_match
        self.__name__ = f"star_stage{stage}_accuracy"

    def _masks_for_batch(self, texts: list[str], images: list | None, grids: list[int]) -> list[np.ndarray | None]:
        if self.segment is None or images is None:
            return [None] * len(texts)
        parsed = []
        for text, grid in zip(texts, grids):
            try:
                parsed.append(_predicted(text, grid))
            except Exception:
                parsed.append(None)
        results: list[np.ndarray | None] = [None] * len(texts)
        groups: dict[bytes, list[int]] = {}
        for i, image in enumerate(images):
            # By content: TRL hands every completion of a group its own decoded copy of the image.
            groups.setdefault(_image_key(image), []).append(i)
        for members in groups.values():
            todo = [i for i in members if parsed[i] is not None and len(parsed[i][0])]
            if not todo:
                continue
            boxes = np.concatenate([parsed[i][0] for i in todo])
            points = np.concatenate([parsed[i][1] for i in todo]) if all(len(parsed[i][1]) == len(parsed[i][0]) for i in todo) else None
            if points is None:
                continue  # box/point count mismatch: the reference's zip fails -> scored 0 below
            masks = self.segment(images[members[0]], boxes, points)
            start = 0
            for i in todo:
                n = len(parsed[i][0])
                results[i] = masks[start : start + n]
                start += n
        return results

    def __call__(self, prompts, completions, solution=None, solution_masks=None, image=None, answer_grid=None,
                 **_) -> list[float]:
        """TRL reward: one accuracy per completion. `solution` holds the GT boxes and points, `solution_masks`
        the GT masks (RLE), `image` each row's image (SAM segments the predicted boxes and points on it)."""
        texts = [completion_text(c) for c in completions]
        grids = _grid_sides(answer_grid, len(texts))
        pred_masks = self._masks_for_batch(texts, image, grids)
        rewards = []
        for i, text in enumerate(texts):
            gt_masks = decode_masks(solution_masks[i]) if solution_masks is not None else None
            if self.stage == 1:
                rewards.append(star_stage1_accuracy(text, solution[i], pred_masks[i], gt_masks,
                                                    reward_empty_match=self.reward_empty_match, grid_side=grids[i]))
            else:
                rewards.append(star_stage2_accuracy(text, pred_masks[i], gt_masks, reward_empty_match=self.reward_empty_match))
        return rewards

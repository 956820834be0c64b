"""What a nano policy's answers name, read from a `star eval` run on a nano split: does each named object
exist in the scene, is the set of names the gold set, and how well does each box fit the object it names.

gIoU alone cannot tell "named the wrong object" from "named the right one, drew its box badly"; the world
knows every object's label and mask, so this splits the two (docs/nano.md, "What the answers name"). Every sample of
every item counts (at N > 1 that is N answers per item).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.protocol import parse_answer
from engine.rle import decode
from training.rewards import box_iou_matrix, gt_targets_from_masks


@dataclass
class NamingCounts:
    samples: int = 0
    failed: int = 0  # unparseable answers: they name nothing
    exact: int = 0  # parsed answers whose set of labels is the gold set ([] for a no-target query)

    @property
    def exact_rate(self) -> float:
        return self.exact / self.samples if self.samples else 0.0


@dataclass
class AnswerReport:
    overall: NamingCounts = field(default_factory=NamingCounts)
    by_type: dict[str, NamingCounts] = field(default_factory=dict)
    named: int = 0  # answer objects
    named_in_scene: int = 0  # ... whose label is one of the scene's objects
    box_ious: list[float] = field(default_factory=list, repr=False)  # per object named in the scene

    @property
    def in_scene_rate(self) -> float:
        return self.named_in_scene / self.named if self.named else 0.0

    def summary(self) -> dict:
        ious = np.asarray(self.box_ious)
        return {"samples": self.overall.samples, "failed": self.overall.failed,
                "exact_label_set": round(self.overall.exact_rate, 4),
                "exact_label_set_by_type": {k: round(v.exact_rate, 4) for k, v in sorted(self.by_type.items())},
                "named_objects": self.named, "named_in_scene": round(self.in_scene_rate, 4),
                "box_iou_vs_named_mean": round(float(ious.mean()), 4) if ious.size else None,
                "box_iou_vs_named_over_0.5": round(float((ious > 0.5).mean()), 4) if ious.size else None,
                "counts": {"overall": asdict(self.overall), "by_type": {k: asdict(v) for k, v in self.by_type.items()}}}


def _scene_rows(data: str | Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    files = sorted(Path(data).glob("*.parquet")) if Path(data).is_dir() else [Path(data)]
    rows = {}
    for file in files:
        table = pq.read_table(file, columns=["image_id", "ann_id", "labels", "scene_objects", "reasoning_type",
                                             "img_width", "img_height"])
        for row in table.to_pylist():
            rows[f"{row['image_id']}:{row['ann_id']}"] = row
    return rows


def read_answers(run_dir: str | Path, data: str | Path) -> AnswerReport:
    """Every sample of a `star eval` run (results.jsonl, frame from run.json) against the nano rows in `data`."""
    run = Path(run_dir)
    frame = json.loads((run / "run.json").read_text())["bundle"]["policy"]["frame"]
    rows = _scene_rows(data)
    report = AnswerReport()
    for line in (run / "results.jsonl").read_text().splitlines():
        item = json.loads(line)
        row = rows.get(item["id"])
        if row is None:
            raise ValueError(f"{item['id']} is not a row of {data}: is it the split the run evaluated?")
        objects = json.loads(row["scene_objects"])
        boxes: dict[str, list] = {}
        for o, target in zip(objects, gt_targets_from_masks([decode(o["rle"]) for o in objects])):
            boxes.setdefault(o["label"], []).append(target["bbox_2d"])
        gold = set(json.loads(row["labels"]))
        counts = report.by_type.setdefault(row["reasoning_type"], NamingCounts())
        for sample in item["samples"]:
            answer = parse_answer(sample["text"], (row["img_width"], row["img_height"]), frame)
            for c in (report.overall, counts):
                c.samples += 1
                c.failed += answer.status == "failed"
                c.exact += answer.status != "failed" and {t.label for t in answer.targets} == gold
            for t in answer.targets:
                report.named += 1
                if t.label in boxes:
                    report.named_in_scene += 1
                    report.box_ious.append(float(box_iou_matrix([t.box], boxes[t.label]).max()))
    return report

"""MMR: a JSON list of image records with `questions` and per-question `answers` (COCO RLE masks).

The ground truth of a question is the union of its answers' masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..rle import decode
from .sample import OnError, Reader, Sample


def union_of_answers(answers: list[dict], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for ans in answers:
        m = decode(ans["segmentation"])
        if m.shape != mask.shape:
            raise ValueError(f"answer mask is {m.shape[1]}x{m.shape[0]}, image is {width}x{height}")
        mask |= m
    return mask.astype(np.uint8)


class MmrReader(Reader):
    kind = "mmr"

    def __init__(self, path: str | Path, *, image_dir: str | Path | None = None, on_error: OnError = "raise"):
        super().__init__(on_error)
        self.path = Path(path)
        data = json.loads(self.path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = next((data[k] for k in ("data", "items", "records") if isinstance(data.get(k), list)), [data])
        self.records = data
        self.image_dir = Path(image_dir) if image_dir else self.path.parent / "images"

    def __len__(self) -> int:
        return sum(min(len(r.get("questions", [])), len(r.get("answers", []))) for r in self.records)

    def __iter__(self) -> Iterator[Sample]:
        for n, record in enumerate(self.records):
            try:
                file_name = record["file_name"]
                height, width = int(record["height"]), int(record["width"])
                questions, answers = record["questions"], record["answers"]
            except (KeyError, TypeError, ValueError) as exc:
                self._problem(f"{self.path.name} record {n}", f"missing field {exc}")
                continue
            for q, (question, group) in enumerate(zip(questions, answers)):
                if not isinstance(group, list) or not any(isinstance(a, dict) and "segmentation" in a for a in group):
                    self._problem(f"{self.path.name} record {n} question {q}", "no answer masks")
                    continue
                group = [a for a in group if isinstance(a, dict) and "segmentation" in a]
                meta = {"image_id": record.get("image_id"), "question_index": q, "file": file_name}
                yield Sample(
                    f"{record.get('image_id', n)}:{q}",
                    str(question),
                    self.image_dir / file_name,
                    lambda g=group, h=height, w=width: union_of_answers(g, h, w),
                    meta,
                    exif=False,
                )

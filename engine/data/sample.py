"""One benchmark sample, whatever the dataset: an image, a query, a ground-truth mask, metadata."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import DatasetError
from ..images import ImageSource, load_image

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


@dataclass
class Sample:
    """Images and masks load on demand, so a reader over thousands of samples stays light.

    The ground truth is uint8 HxW: 0 background, 1 object, 255 ignore (LISA's convention).
    """

    id: str
    query: str
    image_source: ImageSource
    gt_loader: Callable[[], np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    exif: bool = True  # apply EXIF orientation when decoding (what the dataset's reference did)
    # The target's objects one by one (bool HxW each), for training's per-object rewards; None: the
    # ground truth's object pixels as one instance.
    instances_loader: Callable[[], list[np.ndarray]] | None = None

    def load_image(self) -> np.ndarray:
        return load_image(self.image_source, exif=self.exif)

    def load_gt(self) -> np.ndarray:
        return self.gt_loader()

    def load_instances(self) -> list[np.ndarray]:
        """The target's objects as separate masks (empty when the sample has no object)."""
        if self.instances_loader is not None:
            return [m for m in self.instances_loader() if m.any()]
        gt = self.load_gt() == 1
        return [gt] if gt.any() else []


class Reader:
    """Base of the dataset readers: iteration, length, and what to do with a broken file.

    on_error="raise" stops at the first broken file with a DatasetError naming it;
    "skip" logs it, records it in `problems`, and goes on.
    """

    kind = "?"

    def __init__(self, on_error: OnError = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        self.on_error = on_error
        self.problems: list[str] = []

    def _problem(self, where: str, what: str) -> None:
        message = f"{where}: {what}"
        if self.on_error == "raise":
            raise DatasetError(message)
        log.warning("skipping %s", message)
        self.problems.append(message)

    def __iter__(self) -> Iterator[Sample]:  # pragma: no cover - every reader overrides it
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover
        raise NotImplementedError

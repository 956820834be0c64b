"""A held-out split that stays held out: an image is held out by a seeded hash of its bytes (so renaming,
moving or adding images never moves one across), or by a list the user gives (one image path per line,
relative to the dataset's folder)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SPLITS = ("all", "train", "held-out")


def content_fraction(path: Path, seed: int) -> float:
    """A number in [0, 1) fixed by the file's bytes and the seed."""
    h = hashlib.sha256(f"star-holdout|{seed}|".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return int.from_bytes(h.digest()[:8], "big") / 2.0 ** 64


class HoldOut:
    """Which images are held out. `split`: all | train | held-out; `fraction` of the images by content hash,
    unless `split_file` lists them."""

    def __init__(self, root: Path, *, split: str = "all", fraction: float | str = 0.2, seed: int | str = 0,
                 split_file: str | Path | None = None):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
        self.root, self.split, self.seed = Path(root), split, int(seed)
        self.fraction = float(fraction)
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"holdout={fraction}: a fraction between 0 and 1 (e.g. 0.2)")
        self.listed: set[str] | None = None
        if split_file is not None:
            lines = Path(split_file).read_text(encoding="utf-8").splitlines()
            self.listed = {Path(line.strip()).as_posix() for line in lines if line.strip() and not line.startswith("#")}

    def held_out(self, image: Path) -> bool:
        if self.listed is not None:
            return image.relative_to(self.root).as_posix() in self.listed
        return content_fraction(image, self.seed) < self.fraction

    def keeps(self, image: Path) -> bool:
        """Whether `image` belongs to the chosen split."""
        return self.split == "all" or self.held_out(image) == (self.split == "held-out")

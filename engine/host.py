"""Arrays that may live on a GPU (a torch tensor, a CuPy array) brought to the host as NumPy: masks, and the
small per-mask sums and projections the guards and the vote read."""

from __future__ import annotations

import numpy as np


def to_host(array) -> np.ndarray:
    """`array` as a NumPy array, wherever it lives (NumPy unchanged, a torch tensor on any device, CuPy)."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()
    if hasattr(array, "get"):
        return array.get()
    return np.asarray(array)

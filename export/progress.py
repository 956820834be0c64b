"""Progress bars for star-export's long stages (multi-GB merges, conversions, quantizations). tqdm draws
only on a terminal (`disable=None`), so logs, CI and tests stay free of bar noise."""

from __future__ import annotations

import re
from pathlib import Path

_QUANT_STEP = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")


def stage_bar(desc: str, total: int | None = None, unit: str = "tensor", *, enabled: bool = True):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, leave=False, dynamic_ncols=True)


def tensor_count(model_dir: str | Path, *, vision: bool) -> int | None:
    """How many language-model (or, with `vision`, vision-tower) tensors the checkpoint's safetensors
    shards hold: about as many as the converter writes to the model GGUF (or the mmproj)."""
    try:
        from safetensors import safe_open

        total = 0
        for shard in sorted(Path(model_dir).glob("*.safetensors")):
            with safe_open(str(shard), "np") as f:
                total += sum(("visual" in k) == vision for k in f.keys())
        return total or None
    except Exception:  # a bar without a total is fine
        return None


def quantize_position(text: str) -> tuple[int, int] | None:
    """llama.cpp's quantizer logs `[  12/ 291] blk.0.attn_q.weight ...` per tensor: (12, 291)."""
    m = _QUANT_STEP.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None

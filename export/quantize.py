"""Quantize a GGUF with llama-cpp-python's `llama_model_quantize` (pip builds no llama-quantize binary)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import StarError

from .progress import quantize_position, stage_bar
from .quant_types import QUANTIZABLE, QUANTS

_LOG_LINES: list[str] = []
_CALLBACK = None
_BAR = None  # the running quantization's progress bar, moved by _on_log


def _on_log(level, text, user) -> None:
    line = text.decode(errors="replace")
    _LOG_LINES.append(line)
    position = quantize_position(line) if _BAR is not None else None
    if position is not None:
        _BAR.total = position[1]
        _BAR.n = position[0]
        _BAR.refresh()


def quantize_model(src: str | Path, dst: str | Path, quant: str, *, threads: int = 0, keep_output: bool = False,
                   progress: bool = False) -> Path:
    """llama.cpp logs every tensor while quantizing; the lines are kept for the error message instead.
    `keep_output`: the LM head (output.weight) keeps the source's type (its precision is the answer's)."""
    import ctypes

    from engine.policy.llama_lib import llama_modules

    global _CALLBACK, _BAR
    L, _ = llama_modules()
    lines = _LOG_LINES
    lines.clear()
    if _CALLBACK is None:  # module-level: llama.cpp keeps calling it after this function returns
        _CALLBACK = L.llama_log_callback(_on_log)
    L.llama_log_set(_CALLBACK, ctypes.c_void_p())
    _BAR = stage_bar(f"quantizing to {quant}", enabled=progress)

    if quant not in QUANTIZABLE:
        raise StarError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTIZABLE)}")
    dst = Path(dst)
    partial = dst.with_name(dst.name + ".partial")
    params = L.llama_model_quantize_default_params()
    params.ftype = getattr(L, QUANTS[quant].llama_ftype)
    params.nthread = threads
    params.quantize_output_tensor = not keep_output
    try:
        rc = L.llama_model_quantize(str(src).encode(), str(partial).encode(), params)
    finally:
        _BAR.close()
        _BAR = None
    if rc != 0:
        partial.unlink(missing_ok=True)
        tail = "".join(lines).strip().splitlines()[-5:]
        raise StarError(f"quantizing {src} to {quant} failed (llama_model_quantize returned {rc}): " + " | ".join(tail))
    partial.replace(dst)
    lines.clear()
    return dst

"""Quantize a GGUF with llama-cpp-python's `llama_model_quantize` (pip builds no llama-quantize binary)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import StarError

QUANT_TYPES = {"F16": "LLAMA_FTYPE_MOSTLY_F16", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
               "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def quantize_model(src: str | Path, dst: str | Path, quant: str, *, threads: int = 0) -> Path:
    import llama_cpp as L

    if quant not in QUANT_TYPES:
        raise StarError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    dst = Path(dst)
    partial = dst.with_name(dst.name + ".partial")
    params = L.llama_model_quantize_default_params()
    params.ftype = getattr(L, QUANT_TYPES[quant])
    params.nthread = threads
    rc = L.llama_model_quantize(str(src).encode(), str(partial).encode(), params)
    if rc != 0:
        partial.unlink(missing_ok=True)
        raise StarError(f"quantizing {src} to {quant} failed (llama_model_quantize returned {rc})")
    partial.replace(dst)
    return dst

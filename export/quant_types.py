"""The policy quantizations star-export writes, each with every fact the exporter needs about it in one row
(as gguf-py's `GGML_QUANT_SIZES` keeps one row per tensor type): llama.cpp's file type, the disk it costs
per parameter, and how far `star-export verify` lets its logits drift from the Hugging Face reference."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantType:
    name: str
    llama_ftype: str | None     # llama_model_quantize's target; None for F32 (the converter's own output)
    bytes_per_param: float      # GGUF bytes per weight, block scales included (for the free-space checks)
    logit_tolerance: float      # verify: largest relative logit error against the reference
    min_agreement: float        # verify: share of decided greedy steps that must pick the reference's token


QUANTS: dict[str, QuantType] = {q.name: q for q in (
    QuantType("F32", None, 4.0, 0.02, 0.95),
    QuantType("F16", "LLAMA_FTYPE_MOSTLY_F16", 2.0, 0.03, 0.95),
    QuantType("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", 1.1, 0.08, 0.9),
    QuantType("Q5_K_M", "LLAMA_FTYPE_MOSTLY_Q5_K_M", 0.75, 0.25, 0.75),
    QuantType("Q4_K_M", "LLAMA_FTYPE_MOSTLY_Q4_K_M", 0.65, 0.35, 0.7),
)}
DEFAULT_QUANT = "Q4_K_M"  # the llama.cpp world's usual pick: about 30 % of F16's size, a small loss
QUANTIZABLE = tuple(name for name, q in QUANTS.items() if q.llama_ftype)  # what llama_model_quantize writes


def verify_limits(name: str) -> QuantType:
    """The row verify checks a bundle's policy against; a type star-export does not write (a user's own
    GGUF: Q4_0, Q6_K, IQ4_XS, ...) is held to the loosest limits in the table."""
    return QUANTS.get(name) or QUANTS[DEFAULT_QUANT]

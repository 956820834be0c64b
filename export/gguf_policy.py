"""`star-export policy|bundle --gguf MODEL.gguf --mmproj MMPROJ.gguf`: a GGUF pair a user already has
becomes a bundle's policy in the time it takes to hash it, with no torch, no Hugging Face checkpoint and
no conversion.

The pair is checked first (`export.gguf_pair`), then placed at the bundle's usual names: hard-linked with
`link` (one copy on disk; the bundle keeps the data if the original is moved or deleted), else copied. A
model at F32 / F16 / BF16 may be quantized on the way (`quant`); a quantized one is kept as it is, since
quantizing it again would round twice. What cannot be checked without the Hugging Face weights (logit
parity) is said by `star-export verify`, which checks the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.bundle import PolicySpec
from engine.errors import ModelFileError
from engine.protocol import PROMPT_FAMILIES

from .gguf_pair import GgufPair, inspect_pair
from .quant_types import QUANTIZABLE
from .quantize import quantize_model
from .stages import StageLog, check_free_space, fingerprint, place_file, provenance

UNQUANTIZED = ("F32", "F16", "BF16")


def _target_quant(pair: GgufPair, quant: str | None) -> str:
    if quant is None or quant == pair.quant:
        return pair.quant
    if quant not in QUANTIZABLE:
        raise ModelFileError(f"--quant {quant}: choose one of {', '.join(QUANTIZABLE)} (or leave it out to keep the "
                             f"GGUF's {pair.quant})")
    if pair.quant not in UNQUANTIZED:
        raise ModelFileError(f"--quant {quant}: {pair.model.name} is already {pair.quant}, and quantizing it again "
                             "would round twice; give an F16 / BF16 / F32 GGUF, or leave --quant out to keep it")
    return quant


def policy_from_gguf(model: str | Path, mmproj: str | Path, bundle: str | Path, *, frame: str | None = None,
                     prompt_family: str = "star", quant: str | None = None, link: bool = False,
                     answer_grammar: bool = False, vote_temperature: float = 1.0,
                     log: Callable[[str], None] = print, progress: bool = False) -> PolicySpec:
    """Check the pair, place it in `bundle` (linked or copied; quantized first when `quant` asks and the
    model is unquantized) and return the manifest's policy section. Re-running with the same files
    skips what is already in place."""
    if prompt_family not in PROMPT_FAMILIES:
        raise ModelFileError(f"unknown prompt family {prompt_family!r}; choose one of {', '.join(PROMPT_FAMILIES)}")
    pair = inspect_pair(model, mmproj, frame)
    log(f"GGUF pair: {pair.describe()}")
    if not pair.chat_template:
        log(f"{pair.model.name} carries no chat template: nothing is lost, the engine writes Qwen's ChatML prompt "
            "itself")
    target_quant = _target_quant(pair, quant)
    bundle = Path(bundle)
    model_rel = f"policy/model-{target_quant.lower()}.gguf"
    mmproj_rel = f"policy/mmproj-{pair.mmproj_type.lower()}.gguf"
    stages = StageLog(bundle)
    placed = {}
    for stage, source, rel, q in (("policy-model", pair.model, model_rel, target_quant),
                                  ("policy-mmproj", pair.mmproj, mmproj_rel, None)):
        inputs = fingerprint(source.resolve(), q or "as is")
        target = bundle / rel
        if stages.done(stage, inputs):
            log(f"{rel}: up to date, skipped")
            placed[rel] = "kept"
            continue
        if q is not None and q != pair.quant:
            log(f"quantizing {source.name} ({pair.quant}) to {q}")
            check_free_space(target.parent, source.stat().st_size, f"the {q} GGUF")
            quantize_model(source, target, q, progress=progress)
            placed[rel] = "quantized"
        else:
            placed[rel] = place_file(source, target, link=link)
            log(f"{rel}: {placed[rel]} from {source}")
        stages.record(stage, inputs, [rel])
    return PolicySpec(family=pair.family, frame=pair.frame, prompt_family=prompt_family, model=model_rel,
                      mmproj=mmproj_rel, quant=target_quant, answer_grammar=answer_grammar,
                      vote_temperature=vote_temperature,
                      source={"gguf": provenance(pair.model, bundle), "mmproj": provenance(pair.mmproj, bundle),
                              "gguf_quant": pair.quant, "name": pair.name, "chat_template": pair.chat_template,
                              "placed": placed})

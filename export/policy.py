"""`star-export policy`: a Hugging Face Qwen2.5-VL / Qwen3-VL checkpoint (+ LoRA) -> GGUF + mmproj in a bundle.

Stages (each skipped on a re-run when its inputs and outputs are unchanged): merge the adapter into a
temporary checkpoint, convert to an F16 (or F32) GGUF with llama.cpp's converter, quantize, write the
vision projector. The family and answer frame come from the checkpoint's config.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.bundle import PolicySpec
from engine.errors import ModelFileError
from engine.policy.hf_inputs import checkpoint_frame
from engine.policy.splits import KNOWN_SPLITS
from engine.protocol import PROMPT_FAMILIES, get_frame

from .converter import convert, llama_cpp_version
from .quant_types import DEFAULT_QUANT, QUANTS
from .quantize import quantize_model
from .stages import StageLog, check_free_space, fingerprint, provenance, tree_bytes

FAMILIES = {"qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl"}
ARCHITECTURES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}
MMPROJ_TYPES = ("f16", "q8_0", "f32")
# Bytes per parameter of each output, for the free-space check (GGUF K-quants carry some f32 tensors).


@dataclass
class PolicySource:
    model_dir: Path
    family: str
    frame: str
    model_type: str
    custom_tokenizer: str | None  # the pre-tokenizer to declare for a tokenizer made here (the nano world's)


def detect(model_dir: str | Path, frame: str | None = None) -> PolicySource:
    root = Path(model_dir)
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ModelFileError(f"{root} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{cfg_path} is not readable JSON ({exc})") from None
    model_type = config.get("model_type", "") if isinstance(config, dict) else ""
    if model_type not in FAMILIES:
        raise ModelFileError(f"{root} is a {model_type or 'unknown'!r} model; star-export handles "
                             f"{', '.join(FAMILIES)} (Qwen2.5-VL, Qwen3-VL)")
    # llama.cpp's converter picks its model class from architectures[0], not from model_type, and some of
    # its classes load code with trust_remote_code: only the two classes this project supports may reach it.
    architectures = config.get("architectures")
    if architectures != [ARCHITECTURES[model_type]]:
        raise ModelFileError(f"{cfg_path}: architectures is {architectures!r}; a {model_type} checkpoint must "
                             f"say [{ARCHITECTURES[model_type]!r}] (the converter chooses its code by this field)")
    family = FAMILIES[model_type]
    if frame is None:
        frame = checkpoint_frame(root, family)
    get_frame(frame)  # validates
    return PolicySource(root, family, frame, model_type, _custom_tokenizer(root))


def _custom_tokenizer(root: Path) -> str | None:
    """The llama.cpp pre-tokenizer to declare for a tokenizer made here (the nano world's), found by its
    split regex; None for a released vocabulary, which the converter knows by hash."""
    try:
        tok = json.loads((root / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return None
    if len(tok.get("model", {}).get("vocab", {})) > 100000:
        return None
    text = json.dumps(tok.get("pre_tokenizer"))
    return next((name for name, split in KNOWN_SPLITS.items() if json.dumps(split)[1:-1] in text), None)


def export_policy(model_dir: str | Path, bundle: str | Path, *, adapter: str | Path | None = None,
                  quant: str = DEFAULT_QUANT, mmproj_quant: str = "f16", frame: str | None = None,
                  prompt_family: str = "star", keep_f16: bool = False, output_f32: bool = False,
                  answer_grammar: bool = False, vote_temperature: float = 1.0, log: Callable[[str], None] = print,
                  progress: bool = False) -> PolicySpec:
    """`output_f32`: convert at f32 and keep the LM head unquantized (the nano policy's quadratic coordinate
    code scores coordinates with large, precise output rows; f16 or Q8_0 rounding moves its peaks).
    `answer_grammar`: the manifest recommends decoding under the answer grammar (PolicySpec.answer_grammar);
    `vote_temperature`: the voting temperature it recommends (PolicySpec.vote_temperature)."""
    if quant not in QUANTS:
        raise ModelFileError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    if mmproj_quant not in MMPROJ_TYPES:
        raise ModelFileError(f"unknown mmproj type {mmproj_quant!r}; choose one of {', '.join(MMPROJ_TYPES)}")
    if prompt_family not in PROMPT_FAMILIES:
        raise ModelFileError(f"unknown prompt family {prompt_family!r}; choose one of {', '.join(PROMPT_FAMILIES)}")
    source = detect(model_dir, frame)
    bundle = Path(bundle)
    stages = StageLog(bundle)
    weights = tree_bytes(source.model_dir)
    params = weights / 2  # bf16 / f16 checkpoints; f32 ones only make this estimate generous
    check_free_space(bundle, int(params * (2 + QUANTS[quant].bytes_per_param) + (weights if adapter else 0)),
                     "converting this policy")
    declare = source.custom_tokenizer
    model_rel = f"policy/model-{quant.lower()}.gguf"
    mmproj_rel = f"policy/mmproj-{mmproj_quant}.gguf"
    head = "f32" if output_f32 else quant
    inputs = fingerprint(source.model_dir, Path(adapter) if adapter else "no-adapter", quant, head, llama_cpp_version())

    # Each check hashes the stage's outputs (GBs): ask once.
    model_done = stages.done("policy-model", inputs)
    mmproj_done = stages.done("policy-mmproj", inputs + mmproj_quant)
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".work-") as work:
        work = Path(work)
        hf_dir = source.model_dir
        if adapter and not (model_done and mmproj_done):
            from .lora import merge_adapter

            log(f"merging the LoRA adapter {adapter} into {source.model_dir.name}")
            from .progress import stage_bar

            check_free_space(work, weights, "merging the LoRA adapter (a merged copy of the checkpoint)")

            with stage_bar("merging LoRA", len(list(source.model_dir.glob("*.safetensors"))), "shard",
                           enabled=progress) as bar:
                hf_dir = merge_adapter(source.model_dir, adapter, work / "merged", progress=lambda _: bar.update(1))
        if model_done:
            log(f"{model_rel}: up to date, skipped")
        else:
            base_type = "f32" if quant == "F32" or output_f32 else "f16"
            log(f"converting to GGUF ({base_type})")
            check_free_space(work, int(params * QUANTS[base_type.upper()].bytes_per_param), f"the {base_type} GGUF")
            base = convert(hf_dir, work / f"model-{base_type}.gguf", outtype=base_type, declare_pre=declare,
                           progress=progress).path
            target = bundle / model_rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if quant in ("F32", "F16"):
                shutil.move(str(base), target.with_name(target.name + ".partial"))
                target.with_name(target.name + ".partial").replace(target)
            else:
                log(f"quantizing to {quant}")
                check_free_space(target.parent, int(params * QUANTS[quant].bytes_per_param), f"the {quant} GGUF")
                quantize_model(base, target, quant, keep_output=output_f32, progress=progress)
            if keep_f16 and quant not in ("F32", "F16"):
                shutil.move(str(base), bundle / "policy" / base.name)
            stages.record("policy-model", inputs, [model_rel])
        if mmproj_done:
            log(f"{mmproj_rel}: up to date, skipped")
        else:
            log(f"writing the vision projector ({mmproj_quant})")
            convert(hf_dir, bundle / mmproj_rel, outtype=mmproj_quant, mmproj=True, declare_pre=declare, progress=progress)
            stages.record("policy-mmproj", inputs + mmproj_quant, [mmproj_rel])
    return PolicySpec(family=source.family, frame=source.frame, prompt_family=prompt_family, model=model_rel,
                      mmproj=mmproj_rel, quant=quant, answer_grammar=answer_grammar,
                      vote_temperature=vote_temperature,
                      source={"model": provenance(source.model_dir, bundle),
                              "adapter": provenance(adapter, bundle) if adapter else None,
                              "model_type": source.model_type, "output": head})

"""The exporter as a Python API: `make_bundle` does what `star-export policy | sam2 | bundle` do, with
typed options and the project's errors (the CLI and the nano recipe both call it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.bundle import MANIFEST, Manifest, read_manifest, write_manifest

from .quant_types import DEFAULT_QUANT

TOOLS = ("star-desktop", "llama-cpp-python", "transformers", "torch", "sam2", "onnx", "onnxruntime", "tensorrt")


@dataclass
class PolicyOptions:
    """A Hugging Face Qwen2.5-VL / Qwen3-VL folder (+ LoRA) and how to write it (see `star-export policy -h`)."""
    model: str | Path
    adapter: str | Path | None = None
    quant: str = DEFAULT_QUANT
    mmproj_quant: str = "f16"
    frame: str | None = None          # None: detected from the checkpoint
    prompt_family: str = "star"
    keep_f16: bool = False
    output_f32: bool = False          # keep the LM head in f32 (the nano policy's coordinate code needs it)
    answer_grammar: bool = False      # the manifest recommends decoding under the answer grammar
    vote_temperature: float = 1.0     # ... and this voting temperature for N > 1


@dataclass
class GgufPolicyOptions:
    """A GGUF model + mmproj pair a user already has (see `star-export policy --gguf`): checked, then
    linked or copied into the bundle; quantized on the way only from F32 / F16 / BF16."""
    model: str | Path
    mmproj: str | Path
    frame: str | None = None          # None: the family's own frame
    prompt_family: str = "star"
    quant: str | None = None          # None: keep the GGUF's own quantization
    answer_grammar: bool = False
    vote_temperature: float = 1.0


@dataclass
class SegmenterOptions:
    """A SAM 2 / 2.1 checkpoint + config and the forms to write (see `star-export sam2 -h`)."""
    checkpoint: str | Path
    config: str | Path
    with_torch: bool = False
    tensorrt: bool = False
    fp16: bool = False
    keep_graphs: bool = False   # the bundle's ONNX graphs stay; the checkpoint (its video memory) goes beside them


def tool_versions() -> dict[str, str]:
    """The versions of the tools that make a bundle, as the manifest records them."""
    from engine.doctor import installed_versions

    return installed_versions(TOOLS)


def make_bundle(out: str | Path, *, policy: PolicyOptions | GgufPolicyOptions | None = None,
                segmenter: SegmenterOptions | None = None, segmenter_from: str | Path | None = None,
                link: bool = False, name: str | None = None, verify: bool = True,
                log: Callable[[str], None] = print, progress: bool = False):
    """Write (or update) the bundle in `out` with a policy, a segmenter or both, then its manifest; with
    `verify`, check it and return the `export.verify.Report` (None without). `policy`: a Hugging Face
    folder to convert (PolicyOptions) or a GGUF pair to take as it is (GgufPolicyOptions).
    `segmenter_from`: another bundle whose segmenter files are taken (checksums verified) instead of
    exporting SAM 2 again. Files taken as they are (a GGUF pair, another bundle's segmenter) are
    hard-linked with `link`, else copied. Stages whose inputs and outputs are unchanged are skipped, so a
    re-run after an interruption finishes the job. Raises StarError subclasses (ModelFileError,
    DiskSpaceError, ConverterError, ...) for what a user can fix."""
    out = Path(out)
    if segmenter is not None and segmenter_from is not None:
        raise ValueError("give a SAM 2 checkpoint to export or a bundle to take the segmenter from, not both")
    manifest = _manifest(out, name)
    if isinstance(policy, GgufPolicyOptions):  # headers only, seconds: a wrong pair is refused before anything is written
        from .gguf_pair import inspect_pair

        inspect_pair(policy.model, policy.mmproj, policy.frame)
    if segmenter_from is not None:  # first: a damaged source is refused before minutes of policy export
        from .shared_segmenter import take_segmenter

        out.mkdir(parents=True, exist_ok=True)
        manifest.segmenter = take_segmenter(segmenter_from, out, link=link, log=log)
    if isinstance(policy, GgufPolicyOptions):
        from .gguf_policy import policy_from_gguf

        manifest.policy = policy_from_gguf(policy.model, policy.mmproj, out, frame=policy.frame,
                                           prompt_family=policy.prompt_family, quant=policy.quant, link=link,
                                           answer_grammar=policy.answer_grammar,
                                           vote_temperature=policy.vote_temperature, log=log, progress=progress)
    elif policy is not None:
        from .policy import export_policy

        manifest.policy = export_policy(policy.model, out, adapter=policy.adapter, quant=policy.quant,
                                        mmproj_quant=policy.mmproj_quant, frame=policy.frame,
                                        prompt_family=policy.prompt_family, keep_f16=policy.keep_f16,
                                        output_f32=policy.output_f32, answer_grammar=policy.answer_grammar,
                                        vote_temperature=policy.vote_temperature, log=log, progress=progress)
    if segmenter is not None and segmenter.keep_graphs:
        from .sam2 import add_checkpoint_beside_graphs

        manifest.segmenter = add_checkpoint_beside_graphs(manifest.segmenter, segmenter.checkpoint, segmenter.config,
                                                          out, log=log)
    elif segmenter is not None:
        from .sam2 import export_sam2

        manifest.segmenter = export_sam2(segmenter.checkpoint, segmenter.config, out, with_torch=segmenter.with_torch,
                                         tensorrt=segmenter.tensorrt, fp16=segmenter.fp16, log=log)
    manifest.tools = tool_versions()
    manifest.verification = {}  # the files may have changed: an earlier verification no longer applies
    log(f"wrote {write_manifest(out, manifest)}")
    if not verify:
        return None
    from .verify import verify_bundle

    return verify_bundle(out, record=True)


def _manifest(bundle: Path, name: str | None) -> Manifest:
    if (bundle / MANIFEST).is_file():
        manifest = read_manifest(bundle).manifest
        if name:
            manifest.name = name
        return manifest
    return Manifest(name=name or bundle.name)

"""`star-export verify`: is a bundle intact, does it load, and does it still compute what its source did?

- checksums: every file against the manifest's SHA-256 (always hashed, no remembered stamps);
- loads: the policy answers one greedy prompt, the segmenter segments one box;
- a policy taken from a user's GGUF pair (`--gguf`), whose Hugging Face weights are not at hand: its greedy
  answer on the bundled sample scene must parse under the bundle's prompt family, with coordinates inside
  the bundle's answer frame (what a wrong `--prompt-family` or `--frame` shows as);
- parity (with `--reference`): policy logits vs transformers, teacher-forced over the reference's own
  greedy tokens (max relative error per step, argmax agreement); SAM 2 vs the PyTorch checkpoint
  (logit error, mask IoU). Over tolerance -> the report fails and the command exits non-zero. Without
  `--reference` the report says that parity was not checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.bundle import Bundle, check_files, read_manifest, save_manifest
from engine.errors import ModelFileError
from engine.offline import from_local, local_folder
from engine.protocol import get_frame, parse_raw

from .quant_types import verify_limits

# The segmenter's exported graphs against PyTorch: largest logit error and least mask IoU (docs/export.md).
SAM_LOGIT_TOLERANCE = 1e-3
SAM_MIN_IOU = 0.99
QUERIES = ("the red circle", "what keeps food cold", "all the triangles")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    numbers: dict = field(default_factory=dict)


@dataclass
class Report:
    bundle: str
    checks: list[Check]
    not_recorded: str = ""  # why the verdict could not be written into the manifest ("" when it was, or not asked)
    notes: list[str] = field(default_factory=list)  # what was not checked, and how to check it

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "ok": self.ok, "checks": [asdict(c) for c in self.checks], "notes": self.notes}


def probe_image(size: int = 160, seed: int = 0) -> np.ndarray:
    """A deterministic picture with shapes on it (parity needs real structure, not noise only)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size + 40, 3), 200, np.uint8)
    img[20:70, 30:90] = (215, 40, 40)
    yy, xx = np.mgrid[:size, :size + 40]
    img[(yy - 110) ** 2 + (xx - 140) ** 2 < 30 ** 2] = (40, 80, 210)
    return np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


def check_checksums(bundle: Bundle) -> Check:
    problems = check_files(bundle, full=True, use_stamps=False)
    return Check("checksums", not problems, "; ".join(problems) or f"{len(bundle.manifest.files)} files match")


def open_policy(bundle: Bundle):
    """The bundle's policy as the checks run it: flash attention off, because llama.cpp's CPU flash-attention
    kernel works at f16 inside and at a real model's depth moves the logits past the F16 tolerance by itself
    (a random Qwen2.5-VL-3B: 0.051 with it, 0.004 without; docs/benchmarks.md). The checks judge the export."""
    from engine.policy.llama_backend import LlamaPolicy

    spec = bundle.manifest.policy
    return LlamaPolicy(bundle.path(spec.model), bundle.path(spec.mmproj), family=spec.family, frame=spec.frame,
                       prompt_family=spec.prompt_family, n_ctx=4096, max_samples=1, threads=1, flash_attn=False)


def answer_problem(logits: np.ndarray, text: str, token_ids: list[int]) -> str | None:
    """Why a greedy probe answer shows a damaged policy (None when it does not): non-finite prompt logits,
    no text at all, or one token repeated over the whole answer (what NaN-free but broken weights give)."""
    if not np.isfinite(logits).all():
        return f"non-finite logits ({int((~np.isfinite(logits)).sum())} of {logits.size} after the prompt)"
    if not text.strip():
        return f"the greedy answer is empty ({len(token_ids)} tokens): the policy cannot answer"
    if len(token_ids) >= 8 and len(set(token_ids)) == 1:
        return f"the greedy answer repeats one token {len(token_ids)} times ({text[:30]!r}): degenerate weights"
    return None


def check_loads(bundle: Bundle) -> tuple[list[Check], object | None]:
    """The load checks, and the policy they opened (None if it failed), left open for the parity check:
    loading a 7B model twice would double verify's slowest step. The caller closes it."""
    from engine.policy.types import SamplingParams
    from engine.segment import load_segmenter

    checks, policy = [], None
    image = probe_image()
    if bundle.manifest.policy:
        try:
            policy = open_policy(bundle)
            logits = policy.prompt_logits(image, QUERIES[0])
            completion = policy.sample(image, QUERIES[0], 1, SamplingParams.greedy(16))[0]
            problem = answer_problem(logits, completion.text, completion.token_ids)
            checks.append(Check("policy loads", problem is None, problem or f"greedy: {completion.text[:60]!r}"))
        except Exception as exc:  # the report names it; verify must not crash on a broken bundle
            checks.append(Check("policy loads", False, f"{type(exc).__name__}: {exc}"))
            if policy is not None:
                policy.close()
                policy = None
    if bundle.manifest.segmenter:
        try:
            seg = load_segmenter(bundle.segmenter_files(), device="cpu", threads=1)
            out = seg.segment(seg.embed(image), np.array([[30, 20, 90, 70]], np.float32))
            finite = bool(np.isfinite(out.logits).all() and np.isfinite(out.scores).all())
            checks.append(Check("segmenter loads", finite, f"{type(seg).__name__}: score {out.scores[0]:.3f}" if finite
                                else f"{type(seg).__name__}: non-finite mask logits or scores (damaged weights)"))
        except Exception as exc:
            checks.append(Check("segmenter loads", False, f"{type(exc).__name__}: {exc}"))
    return checks, policy


def frame_extent(frame: str) -> int:
    """The largest coordinate an answer in `frame` can hold (pixels: the square's side; the grid: 1000)."""
    spec = get_frame(frame)
    return spec.size if spec.kind == "pixels" else 1000


def check_sample_answer(bundle: Bundle, policy) -> Check:
    """The greedy answer on the bundled sample scene, decoded as the bundle recommends, parses under its
    prompt family and stays inside its answer frame."""
    from engine.policy.types import SamplingParams
    from engine.samples import sample_scene

    spec = bundle.manifest.policy
    image, query = sample_scene()
    sampling = replace(SamplingParams.greedy(), constrained=spec.answer_grammar)
    text = policy.sample(image, query, 1, sampling)[0].text
    raw = parse_raw(text)
    if raw.status != "ok":
        return Check("sample answer", False, f"the greedy answer to {query!r} does not parse ({raw.reason}): is "
                     f"--prompt-family {spec.prompt_family} the one the model was trained with? {text[-80:]!r}")
    extent = frame_extent(spec.frame)
    values = [v for obj in raw.objects for v in (*obj.box, *obj.point)]
    outside = [v for v in values if not 0 <= v <= extent]
    if outside:
        return Check("sample answer", False, f"the answer to {query!r} has coordinates up to {max(values):g}, past the "
                     f"{spec.frame} frame's {extent}: was --frame right?")
    return Check("sample answer", True, f"{len(raw.objects)} object(s) for {query!r}, coordinates within "
                 f"{spec.frame} (0..{extent})")


def policy_parity(bundle: Bundle, reference: Path, *, adapter: Path | None = None, steps: int = 24,
                  policy=None) -> Check:
    """policy: an open LlamaPolicy on this bundle to reuse (the caller keeps it); None opens and closes one."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from engine.policy.hf_inputs import encode_batch, teacher_forced_logits

    spec = bundle.manifest.policy
    model = from_local(AutoModelForImageTextToText, reference, "--reference", dtype=torch.float32).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(local_folder(adapter, "--adapter")),
                                          local_files_only=True).merge_and_unload().eval()
    tokenizer = from_local(AutoTokenizer, reference, "--reference")
    processor = from_local(AutoProcessor, reference, "--reference").image_processor
    owned = policy is None
    policy = open_policy(bundle) if owned else policy
    image = probe_image()
    limits = verify_limits(spec.quant)
    tol = limits.logit_tolerance
    worst, agree, total = 0.0, 0, 0
    try:
        for query in QUERIES:
            enc = encode_batch(tokenizer, processor, [image], [query], frame=spec.frame, family=spec.prompt_family)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=steps, do_sample=False, eos_token_id=[],
                                     pad_token_id=tokenizer.pad_token_id or 0)
                ref = out[0, enc["input_ids"].shape[1]:].tolist()
            ref_logits = teacher_forced_logits(model, enc, ref)
            ours = policy.forced_logits(image, query, ref)
            rel = np.abs(ours - ref_logits).max(axis=1) / np.abs(ref_logits).max(axis=1)
            worst = max(worst, float(rel.max()))
            # Argmax agreement only where the reference's top two are further apart than the tolerance:
            # at a near tie two correct runtimes may pick differently.
            top2 = np.sort(ref_logits, axis=1)[:, -2:]
            decided = (top2[:, 1] - top2[:, 0]) / np.abs(ref_logits).max(axis=1) > 2 * tol
            agree += int((ours.argmax(1) == ref_logits.argmax(1))[decided].sum())
            total += int(decided.sum())
    finally:
        if owned:
            policy.close()
    need = limits.min_agreement
    rate = agree / total if total else 1.0
    ok = worst <= tol and rate >= need
    return Check("policy parity", ok, f"max relative logit error {worst:.2e} (tolerance {tol}), greedy agreement "
                 f"{rate:.1%} (need {need:.0%}) over {total} decided steps",
                 {"max_rel_logit_error": worst, "agreement": rate, "decided_steps": total})


def sam_parity(bundle: Bundle, checkpoint: Path, config: str | Path) -> Check:
    from engine.segment import load_segmenter
    from engine.segment.torch_backend import load_torch_segmenter

    image = probe_image(200)
    boxes = np.array([[30, 20, 90, 70], [100, 70, 175, 145], [5, 5, 230, 190]], np.float32)
    points = np.array([[60, 45], [140, 110], [120, 100]], np.float32)
    ref = load_torch_segmenter(config, checkpoint, "cpu")
    ours = load_segmenter(bundle.segmenter_files(), "onnx", device="cpu", threads=1)
    a = ref.segment(ref.embed(image), boxes, points)
    b = ours.segment(ours.embed(image), boxes, points)
    err = float(np.abs(a.logits - b.logits).max())
    inter = (a.masks & b.masks).sum((1, 2))
    union = (a.masks | b.masks).sum((1, 2))
    iou = float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).min())
    ok = err <= SAM_LOGIT_TOLERANCE and iou >= SAM_MIN_IOU
    return Check("segmenter parity", ok, f"max logit error {err:.2e} (tolerance {SAM_LOGIT_TOLERANCE}), min mask IoU "
                 f"{iou:.4f} (need {SAM_MIN_IOU})", {"max_logit_error": err, "min_iou": iou})


def check_engine_precision(bundle: Bundle, precision_of=None) -> Check | None:
    """The TensorRT engines compute in the precision the manifest records (None: no engines, or TensorRT is
    not importable here). `precision_of(path)` reads an engine's precision (export.tensorrt.engine_precision)."""
    spec = bundle.manifest.segmenter
    if spec is None or not spec.encoder_engine:
        return None
    if precision_of is None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return None
        from .tensorrt import engine_precision as precision_of
    recorded = spec.engine_precision or "fp32"
    built = {rel: precision_of(bundle.path(rel)) for rel in (spec.encoder_engine, spec.decoder_engine)}
    wrong = {rel: p for rel, p in built.items() if p != recorded}
    return Check("engine precision", not wrong,
                 f"both engines {recorded}" if not wrong else
                 "; ".join(f"{rel} computes in {p}, the manifest says {recorded}" for rel, p in wrong.items()))


def recorded_config(bundle: Bundle) -> str:
    """The SAM 2 config the manifest says the segmenter came from: a path relative to the bundle (run
    folder layout) where that file exists, else its name (a config of the sam2 package)."""
    recorded = (bundle.manifest.segmenter.source or {}).get("config")
    if not recorded:
        raise ModelFileError("the manifest records no SAM 2 config; pass --sam-config")
    near = bundle.root / recorded
    return str(near) if near.is_file() else recorded


def verify_bundle(root: str | Path, *, reference: str | Path | None = None, adapter: str | Path | None = None,
                  sam_checkpoint: str | Path | None = None, sam_config: str | Path | None = None,
                  record: bool = True) -> Report:
    bundle = read_manifest(root)
    checks = [check_checksums(bundle)]
    if checks[0].ok:
        precision = check_engine_precision(bundle)
        if precision is not None:
            checks.append(precision)
        loads, policy = check_loads(bundle)
        checks += loads
        try:
            if policy is not None and bundle.manifest.policy.source.get("gguf"):
                checks.append(check_sample_answer(bundle, policy))
            if reference is not None and bundle.manifest.policy:
                checks.append(policy_parity(bundle, Path(reference), adapter=Path(adapter) if adapter else None,
                                            policy=policy))
        finally:
            if policy is not None:
                policy.close()
        if sam_checkpoint is not None and bundle.manifest.segmenter:
            checks.append(sam_parity(bundle, Path(sam_checkpoint), sam_config or recorded_config(bundle)))
    report = Report(str(bundle.root), checks)
    if reference is None and bundle.manifest.policy:
        report.notes.append("policy parity was not checked (it needs the Hugging Face weights): "
                            f"star-export verify {bundle.root} --reference HF_FOLDER")
    if record and checks[0].ok:
        bundle.manifest.verification = {c.name: {"ok": c.ok, "detail": c.detail, **c.numbers} for c in checks}
        try:
            save_manifest(bundle.root, bundle.manifest)  # the files were just hashed: no second pass
        except OSError as exc:  # a read-only bundle: the verdict stands, only its record is not kept
            report.not_recorded = f"the verdict was not recorded in {bundle.root}/bundle.json ({exc.strerror or exc})"
    return report

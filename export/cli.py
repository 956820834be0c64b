"""`star-export`: Hugging Face checkpoints (+ LoRA) and SAM 2 -> a verified bundle the engine opens."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.argtypes import answer_frame, bounded_int, image_size, int_list, temperature
from engine.bundle import read_manifest
from engine.errors import ModelFileError, run_command
from engine.policy.types import MAX_NEW_TOKENS, MAX_SAMPLES
from engine.protocol import PROMPT_FAMILIES

from .api import GgufPolicyOptions, PolicyOptions, SegmenterOptions, make_bundle
from .quant_types import DEFAULT_QUANT, QUANTS
from .shapes import SAM2_SHAPES, SHAPES


def _log(msg: str) -> None:
    print(f"star-export: {msg}", file=sys.stderr, flush=True)


HF_ONLY = ("adapter", "keep_f16", "output_f32", "mmproj_quant")  # what a GGUF pair, converted already, cannot take


def _policy_options(args) -> PolicyOptions | GgufPolicyOptions:
    if args.gguf is not None:
        if not args.mmproj:
            raise ModelFileError("--gguf needs its vision projector too: --mmproj MMPROJ.gguf")
        given = [f"--{k.replace('_', '-')}" for k in HF_ONLY if getattr(args, k)]
        if given:
            raise ModelFileError(f"{', '.join(given)}: only for a Hugging Face folder (--model); a GGUF pair is "
                                 "already converted")
        return GgufPolicyOptions(args.gguf, args.mmproj, frame=args.frame, prompt_family=args.prompt_family,
                                 quant=args.quant, answer_grammar=args.answer_grammar,
                                 vote_temperature=args.vote_temperature)
    if args.mmproj:
        raise ModelFileError("--mmproj goes with --gguf; from a Hugging Face folder the projector is written for you")
    return PolicyOptions(args.model, adapter=args.adapter, quant=args.quant or DEFAULT_QUANT,
                         mmproj_quant=args.mmproj_quant or "f16", frame=args.frame, prompt_family=args.prompt_family,
                         keep_f16=args.keep_f16, output_f32=args.output_f32, answer_grammar=args.answer_grammar,
                         vote_temperature=args.vote_temperature)


def _segmenter_options(args) -> SegmenterOptions:
    return SegmenterOptions(args.checkpoint, args.config, with_torch=args.with_torch, tensorrt=args.tensorrt,
                            fp16=args.fp16, keep_graphs=getattr(args, "keep_graphs", False))


def _make(args, *, policy: bool, segmenter: bool) -> int:
    segmenter_from = getattr(args, "segmenter_from", None)
    if segmenter and segmenter_from is None and not (args.checkpoint and args.config):
        raise ModelFileError("the segmenter: give --checkpoint and --config (SAM 2 to export), or --segmenter-from "
                             "BUNDLE (another bundle's, exported once)")
    if segmenter_from is not None and getattr(args, "checkpoint", None):
        raise ModelFileError("--segmenter-from takes another bundle's SAM 2; --checkpoint / --config export one: "
                             "give one of them")
    report = make_bundle(args.out, policy=_policy_options(args) if policy else None,
                         segmenter=_segmenter_options(args) if segmenter and segmenter_from is None else None,
                         segmenter_from=segmenter_from, link=getattr(args, "link", False),
                         name=args.name, verify=not args.no_verify, log=_log, progress=True)
    return 0 if report is None else _print_report(report)


def _print_report(report) -> int:
    for c in report.checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    for note in report.notes:
        print(f"NOTE  {note}")
    print(("bundle OK: " if report.ok else "bundle FAILED: ") + str(report.bundle))
    if report.not_recorded:
        print(f"star-export: warning: {report.not_recorded}", file=sys.stderr)
    return 0 if report.ok else 1


def _report(bundle, **kw) -> int:
    from .verify import verify_bundle

    return _print_report(verify_bundle(bundle, **kw))


def run_policy(args) -> int:
    return _make(args, policy=True, segmenter=False)


def run_sam2(args) -> int:
    return _make(args, policy=False, segmenter=True)


def run_bundle(args) -> int:
    return _make(args, policy=True, segmenter=True)


def run_verify(args) -> int:
    code = _report(args.bundle, reference=args.reference, adapter=args.reference_adapter,
                   sam_checkpoint=args.sam_checkpoint, sam_config=args.sam_config, record=not args.no_record)
    if args.json:
        print(json.dumps(read_manifest(args.bundle).manifest.verification, indent=2))
    return code


def run_import(args) -> int:
    from engine.bundle import load_bundle

    from .gguf_import import import_policy

    if args.bundle:
        bundle = load_bundle(args.bundle)  # checksums verified: a tampered file is refused, not imported
        spec = bundle.manifest.policy
        if spec is None:
            raise ModelFileError(f"{args.bundle} holds no policy")
        model, mmproj = bundle.path(spec.model), bundle.path(spec.mmproj)
    elif args.model and args.mmproj:
        model, mmproj = Path(args.model), Path(args.mmproj)
    else:
        raise ModelFileError("star-export import: give --bundle, or --model and --mmproj")
    result = import_policy(model, mmproj, args.like, args.out)
    types = ", ".join(f"{n} from {t}" for t, n in sorted(result.gguf_types.items()))
    _log(f"wrote {result.tensors} tensors to {result.out_dir} (GGUF tensors: {types})")
    return 0


def run_import_sam(args) -> int:
    from engine.bundle import load_bundle

    from .sam_import import import_segmenter

    if args.bundle:
        bundle = load_bundle(args.bundle)  # checksums verified: a tampered file is refused, not imported
        spec = bundle.manifest.segmenter
        if spec is None or not (spec.encoder_onnx and spec.decoder_onnx):
            raise ModelFileError(f"{args.bundle} holds no SAM 2 ONNX graphs")
        encoder, decoder = bundle.path(spec.encoder_onnx), bundle.path(spec.decoder_onnx)
    elif args.encoder and args.decoder:
        encoder, decoder = Path(args.encoder), Path(args.decoder)
    else:
        raise ModelFileError("star-export import-sam: give --bundle, or --encoder and --decoder")
    r = import_segmenter(encoder, decoder, args.out, config=args.config)
    _log(f"wrote {r.checkpoint} and {r.config.name}: {r.moved} tensors moved from the graphs, {r.solved} solved back, "
         f"{r.kept_initial} unused by the image graphs kept at initialization; outputs match the graphs to "
         f"{r.max_difference:.1g} (relative)")
    return 0


def _policy_args(p) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face folder (Qwen2.5-VL or Qwen3-VL), converted to GGUF here")
    source.add_argument("--gguf", metavar="MODEL.gguf",
                        help="or: a language model GGUF you already have (Qwen2.5-VL / Qwen3-VL, any quantization), "
                             "taken as it is after its header is checked; with --mmproj")
    p.add_argument("--mmproj", metavar="MMPROJ.gguf", help="with --gguf: the vision projector GGUF published with it")
    p.add_argument("--adapter", help="LoRA adapter folder (PEFT format or StAR's renamed keys) to merge first")
    p.add_argument("--quant", default=None, choices=list(QUANTS),
                   help=f"the model's quantization (default: {DEFAULT_QUANT} from --model; with --gguf the file's own, "
                        "and only an F32 / F16 / BF16 GGUF is quantized)")
    p.add_argument("--mmproj-quant", default=None, choices=["f16", "q8_0", "f32"],
                   help="the projector's type from --model (default f16)")
    p.add_argument("--frame", type=answer_frame, default=None,
                   help="answer frame (default: detected from the checkpoint; from --gguf the family's own, "
                        "qwen2.5-840 or qwen3-1000: name pixels-<S> for a model trained at one square size)")
    p.add_argument("--prompt-family", default="star", choices=PROMPT_FAMILIES,
                   help="the prompt the model was trained with: star (StAR, and this project's own models; the "
                        "default), visionreasoner (VisionReasoner, Seg-Zero), ...; neither a checkpoint nor a GGUF "
                        "records it, so name it for another model (docs/export.md lists each)")
    p.add_argument("--segmenter-from", metavar="BUNDLE", default=None,
                   help="take this bundle's segmenter (checksums verified) instead of exporting SAM 2 again: one "
                        "SAM 2.1-L export serves any number of policies")
    p.add_argument("--link", action="store_true",
                   help="hard-link the files taken as they are (--gguf / --mmproj, --segmenter-from) instead of "
                        "copying them: one copy on disk, and the bundle keeps the data if the originals are moved "
                        "or deleted; copies where links cannot be made (another file system)")
    p.add_argument("--keep-f16", action="store_true", help="also keep the unquantized F16 GGUF in the bundle")
    p.add_argument("--output-f32", action="store_true",
                   help="keep the LM head in f32 (the nano policy's quadratic coordinate code needs its precision)")
    p.add_argument("--answer-grammar", action="store_true",
                   help="the manifest recommends decoding under the answer grammar (star segment / eval and the app "
                        "follow it unless --no-grammar); measure it first with star eval --grammar")
    p.add_argument("--vote-temperature", type=temperature, default=1.0,
                   help="the voting temperature (N > 1) the manifest recommends (default StAR's 1.0; star segment / "
                        "eval follow it unless --temperature); measure it first with star eval --temperature")


def _sam2_args(p, *, required: bool) -> None:
    p.add_argument("--checkpoint", required=required, help="SAM 2 / 2.1 checkpoint (.pt, loaded weights-only)")
    p.add_argument("--config", required=required, help="its Hydra YAML (a path, or e.g. configs/sam2.1/sam2.1_hiera_l.yaml)")
    p.add_argument("--with-torch", "--video", dest="with_torch", action="store_true",
                   help="also keep config + checkpoint in the bundle: the PyTorch backend, and SAM 2's memory modules "
                        "that star track follows objects with")
    p.add_argument("--keep-graphs", action="store_true",
                   help="keep the bundle's ONNX graphs and add this checkpoint beside them (for star track), once its "
                        "image path is checked to give the graphs' outputs: e.g. a SAM whose memory was trained "
                        "(star-train nano-sam-video) from star-export import-sam of those graphs")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs TensorRT)")
    p.add_argument("--fp16", action="store_true", help="also float16 ONNX graphs (used on a GPU) and FP16 TensorRT engines")


def _common(p) -> None:
    p.add_argument("--out", required=True, help="bundle folder (created or updated)")
    p.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    p.add_argument("--no-verify", action="store_true", help="skip the load / checksum check at the end")


def _scale_args(sub) -> None:
    p = sub.add_parser("scale", help="a real model shape with random weights: export cost, inference cost, "
                                     "the transformers reference, parity (long: minutes to hours)")
    p.add_argument("--shape", required=True, choices=list(SHAPES), help="the policy's published shape")
    p.add_argument("--sam", default="sam2.1-hiera-large", choices=list(SAM2_SHAPES), help="the SAM 2.1 shape")
    p.add_argument("--work", default=None, help="folder for the checkpoint, intermediates and bundle "
                                               "(default: the cache folder's scale/<shape>)")
    p.add_argument("--counts", type=int_list(1, MAX_SAMPLES, "llama.cpp's parallel sequences"), default="1,8,32",
                   help="numbers of samples N (default 1,8,32)")
    p.add_argument("--tokens", type=bounded_int(1, MAX_NEW_TOKENS, "tokens per sample"), default=32,
                   help="tokens decoded per sample (stops ignored; default 32)")
    p.add_argument("--image", type=image_size, default=(1280, 960), help="the photo's size WxH (default 1280x960)")
    p.add_argument("--reference", nargs="*", default=["bf16"], choices=["bf16", "fp32"],
                   help="transformers reference dtypes to time (default bf16; none: --reference with no value)")
    p.add_argument("--parity", action="store_true", help="teacher-forced logits of the F16 and Q8_0 GGUF vs "
                                                          "transformers fp32 (needs the fp32 model in memory)")
    p.add_argument("--parity-steps", type=bounded_int(1, 256, "greedy tokens compared"), default=16)
    p.add_argument("--parity-quants", nargs="+", default=["F16", "Q8_0"], choices=["F32", "F16", "Q8_0"],
                   help="the GGUF forms --parity compares (F32: an F32 GGUF with an f32 mmproj, which separates "
                        "llama.cpp's f16 rounding from any real difference; default F16 Q8_0)")
    p.add_argument("--parity-only", action="store_true",
                   help="only the export stages the parity needs and the parity (no cost measurements)")
    p.add_argument("--shrunk", action="store_true", help="the shape's CI form instead (tiny widths, the real vision "
                                                          "layout, a shrunk SAM 2): a smoke run in about a minute")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the engine and the reference run (cuda: llama.cpp's CUDA build, ONNX Runtime's "
                        "CUDA provider, SAM 2 in bf16; default cpu)")
    p.add_argument("--samplings", nargs="*", default=[], choices=["top-k-40", "greedy"],
                   help="decode each N again with these sampler chains (what sampling over the vocabulary costs)")
    p.add_argument("--no-lora", action="store_true",
                   help="the base model alone, without the shape's StAR LoRA: the same network at inference, without "
                        "the adapter's writing and merge (export costs measured on the CPU)")
    p.add_argument("--segmenter", default="onnx", choices=["onnx", "torch"],
                   help="the engine's SAM 2 in the end-to-end rows: onnx (exported into the bundle; default) or torch "
                        "(the checkpoint under PyTorch, bf16 on CUDA; no ONNX export: for a GPU machine whose "
                        "onnxruntime has no CUDA provider)")
    p.add_argument("--clean", action="store_true", help="remove the work folder at the end (keeps the JSON)")
    p.add_argument("--json", default="runs/bench/scale.json", help="where to write the results")
    p.add_argument("--threads", type=bounded_int(1, 1024, "CPU threads"), default=None,
                   help="CPU threads (default: all cores, as a user's machine would run it)")
    p.set_defaults(run=run_scale)


def run_scale(args) -> int:
    from .scale import main as scale

    return scale(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="star-export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("policy", help="HF checkpoint (+ LoRA) -> quantized GGUF + mmproj in a bundle, or a GGUF pair "
                                      "you have, checked and taken as it is")
    _policy_args(p)
    _common(p)
    p.set_defaults(run=run_policy)
    p = sub.add_parser("sam2", help="SAM 2 checkpoint -> ONNX encoder + decoder (+ TensorRT) in a bundle")
    _sam2_args(p, required=True)
    _common(p)
    p.set_defaults(run=run_sam2)
    p = sub.add_parser("bundle", help="both halves into one bundle (the segmenter exported, or --segmenter-from)")
    _policy_args(p)
    _sam2_args(p, required=False)
    _common(p)
    p.set_defaults(run=run_bundle)
    p = sub.add_parser("verify", help="checksums, loading, and parity against the sources")
    p.add_argument("bundle")
    p.add_argument("--reference", help="the HF folder the policy came from (policy logit parity)")
    p.add_argument("--reference-adapter", help="with --reference: the LoRA adapter, applied through PEFT")
    p.add_argument("--sam-checkpoint", help="the SAM 2 checkpoint the ONNX files came from (mask parity)")
    p.add_argument("--sam-config", help="its config (default: as recorded in the manifest)")
    p.add_argument("--no-record", action="store_true", help="do not write the results into bundle.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_verify)
    p = sub.add_parser("import", help="a bundle's policy (GGUF + mmproj) back to a Hugging Face folder, to train on")
    p.add_argument("--bundle", help="bundle folder (its policy files, checksums verified)")
    p.add_argument("--model", help="or: the language model GGUF (any quantization: dequantized by gguf-py)")
    p.add_argument("--mmproj", help="and its vision projector GGUF")
    p.add_argument("--like", required=True,
                   help="a Hugging Face folder of the same architecture: config, tokenizer and image processor are "
                        "copied from it (its weights are not used)")
    p.add_argument("--out", required=True, help="the Hugging Face folder to write (float32 safetensors)")
    p.set_defaults(run=run_import)
    p = sub.add_parser("import-sam", help="a bundle's SAM 2 ONNX graphs back to a PyTorch checkpoint, to train on")
    p.add_argument("--bundle", help="bundle folder (its segmenter files, checksums verified)")
    p.add_argument("--encoder", help="or: the encoder ONNX")
    p.add_argument("--decoder", help="and the decoder ONNX")
    p.add_argument("--config", help="the SAM 2 config YAML (default: the shrunk SAM 2.1 config read from the graphs' shapes)")
    p.add_argument("--out", required=True, help="the folder to write (sam2.pt in Meta's format, sam2.yaml)")
    p.set_defaults(run=run_import_sam)
    _scale_args(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.offline import enforce_offline

    enforce_offline()  # the project never downloads (engine/offline.py)
    args = build_parser().parse_args(argv)
    return run_command("star-export", args.run, args,
                       on_interrupt="interrupted; re-run the same command to continue (finished stages are kept)")


if __name__ == "__main__":
    sys.exit(main())

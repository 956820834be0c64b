"""`star-train`: training commands.

  star-train grpo | rest [--recipe FILE] [--SETTING VALUE ...] [key=value ...]   StAR's two stages on TRL
  star-train nano --out DIR [--scale ci] [key=value ...]   the nano bundle's whole recipe
  star-train nano-data | nano-baselines | nano-probes | ... | nano-bench   the nano world's pieces
"""

from __future__ import annotations

import argparse
import sys


def _nano_data(args) -> int:
    import dataclasses

    from .nano.dataset import NanoConfig, write_split

    config = NanoConfig(image_size=args.image_size, frame=args.frame, empty_rate=args.empty_rate, world=args.world)
    shift = dataclasses.replace(config, world="shift")
    for split, count in (("train", args.train), ("val", args.val), ("test", args.test), ("shift", args.shift)):
        if count:
            paths = write_split(args.out, split, count, shift if split == "shift" else config, progress=not args.quiet)
            print(f"{split}: {count} rows -> {', '.join(str(p) for p in paths)}")
    return 0


def _nano_baselines(args) -> int:
    from .nano.baselines import score_baselines

    segmenter = None
    if args.bundle:
        from engine.bundle import load_bundle
        from engine.segment import load_segmenter

        segmenter = load_segmenter(load_bundle(args.bundle).segmenter_files(), "auto", device="cpu")
    results = score_baselines(args.data, args.limit, segmenter=segmenter)
    types = sorted({t for r in results.values() for t in r["groups"].get("reasoning_type", {})})
    header = ["baseline", "gIoU", "cIoU"] + [t.split("/")[0] for t in types]
    print(" | ".join(header))
    for name, r in results.items():
        per_type = [f"{r['groups']['reasoning_type'][t]['giou']:.3f}" for t in types]
        print(" | ".join([name, f"{r['giou']:.3f}", f"{r['ciou']:.3f}", *per_type]))
    return 0


def _nano_answers(args) -> int:
    import json

    from .nano.answers import read_answers

    summary = read_answers(args.results, args.data).summary()
    print(f"samples {summary['samples']} (failed {summary['failed']}); named objects {summary['named_objects']}")
    print(f"named object is in the scene: {summary['named_in_scene']:.3f}")
    print(f"box IoU vs the named object: mean {summary['box_iou_vs_named_mean'] or 0:.3f}, "
          f"> 0.5 in {summary['box_iou_vs_named_over_0.5'] or 0:.3f}")
    print(f"label set = gold set: {summary['exact_label_set']:.3f}")
    for kind, rate in summary["exact_label_set_by_type"].items():
        print(f"  {kind}: {rate:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


def _nano_probes(args) -> int:
    import json
    from pathlib import Path

    from engine.pipeline import load_reasoner

    from .nano.probes import run_probes

    reasoner = load_reasoner(args.bundle, threads=args.threads, max_samples=args.n, verify="quick")
    try:
        results = run_probes(reasoner, args.count, args.n)
    finally:
        reasoner.close()
    print("family | right | unreadable traces | full-frame masks (model) | full-frame masks (shown)")
    for family, r in results.items():
        print(f"{family} | {r['right']}/{r['probes']} | {r['unreadable_traces']}/{r['samples']} | "
              f"{r['full_frame_unguarded']} | {r['full_frame_shown']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _nano_init(args) -> int:
    from .nano.policy_model import NanoPolicyConfig, build_nano_policy

    out = build_nano_policy(args.out, NanoPolicyConfig(image_size=args.image_size, seed=args.seed,
                                                           coord_init=args.coord_init))
    print(f"nano policy (random init, coordinate tokens: {args.coord_init}) -> {out}")
    return 0


def _nano_vision(args) -> int:
    from .config_cli import dataclass_from_args
    from .nano.vision_pretrain import VisionPretrain, VisionPretrainConfig

    out = VisionPretrain(dataclass_from_args(VisionPretrainConfig, args)).run(progress=not args.quiet)
    print(f"nano policy with the pre-trained vision tower -> {out} (continue with star-train nano-warmup)")
    return 0


def _nano_warmup(args) -> int:
    from .config_cli import dataclass_from_args
    from .nano.warmup import Warmup, WarmupConfig

    final = Warmup(dataclass_from_args(WarmupConfig, args)).run(progress=not args.quiet)
    print(f"warm-up checkpoint -> {final}")
    return 0


def _nano_sam(args) -> int:
    from .config_cli import dataclass_from_args
    from .nano.segmenter import SamTrainConfig, SamTrainer

    final = SamTrainer(dataclass_from_args(SamTrainConfig, args)).run(progress=not args.quiet)
    print(f"nano SAM 2 checkpoint -> {final}")
    return 0


def _nano_bench(args) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from .nano.bench import SHIPPED_POLICY, report, run_bench

    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="star-nano-bench-"))
    try:
        timings = run_bench(scratch, args.device, steps=args.steps, warm=args.warm, workers=args.workers,
                            threads=args.threads, model=Path(args.model) if args.model else SHIPPED_POLICY, rl=args.rl)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    report(timings, Path(args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="star-train", description="StAR training: data, SFT warm-up, GRPO, REST.")
    from engine.argtypes import answer_frame, bounded_int, fraction
    from engine.devices import DEVICES  # no torch import: the parser stays quick to build

    from .config_cli import add_dataclass_arguments
    from .nano.segmenter import SamTrainConfig  # these import neither torch nor transformers
    from .nano.vision_pretrain import VisionPretrainConfig
    from .nano.warmup_config import WarmupConfig
    from .nano.wide import WORLDS

    sub = parser.add_subparsers(dest="command", required=True)
    add_recipe_commands(sub)
    p = sub.add_parser("nano-data", help="write the nano world's train/val/test splits (ReasonSeg-X parquet)")
    p.add_argument("--out", required=True)
    rows = bounded_int(0, 10_000_000, "rows")
    p.add_argument("--train", type=rows, default=20000)
    p.add_argument("--val", type=rows, default=500)
    p.add_argument("--test", type=rows, default=1000)
    p.add_argument("--image-size", type=bounded_int(56, 4096, "scene side in pixels"), default=224)
    p.add_argument("--frame", type=answer_frame, default="pixels-224")
    p.add_argument("--empty-rate", type=fraction, default=0.1)
    p.add_argument("--world", choices=WORLDS, default="classic",
                   help="classic: the shipped bundle's world (square --image-size scenes); wide: any background, "
                        "size, aspect and phrasing, plain referring queries too (docs/nano.md)")
    p.add_argument("--shift", type=rows, default=0,
                   help="rows of the shift split: the wide world drawn further out, never seen in training")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_nano_data)
    p = sub.add_parser("nano-baselines", help="gIoU / cIoU of no-reasoning predictors on a nano split")
    p.add_argument("--data", required=True, help="a split's parquet file or folder")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="also score the rows' own (gold) answers through this bundle's segmenter: its ceiling")
    p.set_defaults(run=_nano_baselines)
    p = sub.add_parser("nano-probes", help="out-of-world probes (plain canvases, absent objects, blank images, "
                       "photograph-like clutter) through a bundle: right answers, unreadable traces, full-frame masks")
    p.add_argument("--bundle", default=None, metavar="DIR", help="default: the bundled nano model")
    p.add_argument("--count", type=bounded_int(1, 10_000, "probes per family"), default=20)
    p.add_argument("-n", "--samples", dest="n", type=bounded_int(1, 64, "samples"), default=1)
    p.add_argument("--threads", type=bounded_int(1, 256, "threads"), default=None)
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.set_defaults(run=_nano_probes)
    p = sub.add_parser("nano-answers", help="what a `star eval` run's answers name on a nano split (right object? its box?)")
    p.add_argument("--results", required=True, help="the star eval output folder (results.jsonl, run.json)")
    p.add_argument("--data", required=True, help="the nano split's parquet file or folder it evaluated")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.set_defaults(run=_nano_answers)
    p = sub.add_parser("nano-init", help="write a randomly initialised nano policy (Qwen2.5-VL, world tokenizer)")
    p.add_argument("--out", required=True)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coord-init", choices=["quadratic", "bumps", "random"], default="quadratic",
                   help="coordinate tokens: scored by a quadratic code of a linear value (quadratic), a shared "
                        "Gaussian-bump code (bumps) or independent random rows")
    p.set_defaults(run=_nano_init)
    # The trainers' options are generated from their settings dataclasses (one source of defaults and help).
    for name, cls, run, help_text in (
            ("nano-warmup", WarmupConfig, _nano_warmup, "supervised warm-up of the nano policy (resumes from OUT/checkpoint)"),
            ("nano-vision", VisionPretrainConfig, _nano_vision, "pre-train the nano policy's vision tower alone inside a "
                                                                "warm-up folder (shape-heavy scenes; then nano-warmup)"),
            ("nano-sam", SamTrainConfig, _nano_sam, "train the nano bundle's shrunk SAM 2.1 on the world's masks (resumes)")):
        p = sub.add_parser(name, help=help_text)
        add_dataclass_arguments(p, cls)
        p.add_argument("--quiet", action="store_true", help="no per-step printing")
        p.set_defaults(run=run)
    p = sub.add_parser("nano-bench", help="seconds per step of every nano recipe stage per device, and the recipe's "
                                          "time projected from them (table + JSON)")
    p.add_argument("--json", default="runs/bench/nano-bench.json", help="where the table goes as JSON")
    p.add_argument("--scratch", default=None, help="an empty folder where each stage trains its few steps (kept); "
                                                   "default: a temporary one, removed after")
    p.add_argument("--device", nargs="+", choices=DEVICES, default=["auto"], help="devices to time (e.g. cpu cuda)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per stage (their median is reported)")
    p.add_argument("--warm", type=int, default=2, help="untimed steps first (CUDA start, allocator growth)")
    p.add_argument("--workers", type=int, default=4, help="the warm-up is timed without and with this many "
                                                          "prefetch workers (0: without only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument("--model", default=None, help="the policy the warm-up starts from (default: the repo's "
                                                 "warm-up-3000 checkpoint)")
    p.add_argument("--rl", action=argparse.BooleanOptionalAction, default=True,
                   help="also time GRPO and REST (needs TRL)")
    p.set_defaults(run=_nano_bench)
    return parser


def _yaml_value(text: str):
    """One option's value read as the YAML and key=value forms read it (1e-5, null, true, [a, b])."""
    from .overrides import parse_overrides

    return parse_overrides([f"v={text}"])["v"]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per setting of the GRPO / REST recipe, with its help and default: the dataclass is the one
    source. Options given override the YAML (`--recipe`) and `key=value`; the others leave them alone."""
    from dataclasses import MISSING, fields

    from .recipe import Recipe

    parser.add_argument("--recipe", metavar="FILE", help="a YAML recipe (training/recipes/*.yaml) to start from")
    for f in fields(Recipe):
        if f.name == "stage":
            continue  # the subcommand's
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                              else "required")
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        elif str(f.type).startswith("list"):
            parser.add_argument(flag, dest=f.name, nargs="*", default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_yaml_value, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings as key=value (YAML values)")


def recipe_from_args(args):
    """The recipe `star-train grpo|rest` runs: --recipe's YAML, then key=value, then the options given."""
    from dataclasses import fields

    from .recipe import Recipe, load_recipe

    options = {f.name: getattr(args, f.name) for f in fields(Recipe) if f.name != "stage" and hasattr(args, f.name)}
    return load_recipe(args.recipe, args.overrides, options=options, stage=args.stage)


def _run_stage(args) -> int:
    from .grpo import train

    final = train(recipe_from_args(args))
    print(f"{final.name} -> {final}")
    return 0


def _run_nano_recipe(args) -> int:
    from .nano.recipe import NanoRecipe, nano_recipe, run_nano_recipe
    from .overrides import parse_overrides, typed_settings
    from .recipe import RecipeError

    try:
        values = typed_settings(NanoRecipe, parse_overrides(args.overrides), what="nano recipe")
        recipe = nano_recipe(args.out, args.scale, **values)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    print(f"nano bundle -> {run_nano_recipe(recipe)}")
    return 0


def _adapt(args) -> int:
    from .adapt import AdaptSettings, adapt, describe
    from .config_cli import dataclass_from_args

    report = adapt(dataclass_from_args(AdaptSettings, args), log=lambda line: print(f"star-train adapt: {line}",
                                                                                       file=sys.stderr, flush=True))
    print(describe(report))
    return 0


def _nano_sam_video(args) -> int:
    from .config_cli import dataclass_from_args
    from .nano.sam_video import SamVideoConfig, train_memory

    out = train_memory(dataclass_from_args(SamVideoConfig, args), progress=not args.quiet)
    print(f"nano SAM 2 with its memory trained -> {out} (star track --sam2 {out.parent / 'sam2.yaml'}:{out})")
    return 0


def _nano_clips(args) -> int:
    from .nano.clips import make_clip, write_revos

    out = write_revos(args.out, [make_clip(i, frames=args.frames, pan=args.pan) for i in range(args.clips)])
    print(f"{args.clips} clips of {args.frames} frames in {out} (star eval --data revos:{out})")
    return 0


def _nano_folder(args) -> int:
    from .nano.folder import write_labelled_folder

    try:
        out = write_labelled_folder(args.out, args.images, args.held_out, world=args.world, seed=args.seed,
                                    progress=not args.quiet)
    except ValueError as exc:
        from .recipe import RecipeError

        raise RecipeError(str(exc)) from None
    print(f"{args.images} labelled scenes in {out} ({args.held_out} held out: {out / 'held-out.txt'})")
    return 0


def add_recipe_commands(sub) -> None:
    for name, stage, what in (("grpo", 1, "StAR stage 1: GRPO with SAM in the loop (a LoRA on the policy)"),
                              ("rest", 2, "StAR stage 2: REST, the best and worst of n rollouts (continues an adapter)")):
        p = sub.add_parser(name, help=what, description=what + ". Settings come from --recipe FILE, then key=value, "
                                                            "then the options below.")
        add_recipe_arguments(p)
        p.set_defaults(run=_run_stage, stage=stage)
    from .adapt import AdaptSettings
    from .config_cli import COUNT, add_dataclass_arguments
    from .nano.sam_video import SamVideoConfig

    p = sub.add_parser("adapt", help="a labelled folder + a bundle -> a bundle trained on it, measured before and "
                                     "after on the folder's held-out images (resumable)")
    add_dataclass_arguments(p, AdaptSettings)
    p.set_defaults(run=_adapt)
    p = sub.add_parser("nano-folder", help="a simulated person's labelled folder: wider- or shifted-world scenes with "
                                           "labelme files (colour + kind labels), for star-train adapt")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=COUNT, default=400, help="labelled images in all (default 400)")
    p.add_argument("--held-out", type=COUNT, default=200, help="the first this many are held out (default 200)")
    p.add_argument("--world", default="shift", choices=["wide", "shift"], help="default: shift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_nano_folder)
    p = sub.add_parser("nano-sam-video", help="SAM 2's memory (encoder, attention, object pointers) trained on nano "
                                              "clips, the image path kept: a nano SAM that tracks (resumable)")
    add_dataclass_arguments(p, SamVideoConfig)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_nano_sam_video)
    p = sub.add_parser("nano-clips", help="the nano world in motion: clips with exact per-frame masks in ReVOS's "
                                          "layout, for star eval --data revos:OUT")
    p.add_argument("--out", required=True)
    p.add_argument("--clips", type=COUNT, default=100, help="clips (default 100)")
    p.add_argument("--frames", type=COUNT, default=24, help="frames per clip (default 24)")
    p.add_argument("--pan", type=int, default=64, help="pixels the camera pans over a clip (default 64)")
    p.set_defaults(run=_nano_clips)
    p = sub.add_parser("nano", help="the nano bundle from scratch: every stage of its recipe, resumable")
    p.add_argument("--out", required=True, help="the run folder (a re-run resumes)")
    p.add_argument("--scale", default="full", choices=["full", "ci"], help="ci: a few steps of each stage")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="nano recipe settings (training/nano/recipe.py)")
    p.set_defaults(run=_run_nano_recipe)


def main(argv: list[str] | None = None) -> int:
    from engine.errors import run_command
    from engine.offline import enforce_offline

    enforce_offline()  # the project never downloads (engine/offline.py)

    args = build_parser().parse_args(argv)
    return run_command("star-train", args.run, args,
                       on_interrupt="interrupted; re-run the same command to resume from the last checkpoint")


if __name__ == "__main__":
    sys.exit(main())

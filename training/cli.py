"""`star-train`: training commands. Today: the nano world's data (`nano-data`) and baselines (`nano-baselines`)."""

from __future__ import annotations

import argparse
import sys


def _nano_data(args) -> int:
    from .nano.dataset import NanoConfig, write_split

    config = NanoConfig(image_size=args.image_size, frame=args.frame, empty_rate=args.empty_rate)
    for split, count in (("train", args.train), ("val", args.val), ("test", args.test)):
        if count:
            paths = write_split(args.out, split, count, config, progress=not args.quiet)
            print(f"{split}: {count} rows -> {', '.join(str(p) for p in paths)}")
    return 0


def _nano_baselines(args) -> int:
    from .nano.baselines import score_baselines

    results = score_baselines(args.data, args.limit)
    types = sorted({t for r in results.values() for t in r["groups"].get("reasoning_type", {})})
    header = ["baseline", "gIoU", "cIoU"] + [t.split("/")[0] for t in types]
    print(" | ".join(header))
    for name, r in results.items():
        per_type = [f"{r['groups']['reasoning_type'][t]['giou']:.3f}" for t in types]
        print(" | ".join([name, f"{r['giou']:.3f}", f"{r['ciou']:.3f}", *per_type]))
    return 0


def _nano_init(args) -> int:
    from .nano.policy_model import NanoPolicyConfig, build_nano_policy

    out = build_nano_policy(args.out, NanoPolicyConfig(image_size=args.image_size, seed=args.seed))
    print(f"nano policy (random init) -> {out}")
    return 0


def _nano_warmup(args) -> int:
    from .nano.warmup import Warmup, WarmupConfig

    config = WarmupConfig(args.model, args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                          eval_every=args.eval_every, save_every=args.save_every, threads=args.threads)
    final = Warmup(config).run(progress=not args.quiet)
    print(f"warm-up checkpoint -> {final}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="star-train", description="StAR training: data, SFT warm-up, GRPO, REST.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("nano-data", help="write the nano world's train/val/test splits (ReasonSeg-X parquet)")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--frame", default="pixels-224")
    p.add_argument("--empty-rate", type=float, default=0.1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_nano_data)
    p = sub.add_parser("nano-baselines", help="gIoU / cIoU of no-reasoning predictors on a nano split")
    p.add_argument("--data", required=True, help="a split's parquet file or folder")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(run=_nano_baselines)
    p = sub.add_parser("nano-init", help="write a randomly initialised nano policy (Qwen2.5-VL, world tokenizer)")
    p.add_argument("--out", required=True)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_nano_init)
    p = sub.add_parser("nano-warmup", help="supervised warm-up of the nano policy (resumes from OUT/checkpoint)")
    p.add_argument("--model", required=True, help="the nano-init folder")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_nano_warmup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

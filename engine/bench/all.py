"""`star bench all`: every benchmark in turn with its defaults (or `--quick` sizes), one JSON file each.
A benchmark that cannot run here (no bundle, no torch) is reported as skipped with the reason."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import StarError

QUICK = {
    "voting": ["--sizes", "512", "--counts", "8,32", "--repeat", "1"],
    "segment": ["--models", "shrunk", "--prompts", "8", "--repeat", "1"],
    "policy": ["--counts", "1,8", "--tokens", "16", "--repeat", "1"],
    "pipeline": ["--counts", "1,8", "--repeat", "1", "--max-new-tokens", "64"],
    "track": ["--models", "shrunk", "--frames", "12", "--width", "320", "--height", "180"],
}
NEEDS_BUNDLE = ("policy", "pipeline")


def main(args) -> int:
    from ..cli import build_parser

    skipped = {}
    for name, quick in QUICK.items():
        argv = ["bench", name, *(quick if args.quick else []), "--json", str(Path(args.json_dir) / f"{name}.json")]
        if name in NEEDS_BUNDLE:
            argv += ["--device", args.device] + (["--bundle", args.bundle] if args.bundle else [])
        elif name in ("segment", "track"):
            argv += ["--device", args.device]
        sub = build_parser().parse_args(argv)
        sub.threads = args.threads
        print(f"\n== star {' '.join(argv)}", flush=True)
        try:
            sub.run(sub)
        except (StarError, ImportError) as exc:
            skipped[name] = str(exc)
            print(f"skipped: {exc}", file=sys.stderr)
    if skipped:
        print("\nskipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    return 0

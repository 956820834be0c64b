"""`star eval --data KIND:PATH`: a benchmark through the reasoner, resumable, with a Markdown / JSON /
PNG report (overall and per group, test-time scaling and StAR's threshold sweep from one run)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import DatasetError, StarError
from ..honesty import MaskGuard
from .interrupt import StopOnCtrlC


def default_out_dir(data: str, bundle_name: str, n: int) -> Path:
    kind, _, path = data.partition(":")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{kind}-{Path(path).name}-{bundle_name}-n{n}").strip("-")
    return Path("runs") / "eval" / slug


def data_options(pairs: list[str], trust_pickle: bool) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DatasetError(f"--data-option wants KEY=VALUE (e.g. split=testA), got {pair!r}")
        options[key.replace("-", "_")] = value
    if trust_pickle:
        options["trust_pickle"] = True
    return options


def open_reader(data: str, options: dict, on_error: str):
    from ..data import open_dataset, parse_data_spec

    try:
        kind, path = parse_data_spec(data)
        return open_dataset(kind, path, on_error=on_error, **options)
    except TypeError as exc:  # an option this reader does not take
        raise DatasetError(f"--data-option: {exc}") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(str(exc)) from None


def main(args) -> int:
    from ..evaluation.report import summarize, write_report
    from ..evaluation.runlog import RunLog
    from ..evaluation.runner import EvalSettings, run_eval
    from ..pipeline import load_reasoner
    from ..policy.types import CancelToken
    from ..voting import VoteConfig

    if args.report_only:
        if not args.out:
            raise DatasetError("--report-only needs --out (the folder of the run to report)")
        log = RunLog(args.out)
        paths = write_report(summarize(log.latest_records(), log.read_settings(), args.convention,
                                       count_failures=not args.exclude_failures), args.out)
        print(paths["markdown"].read_text())
        return 0

    from ..data import parse_data_spec
    from ..evaluation.video import VIDEO_KINDS, main_video

    kind, path = parse_data_spec(args.data)
    if kind.lower() in VIDEO_KINDS:  # a video benchmark: star track per expression, J&F
        return main_video(args, kind.lower(), path)
    options = data_options(args.data_option, args.trust_pickle)
    reader = open_reader(args.data, options, args.on_error)
    if len(reader) == 0:  # a report of 0 items with gIoU 0.0 would read like a result
        raise DatasetError(f"--data {args.data}: no items found there; check the kind and the folder")
    reasoner = load_reasoner(args.bundle, device=args.device, threads=args.threads, max_samples=args.n,
                             max_new_tokens=args.max_new_tokens, verify=args.verify,
                             mask_guard=MaskGuard.of_args(args))
    settings = EvalSettings(data=args.data, data_options=options, on_error=args.on_error, n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                            constrained=reasoner.grammar(args.grammar),
                            temperature=reasoner.temperature(args.temperature),
                            vote=VoteConfig(mode=args.vote_mode), sweep=not args.no_sweep, limit=args.limit,
                            convention=args.convention)
    out = Path(args.out) if args.out else default_out_dir(args.data, reasoner.bundle.get("name", "bundle"), args.n)
    cancel = CancelToken()
    try:
        with StopOnCtrlC(cancel, "star eval: stopping; finished items are saved"):
            outcome = run_eval(reasoner, reader, out, settings, cancel=cancel, progress=not args.quiet)
    except StarError:
        # e.g. --on-error raise on a malformed item: the items done so far still get their report
        log = RunLog(out)
        if log.run_path.exists():
            write_report(summarize(log.latest_records(), log.read_settings(), args.convention,
                                   count_failures=not args.exclude_failures) | {"complete": False}, out)
        raise
    finally:
        reasoner.close()
    log = RunLog(out)
    summary = summarize(outcome.records, log.read_settings(), args.convention, count_failures=not args.exclude_failures)
    summary["complete"] = not outcome.interrupted and len(outcome.records) >= outcome.total
    summary["reader_problems"] = list(getattr(reader, "problems", []))
    paths = write_report(summary, out)
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if outcome.interrupted:
        print(f"star eval: interrupted after {len(outcome.records)} of {outcome.total} items; "
              "run the same command to resume", file=sys.stderr)
        return 130
    scored = sum("error" not in r for r in outcome.records)
    if scored == 0:
        print(f"star eval: none of the {outcome.total} items could be scored (each failed or was skipped; "
              "see the report's failures): the figures above are not a result", file=sys.stderr)
        return 1
    return 0

"""`star eval --data revos:PATH` (or `mevis:`): every (video, expression) of a benchmark through `star track`
(the policy on the key frame, SAM 2's memory after it, re-asks where a track is lost), scored with J, F and
J&F per expression and summarized per expression kind as ReVOS reports them (engine/video_metrics.py).

One line per finished expression in `results.jsonl`, so a stopped run resumes where it stopped;
`report.json` and `report.md` at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..fileio import write_json_atomically, write_text_atomically
from ..video_metrics import SequenceScore, sequence_score, summarize

VIDEO_KINDS = ("revos", "mevis")
TRACKERS = ("memory", "still", "box", "policy")  # engine/track/baselines.py for the last three


@dataclass
class VideoEvalSettings:
    data: str
    n: int = 1
    key_frame: int = 0
    reask: bool = True
    limit: int | None = None
    max_frames: int | None = None
    tracker: str = "memory"   # memory (SAM 2's video predictor) or a baseline: still, box, policy
    key_answer: str = "policy"  # policy, or gold: the target's own box and point on the key frame (the tracker alone)


def _done(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            out[record["id"]] = record
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a stop mid-write: that expression runs again
    return out


def evaluate_expression(reasoner, predictor, expression, settings: VideoEvalSettings, sampling) -> dict:
    """One (video, expression): tracked from its key frame, every frame's union of tracks scored against the
    target; returns its record."""
    from ..frames import FrameSource
    from ..track.run import TrackRun, track

    source = FrameSource(list(expression.frames), max_frames=settings.max_frames)
    run, masks = TrackRun(), {}
    t0 = time.perf_counter()
    try:
        if settings.tracker == "policy":
            from ..track.baselines import every_frame

            for position, mask, _ in every_frame(reasoner, source, expression.query, settings.n, sampling):
                masks[position] = mask
        elif settings.key_answer == "gold":
            tracker = _follower(settings.tracker, reasoner, predictor, source)
            key = min(settings.key_frame, len(source) - 1)
            masks.update(follow_gold(tracker, source, key, expression.load_object_masks(key)))
        else:
            tracker = _follower(settings.tracker, reasoner, predictor, source)
            key = min(settings.key_frame, len(source) - 1)
            for frame in track(reasoner, source, expression.query, tracker, key=key, n=settings.n, sampling=sampling,
                               reask=settings.reask, run=run):
                union = None
                for mask in frame.masks.values():
                    union = mask.copy() if union is None else union | mask
                masks[frame.position] = union
    finally:
        source.close()
    score = sequence_score((masks.get(i), expression.load_mask(i)) for i in range(len(source)))
    return {"id": expression.id, "kind": expression.kind, "query": expression.query, "j": score.j, "f": score.f,
            "jf": score.jf, "frames": score.frames, "asks": [a.position for a in run.asks],
            "tracks": len(run.tracks), "seconds": round(time.perf_counter() - t0, 2)}


def follow_gold(tracker, source, key: int, objects: list) -> dict:
    """The tracker alone: each target object's own box and deepest point on the key frame as its prompt (what
    a perfect policy would answer), followed back and forth with no re-asks; position -> union mask."""
    from ..mask_prompts import box_and_deep_point

    for tid, mask in enumerate(objects, start=1):
        box, point = box_and_deep_point(mask)
        tracker.prompt(key, tid, box=box, point=point)
    if not objects:
        return {}
    masks = {}
    passes = [tracker.propagate(key, reverse=True)] if key > 0 else []
    for outputs_by_frame in passes + [tracker.propagate(key)]:
        for position, outputs in outputs_by_frame:
            union = None
            for mask, _ in outputs.values():
                union = mask.copy() if union is None else union | mask
            masks[position] = union
    return masks


def _follower(name: str, reasoner, predictor, source):
    from ..track.baselines import BoxFollower, StillFollower
    from ..track.sam2_video import VideoMemoryTracker

    if name == "memory":
        return VideoMemoryTracker(predictor, source)
    return {"still": StillFollower, "box": BoxFollower}[name](reasoner.segmenter, source)


def run_video_eval(reasoner, predictor, dataset, out: Path, settings: VideoEvalSettings, sampling,
                   progress: bool = True) -> dict:
    """Every expression not yet in `out/results.jsonl`, then the report; returns the summary."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = _done(results)
    items = list(dataset)[:settings.limit] if settings.limit else list(dataset)
    todo = [e for e in items if e.id not in done]
    with results.open("a") as sink, tqdm(total=len(items), initial=len(items) - len(todo), desc="star eval",
                                         unit="expression", disable=not progress, dynamic_ncols=True) as bar:
        for expression in todo:
            record = evaluate_expression(reasoner, predictor, expression, settings, sampling)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            done[record["id"]] = record
            bar.update(1)
    return write_video_report([done[e.id] for e in items if e.id in done], out, settings)


def write_video_report(records: list[dict], out: Path, settings: VideoEvalSettings) -> dict:
    """report.json (J, F, J&F per kind and overall; re-asks per frame) and report.md."""
    by_kind: dict[str, list[SequenceScore]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(SequenceScore(r["j"], r["f"], r["frames"]))
    table = summarize(by_kind)
    frames = sum(r["frames"] for r in records)
    reasks = sum(max(0, len(r["asks"]) - 1) for r in records)
    policy_calls = frames if settings.tracker == "policy" else sum(len(r["asks"]) for r in records)
    summary = {"data": settings.data, "n": settings.n, "tracker": settings.tracker,
               "key_answer": settings.key_answer, "expressions": len(records),
               "frames": frames, "policy_calls_per_frame": policy_calls / frames if frames else 0.0,
               "reask_share": reasks / frames if frames else 0.0, "scores": table}
    write_json_atomically(out / "report.json", summary)
    how = settings.tracker + (", the target's own box on the key frame" if settings.key_answer == "gold" else "")
    lines = [f"# star eval: {settings.data} ({how})", "",
             f"{len(records)} expressions, {frames} frames; the policy asked again on "
             f"{100 * summary['reask_share']:.1f} % of frames ({summary['policy_calls_per_frame']:.2f} policy calls "
             "a frame in all).", "", "| | J | F | J&F | expressions |",
             "|---|---:|---:|---:|---:|"]
    for kind in ("overall", "referring", "reasoning", "no-target"):
        if kind in table:
            row = table[kind]
            lines.append(f"| {kind} | {100 * row['j']:.1f} | {100 * row['f']:.1f} | {100 * row['jf']:.1f} | "
                         f"{row['sequences']} |")
    write_text_atomically(out / "report.md", "\n".join(lines) + "\n")
    return summary


def main_video(args, kind: str, path: str) -> int:
    """`star eval` on a video benchmark."""
    from ..data.video import open_video_dataset
    from ..errors import DatasetError
    from ..honesty import MaskGuard
    from ..pipeline import load_reasoner, sampling_for
    from ..track.loading import video_segmenter

    dataset = open_video_dataset(kind, path)
    if len(dataset) == 0:
        raise DatasetError(f"--data {args.data}: no expressions found there")
    tracker = getattr(args, "tracker", "memory")
    predictor = video_segmenter(args.sam2, args.bundle, device=args.device, verify=args.verify) \
        if tracker == "memory" else None
    reasoner = load_reasoner(args.bundle, device=args.device, threads=args.threads, max_samples=args.n,
                             max_new_tokens=args.max_new_tokens, verify=args.verify, mask_guard=MaskGuard.of_args(args))
    key_answer = getattr(args, "key_answer", "policy")
    if key_answer == "gold" and tracker == "policy":
        raise DatasetError("--key-answer gold follows the target's key-frame box: it needs --tracker memory, still "
                           "or box")
    settings = VideoEvalSettings(data=args.data, n=args.n, limit=args.limit, tracker=tracker, key_answer=key_answer)
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{kind}-{Path(path).name}-{tracker}-" + \
        ("gold" if key_answer == "gold" else f"n{args.n}")
    try:
        sampling = sampling_for(args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                constrained=reasoner.grammar(args.grammar),
                                temperature=reasoner.temperature(args.temperature))
        run_video_eval(reasoner, predictor, dataset, out, settings, sampling, progress=not args.quiet)
    finally:
        reasoner.close()
    print((out / "report.md").read_text())
    return 0


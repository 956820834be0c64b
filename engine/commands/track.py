"""`star track`: reason once on a key frame, follow the answer through a video or a folder of frames with
SAM 2's memory, ask again where a track is lost; per-frame masks, track.json and an overlay (engine.track)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import StarError
from ..honesty import MaskGuard


class TrackError(StarError):
    pass


def _complete(out: Path, settings: dict) -> bool:
    import json

    try:
        payload = json.loads((out / "track.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("complete") is True and payload.get("settings") == settings


def main(args) -> int:
    from tqdm import tqdm

    from ..frames import FrameSource
    from ..pipeline import check_query, load_reasoner, sampling_for
    from ..track.loading import video_segmenter
    from ..track.output import TrackWriter, stopped_run
    from ..track.run import TrackRun, track
    from ..track.sam2_video import VideoMemoryTracker

    check_query(args.query)
    source = FrameSource(args.video, stride=args.stride, max_frames=args.max_frames)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / "track.json").is_file():
        raise TrackError(f"--out {out} holds other files; name an empty or new folder")
    predictor = video_segmenter(args.sam2, args.bundle, device=args.device, verify=args.verify)
    reasoner = load_reasoner(args.bundle, device=args.device, threads=args.threads, max_samples=args.n,
                             max_new_tokens=args.max_new_tokens, verify=args.verify, mask_guard=MaskGuard.of_args(args))
    settings = {"source": str(args.video), "query": args.query, "key_frame": args.key_frame, "n": args.n,
                "stride": args.stride, "max_frames": args.max_frames, "reask": args.reask, "seed": args.seed,
                "bundle": reasoner.bundle.get("name")}
    if _complete(out, settings):
        reasoner.close()
        source.close()
        print(f"star track: {out} already holds this track, complete (name another --out to track again)")
        return 0
    try:
        stopped = stopped_run(out, settings, min(args.key_frame, max(0, len(source) - 1)))
    except ValueError as exc:
        reasoner.close()
        source.close()
        raise TrackError(f"--out {out} {exc}; name another folder") from None
    writer = TrackWriter(out, source, settings, labelme=args.format == "labelme")
    run, resume = TrackRun(), None
    if stopped is not None:
        run, resume, writer.frames, writer.seconds_before = stopped
        print(f"star track: resuming at frame {resume.position} ({len(writer.frames)} frames kept; each track "
              "followed on from its mask there)", file=sys.stderr)
    bar = tqdm(total=len(source), desc="star track", unit="frame", disable=args.quiet, dynamic_ncols=True)
    complete = False
    try:
        tracker = VideoMemoryTracker(predictor, source)
        sampling = sampling_for(args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                constrained=reasoner.grammar(args.grammar),
                                temperature=reasoner.temperature(args.temperature))
        for frame in track(reasoner, source, args.query, tracker, key=args.key_frame, n=args.n, sampling=sampling,
                           reask=args.reask, run=run, resume=resume):
            writer.write(frame, run)
            bar.n = len(writer.frames)
            bar.set_postfix(tracks=len(run.tracks), asks=len(run.asks))
        complete = True
    finally:
        bar.close()
        writer.flush(run, complete=complete)  # Ctrl-C keeps every finished frame
        reasoner.close()
        source.close()
    overlay = writer.overlay(fps=source.fps()) if args.overlay else None
    lost = sum(1 for t in run.tracks.values() if t.lost)
    print(f"{len(writer.frames)} frames, {len(run.tracks)} tracks ({lost} lost at the end), the policy asked "
          f"{len(run.asks)} times ({', '.join(str(a.position) for a in run.asks)}) -> {out}")
    if overlay is None and args.overlay:
        print("star track: OpenCV cannot write MP4 here; the masks and track.json are written", file=sys.stderr)
    return 0

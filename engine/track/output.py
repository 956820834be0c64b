"""What `star track` writes in its folder, frame by frame as results come:

    masks/00000.png ...   one indexed PNG per frame (0 background, k = track k; the PASCAL VOC palette)
    track.json            per frame and track: RLE, box, object score; every ask of the policy (frame,
                          reason, reasoning, answers); the settings and timings; rewritten as frames finish
    overlay.mp4           the clip with each track's colour over it (made at the end from the PNGs)
    labelme/<frame>.json  with --format labelme: a labelme file per frame, one polygon group per track

A frame written twice (the policy was asked again there) keeps its second result.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..fileio import write_json_atomically
from ..frames import FrameSource
from .palette import label_image, read_indexed_png, voc_palette, write_indexed_png
from .run import Ask, FrameResult, Resume, TrackRun
from .tracks import Track, mask_box

TRACK_FORMAT = 1
FLUSH_SECONDS = 2.0  # track.json is rewritten at most this often while frames come (and at the end)


class TrackWriter:
    def __init__(self, out: Path, source: FrameSource, settings: dict, *, labelme: bool = False):
        self.out, self.source, self.settings, self.labelme = Path(out), source, settings, labelme
        (self.out / "masks").mkdir(parents=True, exist_ok=True)
        if labelme:
            (self.out / "labelme").mkdir(exist_ok=True)
        self.frames: dict[int, dict] = {}
        self._flushed = 0.0
        self.started = time.perf_counter()
        self.seconds_before = 0.0   # a resumed run's time before it stopped

    def mask_path(self, position: int) -> Path:
        return self.out / "masks" / f"{position:05d}.png"

    def write(self, frame: FrameResult, run: TrackRun) -> None:
        """One frame's result: its PNG now, its entry in track.json at the next flush."""
        from ..rle import encode

        shape = next(iter(frame.masks.values())).shape if frame.masks else self.source.frame(frame.position).rgb.shape[:2]
        write_indexed_png(self.mask_path(frame.position), label_image(frame.masks, shape))
        self.frames[frame.position] = {
            "index": frame.index, "lost": frame.lost,
            "tracks": {str(t): {"rle": encode(m), "box": mask_box(m), "score": round(float(frame.scores.get(t, 0.0)), 4)}
                       for t, m in frame.masks.items() if m.any()}}
        if self.labelme:
            self._write_labelme(frame, run)
        if time.perf_counter() - self._flushed > FLUSH_SECONDS:
            self.flush(run, complete=False)

    def _write_labelme(self, frame: FrameResult, run: TrackRun) -> None:
        from ..annotations import mask_polygons

        shapes = []
        for t, mask in sorted(frame.masks.items()):
            label = run.tracks[t].label if t in run.tracks else None
            for polygon in mask_polygons(mask):
                shapes.append({"label": label or "object", "points": polygon[:-1], "group_id": t,
                               "description": self.settings.get("query", ""), "shape_type": "polygon", "flags": {}})
        h, w = next(iter(frame.masks.values())).shape if frame.masks else (0, 0)
        name = Path(self.source.frame(frame.position).name).stem if self.source.path.is_dir() else f"{frame.index:05d}"
        write_json_atomically(self.out / "labelme" / f"{name}.json",
                              {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": None, "imageData": None,
                               "imageHeight": int(h), "imageWidth": int(w)})

    def flush(self, run: TrackRun, *, complete: bool) -> Path:
        """track.json as it stands (complete: every frame done)."""
        self._flushed = time.perf_counter()
        seconds = self.seconds_before + time.perf_counter() - self.started
        payload = {"format": TRACK_FORMAT, "complete": complete, "settings": self.settings,
                   "frames_total": len(self.source), "frames_done": len(self.frames),
                   "tracks": {str(t): {"label": tr.label, "lost_at": tr.lost_at, "lost": tr.lost, "reason": tr.reason}
                              for t, tr in run.tracks.items()},
                   "asks": [asdict(a) for a in run.asks],
                   "timings": {"seconds": round(seconds, 2),
                               "frames_per_second": round(len(self.frames) / seconds, 2) if seconds else None,
                               "policy_ms": round(sum(a.ms for a in run.asks), 1)},
                   "frames": {str(p): self.frames[p] for p in sorted(self.frames)}}
        return write_json_atomically(self.out / "track.json", payload)

    def overlay(self, path: Path | None = None, fps: float | None = None) -> Path | None:
        """overlay.mp4: every frame with its tracks' colours blended in (half opacity), in clip order. None when
        OpenCV cannot write MP4 here."""
        import cv2

        path = Path(path or self.out / "overlay.mp4")
        palette = voc_palette().astype(np.float32)
        writer = None
        try:
            for position in range(len(self.source)):
                rgb = self.source.frame(position).rgb
                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 10.0, (w, h))
                    if not writer.isOpened():
                        return None
                labels = read_indexed_png(self.mask_path(position)) if self.mask_path(position).is_file() \
                    else np.zeros(rgb.shape[:2], np.uint8)
                shown = rgb.astype(np.float32)
                tracked = labels > 0
                shown[tracked] = 0.5 * shown[tracked] + 0.5 * palette[labels[tracked]]
                writer.write(np.ascontiguousarray(shown.astype(np.uint8)[:, :, ::-1]))
        finally:
            if writer is not None:
                writer.release()
        return path


def stopped_run(out: Path, settings: dict, key: int) -> tuple[TrackRun, Resume, dict, float] | None:
    """A run stopped in `out` with these settings, ready to go on: its tracks and asks, where to resume (the
    last frame finished going forward from `key`, every frame before it done), its finished frames' entries
    and its seconds so far. None when there is nothing to resume: no track.json, another format, or no
    forward frame finished yet. Raises ValueError when `out` holds a run of other settings."""
    import json

    from ..rle import decode

    path = Path(out) / "track.json"
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except ValueError:
        return None  # cut mid-write cannot happen (atomic writes); anything else unreadable starts again
    if not isinstance(payload, dict) or payload.get("format") != TRACK_FORMAT:
        return None
    if payload.get("settings") != settings:
        raise ValueError("holds a track made with other settings (source, query, key frame, N, stride, "
                         "max frames, re-asks, seed or bundle)")
    frames = {int(p): entry for p, entry in payload.get("frames", {}).items()}
    if any(p not in frames for p in range(key + 1)):
        return None  # the key frame, or the pass back from it, not finished: start again
    position = key
    while position + 1 in frames and position + 1 < payload.get("frames_total", 0):
        position += 1
    run = TrackRun()
    for t, entry in payload.get("tracks", {}).items():
        run.tracks[int(t)] = Track(int(t), entry.get("label"), lost=bool(entry.get("lost")),
                                   lost_at=entry.get("lost_at"), reason=entry.get("reason"))
    run.asks = [Ask(**a) for a in payload.get("asks", [])]
    masks = {int(t): decode(e["rle"]) for t, e in frames[position]["tracks"].items()}
    for tid, track_ in run.tracks.items():  # the reference a new answer's box is matched against
        for p in range(position, -1, -1):
            entry = frames[p]["tracks"].get(str(tid))
            if entry is not None:
                track_.last_mask = decode(entry["rle"])
                break
    last_ask = max([a.position for a in run.asks if a.position >= key] or [key])
    frames = {p: e for p, e in frames.items() if p < position}  # the resume frame is made again
    return run, Resume(position, masks, last_ask), frames, float(payload.get("timings", {}).get("seconds", 0.0))

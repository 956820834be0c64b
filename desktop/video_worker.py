"""Video off the UI thread: `star track`'s loop (engine.track) for the app's video window. The worker holds
the reasoner, SAM 2 with its memory (the bundle's PyTorch checkpoint) and the tracker of the clip last
tracked, so an annotator's clicks on any frame go into the same memory and are carried forward from there.

Every report carries the window's run number, so a frame that arrives after the person started another run
is not shown as this one's. Masks travel as COCO RLE (engine.rle): a frame of a long 720p clip is a few
hundred bytes instead of a megabyte a track. Stop sets a flag the loop reads between frames (the policy's
answer on the key frame, and on a frame where it is asked again, finishes first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from engine.policy.types import DEFAULT_MAX_NEW_TOKENS, CancelToken

from .messages import user_message
from .worker import ReasonerLoader, default_loader

VideoLoader = Callable[[str | None], object]  # bundle (None = nano) -> sam2's SAM2VideoPredictor


def default_video_loader(bundle: str | None):
    """The bundle's SAM 2 with its memory modules; a bundle without them is a ModelFileError saying so."""
    from engine.track.loading import video_segmenter

    return video_segmenter(None, bundle, hint="choose a bundle exported with star-export sam2 --video (star doctor "
                                              "says whether a bundle can track)")


@dataclass
class TrackRequest:
    """Follow the answer to `query` on frame `key` of `source` (a video file or a folder of frames)."""
    source: str
    query: str
    key: int
    samples: int
    bundle: str | None
    reask: bool = True
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    run: int = 0


@dataclass
class CorrectRequest:
    """An annotator's clicks (x, y, True adds) for `track` on frame `position` of the clip last tracked; the
    frames from there to the end are made again. A track id not in the run starts a new track."""
    position: int
    track: int
    clicks: list[tuple[float, float, bool]]
    run: int = 0


@dataclass
class ExportRequest:
    """Write what the window holds as `star track` writes its folder: masks/, track.json, overlay.mp4 and, with
    `labelme`, a labelme file per frame."""
    out: str
    source: str
    frames: dict[int, dict]  # position -> {track: RLE}
    scores: dict[int, dict]  # position -> {track: object score}
    settings: dict
    labelme: bool = False


class VideoWorker(QObject):
    stage = Signal(int, str)  # run, what it is doing
    frame_done = Signal(int, int, object, object)  # run, position, {track: RLE}, {track: object score}
    asked = Signal(int, object)  # run, engine.track.run.Ask (the key frame's and every re-ask)
    finished = Signal(int, object)  # run, {"frames": n, "total": n, "stopped": bool, "run": TrackRun}
    failed = Signal(int, object)  # run, messages.UserMessage
    exported = Signal(str)  # the folder written
    export_failed = Signal(object)  # messages.UserMessage

    def __init__(self, loader: ReasonerLoader = default_loader, video_loader: VideoLoader = default_video_loader,
                 log_path: str | None = None):
        super().__init__()
        self.loader, self.video_loader, self.log_path = loader, video_loader, log_path
        self.reasoner = self.predictor = None
        self._reasoner_key: tuple | None = None
        self._predictor_bundle: object = ()  # () = none loaded yet (None is the nano bundle)
        self.tracker = None
        self.source = None
        self.run_state = None  # the TrackRun of the clip last tracked
        self.cancel_token = CancelToken()

    def cancel(self) -> None:
        """Called from the UI thread: the loop stops before its next frame."""
        self.cancel_token.cancel()

    def _reasoner_for(self, bundle: str | None, samples: int):
        if self.reasoner is None or self._reasoner_key[0] != bundle or self._reasoner_key[1] < samples:
            self._close_reasoner()
            capacity = max(samples, 8)
            self.reasoner = self.loader(bundle, capacity)
            self._reasoner_key = (bundle, capacity)
        return self.reasoner

    def _predictor_for(self, bundle: str | None):
        if self.predictor is None or self._predictor_bundle != bundle:
            self.predictor, self._predictor_bundle = self.video_loader(bundle), bundle
        return self.predictor

    @Slot(object)
    def track(self, request: TrackRequest) -> None:
        """Reason on the key frame and follow the answer through the clip (engine.track.run.track)."""
        from engine.frames import FrameSource
        from engine.pipeline import check_query, sampling_for
        from engine.track.run import TrackRun, track
        from engine.track.sam2_video import VideoMemoryTracker

        self.cancel_token = CancelToken()
        run_id, done, stopped = request.run, set(), False
        try:
            check_query(request.query)
            self.stage.emit(run_id, "loading SAM 2's video memory")
            predictor = self._predictor_for(request.bundle)
            self.stage.emit(run_id, "loading the model bundle")
            reasoner = self._reasoner_for(request.bundle, request.samples)
            self._close_clip()
            self.source = FrameSource(request.source)
            self.tracker = VideoMemoryTracker(predictor, self.source)
            self.run_state = run = TrackRun()
            sampling = sampling_for(request.samples, seed=request.seed, max_new_tokens=request.max_new_tokens,
                                    constrained=reasoner.answer_grammar, temperature=reasoner.temperature(None))
            self.stage.emit(run_id, f"reasoning on frame {request.key + 1}")
            asks = 0
            for frame in track(reasoner, self.source, request.query, self.tracker, key=request.key,
                               n=request.samples, sampling=sampling, reask=request.reask, run=run):
                while asks < len(run.asks):
                    self.asked.emit(run_id, run.asks[asks])
                    asks += 1
                self._emit_frame(run_id, frame.position, frame.masks, frame.scores)
                done.add(frame.position)
                if self.cancel_token.cancelled:
                    stopped = True
                    break
            while asks < len(run.asks):
                self.asked.emit(run_id, run.asks[asks])
                asks += 1
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
            self.failed.emit(run_id, user_message(exc, self.log_path))
            return
        self.finished.emit(run_id, {"frames": len(done), "total": len(self.source), "stopped": stopped,
                                    "run": self.run_state})

    @Slot(object)
    def correct(self, request: CorrectRequest) -> None:
        """The clicks into SAM 2's memory on their frame, then every frame from there to the end again (no
        re-asks: the annotator is in charge of this track now)."""
        from engine.track.tracks import Track

        self.cancel_token = CancelToken()
        run_id, done, stopped = request.run, set(), False
        try:
            if self.tracker is None:
                from engine.errors import StarError

                raise StarError("Track the clip first: clicks correct a track that SAM 2's memory follows")
            run = self.run_state
            if request.track not in run.tracks:
                run.tracks[request.track] = Track(request.track, "object")
            run.tracks[request.track].resume()
            self.stage.emit(run_id, f"carrying the correction on from frame {request.position + 1}")
            self.tracker.prompt_clicks(request.position, request.track, request.clicks)
            for position, outputs in self.tracker.propagate(request.position):
                self._emit_frame(run_id, position, {t: m for t, (m, _) in outputs.items()},
                                 {t: s for t, (_, s) in outputs.items()})
                done.add(position)
                if self.cancel_token.cancelled:
                    stopped = True
                    break
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(run_id, user_message(exc, self.log_path))
            return
        self.finished.emit(run_id, {"frames": len(done), "total": len(self.source), "stopped": stopped,
                                    "run": self.run_state})

    def _emit_frame(self, run_id: int, position: int, masks: dict, scores: dict) -> None:
        from engine.rle import encode

        self.frame_done.emit(run_id, position, {int(t): encode(m) for t, m in masks.items() if m.any()},
                             {int(t): float(s) for t, s in scores.items()})

    @Slot(object)
    def export(self, request: ExportRequest) -> None:
        """The window's frames written as `star track` writes its folder (engine.track.output.TrackWriter)."""
        from engine.frames import FrameSource
        from engine.rle import decode
        from engine.track.output import TrackWriter
        from engine.track.run import FrameResult, TrackRun

        try:
            source = FrameSource(request.source)
            try:
                writer = TrackWriter(Path(request.out), source, request.settings, labelme=request.labelme)
                run = self.run_state or TrackRun()
                for position in sorted(request.frames):
                    masks = {int(t): decode(rle) for t, rle in request.frames[position].items()}
                    writer.write(FrameResult(position, position * source.stride, masks,
                                             request.scores.get(position, {})), run)
                writer.flush(run, complete=len(request.frames) == len(source))
                writer.overlay(fps=source.fps())
            finally:
                source.close()
        except Exception as exc:  # noqa: BLE001
            self.export_failed.emit(user_message(exc, self.log_path))
            return
        self.exported.emit(request.out)

    def _close_clip(self) -> None:
        if self.source is not None:
            self.source.close()
        self.source = self.tracker = self.run_state = None

    def _close_reasoner(self) -> None:
        if self.reasoner is not None:
            self.reasoner.close()
        self.reasoner, self._reasoner_key = None, None

    @Slot()
    def close(self) -> None:
        """Release the model, SAM 2 and the clip on the worker's thread (the window quits or closes)."""
        self._close_clip()
        self._close_reasoner()
        self.predictor, self._predictor_bundle = None, ()

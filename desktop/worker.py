"""Inference off the UI thread. The window sends a Request; the worker loads (and keeps) the reasoner for
the chosen bundle, runs it, and reports through Qt signals (queued across threads, so slots run on the
UI thread). Every report carries the request's RunTag (run number, image key, query), so the window can
tell a result for the image on screen from one that arrives after the user moved on. Tokens are batched
every ~40 ms: 32 samples x hundreds of tokens must not flood the event loop. Stop sets the engine's
CancelToken: decoding ends within one step, segmentation within one batch of prompts, and the result is
marked cancelled (a stopped run, never an answer). The reasoner's native resources are created and
released on the worker's thread (`close` is called there)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from engine.pipeline import Event, Reasoner, load_reasoner, sampling_for
from engine.policy.types import DEFAULT_MAX_NEW_TOKENS, CancelToken, SamplingParams
from engine.results import result_to_dict

from .messages import user_message
from .outcome import Outcome

FLUSH_S = 0.04


@dataclass(frozen=True)
class RunTag:
    """What a run was computed for: the window's run number, the image (its content key and name) and the query."""
    run: int
    image_key: str
    image_name: str
    query: str


@dataclass
class Request:
    image: np.ndarray
    query: str
    samples: int
    temperature: float | None  # the voting samples'; None = the bundle's (policy.vote_temperature)
    bundle: str | None  # None = the bundled nano model
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    tag: RunTag | None = None

    def sampling(self, reasoner: Reasoner) -> SamplingParams:
        """StAR's settings (engine.pipeline.sampling_for) with the app's voting temperature, where the user
        chose one, and the bundle's recommendations otherwise (its answer grammar, its voting temperature)."""
        return sampling_for(self.samples, seed=self.seed, max_new_tokens=self.max_new_tokens,
                            constrained=reasoner.answer_grammar, temperature=reasoner.temperature(self.temperature))


@dataclass
class RefineRequest:
    """An annotator's SAM prompt for one object of the image on screen (see desktop.annotation.Prompt)."""
    image: np.ndarray
    clicks: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    bundle: str | None
    tag: object = None  # the window's identity of the edit (image, object), returned with the answer


@dataclass
class FolderRequest:
    """One query over a list of images (the window's folder, those not saved yet), each run as a single query
    is; Stop ends it between images or within the image in flight (that image is not recorded)."""
    images: list[Path]
    query: str
    samples: int
    temperature: float | None
    bundle: str | None
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    skipped: list[Path] = field(default_factory=list)  # already labelled: reported, not run

    def request(self, rgb: np.ndarray) -> Request:
        return Request(rgb, self.query, self.samples, self.temperature, self.bundle, self.seed, self.max_new_tokens)


ReasonerLoader = Callable[[str | None, int], Reasoner]


def default_loader(bundle: str | None, max_samples: int) -> Reasoner:
    return load_reasoner(bundle, max_samples=max_samples)


def server_loader(url: str, api_key: str | None = None, model: str | None = None) -> ReasonerLoader:
    """A loader that uses a `star serve` server instead of a local bundle (the bundle argument is ignored:
    the server's model answers)."""
    def load(_bundle: str | None, _max_samples: int):
        from engine.serve.remote import RemoteReasoner

        return RemoteReasoner(url, api_key=api_key, model=model)

    return load


def describe(reasoner: Reasoner) -> str:
    b = reasoner.bundle or {}
    policy = b.get("policy") or {}
    on_gpu = getattr(reasoner.policy, "n_gpu_layers", 0) not in (0, None)
    seg = getattr(reasoner.segmenter, "name", "?")
    grammar = " · answer grammar" if reasoner.answer_grammar else ""
    if b.get("server"):
        return f"{b.get('name', 'bundle')} · model {b.get('model')} on the server {b['server']}"
    return (f"{b.get('name', 'bundle')} · policy {policy.get('quant', '?')} {policy.get('frame', '')} on "
            f"{'GPU' if on_gpu else 'CPU'} · SAM 2 {seg}{grammar} · bundle's T {reasoner.vote_temperature:g}"
            + adapted_note(policy.get("adapted")))


def adapted_note(adapted) -> str:
    """What `star-train adapt` measured for a bundle it made: where from, on what, before and after."""
    if not isinstance(adapted, dict):
        return ""
    try:
        return (f" · adapted from {adapted['from_bundle']} on {adapted['data']}: held-out gIoU "
                f"{float(adapted['before_giou']):.2f} → {float(adapted['after_giou']):.2f} "
                f"({int(adapted['held_out'])} samples)")
    except (KeyError, TypeError, ValueError):  # a hand-edited manifest: say nothing rather than fail
        return ""


class InferenceWorker(QObject):
    loaded = Signal(str)  # a description of the bundle and devices
    stage = Signal(str)
    tokens = Signal(object)  # {sample: new text} (object: a QVariantMap would need str keys)
    sample_done = Signal(int, str)  # sample index, status ("stopped" for one cut short by Stop)
    progress = Signal(str, int, int)  # stage, done, total (prompts segmented)
    finished = Signal(object, object)  # RunTag, the result as an Outcome (prepared here, off the UI thread)
    failed = Signal(object, object)  # RunTag (None outside a run), messages.UserMessage
    refined = Signal(object, object)  # RefineRequest.tag, engine.segment.Refinement
    refine_failed = Signal(object, object)  # RefineRequest.tag, messages.UserMessage
    folder_progress = Signal(int, int, str)  # images done, images to run, the name of the one in flight
    folder_image = Signal(str, str, object)  # image path, its content key (store.content_key), Outcome (prepared)
    folder_image_failed = Signal(str, object)  # image path, messages.UserMessage
    folder_finished = Signal(object)  # {"done": n, "failed": n, "skipped": n, "stopped": bool}

    def __init__(self, loader: ReasonerLoader = default_loader, log_path: str | None = None):
        super().__init__()
        self.loader = loader
        self.log_path = log_path
        self.reasoner: Reasoner | None = None
        self._key: tuple | None = None
        self.cancel_token = CancelToken()
        self.closing = False  # the app is quitting: nothing more is reported or converted
        self._pending: dict[int, str] = {}
        self._last_flush = 0.0
        self._refine_embedding: tuple | None = None  # (image array, segmenter, Embedding) of the last refinement

    def cancel(self) -> None:
        """Called from the UI thread; the engine polls the token between decode steps, prompt batches and
        masks."""
        self.cancel_token.cancel()

    def begin_close(self) -> None:
        """Called from the UI thread when the app quits: the run in flight stops at its next check and its
        (stopped) result is not even converted, so the worker's thread is free to release the model at once."""
        self.closing = True
        self.cancel_token.cancel()

    def _reasoner_for(self, bundle: str | None, samples: int) -> Reasoner:
        # Reload only for another bundle or more parallel samples than the loaded context holds.
        if self.reasoner is None or self._key[0] != bundle or self._key[1] < samples:
            self.close()
            self.stage.emit("loading the model bundle")
            capacity = max(samples, 8)
            self.reasoner = self.loader(bundle, capacity)
            self._key = (bundle, capacity)
            self.loaded.emit(describe(self.reasoner))
        return self.reasoner

    @Slot(object)
    def load(self, bundle: str | None) -> None:
        try:
            self._reasoner_for(bundle, 8)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
            self.failed.emit(None, user_message(exc, self.log_path))

    @Slot(object)
    def run(self, request: Request) -> None:
        self.cancel_token = CancelToken()
        try:
            reasoner = self._reasoner_for(request.bundle, request.samples)
            result = reasoner.run(request.image, request.query, request.samples,
                                  sampling=request.sampling(reasoner),
                                  on_event=self._on_event, cancel=self.cancel_token)
            if self.closing:
                return
            self._flush(force=True)
            data = result_to_dict(result, should_stop=lambda: self.closing)
            if data is None:
                return
            outcome = Outcome(data).prepare(should_stop=lambda: self.closing)
            if not self.closing:
                self.finished.emit(request.tag, outcome)
        except Exception as exc:  # noqa: BLE001
            self._flush(force=True)
            self.failed.emit(request.tag, user_message(exc, self.log_path))

    @Slot(object)
    def refine(self, request: RefineRequest) -> None:
        """SAM on the embedding the last run made of this image (the segmenter's cache), one decoder call."""
        try:
            reasoner = self._reasoner_for(request.bundle, 1)
            segmenter = reasoner.segmenter
            if not hasattr(segmenter, "refine"):
                from engine.errors import StarError

                raise StarError("Refining with clicks needs a local model bundle: the server answers whole queries only")
            out = segmenter.refine(self._embedding_for(segmenter, request.image), request.clicks, request.labels,
                                   request.box)
            self.refined.emit(request.tag, out)
        except Exception as exc:  # noqa: BLE001
            self.refine_failed.emit(request.tag, user_message(exc, self.log_path))

    def _embedding_for(self, segmenter, image):
        """The embedding of the image being refined: clicks on the same array (the window's image, never
        changed in place) reuse the last one rather than hash every pixel again (0.1 s a click at 24 MP)."""
        last = self._refine_embedding
        if last is not None and last[0] is image and last[1] is segmenter:
            return last[2]
        embedding = segmenter.embed(image)
        self._refine_embedding = (image, segmenter, embedding)
        return embedding

    @Slot(object)
    def run_folder(self, request: FolderRequest) -> None:
        """Each image in turn, as a single run; each finished image is reported (the window records and
        saves it), a broken one is reported and skipped, Stop ends the loop."""
        from engine.images import load_image

        from .store import content_key

        self.cancel_token = CancelToken()
        done = failed = 0
        total = len(request.images)
        try:
            reasoner = self._reasoner_for(request.bundle, request.samples)
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(None, user_message(exc, self.log_path))
            self.folder_finished.emit({"done": 0, "failed": 0, "skipped": len(request.skipped), "stopped": False,
                                       "not_run": True})
            return
        for i, path in enumerate(request.images):
            if self.cancel_token.cancelled:
                break
            self.folder_progress.emit(i, total, path.name)
            try:
                data = path.read_bytes()
                rgb = load_image(path, downscale=True)
                one = request.request(rgb)
                result = reasoner.run(rgb, one.query, one.samples, sampling=one.sampling(reasoner),
                                      cancel=self.cancel_token)
            except Exception as exc:  # noqa: BLE001 - this image only; the run goes on
                failed += 1
                self.folder_image_failed.emit(str(path), user_message(exc, self.log_path))
                continue
            data_dict = result_to_dict(result)
            if data_dict.get("cancelled"):  # stopped within this image: it is not recorded
                break
            done += 1
            self.folder_image.emit(str(path), content_key(data), Outcome(data_dict).prepare())
        self.folder_progress.emit(done + failed, total, "")
        self.folder_finished.emit({"done": done, "failed": failed, "skipped": len(request.skipped),
                                   "stopped": self.cancel_token.cancelled})

    def _on_event(self, event: Event) -> None:
        if event.kind == "token":
            self._pending[event.sample] = self._pending.get(event.sample, "") + event.text
            self._flush()
        elif event.kind == "sample":
            self._flush(force=True)
            stopped = event.data.finish_reason == "cancelled"
            self.sample_done.emit(event.sample, "stopped" if stopped else event.data.status)
        elif event.kind == "progress":
            self.progress.emit(event.text, *event.data)
        elif event.kind == "stage":
            self._flush(force=True)
            self.stage.emit(event.text)
        elif event.kind == "vote":
            self.stage.emit("voting")

    def _flush(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self._pending and (force or now - self._last_flush >= FLUSH_S):
            self.tokens.emit(self._pending)
            self._pending = {}
            self._last_flush = now

    @Slot()
    def close(self) -> None:
        if self.reasoner is not None:
            self.reasoner.close()
        self.reasoner, self._key = None, None

"""The reasoner: policy -> parse -> one batched segmenter call for every object of every sample -> vote.

This is the only module that knows the order of the stages (docs/architecture.md, "One query").
N=1 is StAR's direct prediction (greedy, final mask = OR of the answer's masks); N>1 samples with
StAR's settings (temperature 1.0, top-p 0.9) and takes the mask-level majority vote.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import InvalidQueryError, MemoryBudgetError
from .honesty import MaskGuard, featureless_rows, full_frame_rows, reasoning_problem
from .host import to_host
from .images import ImageSource, load_image
from .policy.types import DEFAULT_MAX_NEW_TOKENS, CancelToken, Completion, SamplingParams
from .protocol import Answer, Target, parse_answer
from .voting import VoteConfig, VoteResult, majority_vote

MAX_QUERY_CHARS = 2000
# Prompts per segmenter call: large enough that batching pays (one decoder pass for many prompts), small
# enough that Stop takes effect within one batch and the progress bar moves during segmentation.
SEGMENT_BATCH = 32


@dataclass
class Event:
    """Something the CLI or the app may show as it happens.

    kind: "token" (sample, text), "sample" (sample, data=SampleResult without masks), "masks"
    (data=list of SampleResult), "vote" (data=VoteResult), "stage" (text = the stage starting),
    "progress" (text = the stage, data = (done, total) within it).
    """

    kind: str
    sample: int | None = None
    text: str = ""
    data: Any = None


EventCallback = Callable[[Event], None]


@dataclass
class Timings:
    vision_ms: float = 0.0  # the policy's vision encoder (shared by all samples)
    prefill_ms: float = 0.0  # the policy's LLM over the prompt + image embeddings (shared)
    prefill_tokens: int = 0
    decode_ms: float = 0.0
    decode_tokens: int = 0
    parse_ms: float = 0.0
    sam_encode_ms: float = 0.0
    sam_decode_ms: float = 0.0
    vote_ms: float = 0.0
    total_ms: float = 0.0
    vote_backend: str = ""  # "cuda" (masks voted where SAM left them), "cpu", or "direct" (N = 1)

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / (self.decode_ms / 1e3) if self.decode_ms else 0.0


@dataclass
class SampleResult:
    index: int
    text: str
    status: str  # ok | empty | failed (docs/protocol.md §4)
    thinking: str
    answer_text: str | None
    reason: str
    finish_reason: str
    targets: list[Target]
    mask_rows: list[int] = field(default_factory=list)  # rows of Result.object_masks, one per target
    scores: list[float] = field(default_factory=list)  # SAM's predicted IoU per target
    # why `thinking` is not readable prose ("" when it is; engine/honesty.py): shown as a note, not as reasoning
    reasoning_problem: str = ""
    full_frame: list[Target] = field(default_factory=list)  # targets dropped: their mask filled the image
    featureless: list[Target] = field(default_factory=list)  # targets dropped: mask empty or on a featureless region

    @property
    def shown_reasoning(self) -> str:
        """The reasoning to show a person: the text, or why it is not shown."""
        from .honesty import shown_reasoning

        return shown_reasoning(self.thinking, self.reasoning_problem)


@dataclass(kw_only=True)
class Result:
    query: str
    image_size: tuple[int, int]  # (width, height)
    mask: np.ndarray  # bool HxW
    no_object: bool
    samples: list[SampleResult]
    # bool [M, H, W], every target of every sample (sample-major); on a GPU run it stays on the device
    # (a torch tensor): `host_mask(row)` copies what a caller needs.
    object_masks: Any
    vote: VoteResult | None  # None for N=1 (direct prediction)
    timings: Timings
    bundle: dict
    cancelled: bool = False
    sampling: SamplingParams | None = None  # how the samples were decoded (temperature 0 = greedy)
    notes: list[str] = field(default_factory=list)  # what the engine's guards changed, one sentence each

    def object_scores(self) -> list[float]:
        """SAM's score of each row of object_masks (a SampleResult keeps them per sample)."""
        scores = [0.0] * len(self.object_masks)
        for s in self.samples:
            for row, score in zip(s.mask_rows, s.scores):
                scores[row] = score
        return scores

    def sample_mask(self, index: int) -> np.ndarray:
        """The union of one sample's object masks (what that sample alone would answer)."""
        h, w = self.mask.shape
        rows = self.samples[index].mask_rows
        return to_host(self.object_masks[rows].any(0)) if rows else np.zeros((h, w), dtype=bool)

    def host_mask(self, row: int) -> np.ndarray:
        """One object mask as a NumPy array (copied from the GPU when the run kept its masks there)."""
        return to_host(self.object_masks[row])


def votes_on_device(segmenter) -> bool:
    """Whether a run keeps its masks on the GPU and votes there: a segmenter on a CUDA device that can hand
    back device masks (`device_outputs`: PyTorch on CUDA, TensorRT, ONNX Runtime's CUDA provider with torch at
    hand), and the CUDA voting kernel available. Otherwise the CPU path."""
    if not (getattr(segmenter, "on_gpu", False) and getattr(segmenter, "device_outputs", False)
            and hasattr(segmenter, "device_segment")):
        return False
    from .kernels.cuda_voting import unavailable_reason

    return unavailable_reason() == ""


def check_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidQueryError("the query is empty: type what to find, e.g. \"the thing that keeps food cold\"")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQueryError(f"the query has {len(query)} characters; keep it under {MAX_QUERY_CHARS}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive from the shell as lone surrogates
        raise InvalidQueryError("the query is not valid UTF-8 text; retype it or check the terminal's encoding") from None
    control = sorted({f"U+{ord(c):04X}" for c in query if unicodedata.category(c) == "Cc" and c not in "\t\n"})
    if control:
        # A NUL would cut the prompt where the C side reads it; other control characters are noise to the model.
        raise InvalidQueryError(f"the query contains control characters ({', '.join(control[:5])}); remove them")
    return query.strip()


def sampling_for(n: int, *, seed: int = 0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, constrained: bool = False,
                 temperature: float = 1.0) -> SamplingParams:
    """StAR's settings: greedy for the direct prediction, temperature 1.0 / top-p 0.9 for voting.
    constrained: decode under the answer grammar (llama.cpp; engine/policy/grammar.py).
    temperature: the voting samples' (StAR fixes 1.0; a small model may vote better cooler); unused at n = 1."""
    if n == 1:
        return replace(SamplingParams.greedy(max_new_tokens), constrained=constrained)
    return SamplingParams(temperature=temperature, top_p=0.9, seed=seed, max_new_tokens=max_new_tokens,
                          constrained=constrained)


def drop_unusable(samples: list[SampleResult], rgb: np.ndarray, object_masks, guard: MaskGuard) -> list[str]:
    """Take every target whose mask the guard rejects out of its sample: one covering >= guard.max_share of
    the image (kept in `full_frame`), one empty or on a featureless region of `rgb` (kept in `featureless`).
    A sample left with none says "no object". Returns the notes for the result."""
    full = set(full_frame_rows(object_masks, guard.max_share))
    flat = set(featureless_rows(rgb, object_masks, guard.min_contrast)) - full
    dropped = full | flat
    if not dropped:
        return []
    for s in samples:
        keep = [j for j, r in enumerate(s.mask_rows) if r not in dropped]
        if len(keep) == len(s.mask_rows):
            continue
        s.full_frame = [t for t, r in zip(s.targets, s.mask_rows) if r in full]
        s.featureless = [t for t, r in zip(s.targets, s.mask_rows) if r in flat]
        s.targets = [s.targets[j] for j in keep]
        s.scores = [s.scores[j] for j in keep]
        s.mask_rows = [s.mask_rows[j] for j in keep]
        if not s.targets:
            s.status, s.reason = "empty", "every object it named gave a mask that outlines nothing (taken as no object)"
    notes = []
    if full:
        notes.append(f"{len(full)} mask{'s' if len(full) > 1 else ''} covering {guard.max_share:.0%} or more of "
                     "the image not used (taken as nothing found)")
    if flat:
        notes.append(f"{len(flat)} mask{'s' if len(flat) > 1 else ''} empty or on a featureless region (under "
                     f"{guard.min_contrast:g} grey levels around it) not used (taken as nothing found)")
    return notes


def vote_candidates(samples: list[SampleResult], object_masks: np.ndarray, scores) -> list:
    """The voting input (engine.voting.majority_vote) of some samples: a failure abstains (None), an
    empty answer is [], otherwise one (mask, SAM score, label) per target."""
    candidates = []
    for s in samples:
        if s.status == "failed":
            candidates.append(None)
        else:
            candidates.append([(object_masks[r], float(scores[r]), t.label) for r, t in zip(s.mask_rows, s.targets)])
    return candidates


def decide(samples: list[SampleResult], object_masks: np.ndarray, scores, shape: tuple[int, int],
           vote: VoteConfig = VoteConfig()) -> tuple[np.ndarray, bool, VoteResult | None]:
    """The final mask of some samples: one sample is StAR's direct prediction (the OR of its masks; a
    failure or no-object answer is an empty mask), several are voted. Returns (mask, no_object, vote)."""
    if len(samples) == 1:
        s = samples[0]
        final = to_host(object_masks[s.mask_rows].any(0)) if s.mask_rows else np.zeros(shape, dtype=bool)
        return final, not final.any() and s.status != "ok", None
    result = majority_vote(vote_candidates(samples, object_masks, scores), vote, shape=shape)
    return result.mask, result.no_object, result


class Reasoner(Protocol):
    """What a reasoner offers its callers (the CLI, the evaluation, the server, the app), wherever it runs:
    `LocalReasoner` here, `engine.serve.remote.RemoteReasoner` on a `star serve` server."""

    bundle: dict              # the identity of the models behind it (`Bundle.identity()`)
    answer_grammar: bool      # the bundle's recommended decoding
    vote_temperature: float   # ... and voting temperature

    def run(self, image: ImageSource, query: str, n: int = 1, *, sampling: SamplingParams | None = None,
            vote: VoteConfig | None = None, on_event: EventCallback | None = None,
            cancel: CancelToken | None = None) -> Result:
        """Answer `query` about `image` with `n` samples (N = 1: greedy, StAR's direct prediction; N > 1: the
        vote). Args: image, a path, bytes or an RGB uint8 array (H, W, 3); `sampling` overrides the
        bundle's; `on_event` receives the run's events as they happen; `cancel` stops it between steps.
        Returns the Result: the final mask (bool H x W in the original image's pixels), every sample with its
        targets (boxes and points in original pixels), the vote, timings; a stopped run is marked cancelled
        and carries no mask."""
        ...

    def temperature(self, requested: float | None) -> float:
        """The N > 1 samples' temperature: `requested`, else the bundle's recommendation."""
        ...

    def close(self) -> None:
        ...


class LocalReasoner:
    """A loaded policy + segmenter with the bundle's frame and prompt family (satisfies `Reasoner`)."""

    def __init__(self, policy, segmenter, *, frame: str, bundle: dict | None = None, vote: VoteConfig = VoteConfig(),
                 answer_grammar: bool = False, vote_temperature: float = 1.0,
                 mask_guard: MaskGuard = MaskGuard()):
        self.policy = policy
        self.segmenter = segmenter
        self.frame = frame
        self.bundle = bundle or {}
        self.vote_config = vote
        self.answer_grammar = answer_grammar  # the bundle's recommended decoding (PolicySpec.answer_grammar)
        self.vote_temperature = vote_temperature  # ... and voting temperature (PolicySpec.vote_temperature)
        self.mask_guard = mask_guard  # which masks are "nothing found" (engine/honesty.py)

    def grammar(self, requested: bool | None) -> bool:
        """Decode under the answer grammar? What the caller asked for, else what the bundle recommends."""
        return self.answer_grammar if requested is None else bool(requested)

    def track(self, frames, query: str, n: int = 1, *, video_segmenter, key: int = 0,
              sampling: SamplingParams | None = None, reask: bool = True):
        """Follow the answer to `query` on frame `key` through a clip, one result per frame as it is made
        (`engine.track.run.track`). Args: frames, a video file, a folder of frames or an `engine.frames.
        FrameSource`; video_segmenter, a SAM 2 with its memory modules (`engine.segment.torch_backend.
        build_model(config, checkpoint, video=True)`). Yields FrameResult: per track id a bool H x W mask at
        the frame's size and SAM 2's object score; backward from `key` first, then forward."""
        from .frames import FrameSource
        from .track.run import track
        from .track.sam2_video import VideoMemoryTracker

        source = frames if isinstance(frames, FrameSource) else FrameSource(frames)
        tracker = VideoMemoryTracker(video_segmenter, source)
        sampling = sampling or sampling_for(n, constrained=self.answer_grammar, temperature=self.vote_temperature)
        yield from track(self, source, check_query(query), tracker, key=key, n=n, sampling=sampling, reask=reask)

    def temperature(self, requested: float | None) -> float:
        """The N > 1 samples' temperature: what the caller asked for, else what the bundle recommends."""
        return self.vote_temperature if requested is None else float(requested)

    def run(self, image: ImageSource, query: str, n: int = 1, *, sampling: SamplingParams | None = None,
            vote: VoteConfig | None = None, on_event: EventCallback | None = None,
            cancel: CancelToken | None = None) -> Result:
        t_start = time.perf_counter()
        query = check_query(query)
        rgb = load_image(image)
        h, w = rgb.shape[:2]
        emit = on_event or (lambda e: None)
        sampling = sampling or sampling_for(n, constrained=self.answer_grammar, temperature=self.vote_temperature)
        timings = Timings()

        check_mask_memory(n, (w, h))  # one object per sample at least: refused before any decoding
        emit(Event("stage", text="reasoning"))
        completions: list[Completion] = self.policy.sample(
            rgb, query, n, sampling, on_token=lambda i, d: emit(Event("token", i, d)), cancel=cancel)
        pt = self.policy.timings
        for name in ("vision_ms", "prefill_ms", "prefill_tokens", "decode_ms", "decode_tokens"):
            setattr(timings, name, getattr(pt, name))
        cancelled = any(c.finish_reason == "cancelled" for c in completions) or bool(cancel and cancel.cancelled)

        t0 = time.perf_counter()
        samples = []
        for c in completions:
            answer: Answer = parse_answer(c.text, (w, h), self.frame)
            s = SampleResult(c.index, c.text, answer.status, answer.thinking, answer.answer_text, answer.reason,
                             c.finish_reason, list(answer.targets), reasoning_problem=reasoning_problem(answer.thinking))
            samples.append(s)
            emit(Event("sample", c.index, data=s))
        timings.parse_ms = (time.perf_counter() - t0) * 1e3

        object_masks, scores = (None, None) if cancelled else self._segment(rgb, samples, timings, emit, cancel)
        if object_masks is None:
            # Stopped: no segmentation, no vote. The samples keep their text (those cut short say so by their
            # finish_reason), and the result says it was stopped: it is not an answer.
            for s in samples:
                s.mask_rows, s.scores = [], []
            timings.total_ms = (time.perf_counter() - t_start) * 1e3
            return Result(query=query, image_size=(w, h), mask=np.zeros((h, w), dtype=bool), no_object=False,
                          samples=samples, object_masks=np.zeros((0, h, w), dtype=bool), vote=None, timings=timings,
                          bundle=self.bundle, cancelled=True, sampling=sampling)
        notes = drop_unusable(samples, rgb, object_masks, self.mask_guard)
        final, no_object, vote_result = self._decide(samples, object_masks, scores, (h, w), vote, timings)
        if final.any() and full_frame_rows(final[None], self.mask_guard.max_share):
            # e.g. several boxes whose masks together fill the frame
            notes.append(f"the answer's mask covered {final.mean():.0%} of the image and was not used "
                         f"(limit {self.mask_guard.max_share:.0%}): no object found")
            final, no_object = np.zeros_like(final), True
        if vote_result is not None:
            emit(Event("vote", data=vote_result))
        timings.total_ms = (time.perf_counter() - t_start) * 1e3
        return Result(query=query, image_size=(w, h), mask=final, no_object=no_object, samples=samples,
                      object_masks=object_masks, vote=vote_result, timings=timings, bundle=self.bundle,
                      cancelled=cancelled, sampling=sampling, notes=notes)

    def _segment(self, rgb, samples: list[SampleResult], timings: Timings, emit, cancel: CancelToken | None = None):
        """Every target of every sample in batches of SEGMENT_BATCH prompts over one embedding; (masks,
        scores), or (None, None) when `cancel` is set between two steps."""
        h, w = rgb.shape[:2]
        boxes, points = [], []
        for s in samples:
            for t in s.targets:
                s.mask_rows.append(len(boxes))
                boxes.append(t.box)
                points.append(t.point)
        if not boxes:
            return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float32)
        emit(Event("stage", text="segmenting"))
        t0 = time.perf_counter()
        embedding = self.segmenter.embed(rgb)
        timings.sam_encode_ms = (time.perf_counter() - t0) * 1e3
        boxes, points = np.asarray(boxes, np.float32), np.asarray(points, np.float32)
        on_device = votes_on_device(self.segmenter)
        if not on_device:
            check_mask_memory(len(boxes), (w, h), objects=True)
            host_masks = np.empty((len(boxes), h, w), dtype=bool)  # filled in place: no second copy to stack
        parts, scores = [], np.zeros(len(boxes), np.float32)
        t0 = time.perf_counter()
        for start in range(0, len(boxes), SEGMENT_BATCH):
            if cancel is not None and cancel.cancelled:
                return None, None
            end = start + SEGMENT_BATCH
            if on_device:  # the masks stay where SAM made them; the vote runs there (engine/kernels)
                part, scores[start:end] = self.segmenter.device_segment(embedding, boxes[start:end], points[start:end])
            else:
                out = self.segmenter.segment(embedding, boxes[start:end], points[start:end])
                scores[start:end] = out.scores
                # Upsampled one mask at a time: at 6000 x 4000 each takes about a quarter of a second on a
                # CPU, so Stop (and quitting) waits for one mask, not for a batch of them.
                for i in range(len(out)):
                    if cancel is not None and cancel.cancelled:
                        return None, None
                    host_masks[start + i] = out.mask(i)
                    emit(Event("progress", text="segmenting", data=(start + i + 1, len(boxes))))
            if on_device:
                parts.append(part)
                emit(Event("progress", text="segmenting", data=(min(end, len(boxes)), len(boxes))))
        masks = _stack(parts) if on_device else host_masks
        timings.sam_decode_ms = (time.perf_counter() - t0) * 1e3
        if cancel is not None and cancel.cancelled:
            return None, None
        for s in samples:
            s.scores = [float(scores[r]) for r in s.mask_rows]
        emit(Event("masks", data=samples))
        return masks, scores

    def _decide(self, samples, object_masks, scores, shape, vote: VoteConfig | None, timings: Timings):
        t0 = time.perf_counter()
        decision = decide(samples, object_masks, scores, shape, vote or self.vote_config)
        timings.vote_ms = (time.perf_counter() - t0) * 1e3
        timings.vote_backend = "direct" if decision[2] is None else decision[2].backend
        return decision

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close:
            close()


def check_mask_memory(count: int, size: tuple[int, int], *, objects: bool = False) -> None:
    """Refuse, before allocating, `count` full-size masks (one byte a pixel) plus SAM's float32 upsample of
    one, when they exceed the memory this process can still have (engine/memory.py: MemAvailable, and
    what `ulimit -v` leaves)."""
    from .memory import available_memory

    w, h = size
    need = (count + 4) * w * h
    available = available_memory()
    if available is not None and need > available:
        what = f"{count} objects' masks" if objects else f"the masks of {count} samples"
        raise MemoryBudgetError(
            f"{what} at {w}x{h} need {need / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB this "
            "process can have; lower -n (fewer samples) or --max-pixels (a smaller image)")


def _stack(parts: list):
    """One [M, H, W] stack of the segmenter's batches: NumPy on the host, a torch tensor on a GPU."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def bundle_root(bundle=None) -> Path:
    """The bundle folder to use: the one given, else the nano bundle shipped with the package."""
    from .bundle import default_bundle_dir
    from .errors import ModelFileError

    if bundle is not None:
        return Path(bundle)
    root = default_bundle_dir()
    if not (root / "bundle.json").is_file():
        raise ModelFileError(f"no --bundle given and this installation has no bundled nano model ({root}); "
                             "pass --bundle DIR (a folder made by star-export bundle)")
    return root


def load_reasoner(bundle=None, *, device: str = "auto", segmenter_backend: str = "auto", threads: int | None = None,
                  max_samples: int = 32, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, n_ctx: int | None = None,
                  mask_guard: MaskGuard = MaskGuard(), verify: bool | str = True) -> LocalReasoner:
    """A reasoner from a bundle folder (default: the nano bundle shipped with the package).
    mask_guard: which masks are taken as "nothing found" (engine/honesty.py)."""
    from .bundle import load_bundle
    from .devices import resolve_device
    from .errors import ModelFileError
    from .fit import context_positions
    from .policy.llama_backend import LlamaPolicy
    from .segment import load_segmenter

    b = load_bundle(bundle_root(bundle), verify=verify)
    spec = b.manifest.policy
    if spec is None:
        raise ModelFileError(f"bundle {b.root} has no policy; a reasoner needs both halves")
    dev = resolve_device(device)
    policy = LlamaPolicy(b.path(spec.model), b.path(spec.mmproj), family=spec.family, frame=spec.frame,
                         prompt_family=spec.prompt_family, max_samples=max_samples,
                         n_ctx=n_ctx or context_positions(max_samples, max_new_tokens),
                         n_gpu_layers=-1 if dev == "cuda" else 0, threads=threads)
    segmenter = load_segmenter(b.segmenter_files(), segmenter_backend, device=dev, threads=threads)
    return LocalReasoner(policy, segmenter, frame=spec.frame, bundle=b.identity(), answer_grammar=spec.answer_grammar,
                    vote_temperature=spec.vote_temperature, mask_guard=mask_guard)

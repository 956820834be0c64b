"""A predict request's parameters, checked, and the job that runs it on the model's worker."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..policy.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, MAX_SAMPLES
from .worker import Job

# What X-AnyLabeling's remote-server client sends to every model besides the prompt: detector thresholds,
# clicked marks, tracker and task switches, and the class filter whenever the user has set one. Accepted
# and ignored: a text-prompted reasoner has no use for them, and its labels are free text that a filter of
# a detector's class names would empty (the client then shows no shape and no message).
XANYLABELING_IGNORED = {"conf_threshold", "iou_threshold", "marks", "reset_tracker", "current_task", "filter_classes"}


class RequestError(Exception):
    """A request the server refuses, with the protocol's error code."""

    def __init__(self, code: str, message: str, status: int = 200):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class PredictParams:
    """`params` of POST /v1/predict. Defaults are the model's (`/v1/models`)."""
    text_prompt: str
    n: int = 1
    temperature: float | None = None   # None: the bundle's recommended voting temperature
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    show_masks: bool = True
    show_boxes: bool = False
    show_points: bool = False
    epsilon: float = 0.0               # polygon simplification tolerance, pixels (0: the exact outline)
    epsilon_factor: float | None = None  # X-AnyLabeling's "mask fineness": tolerance as a share of each outline's length
    return_result: bool = False        # add the whole result (engine.results.result_to_dict) as data.star.result

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in fields(cls) if f.name != "text_prompt"}

    @classmethod
    def parse(cls, raw: dict, defaults: dict, *, max_samples: int = MAX_SAMPLES) -> PredictParams:
        """The request's params over the model's defaults, each checked; `max_samples`: the loaded model's
        limit on n (its context is sized for that many samples), so a larger n is refused here."""
        if not isinstance(raw, dict):
            raise RequestError("INVALID_REQUEST", "params must be a JSON object")
        values = {**cls.defaults(), **{k: v for k, v in defaults.items() if k in cls.defaults()}}
        unknown = sorted(set(raw) - set(values) - {"text_prompt"} - XANYLABELING_IGNORED)
        if unknown:
            raise RequestError("INVALID_REQUEST", f"unknown params {unknown}; known: text_prompt, {', '.join(values)}")
        query = raw.get("text_prompt")
        if not isinstance(query, str) or not query.strip():
            raise RequestError("INVALID_REQUEST", "params.text_prompt (the query) is required")
        values.update({k: v for k, v in raw.items() if k in values})
        checks = {
            "n": lambda v: _int(v, 1, max_samples, "n"),
            "seed": lambda v: _int(v, 0, 2**31 - 1, "seed"),
            "max_new_tokens": lambda v: _int(v, 1, MAX_NEW_TOKENS, "max_new_tokens"),
            "temperature": lambda v: None if v is None else _float(v, 0.0, 2.0, "temperature"),
            "epsilon": lambda v: _float(v, 0.0, 100.0, "epsilon"),
            "epsilon_factor": lambda v: None if v is None else _float(v, 0.0, 1.0, "epsilon_factor"),
            "show_masks": lambda v: _bool(v, "show_masks"),
            "show_boxes": lambda v: _bool(v, "show_boxes"),
            "show_points": lambda v: _bool(v, "show_points"),
            "return_result": lambda v: _bool(v, "return_result"),
        }
        return cls(text_prompt=query, **{k: checks[k](v) for k, v in values.items()})


def _int(v, low: int, high: int, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise RequestError("INVALID_REQUEST", f"params.{name} must be a whole number in [{low}, {high}], got {v!r}")
    return v


def _float(v, low: float, high: float, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
        raise RequestError("INVALID_REQUEST", f"params.{name} must be a number in [{low}, {high}], got {v!r}")
    return float(v)


def _bool(v, name: str) -> bool:
    if not isinstance(v, bool):
        raise RequestError("INVALID_REQUEST", f"params.{name} must be true or false, got {v!r}")
    return v


def result_payload(result, params: PredictParams) -> dict:
    """The protocol's `data`: labelme-like shapes and the reasoning trace of sample 0 as `description`,
    plus what a StAR-aware client can use (`star`: the answer's facts and timings)."""
    from ..annotations import result_shapes

    shapes = result_shapes(result, show_masks=params.show_masks, show_boxes=params.show_boxes,
                           show_points=params.show_points, epsilon=params.epsilon,
                           epsilon_factor=params.epsilon_factor)
    first = result.samples[0] if result.samples else None
    trace = first.shown_reasoning if first else ""  # or one sentence saying why the reasoning is not shown
    t = result.timings
    extra = {}
    if params.return_result:
        from ..results import result_to_dict

        whole = result_to_dict(result)
        whole["bundle"] = {k: v for k, v in whole.get("bundle", {}).items() if k != "root"}  # no local paths
        extra["result"] = whole
    return {"shapes": shapes, "description": trace or "",
            "star": {"query": result.query, "n": len(result.samples), "no_object": result.no_object,
                     "notes": list(result.notes),
                     "image_size": list(result.image_size), "mask_pixels": int(result.mask.sum()),
                     "samples": [{"status": s.status, "text": s.text} for s in result.samples],
                     "timings_ms": {"policy": t.vision_ms + t.prefill_ms + t.decode_ms,
                                    "segment": t.sam_encode_ms + t.sam_decode_ms, "vote": t.vote_ms,
                                    "total": t.total_ms}, **extra}}


def build_job(image: bytes, params: PredictParams, settings) -> Job:
    """The work of one request, run on the model's worker thread: decode the image (the engine's pixel
    limit), reason, segment, vote, and turn the result into the protocol's data."""
    def run(reasoner, emit, cancel):
        from ..errors import ContextOverflowError, ImageError, InvalidPromptError, InvalidQueryError
        from ..images import load_image
        from ..pipeline import check_query, sampling_for

        try:
            rgb = load_image(image, max_pixels=settings.max_pixels)
        except ImageError as exc:
            raise RequestError("INVALID_IMAGE", str(exc)) from None
        try:
            query = check_query(params.text_prompt)
            sampling = sampling_for(params.n, seed=params.seed, max_new_tokens=params.max_new_tokens,
                                    constrained=reasoner.grammar(None),
                                    temperature=reasoner.temperature(params.temperature))
            result = reasoner.run(rgb, query, params.n, sampling=sampling, on_event=emit, cancel=cancel)
        except (InvalidQueryError, InvalidPromptError, ContextOverflowError) as exc:
            raise RequestError("INVALID_REQUEST", str(exc)) from None
        if result.cancelled:
            raise RequestError("INFERENCE_ERROR", "cancelled")
        return result_payload(result, params)

    return Job(run, timeout_s=settings.timeout_s)

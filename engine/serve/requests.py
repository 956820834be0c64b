"""A predict request's parameters, checked, and the job that runs it on the model's worker."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

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


class PredictParams(BaseModel):
    """`params` of POST /v1/predict, checked by Pydantic in strict mode (a string "8" is not a number, 1 is
    not true). Defaults are the model's (`/v1/models`); a refused value is the protocol's INVALID_REQUEST in
    its 200 envelope (X-AnyLabeling reads only that), never FastAPI's 422."""
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    text_prompt: str = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_SAMPLES)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None: the bundle's recommended voting temperature
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)
    show_masks: bool = True
    show_boxes: bool = False
    show_points: bool = False
    epsilon: float = Field(0.0, ge=0.0, le=100.0)  # polygon simplification tolerance, pixels (0: the exact outline)
    epsilon_factor: float | None = Field(None, ge=0.0, le=1.0)  # X-AnyLabeling's "mask fineness": share of each outline's length
    return_result: bool = False        # add the whole result (engine.results.result_to_dict) as data.star.result

    @field_validator("text_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is blank")
        return value

    @field_validator("n")
    @classmethod
    def _within_model(cls, value: int, info: ValidationInfo) -> int:
        limit = (info.context or {}).get("max_samples", MAX_SAMPLES)
        if value > limit:  # the loaded model's context is sized for that many samples
            raise ValueError(f"the loaded model takes at most {limit} samples")
        return value

    @classmethod
    def defaults(cls) -> dict:
        return {name: f.default for name, f in cls.model_fields.items() if name != "text_prompt"}

    @classmethod
    def parse(cls, raw: dict, defaults: dict, *, max_samples: int = MAX_SAMPLES) -> PredictParams:
        """The request's params over the model's defaults, each checked; `max_samples`: the loaded model's
        limit on n, so a larger n is refused here rather than inside the run."""
        if not isinstance(raw, dict):
            raise RequestError("INVALID_REQUEST", "params must be a JSON object")
        known = cls.defaults()
        values = {k: v for k, v in defaults.items() if k in known}
        values.update({k: v for k, v in raw.items() if k not in XANYLABELING_IGNORED})
        if not isinstance(raw.get("text_prompt"), str) or not raw["text_prompt"].strip():
            raise RequestError("INVALID_REQUEST", "params.text_prompt (the query) is required")
        try:
            return cls.model_validate(values, context={"max_samples": max_samples})
        except ValidationError as exc:
            raise RequestError("INVALID_REQUEST", _first_problem(exc, known)) from None


def _first_problem(exc: ValidationError, known: dict) -> str:
    """One line for the first refused param, in the request's own terms."""
    problem = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"unknown params [{name!r}]; known: text_prompt, {', '.join(known)}"
    message = problem["msg"].removeprefix("Value error, ")
    return f"params.{name}: {message}, got {problem['input']!r}"


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

"""The exact StAR / VisionReasoner protocol: prompts, chat text, answer frames and answer parsing.

Released checkpoints were trained on these strings character for character (docs/protocol.md
§2-§4); change nothing here without re-reading the reference.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidQueryError

SYSTEM_PROMPT = "You are a helpful assistant."

_STAR_EXAMPLE = (
    '[{"label": "chair", "bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
    '{"label": "train track", "bbox_2d": [225,296,706,786], "point_2d": [302,410]}]'
)
_VR_EXAMPLE = (
    '[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
    '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]'
)

_STAR_TEMPLATE = (
    'Please find "{Question}" with bbox(es) and point(s). Also provide a short label for each object. '
    'First, understand and summarize what the query \u2014"{Question}"\u2014 is likely referring to '
    "(which object or concept). Then apply this to the image and find the matched target object(s). "
    "Return ALL matching instances; if there are no matches, return an empty list (<answer>[]</answer>). "
    "double-check none are missed. Output the thinking process in <think> </think> and final answer in "
    "<answer> </answer> tags. Output the bbox(es) and point(s) inside the interested object(s), along with "
    "a short label, in JSON format. i.e., <think> thinking process (step-by-step reasoning) here </think> "
    "<answer>{Answer}</answer>"
)
_STAR_NO_MATCH_CLAUSE = (
    "Return ALL matching instances; if there are no matches, return an empty list (<answer>[]</answer>). "
    "double-check none are missed."
)
_STAR_STAGE2_CLAUSE = "Return ALL matching instances; double-check none are missed."
_STAR_UNDERSTAND = (
    'First, understand and summarize what the query \u2014"{Question}"\u2014 is likely referring to '
    "(which object or concept). Then apply this to the image and find the matched target object(s)."
)
_STAR_STAGE1_COMPARE = "Compare the difference between object(s) and find the most closely matched object(s)."

# VisionReasoner's text has no spaces between sentences; that is what the model saw in training.
_VR_TEMPLATE = (
    'Please find "{Question}" with bboxs and points.'
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    "i.e., <think> thinking process here </think><answer>{Answer}</answer>"
)

_STAR_STAGE2_TEMPLATE = _STAR_TEMPLATE.replace(_STAR_NO_MATCH_CLAUSE, _STAR_STAGE2_CLAUSE)
_STAR_STAGE1_TEMPLATE = _STAR_STAGE2_TEMPLATE.replace(_STAR_UNDERSTAND, _STAR_STAGE1_COMPARE)

_TEMPLATES = {
    "star": (_STAR_TEMPLATE, _STAR_EXAMPLE),
    "star-stage1": (_STAR_STAGE1_TEMPLATE, _STAR_EXAMPLE),
    "star-stage2": (_STAR_STAGE2_TEMPLATE, _STAR_EXAMPLE),
    "visionreasoner": (_VR_TEMPLATE, _VR_EXAMPLE),
}
PROMPT_FAMILIES: tuple[str, ...] = tuple(_TEMPLATES)

# Qwen2.5-VL / Qwen3-VL ChatML: one image is this run of special tokens in the user turn.
QWEN_IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


def normalize_query(query: str, *, training: bool = False) -> str:
    """Lower-case and strip the characters the reference strips at both ends.

    Evaluation strips `."?!`; the training code strips only `.`.
    """
    if not isinstance(query, str):
        raise InvalidQueryError(f"The query must be text, got {type(query).__name__}.")
    question = query.lower().strip("." if training else '."?!')
    if not question.strip():
        raise InvalidQueryError("The query is empty: type what you are looking for, e.g. 'the thing that keeps food cold'.")
    return question


def build_prompt(query: str, family: str = "star", *, training: bool = False) -> str:
    """The exact user text for `query` in a prompt family (docs/protocol.md §3)."""
    try:
        template, example = _TEMPLATES[family]
    except KeyError:
        raise ValueError(f"Unknown prompt family {family!r}; choose one of {', '.join(PROMPT_FAMILIES)}.") from None
    question = normalize_query(query, training=training)
    # str.replace, not str.format: the template holds literal JSON braces.
    return template.replace("{Question}", question).replace("{Answer}", example)


def build_messages(query: str, family: str = "star", image: Any = None) -> list[dict]:
    """Chat messages in the Hugging Face format: system, then the user's image followed by the text."""
    image_part: dict[str, Any] = {"type": "image"}
    if image is not None:
        image_part["image"] = image
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [image_part, {"type": "text", "text": build_prompt(query, family)}]},
    ]


def chatml_prompt(user_text: str, image_placeholder: str = QWEN_IMAGE_PLACEHOLDER) -> str:
    """The full ChatML text up to where the assistant starts (the newline after `assistant` matters)."""
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{image_placeholder}{user_text}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# --------------------------------------------------------------------------------------------
# Answer frames
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerFrame:
    """How the model's coordinates relate to the original image.

    `pixels`: the image was resized (aspect not kept) to size x size; coordinates are pixels there.
    `grid`: Qwen3-VL's 0..1000 grid, auto-detected per answer as StAR does.
    """

    name: str
    kind: Literal["pixels", "grid"]
    size: int = 0  # the square model input for `pixels` frames

    @property
    def model_input_size(self) -> tuple[int, int] | None:
        """(width, height) the image must be resized to before the model, or None (native size)."""
        return (self.size, self.size) if self.kind == "pixels" else None


_FRAME_ALIASES = {"qwen2.5-840": 840}


def get_frame(name: str | AnswerFrame) -> AnswerFrame:
    """Frames: `qwen2.5-840`, `qwen3-1000`, and `pixels-<S>` (a square model input of S pixels)."""
    if isinstance(name, AnswerFrame):
        return name
    if name in _FRAME_ALIASES:
        return AnswerFrame(name, "pixels", _FRAME_ALIASES[name])
    if name == "qwen3-1000":
        return AnswerFrame(name, "grid")
    m = re.fullmatch(r"pixels-(\d+)", str(name))
    if m and int(m.group(1)) > 0:
        return AnswerFrame(name, "pixels", int(m.group(1)))
    raise ValueError(f"Unknown answer frame {name!r}; use 'qwen2.5-840', 'qwen3-1000' or 'pixels-<S>'.")


def _check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)
    except Exception:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return width, height


def pixel_frame_factors(frame: AnswerFrame, image_size: tuple[int, int]) -> tuple[float, float]:
    """Model-frame pixel -> original pixel scale factors, computed the way the reference does."""
    width, height = _check_image_size(image_size)
    return width / frame.size, height / frame.size


def _to_original_pixel(value: float, factor: float) -> int:
    # Reference: int(x * (W / 840) + 0.5): factor first, truncation toward zero, no clamping.
    return int(value * factor + 0.5)


def _qwen3_grid(values: list[float]) -> int | None:
    """StAR's auto-detection: 1 -> [0,1] normalised; 999 -> 0..1000 grid; None -> already pixels."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    vmax = max(finite, default=0.0)
    if vmax <= 1.2:
        return 1
    if vmax <= 1000.5:
        return 999
    return None


def _qwen3_to_pixel(value: float, grid: int | None, size: int) -> int:
    if grid is None:
        v = round(value)
    elif grid == 1:
        v = round(value * (size - 1))
    else:
        v = round(value * (size - 1) / 999.0)
    return max(0, min(size - 1, int(v)))


def _qwen3_box(box: list[float], grid: int | None, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1 = _qwen3_to_pixel(box[0], grid, width), _qwen3_to_pixel(box[1], grid, height)
    x2, y2 = _qwen3_to_pixel(box[2], grid, width), _qwen3_to_pixel(box[3], grid, height)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    # StAR widens a degenerate box by one pixel (inside the image) so SAM gets a real box.
    if x2 <= x1:
        x2 = min(width - 1, x1 + 1)
        if x2 <= x1 and width >= 2:
            x1, x2 = min(x1, width - 2), width - 1
    if y2 <= y1:
        y2 = min(height - 1, y1 + 1)
        if y2 <= y1 and height >= 2:
            y1, y2 = min(y1, height - 2), height - 1
    return x1, y1, x2, y2


def original_to_frame(box_or_point: tuple[float, ...], image_size: tuple[int, int], frame: str | AnswerFrame = "qwen2.5-840") -> tuple[float, ...]:
    """The inverse mapping (original pixels -> model frame), e.g. to write training targets."""
    frame = get_frame(frame)
    width, height = _check_image_size(image_size)
    if frame.kind == "pixels":
        sx, sy = frame.size / width, frame.size / height
    else:
        sx, sy = 999.0 / max(width - 1, 1), 999.0 / max(height - 1, 1)
    return tuple(v * (sx if i % 2 == 0 else sy) for i, v in enumerate(box_or_point))


def resize_for_model(image, frame: str | AnswerFrame = "qwen2.5-840"):
    """The policy's input image: a PIL image resized to the frame (bilinear, aspect NOT kept)."""
    from PIL import Image

    frame = get_frame(frame)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    size = frame.model_input_size
    if size is None or image.size == size:
        return image
    return image.resize(size, Image.BILINEAR)


def format_answer(objects: list[dict]) -> str:
    """An answer list written like the prompt's own example (`{"label": "chair", "bbox_2d": [10,100,200,210],
    "point_2d": [30,110]}`): what a model trained on that example emits, so the fewest surprises."""
    def value(v):
        return "[" + ",".join(str(int(x)) for x in v) + "]" if isinstance(v, (list, tuple)) else json.dumps(v)
    return "[" + ", ".join("{" + ", ".join(f"{json.dumps(k)}: {value(v)}" for k, v in o.items()) + "}" for o in objects) + "]"


# --------------------------------------------------------------------------------------------
# Answer parsing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One object of an answer, in ORIGINAL image pixels."""

    box: tuple[int, int, int, int]
    point: tuple[int, int]
    label: str | None = None


@dataclass(frozen=True)
class Answer:
    """A parsed completion.

    status: "ok" (targets found), "empty" (the model says there is no object, or gave no answer
    tag: a valid no-object vote), "failed" (unparseable: abstains from voting).
    """

    status: Literal["ok", "empty", "failed"]
    targets: tuple[Target, ...] = ()
    thinking: str = ""
    answer_text: str | None = None  # what stood between the answer tags, if anything
    reason: str = ""  # why the status is what it is, for people reading a failure

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_THINK_RE = re.compile(r"<think>\s*(.*?)\s*</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_ANSWER_OPEN_RE = re.compile(r"<answer>\s*", re.DOTALL)

# StAR's repairs, tried in this order and only when json.loads fails (docs/protocol.md §4).
_REPAIRS: tuple[tuple[re.Pattern, Any], ...] = (
    # "point_2d": [x, y}} -> [x, y]}   (the first } was meant to close the array)
    (re.compile(r'("point_2d"\s*:\s*\[[^\]]*?)\}\s*(\})'), r"\1]\2"),
    # "point_2d": [x, y}] -> [x, y]}]  (the array's ] is missing)
    (re.compile(r'("point_2d"\s*:\s*\[[^\]]*?)\}\s*(])'), r"\1]}\2"),
    # one } too many before the list closes
    (re.compile(r"}}(\s*])"), r"}\1"),
    # quotes inside the coordinate arrays
    (re.compile(r'("bbox_2d"\s*:\s*\[)([^\]]*)(\])'), lambda m: m.group(1) + m.group(2).replace('"', "") + m.group(3)),
    (re.compile(r'("point_2d"\s*:\s*\[)([^\]]*)(\])'), lambda m: m.group(1) + m.group(2).replace('"', "") + m.group(3)),
    # a stray quote right after an array
    (re.compile(r'("bbox_2d"\s*:\s*\[[^\]]*\])"'), r"\1"),
    (re.compile(r'("point_2d"\s*:\s*\[[^\]]*\])"'), r"\1"),
)


def extract_thinking(text: str) -> str:
    """The reasoning: inside <think> tags, else (Qwen3-VL style) everything before <answer>."""
    m = _THINK_RE.search(text)
    if m and m.group(1):
        return m.group(1)
    opening = _ANSWER_OPEN_RE.search(text)
    return text[: opening.start()].strip() if opening else ""


def repair_json(raw: str) -> str:
    """Apply StAR's repairs in order (only meaningful after json.loads failed)."""
    fixed = raw
    for pattern, replacement in _REPAIRS:
        fixed = pattern.sub(replacement, fixed)
    return fixed


def _load_answer_json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return json.loads(repair_json(raw))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _numbers(value: Any, count: int) -> list[float] | None:
    if isinstance(value, list) and len(value) == count and all(_is_number(v) for v in value):
        return [v for v in value]
    return None


@dataclass(frozen=True)
class RawObject:
    """An answer object as the model wrote it (model-frame coordinates)."""

    box: list[float]
    point: list[float]
    label: str | None = None


@dataclass
class RawAnswer:
    status: Literal["ok", "empty", "failed"]
    objects: list[RawObject] = field(default_factory=list)
    thinking: str = ""
    answer_text: str | None = None
    reason: str = ""


def parse_raw(text: str) -> RawAnswer:
    """Tags and JSON -> objects in the model's own frame. Never raises."""
    if not isinstance(text, str):
        return RawAnswer("failed", reason=f"completion is not text ({type(text).__name__})")
    thinking = extract_thinking(text)
    m = _ANSWER_RE.search(text)
    if m is None:
        # A completion cut off by the token limit lands here: StAR counts it as a no-object vote.
        return RawAnswer("empty", thinking=thinking, reason="no <answer>...</answer> in the completion")
    raw = m.group(1)
    if raw == "":
        return RawAnswer("empty", thinking=thinking, answer_text=raw, reason="empty answer")
    try:
        data = _load_answer_json(raw)
    except (ValueError, RecursionError) as exc:
        return RawAnswer("failed", thinking=thinking, answer_text=raw, reason=f"answer is not JSON, even after repairs ({exc})")
    if isinstance(data, list) and (len(data) == 0 or (len(data) == 1 and isinstance(data[0], (dict, list, str)) and len(data[0]) == 0)):
        return RawAnswer("empty", thinking=thinking, answer_text=raw, reason="the model answered that there is no such object")
    if not isinstance(data, list):
        return RawAnswer("failed", thinking=thinking, answer_text=raw, reason="answer is not a JSON list of objects")
    objects = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            return RawAnswer("failed", thinking=thinking, answer_text=raw, reason=f"object {i} is not a JSON object")
        box, point = _numbers(item.get("bbox_2d"), 4), _numbers(item.get("point_2d"), 2)
        if box is None or point is None:
            missing = "bbox_2d" if box is None else "point_2d"
            return RawAnswer("failed", thinking=thinking, answer_text=raw, reason=f"object {i} has no usable {missing}")
        if not all(_finite(v) for v in box + point):
            return RawAnswer("failed", thinking=thinking, answer_text=raw, reason=f"object {i} has a non-finite coordinate")
        label = item.get("label")
        objects.append(RawObject(box, point, None if label is None else str(label)))
    return RawAnswer("ok", objects, thinking=thinking, answer_text=raw)


def _convert_objects(objects: list[RawObject], image_size: tuple[int, int], frame: AnswerFrame) -> list[Target]:
    width, height = _check_image_size(image_size)
    if frame.kind == "pixels":
        fx, fy = pixel_frame_factors(frame, (width, height))
        return [
            Target(
                tuple(_to_original_pixel(v, fx if i % 2 == 0 else fy) for i, v in enumerate(o.box)),
                (_to_original_pixel(o.point[0], fx), _to_original_pixel(o.point[1], fy)),
                o.label,
            )
            for o in objects
        ]
    # The grid is detected once per answer, over every box and point value in it.
    grid = _qwen3_grid([float(v) for o in objects for v in o.box + o.point])
    return [
        Target(
            _qwen3_box(o.box, grid, width, height),
            (_qwen3_to_pixel(o.point[0], grid, width), _qwen3_to_pixel(o.point[1], grid, height)),
            o.label,
        )
        for o in objects
    ]


def grid_answer_to_pixels(boxes, points, image_size: tuple[int, int]) -> tuple[list, list]:
    """One answer's Qwen3-VL grid boxes [K, 4] and points [K, 2] -> pixels of an image of `image_size`
    (width, height), with the same per-answer grid detection and rounding as `parse_answer` (training
    rewards use it, so a reward sees exactly the pixels the engine would prompt SAM with)."""
    width, height = _check_image_size(image_size)
    grid = _qwen3_grid([float(v) for row in list(boxes) + list(points) for v in row])
    return ([list(_qwen3_box([float(v) for v in b], grid, width, height)) for b in boxes],
            [[_qwen3_to_pixel(float(p[0]), grid, width), _qwen3_to_pixel(float(p[1]), grid, height)] for p in points])


def parse_answer(text: str, image_size: tuple[int, int], frame: str | AnswerFrame = "qwen2.5-840") -> Answer:
    """Parse a completion into targets in ORIGINAL pixels. Never raises on any text.

    Args:
        text: the completion as the policy wrote it (reasoning, then the answer's JSON list of objects).
        image_size: (width, height) of the original image.
        frame: the answer frame the policy answers in: its coordinates are pixels of the resized image the
            model saw ("qwen2.5-840", "pixels-<S>") or a 0..1000 grid ("qwen3-1000").
    Returns:
        Answer: status "ok" with the targets (box x1, y1, x2, y2 and point x, y, mapped back to original
        pixels and clipped to the image; label), "empty" (a valid "no object" vote), or "failed" with the
        reason (the sample abstains from the vote).
    """
    frame = get_frame(frame)
    _check_image_size(image_size)
    raw = parse_raw(text)
    if raw.status != "ok":
        return Answer(raw.status, (), raw.thinking, raw.answer_text, raw.reason)
    try:
        targets = _convert_objects(raw.objects, image_size, frame)
    except (OverflowError, ValueError) as exc:  # e.g. 1e308 * factor
        return Answer("failed", (), raw.thinking, raw.answer_text, f"coordinates cannot be converted ({exc})")
    return Answer("ok", tuple(targets), raw.thinking, raw.answer_text)

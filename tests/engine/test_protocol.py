"""engine.protocol against the verbatim strings of docs/protocol.md and hand-computed conversions."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidQueryError
from engine.protocol import (
    build_messages,
    build_prompt,
    chatml_prompt,
    get_frame,
    original_to_frame,
    parse_answer,
    resize_for_model,
)

# Typed out by hand from the protocol (docs/protocol.md §3; the em-dashes are U+2014).
STAR_EXPECTED = (
    'Please find "what keeps food cold" with bbox(es) and point(s). Also provide a short label for each object. '
    "First, understand and summarize what the query \u2014\"what keeps food cold\"\u2014 is likely referring to (which object or concept). "
    "Then apply this to the image and find the matched target object(s). Return ALL matching instances; if there are no matches, "
    "return an empty list (<answer>[]</answer>). double-check none are missed. Output the thinking process in <think> </think> and "
    "final answer in <answer> </answer> tags. Output the bbox(es) and point(s) inside the interested object(s), along with a short "
    "label, in JSON format. i.e., <think> thinking process (step-by-step reasoning) here </think> <answer>"
    '[{"label": "chair", "bbox_2d": [10,100,200,210], "point_2d": [30,110]}, {"label": "train track", "bbox_2d": [225,296,706,786], "point_2d": [302,410]}]'
    "</answer>"
)
VR_EXPECTED = (
    'Please find "the red cup" with bboxs and points.Compare the difference between object(s) and find the most closely matched '
    "object(s).Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.Output the bbox(es) and "
    "point(s) inside the interested object(s) in JSON format.i.e., <think> thinking process here </think><answer>"
    '[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, {"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]</answer>'
)


def test_star_prompt_verbatim():
    assert build_prompt('"What keeps FOOD cold?"') == STAR_EXPECTED
    assert build_prompt("What keeps food cold?", "star") == STAR_EXPECTED


def test_visionreasoner_prompt_verbatim():
    assert build_prompt("The red cup.", "visionreasoner") == VR_EXPECTED


def test_stage_variants_differ_only_where_stated():
    stage2 = build_prompt("what keeps food cold", "star-stage2")
    assert stage2 == STAR_EXPECTED.replace(
        "Return ALL matching instances; if there are no matches, return an empty list (<answer>[]</answer>). double-check none are missed.",
        "Return ALL matching instances; double-check none are missed.",
    )
    stage1 = build_prompt("what keeps food cold", "star-stage1")
    assert stage1 == stage2.replace(
        "First, understand and summarize what the query \u2014\"what keeps food cold\"\u2014 is likely referring to (which object or concept). "
        "Then apply this to the image and find the matched target object(s).",
        "Compare the difference between object(s) and find the most closely matched object(s).",
    )


def test_prompts_match_the_protocol_document():
    """docs/protocol.md is the project's record of the verbatim prompts: the code and it agree."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    text = doc.read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(.*?)\n```", text, re.S)
    examples = re.findall(r"`\{Answer\}` = `(.*?)`\n", text)
    assert len(blocks) >= 2 and len(examples) >= 2
    q = "a query"
    assert build_prompt(q, "star") == blocks[0].replace("{Question}", q).replace("{Answer}", examples[0])
    assert build_prompt(q, "visionreasoner") == blocks[1].replace("{Question}", q).replace("{Answer}", examples[1])


def test_query_normalisation():
    # Only the characters ."?! are stripped, only at the ends; training strips only '.'.
    assert '"it\'s the one"' in build_prompt("It's the ONE!?")
    assert '"what is it?"' in build_prompt("What is it?.", training=True)
    with pytest.raises(InvalidQueryError):
        build_prompt("  ")
    with pytest.raises(InvalidQueryError):
        build_prompt("?!.")
    with pytest.raises(ValueError):
        build_prompt("x", "nope")


def test_messages_and_chatml():
    msgs = build_messages("the cup")
    assert msgs[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert msgs[1]["content"][0]["type"] == "image" and msgs[1]["content"][1]["text"] == build_prompt("the cup")
    text = chatml_prompt("hello")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>hello<|im_end|>\n<|im_start|>assistant\n"
    )


def _answer(objs, think="because"):
    return f"<think> {think} </think> <answer>{json.dumps(objs)}</answer>"


def test_qwen25_conversion_rounding_by_hand():
    # W=1000, H=500: factors 1000/840 and 500/840. int(x * f + 0.5).
    text = _answer([{"label": "cup", "bbox_2d": [84, 42, 420, 841], "point_2d": [100.5, 0]}])
    a = parse_answer(text, (1000, 500))
    assert a.status == "ok" and a.thinking == "because"
    t = a.targets[0]
    assert t.box == (100, 25, 500, 501)  # 84*1000/840 = 100.0; 42*500/840 = 25.0; 841*500/840 = 500.595 -> 501
    assert t.point == (120, 0)  # 100.5 * 1.190476 = 119.64 -> 120
    assert t.label == "cup"


def test_half_pixel_boundaries_follow_int_plus_half():
    # 840 -> 420 halves every coordinate: 1 * 0.5 + 0.5 = 1.0 -> 1; 3 -> 2.0 -> 2 (not banker's rounding)
    a = parse_answer(_answer([{"bbox_2d": [1, 3, 5, 7], "point_2d": [1, 3]}]), (420, 420))
    assert a.targets[0].box == (1, 2, 3, 4) and a.targets[0].point == (1, 2)


def test_qwen3_grid_detection_by_hand():
    # 0..1000 grid, W=101, H=51: v * (size - 1) / 999, rounded, clamped.
    a = parse_answer(_answer([{"bbox_2d": [0, 0, 999, 1000], "point_2d": [500, 499.5]}]), (101, 51), "qwen3-1000")
    assert a.targets[0].box == (0, 0, 100, 50)
    assert a.targets[0].point == (50, 25)  # 500*100/999 = 50.05 -> 50; 499.5*50/999 = 25.0 -> 25
    # [0,1] normalised values
    b = parse_answer(_answer([{"bbox_2d": [0.1, 0.2, 0.5, 1.0], "point_2d": [0.3, 0.4]}]), (101, 51), "qwen3-1000")
    assert b.targets[0].box == (10, 10, 50, 50) and b.targets[0].point == (30, 20)
    # above 1000.5: already pixels; reversed and degenerate boxes are ordered and widened
    c = parse_answer(_answer([{"bbox_2d": [1500, 30, 1200, 30], "point_2d": [1300, 20]}]), (2000, 100), "qwen3-1000")
    assert c.targets[0].box == (1200, 30, 1500, 31) and c.targets[0].point == (1300, 20)


def test_outcomes():
    size = (840, 840)
    assert parse_answer("<think>cut off by the token limit", size).status == "empty"
    assert parse_answer("<answer>[]</answer>", size).status == "empty"
    assert parse_answer("<answer>[{}]</answer>", size).status == "empty"
    assert parse_answer("<answer>  </answer>", size).status == "empty"
    assert parse_answer("<answer>[{'bbox_2d': [1,2,3,4]}]</answer>", size).status == "failed"
    assert parse_answer('<answer>[{"bbox_2d": [1,2,3,4]}]</answer>', size).status == "failed"  # no point
    assert parse_answer('<answer>[{"bbox_2d": [1,2,3], "point_2d": [1,2]}]</answer>', size).status == "failed"
    assert parse_answer('<answer>[{"bbox_2d": [1,2,3,4], "point_2d": [1,2]}, {}]</answer>', size).status == "failed"
    assert parse_answer('<answer>{"bbox_2d": [1,2,3,4], "point_2d": [1,2]}</answer>', size).status == "failed"
    assert parse_answer('<answer>[{"bbox_2d": [1,2,3,NaN], "point_2d": [1,2]}]</answer>', size).status == "failed"
    ok = parse_answer('<answer>[{"bbox_2d": [1,2,3,4], "point_2d": [1,2]}]</answer>', size)
    assert ok.status == "ok" and ok.targets[0].label is None and ok.targets[0].box == (1, 2, 3, 4)


def test_first_answer_and_first_think_are_used():
    text = "<think>a</think><answer>[]</answer> <think>b</think><answer>[{\"bbox_2d\": [1,2,3,4], \"point_2d\": [1,2]}]</answer>"
    a = parse_answer(text, (840, 840))
    assert a.status == "empty" and a.thinking == "a"


def test_thinking_without_tags_is_the_text_before_the_answer():
    a = parse_answer("The fridge is on the left.\n<answer>[]</answer>", (840, 840))
    assert a.thinking == "The fridge is on the left."


@pytest.mark.parametrize(
    "broken, box, point",
    [
        ('[{"label": "a", "bbox_2d": [1,2,3,4], "point_2d": [5,6}}]', (1, 2, 3, 4), (5, 6)),
        ('[{"label": "a", "bbox_2d": [1,2,3,4], "point_2d": [5,6}]', (1, 2, 3, 4), (5, 6)),
        ('[{"label": "a", "bbox_2d": [1,2,3,4], "point_2d": [5,6]}}]', (1, 2, 3, 4), (5, 6)),
        ('[{"label": "a", "bbox_2d": ["1","2",3,"4"], "point_2d": [5,"6"]}]', None, None),  # valid JSON: no repair
        ('[{"label": "a", "bbox_2d": ["1,2,3,4"], "point_2d": ["5,6"]}', None, None),  # unbalanced: stays broken
        ('[{"label": "a", "bbox_2d": [1,"2,3,4"]", "point_2d": [5,6]}]', (1, 2, 3, 4), (5, 6)),
        ('[{"label": "a", "bbox_2d": [1,2,3,4]", "point_2d": [5,6]"}]', (1, 2, 3, 4), (5, 6)),
    ],
)
def test_repairs(broken, box, point):
    a = parse_answer(f"<answer>{broken}</answer>", (840, 840))
    if box is None:
        assert a.status == "failed"
    else:
        assert a.status == "ok", a.reason
        assert a.targets[0].box == box and a.targets[0].point == point


def test_frames():
    assert get_frame("qwen2.5-840").model_input_size == (840, 840)
    assert get_frame("qwen3-1000").model_input_size is None
    assert get_frame("pixels-112").size == 112
    with pytest.raises(ValueError):
        get_frame("pixels-0")
    # The inverse mapping round-trips through the parser's rounding.
    box = original_to_frame((100, 25, 500, 500), (1000, 500))
    assert box == pytest.approx((84.0, 42.0, 420.0, 840.0))


def test_resize_for_model_ignores_aspect():
    import numpy as np

    img = resize_for_model(np.zeros((30, 70, 3), np.uint8), "qwen2.5-840")
    assert img.size == (840, 840) and img.mode == "RGB"


_json_fragments = st.sampled_from(
    ['<answer>', '</answer>', '<think>', '</think>', '[', ']', '{', '}', '"bbox_2d"', '"point_2d"', '"label"', ':', ',', '"', '}}', '}]',
     '1e400', '-3', '0.5', 'NaN', 'null', '[[[[', '99999999999999999999999999', ' ', '\n', 'x']
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_json_fragments, max_size=40), st.text(max_size=30), st.sampled_from(["qwen2.5-840", "qwen3-1000", "pixels-64"]))
def test_parse_answer_never_raises(fragments, noise, frame):
    text = "".join(fragments) + noise
    a = parse_answer(text, (37, 1000), frame)
    assert a.status in ("ok", "empty", "failed")
    assert (a.status == "ok") == bool(a.targets)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_answer_never_raises_on_any_text(text):
    parse_answer(text, (5, 5))
    parse_answer("<answer>" + text + "</answer>", (5, 5), "qwen3-1000")

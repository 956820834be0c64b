"""The app's Qt-free parts: the exports against independent readers (pycocotools, PIL, labelme's
"mask" shape decoded by hand), the outcome's explanations, and the autosave store."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from engine.fileio import write_json_atomically
from engine.honesty import MaskGuard
from tests.models import require
from tests.scripted import BLUE, RANDOM_SAM, RED, ReplayPolicy, answer


def run(segmenter, image, texts, query="the red square"):
    from engine.pipeline import LocalReasoner
    from engine.results import result_to_dict

    result = LocalReasoner(ReplayPolicy(texts), segmenter, frame="pixels-112", bundle={"name": "tiny"}, **RANDOM_SAM).run(
        image, query, len(texts))
    return result, result_to_dict(result)


def labelme_by_hand(data) -> np.ndarray:
    """labelme 5's reading of "mask" shapes: the PNG crop pasted at the top-left corner point."""
    full = np.zeros((data["imageHeight"], data["imageWidth"]), bool)
    for shape in data["shapes"]:
        assert shape["shape_type"] == "mask"
        (x1, y1), (x2, y2) = shape["points"]
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))).astype(bool)
        assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1)
        full[y1:y2 + 1, x1:x2 + 1] |= crop
    return full


@pytest.mark.parametrize("texts", [[answer(RED, BLUE)], [answer(RED), answer(RED, BLUE), answer(BLUE), answer(RED)]])
def test_exports_equal_the_engine_result(tiny_segmenter, scene_image, tmp_path, texts):
    from pycocotools import mask as coco_mask

    from desktop import exports
    from desktop.outcome import Outcome

    result, data = run(tiny_segmenter, scene_image, texts)
    outcome = Outcome(json.loads(json.dumps(data)))  # as restored from disk
    assert (outcome.mask == result.mask).all() and result.mask.any()

    exports.write_mask_png(outcome.mask, tmp_path / "m.png")
    assert (np.asarray(Image.open(tmp_path / "m.png")) == result.mask * 255).all()

    coco = json.loads(write_json_atomically(tmp_path / "c.json", exports.coco_json(outcome.final_objects(), outcome.size, "scene.png", outcome.query)).read_text())
    union = np.zeros_like(result.mask)
    for ann in coco["annotations"]:
        seg = ann["segmentation"]
        m = coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        assert ann["area"] == int(coco_mask.area({"size": seg["size"], "counts": seg["counts"].encode()}))
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        union |= m
    assert (union == result.mask).all()
    assert coco["images"][0] == {"id": 1, "file_name": "scene.png", "width": result.mask.shape[1],
                                 "height": result.mask.shape[0]}
    assert {c["name"] for c in coco["categories"]} <= {"red square", "blue circle", "(rest)"}

    labelme = exports.labelme_json(outcome.final_objects(), outcome.size, "scene.png", outcome.query)
    assert (labelme_by_hand(labelme) == result.mask).all()
    assert labelme["imagePath"] == "scene.png" and labelme["imageData"] is None


def test_outcome_explains_the_unhappy_endings(tiny_segmenter, scene_image):
    from desktop.outcome import Outcome

    _, data = run(tiny_segmenter, scene_image, ['<answer>[{"bbox_2d": oops</answer>'])
    assert Outcome(data).headline().startswith("Could not parse the model's answer (answer is not JSON")
    _, data = run(tiny_segmenter, scene_image, ["<think> hmm </think> no answer tag at all"])
    assert Outcome(data).headline() == ("No object: the model gave no usable answer (no <answer>...</answer> in the "
                                        "completion); try rephrasing the query.")
    _, data = run(tiny_segmenter, scene_image, ["<think> none here </think> <answer>[]</answer>"])
    assert Outcome(data).headline().startswith("No object: the model says")
    texts = ["<think> x </think> <answer>[]</answer>"] * 3 + [answer(RED)]
    _, data = run(tiny_segmenter, scene_image, texts)
    o = Outcome(data)
    assert o.headline().startswith("No object: the vote") and "3 of 4" in o.headline()
    assert o.sample_summary(0) == "#0: says no object" and o.sample_summary(3) == "#3: 1 object(s): red square"


def test_settings_and_image_records(tmp_path):
    from desktop.store import HISTORY_LIMIT, ImageRecord, Settings, content_key

    assert Settings.load(tmp_path) == Settings()
    s = Settings(bundle="/models/star7b", samples=8, temperature=0.7, opacity=0.3, colour="#00ff00")
    s.save(tmp_path)
    assert Settings.load(tmp_path) == s
    (tmp_path / "settings.json").write_text('{"samples": "eight", "opacity": 0.9, "unknown": 1')  # broken JSON
    assert Settings.load(tmp_path) == Settings()
    (tmp_path / "settings.json").write_text('{"samples": "eight", "opacity": 0.9, "unknown": 1}')  # wrong types
    assert Settings.load(tmp_path) == Settings(opacity=0.9)

    rec = ImageRecord(content_key(b"pixels"), tmp_path)
    assert rec.history() == [] and rec.latest_result() is None
    for q in ["a", "b", "a", "c"]:
        rec.add_query(q)
    assert rec.history() == ["c", "a", "b"]
    for i in range(HISTORY_LIMIT + 5):
        rec.add_query(f"q{i}")
    assert len(rec.history()) == HISTORY_LIMIT and rec.history()[0] == f"q{HISTORY_LIMIT + 4}"
    rec.save_result({"query": "first"}, "x.png")
    newest = rec.save_result({"query": "second"}, "x.png")
    assert rec.latest_result() == {"query": "second"}
    newest.write_text("{truncated")  # a crash mid-write cannot happen (atomic), but a damaged file is skipped
    assert rec.latest_result() == {"query": "first"}


def test_a_full_frame_answer_and_unreadable_reasoning_are_explained(tiny_segmenter, scene_image, qtbot):
    """The engine's guards reach the app: the headline says the mask was not used, and the reasoning tab
    puts the warning above a trace that is not readable."""
    from desktop.outcome import Outcome
    from desktop.panels import ReasoningPanel
    from engine.pipeline import LocalReasoner
    from engine.results import result_to_dict

    garbled = answer(RED).replace("looking", "The query names square>")
    result = LocalReasoner(ReplayPolicy([garbled]), tiny_segmenter, frame="pixels-112", mask_guard=MaskGuard(max_share=0.0)).run(
        scene_image, "the red square", 1)
    outcome = Outcome(result_to_dict(result))
    assert outcome.headline().startswith("No object:") and "not used" in outcome.headline()
    panel = ReasoningPanel()
    qtbot.addWidget(panel)
    panel.show_outcome(outcome)
    assert panel.text(0).startswith("[This is not readable reasoning: tags or answer JSON")
    assert panel.text(0).endswith(garbled)


def test_the_installed_pyside6_keeps_its_references_when_a_signal_is_emitted():
    """PySide6 6.12.0's Signal.emit took one reference from True per emit; after a session's few thousand
    emits Python aborted at exit with "bool_dealloc". Counted here by hand with sys.getrefcount."""
    import sys

    require("PySide6")
    from PySide6.QtCore import QObject, Signal

    from engine.qt_libs import emit_problem, signal_emit_keeps_references

    class Emitter(QObject):
        fired = Signal(int, str)

    emitter = Emitter()
    before = sys.getrefcount(True)
    for i in range(500):
        emitter.fired.emit(i, "x")
    assert sys.getrefcount(True) >= before - 5, (before, sys.getrefcount(True))
    assert signal_emit_keeps_references() and emit_problem() is None

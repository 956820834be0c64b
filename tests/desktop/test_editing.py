"""The annotator's tools in the real app (offscreen, pytest-qt): SAM refinement by clicks and boxes on the
canvas against the upstream SAM2ImagePredictor's masks for the same prompts, undo / redo, labels, labelme
JSON beside the image read back by labelme's own reader, done marks, and one query over a folder with
Stop. The policy is the replaying double in front of the tiny bundle's real SAM 2 (ONNX Runtime); the
upstream predictor runs the same weights in PyTorch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.desktop.test_app import GatedPolicy, replay_loader, window
from tests.models import require, sam2_predictor
from tests.scripted import BLUE, RANDOM_SAM, RED, answer


@pytest.fixture(scope="module")
def predictor(tiny_sam2):
    return sam2_predictor(tiny_sam2)


def expected_mask(predictor, image, prompt) -> np.ndarray:
    """The predictor's top-scoring mask of three for an object's recorded prompt (StAR's selection)."""
    clicks = np.array([c[:2] for c in prompt.clicks], float) if prompt.clicks else None
    labels = np.array([c[2] for c in prompt.clicks]) if prompt.clicks else None
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=clicks, point_labels=labels,
                                         box=None if prompt.box is None else np.array(prompt.box, float))
    return masks[np.argsort(scores)[::-1][0]].astype(bool)


def view_pos(w, x, y):
    """Where image pixel (x, y) is on the canvas's viewport."""
    from PySide6.QtCore import QPointF

    return w.canvas.mapFromScene(QPointF(x, y))


def wait_refined(qtbot, w, before):
    qtbot.waitUntil(lambda: w.annotation.objects and w.refine_pending is None and w.annotation.objects != before
                    or w.last_message is not None, timeout=30_000)
    assert w.last_message is None, w.last_message


def answer_label(label, asked=None):
    """Answer the next label dialog as a user does (type the label, OK; None: Cancel); `asked` collects the
    labels it offered."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QComboBox, QInputDialog

    def answer(tries=500):
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QInputDialog):
            if tries:
                QTimer.singleShot(10, lambda: answer(tries - 1))
            return
        if asked is not None:
            box = dialog.findChild(QComboBox)
            asked.append([box.itemText(i) for i in range(box.count())])
        if label is None:
            dialog.reject()
        else:
            dialog.setTextValue(label)
            dialog.accept()

    QTimer.singleShot(0, answer)


def ask(qtbot, w, query, n=1):
    w.set_samples(n)
    w.query.setCurrentText(query)
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        assert w.run_query()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and (a == b).mean() > 0.999  # ONNX Runtime vs PyTorch: a pixel may flip at 0


def test_clicks_and_box_refine_as_sam_does_with_undo_and_redo(qtbot, home, tiny_segmenter, predictor, scene_png,
                                                              scene_image):
    from PySide6.QtCore import Qt

    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w.open_image(scene_png)
    ask(qtbot, w, "the red square")
    ann = w.annotation
    assert len(ann.objects) == 1 and ann.objects[0].label == "red square" and ann.objects[0].query == "the red square"
    assert (ann.union() == w.outcome.mask).all()  # the result's objects are the annotation
    start = ann.objects[0]
    assert start.prompt.box is not None and len(start.prompt.clicks) == 1  # the answer's box and point
    misses = tiny_segmenter.cache.misses

    qtbot.keyClick(w.canvas, Qt.Key.Key_Q)  # the click tool (the canvas has focus)
    assert w.canvas.tool == "click" and w.actions_by_name["tool_click"].isChecked()
    before = list(ann.objects)
    qtbot.mouseClick(w.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(w, 150, 120))
    wait_refined(qtbot, w, before)
    hits = tiny_segmenter.cache.hits
    added = w.annotation.objects[0]
    assert len(added.prompt.clicks) == 2 and added.prompt.clicks[1][2] == 1
    assert abs(added.prompt.clicks[1][0] - 150) < 2 and abs(added.prompt.clicks[1][1] - 120) < 2
    assert same(added.mask, expected_mask(predictor, scene_image, added.prompt))

    before = list(w.annotation.objects)
    qtbot.mouseClick(w.canvas.viewport(), Qt.MouseButton.RightButton, pos=view_pos(w, 60, 150))
    wait_refined(qtbot, w, before)
    removed = w.annotation.objects[0]
    assert [c[2] for c in removed.prompt.clicks] == [1, 1, 0]
    assert same(removed.mask, expected_mask(predictor, scene_image, removed.prompt))
    assert tiny_segmenter.cache.misses == misses  # every refinement on the run's embedding
    assert tiny_segmenter.cache.hits == hits  # found once, not re-hashed on every click

    # undo twice: back to the result's object; redo once: the positive click again
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.annotation.objects[0] is added
    w.undo()
    assert w.annotation.objects[0] is start and w.annotation.can_redo()
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert w.annotation.objects[0] is added and (w.annotation.union() == added.mask).all()

    # a new object by a box drawn with the box tool: N lists nothing empty; the label is asked once SAM has
    # made the mask (labelme's dialog: this image's labels and those used before)
    qtbot.keyClick(w.canvas, Qt.Key.Key_N)
    assert len(w.annotation.objects) == 1 and w.annotation.selected is None
    qtbot.keyClick(w.canvas, Qt.Key.Key_B)
    before = list(w.annotation.objects)
    offered = []
    answer_label("blue thing", offered)
    vp = w.canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view_pos(w, 100, 40))
    from PySide6.QtCore import QEvent, QPointF
    from PySide6.QtGui import QMouseEvent

    end = view_pos(w, 200, 170)
    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(end), vp.mapToGlobal(QPointF(end)), Qt.MouseButton.NoButton,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    w.canvas.mouseMoveEvent(move)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=end)
    wait_refined(qtbot, w, before)
    boxed = w.annotation.objects[1]
    assert offered == [["red square"]] and boxed.label == "blue thing" and w.settings.labels == ["blue thing"]
    assert boxed.prompt.clicks == () and boxed.prompt.box is not None
    assert all(abs(a - b) < 2 for a, b in zip(boxed.prompt.box, (100, 40, 200, 170)))
    assert same(boxed.mask, expected_mask(predictor, scene_image, boxed.prompt))

    # labels: rename, the label list counts them; delete and undo
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow() and w.focusWidget() is w.canvas)  # back from the dialog
    w.rename_object(1, "  blue   circle ")
    assert w.annotation.objects[1].label == "blue circle"
    assert [w.objects.labels.item(i).text() for i in range(w.objects.labels.count())] == \
        ["red square (1)", "blue circle (1)"]
    qtbot.keyClick(w.canvas, Qt.Key.Key_Delete)
    assert len(w.annotation.objects) == 1
    # the headline describes the objects as they are now, not the result it once described
    area = int(w.annotation.objects[0].mask.sum())
    h, w_ = w.image.shape[:2]
    assert w.headline.text() == f"1 object, {area} pixels ({100 * area / (w_ * h):.1f}% of the image) · edited"
    w.undo()
    assert len(w.annotation.objects) == 2 and w.headline.text().startswith("2 objects, ")

    # every edit is autosaved: a new window finds the objects, labels and prompts as they were
    objects = w.annotation.objects
    w.close()
    w2 = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w2.open_image(scene_png)
    assert [(o.label, o.prompt, o.query) for o in w2.annotation.objects] == \
        [(o.label, o.prompt, o.query) for o in objects]
    assert all((a.mask == b.mask).all() for a, b in zip(w2.annotation.objects, objects))

    # the Delete key in the query box edits the text, never the objects
    w2.query.setFocus()
    w2.query.setCurrentText("abc")
    w2.query.lineEdit().setCursorPosition(0)
    qtbot.keyClick(w2.query.lineEdit(), Qt.Key.Key_Delete)
    assert w2.query.currentText() == "bc" and len(w2.annotation.objects) == 2


def test_a_second_query_adds_its_objects_and_asking_again_replaces_them(qtbot, home, tiny_segmenter, scene_png):
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED, BLUE)]))
    assert w.open_image(scene_png)
    ask(qtbot, w, "the red square")
    first = len(w.annotation.objects)
    assert first >= 1
    ask(qtbot, w, "anything blue")
    assert len(w.annotation.objects) == 2 * first
    assert {o.query for o in w.annotation.objects} == {"the red square", "anything blue"}
    ask(qtbot, w, "the red square")  # asked again: replaces its own objects, keeps the others
    assert len(w.annotation.objects) == 2 * first
    w.undo()
    assert len(w.annotation.objects) == 2 * first and w.annotation.can_redo()


def labelme_masks(path) -> dict:
    """labelme 6's own reader and shape_to_mask on a file (a subprocess: labelme imports PyQt5): the pixels of
    each (label, group_id), as labelme's instance tools join shapes."""
    code = ("import sys, json, numpy as np\n"
            "from labelme._label_file import read_label_file\nfrom labelme.utils.shape import shape_to_mask\n"
            "d = read_label_file(sys.argv[1])\nassert d.image_data\nraw = json.load(open(sys.argv[1]))\n"
            "out = {}\n"
            "for i, s in enumerate(d.shapes):\n"
            "    m = shape_to_mask((raw['imageHeight'], raw['imageWidth']), s['points'], s['shape_type'])\n"
            "    key = f\"{s['label']}|{s['group_id'] if s['group_id'] is not None else i}\"\n"
            "    out[key] = out.get(key, np.zeros_like(m)) | m\n"
            "np.savez_compressed(sys.argv[2], **out)\n")
    target = str(path) + ".npz"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run([sys.executable, "-c", code, str(path), target], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(target) as data:
        return {k: data[k] for k in data.files}


def test_labelme_file_beside_the_image_round_trips_through_labelme(qtbot, home, tiny_segmenter, tmp_path,
                                                                    scene_image):
    require("labelme")
    from PySide6.QtCore import Qt

    from desktop.annotation import Annotation
    from engine.annotations import labelme_path

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.ascontiguousarray(np.roll(scene_image, 7 * i, axis=0))).save(folder / f"img{i}.png")
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED, BLUE)]))
    assert w.open_folder(folder) == 3
    ask(qtbot, w, "the shapes")
    # a hand-made object with a hole and two parts, so the file needs cuts and a group
    h, wd = scene_image.shape[:2]
    ring = np.zeros((h, wd), bool)
    ring[20:80, 20:80] = True
    ring[40:60, 40:60] = False
    ring[120:150, 150:200] = True
    from desktop.annotation import AnnotatedObject

    w.annotation.add_object(AnnotatedObject("ring", ring))
    w._edited()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    qtbot.keyClick(w.canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)  # labelme's save key
    path = labelme_path(folder / "img0.png")
    assert path.is_file() and w.files.item(0).text() == "✓ img0.png" and w.files.item(1).text() == "img1.png"

    theirs = labelme_masks(path)
    ours = Annotation.from_labelme(json.loads(path.read_text()), (wd, h))
    assert len(theirs) == len(ours.objects) == len(w.annotation.objects)
    for key, obj, edited in zip(theirs, ours.objects, w.annotation.objects):
        assert key.split("|")[0] == obj.label == edited.label
        assert (theirs[key] == obj.mask).all()  # labelme fills the file exactly as the app reads it back
        inter, union = (obj.mask & edited.mask).sum(), (obj.mask | edited.mask).sum()
        assert inter / union > 0.99, (obj.label, inter / union)  # and that is the edited mask (polygon outlines)
    assert (ours.objects[-1].mask == ring).all()

    # A new app with no autosave (another machine) opens the image and finds the file's objects; the folder
    # list marks it done.
    w.close()
    other_home = tmp_path / "other-home"
    w2 = window(qtbot, other_home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w2.open_folder(folder) == 3 and w2.files.item(0).text() == "✓ img0.png"
    assert [o.label for o in w2.annotation.objects] == [o.label for o in ours.objects]


class HoldingPolicy(GatedPolicy):
    """Answers at once until its `hold_at`-th call, which waits for the gate (an image in flight)."""

    def __init__(self, texts, hold_at: int):
        super().__init__(texts)
        self.hold_at, self.calls = hold_at, 0

    def sample(self, image, query, n, sampling, *, on_token=None, cancel=None):
        self.calls += 1
        if self.calls != self.hold_at:
            return super(GatedPolicy, self).sample(image, query, n, sampling, on_token=on_token, cancel=cancel)
        return super().sample(image, query, n, sampling, on_token=on_token, cancel=cancel)


def test_one_query_over_the_folder_with_skips_failures_and_stop(qtbot, home, tiny_segmenter, tmp_path, scene_image):
    from desktop.store import ImageRecord, content_key
    from engine.annotations import labelme_path
    from engine.pipeline import LocalReasoner

    folder = tmp_path / "folder"
    folder.mkdir()
    paths = []
    for i in range(5):
        p = folder / f"img{i}.png"
        Image.fromarray(np.ascontiguousarray(np.roll(scene_image, 5 * i, axis=1))).save(p)
        paths.append(p)
    labelme_path(paths[1]).write_text(json.dumps({"shapes": [], "imageHeight": 184, "imageWidth": 224}))  # done
    paths[3].write_bytes(b"\x89PNG broken")  # fails, the run goes on
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w.open_folder(folder) == 5 and w.files.item(1).text() == "✓ img1.png"
    w.query.setCurrentText("the red square")
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        assert w.run_folder()
    assert not w.running and "3 labelled, 1 failed, 1 saved already (skipped)" in w.stage.text()
    # The status line stays one short line; the banner, which wraps, names each failed image and why.
    assert w.stage.text() == "Folder: 3 labelled, 1 failed, 1 saved already (skipped)."
    assert w.last_message.title == "1 image of the folder failed" and w.last_message.text.startswith("img3.png (")
    assert w.banner.isVisible() and w.banner.wordWrap()
    for i in (0, 2, 4):
        doc = json.loads(labelme_path(paths[i]).read_text())
        assert doc["imagePath"] == paths[i].name and [s["label"] for s in doc["shapes"]] and \
            all(s["label"] == "red square" for s in doc["shapes"])
        assert w.files.item(i).text().startswith("✓ ")
        record = ImageRecord(content_key(paths[i].read_bytes()), home)
        assert record.latest_result()["query"] == "the red square"
    assert not labelme_path(paths[3]).exists()
    assert json.loads(labelme_path(paths[1]).read_text())["shapes"] == []  # skipped: untouched
    assert w.annotation.objects and w.annotation.objects[0].query == "the red square"  # img0, on screen

    # Stop part-way: the image in flight is not written, the run says how to continue
    for p in (paths[0], paths[2], paths[4]):
        labelme_path(p).unlink()
    policy = HoldingPolicy([answer(RED)], hold_at=2)
    w2 = window(qtbot, tmp_path / "home2",
                loader=lambda b, n: LocalReasoner(policy, tiny_segmenter, frame="pixels-112", **RANDOM_SAM))
    assert w2.open_folder(folder) == 5
    w2.query.setCurrentText("the red square")
    with qtbot.waitSignal(w2.run_finished, timeout=120_000):
        assert w2.run_folder()
        assert policy.entered.wait(60)  # the second image to run (img2) is in flight
        w2.cancel()
        policy.gate.set()
    assert "Stopped: run it again to continue" in w2.stage.text()
    assert labelme_path(paths[0]).exists() and not labelme_path(paths[2]).exists()


def test_folder_run_whose_model_does_not_load_says_so(qtbot, home, tmp_path, scene_image):
    """The bundle fails to load: the message says why, and the status line does not claim a Stop."""
    from engine.errors import ModelFileError

    def broken(bundle, n):
        raise ModelFileError("the bundle's policy file is damaged")

    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(scene_image).save(folder / "a.png")
    w = window(qtbot, home, loader=broken)
    assert w.open_folder(folder) == 1
    w.query.setCurrentText("the red square")
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        assert w.run_folder()
    assert not w.running and w.stage.text() == "Folder: not run."
    assert "damaged" in w.last_message.text


def test_pasted_image_has_nothing_to_save_beside(qtbot, home, tiny_segmenter):
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    w.open_array(np.full((50, 60, 3), 90, np.uint8))
    assert w.save_annotation() is None and w.last_message.title == "No file to save beside"
    assert w.run_folder() is False and w.last_message.title == "No folder"


def test_a_new_object_is_listed_only_with_a_mask_and_a_label(qtbot, home, tiny_segmenter, scene_png):
    """N then a click: Cancel in the label dialog adds nothing (labelme drops a shape whose label dialog is
    cancelled); OK adds one object with that label, and the label is offered first next time."""
    from PySide6.QtCore import Qt

    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w.open_image(scene_png)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    qtbot.keyClick(w.canvas, Qt.Key.Key_N)
    assert w.annotation.objects == [] and w.canvas.tool == "click"
    answer_label(None)
    qtbot.mouseClick(w.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(w, 60, 60))
    qtbot.waitUntil(lambda: w.stage.text().startswith("No label given"), timeout=30_000)
    assert w.annotation.objects == [] and not w.annotation.can_undo()

    offered = []
    answer_label("cup", offered)
    qtbot.mouseClick(w.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(w, 60, 60))
    qtbot.waitUntil(lambda: len(w.annotation.objects) == 1, timeout=30_000)
    assert w.annotation.objects[0].label == "cup" and w.annotation.objects[0].mask.any()
    assert offered == [["object"]]  # nothing used yet: the default
    assert w.settings.labels == ["cup"] and w.objects_headline().startswith("1 object, ")

"""An annotator's files stay theirs: a labelme / X-AnyLabeling file loaded, edited in one shape and saved
keeps every other shape (type, points, label, description, flags, group_id, unknown keys) and every
file-level field as they were; a same-stem JSON that is not a labelme file is never written over.

The files: tests/data/labelme/scene.json, written by labelme 7.9.1's own writer
(tests/data/labelme/write_with_labelme.py), and scene-xanylabeling.json in X-AnyLabeling 4.2.1's form
(score, difficult, attributes, kie_linking, rotation boxes with their direction)."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from desktop.annotation import Annotation
from engine.annotations import (
    fallback_labelme_path,
    labelme_file,
    labelme_path,
    labelme_target,
    read_labelme_document,
    write_labelme,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "labelme"
FILES = ["scene.json", "scene-xanylabeling.json"]
SIZE = (224, 224)


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize("name", FILES)
def test_a_rename_changes_only_that_objects_labels(name):
    original = load(name)
    annotation = Annotation.from_labelme(copy.deepcopy(original), SIZE)
    index = next(i for i, o in enumerate(annotation.objects) if o.label == "red cup")
    annotation.rename(index, "mug")
    saved = annotation.to_labelme("ignored.png", description="ignored")
    assert {k: v for k, v in saved.items() if k != "shapes"} == {k: v for k, v in original.items() if k != "shapes"}
    assert len(saved["shapes"]) == len(original["shapes"])
    for before, after in zip(original["shapes"], saved["shapes"]):
        if before["label"] == "red cup":
            assert after == {**before, "label": "mug"}  # a rectangle stays a rectangle, its fields stay
        else:
            assert after == before


@pytest.mark.parametrize("name", FILES)
def test_a_reshaped_object_is_rewritten_and_every_other_shape_kept(name):
    original = load(name)
    annotation = Annotation.from_labelme(copy.deepcopy(original), SIZE)
    index = next(i for i, o in enumerate(annotation.objects) if o.label == "red cup")
    mask = np.zeros(SIZE[::-1], bool)
    mask[100:150, 130:200] = True
    annotation.set_object(index, annotation.objects[index].edited(mask=mask))
    saved = annotation.to_labelme("scene.png")
    kept = [s for s in original["shapes"] if s["label"] != "red cup"]
    assert saved["shapes"][:len(kept)] == kept  # in their order in the file
    new = saved["shapes"][len(kept):]
    assert [(s["label"], s["shape_type"]) for s in new] == [("red cup", "polygon")]
    assert saved["version"] == original["version"] and saved.get("reviewer") == original.get("reviewer")
    again = Annotation.from_labelme(saved, SIZE)
    assert (next(o for o in again.objects if o.label == "red cup").mask == mask).all()


def test_shapes_without_an_area_and_unknown_keys_come_back_untouched():
    original = load("scene.json")
    original["shapes"].append({"label": "odd", "points": "not points", "shape_type": "polygon", "mine": [1, 2]})
    original["project"] = {"batch": 7}
    annotation = Annotation.from_labelme(copy.deepcopy(original), SIZE)
    assert sorted(o.label for o in annotation.objects) == ["red cup", "sun", "tree"]  # the tree's two parts: one
    annotation.remove(next(i for i, o in enumerate(annotation.objects) if o.label == "sun"))
    saved = annotation.to_labelme("scene.png")
    assert saved["shapes"] == [s for s in original["shapes"] if s["label"] != "sun"]
    assert saved["project"] == {"batch": 7} and saved["flags"] == {"needs_review": False}


def test_the_autosave_keeps_the_files_shapes():
    annotation = Annotation.from_labelme(load("scene-xanylabeling.json"), SIZE)
    annotation.rename(0, "mug")
    restored = Annotation.from_autosave(json.loads(json.dumps(annotation.to_autosave())))
    assert restored.to_labelme("scene.png") == annotation.to_labelme("scene.png")


def test_new_objects_take_group_ids_the_file_does_not_use():
    from desktop.annotation import AnnotatedObject

    annotation = Annotation.from_labelme(load("scene.json"), SIZE)  # uses group_id 4
    mask = np.zeros(SIZE[::-1], bool)
    mask[5:20, 5:20] = mask[40:60, 150:170] = True
    annotation.add_object(AnnotatedObject("two parts", mask))
    new = [s for s in annotation.to_labelme("scene.png")["shapes"] if s["label"] == "two parts"]
    assert len(new) == 2 and {s["group_id"] for s in new} == {5}


def test_labelmes_own_reader_loads_the_saved_file(tmp_path):
    from tests.desktop.test_editing import labelme_masks
    from tests.models import require

    require("labelme")
    shutil.copy(Path(__file__).resolve().parents[2] / "engine" / "samples" / "scene.png", tmp_path / "scene.png")
    annotation = Annotation.from_labelme(load("scene.json"), SIZE)
    annotation.rename(0, "mug")
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(annotation.to_labelme("scene.png")))
    masks = labelme_masks(path)
    assert any(k.startswith("mug|") for k in masks) and any(k.startswith("tree|4") for k in masks)


# ---- a same-stem JSON that is not a labelme file --------------------------------------------------------

def test_a_foreign_json_is_never_written_over(tmp_path):
    image = tmp_path / "img5.png"
    image.write_bytes(b"")
    foreign = labelme_path(image)
    foreign.write_text(json.dumps({"query": "the red cup", "mask": {"size": [4, 4], "counts": "abc"}}))
    before = foreign.read_bytes()
    assert labelme_file(image) is None  # not labelled: a folder run and `star label` do not skip it
    assert labelme_target(image) == fallback_labelme_path(image) == tmp_path / "img5.labelme.json"
    written = write_labelme(image, {"version": "5.5.0", "shapes": [], "imagePath": "img5.png"})
    assert written == tmp_path / "img5.labelme.json" and foreign.read_bytes() == before
    assert labelme_file(image) == written and read_labelme_document(written)["shapes"] == []


def test_an_existing_labelme_file_is_the_one_written(tmp_path):
    image = tmp_path / "img.png"
    shutil.copy(DATA / "scene.json", labelme_path(image))
    assert labelme_file(image) == labelme_target(image) == labelme_path(image)


def test_the_app_never_writes_over_a_foreign_json(qtbot, home, tiny_segmenter, tmp_path, scene_image):
    """A result JSON beside img1: the folder run does not count img1 as saved, and neither it nor Ctrl+S
    touches that file; the annotation goes to img1.labelme.json, and the app says so."""
    from PIL import Image
    from PySide6.QtCore import Qt

    from tests.desktop.test_app import replay_loader, window
    from tests.scripted import RED, answer

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.ascontiguousarray(np.roll(scene_image, 5 * i, axis=1))).save(folder / f"img{i}.png")
    foreign = folder / "img1.json"
    foreign.write_text(json.dumps({"query": "the red cup", "no_object": True, "samples": []}))
    before = foreign.read_bytes()
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w.open_folder(folder) == 2 and w.files.item(1).text() == "img1.png"
    w.query.setCurrentText("the red square")
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        assert w.run_folder()
    assert "2 labelled" in w.stage.text() and foreign.read_bytes() == before
    fallback = folder / "img1.labelme.json"
    assert {s["label"] for s in read_labelme_document(fallback)["shapes"]} == {"red square"}
    assert w.files.item(1).text() == "✓ img1.png"

    assert w.open_image(folder / "img1.png")
    w.annotation.rename(0, "crimson square")
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    qtbot.keyClick(w.canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert foreign.read_bytes() == before
    assert {s["label"] for s in read_labelme_document(fallback)["shapes"]} == {"crimson square"}
    assert w.last_message is not None and "img1.labelme.json" in w.last_message.text

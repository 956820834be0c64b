"""Hand editing as labelme does it: the shape edits themselves against hand-worked points and pixel counts,
a labelme / X-AnyLabeling file edited in one shape and compared field by field, and the real app's edit,
polygon and rectangle tools driven by mouse and keys (offscreen, pytest-qt), their masks checked against
labelme's own reader and shape_to_mask."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.desktop.test_app import replay_loader, window
from tests.desktop.test_editing import answer_label, ask, labelme_masks, view_pos
from tests.models import require
from tests.scripted import RED, answer


def polygon(points, **extra):
    return {"label": "roof", "points": [list(p) for p in points], "group_id": None, "description": "by hand",
            "shape_type": "polygon", "flags": {"verified": True}, "attributes": {"colour": "red"}, **extra}


# ---- the edits, without Qt ---------------------------------------------------------------------------------
def test_vertex_edits_change_the_points_and_nothing_else():
    from desktop.shapes import delete_vertex, handles, insert_vertex, move_vertex, translate

    square = polygon([(10, 10), (30, 10), (30, 30), (10, 30)])
    moved = move_vertex(square, 2, 40, 35)
    assert moved["points"] == [[10, 10], [30, 10], [40, 35], [10, 30]]
    assert {k: v for k, v in moved.items() if k != "points"} == {k: v for k, v in square.items() if k != "points"}
    added = insert_vertex(square, 1, 30, 20)  # on the edge from vertex 1 to vertex 2
    assert added["points"] == [[10, 10], [30, 10], [30, 20], [30, 30], [10, 30]]
    assert delete_vertex(added, 2)["points"] == square["points"]
    cut = polygon([(0, 0), (9, 0), (9, 9), (3, 3), (5, 3), (3, 3), (9, 9), (0, 9)])  # a hole joined by a cut
    assert move_vertex(cut, 6, 10, 10)["points"] == [[0, 0], [9, 0], [10, 10], [3, 3], [5, 3], [3, 3], [10, 10], [0, 9]]
    triangle = polygon([(0, 0), (5, 0), (0, 5)])
    assert delete_vertex(triangle, 0) is None  # labelme keeps three vertices at least

    # A polygon written closed (its first point repeated, as OpenCV tracings are) stays closed.
    closed = polygon([(10, 10), (30, 10), (30, 30), (10, 10)])
    assert handles(closed) == [(10, 10), (30, 10), (30, 30)]
    assert move_vertex(closed, 0, 5, 5)["points"] == [[5, 5], [30, 10], [30, 30], [5, 5]]

    # A rectangle's corner drags two edges; it stays a rectangle, in its own point layout.
    two = {**polygon([(10, 10), (30, 40)]), "shape_type": "rectangle"}
    assert handles(two) == [(10, 10), (30, 10), (30, 40), (10, 40)]
    assert move_vertex(two, 1, 50, 5)["points"] == [[10, 5], [50, 40]]  # top-right corner: y1 and x2 move
    four = {**polygon([(10, 10), (30, 10), (30, 40), (10, 40)]), "shape_type": "rectangle"}
    assert move_vertex(four, 3, 0, 45)["points"] == [[0, 10], [30, 10], [30, 45], [0, 45]]
    assert insert_vertex(two, 0, 20, 10) is None and delete_vertex(four, 0) is None
    assert translate(two, 1.5, -2)["points"] == [[11.5, 8], [31.5, 38]]


def test_a_mask_moves_by_whole_pixels_exactly():
    from desktop.annotation import AnnotatedObject, Prompt

    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:15] = True
    mask[0, 59] = True  # leaves the image when moved right
    obj = AnnotatedObject("cup", mask, Prompt(((7.0, 12.0, 1),), (5.0, 10.0, 15.0, 20.0)))
    moved = obj.moved(3.4, -2.6, (60, 50))  # rounds to (3, -3)
    expected = np.zeros((50, 60), bool)
    expected[7:17, 8:18] = True
    assert (moved.mask == expected).all()
    assert moved.prompt == Prompt(((10.0, 9.0, 1),), (8.0, 7.0, 18.0, 17.0)) and moved.shapes == ()


def test_a_file_edited_in_one_shape_keeps_every_other_field():
    """X-AnyLabeling's form (attributes, kie_linking, difficult, score, description), labelme's flags and
    group_id, a key of another tool at shape and file level: a vertex of one rectangle dragged and a grouped
    object moved change those shapes' points alone; the rest is written back as it was read."""
    from desktop.annotation import Annotation

    def xany(label, kind, points, **extra):
        return {"label": label, "score": 0.93, "points": points, "group_id": None, "description": "checked",
                "difficult": True, "shape_type": kind, "flags": {"verified": True}, "attributes": {"size": "L"},
                "kie_linking": [[1, 2]], "review": "ok", **extra}

    doc = {"version": "2.4.4", "flags": {"night": True}, "shapes": [
        xany("car", "rectangle", [[10, 10], [40, 30]]),
        xany("tree", "polygon", [[50, 10], [70, 10], [70, 40]], group_id=7),
        xany("tree", "polygon", [[80, 10], [95, 10], [95, 25]], group_id=7),
        xany("pole", "point", [[5, 5]]),
        xany("sign", "rectangle", [[60, 50], [70, 50], [70, 60], [60, 60]]),
    ], "imagePath": "street.png", "imageData": None, "imageHeight": 80, "imageWidth": 100, "reviewer": "kim"}
    ann = Annotation.from_labelme(json.loads(json.dumps(doc)), (100, 80))
    labels = [o.label for o in ann.objects]
    assert labels == ["car", "tree", "sign"]

    car = ann.objects[0]
    shapes = car.editable_shapes()
    from desktop.shapes import move_vertex

    ann.set_object(0, car.with_shapes([move_vertex(shapes[0], 2, 50, 45)], ann.size))
    ann.set_object(1, ann.objects[1].moved(2.5, 1.0, ann.size))
    out = ann.to_labelme("street.png")

    assert {k: v for k, v in out.items() if k != "shapes"} == {k: v for k, v in doc.items() if k != "shapes"}
    assert len(out["shapes"]) == len(doc["shapes"])
    for before, after in zip(doc["shapes"], out["shapes"]):
        assert {k: v for k, v in after.items() if k != "points"} == {k: v for k, v in before.items() if k != "points"}
    assert out["shapes"][0]["points"] == [[10, 10], [50, 45]]  # still a two-point rectangle
    assert out["shapes"][1]["points"] == [[52.5, 11.0], [72.5, 11.0], [72.5, 41.0]]
    assert out["shapes"][2]["points"] == [[82.5, 11.0], [97.5, 11.0], [97.5, 26.0]]
    assert out["shapes"][3:] == doc["shapes"][3:]
    assert ann.objects[0].area == 41 * 36  # labelme fills x 10..50, y 10..45, edges included
    assert ann.objects[0].prompt.empty


def test_a_traced_sam_mask_edited_by_hand_reads_back_as_one_object():
    from desktop.annotation import AnnotatedObject, Annotation
    from desktop.shapes import move_vertex

    mask = np.zeros((60, 80), bool)
    mask[5:25, 5:25] = True
    mask[30:50, 40:70] = True
    ann = Annotation((80, 60), [AnnotatedObject("box", mask, query="the boxes")])
    shapes = ann.objects[0].editable_shapes()
    assert len(shapes) == 2 and all(len(s["points"]) == 4 for s in shapes)  # corners only, staircase dropped
    s, corner = next((s, k) for s, shape in enumerate(shapes) for k, p in enumerate(shape["points"])
                     if p == [24.0, 24.0])
    shapes[s] = move_vertex(shapes[s], corner, 30, 24)
    ann.set_object(0, ann.objects[0].with_shapes(shapes, ann.size))
    out = ann.to_labelme("boxes.png")
    assert [s["shape_type"] for s in out["shapes"]] == ["polygon", "polygon"]
    assert out["shapes"][0]["group_id"] == out["shapes"][1]["group_id"] is not None
    back = Annotation.from_labelme(out, (80, 60))
    assert len(back.objects) == 1 and (back.objects[0].mask == ann.objects[0].mask).all()
    expected = mask.copy()
    for row in range(5, 25):  # the right edge now runs from (24, 5) to (30, 24): labelme's fill by hand
        expected[row, 5:int(24 + 6 * (row - 5) / 19) + 1] = True
    assert abs(int(ann.objects[0].mask.sum()) - int(expected.sum())) <= 20  # edge pixels of a slanted line


# ---- the app's tools ----------------------------------------------------------------------------------------
def press(qtbot, w, x, y, modifiers=None):
    from PySide6.QtCore import Qt

    qtbot.mousePress(w.canvas.viewport(), Qt.MouseButton.LeftButton, modifiers or Qt.KeyboardModifier.NoModifier,
                     view_pos(w, x, y))


def drag(qtbot, w, start, end, modifiers=None):
    """A left-button drag from image pixel `start` to `end`, through two moves, as a hand does it."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent

    modifiers = modifiers or Qt.KeyboardModifier.NoModifier
    vp = w.canvas.viewport()
    press(qtbot, w, *start, modifiers)
    for t in (0.5, 1.0):
        at = QPointF(view_pos(w, start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
        w.canvas.mouseMoveEvent(QMouseEvent(QEvent.Type.MouseMove, at, vp.mapToGlobal(at), Qt.MouseButton.NoButton,
                                            Qt.MouseButton.LeftButton, modifiers))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, modifiers, view_pos(w, *end))


def near(points, expected, tol=0.6) -> bool:
    """Points placed through the screen land within a fraction of a pixel of the image pixel aimed at."""
    return len(points) == len(expected) and all(abs(a - b) <= tol for p, q in zip(points, expected)
                                                 for a, b in zip(p, q))


def back_from_dialog(qtbot, w):
    """The window active again, the canvas focused (the label dialog took both), as a user sees it."""
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow() and w.focusWidget() is w.canvas)


@pytest.fixture
def ready(qtbot, home, tiny_segmenter, scene_png):
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w.open_image(scene_png)
    back_from_dialog(qtbot, w)
    return w


def test_a_polygon_and_rectangles_drawn_by_hand_become_labelled_objects(qtbot, ready, scene_png):
    require("labelme")
    from PySide6.QtCore import Qt

    w = ready
    qtbot.keyClick(w.canvas, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)  # labelme: Create Polygons
    assert w.canvas.tool == "polygon" and w.actions_by_name["tool_polygon"].isChecked()
    # Esc drops a polygon being drawn (and stops no run); Backspace takes the last vertex back.
    for x, y in ((100, 100), (120, 100)):
        press(qtbot, w, x, y)
    assert w.canvas.drawing
    qtbot.keyClick(w.canvas, Qt.Key.Key_Escape)
    assert not w.canvas.drawing and w.annotation.objects == []
    for x, y in ((20, 20), (80, 20), (80, 60), (150, 150)):
        press(qtbot, w, x, y)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Backspace)
    press(qtbot, w, 20, 60)
    offered = []
    answer_label("table", offered)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(w.annotation.objects) == 1)
    table = w.annotation.objects[0]
    assert table.label == "table" and offered == [["object"]]
    (_, shape), = table.shapes
    assert shape["shape_type"] == "polygon" and near(shape["points"], [(20, 20), (80, 20), (80, 60), (20, 60)])
    assert abs(table.area - 61 * 41) <= 61 + 41  # x 20..80, y 20..60 with its edges, give or take a row

    # A rectangle by a drag, and one by two clicks (labelme's way); Cancel in the label dialog adds nothing.
    back_from_dialog(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    answer_label("box")
    drag(qtbot, w, (100, 100), (150, 140))
    qtbot.waitUntil(lambda: len(w.annotation.objects) == 2)
    answer_label(None)
    drag(qtbot, w, (160, 10), (200, 30))
    qtbot.waitUntil(lambda: w.stage.text().startswith("No label given"))
    assert len(w.annotation.objects) == 2
    answer_label("sign")
    press(qtbot, w, 160, 10)
    qtbot.mouseRelease(w.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(w, 160, 10))
    assert w.canvas.drawing  # the rectangle follows the mouse to the second click
    press(qtbot, w, 200, 30)
    qtbot.waitUntil(lambda: len(w.annotation.objects) == 3)
    kinds = [o.shapes[0][1]["shape_type"] for o in w.annotation.objects]
    assert kinds == ["polygon", "rectangle", "rectangle"]
    assert near(w.annotation.objects[1].shapes[0][1]["points"], [(100, 100), (150, 140)])
    assert near(w.annotation.objects[2].shapes[0][1]["points"], [(160, 10), (200, 30)])

    w.undo()
    assert len(w.annotation.objects) == 2
    w.redo()
    out = w.save_annotation()
    saved = json.loads(out.read_text())
    assert [s["shape_type"] for s in saved["shapes"]] == kinds
    theirs = labelme_masks(out)  # labelme's own reader and shape_to_mask fill them as the app does
    assert [k.split("|")[0] for k in theirs] == ["table", "box", "sign"]
    for mask, obj in zip(theirs.values(), w.annotation.objects):
        assert (mask == obj.mask).all()


def labelme_file_beside(image_path, shapes):
    image = Image.open(image_path)
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path.name, "imageData": None,
           "imageHeight": image.height, "imageWidth": image.width, "tool": "kept"}
    path = image_path.with_suffix(".json")
    path.write_text(json.dumps(doc))
    return doc


def test_the_edit_tool_drags_shapes_and_vertices_with_undo(qtbot, home, tiny_segmenter, scene_png):
    from PySide6.QtCore import Qt

    doc = labelme_file_beside(scene_png, [
        {**polygon([(20, 20), (60, 20), (60, 50)]), "label": "flag"},
        {**polygon([(100, 100), (140, 140)]), "shape_type": "rectangle", "label": "crate"},
    ])
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, [answer(RED)]))
    assert w.open_image(scene_png)
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow() and w.focusWidget() is w.canvas)
    assert [o.label for o in w.annotation.objects] == ["flag", "crate"]
    qtbot.keyClick(w.canvas, Qt.Key.Key_J, Qt.KeyboardModifier.ControlModifier)  # labelme: Edit Polygons
    assert w.canvas.tool == "edit"

    # A press on the crate selects it and shows its corners; a corner dragged reshapes it.
    press(qtbot, w, 120, 120)
    qtbot.mouseRelease(w.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(w, 120, 120))
    assert w.annotation.selected == 1 and w.canvas.edit_shapes[0]["shape_type"] == "rectangle"
    crate = w.annotation.objects[1]
    press(qtbot, w, 140, 140)  # a click on a corner that does not move it is no edit (no undo step)
    qtbot.mouseRelease(w.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(w, 140, 140))
    assert w.annotation.objects[1] is crate and not w.annotation.can_undo()
    drag(qtbot, w, (140, 140), (170, 160))
    reshaped = w.annotation.objects[1].shapes[0][1]
    assert reshaped["shape_type"] == "rectangle" and near(reshaped["points"], [(100, 100), (170, 160)])
    assert w.annotation.objects[1].label == "crate" and w.headline.text().endswith("· edited")

    # Dragging inside the flag moves it whole; Alt+click on its edge adds a vertex, Alt+Shift+click deletes one.
    flag = w.annotation.objects[0]
    drag(qtbot, w, (50, 25), (60, 35))
    assert w.annotation.selected == 0
    moved = w.annotation.objects[0].shapes[0][1]["points"]
    assert near(moved, [(30, 30), (70, 30), (70, 60)], tol=1.0)
    alt = Qt.KeyboardModifier.AltModifier
    press(qtbot, w, 50, 30, alt)  # the middle of the top edge
    qtbot.mouseRelease(w.canvas.viewport(), Qt.MouseButton.LeftButton, alt, view_pos(w, 50, 30))
    assert len(w.annotation.objects[0].shapes[0][1]["points"]) == 4
    press(qtbot, w, 50, 30, alt | Qt.KeyboardModifier.ShiftModifier)
    assert near(w.annotation.objects[0].shapes[0][1]["points"], [(30, 30), (70, 30), (70, 60)], tol=1.0)
    press(qtbot, w, 70, 60, alt | Qt.KeyboardModifier.ShiftModifier)  # three vertices stay (labelme's rule)
    assert len(w.annotation.objects[0].shapes[0][1]["points"]) == 3

    # Each gesture was one undo step: back to the file's objects, in four steps.
    for _ in range(4):
        w.undo()
    assert w.annotation.objects[0] is flag and w.annotation.objects[1] is crate

    # Saved after the crate's drag alone: the flag is written as it was read, the crate differs in points only.
    w.redo()
    out = json.loads(w.save_annotation().read_text())
    assert out["tool"] == "kept" and out["version"] == "5.4.1"
    assert out["shapes"][0] == doc["shapes"][0]
    assert {k: v for k, v in out["shapes"][1].items() if k != "points"} == \
        {k: v for k, v in doc["shapes"][1].items() if k != "points"}


def test_a_sam_result_is_edited_as_polygons_and_moved_exactly(qtbot, ready):
    from PySide6.QtCore import Qt

    w = ready
    ask(qtbot, w, "the red square")
    sam = w.annotation.objects[0]
    assert sam.shapes == () and sam.mask.any()
    qtbot.keyClick(w.canvas, Qt.Key.Key_J, Qt.KeyboardModifier.ControlModifier)
    traced = w.canvas.edit_shapes
    assert traced and all(s["shape_type"] == "polygon" for s in traced)

    import cv2

    # The pixel deepest inside (the image's border counts as outside: the outline runs along it too).
    depth = cv2.distanceTransform(np.pad(sam.mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    row, col = np.unravel_index(np.argmax(depth), depth.shape)
    inside = (int(col), int(row))
    drag(qtbot, w, inside, (inside[0] + 12, inside[1] + 7))
    moved = w.annotation.objects[0]
    expected = np.zeros_like(sam.mask)
    h, wd = sam.mask.shape
    dx, dy = (round(v) for v in np.array(moved.prompt.clicks[0][:2]) - np.array(sam.prompt.clicks[0][:2]))
    assert abs(dx - 12) <= 1 and abs(dy - 7) <= 1
    expected[dy:, dx:] = sam.mask[:h - dy, :wd - dx]
    assert (moved.mask == expected).all() and moved.shapes == ()  # a mask moves by whole pixels, unchanged

    # Stop and runs: edits wait for a run to finish, as SAM refinement does.
    w.running = True
    drag(qtbot, w, (inside[0] + 12, inside[1] + 7), (inside[0] + 20, inside[1] + 7))
    assert w.annotation.objects[0] is moved and w.last_message.title == "A run is in progress"
    w.running = False
    w.clear_message()

    require("labelme")
    x, y = w.canvas.edit_shapes[0]["points"][0]
    drag(qtbot, w, (x, y), (x - 10, y - 10))
    edited = w.annotation.objects[0]
    assert edited.shapes and edited.shapes[0][0] is None and edited.query == "the red square"
    assert near([edited.shapes[0][1]["points"][0]], [(x - 10, y - 10)])
    path = w.save_annotation()
    out = json.loads(path.read_text())
    assert all(s["shape_type"] == "polygon" and s["label"] == "red square" for s in out["shapes"])
    (mask,) = labelme_masks(path).values()  # several polygons share a group: one object for labelme too
    assert (mask == edited.mask).all()

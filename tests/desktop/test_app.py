"""The real app, offscreen, driven with pytest-qt. The policy is either the tiny bundle's real llama.cpp
model (random weights: it streams, can be stopped, and never writes a valid answer) or a replaying double
in front of the tiny bundle's real SAM 2 (for results with objects and votes); the expected results come
from running the engine directly."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.models import require
from tests.scripted import BLUE, RANDOM_SAM, RED, ReplayPolicy, answer

VOTE_TEXTS = [answer(RED), answer(RED), answer(RED, BLUE), answer(BLUE), answer(RED),
              '<answer>[{"bbox_2d": oops</answer>', "<think> none </think> <answer>[]</answer>", answer(RED)]


def window(qtbot, home, **kwargs):
    require("PySide6")
    from desktop.window import MainWindow

    w = MainWindow(home=home, **kwargs)
    qtbot.addWidget(w)
    w.show()
    return w


def replay_loader(segmenter, texts, vote_temperature=1.0):
    from engine.pipeline import LocalReasoner

    return lambda bundle, max_samples: LocalReasoner(ReplayPolicy(texts), segmenter, frame="pixels-112", **RANDOM_SAM,
                                                bundle={"name": "tiny-replay"}, vote_temperature=vote_temperature)


def ask(qtbot, w, query, n, timeout=120_000):
    from PySide6.QtCore import Qt

    w.set_samples(n)
    w.query.setCurrentText(query)
    with qtbot.waitSignal(w.run_finished, timeout=timeout):
        qtbot.keyClick(w.query.lineEdit(), Qt.Key.Key_Return)


def test_query_vote_inspector_exports_and_autosave(qtbot, home, tiny_segmenter, scene_image, scene_png, tmp_path):
    from pycocotools import mask as coco_mask

    from engine.pipeline import LocalReasoner

    expected = LocalReasoner(ReplayPolicy(VOTE_TEXTS), tiny_segmenter, frame="pixels-112", **RANDOM_SAM).run(
        scene_image, "the red square", 8)
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, VOTE_TEXTS))
    assert w.open_image(scene_png)
    ask(qtbot, w, "the red square", 8)

    assert not w.running and w.last_message is None
    assert (w.outcome.mask == expected.mask).all() and expected.mask.any()
    assert w.canvas.mask_item is not None and len(w.canvas.marks) >= 2  # final mask, box + point drawn
    chosen = [c for c in expected.vote.clusters if c.id in expected.vote.selected]
    kept = {m.index: m for c in chosen for m in c.members}
    drawn = [kept[i] for i in expected.vote.chosen_members]  # the vote's own choice, drawn on the canvas
    assert [t["box"] for t in w._final_targets(w.outcome)] == \
        [list(expected.samples[m.sample].targets[m.obj].box) for m in drawn]
    assert w.reasoning.count() == 8 and w.reasoning.text(0) == VOTE_TEXTS[0]
    assert w.reasoning.tabText(5).endswith("✗") and w.reasoning.tabText(6).endswith("∅")
    tree = w.votes.tree
    assert tree.topLevelItemCount() == len(expected.vote.clusters) > 0
    selected = [c.id for c in expected.vote.clusters if c.id in expected.vote.selected]
    assert [tree.topLevelItem(i).text(5) == "★" for i in range(tree.topLevelItemCount())] == \
        [c.id in selected for c in expected.vote.clusters]
    assert "K = 1" in w.votes.summary.text() and "1 said 'no object', 1 could not be parsed" in w.votes.summary.text()
    first = expected.vote.clusters[0]
    w.votes.select_cluster(first.id)
    assert w.canvas.highlight_item is not None
    w.sample_list.setCurrentRow(3)  # the blue-only sample
    assert w.reasoning.currentIndex() == 3 and w.canvas.marks

    out = tmp_path / "out"
    out.mkdir()
    paths = {kind: w.export_to(kind, out / f"r.{kind}") for kind in ("mask", "overlay", "coco", "labelme")}
    assert (np.asarray(Image.open(paths["mask"])) > 0).tolist() == expected.mask.tolist()
    overlay = np.asarray(Image.open(paths["overlay"]))
    assert overlay.shape == scene_image.shape and (overlay[~expected.mask] == scene_image[~expected.mask]).all()
    assert (overlay[expected.mask] != scene_image[expected.mask]).any()
    coco = json.loads(paths["coco"].read_text())
    decoded = [coco_mask.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
               for a in coco["annotations"]]
    assert (np.logical_or.reduce(decoded).astype(bool) == expected.mask).all()
    assert json.loads(paths["labelme"].read_text())["shapes"]

    # Autosave: a new window (the app restarted) finds the result and the query with the image.
    w.close()
    w2 = window(qtbot, home, loader=replay_loader(tiny_segmenter, VOTE_TEXTS))
    assert w2.open_image(scene_png)
    assert w2.outcome is not None and (w2.outcome.mask == expected.mask).all()
    assert w2.query.currentText() == "the red square" and w2.query.itemText(0) == "the red square"
    assert w2.votes.tree.topLevelItemCount() == len(expected.vote.clusters)
    assert w2.settings.samples == 8  # remembered


def test_voting_temperature_is_the_bundles_unless_the_user_picks_one(qtbot, home, tiny_segmenter, scene_png):
    """A bundle that recommends voting at 0.25 (as the nano one does) votes at 0.25 in a fresh app; a value
    the user sets wins and is remembered; a single sample stays greedy. The result records what was used."""
    loader = replay_loader(tiny_segmenter, VOTE_TEXTS, vote_temperature=0.25)
    w = window(qtbot, home, loader=loader)
    assert w.temperature.text() == "T: bundle's"
    assert w.open_image(scene_png)
    ask(qtbot, w, "the red square", 8)
    assert w.outcome.data["sampling"]["temperature"] == 0.25
    assert "bundle's T 0.25" in w.device.text() and "sampled at temperature 0.25" in w.votes.summary.text()

    w.temperature.setValue(0.7)
    ask(qtbot, w, "the red square", 8)
    assert w.outcome.data["sampling"]["temperature"] == 0.7

    single = replay_loader(tiny_segmenter, VOTE_TEXTS[:1], vote_temperature=0.25)
    w.close()
    w2 = window(qtbot, home, loader=single)
    assert w2.temperature.value() == 0.7  # remembered
    assert w2.open_image(scene_png)
    ask(qtbot, w2, "the red square", 1)
    assert w2.outcome.data["sampling"]["temperature"] == 0.0  # greedy


def test_real_bundle_streams_and_stops(qtbot, home, tiny_bundle, scene_png):
    """The tiny bundle's real llama.cpp policy: tokens stream into the tabs, Stop ends the run early, the
    device line names the bundle, and the random model's answer is explained, not crashed on."""
    require("llama_cpp")
    w = window(qtbot, home, bundle=str(tiny_bundle))
    assert w.open_image(scene_png)
    w.set_samples(8)
    w.query.setCurrentText("the red square")
    live = []  # the status line after each sample's report: a count of finished samples
    w.worker.sample_done.connect(lambda *_: live.append(w.stage.text()))
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        assert w.run_query()
        qtbot.waitUntil(lambda: any(w.reasoning.text(i) for i in range(8)), timeout=60_000)
        w.cancel()
    assert w.outcome is None  # no complete result to keep: none is shown
    stopped_run = w.reasoning_outcome
    assert stopped_run.data["cancelled"] and stopped_run.headline().startswith("Stopped while reasoning")
    assert all(s["finish_reason"] in ("cancelled", "stop", "length") for s in stopped_run.samples)
    stopped = [i for i, s in enumerate(stopped_run.samples) if s["finish_reason"] == "cancelled"]
    assert stopped and all(w.reasoning.tabText(i).endswith("■") for i in stopped)  # never "no object"
    finished = len(stopped_run.samples) - len(stopped)
    assert w.stage.text() == f"Stopped while reasoning: {finished} of 8 samples had finished."
    counts = [int(t.split("… ")[1].split("/")[0]) for t in live if "samples finished" in t]
    assert max(counts, default=0) == finished, live  # a sample cut short was never counted as finished
    assert w.record.latest_result() is None  # a stopped run is not autosaved as the image's result
    assert "on CPU" in w.device.text() and "SAM 2 onnx" in w.device.text()

    w.set_samples(1)
    w.query.setCurrentText("the blue circle")
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        w.run_query()
    assert not w.outcome.data["cancelled"] and w.outcome.headline()  # explained whatever it wrote


class GatedPolicy(ReplayPolicy):
    """A replaying policy that holds its answer until the test opens the gate (a run still in flight)."""

    def __init__(self, texts):
        super().__init__(texts)
        import threading

        self.gate, self.entered = threading.Event(), threading.Event()

    def sample(self, image, query, n, sampling, *, on_token=None, cancel=None):
        self.entered.set()
        assert self.gate.wait(60)
        return super().sample(image, query, n, sampling, on_token=on_token, cancel=cancel)


def test_stop_is_recorded_as_stopped_and_keeps_the_last_complete_result(qtbot, home, tiny_segmenter, scene_png):
    """After Stop the screen is the last complete result exactly as it was (mask, boxes, samples, votes,
    headline); the stopped run's texts stay reachable in the Reasoning tab, labelled as a stopped run."""
    from engine.pipeline import LocalReasoner

    policy = GatedPolicy(VOTE_TEXTS)
    w = window(qtbot, home, loader=lambda bundle, n: LocalReasoner(policy, tiny_segmenter, frame="pixels-112", **RANDOM_SAM))
    assert w.open_image(scene_png)
    policy.gate.set()
    # the worker hands over a result already decoded (24 MP x 32 samples took seconds on the UI thread,
    # and a Ctrl+Q pressed meanwhile went unanswered)
    prepared = []
    w.worker.finished.connect(lambda tag, outcome: prepared.append("answer_objects" in outcome._cache))
    ask(qtbot, w, "the red square", 8)
    assert prepared == [True]
    complete = w.record.latest_result()
    assert complete is not None and not complete["cancelled"] and w.outcome.mask.any() and w.outcome.vote
    before = {"headline": w.headline.text(), "votes": w.votes.summary.text(), "samples": w.sample_list.count(),
              "clusters": w.votes.tree.topLevelItemCount(), "targets": [m.sceneBoundingRect().getRect() for m in w.canvas.marks],
              "mask": w.canvas.mask_item is not None}

    policy.gate.clear()
    policy.entered.clear()
    w.query.setCurrentText("the blue circle")
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        assert w.run_query()
        assert policy.entered.wait(30)
        w.cancel()  # Stop while the policy is busy: its answer arrives after Stop, and is not used
        policy.gate.set()
    assert w.outcome.data == complete  # the kept result is the one on screen
    after = {"headline": w.headline.text(), "votes": w.votes.summary.text(), "samples": w.sample_list.count(),
             "clusters": w.votes.tree.topLevelItemCount(), "targets": [m.sceneBoundingRect().getRect() for m in w.canvas.marks],
             "mask": w.canvas.mask_item is not None}
    assert after == before
    assert w.reasoning_outcome.stopped and w.reasoning_outcome.query == "the blue circle"
    assert w.side.tabText(w.side.indexOf(w.reasoning)) == "Reasoning (stopped run)"
    assert w.stage.text().startswith("Stopped while") and w.stage.text().endswith("The last complete result is kept.")
    assert w.record.latest_result() == complete  # the stopped run replaced nothing
    w.open_image(scene_png)  # re-opening restores the complete result
    assert w.outcome.data == complete
    assert w.side.tabText(w.side.indexOf(w.reasoning)) == "Reasoning"


def test_a_result_never_lands_on_another_image(qtbot, home, tiny_segmenter, scene_png, scene_image, tmp_path):
    from desktop.store import ImageRecord
    from engine.pipeline import LocalReasoner

    other = tmp_path / "images" / "other.png"
    Image.fromarray(np.ascontiguousarray(scene_image[:, ::-1])).save(other)
    policy = GatedPolicy(VOTE_TEXTS[:1])
    w = window(qtbot, home, loader=lambda bundle, n: LocalReasoner(policy, tiny_segmenter, frame="pixels-112", **RANDOM_SAM))
    assert w.open_image(scene_png)
    first_key = w.record.key
    w.query.setCurrentText("the red square")
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        assert w.run_query()
        assert policy.entered.wait(30)
        assert w.open_image(other)  # the user moves on while the run is in flight
        policy.gate.set()
    assert w.outcome is None and w.canvas.mask_item is None  # nothing shown on the new image
    # nor any word of the run left behind: its samples arrived after the move, and are not this image's
    assert not any(word in w.stage.text() for word in ("Reasoning", "Segmenting", "samples", "prompts")), w.stage.text()
    assert w.reasoning.count() == 0 and w.headline.text().startswith("other.png")
    assert w.record.latest_result() is None and ImageRecord(first_key, home).latest_result() is None
    assert not w._has_result()  # nothing to export

    # A complete result that arrives late (it finished just before Stop reached it) is kept with its own image.
    from desktop.worker import RunTag
    from engine.results import result_to_dict

    data = result_to_dict(LocalReasoner(ReplayPolicy(VOTE_TEXTS[:1]), tiny_segmenter, frame="pixels-112", **RANDOM_SAM).run(
        scene_image, "the red square", 1))
    from desktop.outcome import Outcome

    w.worker.finished.emit(RunTag(w.runs, first_key, "scene.png", "the red square"), Outcome(data))
    qtbot.waitUntil(lambda: ImageRecord(first_key, home).latest_result() is not None, timeout=10_000)
    assert ImageRecord(first_key, home).latest_result() == data
    assert w.outcome is None and w.record.latest_result() is None


def test_bad_inputs_give_messages_and_lose_nothing(qtbot, home, tmp_path, scene_png, tiny_bundle):
    w = window(qtbot, home, bundle=str(tmp_path / "no-such-bundle"))
    assert not w.run_query() and w.last_message.title == "No image"
    assert w.open_image(scene_png)
    broken = tmp_path / "broken.png"
    broken.write_bytes(scene_png.read_bytes()[:200])
    assert not w.open_image(broken)
    assert w.last_message.title == "Image problem" and "broken.png" in w.last_message.text
    assert w.image_path == scene_png and w.image is not None  # the open image stays
    assert not w.open_image(tmp_path / "missing.png") and w.last_message.title == "Image problem"
    w.query.setCurrentText("   ")
    assert not w.run_query() and w.last_message.title == "Query problem"
    assert w.export_to("mask", tmp_path / "m.png") is None and w.last_message.title == "Nothing to export"

    w.query.setCurrentText("the red square")
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        w.run_query()
    assert w.last_message.title == "Model bundle problem" and "no-such-bundle" in w.last_message.text
    assert "Ctrl+B" in w.last_message.remedy and not w.running and w.banner.isVisible()

    # A bundle whose model file was tampered with is refused with the same kind of message.
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, tampered)
    gguf = next(p for p in tampered.rglob("*.gguf") if "mmproj" not in p.name)
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0xFF
    gguf.write_bytes(bytes(data))
    w.set_bundle(str(tampered))
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        pass
    assert w.last_message.title == "Model bundle problem"


def test_folder_paste_large_images_and_shortcuts(qtbot, home, tmp_path, scene_image):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent, QGuiApplication, QImage, QKeySequence

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(scene_image, 10 * i, axis=1)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    w = window(qtbot, home)
    assert w.open_folder(folder) == 3 and w.image_path.name == "img0.png"
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)  # shortcuts go to the active window
    w.canvas.setFocus()

    def shows(name):  # images from the folder list are read in the background
        qtbot.waitUntil(lambda: getattr(w.image_path, "name", None) == name and w.loading_path is None, timeout=10_000)

    qtbot.keyClick(w.canvas, Qt.Key.Key_D)
    shows("img1.png")
    qtbot.keyClick(w.canvas, Qt.Key.Key_D)
    qtbot.keyClick(w.canvas, Qt.Key.Key_D)  # stays on the last
    shows("img2.png")
    qtbot.keyClick(w.canvas, Qt.Key.Key_A)
    shows("img1.png")

    h, wd = 120, 90
    QGuiApplication.clipboard().setImage(QImage(np.full((h, wd, 3), 200, np.uint8).data, wd, h, 3 * wd,
                                                QImage.Format.Format_RGB888).copy())
    assert w.paste_image() and w.image.shape == (h, wd, 3) and (w.image == 200).all()

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder / "img2.png"))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    w.dropEvent(event)
    shows("img2.png")

    big = np.zeros((300, 9000, 3), np.uint8)
    w.open_array(big)
    assert w.canvas.factor == 3 and w.canvas.sceneRect().width() == 9000  # shown at 1/3, scene in full pixels
    assert w.canvas.image_item.pixmap().width() == 3000

    keys = [k for _, k in w.shortcuts()]
    assert len(keys) == len(set(keys)) >= 20  # every frequent action has its own key
    for name in ("open", "paste", "previous", "next", "run", "cancel", "export_mask", "copy_mask", "fit", "shortcuts"):
        assert not w.actions_by_name[name].shortcut().isEmpty()
    assert w.actions_by_name["cancel"].shortcut() == QKeySequence("Esc")


def test_first_run_offers_the_sample_and_a_query(qtbot, home):
    from desktop.window import SAMPLE_IMAGE, suggested_query

    w = window(qtbot, home)
    assert w.settings.first_run
    w.first_run()
    assert w.image_path == SAMPLE_IMAGE and w.suggestion.isVisible()
    assert suggested_query() in w.suggestion.text() and not w.settings.first_run


def test_the_hostile_image_corpus_through_open_drop_and_paste(qtbot, home, tmp_path, scene_png, scene_image):
    """Every file of the corpus opened, dropped and pasted (as a file): the odd-but-valid ones show at the
    size a viewer shows, the others give a message naming the file and the open image stays."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent, QGuiApplication, QImage

    from tests.hostile import image_corpus

    w = window(qtbot, home)
    for bad in image_corpus(tmp_path / "corpus", scene_image):
        for how in ("open", "drop", "paste"):
            assert w.open_image(scene_png)
            w.clear_message()
            if how == "open":
                w.open_image(bad.path)
            else:
                mime = QMimeData()
                mime.setUrls([QUrl.fromLocalFile(str(bad.path))])
                if how == "drop":
                    w.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime,
                                           Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
                    qtbot.waitUntil(lambda: w.loading_path is None, timeout=10_000)  # read in the background
                else:
                    QGuiApplication.clipboard().setMimeData(mime)
                    w.paste_image()
            if bad.readable:
                assert w.image_path == bad.path and (w.image.shape[1], w.image.shape[0]) == bad.shown_size, (bad, how)
            elif how == "drop" and not bad.path.is_file():
                assert w.image_path == scene_png  # a folder is opened as a folder, a missing path ignored
            else:
                assert w.image_path == scene_png and w.last_message is not None, (bad.name, how)
                assert bad.name in w.last_message.text, (bad.name, how, w.last_message.text)

    assert w.open_image(scene_png)
    huge = QImage(9000, 8000, QImage.Format.Format_RGB888)  # 72 MP: above the 64 MP limit
    huge.fill(0)
    QGuiApplication.clipboard().setImage(huge)
    assert not w.paste_image() and "above the limit" in w.last_message.text and w.image_path == scene_png


def test_single_key_shortcuts_belong_to_the_canvas_and_enter_runs_what_was_typed(qtbot, home, tmp_path,
                                                                                 scene_image, tiny_segmenter):
    from PySide6.QtCore import Qt

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(scene_image, 15 * i, axis=1)).save(folder / f"img{i}.png")
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, VOTE_TEXTS[:1]))
    assert w.open_folder(folder) == 2 and w.image_path.name == "img0.png"
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)  # shortcuts go to the active window
    assert w.focusWidget() is w.canvas  # opening an image gives the canvas the keyboard
    qtbot.keyClick(w.canvas, Qt.Key.Key_D)  # on the canvas, D is "next image" (read in the background)
    qtbot.waitUntil(lambda: w.image_path.name == "img1.png" and w.loading_path is None, timeout=10_000)
    w.query.lineEdit().setFocus()
    qtbot.keyClicks(w.query.lineEdit(), "dad")
    assert w.query.currentText() == "dad" and w.image_path.name == "img1.png"  # in the query box it is text

    w.record.add_query("the red square and the blue circle")
    w.query.clear()
    w.query.addItems(w.record.history())
    w.query.setCurrentText("")
    w.query.lineEdit().setFocus()
    w.set_samples(1)
    qtbot.keyClicks(w.query.lineEdit(), "the red square")
    with qtbot.waitSignal(w.run_finished, timeout=60_000):
        qtbot.keyClick(w.query.lineEdit(), Qt.Key.Key_Return)
    assert w.outcome.query == "the red square"  # what was typed, not the longer history entry


def test_small_things_annotators_notice(qtbot, home, tmp_path, scene_image, tiny_segmenter):
    """The mask's outline, member rows that show which sample they are, a folder highlight and a status line
    that follow the image, the query kept across images (an option), settings saved when they change."""
    from PySide6.QtGui import QColor

    from desktop.canvas import mask_to_qimage
    from desktop.store import Settings

    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    image = mask_to_qimage(mask, QColor("#00d0ff"), 0.25)
    alpha = np.array([[image.pixelColor(x, y).alpha() for x in range(5)] for y in range(5)])
    assert alpha[2, 2] == 64 and alpha[1, 1] == alpha[1, 3] == alpha[3, 2] == 255 and alpha[0, 0] == 0

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(scene_image, 15 * i, axis=1)).save(folder / f"img{i}.png")
    w = window(qtbot, home, loader=replay_loader(tiny_segmenter, VOTE_TEXTS))
    assert w.open_folder(folder) == 2
    ask(qtbot, w, "the red square", 8)
    assert w.stage.text().startswith("Done")
    tree = w.votes.tree
    member = tree.topLevelItem(0).child(0)
    assert tree.columnWidth(0) >= tree.fontMetrics().horizontalAdvance(member.text(0))

    w.query.setCurrentText("the blue circle")
    w.step_folder(1)
    assert w.stage.text() == "Opening img1.png…"  # read in the background
    qtbot.waitUntil(lambda: w.image_path.name == "img1.png" and w.loading_path is None, timeout=10_000)
    assert w.files.currentRow() == 1
    assert w.stage.text() == "" and w.query.currentText() == "the blue circle"  # kept (the default)
    w.open_array(scene_image)  # a pasted image is not one of the folder's
    assert w.files.currentRow() == -1 and not w.files.selectedItems()
    w.set_keep_query(False)
    w.open_image(folder / "img1.png")
    assert w.files.currentRow() == 1 and w.query.currentText() == ""

    w.set_colour("#123456")
    w.opacity.setValue(30)
    saved = Settings.load(home)  # on disk already, before any clean exit
    assert saved.colour == "#123456" and saved.opacity == pytest.approx(0.3) and saved.keep_query is False


def test_a_large_image_is_read_while_the_window_answers(qtbot, home, tmp_path):
    """Switching to a large PNG froze the window for seconds (decoding ran on the UI thread): it is read in
    the background with a busy cursor, the event loop keeps ticking, and of several requests in flight only
    the last is shown."""
    import time

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (2400, 3200, 3), dtype=np.uint8)).save(big)  # noise: slow to decode
    small = [tmp_path / f"s{i}.png" for i in range(2)]
    for i, path in enumerate(small):
        Image.fromarray(np.full((40, 60, 3), 50 * i, np.uint8)).save(path)
    w = window(qtbot, home)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    started = time.perf_counter()
    w.request_image(big)
    assert w.stage.text() == "Opening big.png…" and QApplication.overrideCursor() is not None
    qtbot.waitUntil(lambda: w.image_path == big, timeout=30_000)
    loaded_s = time.perf_counter() - started
    timer.stop()
    assert QApplication.overrideCursor() is None and w.image.shape == (2400, 3200, 3)
    during = [t for t in ticks if t - started < loaded_s * 0.8]
    assert len(during) >= 5, (len(during), loaded_s)  # the UI thread ran while the file was decoded

    shown = []
    w.canvas.set_image = (lambda original: lambda rgb: (shown.append(rgb.shape), original(rgb)))(w.canvas.set_image)
    for path in (small[0], big, small[1]):
        w.request_image(path)
    qtbot.waitUntil(lambda: w.image_path == small[1] and w.loading_path is None, timeout=30_000)
    qtbot.wait(200)
    assert shown == [(40, 60, 3)] and w.image_path == small[1]  # only the last request was shown


def test_window_size_place_and_split_are_remembered(qtbot, home):
    w = window(qtbot, home)
    w.resize(720, 560)  # within the offscreen screen (800 x 600): restoreGeometry keeps a window on screen
    w.split.setSizes([300, 400])
    sizes = w.split.sizes()
    w.close()
    w2 = window(qtbot, home)
    assert (w2.width(), w2.height()) == (720, 560)
    assert w2.split.sizes() == sizes
    w2.close()
    (home / "settings.json").write_text((home / "settings.json").read_text().replace(w2.settings.geometry, "bm9wZQ=="))
    w3 = window(qtbot, home)  # a damaged value: the default size, no error
    assert (w3.width(), w3.height()) == (1280, 820)

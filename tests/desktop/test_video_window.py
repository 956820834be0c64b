"""The app's video window, offscreen, on a clip of the sample scene panning: the shipped nano policy answers on
the key frame and the nano bundle's SAM, brought back to PyTorch (`star-export import-sam`), follows it with
SAM 2's video predictor. The references are `star track` on the same clip and sam2's own video path
(`init_state` on the JPEG folder, its own prompts and propagation)."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.models import require

QUERY = "what coffee is served in"
FRAMES, WIDTH, KEY = 8, 160, 2


def _clip(folder):
    """The sample scene panning 4 px a frame, as JPEGs named as sam2's own video loader wants them."""
    from engine.samples import sample_scene

    image, _ = sample_scene()
    rgb = np.asarray(image)
    folder.mkdir()
    for i in range(FRAMES):
        Image.fromarray(np.ascontiguousarray(rgb[:, 4 * i:4 * i + WIDTH])).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


def _window(qtbot, nano_sam2):
    require("PySide6")
    require("torch")
    require("llama_cpp")
    from desktop.video_window import VideoWindow
    from engine.track.loading import video_segmenter

    w = VideoWindow(video_loader=lambda bundle: video_segmenter(f"{nano_sam2.config}:{nano_sam2.checkpoint}", bundle))
    qtbot.addWidget(w)
    w.show()
    return w


def _shown_rgb(w) -> np.ndarray:
    from PySide6.QtGui import QImage

    image = w.canvas.image_item.pixmap().toImage().convertToFormat(QImage.Format.Format_RGB888)
    row = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return row[:, :3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def _track(qtbot, w, key, *, reask=True):
    w.show_frame(key)
    w.query.setCurrentText(QUERY)
    w.reask.setChecked(reask)
    with qtbot.waitSignal(w.run_finished, timeout=300_000):
        assert w.track_from_here()


@pytest.mark.timeout(900)
def test_scrubbing_tracking_and_export_give_what_star_track_gives(qtbot, home, nano_sam2, tmp_path, capsys):
    from engine.cli import main
    from engine.frames import FrameSource
    from engine.track.palette import read_indexed_png

    clip = _clip(tmp_path / "clip")
    w = _window(qtbot, nano_sam2)
    assert w.open_clip(clip) and w.slider.maximum() == FRAMES - 1
    w.slider.setValue(5)
    assert w.position == 5 and w.frame_label.text() == f"6 / {FRAMES}"
    assert (_shown_rgb(w) == FrameSource(clip).frame(5).rgb).all()

    _track(qtbot, w, KEY)
    assert w.last_message is None, w.last_message
    assert w.last_result["frames"] == FRAMES and not w.last_result["stopped"] and sorted(w.frames) == list(range(FRAMES))
    asks = w.last_result["run"].asks
    assert asks[0].position == KEY and asks[0].answers, "the nano policy answers on the key frame"
    assert w.tracks.count() == len(w.labels) >= 1 and f"Frame {KEY + 1} (key frame)" in w.reasoning.toPlainText()

    out = tmp_path / "cli"
    assert main(["track", str(clip), QUERY, "--sam2", f"{nano_sam2.config}:{nano_sam2.checkpoint}", "--out", str(out),
                 "--key-frame", str(KEY), "--quiet", "--no-overlay"]) == 0, capsys.readouterr().err
    record = json.loads((out / "track.json").read_text())
    assert record["asks"][0]["answers"] == json.loads(json.dumps(asks[0].answers))
    h = FrameSource(clip).frame(0).rgb.shape[0]
    for position in range(FRAMES):
        expected = read_indexed_png(out / "masks" / f"{position:05d}.png")
        assert (w.labels_at(position, (h, WIDTH)) == expected).all(), position
    tracked = next(p for p in range(FRAMES) if w.frames[p])
    w.show_frame(tracked)
    assert w.canvas.mask_item is not None  # the frame's tracks drawn over it

    exported = tmp_path / "exported"
    with qtbot.waitSignal(w.worker.exported, timeout=120_000):
        assert w.export_to(exported, labelme=True)
    written = json.loads((exported / "track.json").read_text())
    assert written["complete"] and written["frames_done"] == FRAMES and written["settings"]["query"] == QUERY
    assert {p: {t: e["rle"] for t, e in f["tracks"].items()} for p, f in written["frames"].items()} == \
        {p: {t: e["rle"] for t, e in f["tracks"].items()} for p, f in record["frames"].items()}
    assert all((read_indexed_png(exported / "masks" / f"{p:05d}.png") ==
                read_indexed_png(out / "masks" / f"{p:05d}.png")).all() for p in range(FRAMES))
    assert sorted(p.name for p in (exported / "labelme").iterdir()) == [f"{i:05d}.json" for i in range(FRAMES)]
    assert not w.export_to(clip)  # a folder holding other files is refused, nothing written
    assert "holds other files" in w.last_message.text and not (clip / "track.json").exists()


@pytest.mark.timeout(900)
def test_stop_keeps_the_frames_made_and_an_export_says_it_is_incomplete(qtbot, home, nano_sam2, tmp_path):
    from PySide6.QtCore import Qt

    clip = _clip(tmp_path / "clip")
    w = _window(qtbot, nano_sam2)
    assert w.open_clip(clip)
    # Stop as the first frame is made (the worker's own thread reads the flag before the next frame)
    w.worker.frame_done.connect(lambda *_: w.worker.cancel(), Qt.ConnectionType.DirectConnection)
    _track(qtbot, w, KEY)
    assert w.last_result["stopped"] and w.last_result["frames"] == 1 == len(w.frames)
    assert not w.running and w.stop_button.isEnabled() is False and w.track_button.isEnabled()
    with qtbot.waitSignal(w.worker.exported, timeout=120_000):
        assert w.export_to(tmp_path / "partial")
    written = json.loads((tmp_path / "partial" / "track.json").read_text())
    assert written["complete"] is False and written["frames_done"] == 1


@pytest.mark.timeout(900)
def test_clicks_on_a_frame_start_and_correct_tracks_from_there_as_sam2s_own_predictor(qtbot, home, nano_sam2,
                                                                                      tmp_path):
    """Track from frame 2 (no re-asks); on frame 5, N and a click on the cup start track 2, then a right click
    removes a spot from track 1: frames 5-7 are what sam2's own video predictor gives for the same prompts in
    the same order, and frames 0-4 are untouched."""
    import torch

    from engine.rle import decode
    from engine.segment.torch_backend import build_model

    clip = _clip(tmp_path / "clip")
    w = _window(qtbot, nano_sam2)
    assert w.open_clip(clip)
    _track(qtbot, w, KEY, reask=False)
    answers = w.last_result["run"].asks[0].answers
    assert [a["track"] for a in answers] == [1]
    before = {p: dict(w.frames[p]) for p in range(FRAMES)}
    at, cup, background = 5, (152.0, 143.0), (20.0, 20.0)
    w.show_frame(at)
    assert w.new_track() == 2 and w.canvas.tool == "click"
    with qtbot.waitSignal(w.run_finished, timeout=300_000):
        w.canvas.clicked.emit(*cup, True)
    assert w.last_message is None and w.last_result["frames"] == FRAMES - at, w.last_result
    w.tracks.setCurrentRow(0)
    assert w.selected_track() == 1
    with qtbot.waitSignal(w.run_finished, timeout=300_000):
        w.canvas.clicked.emit(*background, False)
    assert w.last_message is None and w.last_result["frames"] == FRAMES - at and w.position == at
    assert w.clicks == {(at, 2): [(*cup, True)], (at, 1): [(*background, False)]} and len(w.canvas.prompt_marks) == 1

    reference = build_model(nano_sam2.config, nano_sam2.checkpoint, video=True)  # sam2's SAM2VideoPredictor
    state = reference.init_state(str(clip))
    with torch.inference_mode():
        reference.add_new_points_or_box(state, frame_idx=KEY, obj_id=1, box=np.asarray(answers[0]["box"], np.float32),
                                        points=np.asarray([answers[0]["point"]], np.float32),
                                        labels=np.asarray([1], np.int32))
        for _ in reference.propagate_in_video(state, start_frame_idx=KEY, reverse=True):
            pass
        for _ in reference.propagate_in_video(state, start_frame_idx=KEY):
            pass
        for track, point, label in ((2, cup, 1), (1, background, 0)):
            reference.add_new_points_or_box(state, frame_idx=at, obj_id=track, points=np.asarray([point], np.float32),
                                            labels=np.asarray([label], np.int32), clear_old_points=True)
            expected = {f: {int(t): (m[0] > 0).numpy() for t, m in zip(ids, masks)}
                        for f, ids, masks in reference.propagate_in_video(state, start_frame_idx=at)}
    assert expected[at][2].sum() > 500  # the new track's mask on the frame clicked is the cup's
    for position in range(at, FRAMES):
        got = {t: decode(rle) for t, rle in w.frames[position].items()}
        for t, mask in expected[position].items():
            assert (got.get(t, np.zeros_like(mask)) == mask).all(), (position, t)
    assert all(w.frames[p] == before[p] for p in range(at))


@pytest.mark.timeout(600)
def test_the_main_window_opens_a_video_and_a_bundle_without_memory_says_it_cannot_track(qtbot, home, tiny_bundle,
                                                                                      tmp_path):
    """File > Open video from the main window, on a bundle whose segmenter is image graphs alone (the tiny one):
    the clip opens on the window's bundle; tracking says in the banner that this bundle cannot track and what
    to choose instead."""
    require("PySide6")
    require("llama_cpp")
    require("onnxruntime")
    from desktop.window import MainWindow

    clip = _clip(tmp_path / "clip")
    main = MainWindow(home=home, bundle=str(tiny_bundle))
    qtbot.addWidget(main)
    main.show()
    video = main.open_video_window(clip)
    assert video in main.video_windows and len(video.source) == FRAMES and video.bundle == str(tiny_bundle)
    video.query.setCurrentText(QUERY)
    with qtbot.waitSignal(video.run_finished, timeout=120_000):
        assert video.track_from_here()
    message = video.last_message
    assert message.title == "Model bundle problem" and "cannot track" in message.text
    assert "star-export sam2 --video" in message.text and "--sam2" not in message.text.replace("sam2 --video", "")
    assert not video.running and video.frames == {} and video.track_button.isEnabled()
    main.close()
    assert not video.isVisible()

"""The video window: open a video or a folder of frames, scrub and play it, ask a query on the frame shown and
watch SAM 2's memory follow the answer through the clip, correct a track with clicks on any frame (carried on
to the end), and export the result as `star track` writes it.

The window holds the clip's masks as COCO RLE per frame and track (a long clip stays small); the worker
(video_worker.VideoWorker, on its own thread) holds the model, SAM 2 and the memory of the clip last tracked.
Every request carries a run number: reports of a run the person has since replaced are not shown.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QThread, QTimer, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.frames import VIDEO_SUFFIXES
from engine.track.palette import label_image, voc_palette

from . import dialogs
from .canvas import Canvas
from .messages import ShowsMessages, UserMessage, user_message
from .panels import Banner
from .video_worker import CorrectRequest, ExportRequest, TrackRequest, VideoWorker, default_video_loader
from .window_layout import SAMPLE_CHOICES
from .worker import default_loader

PLAY_FPS = 10.0  # a folder of frames has no frame rate of its own
MAX_TRACK_ID = 255  # an indexed PNG holds 255 tracks


def ask_text(ask) -> str:
    """One ask of the policy as the reasoning panel lists it."""
    answers = "; ".join(f"track {a['track']}: {a['label'] or 'object'} box {a['box']}" for a in ask.answers) \
        or "no object"
    return f"Frame {ask.position + 1} ({ask.reason}), {ask.ms / 1000:.1f} s\n{ask.reasoning.strip()}\n-> {answers}\n"


class VideoWindow(ShowsMessages, QMainWindow):
    track_requested = Signal(object)
    correct_requested = Signal(object)
    export_requested = Signal(object)
    close_requested = Signal()
    run_finished = Signal()  # after a run's end (finished, stopped or failed) is shown

    def __init__(self, *, bundle: str | None = None, loader=default_loader, video_loader=default_video_loader,
                 log_path: str | None = None, parent=None):
        super().__init__(parent)
        self.bundle, self.log_path = bundle, log_path
        self.source = None              # engine.frames.FrameSource of the clip shown
        self.path: Path | None = None
        self.frames: dict[int, dict] = {}   # position -> {track: RLE}
        self.scores: dict[int, dict] = {}   # position -> {track: object score}
        self.labels: dict[int, str] = {}    # track -> label
        self.clicks: dict[tuple[int, int], list] = {}  # (position, track) -> [(x, y, adds)]
        self.position = 0
        self.runs = 0
        self.running = False
        self.tracked = False            # the worker's memory holds this clip (clicks can correct it)
        self.last_result: dict | None = None
        self.last_message: UserMessage | None = None
        self.settings: dict = {}
        self._started = 0.0
        self._done_in_run = 0
        self._run_kind = ""             # "track" or "correct"
        self.palette = voc_palette()
        self.setWindowTitle("StAR Desktop: video")
        self._build_ui()
        self._build_actions()
        self.play_timer = QTimer(self)
        self.play_timer.timeout.connect(self._play_step)
        self._start_worker(loader, video_loader, log_path)
        self.resize(1280, 820)

    # ---- layout ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas = Canvas()
        self.canvas.clicked.connect(self.on_canvas_click)
        self.query = QComboBox()
        self.query.setEditable(True)
        self.query.setCompleter(None)
        self.query.lineEdit().setPlaceholderText("What to follow, e.g. \"the thing that keeps food cold\"; Enter "
                                                 "tracks from the frame shown")
        self.query.lineEdit().returnPressed.connect(self.track_from_here)
        self.samples = QComboBox()
        for n in SAMPLE_CHOICES:
            self.samples.addItem(f"{n} sample{'s' if n > 1 else ''}", n)
        self.reask = QCheckBox("Ask again when a track is lost")
        self.reask.setChecked(True)
        self.track_button = QPushButton("Track from this frame")
        self.track_button.clicked.connect(self.track_from_here)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        row = QHBoxLayout()
        row.addWidget(self.query, 1)
        for w in (self.samples, self.reask, self.track_button, self.stop_button):
            row.addWidget(w)

        self.banner = Banner()

        self.play_button = QPushButton("Play")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(self.set_playing)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self.show_frame)
        self.frame_label = QLabel("no clip")
        self.follow = QCheckBox("Follow")
        self.follow.setToolTip("While tracking, show each frame as it is made (a correction stays on its frame)")
        self.follow.setChecked(True)
        scrub = QHBoxLayout()
        scrub.addWidget(self.play_button)
        scrub.addWidget(self.slider, 1)
        scrub.addWidget(self.frame_label)
        scrub.addWidget(self.follow)

        self.tracks = QListWidget()
        self.tracks.setToolTip("The track that clicks correct (click tool: left adds, right removes)")
        self.tracks.currentRowChanged.connect(lambda _row: self.show_frame(self.position))  # its clicks drawn
        self.new_track_button = QPushButton("New track")
        self.new_track_button.clicked.connect(self.new_track)
        self.reasoning = QPlainTextEdit()
        self.reasoning.setReadOnly(True)
        self.reasoning.setPlaceholderText("The policy's reasoning on the key frame and on every frame where it "
                                          "was asked again")
        self.labelme = QCheckBox("labelme files too")
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self.export_dialog)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(QLabel("Tracks"))
        side_layout.addWidget(self.tracks, 1)
        side_layout.addWidget(self.new_track_button)
        side_layout.addWidget(QLabel("Reasoning"))
        side_layout.addWidget(self.reasoning, 2)
        export_row = QHBoxLayout()
        export_row.addWidget(self.labelme)
        export_row.addWidget(self.export_button)
        side_layout.addLayout(export_row)
        self.split = QSplitter()
        self.split.addWidget(self.canvas)
        self.split.addWidget(side)
        self.split.setSizes([900, 340])
        self.split.setChildrenCollapsible(False)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(row)
        layout.addWidget(self.banner)
        layout.addWidget(self.split, 1)
        layout.addLayout(scrub)
        self.setCentralWidget(central)
        self.stage = QLabel("Open a video or a folder of frames (Ctrl+O / Ctrl+Shift+O).")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.statusBar().addWidget(self.stage, 1)
        self.statusBar().addPermanentWidget(self.progress)

    def _build_actions(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        edit_menu = self.menuBar().addMenu("&Edit")
        self.actions_by_name: dict[str, QAction] = {}
        spec = [
            ("open", "Open video…", "Ctrl+O", self.open_video_dialog, file_menu),
            ("folder", "Open folder of frames…", "Ctrl+Shift+O", self.open_folder_dialog, file_menu),
            ("export", "Export tracks…", "Ctrl+E", self.export_dialog, file_menu),
            ("close", "Close", "Ctrl+W", self.close, file_menu),
            ("track", "Track from this frame", "Ctrl+Return", self.track_from_here, edit_menu),
            ("stop", "Stop", "Esc", self.stop, edit_menu),
            ("play", "Play / pause", "Space", self.play_button.toggle, edit_menu),
            ("next", "Next frame", "Right", lambda: self.step(1), edit_menu),
            ("previous", "Previous frame", "Left", lambda: self.step(-1), edit_menu),
            ("click", "Click tool (left adds, right removes; corrects the selected track)", "Q",
             lambda: self.set_tool("click"), edit_menu),
            ("pan", "Pan tool", "H", lambda: self.set_tool("pan"), edit_menu),
            ("new_track", "New track", "N", self.new_track, edit_menu),
        ]
        for name, text, keys, slot, menu in spec:
            action = QAction(text, self)
            action.setShortcut(QKeySequence(keys))
            action.triggered.connect(slot)
            menu.addAction(action)
            if len(keys) == 1 or keys in ("Space", "Right", "Left"):
                # keys a text box takes as typing belong to the canvas
                action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                self.canvas.addAction(action)
            else:
                self.addAction(action)
            self.actions_by_name[name] = action

    # ---- worker ------------------------------------------------------------------------------------
    def _start_worker(self, loader, video_loader, log_path) -> None:
        self.thread_ = QThread(self)
        self.worker = VideoWorker(loader, video_loader, log_path)
        self.worker.moveToThread(self.thread_)
        self.track_requested.connect(self.worker.track)
        self.correct_requested.connect(self.worker.correct)
        self.export_requested.connect(self.worker.export)
        self.close_requested.connect(self.worker.close, Qt.ConnectionType.BlockingQueuedConnection)
        self.worker.stage.connect(self._on_stage)
        self.worker.frame_done.connect(self._on_frame_done)
        self.worker.asked.connect(self._on_asked)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.exported.connect(self._on_exported)
        self.worker.export_failed.connect(self.show_message)
        self.thread_.start()

    # ---- the clip ----------------------------------------------------------------------------------
    def open_video_dialog(self) -> None:
        path = dialogs.choose(self, "Open a video", str(self.path or ""),
                              "Videos (" + " ".join(f"*{s}" for s in VIDEO_SUFFIXES) + ")")
        if path:
            self.open_clip(path)

    def open_folder_dialog(self) -> None:
        path = dialogs.choose(self, "Open a folder of frames (read in name order)", str(self.path or ""), folders=True)
        if path:
            self.open_clip(path)

    def open_clip(self, path) -> bool:
        """Show the first frame of a video file or a folder of images; what was tracked before is dropped."""
        from engine.frames import FrameSource

        if self.running:
            self.stop()
        try:
            source = FrameSource(path)
            first = source.frame(0).rgb
        except Exception as exc:  # noqa: BLE001 - a file that is not a clip is a message
            self.show_message(user_message(exc, self.log_path))
            return False
        if self.source is not None:
            self.source.close()
        self.source, self.path = source, Path(path)
        self.frames, self.scores, self.labels, self.clicks = {}, {}, {}, {}
        self.tracked, self.last_result, self.position = False, None, 0
        self.runs += 1  # reports still coming from a run on the last clip are not this clip's
        self.reasoning.clear()
        self._refresh_tracks()
        self.clear_message()
        self.canvas.set_image(first)
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(source) - 1)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.show_frame(0)
        self.setWindowTitle(f"StAR Desktop: {self.path.name}")
        self.stage.setText(f"{len(source)} frames; type a query and track from the frame shown")
        return True

    def show_frame(self, position: int) -> None:
        """The frame at `position` with its tracks (the zoom kept) and the clicks given on it."""
        if self.source is None:
            return
        position = max(0, min(int(position), len(self.source) - 1))
        self.position = position
        if self.slider.value() != position:
            self.slider.blockSignals(True)
            self.slider.setValue(position)
            self.slider.blockSignals(False)
        rgb = self.source.frame(position).rgb
        self.canvas.set_image(rgb, keep_view=True)
        self.canvas.set_labels(self.labels_at(position, rgb.shape[:2]), self.palette)
        track = self.selected_track()
        self.canvas.set_prompt(self.clicks.get((position, track), []) if track else [], None)
        self.frame_label.setText(f"{position + 1} / {len(self.source)}")

    def labels_at(self, position: int, shape: tuple[int, int]) -> np.ndarray | None:
        """The frame's tracks as a label image (None where the frame has not been tracked)."""
        from engine.rle import decode

        if position not in self.frames:
            return None
        return label_image({t: decode(rle) for t, rle in self.frames[position].items()}, shape)

    def step(self, delta: int) -> None:
        if self.source is not None:
            self.show_frame(self.position + delta)

    def set_playing(self, playing: bool) -> None:
        if playing and self.source is not None:
            if self.position >= len(self.source) - 1:
                self.show_frame(0)
            self.play_timer.start(int(1000 / (self.source.fps() or PLAY_FPS)))
            self.play_button.setText("Pause")
        else:
            self.play_timer.stop()
            self.play_button.setText("Play")
            if self.play_button.isChecked():
                self.play_button.setChecked(False)

    def _play_step(self) -> None:
        if self.source is None or self.position >= len(self.source) - 1:
            self.set_playing(False)
            return
        self.show_frame(self.position + 1)

    def set_tool(self, tool: str) -> None:
        self.canvas.set_tool(tool)

    # ---- tracks ------------------------------------------------------------------------------------
    def selected_track(self) -> int | None:
        item = self.tracks.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def _refresh_tracks(self, select: int | None = None) -> None:
        select = select if select is not None else self.selected_track()
        self.tracks.blockSignals(True)
        self.tracks.clear()
        for track in sorted(self.labels):
            item = QListWidgetItem(f"{track}  {self.labels[track]}")
            item.setData(Qt.ItemDataRole.UserRole, track)
            r, g, b = (int(c) for c in self.palette[track])
            item.setForeground(QBrush(QColor(r, g, b)))
            self.tracks.addItem(item)
            if track == select:
                self.tracks.setCurrentItem(item)
        if self.tracks.currentItem() is None and self.tracks.count():
            self.tracks.setCurrentRow(0)
        self.tracks.blockSignals(False)

    def new_track(self) -> int | None:
        """A new, empty track that the next clicks start (it is followed from the frame clicked on)."""
        track = max(self.labels, default=0) + 1
        if track > MAX_TRACK_ID:
            self.show_message(UserMessage("Too many tracks", f"an indexed PNG holds {MAX_TRACK_ID} tracks.",
                                          "Correct an existing track instead."))
            return None
        self.labels[track] = "object"
        self._refresh_tracks(select=track)
        self.set_tool("click")
        self.stage.setText(f"Track {track}: click on the object (left adds, right removes)")
        return track

    # ---- runs --------------------------------------------------------------------------------------
    def typed_query(self) -> str:
        return self.query.currentText().strip()

    def track_from_here(self) -> bool:
        """Ask the query on the frame shown and follow its answer through the clip."""
        if self.source is None:
            self.show_message(UserMessage("No clip", "there is nothing to track yet.",
                                          "Open a video (Ctrl+O) or a folder of frames (Ctrl+Shift+O)."))
            return False
        query = self.typed_query()
        if not query:
            self.show_message(UserMessage("Query problem", "the query is empty.",
                                          "Type what to follow in the query box and press Enter."))
            return False
        if self.running:
            self.stop()
        self.set_playing(False)
        self.frames, self.scores, self.labels, self.clicks = {}, {}, {}, {}
        self.reasoning.clear()
        self._refresh_tracks()
        samples = int(self.samples.currentData())
        self.settings = {"source": str(self.path), "query": query, "key_frame": self.position, "n": samples,
                         "stride": 1, "max_frames": None, "reask": self.reask.isChecked(), "seed": 0,
                         "bundle": self.bundle}
        self._begin_run(len(self.source), "track")
        self.track_requested.emit(TrackRequest(str(self.path), query, self.position, samples, self.bundle,
                                               reask=self.reask.isChecked(), run=self.runs))
        self.show_frame(self.position)
        return True

    def on_canvas_click(self, x: float, y: float, adds: bool) -> None:
        """A click with the click tool: into the selected track's clicks on this frame, then carried on."""
        if self.source is None:
            return
        if not self.tracked:
            self.show_message(UserMessage("Nothing to correct yet", "clicks correct a track that SAM 2 follows.",
                                          "Track a query first (Enter in the query box)."))
            return
        track = self.selected_track() or self.new_track()
        if track is None:
            return
        key = (self.position, track)
        self.clicks.setdefault(key, []).append((float(x), float(y), bool(adds)))
        self.correct(self.position, track, self.clicks[key])

    def correct(self, position: int, track: int, clicks: list) -> None:
        """SAM 2's memory takes `clicks` for `track` on `position`; every frame after it is made again."""
        if self.running:
            self.worker.cancel()  # the new correction runs once the worker is free
        self._begin_run(len(self.source) - position, "correct")
        self.correct_requested.emit(CorrectRequest(position, track, list(clicks), run=self.runs))
        self.canvas.set_prompt(clicks, None)

    def _begin_run(self, frames: int, kind: str) -> None:
        self.runs += 1
        self._run_kind = kind
        self.running, self.last_result = True, None
        self._started, self._done_in_run = time.perf_counter(), 0
        self.clear_message()
        self.track_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, max(1, frames))
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m frames")
        self.progress.setVisible(True)

    def stop(self) -> None:
        """Stop the run in flight after the frame it is on (the frames made so far stay)."""
        if self.running:
            self.worker.cancel()
            self.stage.setText("Stopping…")
        elif self.play_timer.isActive():
            self.set_playing(False)

    def _current(self, run: int) -> bool:
        return run == self.runs

    def _on_stage(self, run: int, text: str) -> None:
        if self._current(run):
            self.stage.setText(text)

    def _on_frame_done(self, run: int, position: int, masks: dict, scores: dict) -> None:
        if not self._current(run):
            return
        self.frames[position], self.scores[position] = masks, scores
        for track in masks:
            self.labels.setdefault(track, "object")
        self._done_in_run += 1
        self.progress.setValue(min(self._done_in_run, self.progress.maximum()))
        seconds = time.perf_counter() - self._started
        self.stage.setText(f"frame {position + 1}: {self._done_in_run / seconds:.1f} frames/s" if seconds else "")
        # a track run is followed frame by frame; a correction stays on the frame being corrected
        if (self.follow.isChecked() and self._run_kind == "track") or position == self.position:
            self.show_frame(position)

    def _on_asked(self, run: int, ask) -> None:
        if not self._current(run):
            return
        for answer in ask.answers:
            self.labels[int(answer["track"])] = answer["label"] or "object"
        self._refresh_tracks()
        self.reasoning.appendPlainText(ask_text(ask))

    def _on_finished(self, run: int, result: dict) -> None:
        if not self._current(run):
            return
        self.last_result = result
        for track, state in result["run"].tracks.items():
            self.labels.setdefault(track, state.label or "object")
        self._refresh_tracks()
        self.tracked = True
        self._end_run()
        stopped = " (stopped)" if result["stopped"] else ""
        seconds = time.perf_counter() - self._started
        self.stage.setText(f"{result['frames']} frames made{stopped} in {seconds:.1f} s; {len(self.frames)} of "
                           f"{result['total']} frames have tracks")
        self.show_frame(self.position)
        self.run_finished.emit()

    def _on_failed(self, run: int, message: UserMessage) -> None:
        if not self._current(run):
            return
        self._end_run()
        self.show_message(message)
        self.run_finished.emit()

    def _end_run(self) -> None:
        self.running = False
        self.track_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.progress.setVisible(False)

    # ---- export ------------------------------------------------------------------------------------
    def export_dialog(self) -> None:
        if self._can_export():
            default = str(self.path.with_name(self.path.stem + "-tracks"))
            out = dialogs.choose(self, "Export the tracks to a folder (masks/, track.json, overlay.mp4)", default,
                                 folders=True)
            if out:
                self.export_to(out, labelme=self.labelme.isChecked())

    def _can_export(self) -> bool:
        if self.source is None or not self.frames:
            self.show_message(UserMessage("Nothing to export", "no frame has tracks yet.",
                                          "Track a query first (Enter in the query box)."))
            return False
        return True

    def export_to(self, out, *, labelme: bool = False) -> bool:
        """Write the frames as `star track` writes its folder (in the background; `exported` says when)."""
        if not self._can_export():
            return False
        if self.running:
            self.show_message(UserMessage("Tracking in progress", "the frames are still being made.",
                                          "Wait for the run to finish, or Stop it, then export."))
            return False
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not (out / "track.json").is_file():
            self.show_message(UserMessage("Export problem", f"{out} holds other files.",
                                          "Choose an empty or new folder."))
            return False
        self.stage.setText(f"Exporting to {out}…")
        self.export_requested.emit(ExportRequest(str(out), str(self.path), dict(self.frames), dict(self.scores),
                                                 dict(self.settings), labelme))
        return True

    def _on_exported(self, out: str) -> None:
        self.stage.setText(f"Exported to {out}")

    # ---- lifetime ----------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802
        self.hide()
        self.play_timer.stop()
        self.worker.cancel()  # a run in flight ends after its frame
        if self.thread_.isRunning():
            self.close_requested.emit()  # blocks until the worker's thread has freed the model and SAM 2
        self.thread_.quit()
        if not self.thread_.wait(30000):
            self.thread_.terminate()
        if self.source is not None:
            self.source.close()
        super().closeEvent(event)

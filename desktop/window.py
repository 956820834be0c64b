"""The main window: it owns the current image, its Outcome and its autosave record, and wires the canvas,
the panels and the inference worker together. Every action has a shortcut (see SHORTCUTS); problems
show in the banner under the query box as a message and a remedy, never as a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QThread, Signal
from PySide6.QtGui import QAction, QColor, QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ImageError
from engine.images import image_size, load_image, max_pixels
from engine.pipeline import check_query

from . import exports
from .canvas import Canvas, mask_to_qimage
from .messages import UserMessage, user_message
from .outcome import Outcome
from .panels import ReasoningPanel, SamplesPanel, VotePanel
from .store import BUNDLE_TEMPERATURE, ImageRecord, Settings, image_key
from .worker import InferenceWorker, Request, RunTag, default_loader

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SAMPLE_CHOICES = (1, 8, 16, 32)
SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "engine" / "samples" / "scene.png"


def suggested_query() -> str:
    try:
        return json.loads(SAMPLE_IMAGE.with_suffix(".json").read_text())["query"]
    except (OSError, ValueError, KeyError):
        return "the thing that keeps food cold"


class MainWindow(QMainWindow):
    run_requested = Signal(object)
    load_requested = Signal(object)
    close_requested = Signal()
    run_finished = Signal()  # after a result (or a failure) is shown, on the UI thread

    def __init__(self, *, home: Path | None = None, loader=default_loader, bundle: str | None = None,
                 log_path: str | None = None):
        super().__init__()
        self.home = home
        self.settings = Settings.load(home)
        if bundle is not None:
            self.settings.bundle = bundle
        self.image: np.ndarray | None = None
        self.image_path: Path | None = None
        self.record: ImageRecord | None = None
        self.outcome: Outcome | None = None
        self.folder: list[Path] = []
        self.running = False
        self.runs = 0  # the number of the latest run (RunTag.run)
        self.last_message: UserMessage | None = None
        self.setWindowTitle("StAR Desktop")
        self.setAcceptDrops(True)
        self._build_ui()
        self._build_actions()
        self._start_worker(loader, log_path)
        self.resize(1280, 820)

    # ---- layout ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas = Canvas()
        self.query = QComboBox()
        self.query.setEditable(True)
        self.query.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.query.lineEdit().setPlaceholderText('Ask for something, e.g. "the thing that keeps food cold"; Enter runs')
        self.query.lineEdit().returnPressed.connect(self.run_query)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run_query)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.cancel)
        self.samples = QComboBox()
        for n in SAMPLE_CHOICES:
            self.samples.addItem(f"{n} sample{'s' if n > 1 else ''}" + (" (direct)" if n == 1 else " (vote)"), n)
        self.samples.setCurrentIndex(max(0, self.samples.findData(self.settings.samples)))
        self.samples.currentIndexChanged.connect(self._on_samples_changed)
        self.temperature = QDoubleSpinBox()
        # The lowest value stands for "the bundle's": a bundle may recommend its own voting temperature
        # (the nano model votes best at 0.25, StAR at 1.0), which the app follows unless the user picks one.
        self.temperature.setRange(BUNDLE_TEMPERATURE, 2.0)
        self.temperature.setDecimals(2)
        self.temperature.setSingleStep(0.05)
        self.temperature.setSpecialValueText("T: bundle's")
        self.temperature.setValue(self.settings.temperature)
        self.temperature.setPrefix("T ")
        self.temperature.setToolTip("Sampling temperature for voting (a single sample is greedy); lowest: the "
                                    "bundle's recommendation")
        self.suggestion = QPushButton(f"Try: {suggested_query()}")
        self.suggestion.setFlat(True)
        self.suggestion.clicked.connect(self.use_suggestion)
        self.suggestion.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.query, 1)
        for w in (self.samples, self.temperature, self.run_button, self.stop_button):
            row.addWidget(w)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #5a1e1e; color: white; padding: 6px; }")
        self.banner.setVisible(False)
        self.headline = QLabel("Open an image (Ctrl+O, drop, or paste) and type a query.")
        self.headline.setWordWrap(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(self.settings.opacity * 100))
        self.opacity.setMaximumWidth(160)
        self.opacity.valueChanged.connect(self._on_style)
        self.colour_button = QPushButton("Colour…")
        self.colour_button.clicked.connect(self.choose_colour)
        self.show_mask = QCheckBox("Mask")
        self.show_mask.setChecked(True)
        self.show_mask.toggled.connect(self.canvas.set_mask_visible)
        style_row = QHBoxLayout()
        style_row.addWidget(self.headline, 1)
        style_row.addWidget(self.show_mask)
        style_row.addWidget(QLabel("Opacity"))
        style_row.addWidget(self.opacity)
        style_row.addWidget(self.colour_button)

        self.reasoning = ReasoningPanel()
        self.sample_list = SamplesPanel()
        self.sample_list.sample_selected.connect(self.show_sample)
        self.votes = VotePanel()
        self.votes.cluster_selected.connect(self.show_cluster)
        self.votes.member_selected.connect(self.show_member)
        self.side = QTabWidget()
        self.side.addTab(self.reasoning, "Reasoning")
        self.side.addTab(self.sample_list, "Samples")
        self.side.addTab(self.votes, "Votes")
        split = QSplitter()
        split.addWidget(self.canvas)
        split.addWidget(self.side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([760, 480])
        split.setChildrenCollapsible(False)
        self.side.setMinimumWidth(280)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(row)
        layout.addWidget(self.suggestion, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        layout.addLayout(style_row)
        self.setCentralWidget(central)

        self.files = QListWidget()
        self.files.currentRowChanged.connect(self._on_file_row)
        self.files_dock = QDockWidget("Folder", self)
        self.files_dock.setWidget(self.files)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.files_dock)
        self.files_dock.setVisible(False)

        self.stage = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setVisible(False)
        self.device = QLabel("model: not loaded")
        self.statusBar().addWidget(self.stage, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.device)
        self._on_samples_changed()
        self.canvas.set_style(QColor(self.settings.colour), self.settings.opacity)

    def _build_actions(self) -> None:
        self.actions_by_name: dict[str, QAction] = {}
        bar = QToolBar("Main")
        bar.setObjectName("main-toolbar")
        self.addToolBar(bar)
        file_menu = self.menuBar().addMenu("&File")
        export_menu = QMenu("&Export", self)
        view_menu = self.menuBar().addMenu("&View")
        run_menu = self.menuBar().addMenu("&Run")
        help_menu = self.menuBar().addMenu("&Help")
        spec = [
            ("open", "Open image…", "Ctrl+O", self.open_dialog, file_menu, True),
            ("folder", "Open folder…", "Ctrl+Shift+O", self.open_folder_dialog, file_menu, True),
            ("paste", "Paste image", "Ctrl+Shift+V", self.paste_image, file_menu, True),
            ("previous", "Previous image", "A", lambda: self.step_folder(-1), file_menu, True),
            ("next", "Next image", "D", lambda: self.step_folder(1), file_menu, True),
            ("bundle", "Choose model bundle…", "Ctrl+B", self.choose_bundle, file_menu, False),
            ("default_bundle", "Use the bundled nano model", None, lambda: self.set_bundle(""), file_menu, False),
            ("export_mask", "Mask PNG…", "Ctrl+S", lambda: self.export_dialog("mask"), export_menu, False),
            ("export_overlay", "Overlay PNG…", "Ctrl+Shift+S", lambda: self.export_dialog("overlay"), export_menu, False),
            ("export_coco", "COCO RLE JSON…", "Ctrl+E", lambda: self.export_dialog("coco"), export_menu, False),
            ("export_labelme", "labelme JSON…", "Ctrl+L", lambda: self.export_dialog("labelme"), export_menu, False),
            ("copy_mask", "Copy mask", "Ctrl+Shift+C", self.copy_mask, export_menu, True),
            ("quit", "Quit", "Ctrl+Q", self.close, file_menu, False),
            ("run", "Run query", "Ctrl+Return", self.run_query, run_menu, True),
            ("cancel", "Stop", "Esc", self.cancel, run_menu, True),
            ("n1", "1 sample (direct answer)", "Ctrl+1", lambda: self.set_samples(1), run_menu, False),
            ("n8", "8 samples (vote)", "Ctrl+2", lambda: self.set_samples(8), run_menu, False),
            ("n16", "16 samples (vote)", "Ctrl+3", lambda: self.set_samples(16), run_menu, False),
            ("n32", "32 samples (vote)", "Ctrl+4", lambda: self.set_samples(32), run_menu, False),
            ("fit", "Fit to window", "F", self.canvas.fit, view_menu, True),
            ("actual", "Actual pixels", "1", self.canvas.actual_size, view_menu, False),
            ("zoom_in", "Zoom in", "+", lambda: self.canvas.zoom(1.25), view_menu, False),
            ("zoom_out", "Zoom out", "-", lambda: self.canvas.zoom(0.8), view_menu, False),
            ("toggle_mask", "Show / hide mask", "M", self.show_mask.toggle, view_menu, False),
            ("focus_query", "Go to the query box", "Ctrl+K", self.query.setFocus, view_menu, False),
            ("shortcuts", "Keyboard shortcuts", "F1", self.show_shortcuts, help_menu, True),
        ]
        for name, text, keys, slot, menu, on_bar in spec:
            action = QAction(text, self)
            if keys:
                action.setShortcut(QKeySequence(keys))
            action.triggered.connect(slot)
            menu.addAction(action)
            if on_bar:
                bar.addAction(action)
            self.addAction(action)  # shortcuts work with the menu bar hidden too
            self.actions_by_name[name] = action
        file_menu.insertMenu(self.actions_by_name["quit"], export_menu)
        bar.addAction(export_menu.menuAction())

    def shortcuts(self) -> list[tuple[str, str]]:
        return [(a.text().rstrip("…"), a.shortcut().toString()) for a in self.actions_by_name.values()
                if not a.shortcut().isEmpty()] + [("Run query (in the query box)", "Enter"),
                                                  ("Zoom", "mouse wheel"), ("Pan", "drag")]

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td>{name}</td><td><b>{keys}</b></td></tr>" for name, keys in self.shortcuts())
        box = QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setText(f"<table cellpadding=3>{rows}</table>")
        box.setModal(False)
        box.show()
        self.shortcuts_box = box

    # ---- worker ------------------------------------------------------------------------------------
    def _start_worker(self, loader, log_path) -> None:
        self.thread_ = QThread(self)
        self.worker = InferenceWorker(loader, log_path)
        self.worker.moveToThread(self.thread_)
        self.run_requested.connect(self.worker.run)
        self.load_requested.connect(self.worker.load)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.stage.connect(self._on_stage)
        self.worker.tokens.connect(self.reasoning.append)
        self.worker.sample_done.connect(self._on_sample_done)
        self.worker.progress.connect(self._on_progress)
        # Blocking: the UI waits while the worker's thread frees the native resources it created.
        self.close_requested.connect(self.worker.close, Qt.ConnectionType.BlockingQueuedConnection)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.thread_.start()

    def preload(self) -> None:
        """Load the bundle in the background so the first query does not wait for it."""
        self.load_requested.emit(self.settings.bundle or None)

    def _on_loaded(self, description: str) -> None:
        self.device.setText(description)

    def _on_stage(self, text: str) -> None:
        self.stage.setText(text[:1].upper() + text[1:] + "…")

    def _on_sample_done(self, sample: int, status: str) -> None:
        self.reasoning.mark(sample, status)
        self._done += 1
        self.progress.setRange(0, self._n)
        self.progress.setValue(self._done)
        self.stage.setText(f"Reasoning… {self._done}/{self._n} samples finished")

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.stage.setText(f"{stage[:1].upper() + stage[1:]}… {done}/{total} prompts")

    def _is_current(self, tag: RunTag | None) -> bool:
        """Whether a run's report belongs on screen: the latest run, for the image shown now."""
        return tag is not None and tag.run == self.runs and self.record is not None and tag.image_key == self.record.key

    def _on_finished(self, tag: RunTag, data: dict) -> None:
        self._set_running(False)
        outcome = Outcome(data)
        if not self._is_current(tag):
            # The user moved to another image during the run: a complete result is kept with ITS image
            # (found there next time), a stopped one is dropped; neither is shown or exported here.
            if not outcome.stopped and tag is not None:
                ImageRecord(tag.image_key, self.home).save_result(data, tag.image_name)
                self.stage.setText(f"The run on {tag.image_name} finished after you moved on; it is saved with that image.")
            self.run_finished.emit()
            return
        if not outcome.stopped:  # a stopped run never replaces the last complete result
            self.record.save_result(data, tag.image_name)
        self.show_outcome(outcome)
        t = data["timings"]
        self.stage.setText("Stopped." if outcome.stopped else
                           f"Done in {t['total_ms'] / 1000:.1f} s (policy {t['decode_tokens']} tokens, "
                           f"{t['decode_tokens_per_s']:.0f}/s)")
        self.run_finished.emit()

    def _on_failed(self, tag: RunTag | None, message: UserMessage) -> None:
        if tag is not None:
            self._set_running(False)
        if tag is None or self._is_current(tag):
            self.stage.setText("")
            self.show_message(message)
        self.run_finished.emit()

    # ---- images ------------------------------------------------------------------------------------
    def image_name(self) -> str:
        return self.image_path.name if self.image_path else "pasted.png"

    def open_image(self, path) -> bool:
        path = Path(path)
        try:
            # names the file in its messages; refuses huge or corrupt images (a huge JPEG is read smaller)
            rgb = load_image(path, downscale=True)
            full = image_size(path)
            data = path.read_bytes()
        except OSError as exc:
            self.show_message(user_message(ImageError(f"Could not read {path.name}: {exc.strerror or exc}")))
            return False
        except Exception as exc:  # noqa: BLE001 - shown as a message, the current image stays
            self.show_message(user_message(exc))
            return False
        self.image_path = path
        self.settings.last_dir = str(path.parent)
        self._show_image(rgb, image_key(data))
        if (rgb.shape[1], rgb.shape[0]) != full:
            self.stage.setText(f"{path.name} is {full[0]}×{full[1]}, above the pixel limit: shown and segmented at "
                               f"{rgb.shape[1]}×{rgb.shape[0]}.")
        return True

    def open_array(self, rgb: np.ndarray) -> None:
        self.image_path = None
        self._show_image(load_image(rgb), image_key(np.ascontiguousarray(rgb).tobytes()))

    def _show_image(self, rgb: np.ndarray, key: str) -> None:
        if self.running:
            self.cancel()
        self.clear_message()
        self.image = rgb
        self.record = ImageRecord(key, self.home)
        self.canvas.set_image(rgb)
        self.outcome = None
        self.reasoning.reset(0)
        self.sample_list.show_outcome(None)
        self.votes.show_outcome(None)
        h, w = rgb.shape[:2]
        self.setWindowTitle(f"StAR Desktop — {self.image_name()} ({w}×{h})")
        self.query.clear()
        self.query.addItems(self.record.history())
        self.query.setCurrentText("")
        saved = self.record.latest_result()
        if saved is not None and list(saved.get("image_size", [])) == [w, h]:
            self.show_outcome(Outcome(saved))
            self.query.setCurrentText(saved["query"])
            self.stage.setText("Restored the last result for this image.")
        else:
            self.headline.setText(f"{self.image_name()}: {w}×{h}. Type a query and press Enter.")

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self.settings.last_dir,
                                              "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ")")
        if path:
            self.open_image(path)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder", self.settings.last_dir)
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder) -> int:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            self.show_message(UserMessage("Empty folder", f"{folder} has no images.",
                                          "Choose a folder with PNG, JPEG, BMP, TIFF or WebP files."))
            return 0
        self.folder = files
        self.files.blockSignals(True)
        self.files.clear()
        self.files.addItems([p.name for p in files])
        self.files.blockSignals(False)
        self.files_dock.setVisible(True)
        self.files.setCurrentRow(0)
        self._on_file_row(0)
        return len(files)

    def _on_file_row(self, row: int) -> None:
        if 0 <= row < len(self.folder) and self.folder[row] != self.image_path:
            self.open_image(self.folder[row])

    def step_folder(self, delta: int) -> None:
        if self.folder:
            row = min(max(self.files.currentRow() + delta, 0), len(self.folder) - 1)
            self.files.setCurrentRow(row)

    def paste_image(self) -> bool:
        clip = QGuiApplication.clipboard()
        mime = clip.mimeData()
        if mime is not None and mime.hasUrls():
            local = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
            if local:
                return self.open_image(local[0])
        image = clip.image()
        if image.isNull():
            self.show_message(UserMessage("Nothing to paste", "the clipboard holds no image.",
                                          "Copy an image (or an image file) first."))
            return False
        w, h = image.width(), image.height()
        if w * h > max_pixels():  # checked before the copy: the clipboard's image is already in memory once
            self.show_message(user_message(ImageError(
                f"The pasted image is {w}x{h} ({w * h / 1e6:.0f} MP), above the limit of {max_pixels() / 1e6:.0f} MP. "
                "Downscale it first.")))
            return False
        image = image.convertToFormat(QImage.Format.Format_RGB888)
        arr = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * h).reshape(h, image.bytesPerLine())
        self.open_array(arr[:, :3 * w].reshape(h, w, 3).copy())
        return True

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            path = Path(url.toLocalFile())
            if path.is_dir():
                self.open_folder(path)
                return
            if path.is_file():
                self.open_image(path)
                return

    # ---- running ------------------------------------------------------------------------------------
    def _on_samples_changed(self) -> None:
        self.temperature.setEnabled(self.samples.currentData() != 1)

    def set_samples(self, n: int) -> None:
        self.samples.setCurrentIndex(self.samples.findData(n))

    def use_suggestion(self) -> None:
        self.query.setCurrentText(suggested_query())
        self.run_query()

    def run_query(self) -> bool:
        if self.running:
            return False
        if self.image is None:
            self.show_message(UserMessage("No image", "there is no image to look at.",
                                          "Open one with Ctrl+O, drop it on the window, or paste it."))
            return False
        try:
            query = check_query(self.query.currentText())
        except Exception as exc:  # noqa: BLE001
            self.show_message(user_message(exc))
            return False
        self.clear_message()
        n = int(self.samples.currentData())
        self.settings.samples, self.settings.temperature = n, float(self.temperature.value())
        history = self.record.add_query(query)
        self.query.blockSignals(True)
        self.query.clear()
        self.query.addItems(history)
        self.query.setCurrentText(query)
        self.query.blockSignals(False)
        self.suggestion.setVisible(False)
        self.reasoning.reset(n)
        self.side.setCurrentWidget(self.reasoning)
        self.canvas.set_mask(None)
        self.canvas.highlight(None)
        self.canvas.set_targets([])
        self._n, self._done = n, 0
        self._set_running(True)
        self.headline.setText(f"Thinking about “{query}” with {n} sample{'s' if n > 1 else ''}…")
        temperature = None if self.settings.temperature <= BUNDLE_TEMPERATURE else self.settings.temperature
        self.runs += 1
        tag = RunTag(self.runs, self.record.key, self.image_name(), query)
        self.run_requested.emit(Request(self.image, query, n, temperature, self.settings.bundle or None, tag=tag))
        return True

    def cancel(self) -> None:
        if self.running:
            self.worker.cancel()
            self.stage.setText("Stopping…")

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.samples.setEnabled(not running)
        self.progress.setVisible(running)
        self.progress.setRange(0, 0)  # busy until the first sample finishes

    # ---- results -----------------------------------------------------------------------------------
    def show_outcome(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.canvas.set_mask(outcome.mask)
        self.canvas.highlight(None)
        self.canvas.set_targets(self._final_targets(outcome))
        self.reasoning.show_outcome(outcome)
        self.sample_list.show_outcome(outcome)
        self.votes.show_outcome(outcome)
        self.headline.setText(outcome.headline())
        if outcome.vote is not None:
            self.side.setCurrentWidget(self.votes)

    @staticmethod
    def _final_targets(outcome: Outcome) -> list[dict]:
        if outcome.vote is None:
            return outcome.samples[0]["targets"] if outcome.samples else []
        chosen = outcome.vote.get("chosen") or []
        if chosen:  # "best" mode: the members whose masks make the final one
            return [outcome.samples[m["sample"]]["targets"][m["object"]] for m in chosen]
        targets = []
        for c in outcome.clusters:  # consensus mode: each selected cluster's best-scoring member
            if c["selected"]:
                best = max(c["members"], key=lambda m: m["score"])
                targets.append(outcome.samples[best["sample"]]["targets"][best["object"]])
        return targets

    def show_sample(self, index: int) -> None:
        if self.outcome is None or not 0 <= index < len(self.outcome.samples):
            self.canvas.highlight(None)
            return
        self.canvas.highlight(self.outcome.sample_mask(index))
        self.canvas.set_targets(self.outcome.samples[index]["targets"])
        if index < self.reasoning.count():
            self.reasoning.setCurrentIndex(index)

    def show_cluster(self, cluster_id: int) -> None:
        if self.outcome is None or cluster_id < 0:
            self.canvas.highlight(None)
            return
        self.canvas.highlight(self.outcome.cluster_mask(cluster_id))

    def show_member(self, sample: int, obj: int) -> None:
        if self.outcome is not None:
            self.canvas.highlight(self.outcome.target_mask(sample, obj))
            self.canvas.set_targets([self.outcome.samples[sample]["targets"][obj]])

    def _on_style(self) -> None:
        self.settings.opacity = self.opacity.value() / 100
        self.canvas.set_style(opacity=self.settings.opacity)

    def choose_colour(self) -> None:
        colour = QColorDialog.getColor(QColor(self.settings.colour), self, "Mask colour")
        if colour.isValid():
            self.set_colour(colour.name())

    def set_colour(self, name: str) -> None:
        self.settings.colour = name
        self.canvas.set_style(colour=QColor(name))

    # ---- bundle ------------------------------------------------------------------------------------
    def choose_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model bundle (a folder with bundle.json)",
                                                  self.settings.bundle or "")
        if folder:
            self.set_bundle(folder)

    def set_bundle(self, folder: str) -> None:
        self.settings.bundle = folder
        self.settings.save(self.home)
        self.device.setText("model: loading…")
        self.preload()

    # ---- export ------------------------------------------------------------------------------------
    EXPORT_SUFFIX = {"mask": "_mask.png", "overlay": "_overlay.png", "coco": "_coco.json", "labelme": ".json"}

    def export_dialog(self, kind: str) -> None:
        if not self._has_result():
            return
        stem = self.image_path.with_suffix("") if self.image_path else Path(self.settings.last_dir or ".") / "pasted"
        default = str(stem) + self.EXPORT_SUFFIX[kind]
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind}", default)
        if path:
            self.export_to(kind, path)

    def export_to(self, kind: str, path) -> Path | None:
        if not self._has_result():
            return None
        mask, name = self.outcome.mask, self.image_name()
        try:
            if kind == "mask":
                out = exports.write_mask_png(mask, path)
            elif kind == "overlay":
                c = QColor(self.settings.colour)
                out = exports.write_overlay_png(self.image, mask, path, (c.red(), c.green(), c.blue()),
                                                max(self.settings.opacity, 0.05))
            elif kind == "coco":
                out = exports.write_json(exports.coco_json(self.outcome, name), path)
            elif kind == "labelme":
                out = exports.write_json(exports.labelme_json(self.outcome, name), path)
            else:
                raise ValueError(f"unknown export {kind!r}")
        except OSError as exc:
            self.show_message(UserMessage("Export failed", f"could not write {path}: {exc.strerror or exc}",
                                          "Choose a folder you can write to."))
            return None
        self.stage.setText(f"Exported {kind} to {out}")
        return out

    def copy_mask(self) -> None:
        if self._has_result():
            mask = self.outcome.mask
            QGuiApplication.clipboard().setImage(mask_to_qimage(mask, QColor(255, 255, 255), 1.0))
            self.stage.setText("Mask copied to the clipboard")

    def _has_result(self) -> bool:
        if self.outcome is None or self.image is None:
            self.show_message(UserMessage("Nothing to export", "there is no result yet.", "Run a query first."))
            return False
        return True

    # ---- messages and lifetime ------------------------------------------------------------------------
    def show_message(self, message: UserMessage) -> None:
        self.last_message = message
        self.banner.setText(f"<b>{message.title}</b>: {message.text}<br>{message.remedy}")
        self.banner.setVisible(True)

    def clear_message(self) -> None:
        self.last_message = None
        self.banner.setVisible(False)

    def first_run(self) -> None:
        """The sample scene and a suggested query, one click away."""
        if SAMPLE_IMAGE.is_file() and self.image is None:
            self.open_image(SAMPLE_IMAGE)
        self.suggestion.setVisible(True)
        self.settings.first_run = False

    def closeEvent(self, event) -> None:  # noqa: N802
        self.worker.cancel()  # a run in flight ends within a decode step or a batch of prompts
        self.settings.save(self.home)
        if self.thread_.isRunning():
            self.close_requested.emit()  # blocks until the worker's thread has freed the model
        self.thread_.quit()
        if not self.thread_.wait(30000):
            self.thread_.terminate()
        super().closeEvent(event)

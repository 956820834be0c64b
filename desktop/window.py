"""The main window: it owns the current image, its Outcome and its autosave record, and wires the canvas,
the panels and the inference worker together, and records each run's results against the image it was
computed for. Its widgets and actions are built by window_layout.py, images reach it through
window_images.py, the annotator's tools (objects, SAM refinement, undo, labelme files, the folder run) are
in window_editing.py. Problems show in the banner under the query box as a message and a remedy, never as a
traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, Qt, QThread, Signal
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import QColorDialog, QMainWindow

from engine.fileio import write_json_atomically
from engine.pipeline import check_query

from . import dialogs, exports
from .annotation import Annotation
from .canvas import mask_to_qimage
from .image_loader import ImageLoader
from .messages import ShowsMessages, UserMessage, user_message
from .outcome import Outcome
from .store import BUNDLE_TEMPERATURE, ImageRecord, Settings
from .window_editing import EditingMixin
from .window_images import ImagesMixin
from .window_layout import SAMPLE_IMAGE, LayoutMixin, suggested_query
from .window_shapes import ShapeEditingMixin
from .worker import InferenceWorker, Request, RunTag, default_loader


class MainWindow(LayoutMixin, ImagesMixin, EditingMixin, ShapeEditingMixin, ShowsMessages, QMainWindow):
    run_requested = Signal(object)
    load_requested = Signal(object)
    refine_requested = Signal(object)
    folder_requested = Signal(object)
    image_requested = Signal(int, object)  # serial, path (image_loader.ImageLoader.load)
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
        self.annotation: Annotation | None = None  # the image's objects as edited (window_editing.py)
        self.folder: list[Path] = []
        self.running = False
        self.folder_running = False
        self.folder_failures: list[tuple[str, str]] = []
        self.refine_pending = None
        self.runs = 0  # the number of the latest run (RunTag.run)
        self.image_requests = 0  # the serial of the latest image asked for (request_image)
        self.loading_path: Path | None = None  # the image being read in the background, if any
        self.run_on_screen = False  # the run in flight is for the image shown: its progress may be shown
        self.kept_outcome: Outcome | None = None  # on screen when the run started: shown again after Stop
        self.last_message: UserMessage | None = None
        self.reasoning_outcome: Outcome | None = None  # whose texts the Reasoning tab shows
        self.video_windows: list = []  # video windows opened from this one (closed with it)
        self.setWindowTitle("StAR Desktop")
        self.setAcceptDrops(True)
        self._build_ui()
        self._build_actions()
        self._start_worker(loader, log_path)
        self._start_image_loader(log_path)
        self.resize(1280, 820)
        self._restore_geometry()

    # ---- worker ------------------------------------------------------------------------------------
    def _start_worker(self, loader, log_path) -> None:
        self.thread_ = QThread(self)
        self.worker = InferenceWorker(loader, log_path)
        self.worker.moveToThread(self.thread_)
        self.run_requested.connect(self.worker.run)
        self.load_requested.connect(self.worker.load)
        self.refine_requested.connect(self.worker.refine)
        self.folder_requested.connect(self.worker.run_folder)
        self.worker.refined.connect(self._on_refined)
        self.worker.refine_failed.connect(self._on_refine_failed)
        self.worker.folder_progress.connect(self._on_folder_progress)
        self.worker.folder_image.connect(self._on_folder_image)
        self.worker.folder_image_failed.connect(self._on_folder_image_failed)
        self.worker.folder_finished.connect(self._on_folder_finished)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.stage.connect(self._on_stage)
        self.worker.tokens.connect(self._on_tokens)
        self.worker.sample_done.connect(self._on_sample_done)
        self.worker.progress.connect(self._on_progress)
        # Blocking: the UI waits while the worker's thread frees the native resources it created.
        self.close_requested.connect(self.worker.close, Qt.ConnectionType.BlockingQueuedConnection)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.thread_.start()

    def _start_image_loader(self, log_path) -> None:
        self.image_thread = QThread(self)
        self.image_loader = ImageLoader(self.home, log_path)
        self.image_loader.moveToThread(self.image_thread)
        self.image_requested.connect(self.image_loader.load)
        self.image_loader.ready.connect(self._on_image_ready)
        self.image_loader.failed.connect(self._on_image_failed)
        self.image_thread.start()

    def preload(self) -> None:
        """Load the bundle in the background so the first query does not wait for it."""
        self.load_requested.emit(self.settings.bundle or None)

    def _on_loaded(self, description: str) -> None:
        self.device.setText(description)

    # A run's live reports describe the image it was started on: once the user has moved to another image
    # (the run is then being stopped), they are not shown.
    def _on_stage(self, text: str) -> None:
        if self.run_on_screen or not self.running:
            self.stage.setText(text[:1].upper() + text[1:] + "…")

    def _on_tokens(self, chunks: dict) -> None:
        if self.run_on_screen:
            self.reasoning.append(chunks)

    def _on_sample_done(self, sample: int, status: str) -> None:
        if not self.run_on_screen:
            return
        self.reasoning.mark(sample, status)
        if status == "stopped":  # cut short by Stop: not a finished sample
            return
        self._done += 1
        self.progress.setRange(0, self._n)
        self.progress.setValue(self._done)
        self.stage.setText(f"Reasoning… {self._done}/{self._n} samples finished")

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if not self.run_on_screen:
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.stage.setText(f"{stage[:1].upper() + stage[1:]}… {done}/{total} prompts")

    def _is_current(self, tag: RunTag | None) -> bool:
        """Whether a run's report belongs on screen: the latest run, for the image shown now."""
        return tag is not None and tag.run == self.runs and self.record is not None and tag.image_key == self.record.key

    def _on_finished(self, tag: RunTag, outcome: Outcome) -> None:
        self._set_running(False)
        data = outcome.data
        kept, self.kept_outcome = self.kept_outcome, None
        if not self._is_current(tag):
            # The user moved to another image during the run: a complete result is kept with ITS image
            # (found there next time), a stopped one is dropped; neither is shown or exported here.
            if not outcome.stopped and tag is not None:
                ImageRecord(tag.image_key, self.home).save_result(data, tag.image_name)
                self.stage.setText(f"The run on {tag.image_name} finished after you moved on; it is saved with that image.")
            self.run_finished.emit()
            return
        if outcome.stopped:  # never replaces the last complete result, which is shown again as it was
            self.show_stopped(outcome, kept)
            self.run_finished.emit()
            return
        self.record.save_result(data, tag.image_name)
        self.show_outcome(outcome)
        self.add_result_to_annotation(outcome)  # its objects join the image's annotation (one undo step)
        t = data["timings"]
        self.stage.setText(f"Done in {t['total_ms'] / 1000:.1f} s (policy {t['decode_tokens']} tokens, "
                           f"{t['decode_tokens_per_s']:.0f}/s)")
        self.run_finished.emit()

    def show_stopped(self, stopped: Outcome, kept: Outcome | None) -> None:
        """After Stop: the screen as it was before the run (the last complete result's boxes, samples, votes
        and headline; the image's objects), and the stopped run's texts in the Reasoning tab, marked."""
        if kept is not None:
            self.show_outcome(kept)
        else:
            self.outcome = None
            self.canvas.set_targets([])
            self.sample_list.show_outcome(None)
            self.votes.show_outcome(None)
            self.headline.setText(self.objects_headline())
        self.show_annotation()
        self.show_reasoning(stopped, stopped_run=True)
        self.stage.setText(stopped.stop_summary() + (" The last complete result is kept." if kept is not None else ""))

    def _on_failed(self, tag: RunTag | None, message: UserMessage) -> None:
        if tag is not None:
            self._set_running(False)
            kept, self.kept_outcome = self.kept_outcome, None
            if self._is_current(tag):  # the screen as it was before the run
                if kept is not None:
                    self.show_outcome(kept)
                self.show_annotation()
        if tag is None or self._is_current(tag):
            self.stage.setText("")
            self.show_message(message)
        self.run_finished.emit()

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
        query = self.typed_query()
        if query is None:
            return False
        self.clear_message()
        n, temperature = self.sampling_choice()
        history = self.record.add_query(query)
        self.query.blockSignals(True)
        self.query.clear()
        self.query.addItems(history)
        self.query.setCurrentText(query)
        self.query.blockSignals(False)
        self.suggestion.setVisible(False)
        self.kept_outcome = self.outcome
        self.reasoning.reset(n)
        self._label_reasoning(stopped_run=False)
        self.reasoning_outcome = None
        self.side.setCurrentWidget(self.reasoning)
        self.canvas.set_mask(None)
        self.canvas.highlight(None)
        self.canvas.set_targets([])
        self._n, self._done = n, 0
        self.run_on_screen = True
        self._set_running(True)
        self.headline.setText(f"Thinking about “{query}” with {n} sample{'s' if n > 1 else ''}…")
        self.runs += 1
        tag = RunTag(self.runs, self.record.key, self.image_name(), query)
        self.run_requested.emit(Request(self.image, query, n, temperature, self.settings.bundle or None, tag=tag))
        return True

    def typed_query(self) -> str | None:
        """The query box's text, checked (None, with the reason shown, when it cannot be run)."""
        try:
            return check_query(self.query.currentText())
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            self.show_message(user_message(exc))
            return None

    def sampling_choice(self) -> tuple[int, float | None]:
        """N and the voting temperature from the toolbar (None: the bundle's), remembered in the settings."""
        n = int(self.samples.currentData())
        self.settings.samples, self.settings.temperature = n, float(self.temperature.value())
        self.save_settings()
        return n, None if self.settings.temperature <= BUNDLE_TEMPERATURE else self.settings.temperature

    def cancel(self) -> None:
        """Esc: a shape being drawn is dropped first, else the run stops."""
        if self.canvas.drawing:
            self.canvas.cancel_drawing()
        elif self.running:
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
        """A result in the panels and its boxes on the canvas (the mask drawn is the annotation's)."""
        self.outcome = outcome
        self.canvas.highlight(None)
        self.canvas.set_targets(self._final_targets(outcome))
        self.show_reasoning(outcome)
        self.sample_list.show_outcome(outcome)
        self.votes.show_outcome(outcome)
        self.headline.setText(outcome.headline())
        if outcome.vote is not None:
            self.side.setCurrentWidget(self.votes)

    def show_reasoning(self, outcome: Outcome | None, *, stopped_run: bool = False) -> None:
        """The samples' texts in the Reasoning tab; a stopped run's are labelled so in the tab's title."""
        if outcome is None:
            self.reasoning.reset(0)
        else:
            self.reasoning.show_outcome(outcome)
        self.reasoning_outcome = outcome
        self._label_reasoning(stopped_run)

    def _label_reasoning(self, stopped_run: bool) -> None:
        self.side.setTabText(self.side.indexOf(self.reasoning), "Reasoning (stopped run)" if stopped_run
                             else "Reasoning")

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
        if self.reasoning_outcome is self.outcome and index < self.reasoning.count():
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
        self.save_settings()

    def save_settings(self) -> None:
        """Settings are written when they change (a crash or a kill keeps them), not only on a clean exit."""
        try:
            self.settings.save(self.home)
        except OSError as exc:
            self.stage.setText(f"Could not save the settings: {exc.strerror or exc}")

    def choose_colour(self) -> None:
        colour = QColorDialog.getColor(QColor(self.settings.colour), self, "Mask colour")
        if colour.isValid():
            self.set_colour(colour.name())

    def set_colour(self, name: str) -> None:
        self.settings.colour = name
        self.canvas.set_style(colour=QColor(name))
        self.save_settings()

    def set_keep_query(self, keep: bool) -> None:
        self.settings.keep_query = bool(keep)
        self.save_settings()

    # ---- bundle ------------------------------------------------------------------------------------
    def choose_bundle(self) -> None:
        folder = dialogs.choose(self, "Choose a model bundle (a folder with bundle.json)", self.settings.bundle or "",
                                folders=True)
        if folder:
            self.set_bundle(folder)

    def train_on_folder(self) -> None:
        """Run > Train on this folder: `star-train adapt` on the open folder's labelme files."""
        from .train_dialog import TrainDialog

        if not self.folder:
            self.show_message(UserMessage("No folder open", "Training learns from a folder of labelled images.",
                                          "Open a folder (File > Open folder) whose images have labelme files."))
            return
        dialog = TrainDialog(self, self.folder[0].parent, self.settings.bundle or None)
        dialog.use_bundle.connect(self.set_bundle)
        dialog.show()
        self.train_dialog = dialog

    def set_bundle(self, folder: str) -> None:
        self.settings.bundle = folder
        self.save_settings()
        self.device.setText("model: loading…")
        self.preload()

    # ---- video -------------------------------------------------------------------------------------
    def open_video_window(self, path=None):
        """File > Open video: a video window (desktop/video_window.py) on this window's bundle and model source;
        `path` opens that video or frame folder in it, otherwise a file dialog asks for one."""
        from .video_window import VideoWindow

        window = VideoWindow(bundle=self.settings.bundle or None, loader=self.worker.loader,
                             log_path=self.worker.log_path, parent=self)
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        window.destroyed.connect(lambda: self.video_windows.remove(window) if window in self.video_windows else None)
        self.video_windows.append(window)
        window.show()
        if path:
            window.open_clip(path)
        else:
            window.open_video_dialog()
        return window

    # ---- export ------------------------------------------------------------------------------------
    EXPORT_SUFFIX = {"mask": "_mask.png", "overlay": "_overlay.png", "coco": "_coco.json", "labelme": ".json"}

    def export_dialog(self, kind: str) -> None:
        if not self._has_result():
            return
        stem = self.image_path.with_suffix("") if self.image_path else Path(self.settings.last_dir or ".") / "pasted"
        default = str(stem) + self.EXPORT_SUFFIX[kind]
        path = dialogs.choose(self, f"Export {kind}", default, save=True)
        if path:
            self.export_to(kind, path)

    def export_to(self, kind: str, path) -> Path | None:
        """The annotation as edited (the last result's objects unless the user changed them)."""
        if not self._has_result():
            return None
        mask, name = self.annotation.union(), self.image_name()
        objects, size, description = self.annotation.final_objects(), self.annotation.size, self._queries()
        try:
            if kind == "mask":
                out = exports.write_mask_png(mask, path)
            elif kind == "overlay":
                c = QColor(self.settings.colour)
                out = exports.write_overlay_png(self.image, mask, path, (c.red(), c.green(), c.blue()),
                                                max(self.settings.opacity, 0.05))
            elif kind == "coco":
                out = write_json_atomically(path, exports.coco_json(objects, size, name, description))
            elif kind == "labelme":
                out = write_json_atomically(path, exports.labelme_json(objects, size, name, description))
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
            mask = self.annotation.union()
            QGuiApplication.clipboard().setImage(mask_to_qimage(mask, QColor(255, 255, 255), 1.0))
            self.stage.setText("Mask copied to the clipboard")

    def _has_result(self) -> bool:
        if self.image is None or self.annotation is None or not self.annotation.objects:
            self.show_message(UserMessage("Nothing to export", "this image has no objects yet.",
                                          "Run a query, or click on an object with the click tool (Q)."))
            return False
        return True

    # ---- lifetime ------------------------------------------------------------------------------------
    def first_run(self) -> None:
        """The sample scene and a suggested query, one click away."""
        if SAMPLE_IMAGE.is_file() and self.image is None:
            self.open_image(SAMPLE_IMAGE)
        self.suggestion.setVisible(True)
        self.settings.first_run = False

    def _restore_geometry(self) -> None:
        """The window's size, place and panel split as the user last left them (a broken value is ignored)."""
        if self.settings.geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.geometry.encode("ascii")))
        if self.settings.splitter:
            self.split.restoreState(QByteArray.fromBase64(self.settings.splitter.encode("ascii")))

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.splitter = bytes(self.split.saveState().toBase64()).decode("ascii")
        self.hide()  # gone at once, whatever the worker is finishing
        for window in list(self.video_windows):
            window.close()
        self.worker.begin_close()  # a run in flight ends within a decode step or one mask
        self.save_settings()
        if self.thread_.isRunning():
            self.close_requested.emit()  # blocks until the worker's thread has freed the model
        self.thread_.quit()
        if not self.thread_.wait(30000):
            self.thread_.terminate()
        self.image_thread.quit()  # an image being read is finished first (its answer goes nowhere)
        self.image_thread.wait()
        super().closeEvent(event)

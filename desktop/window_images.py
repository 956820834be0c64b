"""Opening images into the main window: files, folders, paste and drop (a mixin of MainWindow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QApplication

from engine.errors import ImageError
from engine.images import load_image, max_pixels

from . import dialogs
from .image_loader import LoadedImage, annotation_stamp, prepared, read_image
from .messages import UserMessage, user_message
from .store import content_key

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class ImagesMixin:
    """Every way an image reaches the window; each refuses bad input with a message and keeps the open image."""

    # ---- images ------------------------------------------------------------------------------------
    def image_name(self) -> str:
        return self.image_path.name if self.image_path else "pasted.png"

    def open_image(self, path) -> bool:
        """Open an image now, on this thread (the app's start, tests, scripts); the window's own ways of
        opening use request_image, which decodes off the UI thread."""
        path = Path(path)
        try:
            loaded = read_image(path, self.home)
        except OSError as exc:
            self.show_message(user_message(ImageError(f"Could not read {path.name}: {exc.strerror or exc}")))
            return False
        except Exception as exc:  # noqa: BLE001 - shown as a message, the current image stays
            self.show_message(user_message(exc))
            return False
        self._show_loaded(loaded)
        return True

    def request_image(self, path) -> None:
        """Open an image in the background: the window answers meanwhile (a busy cursor and the status say
        so), and only the latest request is shown when several are in flight (A / D held down)."""
        path = Path(path)
        self.image_requests += 1
        self.loading_path = path
        self.stage.setText(f"Opening {path.name}…")
        if QApplication.overrideCursor() is None:
            QApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)
        self.image_requested.emit(self.image_requests, path)

    def _loading_done(self) -> None:
        self.loading_path = None
        while QApplication.overrideCursor() is not None:
            QApplication.restoreOverrideCursor()

    def _on_image_ready(self, serial: int, loaded: LoadedImage) -> None:
        if serial != self.image_requests:  # a later request is in flight: this one is not shown
            return
        self._loading_done()
        self._show_loaded(loaded)

    def _on_image_failed(self, serial: int, message: UserMessage) -> None:
        if serial != self.image_requests:
            return
        self._loading_done()
        self.stage.setText("")
        self.show_message(message)
        self._follow_in_folder()  # the list goes back to the image still on screen

    def open_array(self, rgb: np.ndarray) -> None:
        rgb = load_image(rgb)
        h, w = rgb.shape[:2]
        self._show_loaded(prepared(None, rgb, (w, h), content_key(np.ascontiguousarray(rgb).tobytes()), self.home))

    def _show_loaded(self, loaded: LoadedImage) -> None:
        if self.running and not self.folder_running:  # a folder run goes on while the user looks around
            self.cancel()
            self.run_on_screen = False  # its reports are about the image left behind
            self.progress.setVisible(False)
        rgb = loaded.rgb
        self.kept_outcome = None
        self.clear_message()
        self.image_path = loaded.path
        if loaded.path is not None:
            self.settings.last_dir = str(loaded.path.parent)
        self.image = rgb
        self.record = loaded.record
        self.canvas.set_image(rgb)
        self.outcome = None
        self.show_reasoning(None)
        self.sample_list.show_outcome(None)
        self.votes.show_outcome(None)
        h, w = rgb.shape[:2]
        self.setWindowTitle(f"StAR Desktop — {self.image_name()} ({w}×{h})")
        self.stage.setText("")  # the last image's status does not describe this one
        self._follow_in_folder()
        typed = self.query.currentText() if self.settings.keep_query else ""
        self.query.clear()
        self.query.addItems(self.record.history())
        self.query.setCurrentText(typed)
        if loaded.saved is not None:
            self.show_outcome(loaded.saved)
            self.query.setCurrentText(loaded.saved.query)
            self.stage.setText("Restored the last result for this image.")
        if annotation_stamp(loaded.record, loaded.path) == loaded.stamp:
            self.annotation = loaded.annotation
            self.show_annotation()
        else:  # written meanwhile (a folder run's image, an edit in another tool): read again
            self.load_annotation()
        if self.outcome is None:
            self.headline.setText(self.objects_headline())
        if (w, h) != tuple(loaded.full_size):
            self.stage.setText(f"{self.image_name()} is {loaded.full_size[0]}×{loaded.full_size[1]}, above the "
                               f"pixel limit: shown and segmented at {w}×{h}.")
        self.canvas.setFocus()  # single-key shortcuts (A / D for the folder) work until the user types

    def _follow_in_folder(self) -> None:
        """The folder list highlights the image on screen, or nothing when it is not one of the folder's."""
        row = self.folder.index(self.image_path) if self.image_path in self.folder else -1
        self.files.blockSignals(True)
        self.files.setCurrentRow(row)
        if row < 0:
            self.files.clearSelection()
        self.files.blockSignals(False)

    def open_dialog(self) -> None:
        path = dialogs.choose(self, "Open image", self.settings.last_dir,
                              "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ")")
        if path:
            self.request_image(path)

    def open_folder_dialog(self) -> None:
        folder = dialogs.choose(self, "Open folder", self.settings.last_dir, folders=True)
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
        self.files.addItems(self.folder_names())  # ✓: a labelme file beside it (done)
        self.files.blockSignals(False)
        self.files_dock.setVisible(True)
        if self.folder[0] != self.image_path:
            self.open_image(self.folder[0])  # at once: the folder opens on its first image
        self._follow_in_folder()
        return len(files)

    def _on_file_row(self, row: int) -> None:
        if 0 <= row < len(self.folder) and self.folder[row] not in (self.image_path, self.loading_path):
            self.request_image(self.folder[row])

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
                f"The pasted image is {w}x{h} ({w * h / 1e6:.3g} MP), above the limit of {max_pixels() / 1e6:.3g} MP. "
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
                self.request_image(path)
                return

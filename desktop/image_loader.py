"""Reading an image and what the app keeps for it, off the UI thread.

Decoding a 6000 x 4000 PNG, hashing its bytes, decoding its last result's masks and its objects takes
seconds on a CPU; on the UI thread the window froze meanwhile (the folder list's button stayed pressed).
`read_image` does all of it and returns a LoadedImage the window only has to show; ImageLoader runs it on its
own thread for the interactive ways of opening (the folder list, A / D, the open dialog, a drop), and
answers with the request's serial number, so only the image asked for last is shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from engine.errors import ImageError
from engine.images import image_size, load_image

from .annotation import Annotation
from .messages import user_message
from .outcome import Outcome
from .store import ImageRecord, content_key


@dataclass
class LoadedImage:
    path: Path | None  # None: pasted
    rgb: np.ndarray
    full_size: tuple[int, int]  # the file's (width, height); rgb is smaller above the pixel limit
    record: ImageRecord
    saved: Outcome | None  # the last complete result of this image, decoded (None: none, or another size)
    annotation: Annotation  # the image's objects as last left (window_editing.stored_annotation)
    stamp: tuple  # what the annotation was read from, to tell whether it changed before it was shown


def read_image(path: Path, home: Path | None) -> LoadedImage:
    """The file decoded (a huge JPEG read smaller), with its record, result and objects. Raises the engine's
    errors (they name the file) and OSError."""
    rgb = load_image(path, downscale=True)
    full = image_size(path)
    return prepared(path, rgb, full, content_key(path.read_bytes()), home)


def prepared(path: Path | None, rgb: np.ndarray, full: tuple[int, int], key: str, home: Path | None) -> LoadedImage:
    from .window_editing import stored_annotation

    record = ImageRecord(key, home)
    h, w = rgb.shape[:2]
    stamp = annotation_stamp(record, path)
    saved = record.latest_result()
    outcome = Outcome(saved).prepare() if saved is not None and list(saved.get("image_size", [])) == [w, h] \
        else None
    return LoadedImage(path, rgb, full, record, outcome, stored_annotation(record, path, (w, h)), stamp)


def annotation_stamp(record: ImageRecord, path: Path | None) -> tuple:
    """Size and time of every file an image's annotation is read from (its autosave, its results, a labelme
    file beside it): when it differs at show time, the annotation is read again."""
    from engine.annotations import fallback_labelme_path, labelme_path

    files = [record.root / "annotation.json", record.root / "results"]
    if path is not None:
        files += [labelme_path(path), fallback_labelme_path(path)]
    stamp = []
    for f in files:
        try:
            st = f.stat()
            stamp.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


class ImageLoader(QObject):
    """Lives on its own thread; `load` answers with `ready` or `failed`, carrying the request's serial."""

    ready = Signal(int, object)  # serial, LoadedImage
    failed = Signal(int, object)  # serial, messages.UserMessage

    def __init__(self, home: Path | None, log_path: str | None = None):
        super().__init__()
        self.home = home
        self.log_path = log_path

    @Slot(int, object)
    def load(self, serial: int, path: Path) -> None:
        try:
            self.ready.emit(serial, read_image(Path(path), self.home))
        except OSError as exc:
            self.failed.emit(serial, user_message(ImageError(f"Could not read {Path(path).name}: "
                                                             f"{exc.strerror or exc}")))
        except Exception as exc:  # noqa: BLE001 - shown as a message, the current image stays
            self.failed.emit(serial, user_message(exc, self.log_path))

"""Frames of a video file or of a folder of images, read as a stream: one frame in memory at a time, never
the whole clip.

A folder's images are taken in natural name order (`frame2.png` before `frame10.png`), as exported
frame sequences are numbered; a video file is decoded by OpenCV. `stride` keeps every k-th frame and
`max_frames` stops after that many kept frames; each frame keeps its index in the source, so results can
be matched back to the original clip.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Frame:
    index: int          # position in the source (before the stride)
    rgb: np.ndarray     # uint8 H x W x 3
    name: str           # the image's file name, or the video's frame number


def natural_key(name: str) -> list:
    """`frame2` before `frame10`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameSource:
    """The frames of `path` (a video file or a folder of images), `stride` and `max_frames` applied.

    `len()` is the number of frames it will give (from the folder's listing or the video's frame count);
    `frame(i)` reads the i-th of them alone, so a tracker can go back to any frame without holding the clip.
    """

    def __init__(self, path: str | Path | list, *, stride: int = 1, max_frames: int | None = None,
                 max_pixels: int | None = None):
        """`path`: a video file, a folder of images, or a list of image files in their order (a benchmark's
        frames)."""
        if stride < 1:
            raise ValueError(f"stride must be 1 or more, got {stride}")
        self.stride, self.max_pixels = stride, max_pixels
        if isinstance(path, (list, tuple)):
            if not path:
                raise ImageError("no frames given")
            self.path = Path(path[0]).parent
            self._files = [Path(p) for p in path][::stride]
            total = len(self._files)
        elif (given := Path(path)).is_dir():
            self.path = given
            files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                           key=lambda p: natural_key(p.name))
            if not files:
                raise ImageError(f"{self.path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            self._files: list[Path] | None = files[::stride]
            total = len(self._files)
        elif given.is_file():
            self.path, self._files = given, None
            total = -(-self._video_frame_count() // stride)
        else:
            raise ImageError(f"{given}: no such video or folder")
        self._count = total if max_frames is None else min(total, max_frames)
        self._video = None        # the open capture, when reading a video in order
        self._next_source = 0     # the source index the capture reads next

    def __len__(self) -> int:
        return self._count

    def _video_frame_count(self) -> int:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                raise ImageError(f"{self.path}: OpenCV cannot open this video")
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        if count <= 0:
            raise ImageError(f"{self.path}: the video has no frames OpenCV can count")
        return count

    def fps(self) -> float | None:
        """The video's frame rate (None for a folder), divided by the stride."""
        if self._files is not None:
            return None
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            rate = capture.get(cv2.CAP_PROP_FPS)
        finally:
            capture.release()
        return rate / self.stride if rate and rate > 0 else None

    def frame(self, i: int) -> Frame:
        """The i-th frame given (0 <= i < len): read alone from a folder; from a video, by reading on from the
        last position (in order: one decode per frame) or by seeking back."""
        if not 0 <= i < self._count:
            raise IndexError(f"frame {i} of {self._count}")
        source = i * self.stride
        if self._files is not None:
            from .images import load_image

            path = self._files[i]
            return Frame(source, load_image(path, max_pixels=self.max_pixels), path.name)
        return Frame(source, self._read_video(source), f"{source:05d}")

    def _read_video(self, source: int) -> np.ndarray:
        import cv2

        if self._video is None or source < self._next_source:
            self.close()
            self._video = cv2.VideoCapture(str(self.path))
            if source:
                self._video.set(cv2.CAP_PROP_POS_FRAMES, source)
            self._next_source = source
        while self._next_source < source:  # skip the stride's frames without converting them
            self._video.grab()
            self._next_source += 1
        ok, bgr = self._video.read()
        self._next_source += 1
        if not ok:
            raise ImageError(f"{self.path}: frame {source} cannot be decoded")
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self._count):
            yield self.frame(i)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

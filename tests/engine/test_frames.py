"""Frames read as a stream (engine/frames.py): a folder in natural name order, a video file through
OpenCV, stride and max_frames, any frame read alone and out of order."""

import numpy as np
import pytest
from PIL import Image

from engine.errors import ImageError
from engine.frames import FrameSource, natural_key


def _coloured(i: int) -> np.ndarray:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :, 0] = 20 * i      # frame i is told by its red level
    rgb[:, :, 2] = 200
    return rgb


def test_a_folder_is_read_in_natural_order_with_stride_and_limit(tmp_path):
    for i in (0, 1, 2, 10, 11):
        Image.fromarray(_coloured(i)).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = FrameSource(tmp_path)
    assert [f.name for f in frames] == ["frame0.png", "frame1.png", "frame2.png", "frame10.png", "frame11.png"]
    strided = FrameSource(tmp_path, stride=2, max_frames=2)
    assert len(strided) == 2 and [(f.index, f.name) for f in strided] == [(0, "frame0.png"), (2, "frame2.png")]
    assert FrameSource(tmp_path).frame(3).rgb[0, 0, 0] == 200  # frame10, read alone
    assert natural_key("b2") < natural_key("b10") < natural_key("c1")


def test_a_video_file_streams_and_seeks_back(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(9):
        writer.write(np.ascontiguousarray(_coloured(i)[:, :, ::-1]))  # OpenCV writes BGR
    writer.release()
    source = FrameSource(path, stride=3)
    assert len(source) == 3 and source.fps() == pytest.approx(10 / 3)
    frames = list(source)
    assert [f.index for f in frames] == [0, 3, 6]
    # MJPG is lossy: each frame's red level within a few grey levels of what was written, blue kept
    assert [abs(int(f.rgb[:, :, 0].mean()) - 20 * f.index) <= 4 for f in frames] == [True] * 3
    assert abs(int(source.frame(0).rgb[:, :, 0].mean())) <= 4  # back to the start after the end
    assert frames[0].rgb.shape == (32, 48, 3) and frames[0].rgb[:, :, 2].mean() > 190
    source.close()


def test_nothing_to_read_is_one_clear_error(tmp_path):
    with pytest.raises(ImageError, match="no images in this folder"):
        FrameSource(tmp_path)
    with pytest.raises(ImageError, match="no such video or folder"):
        FrameSource(tmp_path / "missing.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ImageError):
        FrameSource(tmp_path / "broken.mp4")
    with pytest.raises(ValueError):
        FrameSource(tmp_path, stride=0)

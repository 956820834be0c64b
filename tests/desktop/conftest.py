"""The app's tests run offscreen (no display needed) and keep their settings and autosaves in a
temporary home, never in the user's."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    monkeypatch.setenv("STAR_DESKTOP_HOME", str(root))
    return root


@pytest.fixture
def scene_png(tmp_path, scene_image):
    """The scripted scene as a PNG file in its own folder."""
    from PIL import Image

    path = tmp_path / "images" / "scene.png"
    path.parent.mkdir()
    Image.fromarray(scene_image).save(path)
    return path

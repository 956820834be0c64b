"""engine.images on every kind of file a person might open."""

import io

import numpy as np
import pytest
from PIL import Image

from engine.errors import ImageError
from engine.images import image_size, load_image


def _png(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_modes_become_rgb_uint8():
    base = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for img in (Image.fromarray(base), Image.fromarray(base).convert("L"), Image.fromarray(base).convert("RGBA"),
                Image.fromarray(base).convert("P"), Image.fromarray(base).convert("LA")):
        out = load_image(_png(img))
        assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    assert np.array_equal(load_image(_png(Image.fromarray(base))), base)


def test_sixteen_bit_png_keeps_its_range():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = load_image(_png(Image.fromarray(arr)))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg():
    out = load_image(_png(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "JPEG"))
    assert out.shape == (3, 4, 3) and out[0, 0, 0] > 200 and out[0, 0, 1] < 60  # red


def test_exif_rotation_is_applied_when_asked():
    img = Image.new("RGB", (6, 2))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW for display
    data = _png(img, "JPEG", exif=exif)
    assert load_image(data).shape == (6, 2, 3)
    assert load_image(data, exif=False).shape == (2, 6, 3)
    assert image_size(data) == (2, 6)


def test_tiny_and_arrays():
    assert load_image(_png(Image.new("RGB", (1, 1)))).shape == (1, 1, 3)
    assert load_image(np.zeros((3, 4), np.float32)).shape == (3, 4, 3)
    with pytest.raises(ImageError):
        load_image(np.zeros((3, 4, 2)))


def test_corrupt_missing_and_huge_give_clear_errors(tmp_path):
    data = _png(Image.new("RGB", (50, 50)), "JPEG")
    with pytest.raises(ImageError, match="Could not read"):
        load_image(data[: len(data) // 3] + b"garbage")
    with pytest.raises(ImageError, match="Could not read"):
        load_image(b"not an image at all")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="above the limit"):
        load_image(_png(Image.new("RGB", (300, 200))), max_pixels=300 * 200 - 1)


def test_large_image_above_pillows_bomb_guard_loads_with_the_limit_raised(tmp_path):
    # 12000 x 9000 (108 MP) is above Pillow's warning threshold and the engine's 64 MP default; a 1-bit PNG
    # keeps the file small. Refused by default, read once the limit is raised (the CLI's --max-pixels).
    from engine.images import DEFAULT_MAX_PIXELS, set_max_pixels

    path = tmp_path / "big.png"
    Image.new("1", (12000, 9000)).save(path)
    assert image_size(path) == (12000, 9000)
    with pytest.raises(ImageError, match="--max-pixels"):
        load_image(path)
    try:
        set_max_pixels(110_000_000)
        out = load_image(path)
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)
    assert out.shape == (9000, 12000, 3)

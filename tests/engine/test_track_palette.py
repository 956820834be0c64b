"""Indexed per-frame PNGs (engine/track/palette.py): the PASCAL VOC colour map's published first colours,
labels written and read back as values, overlaps, and what an indexed PNG cannot hold."""

import numpy as np
import pytest
from PIL import Image

from engine.track.palette import label_image, read_indexed_png, voc_palette, write_indexed_png


def test_the_palette_starts_as_pascal_vocs():
    palette = voc_palette()
    assert palette[:6].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    assert palette[255].tolist() == [224, 224, 192]  # VOC's "void" colour
    assert len({tuple(c) for c in palette}) == 256


def test_labels_survive_a_round_trip_and_show_in_their_colours(tmp_path):
    a = np.zeros((20, 30), bool)
    a[2:10, 2:12] = True
    b = np.zeros((20, 30), bool)
    b[8:16, 10:25] = True                   # overlaps a on rows 8-9, columns 10-11
    labels = label_image({1: a, 2: b}, (20, 30))
    assert labels[9, 11] == 2 and labels[3, 3] == 1 and labels[0, 0] == 0
    path = write_indexed_png(tmp_path / "00000.png", labels)
    assert (read_indexed_png(path) == labels).all()
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.convert("RGB").getpixel((3, 3)) == (128, 0, 0)
    with pytest.raises(ValueError):
        label_image({256: a}, (20, 30))

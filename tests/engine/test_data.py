"""Dataset readers on fixture data written here, checked against hand-drawn masks and pycocotools."""

import io
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from engine.data import open_dataset, parse_data_spec, rasterize_shapes
from engine.errors import DatasetError


def _jpg(path, w, h):
    Image.new("RGB", (w, h), (10, 20, 30)).save(path)


def _rect(x1, y1, x2, y2, label="target"):
    return {"label": label, "points": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]}


def test_rasterisation_by_hand():
    # Outline + fill of integer rectangles covers the corners inclusively; floats truncate toward zero.
    mask = rasterize_shapes([_rect(2.9, 1, 7, 4.99), _rect(3, 2, 4, 3, "ignore_1"), _rect(0, 0, 9, 5, "flag")], 6, 10)
    expected = np.zeros((6, 10), np.uint8)
    expected[1:5, 2:8] = 1
    expected[2:4, 3:5] = 255  # the smaller ignore polygon is drawn last and wins
    assert np.array_equal(mask, expected)


def test_larger_polygon_is_drawn_first_whatever_the_file_order():
    small_target, big_ignore = _rect(1, 1, 2, 2), _rect(0, 0, 5, 5, "Ignore")
    for shapes in ([small_target, big_ignore], [big_ignore, small_target]):
        mask = rasterize_shapes(shapes, 6, 6)
        assert mask[1, 1] == 1 and mask[0, 0] == 255 and mask[5, 5] == 255


def test_reasonseg_folder(tmp_path):
    _jpg(tmp_path / "a.jpg", 10, 6)
    (tmp_path / "a.json").write_text(json.dumps({"text": ["Where is it?", "second"], "is_sentence": True, "shapes": [_rect(1, 1, 3, 3)]}))
    _jpg(tmp_path / "b.jpg", 8, 8)
    # cp1252 (not UTF-8) text, as some ReasonSeg files are
    (tmp_path / "b.json").write_bytes(json.dumps({"text": ["caf\u00e9"], "is_sentence": False, "shapes": [_rect(0, 0, 1, 1)]}, ensure_ascii=False).encode("cp1252"))
    _jpg(tmp_path / "c.jpg", 8, 8)  # no annotation
    with pytest.raises(DatasetError, match="c.jpg"):
        list(open_dataset("reasonseg", tmp_path))
    reader = open_dataset("reasonseg", tmp_path, on_error="skip")
    samples = list(reader)
    assert [s.id for s in samples] == ["a", "b"] and len(reader.problems) == 1
    a, b = samples
    assert a.query == "Where is it?" and a.meta["query_type"] == "long"
    assert b.query == "caf\u00e9" and b.meta["query_type"] == "short"
    gt = a.load_gt()
    assert gt.shape == (6, 10) and gt.sum() == 9 and a.load_image().shape == (6, 10, 3)
    assert len(list(open_dataset("reasonseg", tmp_path, all_queries=True, on_error="skip"))) == 3


def _png_bytes(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def test_hf_parquet(tmp_path):
    masks = [np.eye(3, 4, dtype=bool), np.zeros((2, 2), bool)]
    table = pa.table({
        "image": [{"bytes": _png_bytes(4, 3), "path": None}, {"bytes": _png_bytes(2, 2), "path": None}],
        "text": ["the red thing", "nothing"],
        "mask": [m.tolist() for m in masks],
        "image_id": ["img1", "img2"],
        "ann_id": ["1", "2"],
        "img_height": [3, 2],
        "img_width": [4, 2],
        "reasoning_type": ["purpose/functional", "comparative/relational"],
    })
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    reader = open_dataset("reasonseg-x", tmp_path, batch_size=1)
    samples = list(reader)
    assert len(reader) == 2 and [s.id for s in samples] == ["img1:1", "img2:2"]
    assert np.array_equal(samples[0].load_gt(), masks[0].astype(np.uint8))
    assert samples[0].meta["reasoning_type"] == "purpose/functional"
    assert samples[0].load_image().shape == (3, 4, 3)


def test_hf_parquet_bad_row_is_named(tmp_path):
    table = pa.table({"image": [{"bytes": _png_bytes(4, 3), "path": None}], "text": ["q"], "mask": [np.zeros((2, 2), bool).tolist()],
                      "img_height": [3], "img_width": [4]})
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(DatasetError, match="x.parquet row 0"):
        list(open_dataset("hf", tmp_path / "x.parquet"))


def _coco_fixture(tmp_path):
    root = tmp_path / "refer_seg"
    (root / "refcoco").mkdir(parents=True)
    img_dir = root / "images" / "mscoco" / "images" / "train2014"
    img_dir.mkdir(parents=True)
    _jpg(img_dir / "COCO_1.jpg", 20, 10)
    poly = [[2, 2, 8, 2, 8, 6, 2, 6], [12, 1, 15, 1, 15, 3]]
    instances = {"images": [{"id": 1, "file_name": "COCO_1.jpg", "height": 10, "width": 20}],
                 "annotations": [{"id": 5, "image_id": 1, "segmentation": poly}]}
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    refs = [{"ref_id": 0, "ann_id": 5, "image_id": 1, "split": "val", "sentences": [{"sent": "left box"}, {"sent": "the box"}]},
            {"ref_id": 1, "ann_id": 5, "image_id": 1, "split": "train", "sentences": [{"sent": "x"}]}]
    with open(root / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    return root, poly


def test_refcoco_pickle_needs_trust(tmp_path):
    root, poly = _coco_fixture(tmp_path)
    with pytest.raises(DatasetError, match="pickle"):
        open_dataset("refcoco", root)
    samples = list(open_dataset("refcoco", root, trust_pickle=True))
    assert [s.query for s in samples] == ["left box", "the box"]
    ref = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(poly, 10, 20)))
    assert np.array_equal(samples[0].load_gt(), ref)


def test_cod_folders(tmp_path):
    (tmp_path / "Imgs").mkdir()
    (tmp_path / "GT").mkdir()
    _jpg(tmp_path / "Imgs" / "cam1.jpg", 5, 4)
    gt = np.zeros((4, 5), np.uint8)
    gt[1:3, 1:4] = 255
    gt[0, 0] = 100  # below the > 128 binarisation
    Image.fromarray(gt).save(tmp_path / "GT" / "cam1.png")
    (s,) = list(open_dataset("cod", tmp_path))
    assert s.load_gt().sum() == 6 and s.query == "the camouflaged object"


def test_mmr_union_of_rle_answers(tmp_path):
    (tmp_path / "images").mkdir()
    _jpg(tmp_path / "images" / "x.jpg", 6, 4)
    a = np.zeros((4, 6), np.uint8)
    a[0:2, 0:2] = 1
    b = np.zeros((4, 6), np.uint8)
    b[1:4, 4:6] = 1

    def rle(m):
        r = coco_mask.encode(np.asfortranarray(m))
        return {"size": r["size"], "counts": r["counts"].decode()}

    records = [{"file_name": "x.jpg", "image_id": 9, "height": 4, "width": 6, "questions": ["q1", "q2"],
                "answers": [[{"segmentation": rle(a)}, {"segmentation": rle(b)}], []]}]
    (tmp_path / "mmr.json").write_text(json.dumps(records))
    reader = open_dataset("mmr", tmp_path / "mmr.json", on_error="skip")
    (s,) = list(reader)
    assert np.array_equal(s.load_gt(), a | b) and len(reader.problems) == 1


def test_data_spec():
    assert parse_data_spec("reasonseg:/a:b") == ("reasonseg", "/a:b")
    with pytest.raises(ValueError):
        parse_data_spec("nopath")
    with pytest.raises(ValueError, match="Unknown dataset"):
        open_dataset("nope", ".")

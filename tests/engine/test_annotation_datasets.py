"""`labelme:FOLDER` and `coco:FILE` datasets: files written by labelme 7.9.1's own writer, in X-AnyLabeling's
form, by this project's app and `star label`, and COCO files; target masks against labelme's own
`shape_to_mask` and pycocotools' own `annToMask`, holes and rephrasings against hand counts, bad files
counted by reason, and a held-out split that does not move when images are added or renamed."""

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import open_dataset
from engine.data.referring import label_query, plural
from engine.errors import DatasetError
from tests.models import require

DATA = Path(__file__).resolve().parents[1] / "data" / "labelme"
SCENE = Path(__file__).resolve().parents[2] / "engine" / "samples" / "scene.png"


def _folder(tmp_path, *names) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in names:
        shutil.copy(DATA / name, folder / name)
    shutil.copy(SCENE, folder / "scene.png")
    return folder


def _by_query(reader) -> dict:
    return {s.query: s for s in reader}


def test_labelmes_own_file_gives_labelmes_own_masks(tmp_path):
    """scene.json (labelme 7.9.1's writer): a rectangle, a tree of two polygons in group 4, a circle, a point and
    a line strip. Label queries: one per object with an area, each target exactly labelme's pixels."""
    require("labelme")
    from tests.desktop.test_editing import labelme_masks

    folder = _folder(tmp_path, "scene.json")
    reference = labelme_masks(folder / "scene.json")
    samples = _by_query(open_dataset("labelme", folder, queries="labels"))
    assert len(samples) == 3  # the point and the line strip have no area
    labels = {s.meta["file"]: s for s in samples.values()}
    assert set(labels) == {"scene.png"}
    expected = {"red cup": reference["red cup|0"], "tree": reference["tree|4"], "sun": reference["sun|3"]}
    for query, sample in samples.items():
        label = next(label for label in expected if label in query)
        gt = sample.load_gt()
        assert gt.shape == (224, 224) and set(np.unique(gt)) <= {0, 1}
        assert np.array_equal(gt == 1, expected[label]), query
        assert sample.meta["query_source"] == "label"


def test_descriptions_are_queries_and_auto_prefers_them(tmp_path):
    """X-AnyLabeling's form: the red cup's description is its query; with `auto` a file with descriptions
    gives those only, with `both` its labels too."""
    folder = _folder(tmp_path, "scene-xanylabeling.json")
    auto = _by_query(open_dataset("labelme", folder))
    assert list(auto) == ["auto-labelled, then checked"]
    cup = json.loads((folder / "scene-xanylabeling.json").read_text())["shapes"][0]
    (x0, y0), (x1, y1) = cup["points"][0], cup["points"][2]
    gt = auto["auto-labelled, then checked"].load_gt()
    assert (gt == 1).sum() == (int(x1) - int(x0) + 1) * (int(y1) - int(y0) + 1)  # PIL fills the corners' pixels
    both = _by_query(open_dataset("labelme", folder, queries="both"))
    sources = sorted(s.meta["query_source"] for s in both.values())
    assert sources == ["description", "label", "label", "label"]  # red cup, plate, and the rotated spoon box


def _blank_image(path, value=255) -> None:
    Image.fromarray(np.zeros((100, 120, 3), np.uint8) + value).save(path)


def _doc(image: str, shapes: list, size=(120, 100), flags=None) -> dict:
    return {"version": "5.5.0", "flags": flags or {}, "shapes": shapes, "imagePath": image, "imageData": None,
            "imageWidth": size[0], "imageHeight": size[1]}


def _shape(label, points, kind="polygon", group_id=None, description="", **extra):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group_id, "description": description,
            "flags": {}, **extra}


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_holes_by_group_ignore_regions_masks_and_several_objects_by_hand(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    _blank_image(folder / "a.png")
    crop = np.zeros((10, 20), bool)
    crop[2:8, 5:15] = True
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    shapes = [
        _shape("ring", _square(0, 0, 40, 40), group_id=1), _shape("ring", _square(10, 10, 20, 20), group_id=1),
        _shape("cup", _square(50, 50, 59, 59)), _shape("cup", _square(70, 50, 79, 59)),
        _shape("ignore", _square(0, 80, 119, 99)),
        _shape("stain", [[90, 10], [109, 29]], kind="mask", mask=base64.b64encode(buf.getvalue()).decode()),
        _shape("object", _square(100, 60, 110, 70)),  # the app's default label: no query is made from it
    ]
    (folder / "a.json").write_text(json.dumps(_doc("a.png", shapes)))
    samples = _by_query(open_dataset("labelme", folder, queries="labels"))
    by_label = {next(w for w in ("ring", "cup", "stain") if w in q): s.load_gt() for q, s in samples.items()}
    assert set(by_label) == {"ring", "cup", "stain"}
    assert (by_label["ring"] == 1).sum() == 41 * 41 - 11 * 11  # the inner square is a hole
    assert by_label["ring"][15, 15] == 0 and by_label["ring"][5, 5] == 1
    assert (by_label["cup"] == 1).sum() == 2 * 10 * 10  # both cups: one query for all of them
    assert (by_label["stain"] == 1).sum() == 60 and by_label["stain"][12, 95] == 1  # the PNG at (90, 10)
    for gt in by_label.values():
        assert (gt == 255).sum() == 120 * 20  # the ignore region, left out of every score
    cup_query = next(q for q in samples if "cup" in q)
    assert cup_query in ("all the cups", "every cup", "the cups", "all cups in the picture", "segment the cups")


def test_referring_queries_by_hand():
    assert [plural(w) for w in ("cup", "box", "berry", "glass", "traffic light", "day")] == \
        ["cups", "boxes", "berries", "glasses", "traffic lights", "days"]
    phrasings = {label_query("traffic_light", 1, f"img{i}.png", seed=0) for i in range(40)}
    assert "the traffic light" in phrasings and len(phrasings) > 2  # rephrased, from a fixed list
    assert label_query("cup", 2, "a.png", seed=3) == label_query("cup", 2, "a.png", seed=3)


def test_bad_files_are_counted_by_reason_and_named(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("ok", "cut", "size", "shape", "lonely"):
        if name != "lonely":
            _blank_image(folder / f"{name}.png")
    good = [_shape("cup", _square(5, 5, 20, 20))]
    (folder / "ok.json").write_text(json.dumps(_doc("ok.png", good)))
    (folder / "cut.json").write_text(json.dumps(_doc("cut.png", good))[:40])
    (folder / "size.json").write_text(json.dumps(_doc("size.png", good, size=(640, 480))))
    (folder / "shape.json").write_text(json.dumps(_doc("shape.png", [_shape("cup", [[1, "x"], [2, 3], [4, 5]])])))
    (folder / "lonely.json").write_text(json.dumps(_doc("lonely.png", good)))
    (folder / "result.json").write_text(json.dumps({"query": "a star segment result, not an annotation"}))
    reader = open_dataset("labelme", folder, on_error="skip")
    assert [s.meta["file"] for s in reader] == ["ok.png"]
    assert dict(reader.skipped) == {"unreadable JSON": 1, "no image beside it": 1, "unusable annotation": 2}
    assert any("size.json" in p and "640x480" in p for p in reader.problems)
    with pytest.raises(DatasetError, match="cut.json: unreadable JSON"):
        open_dataset("labelme", folder)


def test_flag_and_a_held_out_split_that_stays_held_out(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.json").write_text(json.dumps(_doc(f"{i:02d}.png", [_shape("cup", _square(5, 5, 20, 20))],
                                                              flags={"done": i % 3 == 0})))
    assert len(open_dataset("labelme", folder, flag="done")) == 10

    def held(**kw):
        return {s.meta["file"] for s in open_dataset("labelme", folder, split="held-out", **kw)}

    before = held()
    train = {s.meta["file"] for s in open_dataset("labelme", folder, split="train")}
    assert before and train and not before & train and len(before | train) == 30
    assert 2 <= len(before) <= 12  # about 20 % of 30
    for i in range(30, 40):  # ten images more, and one held-out image renamed
        Image.fromarray(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.json").write_text(json.dumps(_doc(f"{i:02d}.png", [_shape("cup", _square(5, 5, 20, 20))])))
    moved = sorted(before)[0]
    (folder / moved).rename(folder / f"renamed-{moved}")
    doc = json.loads((folder / moved.replace(".png", ".json")).read_text())
    doc["imagePath"] = f"renamed-{moved}"
    (folder / moved.replace(".png", ".json")).rename(folder / f"renamed-{moved.replace('.png', '.json')}")
    (folder / f"renamed-{moved.replace('.png', '.json')}").write_text(json.dumps(doc))
    after = held()
    assert {f.replace("renamed-", "") for f in after if int(f.replace("renamed-", "")[:2]) < 30} == before
    (tmp_path / "held.txt").write_text("# mine\n03.png\n07.png\n")
    assert held(split_file=str(tmp_path / "held.txt")) == {"03.png", "07.png"}


def test_files_from_the_app_and_star_label_read_back_with_their_query(tmp_path):
    """The app's writer (desktop Annotation.to_labelme, a two-part object with a hole) and `star label`'s
    shapes: the query comes back from the descriptions, the mask as labelme's own reader draws it."""
    require("labelme")
    from desktop.annotation import AnnotatedObject, Annotation
    from engine.annotations import write_labelme
    from tests.desktop.test_editing import labelme_masks

    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(SCENE, folder / "scene.png")
    mask = np.zeros((224, 224), bool)
    mask[20:90, 30:120] = True
    mask[40:60, 50:80] = False  # a hole, kept by a zero-width cut
    mask[150:200, 150:210] = True
    annotation = Annotation((224, 224), [AnnotatedObject("mug", mask, query="what coffee is served in")])
    write_labelme(folder / "scene.png", annotation.to_labelme("scene.png", description="what coffee is served in"))
    (sample,) = list(open_dataset("labelme", folder))
    assert sample.query == "what coffee is served in" and sample.meta["query_source"] == "description"
    gt = sample.load_gt() == 1
    reference = labelme_masks(folder / "scene.json")
    assert np.array_equal(gt, np.logical_or.reduce(list(reference.values())))
    assert (gt & mask).sum() / (gt | mask).sum() > 0.97  # the polygons' outline pixels


def _coco_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_targets_are_pycocotools_own_masks(tmp_path):
    from pycocotools.coco import COCO

    from engine.rle import encode

    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        _blank_image(tmp_path / "images" / name)
    crowd = np.zeros((100, 120), bool)
    crowd[60:90, 10:50] = True
    uncompressed = {"size": [100, 120], "counts": [int(v) for v in _runs(crowd)]}
    compressed = encode(crowd[::-1].copy())
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 120, "height": 100},
                       {"id": 2, "file_name": "b.png", "width": 120, "height": 100}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _coco_polygon(5.5, 5.5, 30.2, 40.7), "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 1, "segmentation": uncompressed, "iscrowd": 1},
                {"id": 3, "image_id": 1, "category_id": 2, "segmentation": compressed, "iscrowd": 0},
                {"id": 4, "image_id": 2, "category_id": 2, "segmentation": _coco_polygon(0, 0, 50, 50), "iscrowd": 0,
                 "attributes": {"query": "the thing on the left"}}],
            "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "traffic_light"}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    reference = COCO(str(path))
    samples = list(open_dataset("coco", path, queries="both"))
    assert sorted((s.meta["image_id"], s.meta["query_source"]) for s in samples) == \
        [(1, "label"), (1, "label"), (2, "description"), (2, "label")]
    for s in samples:
        anns = reference.loadAnns(reference.getAnnIds(imgIds=[s.meta["image_id"]]))
        if s.meta["query_source"] == "description":
            assert s.query == "the thing on the left"
            chosen = [a for a in anns if a.get("attributes")]
        else:
            name = "dog" if "dog" in s.query else "traffic light"
            chosen = [a for a in anns if reference.loadCats(a["category_id"])[0]["name"].replace("_", " ") == name]
        expected = np.logical_or.reduce([reference.annToMask(a).astype(bool) for a in chosen])
        assert np.array_equal(s.load_gt() == 1, expected), s.query


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a mask, by hand: column-major runs starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts

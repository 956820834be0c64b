"""`star label`: a folder of nano-world scenes labelled in one command; the files checked with labelme's
own reader (run in a subprocess: labelme imports PyQt5, which must not meet the app's PySide6) and
pycocotools; Ctrl-C and a re-run lose nothing and duplicate nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.annotations import labelme_path, rasterize
from tests.models import require

QUERY = "the red circle"


def scenes(folder: Path, count: int, seed: int = 0) -> list[Path]:
    from training.nano.world import make_scene

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 5 == 0 else "") / f"scene-{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(make_scene(rng).image).save(path)
        paths.append(path)
    return paths


def labelme_reader_accepts(files: list[Path]) -> None:
    """labelme 6.3.1's read_label_file on every file (it also checks the image's size against the JSON)."""
    code = ("import sys\nfrom labelme._label_file import read_label_file\n"
            "for f in sys.argv[1:]:\n    d = read_label_file(f)\n    assert d.image_data\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def star(*argv, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *argv], capture_output=True, text=True, timeout=900,
                          cwd=cwd)


def test_fifty_scenes_labelled_then_ctrl_c_and_rerun(tmp_path):
    """50 scenes: interrupted with SIGINT after a few files, re-run: 50 labelme files, each accepted by
    labelme's reader, none written twice (a file's mtime survives the re-run)."""
    require("labelme")
    folder = tmp_path / "scenes"
    images = scenes(folder, 50)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "label", str(folder), QUERY, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while sum(labelme_path(p).exists() for p in images) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    done_first = [p for p in images if labelme_path(p).exists()]
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in out and 5 <= len(done_first) < 50
    # the press is never swallowed by a ctypes callback, and no traceback reaches the user
    assert "Traceback" not in err and "Exception ignored" not in err, err
    stamps = {p: labelme_path(p).stat().st_mtime_ns for p in done_first}
    second = star("label", str(folder), QUERY, "--quiet")
    assert second.returncode == 0, second.stderr
    assert f"{len(done_first)} already labelled (skipped)" in second.stdout
    jsons = sorted(folder.rglob("*.json"))
    assert len(jsons) == 50 and all(labelme_path(p).exists() for p in images)
    assert all(labelme_path(p).stat().st_mtime_ns == stamps[p] for p in done_first)
    assert not list(folder.rglob(".*.tmp"))
    labelme_reader_accepts(jsons)
    doc = json.loads(labelme_path(images[0]).read_text())
    assert doc["imagePath"] == images[0].name and doc["imageData"] is None
    assert (doc["imageWidth"], doc["imageHeight"]) == Image.open(images[0]).size


def test_a_broken_image_is_reported_and_skipped(tmp_path):
    folder = tmp_path / "mixed"
    good = scenes(folder, 2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = star("label", str(folder), QUERY, "--quiet")
    assert r.returncode == 1, r.stderr  # the others are labelled; the status says not all of them
    assert "1 failed" in r.stdout and "broken.png" in r.stdout
    assert all(labelme_path(p).exists() for p in good) and not (folder / "broken.json").exists()


def test_a_labelled_folder_is_a_dataset_that_star_eval_reads(tmp_path):
    """`star label` writes the query into each mask polygon's description; `labelme:FOLDER` reads it back
    as the query, the polygons as the target, and `star eval` scores the bundle on it by query source."""
    from engine.data import open_dataset

    folder = tmp_path / "labelled"
    images = scenes(folder, 4, seed=2)
    assert star("label", str(folder), QUERY, "--quiet").returncode == 0
    samples = list(open_dataset("labelme", folder))
    labelled = [p for p in images if any(s["shape_type"] == "polygon"
                                         for s in json.loads(labelme_path(p).read_text())["shapes"])]
    assert len(samples) == len(labelled) > 0 and all(s.query == QUERY for s in samples)
    for s in samples:
        doc = json.loads(labelme_path(folder / s.meta["file"]).read_text())
        polygons = [shape["points"] for shape in doc["shapes"] if shape["shape_type"] == "polygon"]
        assert np.array_equal(s.load_gt() == 1, rasterize(polygons, doc["imageHeight"], doc["imageWidth"]))
    out = tmp_path / "eval"
    r = star("eval", "--data", f"labelme:{folder}", "-n", "1", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "| query_source = description | 100.0 | 100.0 | " in r.stdout  # its own answers, read back as truth


def test_coco_output_reads_back_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    folder = tmp_path / "coco"
    images = scenes(folder, 6, seed=1)
    r = star("label", str(folder), QUERY, "--format", "coco", "--quiet")
    assert r.returncode == 0, r.stderr
    coco = COCO(str(folder / "star-coco.json"))
    assert len(coco.getImgIds()) == 6
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann["image_id"])[0]
        m = coco.annToMask(ann).astype(bool)
        labelme = json.loads((folder / ".star-coco.json.progress.jsonl").read_text().splitlines()[0])
        assert m.sum() == ann["area"] > 0 and (img["width"], img["height"]) == (labelme["width"], labelme["height"])
    for entry in map(json.loads, (folder / ".star-coco.json.progress.jsonl").read_text().splitlines()):
        img = next(i for i in coco.loadImgs(coco.getImgIds()) if i["file_name"] == entry["image"])
        polygons = [s["points"] for s in entry["shapes"] if s["shape_type"] == "polygon"]
        union = np.zeros((img["height"], img["width"]), bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            union |= coco.annToMask(ann).astype(bool)
        assert np.array_equal(union, rasterize(polygons, img["height"], img["width"]))
    from engine.data import open_dataset

    samples = list(open_dataset("coco", folder / "star-coco.json"))  # the query is in every annotation
    assert samples and all(s.query == QUERY and s.meta["query_source"] == "description" for s in samples)
    for s in samples:
        union = np.logical_or.reduce([coco.annToMask(a).astype(bool)
                                      for a in coco.loadAnns(coco.getAnnIds(imgIds=s.meta["image_id"]))])
        assert np.array_equal(s.load_gt() == 1, union)
    again = star("label", str(folder), QUERY, "--format", "coco", "--quiet")  # resumed: nothing redone
    assert "6 already labelled (skipped)" in again.stdout
    assert len(COCO(str(folder / "star-coco.json")).getImgIds()) == 6
    assert all(not labelme_path(p).exists() for p in images)


def test_label_against_a_server_matches_the_local_run(tmp_path):
    require("httpx")
    from engine.serve.app import ServeSettings, create_app
    from engine.serve.server import BackgroundServer
    from engine.serve.setup import load_workers

    local, remote = tmp_path / "local", tmp_path / "remote"
    scenes(local, 4, seed=2)
    scenes(remote, 4, seed=2)
    assert star("label", str(local), QUERY, "--quiet").returncode == 0
    workers = load_workers([], device="cpu", threads=None, max_samples=4, max_new_tokens=1024, queue_size=4,
                           verify="quick")
    try:
        with BackgroundServer(create_app(workers, ServeSettings())) as url:
            r = star("label", str(remote), QUERY, "--server", url, "--quiet")
            assert r.returncode == 0, r.stderr
            unreachable = star("label", str(tmp_path / "local"), QUERY, "--server", "http://127.0.0.1:9", "--overwrite")
            assert unreachable.returncode != 0 and "cannot reach" in unreachable.stderr
    finally:
        for w in workers.values():
            w.shutdown()
    for a in sorted(local.rglob("*.json")):
        b = remote / a.relative_to(local)
        assert json.loads(a.read_text())["shapes"] == json.loads(b.read_text())["shapes"]


@pytest.mark.parametrize("argv,message", [
    (["label", "/nonexistent-folder", QUERY], "is not a folder"),
    (["label", ".", ""], "the query is empty"),
])
def test_bad_invocations_get_one_line(argv, message, capsys):
    from engine.cli import main

    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_foreign_json_beside_an_image_is_left_alone(tmp_path):
    """A `star segment` result named like the image: the image is not taken as labelled, and the labels go
    beside it under another name."""
    folder = tmp_path / "with-result"
    first, second = scenes(folder, 2)
    foreign = labelme_path(first)
    foreign.write_text(json.dumps({"query": QUERY, "no_object": False, "samples": []}))
    before = foreign.read_bytes()
    r = star("label", str(folder), QUERY, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "0 already labelled (skipped)" in r.stdout
    assert foreign.read_bytes() == before
    doc = json.loads(first.with_name(first.stem + ".labelme.json").read_text())
    assert doc["imagePath"] == first.name and labelme_path(second).exists()


def test_overwrite_keeps_the_first_annotation_as_a_backup(tmp_path):
    """--overwrite used to replace a hand-written annotation with no copy left."""
    folder = tmp_path / "hand"
    (image,) = scenes(folder, 1)
    hand = {"version": "5.4.1", "flags": {}, "shapes": [{"label": "mine", "points": [[1, 1], [9, 9]],
            "shape_type": "rectangle", "group_id": None, "description": "by hand", "flags": {}}],
            "imagePath": image.name, "imageData": None, "imageHeight": 1, "imageWidth": 1}
    labelme_path(image).write_text(json.dumps(hand))
    original = labelme_path(image).read_bytes()
    for _ in range(2):  # the second run must not replace the backup with the first run's output
        r = star("label", str(folder), QUERY, "--overwrite", "--quiet")
        assert r.returncode == 0, r.stderr
    backup = labelme_path(image).with_name(labelme_path(image).name + ".bak")
    assert backup.read_bytes() == original
    assert json.loads(labelme_path(image).read_text())["shapes"][0]["label"] != "mine"

"""`star track` from the command line: the shipped nano policy answering on the key frame of a clip of the
sample scene panning, a SAM 2 with memory modules (the tiny random one: the plumbing, not the tracking
quality) following it; what the folder holds afterwards, and the refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from tests.models import require


def _panning_clip(folder, count=8, width=160):
    from engine.samples import sample_scene

    image, _ = sample_scene()
    rgb = np.asarray(image)
    folder.mkdir()
    for i in range(count):
        Image.fromarray(np.ascontiguousarray(rgb[:, 4 * i:4 * i + width])).save(folder / f"frame{i}.png")
    return folder, rgb.shape[0], width


@pytest.mark.timeout(600)
def test_star_track_writes_masks_json_labelme_and_an_overlay(tiny_sam2, tmp_path, capsys):
    require("torch")
    require("llama_cpp")
    from engine.track.palette import read_indexed_png

    clip, h, w = _panning_clip(tmp_path / "clip")
    out = tmp_path / "out"
    code = main(["--threads", "2", "track", str(clip), "what coffee is served in", "--sam2", f"{tiny_sam2.config}:{tiny_sam2.checkpoint}",
                 "--out", str(out), "--key-frame", "2", "--format", "labelme", "--quiet"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "track.json").read_text())
    assert record["complete"] and record["frames_done"] == record["frames_total"] == 8
    assert record["asks"][0]["position"] == 2 and record["asks"][0]["reason"] == "key frame"
    assert record["settings"]["query"] == "what coffee is served in"
    for position in range(8):
        labels = read_indexed_png(out / "masks" / f"{position:05d}.png")
        assert labels.shape == (h, w) and set(np.unique(labels)) <= {0, *map(int, record["tracks"])}
    assert sorted(p.name for p in (out / "labelme").iterdir()) == sorted(f"frame{i}.json" for i in range(8))
    overlay = out / "overlay.mp4"
    assert not overlay.exists() or overlay.stat().st_size > 0
    assert "8 frames" in capsys.readouterr().out


def test_a_bundle_without_sam2s_memory_cannot_track_and_says_so(tiny_bundle, tmp_path, capsys):
    from engine.doctor import bundle_report

    assert bundle_report(tiny_bundle)[1]["video"].startswith("cannot track: the segmenter is the image graphs")
    clip, _, _ = _panning_clip(tmp_path / "clip", count=2)
    assert main(["track", str(clip), "the cup", "--bundle", str(tiny_bundle), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert "cannot track" in err and "--sam2" in err and len(err.splitlines()) == 1
    assert main(["track", str(tmp_path / "missing"), "the cup", "--out", str(tmp_path / "o")]) != 0
    assert "no such video or folder" in capsys.readouterr().err


@pytest.mark.timeout(600)
def test_a_bundle_exported_with_video_keeps_sam2s_checkpoint_and_tracks_without_sam2(tiny_sam2, tmp_path, capsys):
    """`star-export sam2 --video` into a copy of the nano bundle: the ONNX graphs and the PyTorch pair (config +
    checkpoint, hashed in the manifest); star doctor says it can track; star track needs no --sam2."""
    require("torch")
    require("llama_cpp")
    require("onnxruntime")
    import shutil

    from engine.bundle import default_bundle_dir, load_bundle
    from engine.doctor import bundle_report
    from export.cli import main as export_main

    bundle = tmp_path / "nano-video"
    shutil.copytree(default_bundle_dir(), bundle)
    assert export_main(["sam2", "--checkpoint", str(tiny_sam2.checkpoint), "--config", str(tiny_sam2.config),
                        "--video", "--out", str(bundle)]) == 0
    seg = load_bundle(bundle, verify="full").manifest.segmenter
    assert seg.checkpoint and seg.config and seg.encoder_onnx
    assert bundle_report(bundle)[1]["video"].startswith("can track")
    clip, _, _ = _panning_clip(tmp_path / "clip", count=3)
    capsys.readouterr()
    assert main(["--threads", "2", "track", str(clip), "the cup", "--bundle", str(bundle), "--out",
                 str(tmp_path / "o"), "--quiet", "--no-overlay"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "track.json").read_text())["frames_done"] == 3


@pytest.mark.timeout(600)
def test_a_stopped_track_goes_on_from_its_last_frame_and_keeps_what_was_done(tiny_sam2, tmp_path, capsys):
    """A run cut after frame 4 (track.json as a Ctrl-C leaves it: the frames so far, complete false): the same
    command keeps frames 0-3 untouched and finishes the clip from frame 4; run again it says it is complete;
    another query into the same folder is refused in one line."""
    require("torch")
    require("llama_cpp")

    clip, _, _ = _panning_clip(tmp_path / "clip")
    out = tmp_path / "out"
    argv = ["--threads", "2", "track", str(clip), "what coffee is served in", "--sam2",
            f"{tiny_sam2.config}:{tiny_sam2.checkpoint}", "--out", str(out), "--key-frame", "1", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    full = json.loads((out / "track.json").read_text())
    cut = dict(full, complete=False, frames={p: e for p, e in full["frames"].items() if int(p) <= 4})
    cut["frames_done"] = len(cut["frames"])
    (out / "track.json").write_text(json.dumps(cut))
    for position in range(5, 8):
        (out / "masks" / f"{position:05d}.png").unlink()
    kept = {p: (out / "masks" / f"{p:05d}.png").read_bytes() for p in range(4)}
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming at frame 4 (4 frames kept" in capsys.readouterr().err
    resumed = json.loads((out / "track.json").read_text())
    assert resumed["complete"] and resumed["frames_done"] == 8
    assert [resumed["frames"][str(p)] for p in range(4)] == [full["frames"][str(p)] for p in range(4)]
    assert resumed["asks"][0] == full["asks"][0]
    assert all((out / "masks" / f"{p:05d}.png").read_bytes() == kept[p] for p in range(4))
    assert all((out / "masks" / f"{p:05d}.png").is_file() for p in range(8))
    assert main(argv) == 0 and "already holds this track, complete" in capsys.readouterr().out
    other = argv.copy()
    other[4] = "the plate"
    assert main(other) != 0
    err = capsys.readouterr().err
    assert "holds a track made with other settings" in err and "Traceback" not in err


@pytest.mark.timeout(600)
def test_a_checkpoint_of_the_bundles_own_graphs_goes_beside_them_and_another_sam_is_refused(tiny_sam2, tmp_path, capsys):
    """--keep-graphs: the nano bundle's SAM brought back from its graphs (star-export import-sam) is placed
    beside them (the graphs' bytes unchanged, the pair hashed in the manifest, the bundle can track); the tiny
    random SAM 2, another model, is refused in one line and the bundle is left as it was."""
    require("torch")
    require("onnxruntime")
    import shutil

    from engine.bundle import default_bundle_dir, load_bundle
    from engine.doctor import bundle_report
    from export.cli import main as export_main

    bundle = tmp_path / "nano"
    shutil.copytree(default_bundle_dir(), bundle)
    graphs = {p.name: p.read_bytes() for p in (bundle / "sam2").glob("*.onnx")}
    manifest = (bundle / "bundle.json").read_text()
    assert export_main(["sam2", "--checkpoint", str(tiny_sam2.checkpoint), "--config", str(tiny_sam2.config),
                        "--video", "--keep-graphs", "--out", str(bundle)]) != 0
    assert "differs from the bundle's graphs" in capsys.readouterr().err
    assert (bundle / "bundle.json").read_text() == manifest and sorted(p.name for p in (bundle / "sam2").iterdir()) \
        == sorted(graphs)
    assert export_main(["import-sam", "--bundle", str(bundle), "--out", str(tmp_path / "sam")]) == 0
    assert export_main(["sam2", "--checkpoint", str(tmp_path / "sam" / "sam2.pt"), "--config",
                        str(tmp_path / "sam" / "sam2.yaml"), "--video", "--keep-graphs", "--out", str(bundle)]) == 0
    assert {p.name: p.read_bytes() for p in (bundle / "sam2").glob("*.onnx")} == graphs
    seg = load_bundle(bundle, verify="full").manifest.segmenter
    assert (seg.checkpoint, seg.config) == ("sam2/sam2.pt", "sam2/sam2.yaml") and seg.source["video_checkpoint"]
    assert bundle_report(bundle)[1]["video"].startswith("can track")

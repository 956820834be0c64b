"""The reasoner (engine.pipeline) and `star segment`.

The composition is checked with a replaying policy (a test double that returns fixed completions: a
random tiny VLM never writes a valid answer) in front of the real segmenter of the tiny bundle; the
expected masks come from calling that segmenter directly with hand-converted coordinates, and the
expected vote from docs/protocol.md §6 worked by hand. The real llama.cpp policy runs through
`star segment` on the same bundle."""

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.errors import InvalidQueryError, ModelFileError
from tests.scripted import BLUE, RANDOM_SAM, RED, H, ReplayPolicy, W, answer, to_original


def reasoner(segmenter, texts):
    from engine.pipeline import LocalReasoner

    return LocalReasoner(ReplayPolicy(texts), segmenter, frame="pixels-112", bundle={"name": "tiny"}, **RANDOM_SAM)


def direct_masks(segmenter, image, *objects):
    boxes = np.array([to_original(b) for _, b, _ in objects], np.float32)
    points = np.array([to_original(p) for _, _, p in objects], np.float32)
    return segmenter.segment(segmenter.embed(image), boxes, points).masks


def test_direct_prediction_is_the_or_of_the_answers_masks(tiny_segmenter, scene_image):
    events = []
    result = reasoner(tiny_segmenter, [answer(RED, BLUE)]).run(scene_image, "the red square and the blue circle", 1,
                                                                on_event=events.append)
    expected = direct_masks(tiny_segmenter, scene_image, RED, BLUE)
    assert result.mask.shape == (H, W)
    assert (result.mask == (expected[0] | expected[1])).all() and result.mask.any()
    assert not result.no_object and result.vote is None
    s = result.samples[0]
    assert s.status == "ok" and [t.box for t in s.targets] == [tuple(to_original(RED[1])), tuple(to_original(BLUE[1]))]
    assert [t.label for t in s.targets] == ["red square", "blue circle"]
    assert (result.sample_mask(0) == result.mask).all()
    kinds = [e.kind for e in events]
    assert kinds[0] == "stage" and "token" in kinds and kinds.index("sample") > kinds.index("token")
    assert kinds.index("masks") > kinds.index("sample")
    assert "".join(e.text for e in events if e.kind == "token") == answer(RED, BLUE)
    t = result.timings
    assert t.sam_encode_ms > 0 and t.sam_decode_ms > 0 and t.total_ms >= t.sam_encode_ms + t.sam_decode_ms


def test_majority_vote_gets_the_candidates_protocol_says(tiny_segmenter, scene_image):
    """5 samples: 3 x red, 1 x blue, 1 unparseable -> 4 valid runs, one abstention, K = 1, and the vote of
    the hand-built candidate list (sample order, SAM scores, labels; the failure as None). A random SAM
    paints nearly the same mask for any prompt, so which cluster wins is left to the voting tests."""
    from engine.voting import majority_vote

    texts = [answer(RED), answer(BLUE), answer(RED), "<answer>[{\"bbox_2d\": oops</answer>", answer(RED)]
    result = reasoner(tiny_segmenter, texts).run(scene_image, "the red square", 5)
    out = tiny_segmenter.segment(tiny_segmenter.embed(scene_image),
                            np.array([to_original(o[1]) for o in (RED, BLUE, RED, RED)], np.float32),
                            np.array([to_original(o[2]) for o in (RED, BLUE, RED, RED)], np.float32))
    m, sc = out.masks, out.scores
    expected = majority_vote([[(m[0], sc[0], "red square")], [(m[1], sc[1], "blue circle")],
                              [(m[2], sc[2], "red square")], None, [(m[3], sc[3], "red square")]])
    v = result.vote
    assert v.valid_runs == 4 and v.abstained == 1 and v.k == 1
    assert (result.mask == expected.mask).all() and result.mask.any()
    assert [(c.votes, c.label, [(x.sample, x.obj) for x in c.members]) for c in v.clusters] == \
        [(c.votes, c.label, [(x.sample, x.obj) for x in c.members]) for c in expected.clusters]
    assert [s.status for s in result.samples] == ["ok", "ok", "ok", "failed", "ok"]
    assert [s.scores for s in result.samples] == [[sc[0]], [sc[1]], [sc[2]], [], [sc[3]]]


def test_no_object_majority(tiny_segmenter, scene_image):
    texts = ["<answer>[]</answer>", answer(RED), "<think> none </think> <answer>[]</answer>", answer(RED),
             "<answer>[]</answer>"]
    result = reasoner(tiny_segmenter, texts).run(scene_image, "a purple banana", 5)
    assert result.no_object and not result.mask.any()
    assert result.vote.no_object_votes == 3


@pytest.mark.parametrize("stage", ["segmenting", "progress"])
def test_stop_during_segmentation_stops_and_says_so(tiny_segmenter, scene_image, monkeypatch, stage):
    """Stop after decoding: no more prompts are segmented, no vote, and the result is marked cancelled with
    every sample's text kept (an answer it is not)."""
    import engine.pipeline
    from engine.policy.types import CancelToken

    monkeypatch.setattr(engine.pipeline, "SEGMENT_BATCH", 2)
    texts = [answer(RED, BLUE)] * 4  # 8 prompts: 4 batches of 2
    calls = []
    original = tiny_segmenter.segment
    monkeypatch.setattr(tiny_segmenter, "segment", lambda *a, **k: calls.append(1) or original(*a, **k))
    cancel = CancelToken()

    def on_event(event):
        if (event.kind, event.text) == (("stage", "segmenting") if stage == "segmenting" else ("progress", "segmenting")):
            cancel.cancel()

    result = reasoner(tiny_segmenter, texts).run(scene_image, "the red square", 4, cancel=cancel, on_event=on_event)
    assert result.cancelled and result.vote is None and not result.mask.any() and not result.no_object
    assert [s.text for s in result.samples] == texts
    from engine.results import result_to_dict

    data = result_to_dict(result)  # what the app and --json make of it
    assert data["cancelled"] and all("mask" not in t for s in data["samples"] for t in s["targets"])
    assert len(calls) == (0 if stage == "segmenting" else 1)


def test_a_cpu_run_votes_on_the_cpu_and_says_so(tiny_segmenter, scene_image):
    """The vote runs where the masks are: on a CPU segmenter that is the CPU, recorded in the timings; a
    segmenter on a GPU votes there only when the CUDA kernel can run (here it cannot: no CuPy GPU)."""
    from engine.kernels.cuda_voting import unavailable_reason
    from engine.pipeline import votes_on_device

    voted = reasoner(tiny_segmenter, [answer(RED), answer(RED), answer(BLUE)]).run(scene_image, "the red square", 3)
    assert voted.timings.vote_backend == "cpu" and isinstance(voted.object_masks, np.ndarray)
    direct = reasoner(tiny_segmenter, [answer(RED)]).run(scene_image, "the red square", 1)
    assert direct.timings.vote_backend == "direct"
    assert not votes_on_device(tiny_segmenter)

    class GpuLooking:  # what a CUDA TorchSegmenter, a TensorRT one or ONNX Runtime's CUDA provider offers
        on_gpu = True
        device_outputs = True

        def device_segment(self, *a):
            raise AssertionError("not called")

    class HostOutputs(GpuLooking):  # on a GPU, but its outputs come back to the host (e.g. no torch CUDA)
        device_outputs = False

    assert votes_on_device(GpuLooking()) == (unavailable_reason() == "")
    assert not votes_on_device(HostOutputs())


def test_bad_queries_are_refused(tiny_segmenter, scene_image):
    r = reasoner(tiny_segmenter, [answer(RED)])
    for query in ("", "   ", "x" * 5000):
        with pytest.raises(InvalidQueryError):
            r.run(scene_image, query, 1)


def test_result_json_round_trips_masks(tiny_segmenter, scene_image):
    from engine.results import result_to_dict
    from engine.rle import decode

    result = reasoner(tiny_segmenter, [answer(RED), answer(RED), answer(BLUE)]).run(scene_image, "the red square", 3)
    d = json.loads(json.dumps(result_to_dict(result)))
    assert (decode(d["mask"]) == result.mask).all() and d["mask"]["size"] == [H, W]
    assert isinstance(d["mask"]["counts"], str)
    assert d["samples"][2]["targets"][0]["label"] == "blue circle"
    assert (decode(d["samples"][2]["targets"][0]["mask"]) == result.object_masks[2]).all()
    assert [c["votes"] for c in d["clusters"]] == [c.votes for c in result.vote.clusters]
    assert [c["id"] for c in d["clusters"] if c["selected"]] == result.vote.selected


@pytest.mark.parametrize("texts, n", [
    ([answer(RED, BLUE)], 1),
    ([answer(RED), answer(BLUE), answer(RED), "<answer>[{\"bbox_2d\": oops</answer>", answer(RED)], 5),
    (["<answer>[]</answer>", answer(RED), "<answer>[]</answer>"], 3),
])
def test_a_result_rebuilt_from_its_json_gives_the_same_json(tiny_segmenter, scene_image, texts, n):
    """What a server's result becomes on the client (engine.serve.remote): result_from_dict is the inverse of
    result_to_dict, for a direct answer, a vote with an abstention, and a no-object majority."""
    from engine.results import result_from_dict, result_to_dict

    result = reasoner(tiny_segmenter, texts).run(scene_image, "the red square", n)
    data = json.loads(json.dumps(result_to_dict(result)))
    rebuilt = result_from_dict(data)
    assert json.loads(json.dumps(result_to_dict(rebuilt))) == data
    assert (rebuilt.mask == result.mask).all() and rebuilt.no_object == result.no_object
    assert (rebuilt.object_masks == np.asarray(result.object_masks)).all()


# ---- `star segment` with the real llama.cpp policy of the tiny bundle ----------------------------------------


def star(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def test_star_segment_json_on_the_tiny_bundle(tiny_bundle, scene_image, tmp_path):
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(scene_image).save(path)
    proc = star("segment", str(path), "the red square", "--bundle", str(tiny_bundle), "-n", "4", "--max-new-tokens", "24",
                "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)  # one JSON object and nothing else on stdout
    assert payload["n"] == 4 and len(payload["samples"]) == 4
    assert payload["mask"]["size"] == [H, W] and isinstance(payload["mask"]["counts"], str)
    assert {"status", "thinking", "targets"} <= set(payload["samples"][0])
    assert payload["timings"]["decode_tokens"] > 0 and payload["bundle"]["name"] == "tiny-random"
    for name in ("scene_mask.png", "scene_overlay.png", "scene.json"):
        assert (tmp_path / "out" / name).is_file()
    mask = np.asarray(Image.open(tmp_path / "out" / "scene_mask.png"))
    assert mask.shape == (H, W)


def test_star_segment_errors(tiny_bundle, scene_image, tmp_path):
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(scene_image).save(path)
    proc = star("segment", str(path), "  ", "--bundle", str(tiny_bundle))
    assert proc.returncode == 2 and "query is empty" in proc.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = star("segment", str(bad), "the red square", "--bundle", str(tiny_bundle))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = star("segment", str(path), "the red square", "--bundle", str(tmp_path / "none"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_a_bundle_can_recommend_the_answer_grammar(tiny_bundle, scene_image, tmp_path):
    """policy.answer_grammar in the manifest makes grammar decoding the default of star segment; --no-grammar
    overrides it; manifests written before the key existed decode freely. Observed through the text: the
    grammar's first literal is "<think>", which the random tiny model never writes freely."""
    import shutil

    from PIL import Image

    from engine.bundle import Manifest

    path = tmp_path / "scene.png"
    Image.fromarray(scene_image).save(path)
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert "answer_grammar" in manifest["policy"]
    del manifest["policy"]["answer_grammar"]
    assert Manifest.from_dict(manifest).policy.answer_grammar is False  # an older manifest
    manifest["policy"]["answer_grammar"] = True
    (bundle / "bundle.json").write_text(json.dumps(manifest))

    def first_text(root, *extra):
        proc = star("segment", str(path), "the red square", "--bundle", str(root), "--max-new-tokens", "16",
                    "--out", "", "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["samples"][0]["text"]

    assert first_text(bundle).startswith("<think>")
    assert not first_text(bundle, "--no-grammar").startswith("<think>")
    assert not first_text(tiny_bundle).startswith("<think>")  # the stock manifest: free


def test_voting_temperature_reaches_the_samples(tiny_bundle, scene_image, tmp_path):
    """--temperature sets the N > 1 samples' temperature: near zero, every sample is the greedy (N = 1)
    answer; at StAR's 1.0 the random tiny model's samples differ from it and from each other. Without the
    flag, the manifest's policy.vote_temperature decides (1.0 where an older manifest lacks the key)."""
    import shutil

    from PIL import Image

    from engine.bundle import Manifest

    path = tmp_path / "scene.png"
    Image.fromarray(scene_image).save(path)
    cool = tmp_path / "cool"
    shutil.copytree(tiny_bundle, cool)
    manifest = json.loads((cool / "bundle.json").read_text())
    assert manifest["policy"]["vote_temperature"] == 1.0
    del manifest["policy"]["vote_temperature"]
    assert Manifest.from_dict(manifest).policy.vote_temperature == 1.0  # an older manifest
    with pytest.raises(ModelFileError, match="policy.vote_temperature: expected a number in"):
        Manifest.from_dict({**manifest, "policy": {**manifest["policy"], "vote_temperature": 0}})
    manifest["policy"]["vote_temperature"] = 0.001
    (cool / "bundle.json").write_text(json.dumps(manifest))

    used = []  # the sampling each run's JSON says it decoded with

    def texts(bundle, n, *extra):
        proc = star("segment", str(path), "the red square", "--bundle", str(bundle), "-n", str(n),
                    "--max-new-tokens", "12", "--out", "", "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        payload = json.loads(proc.stdout)
        used.append(payload["sampling"])
        return [s["text"] for s in payload["samples"]]

    greedy = texts(tiny_bundle, 1)[0]
    assert texts(tiny_bundle, 4, "--temperature", "0.001") == [greedy] * 4
    hot = texts(tiny_bundle, 4)
    assert len(set(hot)) > 1 and greedy not in hot
    assert texts(cool, 4) == [greedy] * 4  # the manifest's 0.001
    assert texts(cool, 4, "--temperature", "1") == hot  # the flag overrides it (same seed, same samples)
    assert [u["temperature"] for u in used] == [0.0, 0.001, 1.0, 0.001, 1.0]
    assert used[2] == {"temperature": 1.0, "top_p": 0.9, "top_k": 0, "seed": 0, "max_new_tokens": 12,
                       "constrained": False}  # StAR's voting settings, as the flags asked
    proc = star("segment", str(path), "x", "--bundle", str(tiny_bundle), "--temperature", "0")
    assert proc.returncode == 2 and "must be a finite number > 0" in proc.stderr


def test_load_reasoner_refuses_a_tampered_bundle(tiny_bundle, tmp_path):
    import shutil

    from engine.pipeline import load_reasoner

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    gguf = bundle / "policy" / "model-q8_0.gguf"
    data = bytearray(gguf.read_bytes())
    data[-10] ^= 0x55
    gguf.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        load_reasoner(bundle, device="cpu")


def test_a_full_check_rereads_files_this_process_already_hashed(tiny_bundle, tmp_path):
    """The in-process hash memo (keyed by size and mtime) must not hide a same-size edit whose mtime was put
    back: star-export verify's full check reads every byte again."""
    import hashlib
    import os
    import shutil

    from engine.bundle import check_files, read_manifest, sha256_file

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    target = root / "sam2" / "sam2_decoder.onnx"
    assert sha256_file(target) == hashlib.sha256(target.read_bytes()).hexdigest()  # now memoised
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    bundle = read_manifest(root)
    problems = check_files(bundle, full=True, use_stamps=False)
    assert any("sam2_decoder.onnx" in p and "SHA-256" in p for p in problems), problems


def test_rle_union_and_decode_order():
    """The union merged on runs equals numpy's OR of the masks; decode answers C-ordered masks (the app's
    unions and drawing were strided on pycocotools' Fortran order)."""
    from engine.rle import decode, encode, union

    rng = np.random.default_rng(3)
    masks = [rng.random((41, 67)) > 0.8 for _ in range(6)]
    rles = [encode(m) for m in masks]
    assert np.array_equal(union(rles), np.logical_or.reduce(masks))
    assert np.array_equal(union(rles[:1]), masks[0])
    out = decode(rles[2])
    assert out.flags.c_contiguous and out.dtype == bool and np.array_equal(out, masks[2])
    with pytest.raises(ValueError):
        union([])

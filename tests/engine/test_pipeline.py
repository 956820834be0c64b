"""The reasoner (engine.pipeline) and `star segment`.

The composition is checked with a replaying policy (a test double that returns fixed completions: a
random tiny VLM never writes a valid answer) in front of the real segmenter of the tiny bundle; the
expected masks come from calling that segmenter directly with hand-converted coordinates, and the
expected vote from PROTOCOL.md section 6 worked by hand. The real llama.cpp policy runs through
`star segment` on the same bundle."""

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.bundle import load_bundle
from engine.errors import InvalidQueryError, ModelFileError
from engine.policy.types import Completion, PolicyTimings
from tests.models import require

W, H = 224, 184  # original image; the tiny bundle's frame is pixels-112


class ReplayPolicy:
    """Returns the given completions, streaming them token by token (one token = one character)."""

    def __init__(self, texts):
        self.texts = texts
        self.timings = PolicyTimings()

    def sample(self, image, query, n, sampling, *, on_token=None, cancel=None):
        assert n == len(self.texts)
        for i, text in enumerate(self.texts):
            for ch in text:
                if on_token:
                    on_token(i, ch)
        return [Completion(i, t, [], "stop") for i, t in enumerate(self.texts)]


def answer(*objects):
    body = ", ".join(f'{{"label": "{lb}", "bbox_2d": [{b[0]},{b[1]},{b[2]},{b[3]}], "point_2d": [{p[0]},{p[1]}]}}'
                     for lb, b, p in objects)
    return f"<think> looking </think> <answer>[{body}]</answer>"


RED = ("red square", (15, 10, 45, 35), (30, 22))  # frame pixels (112 x 112)
BLUE = ("blue circle", (55, 40, 100, 95), (78, 68))


@pytest.fixture(scope="module")
def image():
    from export.verify import probe_image

    return np.ascontiguousarray(probe_image(H)[:, :W])


@pytest.fixture(scope="module")
def segmenter(tiny_bundle):
    require("onnxruntime")
    from engine.segment import load_segmenter

    return load_segmenter(load_bundle(tiny_bundle).segmenter_files(), "onnx", device="cpu", threads=1)


def reasoner(segmenter, texts):
    from engine.pipeline import Reasoner

    return Reasoner(ReplayPolicy(texts), segmenter, frame="pixels-112", bundle={"name": "tiny"})


def to_original(values):
    """PROTOCOL.md section 2 by hand: x * W / 112, y * H / 112, rounded half up."""
    return [int(v * (W if i % 2 == 0 else H) / 112 + 0.5) for i, v in enumerate(values)]


def direct_masks(segmenter, image, *objects):
    boxes = np.array([to_original(b) for _, b, _ in objects], np.float32)
    points = np.array([to_original(p) for _, _, p in objects], np.float32)
    return segmenter.segment(segmenter.embed(image), boxes, points).masks


def test_direct_prediction_is_the_or_of_the_answers_masks(segmenter, image):
    events = []
    result = reasoner(segmenter, [answer(RED, BLUE)]).run(image, "the red square and the blue circle", 1,
                                                           on_event=events.append)
    expected = direct_masks(segmenter, image, RED, BLUE)
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


def test_majority_vote_gets_the_candidates_protocol_says(segmenter, image):
    """5 samples: 3 x red, 1 x blue, 1 unparseable -> 4 valid runs, one abstention, K = 1, and the vote of
    the hand-built candidate list (sample order, SAM scores, labels; the failure as None). A random SAM
    paints nearly the same mask for any prompt, so which cluster wins is left to the voting tests."""
    from engine.voting import majority_vote

    texts = [answer(RED), answer(BLUE), answer(RED), "<answer>[{\"bbox_2d\": oops</answer>", answer(RED)]
    result = reasoner(segmenter, texts).run(image, "the red square", 5)
    out = segmenter.segment(segmenter.embed(image),
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


def test_no_object_majority(segmenter, image):
    texts = ["<answer>[]</answer>", answer(RED), "<think> none </think> <answer>[]</answer>", answer(RED),
             "<answer>[]</answer>"]
    result = reasoner(segmenter, texts).run(image, "a purple banana", 5)
    assert result.no_object and not result.mask.any()
    assert result.vote.no_object_votes == 3


def test_bad_queries_are_refused(segmenter, image):
    r = reasoner(segmenter, [answer(RED)])
    for query in ("", "   ", "x" * 5000):
        with pytest.raises(InvalidQueryError):
            r.run(image, query, 1)


def test_result_json_round_trips_masks(segmenter, image):
    from engine.results import result_to_dict
    from engine.rle import decode

    result = reasoner(segmenter, [answer(RED), answer(RED), answer(BLUE)]).run(image, "the red square", 3)
    d = json.loads(json.dumps(result_to_dict(result)))
    assert (decode(d["mask"]) == result.mask).all() and d["mask"]["size"] == [H, W]
    assert isinstance(d["mask"]["counts"], str)
    assert d["samples"][2]["targets"][0]["label"] == "blue circle"
    assert (decode(d["samples"][2]["targets"][0]["mask"]) == result.object_masks[2]).all()
    assert [c["votes"] for c in d["clusters"]] == [c.votes for c in result.vote.clusters]
    assert [c["id"] for c in d["clusters"] if c["selected"]] == result.vote.selected


# ---- `star segment` with the real llama.cpp policy of the tiny bundle ----------------------------------------


def star(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def test_star_segment_json_on_the_tiny_bundle(tiny_bundle, image, tmp_path):
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
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


def test_star_segment_errors(tiny_bundle, image, tmp_path):
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    proc = star("segment", str(path), "  ", "--bundle", str(tiny_bundle))
    assert proc.returncode == 2 and "query is empty" in proc.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = star("segment", str(bad), "the red square", "--bundle", str(tiny_bundle))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = star("segment", str(path), "the red square", "--bundle", str(tmp_path / "none"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


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

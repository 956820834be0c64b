"""`star eval`: scores reproduced independently from the run's own predictions, resume after an interruption,
the scaling report, every dataset format, and the command line on the real tiny bundle.

The numbers test drives the real segmenter of the tiny bundle with a scripted policy (fixed completions
per query: a random tiny VLM never writes a valid answer); the expected gIoU / cIoU are computed here
with numpy from the predictions in results.jsonl (decoded with pycocotools) and the hand-made GT."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from tests.datasets import Item, write_dataset
from tests.scripted import BLUE, FRAME, RANDOM_SAM, RED, H, ScriptedPolicy, W, answer, to_original

FAIL = '<answer>[{"bbox_2d": oops</answer>'
EMPTY = "<think> nothing like that </think> <answer>[]</answer>"


SCRIPT = {
    "the red square": [answer(RED), answer(RED), answer(BLUE), FAIL],
    "the blue circle": [answer(BLUE), answer(BLUE), answer(BLUE), answer(RED)],
    "a purple banana": [EMPTY, EMPTY, EMPTY, answer(RED)],
    "both shapes": [answer(RED, BLUE), answer(RED, BLUE), answer(RED), FAIL],
}


@pytest.fixture(scope="module")
def items(scene_image):
    image = scene_image
    red, blue = to_original(RED[1]), to_original(BLUE[1])
    return [
        Item("a", image, "the red square", [tuple(red)], meta={"reasoning_type": "purpose/functional", "is_sentence": True}),
        Item("b", image, "the blue circle", [(blue[0], blue[1], blue[2] - 20, blue[3])],
             ignore=[(blue[2] - 19, blue[1], blue[2], blue[3])], meta={"reasoning_type": "comparative/relational"}),
        Item("c", image, "a purple banana", [], meta={"reasoning_type": "commonsense/knowledge-intensive"}),
        Item("d", image, "both shapes", [tuple(red), tuple(blue)], meta={"reasoning_type": "comparative/relational"}),
    ]


def make_reasoner(segmenter, **kw):
    from engine.pipeline import LocalReasoner

    policy = ScriptedPolicy(SCRIPT, **kw)
    return LocalReasoner(policy, segmenter, frame=f"pixels-{FRAME}", bundle={"name": "tiny", "policy": {"sha256": "x"}},
                        **RANDOM_SAM), policy


def run(segmenter, data, out, n=4, **kw):
    from engine.data import open_dataset, parse_data_spec
    from engine.evaluation.runner import EvalSettings, run_eval

    reasoner, policy = make_reasoner(segmenter, cancel_on=kw.pop("cancel_on", None))
    kind, path = parse_data_spec(data)
    outcome = run_eval(reasoner, open_dataset(kind, path), out, EvalSettings(data=data, n=n, **kw), progress=False)
    return outcome, policy


def by_hand(preds, gts, ignore_as_object):
    """gIoU / cIoU per LISA (ignore excluded, empty/empty = 1) or the HF copies (ignore is object)."""
    ious, inter, union = [], 0, 0
    for pred, gt in zip(preds, gts):
        target = (gt == 1) | ((gt == 255) if ignore_as_object else False)
        if not ignore_as_object:
            pred = pred & (gt != 255)
        i, u = int((pred & target).sum()), int((pred | target).sum())
        ious.append(i / u if u else 1.0)
        inter, union = inter + i, union + u
    return float(np.mean(ious)), inter / union


def sample_masks(segmenter, image, texts):
    """What each completion alone predicts (docs/protocol.md §2 by hand, then SAM, OR of its objects)."""
    from engine.protocol import parse_answer

    emb = segmenter.embed(image)
    out = []
    for text in texts:
        a = parse_answer(text, (W, H), f"pixels-{FRAME}")
        mask = np.zeros((H, W), bool)
        if a.targets:
            m = segmenter.segment(emb, np.array([t.box for t in a.targets], np.float32),
                                  np.array([t.point for t in a.targets], np.float32)).masks
            mask = m.any(0)
        out.append(mask)
    return out


def decode(rle):
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_eval_scores_match_an_independent_computation(tiny_segmenter, items, scene_image, tmp_path):
    from engine.evaluation.report import summarize

    data = write_dataset("reasonseg", tmp_path / "data", items)
    outcome, _ = run(tiny_segmenter, data, tmp_path / "run")
    assert not outcome.interrupted and outcome.new == 4
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["a", "b", "c", "d"]
    preds = [decode(r["pred"]) for r in lines]
    gts = [it.gt() for it in items]
    assert gts[1].max() == 255 and preds[0].any()
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    for convention, ignore_as_object in (("lisa", False), ("star", True)):
        s = summarize(outcome.records, settings, convention)
        giou, ciou = by_hand(preds, gts, ignore_as_object)
        assert s["giou"] == pytest.approx(giou, abs=1e-12) and s["ciou"] == pytest.approx(ciou, abs=1e-12)
        rel = [i for i, it in enumerate(items) if it.meta["reasoning_type"] == "comparative/relational"]
        g_rel, _ = by_hand([preds[i] for i in rel], [gts[i] for i in rel], ignore_as_object)
        assert s["groups"]["reasoning_type"]["comparative/relational"]["giou"] == pytest.approx(g_rel, abs=1e-12)
        assert s["groups"]["query_type"]["long"]["n"] == 1
    # Seg-Zero skips the empty/empty item ("a purple banana" voted no object).
    assert lines[2]["no_object"] and summarize(outcome.records, settings, "seg-zero")["scored"] == 3
    # N' = 1 from the same run: every completion alone is one replicate; the report averages them.
    s = summarize(outcome.records, settings, "lisa")
    per_sample = [sample_masks(tiny_segmenter, scene_image, SCRIPT[it.query]) for it in items]
    replicate = [by_hand([per_sample[i][j] for i in range(4)], gts, False) for j in range(4)]
    one = s["scaling"][0]
    assert one["n"] == 1 and one["replicates"] == 4
    assert one["giou"] == pytest.approx(np.mean([g for g, _ in replicate]), abs=1e-12)
    assert one["ciou"] == pytest.approx(np.mean([c for _, c in replicate]), abs=1e-12)
    assert [r["n"] for r in s["scaling"]] == [1, 2, 4] and s["scaling"][-1]["giou"] == s["giou"]
    # The sweep re-votes the same completions; the default setting reproduces the main number.
    default = [r for r in s["sweep"]["configs"] if r["mode"] == "best" and r["iou_threshold"] == 0.85
               and r["no_object_threshold"] == 0.5 and r["vote_threshold"] == 0.2 and r["pixel_threshold"] == 0.5]
    assert len(s["sweep"]["configs"]) == 216 and default[0]["giou"] == pytest.approx(s["giou"])
    assert s["sweep"]["best_giou"]["giou"] >= s["giou"]


def test_interrupted_eval_resumes_and_matches_an_unbroken_run(tiny_segmenter, items, tmp_path):
    from engine.evaluation.runlog import EvalRunError

    data = write_dataset("reasonseg", tmp_path / "data", items)
    whole, _ = run(tiny_segmenter, data, tmp_path / "whole")
    # Cancelled while decoding item c: a and b are saved, c is not recorded.
    first, _ = run(tiny_segmenter, data, tmp_path / "broken", cancel_on="a purple banana")
    assert first.interrupted and [r["id"] for r in first.records] == ["a", "b"]
    # A process killed mid-write leaves a torn line: it is dropped and overwritten.
    with open(tmp_path / "broken" / "results.jsonl", "a") as f:
        f.write('{"id": "c", "cou')
    second, policy = run(tiny_segmenter, data, tmp_path / "broken")
    assert not second.interrupted and second.new == 2
    assert [q for q, _ in policy.calls] == ["a purple banana", "both shapes"]  # a and b were not redone
    lines = (tmp_path / "broken" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c", "d"]
    strip = lambda r: {k: v for k, v in r.items() if k != "timings"}  # noqa: E731
    assert [strip(r) for r in second.records] == [strip(r) for r in whole.records]
    # Other settings in the same folder are refused, naming the difference.
    with pytest.raises(EvalRunError, match="n: 4 there, 2 now"):
        run(tiny_segmenter, data, tmp_path / "broken", n=2)
    # A damaged line in the middle is an error, not silently skipped.
    (tmp_path / "broken" / "results.jsonl").write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(EvalRunError, match="line 2"):
        run(tiny_segmenter, data, tmp_path / "broken")


def test_item_seeds_do_not_depend_on_order(tiny_segmenter, items, tmp_path):
    data = write_dataset("reasonseg", tmp_path / "data", items)
    _, policy = run(tiny_segmenter, data, tmp_path / "a", limit=2)
    _, again = run(tiny_segmenter, data, tmp_path / "a")
    seeds = dict(policy.calls + again.calls)
    assert len(set(seeds.values())) == 4
    _, other = run(tiny_segmenter, data, tmp_path / "b", seed=1)
    assert all(seeds[q] != s for q, s in other.calls)


@pytest.mark.parametrize("kind", ["reasonseg", "reasonseg-x", "refcoco", "cod", "mmr"])
def test_every_dataset_format_through_eval(tiny_segmenter, items, kind, tmp_path):
    from engine.data import open_dataset, parse_data_spec

    shown = [it for it in items if it.rects]  # MMR and COD have no empty-target items
    data = write_dataset(kind, tmp_path / "data", shown)
    options = {"trust_pickle": True} if kind == "refcoco" else {}
    from engine.evaluation.runner import EvalSettings, run_eval

    reasoner, _ = make_reasoner(tiny_segmenter)
    reader_kind, path = parse_data_spec(data)
    if kind == "cod":  # COD has one fixed query
        reasoner.policy.script = {"the camouflaged object": SCRIPT["the red square"]}
    outcome = run_eval(reasoner, open_dataset(reader_kind, path, **options), tmp_path / "run",
                       EvalSettings(data=data, n=4), progress=False)
    assert len(outcome.records) == len(shown) and all("counts" in r for r in outcome.records)
    reader = open_dataset(reader_kind, path, **options)
    preds = [decode(r["pred"]) for r in outcome.records]
    gts = [s.load_gt() for s in reader]
    from engine.evaluation.report import summarize

    s = summarize(outcome.records, json.loads((tmp_path / "run" / "run.json").read_text()))
    assert s["giou"] == pytest.approx(by_hand(preds, gts, False)[0], abs=1e-12)


def test_latest_records_keep_a_retried_success_and_a_lasting_error(tmp_path):
    from engine.evaluation.runlog import RunLog

    log = RunLog(tmp_path)
    for record in ({"id": "a", "error": "unreadable"}, {"id": "b", "error": "unreadable"},
                   {"id": "a", "counts": [1, 2]}, {"id": "c", "counts": [3, 4]}):
        log.append(record)
    assert log.latest_records() == [{"id": "b", "error": "unreadable"}, {"id": "a", "counts": [1, 2]},
                                    {"id": "c", "counts": [3, 4]}]


# ---- the command line, with the real llama.cpp policy of the tiny bundle ---------------------------------------


def star(*args, **kw):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300, **kw)


def test_star_eval_cli_on_the_tiny_bundle(tiny_bundle, items, tmp_path):
    data = write_dataset("reasonseg-x", tmp_path / "data", items)
    out = tmp_path / "run"
    proc = star("eval", "--data", data, "--bundle", str(tiny_bundle), "-n", "2", "--max-new-tokens", "12",
                "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "gIoU" in proc.stdout and "| overall |" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["items"] == 4 and report["complete"] and report["n"] == 2
    assert [r["n"] for r in report["scaling"]] == [1, 2]
    for name in ("report.md", "scaling.png", "groups.png", "results.jsonl", "run.json"):
        assert (out / name).is_file()
    # A random policy rarely answers: everything it says is kept, whatever it is.
    line = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert len(line["samples"]) == 2 and {"status", "text", "finish_reason"} <= set(line["samples"][0])
    proc = star("eval", "--data", data, "--out", str(out), "--report-only", "--convention", "star")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "report.json").read_text())["convention"] == "star"
    proc = star("eval", "--data", "reasonseg:" + str(tmp_path / "missing"), "--bundle", str(tiny_bundle))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_star_eval_stopped_by_a_broken_item_still_reports(tiny_bundle, scene_image, tmp_path):
    """--on-error raise (the default) stops at a broken dataset file; the items before it are reported."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(scene_image).save(data / f"{name}.jpg")
    for name in ("a", "b"):  # c.jpg has no annotation file
        (data / f"{name}.json").write_text(json.dumps({"text": ["the red square"], "is_sentence": False, "shapes": [
            {"label": "target", "shape_type": "polygon", "points": [[10, 10], [40, 10], [40, 40], [10, 40]]}]}))
    out = tmp_path / "run"
    proc = star("eval", "--data", f"reasonseg:{data}", "--bundle", str(tiny_bundle), "--max-new-tokens", "8",
                "--out", str(out), "--quiet")
    assert proc.returncode == 2 and "c.jpg" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["items"] == 2 and not report["complete"]


def test_star_eval_ctrl_c_stops_cleanly_and_resumes(tiny_bundle, scene_image, tmp_path):
    many = [Item(f"x{i}", scene_image, f"thing number {i}", [(10, 10, 40, 40)]) for i in range(8)]
    data = write_dataset("reasonseg", tmp_path / "data", many)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "engine.cli", "eval", "--data", data, "--bundle", str(tiny_bundle), "-n", "2",
            "--max-new-tokens", "48", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (results.exists() and results.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    saved = results.read_text().count("\n")
    if saved < 8:  # (on a very fast machine the run may have finished before the signal)
        assert proc.returncode == 130, stderr
        assert "run the same command to resume" in stderr and "Traceback" not in stderr
        assert json.loads((out / "report.json").read_text())["complete"] is False
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ids = [json.loads(x)["id"] for x in results.read_text().splitlines()]
    assert sorted(ids) == sorted(it.id for it in many) and len(ids) == 8
    assert json.loads((out / "report.json").read_text())["complete"] is True


def test_grammar_setting_reaches_sampling_and_old_runs_resume(tmp_path):
    from engine.evaluation.runlog import EvalRunError, RunLog
    from engine.pipeline import sampling_for

    assert sampling_for(1, constrained=True).constrained and sampling_for(1, constrained=True).temperature == 0
    assert sampling_for(8, constrained=True).constrained and not sampling_for(8).constrained
    # A run.json written before the setting existed meant unconstrained decoding.
    old = {"data": "x", "n": 1, "seed": 0, "max_new_tokens": 8, "vote": {}, "sweep": [], "policy_sha256": None}
    RunLog(tmp_path).open(old)
    assert RunLog(tmp_path).open({**old, "constrained": False}) == []
    with pytest.raises(EvalRunError, match="constrained: False there, True now"):
        RunLog(tmp_path).open({**old, "constrained": True})
    # ... and StAR's voting temperature, 1.0.
    assert RunLog(tmp_path).open({**old, "temperature": 1.0}) == []
    with pytest.raises(EvalRunError, match="temperature: 1.0 there, 0.5 now"):
        RunLog(tmp_path).open({**old, "temperature": 0.5})


def test_a_run_is_not_resumed_on_another_segmenter_or_mask_guard(tmp_path):
    """The shipped nano bundle's identity names its segmenter by one hash over the segmenter files the manifest
    lists (worked out here from bundle.json); a run recorded with it is refused on another SAM or another mask
    guard, and resumed on the same ones."""
    import hashlib

    from engine.bundle import load_bundle
    from engine.evaluation.runlog import EvalRunError, RunLog
    from engine.evaluation.runner import EvalSettings
    from engine.honesty import MaskGuard
    from engine.pipeline import bundle_root

    root = bundle_root(None)
    manifest = json.loads((root / "bundle.json").read_text())
    seg = manifest["segmenter"]
    lines = sorted(f"{seg[k]} {manifest['files'][seg[k]]['sha256']}" for k in ("encoder_onnx", "decoder_onnx"))
    identity = load_bundle(root).identity()
    assert identity["segmenter"]["sha256"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()

    settings = EvalSettings(data="x")
    RunLog(tmp_path).open(settings.describe(identity))
    assert RunLog(tmp_path).open(settings.describe(identity, MaskGuard())) == []
    other_sam = {**identity, "segmenter": {**identity["segmenter"], "sha256": "0" * 64}}
    with pytest.raises(EvalRunError, match="segmenter_sha256"):
        RunLog(tmp_path).open(settings.describe(other_sam))
    with pytest.raises(EvalRunError, match="mask_guard"):
        RunLog(tmp_path).open(settings.describe(identity, MaskGuard(min_contrast=0.0)))

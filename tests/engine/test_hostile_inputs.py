"""The hostile-input suite for the command lines: bad images, bad queries, bad options (property-based),
bad datasets, unwritable outputs. The contract for every case: the command runs (exit 0), or it exits with
status 2 and its message names the input and what to do; no traceback and no "internal error" ever
reaches the user. docs/reliability.md tabulates what is covered."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.errors import INTERNAL_ERROR
from tests.hostile import QUERIES, image_corpus
from tests.models import require

REPO = Path(__file__).resolve().parents[2]
SCENE = REPO / "engine" / "samples" / "scene.png"


def run_cli(main, argv, codes=(0, 2)) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a command line run in this process, checked against the contract
    (`star doctor` answers 1 for "not intact", with its report on stdout)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse's errors
            rc = exc.code
    stderr = err.getvalue()
    assert "Traceback" not in stderr and INTERNAL_ERROR not in stderr, stderr
    assert rc in codes, (rc, stderr)
    if rc == 2:
        assert stderr.strip(), "a refusal must say why"
    return rc, out.getvalue(), stderr


def star(*argv):
    from engine.cli import main

    return run_cli(main, argv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, scene_image):
    return image_corpus(tmp_path_factory.mktemp("corpus"), scene_image)


def test_every_image_in_the_corpus_runs_or_is_refused_by_name(corpus, tmp_path):
    require("llama_cpp")
    for bad in corpus:
        out = tmp_path / bad.name.replace(".", "_")
        rc, stdout, stderr = star("segment", str(bad.path), "what coffee is served in", "--out", str(out), "--json")
        if bad.readable:
            assert rc == 0, (bad.name, stderr)
            result = json.loads(stdout)
            assert tuple(result["image_size"]) == bad.shown_size, bad.name
            mask = np.asarray(Image.open(out / f"{bad.path.stem}_mask.png"))
            assert mask.shape == bad.shown_size[::-1], bad.name
        else:
            assert rc == 2, bad.name
            assert bad.name in stderr and len(stderr.strip().splitlines()) == 1, stderr
            assert not out.exists() or not any(out.iterdir()), bad.name  # refused before anything was written


@pytest.mark.parametrize("query, runs", QUERIES, ids=[f"q{i}" for i in range(len(QUERIES))])
def test_every_query_in_the_corpus_runs_or_is_refused(query, runs):
    require("llama_cpp")
    rc, _, stderr = star("segment", str(SCENE), query, "--out", "")
    assert rc == (0 if runs else 2), stderr
    if not runs:
        assert "query" in stderr and len(stderr.strip().splitlines()) == 1


# Values of each option: ordinary ones, edge ones, and nonsense (a property-based walk over their product).
OPTION_VALUES = {
    "-n": ["1", "2", "8", "0", "-1", "257", "100000", "two", "1.5"],
    "--max-new-tokens": ["16", "96", "0", "-5", "8193", "10000000", "many"],
    "--temperature": ["0.25", "1", "10", "0", "-1", "nan", "inf", "11", "warm"],
    "--seed": ["0", "7", "-3", str(2**40), "x"],
    "--max-pixels": ["0.01", "1", "64", "0", "-2", "nan", "big"],
    "--device": ["cpu", "auto", "tpu"],
    "--verify": ["quick", "full", "never"],
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in OPTION_VALUES.items()}),
       st.sampled_from([[], ["--grammar"], ["--no-grammar"], ["--json"]]))
def test_any_combination_of_segment_options_runs_or_exits_2_naming_the_problem(options, flags):
    require("llama_cpp")
    argv = ["segment", str(SCENE), "what coffee is served in", "--out", ""]
    for key, value in options.items():
        argv += [key, value]
    rc, stdout, stderr = star(*argv, *flags)
    if rc == 2:
        last = stderr.strip().splitlines()[-1]
        named = [k for k in options if k.lstrip("-") in last or k in last]
        assert named or "pixel limit" in last or "above the limit" in last or "KV cache" in last, last
    elif "--json" in flags:
        json.loads(stdout)  # stdout stays one JSON object


def test_bench_and_doctor_refuse_bad_options_by_name(tmp_path):
    for argv, word in ((["bench", "voting", "--sizes", "abc"], "--sizes"),
                       (["bench", "voting", "--counts", "0,8"], "--counts"),
                       (["bench", "voting", "--repeat", "0"], "--repeat"),
                       (["bench", "policy", "--counts", "1,300"], "--counts"),
                       (["bench", "segment", "--prompts", ""], "--prompts"),
                       (["bench", "voting", "--json", str(tmp_path)], "--json")):
        rc, _, stderr = star(*argv)
        assert rc == 2 and word in stderr, (argv, stderr)
    from engine.cli import main

    rc, stdout, _ = run_cli(main, ["doctor", "--bundle", str(tmp_path / "nothing")], codes=(1,))
    assert "does not exist" in stdout


def test_star_export_and_star_train_refuse_bad_arguments(tmp_path):
    from export.cli import main as export_main
    from training.cli import main as train_main

    for main, argv, word in (
        (export_main, ["policy", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "b")], "config.json"),
        (export_main, ["policy", "--model", "x", "--out", "y", "--vote-temperature", "0"], "--vote-temperature"),
        (export_main, ["policy", "--model", "x", "--out", "y", "--frame", "pixels-abc"], "--frame"),
        (export_main, ["policy", "--model", "x", "--out", "y", "--prompt-family", "evil"], "--prompt-family"),
        (export_main, ["verify", str(tmp_path / "none")], "does not exist"),
        (train_main, ["nano-data", "--out", str(tmp_path / "d"), "--train", "-1"], "--train"),
        (train_main, ["nano-data", "--out", str(tmp_path / "d"), "--frame", "pixels-abc"], "--frame"),
        (train_main, ["nano-data", "--out", str(tmp_path / "d"), "--empty-rate", "2"], "--empty-rate"),
        (train_main, ["grpo", "--recipe", str(tmp_path / "none.yaml")], "none.yaml"),
        (train_main, ["nano-sam", "--out", str(tmp_path / "s"), "--steps", "0"], "--steps"),
        (train_main, ["nano-warmup", "--model", "m", "--out", "o", "--warmup-steps", "0"], "--warmup-steps"),
        (train_main, ["nano-vision", "--warmup", "w", "--lr", "-1"], "--lr"),
    ):
        rc, _, stderr = run_cli(main, argv)
        assert rc == 2 and word in stderr, (argv, stderr)


def test_a_bundle_with_a_missing_file_is_refused_by_name(tmp_path):
    from engine.bundle import default_bundle_dir

    bundle = tmp_path / "b"
    shutil.copytree(default_bundle_dir(), bundle)
    (bundle / "sam2" / "sam2_decoder.onnx").unlink()
    rc, _, stderr = star("segment", str(SCENE), "the red cup", "--bundle", str(bundle), "--out", "")
    assert rc == 2 and "sam2/sam2_decoder.onnx: missing" in stderr


def test_an_unwritable_output_folder_is_refused_before_the_run(tmp_path, monkeypatch):
    import engine.pipeline

    monkeypatch.setattr(engine.pipeline, "load_reasoner", lambda *a, **k: pytest.fail("a model was loaded"))
    real = Path.write_bytes

    def read_only(self, data):
        if self.name.startswith(".star-write-check"):
            raise PermissionError(13, "Permission denied")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    rc, _, stderr = star("segment", str(SCENE), "the red cup", "--out", str(tmp_path / "ro"))
    assert rc == 2 and "Permission denied" in stderr and "ro" in stderr


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_star_eval_with_a_broken_item(tmp_path, scene_image, on_error):
    require("llama_cpp")
    from tests.datasets import Item, write_dataset

    items = [Item(f"i{k}", scene_image, "", [(140, 103, 219, 179)]) for k in range(3)]
    spec = write_dataset("cod", tmp_path / "cod", items)
    (tmp_path / "cod" / "Imgs" / "i1.png").write_bytes(b"not a picture")
    out = tmp_path / "run"
    rc, stdout, stderr = star("eval", "--data", spec, "--data-option", "query=what coffee is served in", "--out",
                              str(out), "--on-error", on_error, "--quiet")
    if on_error == "raise":
        assert rc == 2 and "i1" in stderr
    else:
        assert rc == 0, stderr
        report = json.loads((out / "report.json").read_text())
        assert [e["id"] for e in report["errors"]] == ["i1"] and report["scored"] == 3
        assert "i1" in (out / "report.md").read_text()


def test_max_pixels_holds_for_its_own_command_only():
    from engine.images import DEFAULT_MAX_PIXELS, max_pixels

    rc, _, stderr = star("segment", str(SCENE), "the red cup", "--max-pixels", "0.01", "--out", "")
    assert rc == 2 and "above the limit" in stderr
    assert max_pixels() == DEFAULT_MAX_PIXELS  # the next command in this process is not held to it

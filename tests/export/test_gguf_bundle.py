"""Bundles from GGUF pairs users already have (`star-export policy|bundle --gguf --mmproj`): real files
written by llama.cpp's converter (the nano policy, tiny models of both families; the real-vocabulary
shapes are in test_real_layout.py), each either a bundle that answers as the bundle made from the same
weights does, or refused in one line with nothing written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.bundle import default_bundle_dir, load_bundle, read_manifest
from engine.gguf_reader import read_gguf
from tests.models import edit_gguf, require

NANO = default_bundle_dir()
NANO_MODEL = NANO / "policy" / "model-q8_0.gguf"
NANO_MMPROJ = NANO / "policy" / "mmproj-f16.gguf"


def _export(*argv) -> int:
    from export.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def nano_from_gguf(tmp_path_factory):
    """The nano bundle remade from its own GGUF pair and its own segmenter, as a user would."""
    require("llama_cpp")
    require("onnxruntime")
    out = tmp_path_factory.mktemp("nano-gguf") / "bundle"
    assert _export("bundle", "--gguf", NANO_MODEL, "--mmproj", NANO_MMPROJ, "--frame", "pixels-224", "--answer-grammar",
                   "--vote-temperature", "0.25", "--segmenter-from", NANO, "--out", out) == 0
    return out


def test_the_nano_pair_answers_the_sample_scene_token_for_token_as_the_shipped_bundle(nano_from_gguf):
    from engine.pipeline import load_reasoner, sampling_for
    from engine.samples import sample_scene

    image, query = sample_scene()
    shipped, remade = load_reasoner(NANO, threads=2), load_reasoner(nano_from_gguf, threads=2)
    try:
        for n in (1, 4):  # greedy under the grammar, and the vote's sampling at the recommended temperature
            a = shipped.policy.sample(image, query, n, sampling_for(n, constrained=True, temperature=0.25))
            b = remade.policy.sample(image, query, n, sampling_for(n, constrained=True, temperature=0.25))
            assert [c.token_ids for c in a] == [c.token_ids for c in b] and a[0].token_ids
        ra, rb = shipped.run(image, query, n=4), remade.run(image, query, n=4)
        assert ra.mask.any() and np.array_equal(ra.mask, rb.mask)
    finally:
        shipped.close()
        remade.close()


def test_a_nano_gguf_bundle_records_what_it_is_and_verify_says_what_it_did_not_check(nano_from_gguf, capsys):
    from engine.doctor import bundle_report

    manifest = json.loads((nano_from_gguf / "bundle.json").read_text())
    shipped = json.loads((NANO / "bundle.json").read_text())
    for key in ("family", "frame", "prompt_family", "quant", "answer_grammar", "vote_temperature"):
        assert manifest["policy"][key] == shipped["policy"][key], key
    assert manifest["policy"]["source"]["gguf"] == "model-q8_0.gguf" and not manifest["policy"]["source"]["chat_template"]
    assert manifest["segmenter"]["source"]["taken_from"] == "nano"
    assert manifest["verification"]["sample answer"]["ok"]
    capsys.readouterr()
    assert _export("verify", nano_from_gguf) == 0
    out = capsys.readouterr().out
    assert "PASS  sample answer" in out and "NOTE  policy parity was not checked" in out and "--reference" in out
    ok, report = bundle_report(nano_from_gguf)
    assert ok and "segmenter taken from bundle 'nano'" in report["shared"]
    assert "GGUF pair model-q8_0.gguf + mmproj-f16.gguf" in report["shared"]


def test_link_keeps_one_copy_and_the_data_survives_the_original_moving(tmp_path, capsys):
    require("llama_cpp")
    src = tmp_path / "downloads"
    src.mkdir()
    model, mmproj = shutil.copy(NANO_MODEL, src / "nano.Q8_0.gguf"), shutil.copy(NANO_MMPROJ, src / "mmproj.gguf")
    out = tmp_path / "b"
    assert _export("policy", "--gguf", model, "--mmproj", mmproj, "--frame", "pixels-224", "--link", "--no-verify",
                   "--out", out) == 0
    placed = out / "policy" / "model-q8_0.gguf"
    assert placed.stat().st_ino == Path(model).stat().st_ino and placed.stat().st_nlink == 2
    shutil.move(src, tmp_path / "moved")
    load_bundle(out, verify="full")  # every byte still there, checksums match
    capsys.readouterr()
    assert _export("policy", "--gguf", tmp_path / "moved" / "nano.Q8_0.gguf", "--mmproj", tmp_path / "moved" / "mmproj.gguf",
                   "--frame", "pixels-224", "--link", "--no-verify", "--out", out) == 0
    assert capsys.readouterr().err.count("up to date, skipped") == 2  # the same files: nothing placed again


@pytest.fixture(scope="module")
def tiny_qwen3_gguf(tiny_qwen3, tmp_path_factory):
    require("llama_cpp")
    from export.converter import convert

    root = tmp_path_factory.mktemp("qwen3-gguf")
    model = convert(tiny_qwen3.hf_dir, root / "model-f32.gguf", declare_pre="qwen2").path
    mmproj = convert(tiny_qwen3.hf_dir, root / "mmproj-f32.gguf", mmproj=True, declare_pre="qwen2").path
    return model, mmproj


def _greedy_tokens(bundle: Path) -> list[int]:
    from engine.policy.types import SamplingParams
    from export.verify import open_policy, probe_image

    policy = open_policy(read_manifest(bundle))
    try:
        return policy.sample(probe_image(), "the red circle", 1, SamplingParams.greedy(12))[0].token_ids
    finally:
        policy.close()


def test_a_tiny_qwen25_pair_answers_as_the_bundle_made_from_its_hf_folder(tiny_bundle, tmp_path, capsys):
    """The tiny bundle (star-export from the HF folder) and a bundle from its GGUF pair: same family,
    frame and quantization, the same greedy tokens; verify runs the sample answer check, which a random
    model fails, naming the prompt family to look at."""
    hf = read_manifest(tiny_bundle).manifest.policy
    out = tmp_path / "b"
    rc = _export("policy", "--gguf", tiny_bundle / hf.model, "--mmproj", tiny_bundle / hf.mmproj, "--frame", hf.frame,
                 "--segmenter-from", tiny_bundle, "--out", out)
    assert rc == 1  # made, and verify fails it: a random model's answer does not parse
    printed = capsys.readouterr().out
    assert "PASS  policy loads" in printed and "FAIL  sample answer" in printed and "--prompt-family star" in printed
    ours = read_manifest(out).manifest.policy
    assert (ours.family, ours.frame, ours.quant, ours.prompt_family) == (hf.family, hf.frame, hf.quant, hf.prompt_family)
    assert _greedy_tokens(out) == _greedy_tokens(tiny_bundle)


def test_a_tiny_qwen3_pair_is_recognised_and_answers_as_its_hf_bundle(tiny_qwen3, tiny_qwen3_gguf, tmp_path):
    model, mmproj = tiny_qwen3_gguf
    hf_bundle, gguf_bundle = tmp_path / "hf", tmp_path / "gguf"
    assert _export("policy", "--model", tiny_qwen3.hf_dir, "--quant", "F32", "--mmproj-quant", "f32", "--no-verify",
                   "--out", hf_bundle) == 0
    assert _export("policy", "--gguf", model, "--mmproj", mmproj, "--no-verify", "--out", gguf_bundle) == 0
    hf, ours = read_manifest(hf_bundle).manifest.policy, read_manifest(gguf_bundle).manifest.policy
    assert (ours.family, ours.frame, ours.quant) == ("qwen3-vl", "qwen3-1000", "F32") == (hf.family, hf.frame, hf.quant)
    assert _greedy_tokens(gguf_bundle) == _greedy_tokens(hf_bundle)


def test_an_unquantized_gguf_is_quantized_on_the_way_and_a_quantized_one_is_not(tiny_qwen_gguf, tmp_path, capsys):
    out = tmp_path / "b"
    assert _export("policy", "--gguf", tiny_qwen_gguf.model_f32, "--mmproj", tiny_qwen_gguf.mmproj, "--quant", "Q8_0",
                   "--frame", "pixels-112", "--no-verify", "--out", out) == 0
    spec = read_manifest(out).manifest.policy
    assert spec.quant == "Q8_0" and spec.source["gguf_quant"] == "F32"
    assert spec.source["placed"] == {"policy/model-q8_0.gguf": "quantized", "policy/mmproj-f32.gguf": "copied"}
    g = read_gguf(out / spec.model)
    assert g.type_name("blk.0.attn_q.weight") == "Q8_0" and g.metadata["general.file_type"] == 7
    capsys.readouterr()
    assert _export("policy", "--gguf", out / spec.model, "--mmproj", tiny_qwen_gguf.mmproj, "--quant", "Q4_K_M",
                   "--out", tmp_path / "c") == 2
    assert "already Q8_0" in capsys.readouterr().err and not (tmp_path / "c").exists()


# ---- refused in one line, nothing written ------------------------------------------------------------


def _variants(root: Path) -> dict:
    """Damaged or foreign GGUF files made from the nano pair."""
    return {
        "llama": edit_gguf(NANO_MODEL, root / "llama.gguf", set_fields={"general.architecture": "llama"}),
        "qwen2-vl projector": edit_gguf(NANO_MMPROJ, root / "qwen2vl-mmproj.gguf",
                                        set_fields={"clip.projector_type": "qwen2vl_merger"}),
        "mistral template": edit_gguf(NANO_MODEL, root / "inst.gguf",
                                      set_fields={"tokenizer.chat_template": "{{ bos_token }}[INST] {{ m }} [/INST]"}),
        "chatml template": edit_gguf(NANO_MODEL, root / "chatml.gguf",
                                     set_fields={"tokenizer.chat_template": "{% for m in messages %}<|im_start|>"
                                                 "{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"}),
        "no image token": edit_gguf(NANO_MODEL, root / "vocab.gguf", set_fields={"tokenizer.ggml.tokens": [
            "<|unused|>" if t == "<|image_pad|>" else t for t in read_gguf(NANO_MODEL).metadata["tokenizer.ggml.tokens"]]}),
    }


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return _variants(tmp_path_factory.mktemp("variants"))


def _cut(path: Path, root: Path) -> Path:
    data = path.read_bytes()
    (root / "cut.gguf").write_bytes(data[: len(data) // 2])
    return root / "cut.gguf"


@pytest.mark.parametrize("case", ["llama", "swapped", "other model's projector", "other family's projector",
                                  "qwen2-vl projector", "truncated", "not a gguf", "mistral template",
                                  "no image token", "other family's frame", "frame off the patch grid", "no mmproj",
                                  "an adapter", "no segmenter"])
def test_a_pair_that_is_not_one_is_refused_in_one_line(case, variants, tiny_bundle, tiny_qwen3_gguf, tmp_path, capsys):
    tiny = read_manifest(tiny_bundle).manifest.policy
    model, mmproj, extra = NANO_MODEL, NANO_MMPROJ, ["--frame", "pixels-224"]
    command = "policy"
    expected = {
        "llama": "is a Llama model ('llama')",
        "swapped": "is a vision projector (mmproj); give it as --mmproj",
        "other model's projector": "does not belong to --gguf model-q8_0.gguf: the projector writes 64-wide",
        "other family's projector": "is a qwen3-vl projector, --gguf model-q8_0.gguf a qwen2.5-vl model",
        "qwen2-vl projector": "is a Qwen2-VL projector",
        "truncated": "is truncated",
        "not a gguf": "is not a GGUF file",
        "mistral template": "not Qwen's ChatML",
        "no image token": "lacks <|image_pad|>",
        "other family's frame": "--frame qwen3-1000 is the other family's frame",
        "frame off the patch grid": "100 is not a multiple of 28",
        "no mmproj": "--gguf needs its vision projector too",
        "an adapter": "--adapter: only for a Hugging Face folder",
        "no segmenter": "give --checkpoint and --config",
    }[case]
    if case == "llama":
        model = variants["llama"]
    elif case == "swapped":
        model, mmproj = NANO_MMPROJ, NANO_MODEL
    elif case == "other model's projector":
        mmproj = tiny_bundle / tiny.mmproj
    elif case == "other family's projector":
        model, mmproj, extra = tiny_bundle / tiny.model, tiny_qwen3_gguf[1], []
        expected = expected.replace("model-q8_0.gguf", Path(tiny.model).name)
    elif case == "qwen2-vl projector":
        mmproj = variants["qwen2-vl projector"]
    elif case == "truncated":
        model = _cut(NANO_MODEL, tmp_path)
    elif case == "not a gguf":
        model = Path(__file__).resolve().parents[2] / "engine" / "samples" / "scene.png"
    elif case in ("mistral template", "no image token"):
        model = variants[case]
    elif case == "other family's frame":
        extra = ["--frame", "qwen3-1000"]
    elif case == "frame off the patch grid":
        extra = ["--frame", "pixels-100"]
    elif case == "an adapter":
        extra += ["--adapter", str(tmp_path)]
    elif case == "no segmenter":
        command = "bundle"
    out = tmp_path / "out"
    argv = [command, "--gguf", model, "--out", out, *extra]
    if case != "no mmproj":
        argv[3:3] = ["--mmproj", mmproj]
    capsys.readouterr()
    assert _export(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_a_chatml_template_is_accepted_and_recorded(variants, tmp_path):
    out = tmp_path / "b"
    assert _export("policy", "--gguf", variants["chatml template"], "--mmproj", NANO_MMPROJ, "--frame", "pixels-224",
                   "--no-verify", "--out", out) == 0
    assert read_manifest(out).manifest.policy.source["chat_template"] is True

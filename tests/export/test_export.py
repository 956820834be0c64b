"""star-export end to end on the tiny models: bundle layout and manifest, re-runs that skip valid stages,
verify (passes on a good bundle, fails on a tampered one), and LoRA merging checked against PEFT."""

import json
import shutil

import numpy as np
import pytest

from engine.bundle import load_bundle, read_manifest
from engine.errors import ModelFileError
from tests.models import require


def test_bundle_manifest_describes_every_file(tiny_bundle):
    manifest = json.loads((tiny_bundle / "bundle.json").read_text())
    assert manifest["format"] == "star-bundle/1" and manifest["name"] == "tiny-random"
    assert manifest["policy"]["family"] == "qwen2.5-vl"
    assert manifest["policy"]["frame"] == "pixels-112"  # detected from the pinned image processor
    assert manifest["policy"]["quant"] == "Q8_0"
    assert manifest["segmenter"]["image_size"] == 256
    import hashlib
    for rel, entry in manifest["files"].items():
        data = (tiny_bundle / rel).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(manifest["files"]) == {manifest["policy"]["model"], manifest["policy"]["mmproj"],
                                      manifest["segmenter"]["encoder_onnx"], manifest["segmenter"]["decoder_onnx"]}
    assert manifest["verification"]["checksums"]["ok"] and manifest["verification"]["policy loads"]["ok"]
    assert not list(tiny_bundle.rglob("*.partial")) and not list(tiny_bundle.glob(".work-*"))


def test_rerun_skips_valid_stages_and_redoes_damaged_ones(tiny_bundle, tiny_qwen, tiny_sam2, tmp_path, capsys):
    from export.cli import main

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    args = ["bundle", "--model", str(tiny_qwen.hf_dir), "--quant", "Q8_0", "--checkpoint", str(tiny_sam2.checkpoint),
            "--config", str(tiny_sam2.config), "--out", str(bundle), "--no-verify"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("up to date, skipped") == 3
    (bundle / "policy" / "mmproj-f16.gguf").write_bytes(b"truncated")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "writing the vision projector" in err and err.count("up to date, skipped") == 2
    load_bundle(bundle)  # intact again


def test_verify_passes_then_fails_on_a_tampered_file(tiny_bundle, tiny_qwen, tiny_sam2, tmp_path, capsys):
    from export.cli import main

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    rc = main(["verify", str(bundle), "--reference", str(tiny_qwen.hf_dir), "--sam-checkpoint", str(tiny_sam2.checkpoint),
               "--sam-config", str(tiny_sam2.config)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS  policy parity" in out and "PASS  segmenter parity" in out
    recorded = read_manifest(bundle).manifest.verification
    assert recorded["policy parity"]["max_rel_logit_error"] < 0.08

    # Same size, one byte changed: only the checksum can tell.
    path = bundle / "sam2" / "sam2_decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    rc = main(["verify", str(bundle)])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL  checksums" in out and "sam2/sam2_decoder.onnx" in out
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_bundle(bundle)


def test_bundle_errors(tiny_bundle, tmp_path):
    with pytest.raises(ModelFileError, match="not a bundle"):
        load_bundle(tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "policy" / "model-q8_0.gguf").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_bundle(bundle)
    manifest = json.loads((tiny_bundle / "bundle.json").read_text())
    manifest["policy"]["model"] = "../../etc/passwd"
    manifest["files"]["../../etc/passwd"] = {"sha256": "0", "bytes": 1}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="leaves the bundle"):
        load_bundle(bundle)
    (bundle / "bundle.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_bundle(bundle)
    (bundle / "bundle.json").write_text(json.dumps({"format": "other/9", "name": "x"}))
    with pytest.raises(ModelFileError, match="unsupported bundle format"):
        load_bundle(bundle)


def test_export_refuses_wrong_inputs(tmp_path, tiny_sam2):
    from export.policy import detect

    with pytest.raises(ModelFileError, match="no config.json"):
        detect(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelFileError, match="'llama' model"):
        detect(tmp_path)
    from export.cli import main
    assert main(["sam2", "--checkpoint", str(tmp_path / "nope.pt"), "--config", str(tiny_sam2.config),
                 "--out", str(tmp_path / "b")]) == 2


# ---- LoRA: our shard-wise merge vs PEFT ----------------------------------------------------------------


def test_lora_merge_matches_peft_through_gguf(tiny_qwen, peft_adapter, tmp_path):
    """The merged, converted F32 GGUF against transformers base + PEFT adapter (not merged: PEFT's own
    forward), teacher-forced over the reference's greedy tokens."""
    torch = require("torch")
    from peft import PeftModel
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from engine.policy.hf_inputs import encode_batch, teacher_forced_logits
    from engine.policy.llama_backend import LlamaPolicy
    from export.cli import main
    from export.verify import probe_image

    assert main(["policy", "--model", str(tiny_qwen.hf_dir), "--adapter", str(peft_adapter), "--quant", "F32",
                 "--out", str(tmp_path / "b")]) == 0
    bundle = load_bundle(tmp_path / "b")
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen.hf_dir, dtype=torch.float32).eval()
    ref_model = PeftModel.from_pretrained(base, peft_adapter).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen.hf_dir)
    proc = Qwen2VLImageProcessorPil.from_pretrained(tiny_qwen.hf_dir)
    image = probe_image()
    spec = bundle.manifest.policy
    policy = LlamaPolicy(bundle.path(spec.model), bundle.path(spec.mmproj), frame=spec.frame, n_ctx=4096,
                         max_samples=1, threads=1)
    enc = encode_batch(tok, proc, [image], ["the red circle"], frame=spec.frame)
    with torch.no_grad():
        ref = ref_model.generate(**enc, max_new_tokens=16, do_sample=False, eos_token_id=[], pad_token_id=0)
    ref = ref[0, enc["input_ids"].shape[1]:].tolist()
    ref_logits = teacher_forced_logits(ref_model, enc, ref)
    with ref_model.disable_adapter():
        plain_logits = teacher_forced_logits(ref_model, enc, ref)
    ours = policy.forced_logits(image, "the red circle", ref)
    policy.close()
    scale = np.abs(ref_logits).max(axis=1)
    assert (np.abs(ours - ref_logits).max(axis=1) / scale).max() < 1e-2
    # ...and the adapter matters: without it the logits are far off (the test can fail).
    assert (np.abs(plain_logits - ref_logits).max(axis=1) / scale).max() > 0.1


def test_lora_key_styles_merge_identically(tiny_qwen, peft_adapter, tmp_path):
    """StAR's renamed keys (`.lora_A.default.weight`) and the pre-4.52 module layout (`model.layers.*`)
    give exactly the weights of PEFT's own format."""
    require("torch")
    from safetensors.torch import load_file, save_file

    from export.lora import merge_adapter

    weights = load_file(str(peft_adapter / "adapter_model.safetensors"))
    star = tmp_path / "star"
    star.mkdir()
    shutil.copy(peft_adapter / "adapter_config.json", star)
    renamed = {k.replace("model.language_model.", "model.").replace(".lora_A.", ".lora_A.default.")
               .replace(".lora_B.", ".lora_B.default."): v for k, v in weights.items()}
    assert renamed.keys() != weights.keys()
    save_file(renamed, str(star / "adapter_model.safetensors"))
    a = load_file(str(merge_adapter(tiny_qwen.hf_dir, peft_adapter, tmp_path / "m1") / "model.safetensors"))
    b = load_file(str(merge_adapter(tiny_qwen.hf_dir, star, tmp_path / "m2") / "model.safetensors"))
    base = load_file(str(tiny_qwen.hf_dir / "model.safetensors"))
    changed = [k for k in a if not (a[k] == base[k]).all()]
    assert len(changed) == 2 * 7  # 2 layers x 7 linear layers
    assert all((a[k] == b[k]).all() for k in a)


def test_lora_mismatch_is_refused(tiny_qwen, peft_adapter, tmp_path):
    require("torch")
    from safetensors.torch import load_file, save_file

    from export.lora import merge_adapter

    weights = load_file(str(peft_adapter / "adapter_model.safetensors"))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(peft_adapter / "adapter_config.json", wrong)
    key = next(k for k in weights if "lora_A" in k)
    save_file({**weights, key: weights[key][:, :-1].contiguous()}, str(wrong / "adapter_model.safetensors"))
    with pytest.raises(ModelFileError, match="does not fit this base model"):
        merge_adapter(tiny_qwen.hf_dir, wrong, tmp_path / "m")
    save_file({k.replace("layers.1.", "layers.7."): v for k, v in weights.items()}, str(wrong / "adapter_model.safetensors"))
    with pytest.raises(ModelFileError, match="does not have"):
        merge_adapter(tiny_qwen.hf_dir, wrong, tmp_path / "m2")
    with pytest.raises(ModelFileError, match="not a LoRA adapter folder"):
        merge_adapter(tiny_qwen.hf_dir, tmp_path, tmp_path / "m3")


def test_star_doctor_checks_a_bundle(tiny_bundle, tmp_path):
    import subprocess
    import sys

    run = lambda b: subprocess.run([sys.executable, "-m", "engine.cli", "doctor", "--json", "--bundle", str(b)],
                                   capture_output=True, text=True, timeout=120)
    proc = run(tiny_bundle)
    assert proc.returncode == 0 and json.loads(proc.stdout)["bundle"]["files"] == "intact"
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "policy" / "mmproj-f16.gguf").write_bytes(b"x")
    proc = run(bundle)
    assert proc.returncode == 1 and "mmproj-f16.gguf" in json.loads(proc.stdout)["bundle"]["files"]


def test_output_f32_keeps_the_lm_head_unquantized(tiny_qwen, tmp_path):
    """--output-f32: every other matrix is Q8_0, the LM head stays F32 (read back with llama.cpp's own
    gguf-py reader), and the manifest says so."""
    from gguf import GGUFReader

    from export.cli import main

    out = tmp_path / "bundle"
    assert main(["policy", "--model", str(tiny_qwen.hf_dir), "--quant", "Q8_0", "--output-f32", "--out", str(out)]) == 0
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["policy"]["source"]["output"] == "f32"
    types = {t.name: t.tensor_type.name for t in GGUFReader(str(out / manifest["policy"]["model"])).tensors}
    assert types["output.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["token_embd.weight"] == "Q8_0"


def test_progress_helpers_by_hand(tiny_qwen):
    from export.progress import quantize_position, tensor_count

    assert quantize_position("[  12/ 291]              blk.0.attn_q.weight - [  64,   64], type = f32") == (12, 291)
    assert quantize_position("llama_model_quantize_impl: model size = 3.9 MB") is None
    from safetensors import safe_open

    with safe_open(str(tiny_qwen.hf_dir / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    vision = sum("visual" in k for k in keys)
    assert tensor_count(tiny_qwen.hf_dir, vision=True) == vision > 0
    assert tensor_count(tiny_qwen.hf_dir, vision=False) == len(keys) - vision > 0


def test_converter_runner_streams_lines_and_stops_a_silent_hang():
    import os
    import sys

    from export.converter import ConverterError, _run_counting

    code, lines = _run_counting([sys.executable, "-c", "print('w, torch.float32 --> F16'); print('done')"],
                                dict(os.environ), 30, "x", 1, False)
    assert code == 0 and lines == ["w, torch.float32 --> F16", "done"]
    with pytest.raises(ConverterError, match="longer than 1 s"):
        _run_counting([sys.executable, "-c", "import time; time.sleep(20)"], dict(os.environ), 1, "x", None, False)


def test_converter_runner_interrupted_stops_the_converter_and_leaves_no_thread(tmp_path):
    """Ctrl-C while the converter runs: the converter is killed (not left writing), and no thread of ours is
    left to hold the interpreter's exit (a non-daemon watchdog once kept `star-export` alive for an hour)."""
    import os
    import signal
    import sys
    import threading
    import time

    from export.converter import _run_counting

    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    timer = threading.Timer(1.5, signal.pthread_kill, args=(threading.main_thread().ident, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _run_counting([sys.executable, "-c", script], dict(os.environ), 30, "x", None, False)
    timer.join()
    assert time.monotonic() - started < 10
    left = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    assert not left, left
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)


def test_a_policy_takes_another_bundles_segmenter_and_answers_as_it_does(tiny_bundle, tiny_qwen, tmp_path, capsys):
    """`star-export policy ... --segmenter-from BUNDLE --link`: SAM 2 is not exported again; its files are
    the source's own (same inodes, same checksums), and the new bundle's answer on the sample scene is the
    source bundle's, token for token and pixel for pixel. A source with an edited segmenter file is refused."""
    import os
    import subprocess
    import sys

    from export.cli import main

    shared = tmp_path / "shared"
    assert main(["policy", "--model", str(tiny_qwen.hf_dir), "--quant", "Q8_0", "--segmenter-from", str(tiny_bundle),
                 "--link", "--out", str(shared), "--name", "tiny-shared"]) == 0
    source, taken = read_manifest(tiny_bundle).manifest, read_manifest(shared).manifest
    named = [rel for rel in source.named_files() if rel.startswith("sam2/")]
    assert named and all(taken.files[rel].sha256 == source.files[rel].sha256 for rel in named)
    assert all(os.stat(shared / rel).st_ino == os.stat(tiny_bundle / rel).st_ino for rel in named)  # one copy
    assert taken.segmenter.source["taken_from"] == "tiny-random"

    def answer(bundle):
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "segment", "engine/samples/scene.png",
                               "the red cup", "--bundle", str(bundle), "--json"], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        return [s["text"] for s in out["samples"]], out["mask"]

    assert answer(shared) == answer(tiny_bundle)

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_bundle, damaged)
    encoder = damaged / next(rel for rel in named if rel.endswith("encoder.onnx"))
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 1  # one bit, same size and name: only the checksum can tell
    encoder.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["policy", "--model", str(tiny_qwen.hf_dir), "--quant", "Q8_0", "--segmenter-from", str(damaged),
                 "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "sam2_encoder.onnx: SHA-256 does not match" in err and "converting" not in err  # refused first

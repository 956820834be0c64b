"""`star-export import`: GGUF files back to Hugging Face weights.

The reader (gguf-py behind the project's errors) is checked on a GGUF written byte by byte here (values
computed by hand); the importer on the tiny Qwen2.5-VL against the weights it was converted from (exact at
F32, within Q8_0's rounding at Q8_0), at Q4_K_M against llama.cpp's own forward pass on the quantized file,
and on the shipped nano bundle against llama.cpp's forward pass on the shipped files (verify's parity).
"""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelFileError
from engine.gguf_reader import GgufError, read_gguf
from tests.models import require

REPO = Path(__file__).resolve().parents[2]


def _gguf_string(s: str) -> bytes:
    data = s.encode()
    return struct.pack("<Q", len(data)) + data


def _hand_made_gguf(path: Path) -> dict:
    """A version-3 GGUF with three tensors (F32 2x3, F16 4, Q8_0 2x32) and three metadata values."""
    f32 = np.arange(6, dtype="<f4").reshape(2, 3) - 2.5
    f16 = np.array([0.5, -1.25, 3.0, 65504.0], dtype="<f2")
    scales = np.array([0.5, -0.03125], dtype="<f2")           # exact in f16
    quants = np.arange(-32, 32, dtype=np.int8).reshape(2, 32)
    q8_bytes = b"".join(scales[i].tobytes() + quants[i].tobytes() for i in range(2))
    blobs = [("a.f32", (3, 2), 0, f32.tobytes()), ("b.f16", (4,), 1, f16.tobytes()), ("c.q8", (32, 2), 8, q8_bytes)]
    header = b"GGUF" + struct.pack("<IQQ", 3, len(blobs), 3)
    header += _gguf_string("general.name") + struct.pack("<I", 8) + _gguf_string("hand")
    header += _gguf_string("x.count") + struct.pack("<II", 4, 7)
    header += _gguf_string("x.list") + struct.pack("<IIQ", 9, 5, 2) + struct.pack("<ii", -1, 2)
    offset, data = 0, b""
    for name, dims, kind, blob in blobs:
        header += _gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", kind, offset)
        pad = (-len(blob)) % 32
        data += blob + b"\0" * pad
        offset += len(blob) + pad
    header += b"\0" * ((-len(header)) % 32)
    path.write_bytes(header + data)
    # The Q8_0 values by hand: block b's value j is scale_b * quant_bj.
    q8 = np.array([[0.5 * q for q in range(-32, 0)], [-0.03125 * q for q in range(0, 32)]], np.float32)
    return {"a.f32": f32, "b.f16": f16.astype(np.float32), "c.q8": q8}


def test_reader_on_a_hand_made_file(tmp_path):
    expected = _hand_made_gguf(tmp_path / "h.gguf")
    g = read_gguf(tmp_path / "h.gguf")
    assert g.version == 3
    assert g.metadata == {"general.name": "hand", "x.count": 7, "x.list": [-1, 2]}
    assert {n: t.shape for n, t in g.tensors.items()} == {"a.f32": (2, 3), "b.f16": (4,), "c.q8": (2, 32)}
    for name, values in expected.items():
        np.testing.assert_array_equal(g.read(name), values)
    assert g.type_name("c.q8") == "Q8_0"


def test_reader_refuses_broken_files(tmp_path):
    _hand_made_gguf(tmp_path / "h.gguf")
    data = (tmp_path / "h.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:-40])   # the last tensor's bytes cut short
    with pytest.raises(GgufError, match="truncated"):
        read_gguf(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:60])   # cut inside the metadata
    with pytest.raises(GgufError, match="truncated or damaged"):
        read_gguf(tmp_path / "head.gguf")
    (tmp_path / "png.gguf").write_bytes(b"\x89PNG" + data[4:])
    with pytest.raises(GgufError, match="not a GGUF"):
        read_gguf(tmp_path / "png.gguf")
    with pytest.raises(GgufError, match="no GGUF file"):
        read_gguf(tmp_path / "missing.gguf")


def _hf_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def test_import_round_trip_is_exact_at_f32(tiny_qwen, tiny_qwen_gguf, tmp_path):
    from export.gguf_import import import_policy

    result = import_policy(tiny_qwen_gguf.model_f32, tiny_qwen_gguf.mmproj, tiny_qwen.hf_dir, tmp_path / "hf")
    original, imported = _hf_weights(tiny_qwen.hf_dir), _hf_weights(result.out_dir)
    assert set(imported) == set(original) and result.tensors == len(original)
    for name, value in original.items():
        np.testing.assert_array_equal(imported[name], value.astype(np.float32), err_msg=name)
    assert result.gguf_types == {"F32": sum(1 for _ in read_gguf(tiny_qwen_gguf.model_f32).tensors)
                                 + len(read_gguf(tiny_qwen_gguf.mmproj).tensors)}
    assert json.loads((result.out_dir / "config.json").read_text()) == json.loads((tiny_qwen.hf_dir / "config.json").read_text())
    assert not (tmp_path / "hf.partial").exists()


def test_import_of_q8_0_is_within_its_rounding(tiny_qwen, tiny_qwen_gguf, tmp_path):
    from export.gguf_import import import_policy

    result = import_policy(tiny_qwen_gguf.model_q8, tiny_qwen_gguf.mmproj, tiny_qwen.hf_dir, tmp_path / "hf")
    assert result.gguf_types.get("Q8_0", 0) > 0
    original, imported = _hf_weights(tiny_qwen.hf_dir), _hf_weights(result.out_dir)
    q8 = read_gguf(tiny_qwen_gguf.model_q8)
    quantized_shapes = {q8.tensors[n].shape for n in q8.tensors if q8.type_name(n) == "Q8_0"}
    changed = 0
    for name, value in original.items():
        value = value.astype(np.float32)
        err = np.abs(imported[name] - value)
        # Q8_0: a block of 32 is stored as scale * int8 with scale = max|x| / 127, so each value moves by at
        # most half a step (plus the f16 rounding of the scale); other tensors come back exactly.
        bound = np.abs(value).max() / 127 * 0.5 * 1.01 + 1e-7
        assert err.max() <= bound, name
        changed += bool(err.max() > 0)
    assert changed >= len(quantized_shapes)  # the quantized tensors did change

    # Exported again, the imported weights give the very same Q8_0 tensors: Q8_0 of its own dequantized
    # values is itself, so training on an imported policy starts exactly where the bundle is.
    from export.converter import convert
    from export.quantize import quantize_model

    again = quantize_model(convert(result.out_dir, tmp_path / "f32.gguf", declare_pre="qwen2").path,
                           tmp_path / "q8.gguf", "Q8_0")
    requantized = read_gguf(again)
    assert set(requantized.tensors) == set(q8.tensors)
    for name in q8.tensors:
        assert requantized.tensors[name].ggml_type == q8.tensors[name].ggml_type, name
        np.testing.assert_array_equal(requantized.read(name), q8.read(name), err_msg=name)


def test_import_of_q4_k_m_matches_llama_cpps_own_forward_pass(tmp_path):
    """A policy whose matrices llama.cpp quantizes to Q4_K / Q6_K (rows of 256), imported back: transformers
    on the imported weights follows llama.cpp on the Q4_K_M file far closer than on the weights it came from
    (what the importer recovers is what llama.cpp computes with)."""
    require("llama_cpp")
    from engine.bundle import read_manifest
    from export.cli import main
    from export.gguf_import import import_policy
    from export.verify import policy_parity
    from tests.models import build_tiny_qwen25vl

    tiny = build_tiny_qwen25vl(tmp_path / "wide", width=256)
    bundle = tmp_path / "bundle"
    assert main(["policy", "--model", str(tiny.hf_dir), "--quant", "Q4_K_M", "--no-verify", "--out", str(bundle)]) == 0
    spec = read_manifest(bundle).manifest.policy
    result = import_policy(bundle / spec.model, bundle / spec.mmproj, tiny.hf_dir, tmp_path / "imported")
    assert result.gguf_types.get("Q4_K", 0) > 0 and result.gguf_types.get("Q6_K", 0) > 0
    to_imported = policy_parity(read_manifest(bundle), result.out_dir).numbers["max_rel_logit_error"]
    to_source = policy_parity(read_manifest(bundle), tiny.hf_dir).numbers["max_rel_logit_error"]
    assert to_imported < to_source / 3, (to_imported, to_source)


def test_import_refuses_a_like_folder_of_another_config(tiny_qwen, tiny_qwen_gguf, tmp_path):
    from export.gguf_import import import_policy

    like = tmp_path / "like"
    shutil.copytree(tiny_qwen.hf_dir, like)
    config = json.loads((like / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 96
    (like / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="shape"):
        import_policy(tiny_qwen_gguf.model_f32, tiny_qwen_gguf.mmproj, like, tmp_path / "hf")
    config["text_config"]["intermediate_size"] = 128
    config["text_config"]["num_hidden_layers"] = 1  # the GGUF's second layer would be dropped silently
    config["text_config"]["layer_types"] = config["text_config"]["layer_types"][:1]
    (like / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"holds blk\.1\..*which the --like config does not have"):
        import_policy(tiny_qwen_gguf.model_f32, tiny_qwen_gguf.mmproj, like, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_shipped_nano_bundle_imports_to_its_own_logits(tmp_path, capsys):
    """The imported policy, run by transformers, against the shipped GGUF run by llama.cpp (verify's parity:
    teacher-forced logits over transformers' own greedy tokens)."""
    require("llama_cpp")
    from export.cli import main

    nano = REPO / "engine" / "models" / "nano"
    like = REPO / "training" / "nano" / "checkpoints" / "warmup-3000"   # same config and tokenizer
    out = tmp_path / "nano-hf"
    assert main(["import", "--bundle", str(nano), "--like", str(like), "--out", str(out)]) == 0
    bundle = tmp_path / "nano"
    shutil.copytree(nano, bundle)
    assert main(["verify", str(bundle), "--reference", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS  policy parity" in text


def test_import_command_needs_its_files(tmp_path, capsys):
    from export.cli import main

    assert main(["import", "--like", str(tmp_path), "--out", str(tmp_path / "hf")]) == 2
    assert "give --bundle, or --model and --mmproj" in capsys.readouterr().err
    assert main(["import", "--bundle", str(tmp_path), "--like", str(tmp_path), "--out", str(tmp_path / "hf")]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_import_refuses_a_like_folder_with_another_vocabulary(tiny_qwen_gguf, tmp_path):
    """The tiny model's GGUF with the nano policy's folder as --like: the tokenizers differ."""
    from export.gguf_import import import_policy

    like = REPO / "training" / "nano" / "checkpoints" / "warmup-3000"
    with pytest.raises(ModelFileError, match="vocabulary differs"):
        import_policy(tiny_qwen_gguf.model_f32, tiny_qwen_gguf.mmproj, like, tmp_path / "hf")

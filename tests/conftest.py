"""Shared test set-up: one torch thread where torch exists (docs/engine.md, "Runtime facts": 2 threads on 2 shared cores is
far slower), no network, and the tiny models every parity test uses, built once per session."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from tests import models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory):
    """A random shrunk SAM 2.1: config YAML, Meta-format checkpoint, and its hydra overrides."""
    return models.build_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"))


@pytest.fixture(scope="session")
def tiny_sam2_onnx(tiny_bundle):
    """The same SAM 2 exported to ONNX by `star-export` (the tiny bundle's files)."""
    return models.TinySam2Onnx(tiny_bundle / "sam2" / "sam2_encoder.onnx", tiny_bundle / "sam2" / "sam2_decoder.onnx")


@pytest.fixture(scope="session")
def nano_sam2(tmp_path_factory):
    """The shipped nano bundle's SAM brought back to PyTorch from its graphs (`star-export import-sam`): its image
    path is the trained one, so a prompt on a frame of the nano world gives a real object's mask."""
    return models.import_nano_sam2(tmp_path_factory.mktemp("nano_sam2"))


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    """A random tiny Qwen2.5-VL in Hugging Face format (real classes, shrunk config)."""
    return models.build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    """A random shrunk Qwen3-VL (transformers' real classes; DeepStack, interleaved M-RoPE)."""
    return models.build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3"))


@pytest.fixture(scope="session")
def tiny_qwen_gguf(tiny_qwen, tmp_path_factory):
    """The same model converted by llama.cpp's converter (f32, Q8_0) plus its mmproj."""
    return models.convert_tiny_qwen(tiny_qwen, tmp_path_factory.mktemp("tiny_qwen_gguf"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_qwen, tiny_sam2, tmp_path_factory):
    """Both tiny models as one bundle made by `star-export bundle` (policy Q8_0, SAM 2 ONNX)."""
    return models.build_tiny_bundle(tiny_qwen, tiny_sam2, tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def scene_image():
    """The scripted tests' picture (tests.scripted.scene)."""
    from tests.scripted import scene

    return scene()


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_bundle):
    """The tiny bundle's segmenter on ONNX Runtime, one thread."""
    models.require("onnxruntime")
    from engine.bundle import load_bundle
    from engine.segment import load_segmenter

    return load_segmenter(load_bundle(tiny_bundle).segmenter_files(), "onnx", device="cpu", threads=1)


@pytest.fixture(scope="session")
def peft_adapter(tiny_qwen, tmp_path_factory):
    """A PEFT LoRA on every linear layer of the tiny Qwen2.5-VL's language model, B randomised."""
    torch = models.require("torch")
    peft = models.require("peft")
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen.hf_dir, dtype=torch.float32)
    # StAR's target: every linear layer of the language model (docs/protocol.md §1).
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    wrapped = peft.get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: the adapter would be a no-op
                p.normal_(0, 0.2)
    out = tmp_path_factory.mktemp("adapter") / "peft"
    wrapped.save_pretrained(out)
    return out

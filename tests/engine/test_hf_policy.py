"""engine.policy.hf_backend (the transformers reference) against transformers' own generate on inputs the
test builds by hand, and against the llama.cpp policy converted from the same weights."""

import numpy as np
import pytest

from engine.errors import ModelFileError
from engine.policy.types import CancelToken, SamplingParams
from tests.engine.test_policy import QUERY, hf, hf_greedy, hf_inputs, image, load  # noqa: F401 (fixtures)
from tests.models import require


@pytest.fixture(scope="module")
def reference(tiny_qwen):
    require("torch").set_num_threads(1)
    from engine.policy.hf_backend import TransformersPolicy

    return TransformersPolicy(tiny_qwen.hf_dir)


def test_greedy_equals_hand_built_generate_and_llama_cpp(reference, hf, tiny_qwen, tiny_qwen_gguf, image):
    assert reference.frame == f"pixels-{tiny_qwen.image_size}"
    expected, margins = hf_greedy(hf, hf_inputs(hf, tiny_qwen, image), 20)  # no EOS stop
    exact = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=20, ignore_stop=True)
    four = reference.sample(image, QUERY, 4, exact)
    assert all(c.token_ids == expected and c.finish_reason == "length" for c in four)
    assert four[0].text == hf[1].decode(expected)
    eos = reference.eos_ids
    cut = next((t for t, tok in enumerate(expected) if tok in eos), None)
    stopped = reference.sample(image, QUERY, 2, SamplingParams.greedy(20))
    if cut is not None:  # EOS ends a row and is not part of its tokens, as in llama.cpp
        assert all(c.token_ids == expected[:cut] and c.finish_reason == "eos" for c in stopped)
    llama = load(tiny_qwen_gguf.model_f32, tiny_qwen_gguf).sample(image, QUERY, 1, exact)[0]
    safe = next((t for t, m in enumerate(margins) if m <= 2e-2), len(margins))  # up to the first near tie
    assert llama.token_ids[:safe] == expected[:safe]  # test_policy.py checks the logits themselves


def test_sampling_streams_reproduces_and_cancels(reference, image):
    seen = {}
    a = reference.sample(image, QUERY, 3, SamplingParams(seed=4, max_new_tokens=12),
                         on_token=lambda i, d: seen.setdefault(i, []).append(d))
    for c in a:
        assert "".join(seen.get(c.index, [])) == c.text
    b = reference.sample(image, QUERY, 3, SamplingParams(seed=4, max_new_tokens=12))
    c = reference.sample(image, QUERY, 3, SamplingParams(seed=5, max_new_tokens=12))
    assert [x.token_ids for x in a] == [x.token_ids for x in b] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a}) > 1
    cancel = CancelToken()
    out = reference.sample(image, QUERY, 2, SamplingParams.greedy(50), on_token=lambda i, d: cancel.cancel(),
                           cancel=cancel)
    assert all(x.finish_reason == "cancelled" and len(x.token_ids) <= 2 for x in out)
    with pytest.raises(ValueError, match="llama.cpp option"):
        reference.sample(image, QUERY, 1, SamplingParams(constrained=True))


def test_stops_at_the_answer_tag(reference, image, monkeypatch):
    """A row that writes </answer> ends there while the others go on (per-row stopping)."""
    import engine.policy.hf_backend as backend

    first = reference.sample(image, QUERY, 1, SamplingParams.greedy(12))[0]
    stop_at = reference.tokenizer.decode(first.token_ids[:4])
    monkeypatch.setattr(backend, "STOP_TEXT", stop_at)
    out = reference.sample(image, QUERY, 2, SamplingParams.greedy(12))
    assert all(c.finish_reason == "stop" and c.token_ids == first.token_ids[:4] for c in out)


def test_adapter_matches_peft_and_bad_folders_are_refused(tiny_qwen, peft_adapter, image, tmp_path):
    torch = require("torch")
    require("peft")
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from engine.policy.hf_backend import TransformersPolicy

    ours = TransformersPolicy(tiny_qwen.hf_dir, adapter=peft_adapter)
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen.hf_dir, dtype=torch.float32)
    oracle = PeftModel.from_pretrained(base, peft_adapter).eval()
    tensors = ours.inputs(image, QUERY)
    with torch.no_grad():
        expected = oracle(**tensors).logits
        got = ours.model(**tensors).logits
        plain = TransformersPolicy(tiny_qwen.hf_dir).model(**tensors).logits
    assert float((expected - plain).abs().max()) > 1e-3  # the adapter changes the model
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # StAR's key style (.lora_A.default.weight) loads to the same model
    star = tmp_path / "star-style"
    star.mkdir()
    (star / "adapter_config.json").write_text((peft_adapter / "adapter_config.json").read_text())
    state = load_file(str(peft_adapter / "adapter_model.safetensors"))
    save_file({k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
               for k, v in state.items()}, str(star / "adapter_model.safetensors"))
    with torch.no_grad():
        star_logits = TransformersPolicy(tiny_qwen.hf_dir, adapter=star).model(**tensors).logits
    np.testing.assert_allclose(star_logits.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelFileError, match="not a Hugging Face model folder"):
        TransformersPolicy(tmp_path)
    with pytest.raises(ModelFileError, match="not a LoRA adapter folder"):
        TransformersPolicy(tiny_qwen.hf_dir, adapter=tmp_path)

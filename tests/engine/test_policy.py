"""engine.policy (llama.cpp) against the transformers Qwen2.5-VL it was converted from."""

import numpy as np
import pytest

from engine.errors import ContextOverflowError, ModelFileError
from engine.policy.hf_inputs import teacher_forced_logits
from engine.policy.types import CancelToken, SamplingParams
from engine.protocol import build_prompt, chatml_prompt, resize_for_model
from tests.models import require

QUERY = "the red circle"


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def hf(tiny_qwen):
    torch = require("torch")
    torch.set_num_threads(1)
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen.hf_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_qwen.hf_dir), Qwen2VLImageProcessorPil.from_pretrained(tiny_qwen.hf_dir)


def hf_inputs(hf, tiny_qwen, image, query=QUERY):
    import torch
    model, tok, proc = hf
    pil = resize_for_model(image, f"pixels-{tiny_qwen.image_size}")
    vis = proc(images=[pil], return_tensors="pt")
    n_img = int(vis["image_grid_thw"].prod()) // 4
    text = chatml_prompt(build_prompt(query), "<|vision_start|>" + "<|image_pad|>" * n_img + "<|vision_end|>")
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    # transformers 5 needs mm_token_type_ids, or image tokens silently get 1-D positions (docs/engine.md).
    mm = (ids == model.config.image_token_id).long()
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=vis["pixel_values"],
                image_grid_thw=vis["image_grid_thw"], mm_token_type_ids=mm)


def hf_greedy(hf, inputs, n_tokens):
    """Greedy tokens and, per step, the gap between the top two logits (relative to the largest)."""
    import torch
    model = hf[0]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n_tokens, do_sample=False, eos_token_id=[], pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True)
    margins = []
    for lg in out.logits:
        top = torch.topk(lg[0], 2).values
        margins.append(float((top[0] - top[1]) / lg[0].abs().max()))
    return out.sequences[0, inputs["input_ids"].shape[1]:].tolist(), margins


def load(path, tiny_gguf, **kw):
    from engine.policy.llama_backend import LlamaPolicy
    return LlamaPolicy(path, tiny_gguf.mmproj, frame="pixels-112", n_ctx=4096, max_samples=8, threads=1, **kw)


@pytest.fixture(scope="module")
def f32(tiny_qwen_gguf):
    return load(tiny_qwen_gguf.model_f32, tiny_qwen_gguf)


def test_tokenization_identical(f32, hf):
    tok = hf[1]
    for text in [chatml_prompt(build_prompt(QUERY), ""), '<think>a</think><answer>[{"bbox_2d": [1,2,3,4]}]</answer>',
                 "émoji 🦙 and digits 12345\n\n tabs\t"]:
        assert f32.tokenize(text) == tok(text, add_special_tokens=False).input_ids


def test_prompt_logits_match_transformers(f32, hf, tiny_qwen, image):
    import torch
    inputs = hf_inputs(hf, tiny_qwen, image)
    with torch.no_grad():
        ref = hf[0](**inputs).logits[0, -1].numpy()
    ours = f32.prompt_logits(image, QUERY)
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-2, rel
    assert f32.timings.prefill_tokens == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("path,tolerance", [("model_f32", 1e-2), ("model_q8", 3e-2)])
def test_greedy_continuation_matches_transformers(path, tolerance, hf, tiny_qwen, tiny_qwen_gguf, image):
    """Teacher-forced over transformers' 24 greedy tokens: logits within tolerance at every step, and the
    same argmax wherever the reference's top-2 gap exceeds the tolerance (a random tiny model has near
    ties, where the runtimes may legitimately differ); then free-running greedy agrees up to the first
    near tie."""
    policy = load(getattr(tiny_qwen_gguf, path), tiny_qwen_gguf)
    decided = 0
    for query in [QUERY, "what keeps food cold"]:
        inputs = hf_inputs(hf, tiny_qwen, image, query)
        ref, margins = hf_greedy(hf, inputs, 24)
        ours = policy.forced_logits(image, query, ref)
        ref_logits = teacher_forced_logits(hf[0], inputs, ref)
        rel = np.abs(ours - ref_logits).max(axis=1) / np.abs(ref_logits).max(axis=1)
        assert rel.max() < tolerance, rel
        for t in range(len(ref)):
            if margins[t] > 2 * tolerance:
                assert ours[t].argmax() == ref[t], (query, t)
                decided += 1
        got = policy.sample(image, query, 1, SamplingParams.greedy(24))[0].token_ids
        safe = next((t for t, m in enumerate(margins) if m <= 2 * tolerance), len(margins))
        assert got[:safe] == ref[:safe]
    assert decided >= 16, f"only {decided} decided steps: the test compares too little"


def test_n4_greedy_equals_n1_and_seeds_reproduce(f32, image):
    one = f32.sample(image, QUERY, 1, SamplingParams.greedy(20))[0]
    four = f32.sample(image, QUERY, 4, SamplingParams.greedy(20))
    assert all(c.token_ids == one.token_ids for c in four)
    a = f32.sample(image, QUERY, 4, SamplingParams(seed=7, max_new_tokens=20))
    b = f32.sample(image, QUERY, 4, SamplingParams(seed=7, max_new_tokens=20))
    c = f32.sample(image, QUERY, 4, SamplingParams(seed=8, max_new_tokens=20))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a}) > 1  # samples differ from one another


def test_prefix_reuse_equals_a_fresh_prefill(tiny_qwen_gguf, image):
    """A follow-up query on the same image reuses the system + image KV (no vision encoder run) and gives
    the tokens and logits a policy without reuse computes from scratch; another image misses."""
    reuse = load(tiny_qwen_gguf.model_f32, tiny_qwen_gguf)
    fresh = load(tiny_qwen_gguf.model_f32, tiny_qwen_gguf, reuse_prefix=False)
    other = np.ascontiguousarray(image[::-1])
    first = reuse.sample(image, QUERY, 3, SamplingParams(seed=3, max_new_tokens=12))
    assert not reuse.timings.prefix_hit and reuse.timings.vision_ms > 0
    for query in ("the largest thing that could roll", QUERY):
        hit = reuse.sample(image, query, 4, SamplingParams.greedy(16))
        assert reuse.timings.prefix_hit and reuse.timings.vision_ms == 0
        ref = fresh.sample(image, query, 4, SamplingParams.greedy(16))
        assert not fresh.timings.prefix_hit
        assert [c.token_ids for c in hit] == [c.token_ids for c in ref]
        np.testing.assert_allclose(reuse.prompt_logits(image, query), fresh.prompt_logits(image, query),
                                   rtol=1e-5, atol=1e-5)
    again = reuse.sample(image, QUERY, 3, SamplingParams(seed=3, max_new_tokens=12))
    assert [c.token_ids for c in again] == [c.token_ids for c in first]
    reuse.sample(other, QUERY, 1, SamplingParams.greedy(4))
    assert not reuse.timings.prefix_hit
    reuse.forget_prefix()
    reuse.sample(other, QUERY, 1, SamplingParams.greedy(4))
    assert not reuse.timings.prefix_hit


def test_constrained_decoding_always_parses(f32, image):
    """A random model almost never writes the answer format; under the grammar every sample does (checked
    with the project's parser), and the unconstrained default is untouched by the option's existence."""
    from engine.protocol import parse_answer

    free = f32.sample(image, QUERY, 4, SamplingParams(seed=5, max_new_tokens=120))
    assert not any("</answer>" in c.text for c in free)  # a random model does not answer
    out = f32.sample(image, QUERY, 4, SamplingParams(seed=5, max_new_tokens=400, constrained=True))
    for c in out:
        if c.finish_reason == "stop":
            assert parse_answer(c.text, image_size=(130, 90), frame="pixels-112").status in ("ok", "empty")
        else:  # cut by max_new_tokens inside the free-text trace: still a prefix of the format
            assert c.finish_reason == "length" and c.text.startswith("<think>")
    assert any(c.finish_reason == "stop" for c in out)


def test_streaming_and_cancel(f32, image):
    seen = {}
    out = f32.sample(image, QUERY, 3, SamplingParams(seed=1, max_new_tokens=12),
                     on_token=lambda i, d: seen.setdefault(i, []).append(d))
    for c in out:
        assert "".join(seen.get(c.index, [])) == c.text
    cancel = CancelToken()
    calls = []

    def stop_after_first(i, delta):
        calls.append(i)
        cancel.cancel()
    out = f32.sample(image, QUERY, 2, SamplingParams.greedy(50), on_token=stop_after_first, cancel=cancel)
    assert all(c.finish_reason in ("cancelled", "eos") and len(c.token_ids) <= 1 for c in out)


def test_errors(f32, tiny_qwen_gguf, tmp_path, image):
    with pytest.raises(ContextOverflowError, match="exceed the context"):
        f32.sample(image, QUERY, 8, SamplingParams.greedy(1000))
    with pytest.raises(ValueError, match="max_samples"):
        f32.sample(image, QUERY, 9)
    with pytest.raises(ModelFileError, match="does not exist"):
        load(tmp_path / "none.gguf", tiny_qwen_gguf)
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        load(tmp_path / "fake.gguf", tiny_qwen_gguf)
    (tmp_path / "cut.gguf").write_bytes(tiny_qwen_gguf.model_f32.read_bytes()[:4096])
    with pytest.raises(ModelFileError, match="could not load"):
        load(tmp_path / "cut.gguf", tiny_qwen_gguf)
    from engine.policy.llama_backend import LlamaPolicy
    with pytest.raises(ModelFileError, match="qwen3-vl"):
        LlamaPolicy(tiny_qwen_gguf.model_f32, tiny_qwen_gguf.mmproj, family="qwen3-vl", n_ctx=1024, max_samples=1)


def test_flash_attention_is_off_by_default_on_the_cpu(f32, tiny_qwen_gguf, image):
    """The engine's default on the CPU is flash attention off (llama_backend.default_flash_attn): the default
    policy's forced logits equal those of one opened with flash_attn=False bit for bit, and differ from
    llama.cpp's own choice, whose CPU kernel works at f16 inside."""
    ref = f32.tokenize(" The query names a red cup.")
    default = f32.forced_logits(image, QUERY, ref)
    off, auto = (load(tiny_qwen_gguf.model_f32, tiny_qwen_gguf, flash_attn=f) for f in (False, "auto"))
    try:
        assert np.array_equal(default, off.forced_logits(image, QUERY, ref))
        assert not np.array_equal(default, auto.forced_logits(image, QUERY, ref))
    finally:
        off.close()
        auto.close()


def test_an_interrupt_inside_close_never_frees_a_handle_twice(tiny_qwen_gguf):
    """A Ctrl-C landing just after the first free returns (simulated: that free raises KeyboardInterrupt once
    it has run), then close again as the error path and __del__ do: every handle reaches its free exactly
    once. The double free this guards against crashed `star segment` about once in 130 interrupts."""
    import ctypes

    policy = load(tiny_qwen_gguf.model_q8, tiny_qwen_gguf)
    freed = []

    class Recording:
        """The library, with its free functions counted; a pointer already freed never reaches llama.cpp."""

        def __init__(self, lib):
            self.lib = lib

        def __getattr__(self, attr):
            real = getattr(self.lib, attr)
            if attr not in ("mtmd_free", "llama_free", "llama_model_free"):
                return real

            def free(handle):
                key = (attr, ctypes.cast(handle, ctypes.c_void_p).value)
                freed.append(key)
                if freed.count(key) == 1:
                    real(handle)
                if len(freed) == 1:
                    raise KeyboardInterrupt
            return free

    # each handle class frees through its own reference to the library (engine/policy/llama_handles.py)
    policy.projector.M = Recording(policy.projector.M)
    policy.context.L, policy.model.L = Recording(policy.context.L), Recording(policy.model.L)
    with pytest.raises(KeyboardInterrupt):
        policy.close()
    policy.close()
    policy.__del__()
    assert [name for name, _ in freed] == ["mtmd_free", "llama_free", "llama_model_free"], freed

"""The nano policy: its tokenizer survives llama.cpp conversion token for token, the dense image-token
targets match a hand-made scene, and the coordinate code and embeddings are what they claim by hand."""


import numpy as np
import pytest

from tests.models import require
from tests.training.conftest import SMALL, model_processor


def test_cell_targets_by_hand():
    from training.nano.aux_targets import COLOUR_IDS, KIND_IDS, cell_targets
    from training.nano.world import Scene, SceneObject

    mask = np.zeros((112, 112), bool)
    mask[30:60, 60:100] = True  # x 60..99, y 30..59
    obj = SceneObject(0, "square", "red", "solid", 20.0, 80.0, 45.0, mask)
    t = cell_targets(Scene(np.zeros((112, 112, 3), np.uint8), [obj], "plain"), 112)
    # 4x4 cells of 28 px; coverage >= 0.2: rows 1 (28..55: 26/28 covered) and 2 (56..83: 4/28 = 0.14 -> no),
    # columns 2 (56..83: 24/28) and 3 (84..111: 16/28).
    on = {(int(r), int(c)) for r, c in zip(t.row[t.objectness > 0], t.col[t.objectness > 0])}
    assert on == {(1, 2), (1, 3)}
    i = 1 * 4 + 2
    assert t.kind[i] == KIND_IDS["square"] and t.colour[i] == COLOUR_IDS["red"]
    np.testing.assert_allclose(t.box[i], np.array([60, 30, 100, 60]) / 112, rtol=1e-6)
    # cell (1, 2) centre is (70, 42): distances to the box edges
    np.testing.assert_allclose(t.ltrb[i], np.array([10, 12, 30, 18]) / 112, rtol=1e-6)
    assert t.kind[0] == -100 and t.objectness[0] == 0


@pytest.fixture(scope="module")
def nano_small_qwen_split(tmp_path_factory):
    from training.nano.policy_model import NanoPolicyConfig, build_nano_policy

    return build_nano_policy(tmp_path_factory.mktemp("nano") / "init", NanoPolicyConfig(**SMALL, split="qwen2"))


@pytest.mark.parametrize("split", ["gpt-2", "qwen2"])
def test_world_tokenizer_is_reproduced_by_llama_cpp(split, request, tmp_path):
    """Coordinate tokens (GPT-2's split, the default) and Qwen's one-digit split both convert exactly."""
    require("llama_cpp")
    nano_small = request.getfixturevalue("nano_small" if split == "gpt-2" else "nano_small_qwen_split")
    from transformers import AutoTokenizer

    from engine.bundle import load_bundle
    from engine.policy.llama_backend import LlamaPolicy
    from engine.protocol import build_prompt, chatml_prompt
    from export.cli import main
    from training.nano.dataset import NanoConfig, make_scene_example

    assert main(["policy", "--model", str(nano_small), "--quant", "F16", "--out", str(tmp_path / "b"), "--no-verify"]) == 0
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest.policy.frame == "pixels-112"
    policy = LlamaPolicy(bundle.path(bundle.manifest.policy.model), bundle.path(bundle.manifest.policy.mmproj),
                         frame="pixels-112", n_ctx=2048, max_samples=1, threads=1)
    tok = AutoTokenizer.from_pretrained(nano_small)
    for i in range(5):
        ex = make_scene_example("val", i, NanoConfig(image_size=112, frame="pixels-112"))
        text = chatml_prompt(build_prompt(ex.query.text), "") + ex.completion
        assert policy.tokenize(text) == tok(text, add_special_tokens=False).input_ids
    coords = tok("[0,9,10,57,100,111]", add_special_tokens=False).input_ids
    assert len(coords) == (13 if split == "gpt-2" else 19)  # 6 numbers + 7 brackets and commas, or 12 digits + 7
    policy.close()


def test_coordinate_targets_pick_the_answer_numbers(nano_small):
    """On a real completion, exactly the answer's box and point values are coordinate positions (not the
    "2" of bbox_2d), the metrics match a by-hand computation, and a near-zero sigma is the exact-token loss."""
    torch = require("torch")
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    from training.nano.dataset import NanoConfig, make_scene_example
    from training.nano.warmup import CoordinateTargets

    tok = AutoTokenizer.from_pretrained(nano_small)
    coords = CoordinateTargets(tok, 112)
    assert coords.available
    ex = next(e for i in range(20) if (e := make_scene_example("val", i, NanoConfig(image_size=112, frame="pixels-112"))).solution)
    ids = torch.tensor([tok(ex.completion, add_special_tokens=False).input_ids])
    at = coords.answer_positions(ids[:, :-1], ids[:, 1:])
    expected = [v for obj in ex.solution for v in (*obj["bbox_2d"], *obj["point_2d"])]
    assert coords.value[ids[:, 1:][at]].tolist() == expected

    gold = ids[:, 1:][at]
    logits = torch.randn(len(gold), len(tok), generator=torch.Generator().manual_seed(0))
    m = coords.metrics(logits, gold)
    restricted = logits[:, coords.ids]
    assert float(m["coord"]) == pytest.approx(float(F.cross_entropy(restricted, torch.tensor(expected))), rel=1e-5)
    by_hand = np.mean([abs(int(np.argmax(row)) - v) for row, v in zip(restricted.numpy(), expected)])
    assert float(m["coord_mae"]) == pytest.approx(by_hand)
    exact = F.cross_entropy(logits, gold, reduction="none")
    np.testing.assert_allclose(coords.soft_loss(logits, gold, 1e-3).numpy(), exact.numpy(), rtol=1e-5)
    # A wider target is cheaper for a prediction one pixel off than the exact-token target is.
    off = torch.full((1, len(tok)), -10.0)
    off[0, coords.ids[expected[0] + 1 if expected[0] < 111 else expected[0] - 1]] = 10.0
    assert float(coords.soft_loss(off, gold[:1], 2.0)) < float(F.cross_entropy(off, gold[:1]))


def test_structured_coordinate_embeddings(tmp_path):
    """The bumps init gives neighbouring coordinates similar output rows and distant ones dissimilar."""
    torch = require("torch")
    require("transformers")
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from training.nano.policy_model import NanoPolicyConfig, build_nano_policy, coordinate_code, coordinate_token_ids

    folder = build_nano_policy(tmp_path / "bumps", NanoPolicyConfig(**SMALL, coord_init="bumps"))
    tok = AutoTokenizer.from_pretrained(folder)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    by_value = {v: i for i, v in coordinate_token_ids(tok, 112).items()}
    head = model.get_output_embeddings().weight.detach()
    width = 32
    code = coordinate_code([10, 12, 80], 112, width)
    scale = head[by_value[10], :width].norm()  # the code is unit-norm; one scale for every row
    np.testing.assert_allclose(head[by_value[10], :width], code[0] * scale, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(head[by_value[12], :width], code[1] * scale, rtol=1e-4, atol=1e-7)
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(head[by_value[10], :width], head[by_value[12], :width], dim=0)) > 0.5
    assert float(cos(head[by_value[10], :width], head[by_value[80], :width], dim=0)) < 0.01


def test_quadratic_coordinate_code_by_hand(nano_small):
    """The default init: a state holding (s*k, k, c) on dimensions 0..2 makes the LM head score the
    coordinates as a Gaussian whose peak is the token of value s*S - 0.5, sharper as k grows; a freshly
    initialised model scores every coordinate exactly 0 (the code starts silent)."""
    torch = require("torch")
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from engine.policy.hf_inputs import encode_batch
    from training.nano.policy_model import NanoPolicyConfig, coordinate_token_ids

    config = NanoPolicyConfig(**SMALL)
    tok = AutoTokenizer.from_pretrained(nano_small)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(nano_small).eval()
    size = SMALL["image_size"]
    value_of = coordinate_token_ids(tok, size)
    ids = torch.tensor(sorted(value_of, key=value_of.get))  # ids[v] spells v
    norm = model.model.language_model.norm
    head = model.get_output_embeddings()
    for value in (0, 7, 55, 111):
        s = (value + 0.5) / size
        sharp = {}
        for k in (1.0, 4.0):
            state = torch.zeros(1, SMALL["hidden"])
            state[0, :3] = torch.tensor([s * k, k, 0.0])
            state[0, 5:] = 0.3  # the rest of the stream, which coordinate rows do not read
            logits = head(norm(state))[0, ids]
            assert int(logits.argmax()) == value
            # by hand: after RMSNorm the state is h / rms(h) * gain; the head adds scale * (u*s*k - u^2/2*k)
            rms = float(state.pow(2).mean().add(norm.variance_epsilon).sqrt())
            u = (torch.arange(size) + 0.5) / size
            expected = config.coord_scale * config.coord_gain / rms * (u * s * k - 0.5 * u * u * k)
            np.testing.assert_allclose(logits.detach(), expected, rtol=1e-4, atol=1e-3)
            sharp[k] = float(torch.softmax(logits, -1).max())
        assert sharp[4.0] > sharp[1.0]
    from PIL import Image

    enc = encode_batch(tok, model_processor(nano_small), [Image.new("RGB", (size, size), (200, 30, 30))],
                       ["the red circle"], frame=f"pixels-{size}", completions=["<answer>[]</answer>"])
    enc = dict(enc)
    enc.pop("labels")
    with torch.no_grad():
        logits = model(**enc).logits[0, :, ids]
    assert float(logits.abs().max()) == 0.0


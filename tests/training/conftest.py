"""The small nano policy the nano tests share, built once per session."""

import pytest

from tests.models import require

SMALL = dict(image_size=112, vocab_size=512, hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128,
             vision_hidden=32, vision_heads=2, vision_intermediate=64, corpus_rows=150)


@pytest.fixture(scope="session")
def nano_small(tmp_path_factory):
    require("torch")
    require("transformers")
    from training.nano.policy_model import NanoPolicyConfig, build_nano_policy

    return build_nano_policy(tmp_path_factory.mktemp("nano") / "init", NanoPolicyConfig(**SMALL))



def model_processor(folder):
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil.from_pretrained(folder)

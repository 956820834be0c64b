"""`star-train --recipe nano` at CI scale: every stage for a few steps (data, init, warm-up, SAM 2,
GRPO, REST, export), then the engine answers a query with the bundle it produced; a second run skips
every stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.models import require


@pytest.mark.timeout(900)
def test_nano_recipe_end_to_end_at_ci_scale(tmp_path, scene_image, capsys):
    require("trl")
    require("llama_cpp")
    from engine.pipeline import load_reasoner, sampling_for
    from training.cli import main

    out = tmp_path / "nano"
    assert main(["--recipe", "nano", f"out={out}", "scale=ci"]) == 0
    stages = [json.loads(line)["stage"] for line in (out / "stages.jsonl").read_text().splitlines()]
    assert stages == ["data", "init", "warm-up", "sam", "stage 1 (GRPO)", "stage 2 (REST)", "export"]
    assert (out / "stage2" / "adapter" / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "bundle" / "bundle.json").read_text())
    assert manifest["policy"]["frame"] == "pixels-224" and manifest["policy"]["prompt_family"] == "star"
    assert manifest["policy"]["answer_grammar"] is True  # the recipe's measured choice of decoding
    assert manifest["policy"]["vote_temperature"] == 0.25  # ... and of voting temperature

    reasoner = load_reasoner(out / "bundle", max_samples=2, max_new_tokens=16)
    result = reasoner.run(scene_image, "what coffee is served in", n=2, sampling=sampling_for(2, max_new_tokens=16))
    assert result.mask.shape == scene_image.shape[:2] and result.mask.dtype == np.bool_
    assert len(result.samples) == 2

    capsys.readouterr()
    assert main(["--recipe", "nano", f"out={out}", "scale=ci"]) == 0
    assert capsys.readouterr().out.count(": done (") == 7  # nothing re-run
    assert main(["--recipe", "nano", "scale=ci"]) == 2       # out= is required
    assert main(["--recipe", "nano", f"out={out}", "warmup_stepz=3"]) == 2
    # YAML 1.1 reads 2e-4 as a string; the setting's type makes it a number (every stage is done: no training)
    assert main(["--recipe", "nano", f"out={out}", "scale=ci", "rl_lr=2e-4", "stage1_steps=1"]) == 0
    recorded = json.loads((out / "nano-recipe.json").read_text())
    assert recorded["rl_lr"] == 0.0002 and recorded["stage1_steps"] == 1
    assert main(["--recipe", "nano", f"out={out}", "rl_lr=fast"]) == 2

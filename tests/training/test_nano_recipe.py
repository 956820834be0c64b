"""`star-train nano` at CI scale: every stage for a few steps (data, init, the warm-up's four
legs, SAM 2, two RL rounds of GRPO + REST, export), then the engine answers a query with the bundle it
produced; a second run skips every stage; a warm-up leg that starts with vision pre-training."""

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
    assert main(["nano", "--out", str(out), "--scale", "ci"]) == 0
    stages = [json.loads(line)["stage"] for line in (out / "stages.jsonl").read_text().splitlines()]
    assert stages == ["data", "init", "warm-up", "sam", "stage 1 (GRPO)", "stage 2 (REST)",
                      "round 2 base (merge round 1)", "round 2 stage 1 (GRPO)", "round 2 stage 2 (REST)", "export"]
    # The warm-up ran its four legs in one folder: it ends at the last leg's step with the last leg's settings.
    import torch

    from training.nano.recipe import CI_WARMUP

    state = torch.load(out / "warmup" / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == CI_WARMUP[-1].until == 4
    settings = json.loads((out / "warmup" / "checkpoint" / "warmup.json").read_text())
    assert settings["label_weight"] == 1.0 and settings["name_heads"] == [[2, 1], [3, 1]]
    log_steps = [json.loads(line)["step"] for line in (out / "warmup" / "log.jsonl").read_text().splitlines()]
    assert log_steps == [1, 2, 3, 4]  # each leg resumed where the previous one stopped
    # Round 2 trained a fresh LoRA on round 1's merged policy, on rows round 1 did not see.
    from safetensors.torch import load_file

    warm = load_file(out / "warmup" / "checkpoint" / "model.safetensors")
    merged = load_file(out / "round2" / "base" / "model.safetensors")
    expected = _merged_by_hand(warm, out / "stage2" / "adapter")
    assert set(merged) == set(warm)
    assert all(torch.allclose(merged[k], expected[k], atol=1e-6) for k in warm)
    assert not (out / "round2" / "base" / "state.pt").exists()
    round2 = json.loads((out / "round2" / "stage1" / "recipe.json").read_text())
    assert round2["skip"] == 8 and round2["model"] == str(out / "round2" / "base")
    assert (out / "round2" / "stage2" / "adapter" / "adapter_model.safetensors").is_file()
    # A few CI steps may leave LoRA B at its zero init, where "merged" equals "not merged": the round's merge
    # again, on round 1's adapter with every B set to seeded random values.
    import shutil

    from safetensors.torch import save_file

    from training.nano.recipe import _merge

    nonzero = tmp_path / "nonzero-adapter"
    shutil.copytree(out / "stage2" / "adapter", nonzero)
    lora = load_file(nonzero / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(0)
    lora = {k: torch.randn(v.shape, generator=generator) * 0.1 if ".lora_B." in k else v for k, v in lora.items()}
    save_file(lora, nonzero / "adapter_model.safetensors")
    _merge(out / "warmup" / "checkpoint", nonzero, tmp_path / "base")
    merged = load_file(tmp_path / "base" / "model.safetensors")
    expected = _merged_by_hand(warm, nonzero)
    changed = [k for k in warm if not torch.equal(expected[k], warm[k])]
    assert len(changed) == sum(".lora_A." in k for k in lora) > 0
    assert all(torch.allclose(merged[k], expected[k], atol=1e-5) for k in warm)
    assert not (tmp_path / "base" / "state.pt").exists() and not (tmp_path / "base.tmp").exists()
    manifest = json.loads((out / "bundle" / "bundle.json").read_text())
    assert manifest["policy"]["frame"] == "pixels-224" and manifest["policy"]["prompt_family"] == "star"
    assert manifest["policy"]["answer_grammar"] is True  # the recipe's measured choice of decoding
    assert manifest["policy"]["vote_temperature"] == 0.25  # ... and of voting temperature

    reasoner = load_reasoner(out / "bundle", max_samples=2, max_new_tokens=16)
    result = reasoner.run(scene_image, "what coffee is served in", n=2, sampling=sampling_for(2, max_new_tokens=16))
    assert result.mask.shape == scene_image.shape[:2] and result.mask.dtype == np.bool_
    assert len(result.samples) == 2

    capsys.readouterr()
    assert main(["nano", "--out", str(out), "--scale", "ci"]) == 0
    assert capsys.readouterr().out.count(": done (") == 10  # nothing re-run
    with pytest.raises(SystemExit):  # --out is required: argparse's usage line
        main(["nano", "--scale", "ci"])
    assert main(["nano", "--out", str(out), "warmup_stepz=3"]) == 2
    # YAML 1.1 reads 2e-4 as a string; the setting's type makes it a number (every stage is done: no training)
    assert main(["nano", "--out", str(out), "--scale", "ci", "rl_lr=2e-4", "stage1_steps=1"]) == 0
    recorded = json.loads((out / "nano-recipe.json").read_text())
    assert recorded["rl_lr"] == 0.0002 and recorded["stage1_steps"] == 1
    assert main(["nano", "--out", str(out), "rl_lr=fast"]) == 2
    # a warm-up leg as a YAML mapping (1e-3 is a string to YAML 1.1); legs that do not step forward are refused
    assert main(["nano", "--out", str(out), "--scale", "ci", "warmup_legs=[{until: 4, lr: 1e-3}]"]) == 0
    assert json.loads((out / "nano-recipe.json").read_text())["warmup_legs"][0]["lr"] == 0.001
    assert main(["nano", "--out", str(out), "warmup_legs=[{until: 4, lr: 1e-3}, {until: 2, lr: 1e-3}]"]) == 2
    assert main(["nano", "--out", str(out), "warmup_legs=[{until: 4, rate: 1}]"]) == 2
    assert main(["nano", "--out", str(out), "--scale", "ci", "rl_round_rows=1"]) == 2  # rounds would share rows
    assert main(["nano", "--out", str(out), "warmup_legs=[{until: 4, lr: 1e-3, vision_steps: 5}]"]) == 2

    # A leg may start with vision pre-training (nano-vision): a fifth leg on a copy of the warm-up folder.
    from training.nano.recipe import WarmupLeg, nano_recipe, run_warmup_legs

    shutil.copytree(out / "warmup", tmp_path / "more" / "warmup")
    shutil.copytree(out / "init", tmp_path / "more" / "init")
    (tmp_path / "more" / "warmup" / "DONE").unlink()
    more = nano_recipe(str(tmp_path / "more"), "ci", warmup_legs=CI_WARMUP + (
        WarmupLeg(5, 2e-4, answer_weight=1.0, vision_steps=2),))
    run_warmup_legs(more, tmp_path / "more", progress=False)
    vision_log = (tmp_path / "more" / "warmup" / "vision-pretrain.jsonl").read_text().splitlines()
    vision_log = [json.loads(line) for line in vision_log]
    assert [r["step"] for r in vision_log] == [0, 1, 2] and "kind_acc" in vision_log[-1]
    assert torch.load(tmp_path / "more" / "warmup" / "checkpoint" / "state.pt", weights_only=True)["step"] == 5
    assert (tmp_path / "more" / "warmup" / "vision-before-5.done").exists()
    (tmp_path / "more" / "warmup" / "vision-before-5.done").unlink()  # a vision step after its leg: refused
    with pytest.raises(ValueError, match="past the leg"):
        run_warmup_legs(more, tmp_path / "more", progress=False)


def _merged_by_hand(warm: dict, adapter_dir) -> dict:
    """W + (alpha / r) B A on each adapted module's weight, read from the adapter's own files."""
    from safetensors.torch import load_file

    lora = load_file(adapter_dir / "adapter_model.safetensors")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert lora
    expected = dict(warm)
    for key in (k for k in lora if ".lora_A." in k):
        module = key.split(".lora_A.")[0]
        (target,) = [k for k in warm if k.endswith(module[module.index("layers."):] + ".weight")]
        expected[target] = warm[target] + config["lora_alpha"] / config["r"] * (
            lora[key.replace(".lora_A.", ".lora_B.")] @ lora[key])
    return expected


@pytest.mark.timeout(600)
def test_nano_bench_times_every_stage_with_the_recipes_settings(tmp_path, capsys):
    """`star-train nano-bench` at CI scale: every stage trains in its scratch folder (RL on the policy and SAM
    the earlier stages left), each row's projection is its recipe steps x s/step, the JSON holds the table."""
    require("trl")
    from training.cli import main
    from training.nano.recipe import nano_recipe

    ci = nano_recipe(str(tmp_path / "unused"), "ci")
    from training.nano.bench import projected_totals, report, run_bench

    timings = run_bench(tmp_path / "bench", ["cpu"], steps=2, warm=1, workers=1, recipe=ci)
    assert [(t.stage, t.workers) for t in timings] == [("warm-up", 1), ("warm-up", 0), ("vision", 0), ("sam", 0),
                                                       ("grpo", 0), ("rest", 0)]
    steps = {"warm-up": ci.warmup_legs[-1].until, "vision": 0, "sam": ci.sam_steps, "grpo": ci.stage1_steps * ci.rl_rounds,
             "rest": ci.stage2_steps * ci.rl_rounds}
    for t in timings:
        assert t.device == "cpu" and t.timed_steps == 2 and t.s_per_step > 0
        assert t.recipe_steps == steps[t.stage]
        assert t.projected_h == pytest.approx(t.recipe_steps * t.s_per_step / 3600, abs=1e-3)
    warmups = [t for t in timings if t.stage == "warm-up"]
    assert all(t.s_data is not None for t in warmups)
    # the bench trained the real stages: the warm-up's log has warm + timed steps, RL left its adapters
    log = (tmp_path / "bench" / "cpu" / "warmup" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3]
    assert (tmp_path / "bench" / "cpu" / "stage1" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "bench" / "cpu" / "stage2" / "adapter" / "adapter_config.json").is_file()
    total = projected_totals(timings)["cpu"]
    assert total == pytest.approx(min(t.projected_h for t in warmups)
                                  + sum(t.projected_h for t in timings if t.stage != "warm-up"), abs=2e-3)
    report(timings, tmp_path / "bench.json")
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert [s["stage"] for s in payload["stages"]] == [t.stage for t in timings]
    assert payload["projected_h"]["cpu"] == total and "machine" in payload
    assert "full recipe, projected: cpu" in capsys.readouterr().out
    # the command line: a bad device is refused before anything trains
    with pytest.raises(SystemExit):
        main(["nano-bench", "--device", "gpu"])
    with pytest.raises(ValueError, match="empty scratch folder"):  # a trainer there would resume another run
        run_bench(tmp_path / "bench", ["cpu"], recipe=ci)

"""GRPO / REST on TRL: the selection and advantage arithmetic by hand, the chat template against the
engine's ChatML, and CPU smoke runs on a tiny random Qwen2.5-VL with a tiny SAM 2 on nano-world data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.models import require
from training.grpo import group_advantages, rest_selection
from training.recipe import Recipe, RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"


def test_rest_keeps_the_extremes():
    rewards = np.array([0.5, 3, 1, 2, 0, 4, 1, 2])
    assert rest_selection(rewards, 4).tolist() == [0, 1, 4, 5]      # 0.5, 0 lowest; 3, 4 highest
    assert rest_selection(np.ones(4), 2).tolist() == [0, 3]          # ties: stable order
    assert rest_selection(rewards, None).tolist() == list(range(8))  # plain GRPO keeps all
    with pytest.raises(ValueError, match="even"):
        rest_selection(rewards, 3)


def test_group_advantages_by_hand():
    adv = group_advantages(np.array([1.0, 2.0, 3.0]))  # mean 2, unbiased std 1
    assert adv == pytest.approx([-1 / (1 + 1e-6), 0.0, 1 / (1 + 1e-6)], abs=1e-12)
    assert group_advantages(np.array([5.0, 5.0])).tolist() == [0.0, 0.0]


def test_shipped_recipes_load():
    names = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert {"star7b-stage1.yaml", "star7b-stage2-rest.yaml", "star-qwen3vl8b-stage2-rest.yaml"} <= set(names)
    stage2 = load_recipe(RECIPES / "star7b-stage2-rest.yaml")
    assert (stage2.stage, stage2.num_generations, stage2.rest_keep, stage2.lr, stage2.epochs) == (2, 256, 16, 5e-6, 10)
    stage1 = load_recipe(RECIPES / "star7b-stage1.yaml", ["lr=2e-5", "output_dir=/tmp/x"])
    assert (stage1.lr, stage1.output_dir, stage1.rest_keep, stage1.lora_r, stage1.clip) == (2e-5, "/tmp/x", None, 64, 0.2)


def test_recipe_errors_are_clear(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe setting.*learning_rate"):
        load_recipe(None, ["model=m", "data=d", "output_dir=o", "learning_rate=1"])
    with pytest.raises(RecipeError, match="needs data"):
        load_recipe(None, ["model=m", "output_dir=o"])
    with pytest.raises(ValueError, match="rest_keep"):
        Recipe("m", "d", "o", num_generations=8, rest_keep=16)


def test_grpo_and_rest_subcommands_take_every_setting_as_an_option(capsys):
    """Options are generated from the Recipe dataclass: one per setting, over the YAML and key=value; the
    subcommand fixes the stage, and a YAML of the other stage is refused in one line."""
    from dataclasses import fields

    from training.cli import build_parser, main, recipe_from_args

    parser = build_parser()
    args = parser.parse_args(["grpo", "--recipe", str(RECIPES / "star7b-stage1.yaml"), "--lr", "3e-5", "--max-steps",
                              "7", "--no-gradient-checkpointing", "--report-to", "--", "output_dir=/tmp/o", "lr=1e-4"])
    recipe = recipe_from_args(args)
    assert (recipe.stage, recipe.lr, recipe.max_steps, recipe.output_dir) == (1, 3e-5, 7, "/tmp/o")
    assert recipe.gradient_checkpointing is False and recipe.report_to == [] and recipe.lora_r == 64
    helps = parser._subparsers._group_actions[0].choices["rest"].format_help()
    for f in fields(Recipe):
        if f.name != "stage":
            assert "--" + f.name.replace("_", "-") in helps, f.name
    assert "REST: keep m/2 best" in helps
    capsys.readouterr()
    assert main(["grpo", "--recipe", str(RECIPES / "star7b-stage2-rest.yaml")]) == 2
    assert "this recipe is stage 2: run it with star-train rest" in capsys.readouterr().err
    rest = recipe_from_args(parser.parse_args(["rest", "--model", "m", "--data", "d", "--output-dir", "o"]))
    assert rest.stage == 2


def test_grpo_args_check_the_batch_arithmetic():
    require("trl")
    from training.grpo import grpo_args

    rest = Recipe("m", "d", "/tmp/o", prompts_per_step=2, num_generations=8, rest_keep=4, per_device_batch=4,
                  report_to=[])
    args = grpo_args(rest)
    assert (args.generation_batch_size, args.gradient_accumulation_steps, args.beta, args.epsilon) == (16, 4, 0.0, 0.2)
    with pytest.raises(ValueError, match="whole groups"):
        grpo_args(Recipe("m", "d", "/tmp/o", prompts_per_step=1, num_generations=8, rest_keep=4, per_device_batch=2,
                         report_to=[]), world_size=2)
    with pytest.raises(ValueError, match="must divide"):
        grpo_args(Recipe("m", "d", "/tmp/o", prompts_per_step=2, num_generations=3, per_device_batch=4, report_to=[]))


def test_chat_template_renders_the_engines_chatml(tiny_qwen):
    require("trl")
    from trl.data_utils import prepare_multimodal_messages

    from engine.protocol import build_prompt, chatml_prompt
    from training.grpo import load_processor
    from training.grpo_data import training_row

    row = training_row("the red circle", np.zeros((40, 50, 3), np.uint8), [], family="star-stage1", frame="pixels-112")
    messages = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    text = load_processor(str(tiny_qwen.hf_dir)).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == chatml_prompt(build_prompt("the red circle", "star-stage1", training=True))


@pytest.fixture(scope="module")
def nano_rows(tmp_path_factory):
    from training.nano.dataset import NanoConfig, write_split

    root = tmp_path_factory.mktemp("grpo_data")
    write_split(root, "train", 4, NanoConfig(image_size=112, frame="pixels-112"))
    return root


def test_training_rows_skip_and_limit_follow_the_parquet_order(nano_rows):
    """A later RL round trains on rows no earlier one saw: skip=K, limit=L is rows K..K+L-1 of the file."""
    import pyarrow.parquet as pq

    from engine.protocol import build_prompt
    from training.grpo_data import build_dataset

    queries = pq.read_table(next(nano_rows.glob("*.parquet")), columns=["text"]).column("text").to_pylist()
    recipe = Recipe(model="m", data=str(nano_rows), output_dir="o", frame="pixels-112", prompt_family="star",
                    skip=1, limit=2)
    prompts = [row["prompt"][1]["content"] for row in build_dataset(recipe)]
    assert prompts == [build_prompt(q, "star", training=True) for q in queries[1:3]]
    with pytest.raises(ValueError, match="no training rows after row 4"):
        build_dataset(Recipe(model="m", data=str(nano_rows), output_dir="o", frame="pixels-112", skip=4))
    with pytest.raises(ValueError, match="skip must be >= 0"):
        Recipe(model="m", data="d", output_dir="o", skip=-1)


def test_training_rows_of_chosen_reasoning_types(tmp_path):
    """reasoning_types keeps only rows of those types: skip counts every row, limit the rows kept."""
    import pyarrow.parquet as pq

    from engine.protocol import build_prompt
    from training.grpo_data import build_dataset
    from training.nano.dataset import NanoConfig, write_split
    from training.nano.queries import COMPARATIVE, PURPOSE

    write_split(tmp_path, "train", 16, NanoConfig(image_size=112, frame="pixels-112"))
    table = pq.read_table(next(tmp_path.glob("*.parquet")), columns=["text", "reasoning_type"]).to_pylist()
    wanted = (COMPARATIVE, PURPOSE)
    expected = [r["text"] for r in table[3:] if r["reasoning_type"] in wanted][:3]
    assert len(expected) == 3 and len({r["reasoning_type"] for r in table}) > 2  # the filter has work to do
    recipe = Recipe(model="m", data=str(tmp_path), output_dir="o", frame="pixels-112", prompt_family="star",
                    skip=3, limit=3, reasoning_types=list(wanted))
    prompts = [row["prompt"][1]["content"] for row in build_dataset(recipe)]
    assert prompts == [build_prompt(q, "star", training=True) for q in expected]
    with pytest.raises(ValueError, match="of types"):
        build_dataset(Recipe(model="m", data=str(tmp_path), output_dir="o", frame="pixels-112",
                             reasoning_types="no such type"))


def _length_reward(prompts, completions, **_):
    """A reward with spread (random completions score 0 on StAR's terms), so updates are not all zero."""
    from training.rewards import completion_text

    return [len(completion_text(c)) / 50 for c in completions]


def _recipe(tiny_qwen, tiny_sam2, data, out, **kw) -> Recipe:
    base = dict(model=str(tiny_qwen.hf_dir), data=str(data), output_dir=str(out), frame="pixels-112",
                segmenter=f"{tiny_sam2.config}:{tiny_sam2.checkpoint}", prompts_per_step=2, num_generations=4,
                per_device_batch=4, max_completion_length=16, max_steps=1, save_steps=1, lora_r=8, lora_alpha=8,
                lr=1e-3, report_to=[], seed=0)
    return Recipe(**(base | kw))


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_grpo_stage1_then_rest_with_resume(tiny_qwen, tiny_sam2, nano_rows, tmp_path):
    require("trl")
    torch = require("torch")
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from training.grpo import build_trainer, last_checkpoint, reward_functions, train

    # Stage 1: plain GRPO, StAR's rewards (SAM in the loop) plus one with spread.
    s1 = _recipe(tiny_qwen, tiny_sam2, nano_rows, tmp_path / "s1")
    adapter = train(s1, reward_functions(s1) + [_length_reward])
    record = next(r for r in _log(tmp_path / "s1") if "loss" in r)
    assert math.isfinite(record["loss"]) and record["grad_norm"] > 0
    assert "rewards/star_stage1_accuracy/mean" in record
    lora_b = [v for k, v in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(bool(v.abs().sum() > 0) for v in lora_b)  # B starts at zero: it was updated
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen.hf_dir)
    reloaded = PeftModel.from_pretrained(base, adapter)
    assert sum(p.numel() for n, p in reloaded.named_parameters() if "lora_" in n) > 0

    # Stage 2: REST from the stage-1 adapter, n = 8 rollouts, m = 4 kept; stopped after one step...
    s2 = _recipe(tiny_qwen, tiny_sam2, nano_rows, tmp_path / "s2", stage=2, adapter=str(adapter),
                 prompt_family="star-stage2", num_generations=8, rest_keep=4)
    trainer = build_trainer(s2, reward_functions(s2) + [_length_reward])
    trainer.train()
    groups, keep = trainer.selections[-1]
    for rewards, kept in zip(groups, keep):
        assert kept.sum() == 4
        ordered = np.sort(rewards)
        assert np.sort(rewards[kept]).tolist() == pytest.approx(np.concatenate([ordered[:2], ordered[-2:]]).tolist())
    trained_rows = sum(len(batch["advantages"]) for batch in trainer._buffered_inputs)
    assert trained_rows == 2 * 4  # prompts x m: the dropped rollouts never reach the loss
    assert last_checkpoint(s2.output_dir).endswith("checkpoint-1")

    # ...then resumed to step 2 from checkpoint-1.
    s2b = _recipe(tiny_qwen, tiny_sam2, nano_rows, tmp_path / "s2", stage=2, adapter=str(adapter),
                  prompt_family="star-stage2", num_generations=8, rest_keep=4, max_steps=2)
    trainer = build_trainer(s2b, reward_functions(s2b) + [_length_reward])
    trainer.train(resume_from_checkpoint=last_checkpoint(s2b.output_dir))
    assert trainer.state.global_step == 2
    steps = [r["step"] for r in _log(tmp_path / "s2") if "loss" in r]
    assert steps == [1, 2]  # step 1 was not trained twice
    assert torch.isfinite(torch.tensor([r["loss"] for r in _log(tmp_path / "s2") if "loss" in r])).all()


@pytest.mark.timeout(600)
def test_grpo_step_on_qwen3_vl_in_its_grid_frame(tiny_qwen3, tiny_sam2, nano_rows, tmp_path):
    """One stage-1 step on a tiny Qwen3-VL answering in the 0..1000 grid (rows at 840 px, answer_grid)."""
    require("trl")
    from safetensors.torch import load_file

    from training.grpo import reward_functions, train

    recipe = _recipe(tiny_qwen3, tiny_sam2, nano_rows, tmp_path / "q3", frame="qwen3-1000")
    adapter = train(recipe, reward_functions(recipe) + [_length_reward])
    record = next(r for r in _log(tmp_path / "q3") if "loss" in r)
    assert math.isfinite(record["loss"]) and record["grad_norm"] > 0
    assert "rewards/star_stage1_accuracy/mean" in record
    assert any(bool(v.abs().sum() > 0) for k, v in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in k)


def _labelled_folder(root: Path, count: int = 6) -> Path:
    """Nano scenes with labelme files whose shapes are each scene's own objects (two of one kind where there
    are), written through the engine's labelme writer: a user's labelled folder."""
    from PIL import Image

    from engine.annotations import labelme_document, make_shape, mask_polygons, write_labelme
    from training.nano.world import make_scene

    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scene = make_scene(rng)
        path = root / f"scene-{i}.png"
        Image.fromarray(scene.image).save(path)
        shapes = []
        for k, obj in enumerate(scene.objects):
            shapes += [make_shape(obj.kind, "polygon", poly, None, group_id=k + 1)
                       for poly in mask_polygons(obj.mask)]
        h, w = scene.image.shape[:2]
        write_labelme(path, labelme_document(path.name, w, h, shapes))
    return root


def test_training_rows_from_a_labelme_folder_keep_out_its_held_out_images(tmp_path):
    """labelme:FOLDER as training data: the train split only, one row per label query, every object of
    the label an instance (its box in the solution), the masks in the frame."""
    from engine.data import open_dataset
    from engine.rle import decode
    from training.grpo_data import build_dataset

    folder = _labelled_folder(tmp_path / "labelled")
    options = {"holdout": 0.5, "queries": "labels"}
    recipe = Recipe(model="m", data=f"labelme:{folder}", output_dir="o", frame="pixels-112", prompt_family="star",
                    data_options=options)
    rows = build_dataset(recipe)
    train = list(open_dataset("labelme", folder, split="train", **options))
    held = list(open_dataset("labelme", folder, split="held-out", **options))
    assert train and held and len(rows) == len(train)
    for row, sample in zip(rows, train):
        assert row["prompt"][1]["content"].endswith(sample.query) or sample.query in row["prompt"][1]["content"]
        masks = [decode(r) for r in json.loads(row["solution_masks"])]
        assert len(masks) == len(json.loads(row["solution"])) == len(sample.load_instances()) == sample.meta["objects"]
        assert all(m.shape == (112, 112) for m in masks)
    with pytest.raises(RecipeError, match="data_options must be a mapping"):
        from training.recipe import load_recipe
        load_recipe(None, ["model=m", "data=d", "output_dir=o", "data_options=labels"])


@pytest.mark.timeout(600)
def test_grpo_trains_on_a_labelme_folder_from_the_command_line(tiny_qwen, tiny_sam2, tmp_path):
    """`star-train grpo --data labelme:FOLDER`: one stage-1 step with SAM in the loop on a user's folder."""
    require("trl")
    from training.cli import main

    folder = _labelled_folder(tmp_path / "labelled", count=4)
    out = tmp_path / "run"
    rc = main(["grpo", "--model", str(tiny_qwen.hf_dir), "--data", f"labelme:{folder}", "--output-dir", str(out),
               "--frame", "pixels-112", "--segmenter", f"{tiny_sam2.config}:{tiny_sam2.checkpoint}",
               "--prompts-per-step", "2", "--num-generations", "4", "--per-device-batch", "4",
               "--max-completion-length", "16", "--max-steps", "1", "--save-steps", "1", "--lora-r", "8",
               "--lora-alpha", "8", "--lr", "1e-3", "--data-options", "{holdout: 0.25}", "--report-to"])
    assert rc == 0
    record = next(r for r in _log(out) if "loss" in r)
    assert math.isfinite(record["loss"]) and "rewards/star_stage1_accuracy/mean" in record
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.timeout(600)
def test_rest_across_two_processes(tiny_qwen, tiny_sam2, nano_rows, tmp_path):
    """Two processes started by torchrun meet over gloo (accelerate's MULTI_CPU; `accelerate launch --cpu`
    starts only one): REST with each process holding one whole group, two steps, one adapter; a split
    that would cut a group across processes stops with the clear message."""
    import subprocess
    import sys

    require("trl")
    out = tmp_path / "mp"
    common = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "training.cli", "rest",
              f"model={tiny_qwen.hf_dir}", f"data={nano_rows}", "prompt_family=star-stage2",
              "frame=pixels-112", f"segmenter={tiny_sam2.config}:{tiny_sam2.checkpoint}", "num_generations=4",
              "rest_keep=2", "max_completion_length=16", "lora_r=8", "lora_alpha=8", "lr=1e-3", "report_to=[]",
              "save_steps=1"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(common + [f"output_dir={out}", "prompts_per_step=2", "per_device_batch=2", "max_steps=2"],
                          capture_output=True, text=True, timeout=500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "recipe.json").read_text())["processes"] == 2
    steps = [r for r in _log(out) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("rest/kept_reward_mean" in r for r in steps)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    bad = subprocess.run(common + [f"output_dir={tmp_path / 'bad'}", "prompts_per_step=1", "per_device_batch=2",
                                   "max_steps=1"], capture_output=True, text=True, timeout=500, env=env)
    assert bad.returncode != 0 and "whole groups" in bad.stdout + bad.stderr

"""StAR's RL stages on TRL's GRPO trainer (docs/protocol.md §8), pinned to TRL 1.16.

Stage 1 is plain GRPO with StAR's recipe (LoRA on the language model, no KL, no entropy bonus, clip
0.2, token-mean loss, advantages (r - mean) / (std + 1e-6) over each prompt's G rollouts). Stage 2 is
REST, a small extension: each prompt gets n rollouts, all are scored, the m/2 best and m/2 worst are
kept, advantages are computed over those m only, and only they enter the update (the other rows are
dropped from the batch, so they cost generation and scoring, not a backward pass).

The only TRL internals touched are two methods of GRPOTrainer: `_calculate_rewards` (to see the
scores) and `_generate_and_score_completions` (to replace the advantages and drop rows), which is why
the version is pinned (`TRL_VERSION`) and checked at start-up.
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from engine.offline import from_local, local_folder

from .recipe import Recipe

TRL_VERSION = "1.16"
ADVANTAGE_EPS = 1e-6  # docs/protocol.md §8 (TRL's own is 1e-4)

# LoRA on every linear layer of the language model; the vision tower (whose MLP also has gate/up/down
# projections) stays frozen.
LM_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def rest_selection(rewards: np.ndarray, keep: int | None) -> np.ndarray:
    """Indices (within one group's rollouts) that REST trains on: the keep/2 lowest and keep/2 highest
    rewards; all of them for plain GRPO (keep None). Ties keep the earlier rollout (stable sort)."""
    n = len(rewards)
    if keep is None or keep >= n:
        return np.arange(n)
    if keep % 2:
        raise ValueError(f"REST keeps an even number of rollouts (m/2 best + m/2 worst), got m={keep}")
    order = np.argsort(rewards, kind="stable")
    return np.sort(np.concatenate([order[: keep // 2], order[n - keep // 2:]]))


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """(r - mean) / (unbiased std + 1e-6) within one group."""
    std = rewards.std(ddof=1) if len(rewards) > 1 else 0.0
    return (rewards - rewards.mean()) / (std + ADVANTAGE_EPS)


def check_trl():
    import trl

    if not trl.__version__.startswith(TRL_VERSION):
        raise RuntimeError(f"training.grpo extends TRL {TRL_VERSION}.x internals; found trl {trl.__version__}. "
                           f"Install trl=={TRL_VERSION}.0 (pyproject's `train` extra pins it).")


def make_trainer_class():
    """GRPOTrainer with StAR's advantages and REST (built lazily: TRL is an optional dependency)."""
    import torch
    from trl import GRPOTrainer
    from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

    class StarGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, rest_keep: int | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.rest_keep = rest_keep
            self._last_rewards = None
            self.selections = deque(maxlen=16)  # (group rewards [P, n], kept [P, n]) per generation

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards_per_func  # gathered over all processes
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return out
            per_func = self._last_rewards
            weights = self.reward_weights.to(per_func.device)
            total = torch.nan_to_num(per_func, nan=0.0) @ weights
            n = self.num_generations
            groups = total.view(-1, n).cpu().double().numpy()
            advantages = np.zeros_like(groups)
            keep = np.zeros(groups.shape, dtype=bool)
            for g, rewards in enumerate(groups):
                idx = rest_selection(rewards, self.rest_keep)
                keep[g, idx] = True
                advantages[g, idx] = group_advantages(rewards[idx])
            self.selections.append((groups, keep))
            rows = len(out["prompt_ids"])
            start = self.accelerator.process_index * rows
            local_keep = torch.from_numpy(keep.reshape(-1)[start:start + rows])
            local_adv = torch.from_numpy(advantages.reshape(-1)[start:start + rows]).to(out["advantages"])
            out["advantages"] = local_adv
            if self.rest_keep is not None:
                out = self._select_rows(out, local_keep)
                kept = groups[keep].reshape(len(groups), -1)
                self._metrics["train"]["rest/kept_reward_mean"].append(float(kept.mean()))
                self._metrics["train"]["rest/kept_reward_spread"].append(float((kept.max(1) - kept.min(1)).mean()))
                self._metrics["train"]["rest/all_reward_mean"].append(float(groups.mean()))
            return out

        def _select_rows(self, out: dict, keep) -> dict:
            """Every per-row entry of a generation batch restricted to `keep` (bool [rows])."""
            rows = len(keep)
            idx = torch.nonzero(keep).flatten()
            out = split_pixel_values_by_grid(out)  # per-row image tensors, so rows can be dropped
            selected = {}
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
                    selected[key] = value[idx.to(value.device)]
                elif isinstance(value, list) and len(value) == rows:
                    selected[key] = [value[i] for i in idx.tolist()]
                else:
                    selected[key] = value
            mask = selected["completion_mask"]
            if "tool_mask" in selected:
                mask = mask * selected["tool_mask"]
            selected["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
            return unsplit_pixel_values_by_grid(selected)

    return StarGRPOTrainer


def grpo_args(recipe: Recipe, world_size: int = 1):
    """TRL's GRPOConfig for a recipe: 16 prompts x G rollouts per generation, one optimiser update per
    generation (gradient accumulation spans the generation batch)."""
    from trl import GRPOConfig

    rollouts = recipe.prompts_per_step * recipe.num_generations
    trained = recipe.prompts_per_step * (recipe.rest_keep or recipe.num_generations)
    micro = recipe.per_device_batch
    if rollouts % (micro * world_size):
        raise ValueError(f"prompts_per_step x num_generations = {rollouts} must divide into per_device_batch "
                         f"({micro}) x {world_size} processes")
    steps_per_generation = rollouts // (micro * world_size)
    if recipe.rest_keep is not None and (rollouts // world_size) % recipe.num_generations:
        raise ValueError(f"REST selects within each prompt's {recipe.num_generations} rollouts, so every process "
                         f"must hold whole groups: {rollouts // world_size} rollouts per process is not a multiple")
    if recipe.rest_keep is not None and (trained // world_size) % steps_per_generation:
        raise ValueError(f"REST keeps {trained} rollouts per step, which must split into {steps_per_generation} "
                         f"micro-batches per process; raise per_device_batch")
    return GRPOConfig(
        output_dir=recipe.output_dir, learning_rate=recipe.lr, num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps, weight_decay=recipe.weight_decay, max_grad_norm=recipe.max_grad_norm,
        lr_scheduler_type=recipe.lr_scheduler, warmup_steps=recipe.warmup_steps,
        per_device_train_batch_size=micro, num_generations=recipe.num_generations,
        generation_batch_size=rollouts, gradient_accumulation_steps=steps_per_generation,
        num_iterations=1, beta=0.0, epsilon=recipe.clip, loss_type="dapo", scale_rewards="group",
        temperature=recipe.temperature, top_p=recipe.top_p, top_k=0, max_completion_length=recipe.max_completion_length,
        mask_truncated_completions=False, remove_unused_columns=False, logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps, save_total_limit=recipe.save_total_limit, report_to=list(recipe.report_to),
        seed=recipe.seed, bf16=use_bf16(recipe), use_cpu=not _cuda(), use_vllm=recipe.use_vllm,
        deepspeed=recipe.deepspeed, gradient_checkpointing=recipe.gradient_checkpointing,
        log_completions=False, disable_dropout=True, dataloader_num_workers=0,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def use_bf16(recipe: Recipe) -> bool:
    """The recipe's choice, else bf16 on CUDA GPUs that support it (both the weights and the trainer)."""
    if recipe.bf16 is not None:
        return recipe.bf16
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_policy(recipe: Recipe):
    """(model with a trainable LoRA adapter, or with every weight trainable when `lora_r` is 0, processor)
    for a recipe."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    dtype = torch.bfloat16 if use_bf16(recipe) else torch.float32
    model = from_local(AutoModelForImageTextToText, recipe.model, "recipe model", dtype=dtype)
    if recipe.adapter:
        model = PeftModel.from_pretrained(model, str(local_folder(recipe.adapter, "recipe adapter")),
                                          is_trainable=True, local_files_only=True)
    elif recipe.lora_r == 0:
        model.requires_grad_(True)
    else:
        lora = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                          target_modules=LM_LINEAR, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model, load_processor(recipe.model)


# The ChatML the engine's llama.cpp path writes (engine.protocol.chatml_prompt), as a Jinja template
# for checkpoints that carry none (the nano policy); real Qwen checkpoints bring their own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_processor(model_dir: str):
    """The model's processor with left padding and truncation, as TRL loads it itself (its prompt ids are
    left-padded; a right-padding processor would misalign the image-token types of shorter prompts)."""
    processor = _processor(model_dir)
    processor.tokenizer.padding_side = "left"
    processor.tokenizer.truncation_side = "left"
    return processor


def _processor(model_dir: str):
    from transformers import (
        AutoProcessor,
        AutoTokenizer,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
        Qwen2VLVideoProcessor,
    )

    try:
        processor = from_local(AutoProcessor, model_dir, "model folder")
        if getattr(processor, "chat_template", None):
            return processor
    except (OSError, ValueError, TypeError):
        pass
    import json
    from pathlib import Path

    import transformers

    tokenizer = from_local(AutoTokenizer, model_dir, "model folder")
    image_processor = from_local(Qwen2VLImageProcessorPil, model_dir, "model folder")
    model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    # Qwen3-VL's processor counts image tokens with its own patch size; Qwen2.5-VL's otherwise.
    processor_class = transformers.Qwen3VLProcessor if model_type == "qwen3_vl" else Qwen2_5_VLProcessor
    # The processor class insists on a video processor; no video ever reaches it.
    return processor_class(image_processor=image_processor, tokenizer=tokenizer,
                           video_processor=Qwen2VLVideoProcessor(), chat_template=CHATML_TEMPLATE)


def segment_function(recipe: Recipe):
    """The SAM-in-the-loop reward's segmenter: an engine Segmenter (PyTorch on the GPU when there is one)."""
    if not recipe.segmenter:
        return None
    from engine.bundle import load_bundle
    from engine.devices import resolve_device
    from engine.segment import load_segmenter
    from engine.segment.torch_backend import load_torch_segmenter

    config, _, checkpoint = recipe.segmenter.partition(":")
    if checkpoint:  # CONFIG.yaml:CHECKPOINT.pt, e.g. a `star-train nano-sam` checkpoint
        seg = load_torch_segmenter(config, checkpoint, "auto")
    else:  # a bundle folder
        seg = load_segmenter(load_bundle(recipe.segmenter).segmenter_files(), "auto", device=resolve_device("auto"))

    def segment(image, boxes, points):
        rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        return seg.segment(seg.embed(rgb), boxes=boxes, points=points).masks

    return segment


def reward_functions(recipe: Recipe) -> list:
    from . import rewards

    accuracy = rewards.StarAccuracyReward(recipe.stage, segment_function(recipe),
                                          reward_empty_match=recipe.reward_empty_match)
    return [rewards.think_format_reward, rewards.star_answer_format_reward, accuracy, rewards.non_repeat_reward]


def last_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in output_dir (transformers' own finder), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def build_trainer(recipe: Recipe, reward_funcs: list | None = None):
    """The configured trainer for a recipe (StAR's reward functions unless others are given)."""
    check_trl()
    from .grpo_data import build_dataset

    Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
    import torch
    from accelerate import PartialState

    # Without CUDA, processes started by torchrun / accelerate meet over gloo (accelerate's MULTI_CPU);
    # PartialState is a singleton, so the first call decides it for the trainer too.
    processes = PartialState(cpu=not torch.cuda.is_available()).num_processes
    (Path(recipe.output_dir) / "recipe.json").write_text(json.dumps({**recipe.to_dict(), "processes": processes}, indent=2))
    model, processor = load_policy(recipe)
    args = grpo_args(recipe, processes)
    trainer = make_trainer_class()(model=model, reward_funcs=reward_funcs or reward_functions(recipe), args=args,
                            train_dataset=build_dataset(recipe), processing_class=processor, rest_keep=recipe.rest_keep)
    trainer.add_callback(JsonlLogger(Path(recipe.output_dir) / "log.jsonl"))
    return trainer


def train(recipe: Recipe, reward_funcs: list | None = None) -> Path:
    """Run a recipe to the end (resuming from the newest checkpoint in output_dir); returns the final
    weights (`save_final`)."""
    trainer = build_trainer(recipe, reward_funcs)
    trainer.train(resume_from_checkpoint=last_checkpoint(recipe.output_dir))
    return save_final(trainer, recipe)


def save_final(trainer, recipe: Recipe) -> Path:
    """The trained weights: the adapter (`<output_dir>/adapter`), or with `lora_r` 0 the whole model
    (`<output_dir>/model`, with the base's tokenizer and processor files), either of which `star-export
    policy` takes (`--adapter` over the base, or `--model`)."""
    if recipe.lora_r == 0 and not recipe.adapter:
        from .warm_start import copy_model_files

        final = Path(recipe.output_dir) / "model"
        trainer.model.save_pretrained(final)
        copy_model_files(Path(recipe.model), final)
        return final
    final = Path(recipe.output_dir) / "adapter"
    trainer.model.save_pretrained(final)
    return final


def _jsonable(value: Any):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def JsonlLogger(path: Path):
    """A transformers callback that appends every log record (rewards per function, REST statistics,
    completion length, loss) to a JSONL file next to TensorBoard's."""
    from transformers import TrainerCallback

    class _Logger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                record = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
                with path.open("a") as f:
                    f.write(json.dumps(record) + "\n")

    return _Logger()

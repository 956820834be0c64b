"""A training recipe: one dataclass, read from YAML (`training/recipes/*.yaml`) with `key=value`
overrides from the command line. Unknown keys are errors, so a typo never silently trains the default."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.errors import StarError

from .config_cli import setting
from .overrides import parse_overrides, typed_settings


class RecipeError(StarError):
    """A recipe that cannot run as written: an unknown or mistyped setting, a missing one, a YAML that is not
    a mapping, a stage the subcommand does not run."""


def _list(default: list, help: str) -> Any:
    return field(default_factory=lambda: list(default), metadata={"help": help})


@dataclass
class Recipe:
    """A GRPO (stage 1) or REST (stage 2) run: every setting with its help; `star-train grpo|rest` makes one
    option of each field."""
    model: str = setting(MISSING, "Hugging Face folder of the base policy (local: nothing is downloaded)")
    data: str = setting(MISSING, "training parquet (file or folder): ReasonSeg-X style rows, `instances` per query; "
                                 "or labelme:FOLDER / coco:FILE, people's own labels (their train split)")
    output_dir: str = setting(MISSING, "the run folder (a re-run resumes from its last checkpoint)")
    stage: int = setting(1, "1: StAR's stage-1 reward (GRPO); 2: the stage-2 reward (REST); set by the subcommand")
    prompt_family: str = setting("star-stage1", "the prompt the policy is asked with (engine/protocol.py)")
    frame: str = setting("qwen2.5-840", "the answer frame: images are resized to it, ground truth is in it")
    adapter: str | None = setting(None, "continue this PEFT adapter (stage 2 starts from stage 1's)")
    segmenter: str | None = setting(None, "SAM in the loop: a bundle folder, or CONFIG.yaml:CHECKPOINT.pt")
    lr: float = setting(1e-5, "learning rate")
    lr_scheduler: str = setting("constant", "transformers' scheduler name")
    warmup_steps: float = setting(0, "warm-up steps, or a fraction of the run when < 1")
    epochs: float = setting(1.0, "passes over the data")
    max_steps: int = setting(-1, "> 0: stop after this many steps (smoke runs)")
    prompts_per_step: int = setting(16, "prompts per optimisation step")
    num_generations: int = setting(16, "G rollouts per prompt (REST: n)")
    rest_keep: int | None = setting(None, "REST: keep m/2 best + m/2 worst of the n rollouts")
    per_device_batch: int = setting(16, "rollouts per forward / backward micro-batch")
    lora_r: int = setting(64, "LoRA rank (0: train every weight, no adapter: for a small policy such as the nano)")
    lora_alpha: int = setting(64, "LoRA alpha")
    lora_dropout: float = setting(0.0, "LoRA dropout")
    temperature: float = setting(1.0, "rollout sampling temperature")
    top_p: float = setting(1.0, "rollout nucleus sampling")
    max_completion_length: int = setting(2048, "tokens per rollout at most")
    clip: float = setting(0.2, "PPO clip range")
    weight_decay: float = setting(1e-3, "AdamW weight decay")
    max_grad_norm: float = setting(1.0, "gradient clipping norm")
    reward_empty_match: bool = setting(False, "score a correct 'no object' answer (worlds with no-target queries)")
    skip: int = setting(0, "rows before this one are not used (a later RL round's fresh rows)")
    limit: int | None = setting(None, "this many rows (after skip) only")
    reasoning_types: list[str] = _list([], "only rows of these ReasonSeg-X reasoning types (e.g. a round aimed at "
                                       "the comparative queries a policy fails most); skip counts every row, limit "
                                       "the rows kept; empty: every row")
    logging_steps: int = setting(1, "log every this many steps")
    save_steps: int = setting(50, "checkpoint every this many steps")
    save_total_limit: int | None = setting(3, "checkpoints kept")
    seed: int = setting(42, "random seed")
    bf16: bool | None = setting(None, "bfloat16 training (default: on CUDA GPUs that support it)")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)")
    use_vllm: bool = setting(False, "rollouts through vLLM")
    deepspeed: str | None = setting(None, "a ZeRO JSON (training/recipes/zero*.json)")
    report_to: list[str] = _list(["tensorboard"], "where metrics go (transformers' report_to)")
    data_options: dict = field(default_factory=dict, metadata={
        "help": "options of a labelme: / coco: reader, e.g. {queries: labels, flag: done, holdout: 0.2}"})

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if not isinstance(self.data_options, dict):
            raise ValueError(f"data_options must be a mapping (e.g. {{queries: labels}}), got {self.data_options!r}")
        if self.skip < 0:
            raise ValueError(f"skip must be >= 0, got {self.skip}")
        if isinstance(self.reasoning_types, str):
            self.reasoning_types = [self.reasoning_types]
        if self.rest_keep is not None and not 0 < self.rest_keep <= self.num_generations:
            raise ValueError(f"rest_keep must be in 1..num_generations ({self.num_generations}), got {self.rest_keep}")

    def to_dict(self) -> dict:
        return asdict(self)


def load_recipe(path: str | Path | None, overrides: list[str] = (), *, options: dict | None = None,
                stage: int | None = None, **defaults) -> Recipe:
    """A recipe from YAML, then `key=value` overrides (values parsed as YAML scalars), then `options` (the
    command line's, already parsed); `stage` (the subcommand's) must agree with what the YAML says.
    RecipeError for anything that makes it unrunnable."""
    import yaml

    values: dict[str, Any] = dict(defaults)
    try:
        if path is not None:
            data = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: a recipe is a YAML mapping of settings")
            values.update(data)
        values.update(parse_overrides(overrides))
        values.update(options or {})
        if stage is not None:
            if values.get("stage", stage) != stage:
                command = {1: "grpo", 2: "rest"}.get(values["stage"], "grpo or rest")
                raise ValueError(f"this recipe is stage {values['stage']}: run it with star-train {command}")
            values["stage"] = stage
        values = typed_settings(Recipe, values, what="recipe")
        missing = [f.name for f in fields(Recipe) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in values]
        if missing:
            raise ValueError(f"the recipe needs {', '.join(missing)} (in the YAML, as --{missing[0].replace('_', '-')} "
                             "or as key=value)")
        return Recipe(**values)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RecipeError(str(exc)) from None

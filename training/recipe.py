"""A training recipe: one dataclass, read from YAML (`training/recipes/*.yaml`) with `key=value`
overrides from the command line. Unknown keys are errors, so a typo never silently trains the default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .overrides import parse_overrides, typed_settings


@dataclass
class Recipe:
    model: str                          # Hugging Face folder of the base policy
    data: str                           # training parquet (file or folder): ReasonSeg-X style rows
    output_dir: str
    stage: int = 1                      # 1: StAR stage-1 reward (GRPO); 2: stage-2 reward (REST)
    prompt_family: str = "star-stage1"
    frame: str = "qwen2.5-840"          # images are resized to it; GT coordinates are in it
    adapter: str | None = None          # continue this PEFT adapter (stage 2 starts from stage 1's)
    segmenter: str | None = None        # SAM in the loop: a bundle folder, or CONFIG.yaml:CHECKPOINT.pt
    lr: float = 1e-5
    lr_scheduler: str = "constant"
    warmup_steps: float = 0           # steps, or a fraction of the run when < 1
    epochs: float = 1.0
    max_steps: int = -1                 # > 0 stops early (smoke runs)
    prompts_per_step: int = 16
    num_generations: int = 16           # G rollouts per prompt (REST: n)
    rest_keep: int | None = None        # REST: keep m/2 best + m/2 worst of the n rollouts
    per_device_batch: int = 16          # rollouts per forward/backward micro-batch
    lora_r: int = 64
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 2048
    clip: float = 0.2
    weight_decay: float = 1e-3
    max_grad_norm: float = 1.0
    reward_empty_match: bool = False    # score a correct "no object" answer (worlds with no-target queries)
    skip: int = 0                       # rows before this one are not used (a later RL round's fresh rows)
    limit: int | None = None            # this many rows (after `skip`) only
    # Only rows of these ReasonSeg-X reasoning types (e.g. a round aimed at the comparative queries a policy
    # fails most); skip counts every row, limit the rows kept. Empty: every row.
    reasoning_types: list[str] = field(default_factory=list)
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 3
    seed: int = 42
    bf16: bool | None = None            # default: on CUDA GPUs that support it
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    deepspeed: str | None = None        # a ZeRO JSON (training/recipes/zero*.json)
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.skip < 0:
            raise ValueError(f"skip must be >= 0, got {self.skip}")
        if isinstance(self.reasoning_types, str):
            self.reasoning_types = [self.reasoning_types]
        if self.rest_keep is not None and not 0 < self.rest_keep <= self.num_generations:
            raise ValueError(f"rest_keep must be in 1..num_generations ({self.num_generations}), got {self.rest_keep}")

    def to_dict(self) -> dict:
        return asdict(self)


def load_recipe(path: str | Path | None, overrides: list[str] = (), **defaults) -> Recipe:
    """A recipe from YAML, then `key=value` overrides (values parsed as YAML scalars)."""
    import yaml

    values: dict[str, Any] = dict(defaults)
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recipe is a YAML mapping of settings")
        values.update(data)
    values.update(parse_overrides(overrides))
    values = typed_settings(Recipe, values, what="recipe")
    missing = [k for k in ("model", "data", "output_dir") if k not in values]
    if missing:
        raise ValueError(f"the recipe needs {', '.join(missing)} (in the YAML or as key=value)")
    return Recipe(**values)

"""The nano warm-up's settings: the curriculum, the learning-rate schedule, and `WarmupConfig`, whose
fields also generate `star-train nano-warmup`'s options (training/config_cli.py)."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass

from engine.argtypes import bounded_int, fraction, positive_float
from engine.devices import DEVICES

from ..config_cli import COUNT, setting
from .dataset import TRACES
from .queries import REASONING_TYPES, REFERRING


@dataclass(frozen=True)
class Phase:
    steps: int  # this phase lasts until the run's step count reaches `steps`
    types: tuple[str, ...]
    max_objects: int | None


# Referring queries on <= 3 objects until the first step, every type on <= 4 objects until the second,
# then the whole world: the ends the shipped warm-up was trained with (training/nano/recipe.py uses them too).
PHASE_ENDS = (1000, 1800)
DEFAULT_CURRICULUM = (
    Phase(PHASE_ENDS[0], (REFERRING,), 3),
    Phase(PHASE_ENDS[1], (REFERRING,) + REASONING_TYPES, 4),
    Phase(10 ** 9, (REFERRING,) + REASONING_TYPES, None),
)


def _head(text: str) -> tuple[int, int]:
    """An attention head as LAYER.HEAD (e.g. 2.0) -> (2, 0)."""
    import argparse

    layer, dot, head = text.partition(".")
    if not (dot and layer.isdigit() and head.isdigit()):
        raise argparse.ArgumentTypeError(f"an attention head is LAYER.HEAD (e.g. 2.0), got {text!r}")
    return int(layer), int(head)


def _heads(help_text: str):
    return setting((), help_text, parse=_head, nargs="*", metavar="LAYER.HEAD", build=tuple)


@dataclass
class WarmupConfig:
    """The warm-up's settings; `star-train nano-warmup`'s options are generated from these fields."""
    model_dir: str = setting(MISSING, "the nano-init folder (or a warm-up checkpoint to continue)", flag="--model")
    out_dir: str = setting(MISSING, "the run folder (a re-run resumes from OUT/checkpoint)", flag="--out")
    steps: int = setting(20000, "training steps", parse=COUNT)
    batch: int = setting(16, "scenes per step", parse=COUNT)
    lr: float = setting(1e-3, "learning rate after the linear ramp", parse=positive_float)
    warmup_steps: int = setting(200, "steps of the linear learning-rate ramp", parse=COUNT)
    decay_from: int | None = setting(
        None, "from this step the lr follows a cosine down to final_lr (None: constant; a run that plateaued "
        "at a constant lr is noise-limited, and decaying it lowers that floor)", metavar="STEP")
    final_lr: float = setting(5e-5, "where the cosine ends", parse=positive_float)
    decay_until: int | None = setting(
        None, "the cosine reaches final_lr here instead of at steps (a run stopped mid-cosine and continued "
        "with other settings keeps its schedule)", metavar="STEP")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    grad_clip: float = setting(1.0, "gradient norm clip")
    aux_weight: float = setting(1.0, "weight of the dense image-token losses")
    aux_layer: int = setting(2, "LM layer whose image-token states must know their own position and box")
    curriculum: tuple[Phase, ...] = setting(
        DEFAULT_CURRICULUM, "curriculum: referring queries on <= 3 objects until step REFERRING, every type on "
        "<= 4 objects until FEW, then the whole world", flag="--phase-ends", parse=int, nargs=2,
        metavar=("REFERRING", "FEW"), cli_default=PHASE_ENDS, build=lambda ends: curriculum_until(*ends))
    eval_every: int = setting(100, "steps between validations (and the real-vs-blank diagnostic)", parse=COUNT)
    eval_rows: int = setting(32, "validation scenes")
    save_every: int = setting(200, "steps between checkpoints", parse=COUNT)
    threads: int = setting(1, "torch threads", parse=COUNT)
    empty_rate: float = setting(0.1, "share of queries with no target")
    wide_share: float = setting(
        0.0, "share of the training rows drawn from the wider world (any background, size, aspect and phrasing, "
        "plain referring queries; training/nano/wide.py); 0: the classic world only", parse=fraction)
    coord_sigma: float = setting(
        0.0, "pixels; > 0 trains answer coordinates against a Gaussian over neighbouring values, so '3 px off' "
        "earns credit (needs coordinate tokens)")
    attn_heads: tuple[tuple[int, int], ...] = _heads(
        "attention heads trained to look, from each answer coordinate, at its object's image tokens "
        "(-log of the attention mass there)")
    attn_weight: float = setting(1.0, "weight of the supervised attention loss")
    label_weight: float = setting(
        0.0, "> 0: the name heads learn to look, from every token that names an object, at that object "
        "(naming is where the policy decides which object it means)")
    name_heads: tuple[tuple[int, int], ...] = _heads(
        "attention heads of the naming loss; heads of their own (on the coordinate heads it broke the copy of "
        "the trace's names into the answer)")
    kind_weight: float = setting(1.0, "multiplies the vision tokens' kind loss (kind is what the tower learns worst)")
    answer_weight: float = setting(
        0.0, "> 0: a linear read-out of the final state regresses each answer coordinate (L1), a gradient for "
        "the copy path that does not depend on the coordinate code's precision")
    stream: str = setting("warmup", "the name that seeds the training scenes")
    trace: str = setting("short", "how completions reason: 'short' (the query's steps) or 'listed' (every "
                         "object with its box first)", choices=TRACES)
    device: str = setting("auto", "where to train: auto takes a CUDA GPU when torch sees one (checkpoints "
                          "move between devices)", choices=DEVICES)
    seed: int = setting(0, "initialization of the training-only heads when a run starts without a checkpoint")
    workers: int = setting(0, "processes that make the coming steps' batches (the same batches; 0: the trainer)",
                           parse=bounded_int(0, 256, "processes"))


def curriculum_until(first: int, second: int) -> tuple[Phase, ...]:
    """DEFAULT_CURRICULUM with its first two phases ending at steps `first` and `second`."""
    a, b, c = DEFAULT_CURRICULUM
    if not 0 <= first <= second:
        raise ValueError(f"phase ends must satisfy 0 <= first <= second, got {first}, {second}")
    return (Phase(first, a.types, a.max_objects), Phase(second, b.types, b.max_objects), c)


def learning_rate(config: WarmupConfig, step: int) -> float:
    """Linear ramp over warmup_steps, then constant, or a cosine from decay_from to final_lr at decay_until
    (default: config.steps), final_lr after it."""
    lr = config.lr * min(1.0, (step + 1) / config.warmup_steps)
    start, end = config.decay_from, config.decay_until or config.steps
    if start is None or step < start or end <= start:
        return lr
    t = min(1.0, (step - start) / (end - start))
    return config.final_lr + (lr - config.final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def phase_at(curriculum: tuple[Phase, ...], step: int) -> Phase:
    for phase in curriculum:
        if step < phase.steps:
            return phase
    return curriculum[-1]

"""The nano bundle from scratch, every stage with this project's own commands:

  data -> init -> warm-up (SFT, in legs) -> SAM 2 -> RL round 1: stage 1 (GRPO) -> stage 2 (REST)
       -> RL round 2: merge round 1's LoRA, GRPO -> REST on rows round 1 did not see -> star-export bundle

Each stage writes under OUT/<stage> and is skipped when its result is already there; the long ones
(warm-up, SAM, GRPO, REST) resume from their own checkpoints, so an interrupted run goes on where it
stopped. `scale="ci"` runs a few steps of each (what CI exercises); `scale="full"` is the recipe the
shipped bundle comes from: its warm-up and RL were run as the legs and rounds below (docs/nano.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..overrides import typed_settings
from .warmup_config import PHASE_ENDS


@dataclass(frozen=True)
class WarmupLeg:
    """One `nano-warmup` run in the recipe's warm-up folder: it resumes where the previous leg stopped and
    trains to step `until` with these settings (training/nano/warmup.py explains each)."""
    until: int
    lr: float
    decay_from: int | None = None      # cosine from here to final_lr at decay_until (default: until)
    final_lr: float = 5e-5
    decay_until: int | None = None
    answer_weight: float = 0.0
    label_weight: float = 0.0
    name_heads: tuple[tuple[int, int], ...] = ()
    kind_weight: float = 1.0
    # > 0: before the leg, the vision tower alone is pre-trained this many steps (`star-train nano-vision`:
    # shape-heavy scenes; val kind accuracy 0.67 -> 0.79 in 1,200 steps, docs/experiments.md, "Vision pre-training before a warm-up").
    vision_steps: int = 0
    vision_seed: int = 13  # its training scenes: a second vision leg wants another, or it sees the same scenes

    @classmethod
    def parse(cls, value) -> WarmupLeg:
        """A leg from a `warmup_legs=` override's mapping (YAML 1.1 reads 1e-3 as a string)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict) or "until" not in value or "lr" not in value:
            raise ValueError(f"a warm-up leg is a mapping with at least 'until' and 'lr', got {value!r}")
        parsed = typed_settings(cls, value, what="warm-up leg")
        parsed["name_heads"] = tuple(tuple(int(x) for x in pair) for pair in parsed.get("name_heads", ()))
        return cls(**parsed)


# The shipped warm-up, as it was run (docs/nano.md; the runs' own warmup.json files).
SHIPPED_WARMUP = (
    # Legs 1-2: lr 1e-3, cosine from step 1,620 to 5e-5 at 3,000; the answer read-out joined at 1,800.
    WarmupLeg(1800, 1e-3, decay_from=1620, final_lr=5e-5, decay_until=3000),
    WarmupLeg(3000, 1e-3, decay_from=1620, final_lr=5e-5, answer_weight=1.0),
    # Leg 3: a second, lower cosine.
    WarmupLeg(4700, 2e-4, decay_from=3000, final_lr=1e-5, answer_weight=1.0),
    # Leg 4: the naming loss on heads of its own and the kind loss doubled, a third cosine (the heads'
    # mass on the named object 0.007 -> 0.6; teacher-forced naming 44 % -> 49 %; docs/experiments.md, "A naming loss").
    WarmupLeg(5600, 2e-4, decay_from=4700, final_lr=1e-5, answer_weight=1.0, label_weight=1.0,
              name_heads=((2, 1), (3, 1)), kind_weight=2.0),
)

# The same four legs for a few steps each (what CI exercises: a resume with new settings at every leg).
CI_WARMUP = (
    WarmupLeg(1, 1e-3, decay_from=1, decay_until=3),
    WarmupLeg(2, 1e-3, decay_from=1, answer_weight=1.0),
    WarmupLeg(3, 2e-4, decay_from=2, final_lr=1e-5, answer_weight=1.0),
    WarmupLeg(4, 2e-4, decay_from=3, final_lr=1e-5, answer_weight=1.0, label_weight=1.0,
              name_heads=((2, 1), (3, 1)), kind_weight=2.0),
)


@dataclass
class NanoRecipe:
    out: str
    train_rows: int = 20000
    val_rows: int = 500
    test_rows: int = 1000
    warmup_legs: tuple[WarmupLeg, ...] = SHIPPED_WARMUP
    warmup_batch: int = 16
    warmup_phase_ends: tuple[int, int] = PHASE_ENDS  # curriculum: referring on <= 3 objects, then <= 4
    warmup_coord_sigma: float = 3.0
    warmup_attn_heads: tuple[tuple[int, int], ...] = ((2, 0), (3, 0))
    sam_steps: int = 2400
    sam_batch: int = 8
    # Each RL round is GRPO then REST with a fresh LoRA on the previous round's policy (its LoRA merged).
    # One round raised the training accuracy reward 1.88 -> 2.26 of 3 over 150 GRPO steps; the second, on
    # rows the first never saw, added +1.8 +- 0.6 gIoU greedy, level at N = 8 (docs/experiments.md).
    rl_rounds: int = 2
    rl_round_rows: int = 2000     # round k trains on the train rows from (k - 1) * rl_round_rows on
    prompts_per_step: int = 8
    stage1_steps: int = 150
    stage1_generations: int = 8
    stage2_steps: int = 30
    stage2_rollouts: int = 16
    stage2_keep: int = 8
    max_completion_length: int = 160
    rl_lr: float = 2e-4           # LoRA on a 3 M-parameter model from scratch: higher than the 7B's 1e-5
    quant: str = "Q8_0"
    # The bundle recommends decoding under the answer grammar: the nano policy sometimes breaks a box list
    # with trace text; constrained, none fail (docs/nano.md).
    answer_grammar: bool = True
    # ... and votes at temperature 0.25: StAR's 1.0 scatters the nano policy's broad coordinate distributions
    # (whole test split, the shipped bundle: N = 8 at 0.25 0.462 gIoU vs 0.439 greedy; README).
    vote_temperature: float = 0.25
    threads: int = 1
    # Where the warm-up, vision and SAM stages train (engine.devices.resolve_torch_device; the RL stages take
    # a CUDA GPU whenever torch sees one, as TRL does), and how many processes make the warm-up's batches.
    device: str = "auto"
    workers: int = 0

    def __post_init__(self):
        self.warmup_legs = tuple(WarmupLeg.parse(leg) for leg in self.warmup_legs)
        ends = [leg.until for leg in self.warmup_legs]
        if not ends or ends != sorted(set(ends)) or ends[0] < 1:
            raise ValueError(f"warm-up legs must end at increasing steps >= 1, got {ends}")
        if self.warmup_legs[0].vision_steps:
            raise ValueError("the first warm-up leg cannot start with vision pre-training: it needs a warm-up "
                             "checkpoint (the read-out it trains is the warm-up's)")
        if self.rl_rounds < 1:
            raise ValueError(f"rl_rounds must be >= 1, got {self.rl_rounds}")
        rows = self.prompts_per_step * max(self.stage1_steps, self.stage2_steps)
        if rows > self.rl_round_rows and self.rl_rounds > 1:
            raise ValueError(f"a round uses {rows} rows, more than rl_round_rows={self.rl_round_rows}: "
                             "rounds would share rows")
        if (self.rl_rounds - 1) * self.rl_round_rows + rows > self.train_rows:
            raise ValueError(f"{self.rl_rounds} RL rounds need {(self.rl_rounds - 1) * self.rl_round_rows + rows} "
                             f"train rows, the recipe writes {self.train_rows}")


CI_SCALE = dict(train_rows=32, val_rows=4, test_rows=4, warmup_legs=CI_WARMUP, warmup_batch=2, sam_steps=2,
                sam_batch=1, rl_round_rows=8, prompts_per_step=2, stage1_steps=1, stage1_generations=4,
                stage2_steps=1, stage2_rollouts=4, stage2_keep=2, max_completion_length=24)


def nano_recipe(out: str, scale: str = "full", **overrides) -> NanoRecipe:
    if scale not in ("full", "ci"):
        raise ValueError(f"scale is 'full' or 'ci', got {scale!r}")
    recipe = NanoRecipe(out, **(CI_SCALE if scale == "ci" else {}))
    return replace(recipe, **overrides)


def _log(out: Path, stage: str, seconds: float, **extra) -> None:
    with (out / "stages.jsonl").open("a") as f:
        f.write(json.dumps({"stage": stage, "seconds": round(seconds, 1), **extra}) + "\n")


def _round_dir(out: Path, k: int) -> Path:
    """Round 1 writes OUT/stage1, OUT/stage2 (as before rounds existed); round k > 1 OUT/round<k>/..."""
    return out if k == 1 else out / f"round{k}"


def _rl_recipe(r: NanoRecipe, out: Path, k: int, stage: int, model: Path, adapter: str | None):
    from ..recipe import Recipe

    return Recipe(model=str(model), data=str(out / "data" / "train"), output_dir=str(_round_dir(out, k) / f"stage{stage}"),
                  stage=stage, adapter=adapter,
                  # The warm-up taught the `star` prompt; the engine asks with it too.
                  prompt_family="star", frame="pixels-224",
                  segmenter=f"{out / 'sam' / 'checkpoint' / 'sam2_nano.yaml'}:{out / 'sam' / 'checkpoint' / 'sam2_nano.pt'}",
                  lr=r.rl_lr, max_steps=r.stage1_steps if stage == 1 else r.stage2_steps,
                  prompts_per_step=r.prompts_per_step,
                  num_generations=r.stage1_generations if stage == 1 else r.stage2_rollouts,
                  rest_keep=None if stage == 1 else r.stage2_keep,
                  per_device_batch=r.stage1_generations if stage == 1 else r.stage2_keep,
                  max_completion_length=r.max_completion_length, reward_empty_match=True,
                  lora_r=16, lora_alpha=16, save_steps=20, report_to=[],
                  # Only the rows the steps will see are prepared (the dataset is built up front); each
                  # round starts at its own rows, so a later round's prompts are new to the policy.
                  skip=(k - 1) * r.rl_round_rows,
                  limit=r.prompts_per_step * (r.stage1_steps if stage == 1 else r.stage2_steps))


def _warmup_config(r: NanoRecipe, out: Path, leg: WarmupLeg):
    from .warmup_config import WarmupConfig, curriculum_until

    return WarmupConfig(str(out / "init"), str(out / "warmup"), steps=leg.until, batch=r.warmup_batch,
                        threads=r.threads, eval_rows=min(32, max(2, r.warmup_batch)), lr=leg.lr,
                        decay_from=leg.decay_from, final_lr=leg.final_lr, decay_until=leg.decay_until,
                        curriculum=curriculum_until(*r.warmup_phase_ends), coord_sigma=r.warmup_coord_sigma,
                        attn_heads=tuple(tuple(int(v) for v in pair) for pair in r.warmup_attn_heads),
                        answer_weight=leg.answer_weight, label_weight=leg.label_weight,
                        name_heads=leg.name_heads, kind_weight=leg.kind_weight, device=r.device, workers=r.workers)


def _merge(model: Path, adapter: Path, base: Path) -> None:
    """`base` = `model` with `adapter` merged, written aside and moved into place (its config.json marks the
    stage done, so a half-written merge must never sit at `base`)."""
    from export.lora import merge_adapter

    from .steps import fresh_dir, replace_dir

    tmp = fresh_dir(base.with_name(base.name + ".tmp"))
    merge_adapter(model, adapter, tmp)
    (tmp / "state.pt").unlink(missing_ok=True)  # the warm-up's optimiser state stays in the warm-up folder
    replace_dir(tmp, base)


def _checkpoint_step(out: Path) -> int:
    """The step of OUT/warmup's checkpoint, 0 before the first save."""
    import torch

    state = out / "warmup" / "checkpoint" / "state.pt"
    return int(torch.load(state, weights_only=True, map_location="cpu")["step"]) if state.is_file() else 0


def _vision_step(r: NanoRecipe, out: Path, leg: WarmupLeg, progress: bool) -> None:
    """The leg's vision pre-training (it saves back at the same step, so a marker says it ran)."""
    from .vision_pretrain import VisionPretrain, VisionPretrainConfig

    full = leg.vision_steps >= 100
    VisionPretrain(VisionPretrainConfig(str(out / "warmup"), steps=leg.vision_steps, batch=32 if full else 2,
                                        eval_scenes=96 if full else 2, ramp_steps=50 if full else 1,
                                        seed=leg.vision_seed, threads=r.threads, device=r.device)).run(progress=progress)
    _vision_marker(out, leg).write_text("")


def _vision_marker(out: Path, leg: WarmupLeg) -> Path:
    return out / "warmup" / f"vision-before-{leg.until}.done"


def run_warmup_legs(r: NanoRecipe, out: Path, *, progress: bool = True) -> None:
    """Every warm-up leg in OUT/warmup, then OUT/warmup/DONE. A leg resumes from the folder's checkpoint and
    legs already past are skipped (no model load), so an interrupted warm-up goes on inside the leg it stopped in."""
    from .warmup import Warmup

    step = _checkpoint_step(out)
    for leg in r.warmup_legs:
        pending_vision = leg.vision_steps and not _vision_marker(out, leg).exists()
        if step >= leg.until:
            if pending_vision:  # the leg trained before this setting was added: not retroactively
                raise ValueError(f"the warm-up is at step {step}, past the leg to step {leg.until} that asks for "
                                 "vision pre-training first: start it in a fresh folder")
            continue
        if pending_vision:
            _vision_step(r, out, leg, progress)
        Warmup(_warmup_config(r, out, leg)).run(progress=progress)
        step = leg.until
    (out / "warmup" / "DONE").write_text("")


def run_nano_recipe(r: NanoRecipe, *, progress: bool = True) -> Path:
    """Run every stage not yet done; returns the bundle folder (OUT/bundle)."""
    import torch

    from .dataset import NanoConfig, write_split
    from .policy_model import NanoPolicyConfig, build_nano_policy
    from .segmenter import SamTrainConfig, SamTrainer

    torch.set_num_threads(r.threads)
    out = Path(r.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nano-recipe.json").write_text(json.dumps(asdict(r), indent=2))

    def stage(name: str, done: Path, run) -> None:
        if done.exists():
            if progress:
                print(f"[nano] {name}: done ({done})", flush=True)
            return
        if progress:
            print(f"[nano] {name} ...", flush=True)
        t0 = time.perf_counter()
        run()
        _log(out, name, time.perf_counter() - t0)

    def data():
        for split, rows in (("train", r.train_rows), ("val", r.val_rows), ("test", r.test_rows)):
            write_split(out / "data" / split, split, rows, NanoConfig())
        (out / "data" / "DONE").write_text("")

    # Stage 1 trains on the train split (instance masks included); `star eval` reads val / test.
    stage("data", out / "data" / "DONE", data)
    stage("init", out / "init" / "config.json", lambda: build_nano_policy(out / "init", NanoPolicyConfig()))
    stage("warm-up", out / "warmup" / "DONE", lambda: run_warmup_legs(r, out, progress=progress))
    sam = SamTrainConfig(str(out / "sam"), steps=r.sam_steps, batch=r.sam_batch, threads=r.threads,
                         eval_scenes=48 if r.sam_steps >= 100 else 2, device=r.device)
    stage("sam", out / "sam" / "DONE", lambda: (SamTrainer(sam).run(progress=progress),
                                                (out / "sam" / "DONE").write_text("")))
    from ..grpo import train

    model = out / "warmup" / "checkpoint"
    for k in range(1, r.rl_rounds + 1):
        here = _round_dir(out, k)
        if k > 1:  # a fresh LoRA on the previous round's policy: merge that round's adapter into its base
            stage(f"round {k} base (merge round {k - 1})", here / "base" / "config.json",
                  lambda: _merge(model, _round_dir(out, k - 1) / "stage2" / "adapter", here / "base"))
            model = here / "base"
        prefix = "" if k == 1 else f"round {k} "
        stage1 = _rl_recipe(r, out, k, 1, model, None)
        stage(f"{prefix}stage 1 (GRPO)", here / "stage1" / "adapter", lambda: train(stage1))
        stage2 = _rl_recipe(r, out, k, 2, model, str(here / "stage1" / "adapter"))
        stage(f"{prefix}stage 2 (REST)", here / "stage2" / "adapter", lambda: train(stage2))
    final_adapter = _round_dir(out, r.rl_rounds) / "stage2" / "adapter"

    def export():
        from engine.errors import ModelFileError
        from export.api import PolicyOptions, SegmenterOptions, make_bundle

        ckpt = out / "sam" / "checkpoint"
        report = make_bundle(out / "bundle", name="nano",
                             policy=PolicyOptions(model, adapter=final_adapter, quant=r.quant, frame="pixels-224",
                                                  prompt_family="star", output_f32=True,
                                                  answer_grammar=r.answer_grammar,
                                                  vote_temperature=r.vote_temperature),
                             segmenter=SegmenterOptions(ckpt / "sam2_nano.pt", ckpt / "sam2_nano.yaml"))
        if report is not None and not report.ok:
            raise ModelFileError("the exported nano bundle failed its verification: "
                                 + "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.ok))

    stage("export", out / "bundle" / "bundle.json", export)
    return out / "bundle"

"""`star-train nano-bench`: seconds per step of every nano recipe stage on each device asked for, run by the
real trainers with the recipe's own settings, and the recipe's time projected from them (steps x s/step).

This is how the recipe's GPU time is measured in a few minutes of a lent GPU instead of a full run: each
stage trains `warm + steps` steps in a scratch folder and the median of the last `steps` is its s/step
(the first steps pay CUDA's start and the allocator's growth). The warm-up runs the shipped warm-up's last
leg (every loss on, the whole world) with and without prefetch workers; the vision step, SAM and the RL
stages follow. RL rows run where TRL puts them (a CUDA GPU whenever torch sees one), so they are measured
once, on that device.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SHIPPED_POLICY = Path(__file__).parent / "checkpoints" / "warmup-3000"  # a trained nano policy in the repo
NEVER = 10 ** 9  # eval / save cadence that never fires mid-bench (the trainers still do both at their last step)


@dataclass
class StageTiming:
    stage: str
    device: str
    workers: int
    s_per_step: float          # median over the timed steps
    s_data: float | None       # of which waiting for the batch (warm-up only)
    recipe_steps: int          # this stage's steps in the full recipe (NanoRecipe defaults)
    projected_h: float         # recipe_steps x s_per_step, hours
    timed_steps: int


def _median_after(log: Path, key: str, warm: int) -> tuple[float, int]:
    values = [r[key] for r in map(json.loads, log.read_text().splitlines()) if key in r][warm:]
    if not values:
        raise RuntimeError(f"{log} holds no timed steps")
    return statistics.median(values), len(values)


def recipe_steps(r) -> dict[str, int]:
    """Each stage's step count in the recipe `r` (NanoRecipe; its defaults are what the shipped bundle used)."""
    return {"warm-up": r.warmup_legs[-1].until, "vision": sum(leg.vision_steps for leg in r.warmup_legs),
            "sam": r.sam_steps, "grpo": r.stage1_steps * r.rl_rounds, "rest": r.stage2_steps * r.rl_rounds}


def _timing(r, stage: str, device: str, workers: int, s: float, timed: int, s_data: float | None = None) -> StageTiming:
    steps = recipe_steps(r)[stage]
    return StageTiming(stage, device, workers, round(s, 4), None if s_data is None else round(s_data, 4), steps,
                       round(steps * s / 3600, 3), timed)


def bench_warmup(r, root: Path, model: Path, device: str, *, steps: int, warm: int, workers: int) -> StageTiming:
    """The recipe's last warm-up leg (every loss on) on the whole world, from `model`."""
    from .recipe import _warmup_config
    from .warmup import Warmup, curriculum_until

    cfg = replace(_warmup_config(r, root, r.warmup_legs[-1]), model_dir=str(model), out_dir=str(root / "warmup"),
                  steps=warm + steps, eval_every=NEVER, save_every=NEVER, curriculum=curriculum_until(0, 0),
                  device=device, workers=workers, decay_from=None)
    Warmup(cfg).run(progress=False)
    s, timed = _median_after(root / "warmup" / "log.jsonl", "s_per_step", warm)
    s_data, _ = _median_after(root / "warmup" / "log.jsonl", "s_data", warm)
    return _timing(r, "warm-up", device, workers, s, timed, s_data)


def bench_vision(r, root: Path, device: str, *, steps: int, warm: int) -> StageTiming:
    """Needs root/warmup (bench_warmup's folder): the vision step trains inside a warm-up folder."""
    from .vision_pretrain import VisionPretrain, VisionPretrainConfig

    cfg = VisionPretrainConfig(str(root / "warmup"), steps=warm + steps, eval_every=NEVER, eval_scenes=8, ramp_steps=1,
                               batch=32 if r.warmup_batch >= 16 else 2, threads=r.threads, device=device)
    VisionPretrain(cfg).run(progress=False)
    s, timed = _median_after(root / "warmup" / "vision-pretrain.jsonl", "s_per_step", warm)
    return _timing(r, "vision", device, 0, s, timed)


def bench_sam(r, root: Path, device: str, *, steps: int, warm: int) -> StageTiming:
    from .segmenter import SamTrainConfig, SamTrainer

    SamTrainer(SamTrainConfig(str(root / "sam"), steps=warm + steps, batch=r.sam_batch, eval_every=NEVER,
                              save_every=NEVER, eval_scenes=2, threads=r.threads, device=device)).run(progress=False)
    s, timed = _median_after(root / "sam" / "log.jsonl", "s_per_step", warm)
    return _timing(r, "sam", device, 0, s, timed)


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.t0)

    return StepTimer()


def bench_rl(r, root: Path, *, steps: int, warm: int) -> list[StageTiming]:
    """GRPO (stage 1) then REST (stage 2, from stage 1's adapter) with the recipe's settings, on the policy
    root/warmup/checkpoint and the SAM root/sam/checkpoint that the other benches left."""
    import torch

    from engine.devices import resolve_torch_device

    from ..grpo import build_trainer
    from .dataset import NanoConfig, write_split
    from .recipe import _rl_recipe

    torch.set_num_threads(r.threads)
    write_split(root / "data" / "train", "train", r.prompts_per_step * (warm + steps), NanoConfig())
    model = root / "warmup" / "checkpoint"
    device = resolve_torch_device("auto")  # where TRL trains
    timings = []
    for stage, name in ((1, "grpo"), (2, "rest")):
        adapter = str(root / "stage1" / "adapter") if stage == 2 else None
        recipe = replace(_rl_recipe(r, root, 1, stage, model, adapter), max_steps=warm + steps, save_steps=NEVER,
                         limit=r.prompts_per_step * (warm + steps))
        trainer = build_trainer(recipe)
        timer = _step_timer()
        trainer.add_callback(timer)
        trainer.train()
        trainer.model.save_pretrained(Path(recipe.output_dir) / "adapter")
        timed = timer.seconds[warm:]
        timings.append(_timing(r, name, device, 0, statistics.median(timed), len(timed)))
    return timings


def run_bench(out: Path, devices: list[str], *, steps: int = 5, warm: int = 2, workers: int = 4, threads: int = 1,
              model: Path = SHIPPED_POLICY, rl: bool = True, recipe=None) -> list[StageTiming]:
    """Every stage on every device, in the recipe's order (each stage trains on what the one before left in
    the device's scratch folder); RL once, on the last device's folder, where TRL puts it. `recipe`: the
    NanoRecipe whose settings and step counts are used (default: the full recipe's)."""
    from engine.devices import resolve_torch_device

    from .recipe import NanoRecipe

    if out.exists() and any(out.iterdir()):  # a trainer would resume there and report another run's steps
        raise ValueError(f"nano-bench needs an empty scratch folder; {out} is not empty")
    r = replace(recipe or NanoRecipe(out=str(out)), threads=threads)
    timings: list[StageTiming] = []
    for device in dict.fromkeys(resolve_torch_device(d) for d in devices):
        if workers:
            timings.append(bench_warmup(r, out / f"{device}-workers", model, device, steps=steps, warm=warm,
                                        workers=workers))
        root = out / device  # the later stages train on what this warm-up leaves
        timings.append(bench_warmup(r, root, model, device, steps=steps, warm=warm, workers=0))
        timings.append(bench_vision(r, root, device, steps=steps, warm=warm))
        timings.append(bench_sam(r, root, device, steps=steps, warm=warm))
    if rl:
        timings += bench_rl(r, root, steps=steps, warm=warm)
    return timings


def projected_totals(timings: list[StageTiming]) -> dict[str, float]:
    """Hours of the full recipe per device: the warm-up at its fastest worker count, the vision step (0 steps
    in the shipped legs), SAM, and the RL stages as measured (on TRL's device)."""
    totals: dict[str, float] = {}
    for device in dict.fromkeys(t.device for t in timings):
        mine = [t for t in timings if t.device == device]
        warmups = [t.projected_h for t in mine if t.stage == "warm-up"]
        other = sum(t.projected_h for t in mine if t.stage in ("vision", "sam"))
        rl = sum(t.projected_h for t in timings if t.stage in ("grpo", "rest"))
        totals[device] = round((min(warmups) if warmups else 0.0) + other + rl, 3)
    return totals


COLUMNS = ["stage", "device", "workers", "s/step", "of which data", "recipe steps", "projected h", "timed steps"]


def report(timings: list[StageTiming], json_path: Path) -> str:
    """Print the table and the projected totals (CPU / GPU ratio when both ran); write them with the machine."""
    import torch

    from engine.bench.report import print_table, write_bench_json

    text = print_table("nano recipe stages (median s per step, the recipe's settings)", COLUMNS,
                       [[t.stage, t.device, t.workers, t.s_per_step, t.s_data, t.recipe_steps, t.projected_h,
                         t.timed_steps] for t in timings])
    totals = projected_totals(timings)
    lines = ["full recipe, projected: " + ", ".join(f"{d} {h:.2f} h" for d, h in totals.items())]
    if "cpu" in totals and "cuda" in totals and totals["cuda"] > 0:
        lines.append(f"cpu / cuda: {totals['cpu'] / totals['cuda']:.1f}x (the RL rows, on TRL's device, in both)")
    print("\n".join(lines), flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    write_bench_json(json_path, {"stages": [asdict(t) for t in timings], "projected_h": totals, "torch_gpu": gpu,
                           "torch": torch.__version__})
    return text + "\n" + "\n".join(lines)

"""`star-train adapt`: a labelled folder and a bundle in, a verified bundle trained on that folder out,
measured before and after on the folder's held-out images.

Stages, each recorded in `<out>.adapt/state.json` when done (Ctrl-C, then the same command, goes on from
where it stopped; the evaluations and GRPO resume inside their stage):
1. plan: the folder's train and held-out splits (`engine.data`, the held-out split by content hash, so it
   stays held out), refused when either is too small to learn from or to measure;
2. base: the policy's Hugging Face weights: the bundle's recorded source when it is on disk, else
   `star-export import` of its GGUF pair with `--like` (the quantization's rounding is kept: what is trained
   is what the bundle computed with);
3. estimate and before: the time each part will take here, from a few timed steps of each
   (`training.adapt_estimate`), then `star eval` of the starting bundle on the held-out images (N = 1, as the
   bundle decodes);
4. warm: a supervised warm start on answers derived from the folder's masks (`training.warm_start`), when
   the starting bundle misses most held-out answers;
5. train: StAR's stage 1 (GRPO with the bundle's own SAM in the loop, StAR's rewards against the folder's
   masks) from the warm start, with a progress bar of the reward and the time left; every weight of a
   small policy (the nano), a LoRA on a real-size one;
6. export: the weights (a LoRA merged) exported at the starting bundle's quantization, frame, prompt family and
   decoding recommendations, with the starting bundle's segmenter (hard-linked), and verified;
7. after: the same evaluation of the new bundle; the new bundle is moved to `--out` with
   `adapt-report.json` and `adapt-report.png` (before / after) beside its manifest, which records them too.
A new bundle that is not better is still written, and said to be not better, plainly.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.errors import StarError
from engine.policy.types import DEFAULT_MAX_NEW_TOKENS

from .adapt_estimate import describe_estimate
from .config_cli import COUNT, bounded_int, setting
from .warm_start import BATCH as WARM_BATCH

MIN_TRAIN = 4          # samples to learn from
MIN_HELD_OUT = 2       # samples to measure on
MIN_GAIN = 0.01        # gIoU: a smaller change on the held-out images is no change
WARM_START_BELOW = 0.35  # gIoU before: under it most answers miss, and the masks themselves teach faster than GRPO
GRPO_LR_ALL = 1e-5  # every weight of the nano after its warm start: 3e-5 for 200 steps lost 0.06 gIoU (experiments.md)
GRPO_LR_LORA = 1e-4
SMALL_POLICY = 100_000_000  # parameters: a policy under it trains every weight (the nano: 3.1 M), above it a LoRA
STAGES = ("plan", "base", "estimate", "before", "warm", "train", "export", "after")


class AdaptError(StarError):
    """What stops an adaptation before it starts: an output that exists, too few usable samples, a bundle
    that cannot be trained here."""


def _mapping(text: str) -> dict:
    from .overrides import parse_overrides

    value = parse_overrides([f"v={text}"])["v"]
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping such as {{queries: labels, holdout: 0.2}}, got {text!r}")
    return value


# The warm start's length when --warm-steps is not given (docs/benchmarks.md, K = 50, 200 and 800): 600 steps
# for a folder of a few hundred queries (more overfits K = 200), and for a larger folder enough steps to show
# each new query 1.5 times (K = 800: 600 steps showed fewer than half of its queries once; 2,400 did better).
WARM_STEPS_MIN = 600
WARM_VIEWS = 1.5


@dataclass
class AdaptSettings:
    """What `star-train adapt` does: every field is one of its options."""
    data: str = setting(MISSING, "the labelled images: labelme:FOLDER (labelme, X-AnyLabeling, star label, the app) "
                                 "or coco:INSTANCES_JSON", metavar="KIND:PATH")
    bundle: str = setting(MISSING, "the bundle to start from (it is never changed)")
    out: str = setting(MISSING, "the new bundle's folder (must not exist)")
    like: str | None = setting(None, "a Hugging Face folder of the policy's architecture (config, tokenizer), to "
                                     "import the bundle's GGUF when its recorded source is not on disk (the shipped "
                                     "nano bundle's is found by itself)")
    data_options: dict = field(default_factory=dict, metadata={
        "help": "the reader's options, e.g. '{queries: labels, flag: done, holdout: 0.2}'", "parse": _mapping,
        "metavar": "YAML", "cli_default": {}})
    steps: int = setting(50, "GRPO steps (0: the warm start alone)", parse=bounded_int(0, 10**9, "a count"))
    prompts_per_step: int = setting(2, "prompts per step", parse=COUNT)
    num_generations: int = setting(4, "rollouts per prompt (GRPO's group)", parse=COUNT)
    max_completion_length: int = setting(256, "tokens per rollout at most", parse=COUNT)
    lr: float | None = setting(None, "GRPO's learning rate (default: 1e-5 when every weight trains, 1e-4 for a LoRA)")
    lora_r: int = setting(16, "LoRA rank (alpha the same) when a LoRA is trained", parse=COUNT)
    weights: str = setting("auto", "what is trained: all (every weight), lora (an adapter on the language model), "
                                   "auto (every weight of a policy under 100 M parameters, a LoRA otherwise)",
                           choices=("auto", "all", "lora"))
    warm_start: str = setting("auto", "a supervised warm start on answers derived from the masks before GRPO: "
                                      "auto (when the starting bundle scores under 0.35 gIoU on the held-out "
                                      "images), always, never", choices=("auto", "always", "never"))
    warm_steps: int | None = setting(None, f"warm-start steps ({WARM_BATCH} rows each); default: {WARM_STEPS_MIN}, or for a "
                                           f"large folder enough to show each training query {WARM_VIEWS:g} times",
                                     parse=COUNT)
    warm_lr: float = setting(2e-4, "learning rate of the warm start")
    replay: str = setting("auto", "rehearsal of the world the policy already knows in the warm start: auto (the "
                                  "shipped nano bundle's own world when adapting it; nothing for other bundles), none",
                          choices=("auto", "none"))
    replay_share: float = setting(0.5, "share of each warm-start batch taken from the rehearsal rows")
    max_new_tokens: int = setting(DEFAULT_MAX_NEW_TOKENS, "tokens per evaluated answer at most", parse=COUNT)
    threads: int | None = setting(None, "CPU threads (default: all cores)", parse=COUNT)
    seed: int = setting(0, "random seed of training and evaluation")


@dataclass
class AdaptReport:
    bundle: str
    before: dict
    after: dict
    better: bool
    train_samples: int
    held_out_samples: int
    steps: int
    base: str                               # where the trained weights came from
    warm_start: bool = False
    weights: str = "lora"                   # what was trained: "all" (every weight) or "lora"
    seconds: dict = field(default_factory=dict)


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".adapt")


class _State:
    def __init__(self, folder: Path):
        self.path = folder / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def done(self, stage: str) -> dict | None:
        return self.data.get(stage)

    def record(self, stage: str, value: dict) -> None:
        from engine.fileio import write_json_atomically

        self.data[stage] = value
        write_json_atomically(self.path, self.data, indent=1)


def _reader(settings: AdaptSettings, split: str):
    from engine.data import open_dataset, parse_data_spec
    from training.grpo_data import annotation_spec

    if annotation_spec(settings.data) is None:
        raise AdaptError(f"--data {settings.data}: adapt trains on labelme:FOLDER or coco:FILE")
    kind, path = parse_data_spec(settings.data)
    try:
        return open_dataset(kind, path, on_error="skip", **{**settings.data_options, "split": split})
    except (OSError, ValueError, TypeError) as exc:
        raise AdaptError(f"--data {settings.data}: {exc}") from None


def plan(settings: AdaptSettings) -> dict:
    """The splits' sizes (refused when too small), by query source, and the files left out by reason."""
    train, held = _reader(settings, "train"), _reader(settings, "held-out")
    n_train, n_held = len(train), len(held)
    skipped = dict(train.skipped + held.skipped)
    if n_train < MIN_TRAIN or n_held < MIN_HELD_OUT:
        raise AdaptError(f"--data {settings.data}: {n_train} training and {n_held} held-out samples usable (need "
                         f"{MIN_TRAIN} and {MIN_HELD_OUT}); label more images" +
                         (f" ({', '.join(f'{n} {why}' for why, n in skipped.items())})" if skipped else ""))
    sources = Counter(s.meta.get("query_source", "?") for s in train)
    return {"train": n_train, "held_out": n_held, "sources": dict(sources), "skipped": skipped}


def _evaluate(bundle: Path, settings: AdaptSettings, out: Path, progress: bool) -> dict:
    from engine.evaluation.report import summarize, write_report
    from engine.evaluation.runlog import RunLog
    from engine.evaluation.runner import EvalSettings, run_eval
    from engine.pipeline import load_reasoner

    reader = _reader(settings, "held-out")
    reasoner = load_reasoner(bundle, threads=settings.threads, max_samples=1, max_new_tokens=settings.max_new_tokens)
    eval_settings = EvalSettings(data=settings.data, data_options={**settings.data_options, "split": "held-out"},
                                 on_error="skip", n=1, seed=settings.seed, max_new_tokens=settings.max_new_tokens,
                                 constrained=reasoner.grammar(None), temperature=1.0, sweep=False)
    try:
        outcome = run_eval(reasoner, reader, out, eval_settings, progress=progress)
    finally:
        reasoner.close()
    if outcome.interrupted:
        raise KeyboardInterrupt
    summary = summarize(outcome.records, RunLog(out).read_settings())
    write_report(summary, out)
    return {"giou": summary["giou"], "ciou": summary["ciou"], "items": summary["items"],
            "groups": summary["groups"].get("query_source", {})}


def hf_weights(bundle_root: Path, like: str | None, target: Path, log: Callable[[str], None]) -> dict:
    """The starting policy's Hugging Face weights: {"path": the folder, "from": where they came from}. The
    recorded source is used in place; a merged adapter or an import is written at `target`."""
    from engine.bundle import read_manifest

    bundle = read_manifest(bundle_root)
    spec = bundle.manifest.policy
    source = spec.source or {}
    model = bundle.root / source["model"] if isinstance(source.get("model"), str) else None
    adapter = bundle.root / source["adapter"] if isinstance(source.get("adapter"), str) else None
    if model is not None and (model / "config.json").is_file() and (adapter is None or adapter.is_dir()):
        if adapter is None:  # used where it lies: a real checkpoint is 15 GB, not worth a copy
            return {"path": str(model), "from": f"the recorded source {model}"}
        from export.lora import merge_adapter

        merge_adapter(model, adapter, target)
        return {"path": str(target), "from": f"the recorded source {model} with its adapter {adapter}"}
    like = like or default_like(bundle_root)
    if like is None:
        raise AdaptError(f"{bundle_root}: the policy's Hugging Face weights are not on disk; give --like HF_FOLDER (a "
                         "folder of the same architecture: its config and tokenizer) to import the bundle's GGUF")
    from export.gguf_import import import_policy

    result = import_policy(bundle.path(spec.model), bundle.path(spec.mmproj), like, target)
    types = ", ".join(f"{n} {t}" for t, n in sorted(result.gguf_types.items()))
    log(f"imported the policy from its GGUF ({types} tensors): training starts from what the bundle computes "
        "with, its quantization's rounding included")
    return {"path": str(target), "from": f"star-export import of {spec.model} ({spec.quant})"}


def default_like(bundle_root: Path) -> str | None:
    """For the shipped nano bundle, the nano policy's own configuration and tokenizer (a warm-up checkpoint
    kept in the source tree); None for any other bundle."""
    from engine.bundle import default_bundle_dir

    nano_like = Path(__file__).resolve().parent / "nano" / "checkpoints" / "warmup-3000"
    if Path(bundle_root).resolve() == default_bundle_dir().resolve() and (nano_like / "config.json").is_file():
        return str(nano_like)
    return None


def _progress_callback(total: int, progress: bool):
    from tqdm import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.bar = tqdm(total=total, desc="adapt: GRPO", unit="step", disable=not progress, dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.n = state.global_step
            self.bar.refresh()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.bar.set_postfix(reward=f"{logs['reward']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return Progress()


def parameter_count(model_dir: Path) -> int:
    """Parameters in a Hugging Face folder's safetensors files, read from their headers."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), "np") as f:
            for name in f.keys():
                total += int(np.prod(f.get_slice(name).get_shape()))
    return total


def every_weight(settings: AdaptSettings, base: Path) -> bool:
    """Whether every weight is trained (else a LoRA): `weights`, or by the policy's size."""
    if settings.weights != "auto":
        return settings.weights == "all"
    return parameter_count(base) < SMALL_POLICY


REPLAY_ROWS = 1500  # the nano world's training rows rehearsed (each drawn at random, with its own trace)


def rehearses(settings: AdaptSettings, bundle_root: Path) -> bool:
    """Whether the warm start rehearses the starting policy's own world (the shipped nano bundle's alone)."""
    return settings.replay != "none" and default_like(bundle_root) is not None


def warm_step_count(settings: AdaptSettings, train_samples: int, rehearsing: bool) -> int:
    """--warm-steps when given; else WARM_STEPS_MIN, or enough steps to show each of `train_samples`
    WARM_VIEWS times with the new rows a step holds (a rehearsing batch gives part of its rows to the old world)."""
    if settings.warm_steps is not None:
        return settings.warm_steps
    new_rows = max(1, WARM_BATCH - round(WARM_BATCH * settings.replay_share)) if rehearsing else WARM_BATCH
    return max(WARM_STEPS_MIN, math.ceil(WARM_VIEWS * train_samples / new_rows))


def rehearsal(settings: AdaptSettings, bundle_root: Path) -> list:
    """Warm-start rows of the world the starting policy knows: for the shipped nano bundle, its own training
    world (generated, with the reasoning traces it was warmed up on); none for another bundle, whose
    training data is not at hand."""
    if not rehearses(settings, bundle_root):
        return []
    from .nano.dataset import make_scene_example
    from .warm_start import replay_rows

    examples = (make_scene_example("train", i) for i in range(REPLAY_ROWS))
    return replay_rows((ex.scene.image, ex.query.text, ex.completion) for ex in examples)


def warm(settings: AdaptSettings, base: Path, bundle_root: Path, out: Path, progress: bool) -> dict:
    """The supervised warm start (`training.warm_start`) on the train split; returns its weights
    ({"kind": "model" or "adapter", "path"})."""
    from tqdm import tqdm

    from engine.bundle import read_manifest

    from .warm_start import warm_start

    spec = read_manifest(bundle_root).manifest.policy
    samples = list(_reader(settings, "train"))
    whole = every_weight(settings, base)
    bar = tqdm(total=settings.warm_steps, desc="adapt: warm start", unit="step", disable=not progress,
               dynamic_ncols=True)

    def step(n: int, loss: float) -> None:
        bar.n = n
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        path = warm_start(base, samples, out, frame=spec.frame, family=spec.prompt_family, steps=settings.warm_steps,
                          lr=settings.warm_lr, lora_r=None if whole else settings.lora_r, seed=settings.seed,
                          replay=rehearsal(settings, bundle_root), replay_share=settings.replay_share, on_step=step)
    finally:
        bar.close()
    return {"kind": "model" if whole else "adapter", "path": str(path)}


def grpo_lr(settings: AdaptSettings, whole: bool) -> float:
    """GRPO's learning rate: the one asked for, else the usual scale for what trains (a LoRA's few weights
    move slower per step than a whole model's)."""
    if settings.lr is not None:
        return settings.lr
    return GRPO_LR_ALL if whole else GRPO_LR_LORA


def train_policy(settings: AdaptSettings, base: Path, bundle_root: Path, out: Path, progress: bool,
                 start: dict | None = None) -> dict:
    """StAR's stage 1 on the folder's train split, from `start` (the warm start's weights) when given, else
    from `base`; returns the trained weights ({"kind": "model" or "adapter", "path"})."""
    from engine.bundle import read_manifest
    from training.grpo import build_trainer, last_checkpoint, save_final

    from .recipe import Recipe

    spec = read_manifest(bundle_root).manifest.policy
    whole = every_weight(settings, base)
    model = start["path"] if start and start["kind"] == "model" else str(base)
    adapter = start["path"] if start and start["kind"] == "adapter" else None
    recipe = Recipe(model=model, data=settings.data, output_dir=str(out), stage=1, prompt_family=spec.prompt_family,
                    frame=spec.frame, segmenter=str(bundle_root), lr=grpo_lr(settings, whole), max_steps=settings.steps,
                    prompts_per_step=settings.prompts_per_step, num_generations=settings.num_generations,
                    per_device_batch=settings.num_generations, max_completion_length=settings.max_completion_length,
                    lora_r=0 if whole else settings.lora_r, lora_alpha=settings.lora_r,
                    save_steps=max(1, settings.steps // 10), report_to=[], seed=settings.seed,
                    data_options={**settings.data_options, "split": "train"}, adapter=adapter)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer = build_trainer(recipe)
    for noisy in (PrinterCallback, ProgressCallback):  # transformers' own bar and log dicts: ours says it shorter
        trainer.remove_callback(noisy)
    trainer.add_callback(_progress_callback(settings.steps, progress))
    trainer.train(resume_from_checkpoint=last_checkpoint(recipe.output_dir))
    return {"kind": "model" if whole else "adapter", "path": str(save_final(trainer, recipe))}


def export_adapted(base: Path, trained: dict, bundle_root: Path, target: Path, log) -> None:
    """The merged policy as a bundle like the starting one (quantization, frame, prompt family, decoding
    recommendations, segmenter), verified."""
    from engine.bundle import read_manifest
    from engine.gguf_reader import file_type_name, read_gguf
    from export.api import PolicyOptions, make_bundle
    from export.lora import merge_adapter
    from export.quant_types import DEFAULT_QUANT, QUANTS

    start = read_manifest(bundle_root)
    spec = start.manifest.policy
    if trained["kind"] == "model":
        merged = Path(trained["path"])
    else:
        merged = target.with_name(target.name + "-merged")
        shutil.rmtree(merged, ignore_errors=True)
        merge_adapter(base, Path(trained["path"]), merged)
    quant = spec.quant if spec.quant in QUANTS else DEFAULT_QUANT
    if quant != spec.quant:
        log(f"the starting bundle's {spec.quant} is not one star-export writes: the new bundle is {quant}")
    mmproj_type = (file_type_name(read_gguf(start.path(spec.mmproj)).metadata.get("general.file_type", 1)) or "F16")
    mmproj_type = mmproj_type.lower() if mmproj_type.lower() in ("f16", "q8_0", "f32") else "f16"
    shutil.rmtree(target, ignore_errors=True)
    report = make_bundle(target, policy=PolicyOptions(merged, quant=quant, mmproj_quant=mmproj_type, frame=spec.frame,
                                                      prompt_family=spec.prompt_family,
                                                      output_f32=(spec.source or {}).get("output") == "f32",
                                                      answer_grammar=spec.answer_grammar,
                                                      vote_temperature=spec.vote_temperature),
                         segmenter_from=bundle_root, link=True, name=target.name, verify=True, log=log)
    if trained["kind"] != "model":
        shutil.rmtree(merged, ignore_errors=True)
    if not report.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.ok)
        raise AdaptError(f"the adapted bundle did not verify ({failed}); it is left in {target}")


def estimate(settings: AdaptSettings, base: Path, bundle_root: Path, counts: dict) -> dict[str, float]:
    """Seconds each part will take on this machine, from a few timed steps of each (`adapt_estimate`); the
    warm start counted unless it is `never`."""
    from engine.bundle import read_manifest

    from .adapt_estimate import seconds_per_eval_item, seconds_per_grpo_step, seconds_per_warm_step

    spec = read_manifest(bundle_root).manifest.policy
    train, held = list(_reader(settings, "train")), list(_reader(settings, "held-out"))
    evaluation = seconds_per_eval_item(bundle_root, held, threads=settings.threads,
                                       max_new_tokens=settings.max_new_tokens, seed=settings.seed) * counts["held_out"]
    whole = every_weight(settings, base)
    warm = 0.0 if settings.warm_start == "never" else settings.warm_steps * seconds_per_warm_step(
        base, train, frame=spec.frame, family=spec.prompt_family, lora_r=None if whole else settings.lora_r)
    grpo = settings.steps * seconds_per_grpo_step(
        base, train, frame=spec.frame, family=spec.prompt_family, prompts_per_step=settings.prompts_per_step,
        num_generations=settings.num_generations, max_completion_length=settings.max_completion_length) \
        if settings.steps else 0.0
    return {"evaluation before": evaluation, "warm start": warm, "GRPO": grpo, "evaluation after": evaluation}


def plot(before: dict, after: dict, path: Path) -> Path:
    """Before / after bars (gIoU, cIoU, and gIoU per query source) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["gIoU", "cIoU"] + [f"gIoU ({k})" for k in sorted(before["groups"])]
    b = [before["giou"], before["ciou"]] + [before["groups"][k]["giou"] for k in sorted(before["groups"])]
    a = [after["giou"], after["ciou"]] + [after["groups"].get(k, {}).get("giou", 0.0) for k in sorted(before["groups"])]
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(names), 3.2))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], b, 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], a, 0.4, label="after")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1)
    ax.set_title(f"held-out images ({before['items']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def adapt(settings: AdaptSettings, *, log: Callable[[str], None] = print, progress: bool = True) -> AdaptReport:
    """Run (or resume) every stage; returns the report. AdaptError before any work for what a user can fix."""
    from engine.bundle import load_bundle, read_manifest, save_manifest

    out, bundle_root = Path(settings.out), Path(settings.bundle)
    if out.exists():
        raise AdaptError(f"--out {out} exists; name a new folder (the starting bundle is never changed)")
    if settings.steps == 0 and settings.warm_start == "never":
        raise AdaptError("--steps 0 with --warm-start never trains nothing")
    start = load_bundle(bundle_root, verify="quick")
    if start.manifest.policy is None or start.manifest.segmenter is None:
        raise AdaptError(f"--bundle {bundle_root}: adapt needs a bundle with a policy and a segmenter")
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    state = _State(work)
    seconds = dict(state.done("seconds") or {})

    def stage(name: str, run: Callable[[], dict]) -> dict:
        done = state.done(name)
        if done is not None:
            log(f"{name}: done before, kept")
            return done
        t0 = time.perf_counter()
        value = run()
        seconds[name] = round(time.perf_counter() - t0, 1)
        state.record(name, value)
        state.record("seconds", seconds)
        return value

    counts = stage("plan", lambda: plan(settings))
    settings = replace(settings, warm_steps=warm_step_count(settings, counts["train"], rehearses(settings, bundle_root)))
    warm_plan = {"auto": f"a warm start of {settings.warm_steps} steps if it scores under {WARM_START_BELOW} gIoU, ",
                 "always": f"a warm start of {settings.warm_steps} steps, ", "never": ""}[settings.warm_start]
    log(f"{counts['train']} training and {counts['held_out']} held-out samples ({counts['sources']}); it will "
        f"measure the starting bundle on the held-out samples, train with {warm_plan}{settings.steps} GRPO steps of "
        f"{settings.prompts_per_step} prompts x {settings.num_generations} rollouts, export, verify and measure again")
    base = stage("base", lambda: hf_weights(bundle_root, settings.like, _fresh(work / "base"), log))
    base_dir = Path(base["path"])
    costs = stage("estimate", lambda: estimate(settings, base_dir, bundle_root, counts))
    log(describe_estimate(costs))
    before = stage("before", lambda: _evaluate(bundle_root, settings, work / "before", progress))
    per_item = seconds.get("before", 0) / max(1, counts["held_out"])
    log(f"before: gIoU {before['giou']:.3f}, cIoU {before['ciou']:.3f} on {before['items']} held-out samples "
        f"({per_item:.1f} s each)")
    wanted = settings.warm_start == "always" or (settings.warm_start == "auto" and before["giou"] < WARM_START_BELOW)
    warmed = stage("warm", lambda: {"weights": warm(settings, base_dir, bundle_root, _fresh(work / "warm"), progress)
                                    if wanted else None})
    if warmed["weights"]:
        log(f"warm start: {settings.warm_steps} supervised steps on answers derived from the masks "
            f"({seconds.get('warm', 0):.0f} s)")
    if settings.steps == 0 and not warmed["weights"]:
        raise AdaptError("--steps 0 with no warm start trains nothing; give GRPO steps or --warm-start always")
    trained = stage("train", lambda: {"weights": train_policy(settings, base_dir, bundle_root, work / "train", progress,
                                                              warmed["weights"]) if settings.steps else warmed["weights"]})
    if settings.steps:
        log(f"GRPO took {seconds.get('train', 0):.0f} s ({seconds.get('train', 0) / settings.steps:.1f} s a step)")
    new_bundle = work / "bundle"
    stage("export", lambda: export_adapted(base_dir, trained["weights"], bundle_root, new_bundle, log) or {})
    after = stage("after", lambda: _evaluate(new_bundle, settings, work / "after", progress))
    better = after["giou"] >= before["giou"] + MIN_GAIN
    report = AdaptReport(str(out), before, after, better, counts["train"], counts["held_out"], settings.steps,
                         base["from"], bool(warmed["weights"]), "all" if every_weight(settings, base_dir) else "lora",
                         seconds)
    (new_bundle / "adapt-report.json").write_text(json.dumps({**asdict(report), "data": settings.data,
                                                              "from_bundle": start.manifest.name}, indent=1))
    plot(before, after, new_bundle / "adapt-report.png")
    manifest = read_manifest(new_bundle).manifest
    manifest.policy.source = {**manifest.policy.source, "adapted": {
        "from_bundle": start.manifest.name, "data": Path(settings.data.partition(":")[2]).name,
        "before_giou": before["giou"], "after_giou": after["giou"], "held_out": counts["held_out"],
        "steps": settings.steps, "warm_start_steps": settings.warm_steps if warmed["weights"] else 0}}
    save_manifest(new_bundle, manifest)
    new_bundle.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return report


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def describe(report: AdaptReport) -> str:
    """Before / after, and what to make of it, for the terminal."""
    b, a = report.before, report.after
    how = ["a supervised warm start"] if report.warm_start else []
    how += [f"{report.steps} GRPO steps"] if report.steps else []
    what = "every weight" if report.weights == "all" else "a LoRA"
    lines = [f"held-out samples: {report.held_out_samples}; {what} trained on {report.train_samples} with "
             f"{' then '.join(how)} (weights from {report.base})",
             f"gIoU {b['giou']:.3f} -> {a['giou']:.3f}   cIoU {b['ciou']:.3f} -> {a['ciou']:.3f}"]
    for source in sorted(b["groups"]):
        lines.append(f"  {source}: gIoU {b['groups'][source]['giou']:.3f} -> "
                     f"{a['groups'].get(source, {}).get('giou', 0.0):.3f}")
    if report.better:
        lines.append(f"the adapted bundle is better on the held-out images: {report.bundle}")
    else:
        lines.append(f"the adapted bundle is NOT better on the held-out images (a gIoU gain under {MIN_GAIN} is no "
                     f"gain; written to {report.bundle} for inspection): keep the starting bundle, or label more "
                     "images and train longer")
    return "\n".join(lines)

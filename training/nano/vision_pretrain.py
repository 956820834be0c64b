"""Vision pre-training inside a warm-up folder: the nano policy's vision tower (and the warm-up's vision
read-out) trained alone on the image tokens' cell targets (objectness, kind, colour, box edges), with a
share of scenes made of geometric shapes only, then saved back into the folder at the same step so that
`star-train nano-warmup` continues from it.

Why: after 5,600 warm-up steps the tower still told a square from a hexagon badly (kind right on 67 % of
val tokens; square 32 %, triangle 25 %, hexagon 7 %), because in the world's mixed scenes colour gives most
kinds away (apples are red) but not the shapes, which come in any colour. A vision-only step of 32 scenes
took 1.1 s here vs 4-8 s for a warm-up step of 16 (no language model pass), so the tower sees many more
shapes per CPU hour.
Measured (docs/experiments.md, "Vision pre-training before a warm-up"): 1,200 steps lift val kind accuracy 0.67 -> 0.79; the warm-up
continued 400 steps from there scores +1.8 +- 0.7 test gIoU over the warm-up it started from; the control
(the same 400 warm-up steps without vision pre-training) +0.3, so the vision step's own share is +1.4 +- 0.6.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np

from engine.argtypes import positive_float
from engine.devices import DEVICES

from ..config_cli import COUNT, setting
from .aux_targets import cell_targets
from .shapes import KINDS
from .world import make_scene

SHAPE_KINDS = tuple(name for name, kind in KINDS.items() if kind.is_shape)


@dataclass
class VisionPretrainConfig:
    """The vision pre-training's settings; `star-train nano-vision`'s options are generated from these fields."""
    warmup_dir: str = setting(MISSING, "a warm-up folder (checkpoint/ with state.pt); its checkpoint is replaced",
                              flag="--warmup", metavar="DIR")
    steps: int = setting(1200, "training steps", parse=COUNT)
    batch: int = setting(32, "scenes per step", parse=COUNT)
    lr: float = setting(1e-3, "learning rate after the ramp", parse=positive_float)
    final_lr: float = setting(1e-5, "a cosine from lr (after a linear ramp) reaches this at the last step", parse=positive_float)
    ramp_steps: int = setting(50, "steps of the linear ramp", parse=COUNT)
    shapes_share: float = setting(0.5, "share of scenes holding geometric shapes only")
    eval_every: int = setting(100, "steps between validations", parse=COUNT)
    eval_scenes: int = setting(96, "validation scenes")
    seed: int = setting(13, "the training scenes (a second run wants another seed, or it sees the same scenes)")
    threads: int = setting(1, "torch threads", parse=COUNT)
    device: str = setting("auto", "where to train: auto takes a CUDA GPU when torch sees one", choices=DEVICES)


def vision_lr(config: VisionPretrainConfig, step: int) -> float:
    if step < config.ramp_steps:
        return config.lr * (step + 1) / config.ramp_steps
    t = (step - config.ramp_steps) / max(1, config.steps - config.ramp_steps)
    return config.final_lr + (config.lr - config.final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def _warmup_config(folder: Path, threads: int, device: str):
    """The folder's own warm-up settings (so the saved checkpoint keeps them), from checkpoint/warmup.json."""
    from .warmup_config import Phase, WarmupConfig

    saved = json.loads((folder / "checkpoint" / "warmup.json").read_text())
    saved["curriculum"] = tuple(Phase(p["steps"], tuple(p["types"]), p["max_objects"]) for p in saved["curriculum"])
    for key in ("attn_heads", "name_heads"):
        saved[key] = tuple(tuple(pair) for pair in saved.get(key, ()))
    saved["out_dir"], saved["threads"], saved["device"] = str(folder), threads, device
    return WarmupConfig(**{k: v for k, v in saved.items() if k in WarmupConfig.__dataclass_fields__})


class VisionPretrain:
    def __init__(self, config: VisionPretrainConfig):
        import torch

        from engine.errors import ModelFileError

        from .warmup import Warmup

        folder = Path(config.warmup_dir)
        if not (folder / "checkpoint" / "state.pt").is_file() or not (folder / "checkpoint" / "warmup.json").is_file():
            raise ModelFileError(f"{folder} holds no warm-up checkpoint (checkpoint/state.pt and warmup.json, "
                                 "written by star-train nano-warmup)")
        self.config = config
        self.warmup = Warmup(_warmup_config(folder, config.threads, config.device))
        model = self.warmup.model
        self.params = list(model.model.visual.parameters()) + list(self.warmup.aux.vision.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=0.01)
        size = self.warmup.frame_size  # scenes at the frame's size, as the warm-up draws them
        self.val = [make_scene(np.random.default_rng(10_000 + i), size) for i in range(config.eval_scenes)]
        self.log_path = folder / "vision-pretrain.jsonl"

    def _tokens(self, scenes):
        """The vision tower's output for every image token of these scenes, and their cell targets."""
        import torch

        w = self.warmup
        enc = w.processor(images=[s.image for s in scenes], return_tensors="pt")
        cells = [cell_targets(s, w.frame_size) for s in scenes]
        targets = {n: torch.from_numpy(np.concatenate([getattr(c, n) for c in cells])).to(w.device)
                   for n in ("objectness", "kind", "colour", "ltrb")}
        out = w.model.model.get_image_features(enc["pixel_values"].to(w.device), enc["image_grid_thw"].to(w.device))
        return torch.cat(list(getattr(out, "pooler_output", out)), 0), targets

    def loss(self, scenes):
        """The warm-up's own vision losses (AuxHeads.vision_losses, unweighted) on these scenes."""
        tokens, targets = self._tokens(scenes)
        return sum(self.warmup.aux.vision_losses(tokens, targets).values())

    def kind_accuracy(self) -> dict:
        """Share of the val scenes' occupied image tokens whose kind the read-out gets right, overall and per kind."""
        import torch

        from .aux_targets import KIND_IDS

        right, total = np.zeros(len(KIND_IDS)), np.zeros(len(KIND_IDS))
        with torch.no_grad():
            for s in range(0, len(self.val), 16):
                tokens, t = self._tokens(self.val[s:s + 16])
                guess = self.warmup.aux.vision(tokens)[:, 1:1 + len(KIND_IDS)].argmax(-1).cpu().numpy()
                for g, p in zip(t["kind"].cpu().numpy(), guess):
                    if g >= 0:
                        total[g] += 1
                        right[g] += g == p
        per = {name: round(float(right[i] / total[i]), 3) for name, i in KIND_IDS.items() if total[i]}
        return {"kind_acc": round(float(right.sum() / max(1, total.sum())), 4), "per_kind": per}

    def run(self, *, progress: bool = True) -> Path:
        import torch

        from .steps import append_jsonl

        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        start = self.kind_accuracy()
        self.log_path.unlink(missing_ok=True)  # the stage saves only at its end: a re-run starts it over
        append_jsonl(self.log_path, {"step": 0, **start})
        if progress:
            print(json.dumps({"step": 0, **start}), flush=True)
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            for group in self.optimizer.param_groups:
                group["lr"] = vision_lr(cfg, step)
            scenes = [make_scene(rng, self.warmup.frame_size,
                                 kinds=list(SHAPE_KINDS) if rng.random() < cfg.shapes_share else None)
                      for _ in range(cfg.batch)]
            loss = self.loss(scenes)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            record = {"step": step + 1, "loss": loss.item(), "lr": vision_lr(cfg, step),
                      "s_per_step": time.perf_counter() - t0}
            t0 = time.perf_counter()
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                record |= self.kind_accuracy()
                if progress:
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}),
                          flush=True)
            append_jsonl(self.log_path, record)
        self.warmup.save()  # same warm-up step, settings and optimiser; the new tower and read-out
        return Path(cfg.warmup_dir) / "checkpoint"

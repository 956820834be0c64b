"""The nano bundle's segmenter: SAM 2.1 (Hiera + FPN + SAM heads, shrunk) trained on the world's masks.

Prompts are what the policy will give at inference: a box (jittered, as a policy's box is never exact)
and a click inside the object, both together most of the time, sometimes alone. The loss: BCE + dice on
every one of the three multimask outputs (SAM's best-of-three and its 20 x focal are options; from
scratch both stalled, see SamTrainConfig), plus MSE of the IoU head against the true IoU of all three
(the engine picks a mask by that head, and voting averages it). The decoder's cross-attentions start as
positional-encoding matchers (pe_attention_init).

The network code is the engine's own (`sam2_graph.build_graphs`): what trains is what the PyTorch and
ONNX backends run. Checkpoints are Meta's format ({"model": state_dict}) next to their config YAML, so
`star-export sam2` and `load_torch_segmenter` read them like any SAM 2 checkpoint; the optimiser state
lives in a separate `state.pt`. Everything here loads with `weights_only=True`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import zlib
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path

import numpy as np

from engine.argtypes import fraction, positive_float
from engine.devices import DEVICES

from ..config_cli import COUNT, setting
from ..rewards import gt_targets_from_masks
from .steps import finish_step, fresh_dir, replace_dir, trim_log
from .world import make_scene

SCENE_SIZE = 224
STREAMS = {"train": zlib.crc32(b"nano-sam/train"), "val": zlib.crc32(b"nano-sam/val")}


@dataclass
class SamTrainConfig:
    """The nano segmenter's settings; `star-train nano-sam`'s options are generated from these fields."""
    out_dir: str = setting(MISSING, "the run folder (a re-run resumes from OUT/checkpoint)", flag="--out")
    steps: int = setting(3000, "training steps", parse=COUNT)
    batch: int = setting(8, "scenes per step (every object of each is a prompt)", parse=COUNT)
    lr: float = setting(1e-3, "learning rate after the ramp", parse=positive_float)
    warmup_steps: int = setting(100, "steps of the linear learning-rate ramp", parse=COUNT)
    weight_decay: float = setting(0.01, "AdamW weight decay")
    grad_clip: float = setting(1.0, "gradient norm clip")
    image_size: int = setting(256, "SAM's input (the world's 224 px scenes are resized to it)")
    embed_dim: int = setting(24, "Hiera width at stage 1")
    d_model: int = setting(96, "FPN / prompt encoder / mask decoder width")
    box_jitter: float = setting(0.1, "std of each box edge's shift, as a fraction of the box side")
    loss: str = setting("bce+dice", "'bce+dice' (from scratch) or 'sam' (SAM's 20 x focal + dice, whose focal term "
                        "let a fresh model settle on empty masks for small objects)", choices=("bce+dice", "sam"))
    eval_every: int = setting(100, "steps between validations", parse=COUNT)
    eval_scenes: int = setting(48, "validation scenes")
    save_every: int = setting(200, "steps between checkpoints", parse=COUNT)
    threads: int = setting(1, "torch threads", parse=COUNT)
    seed: int = setting(0, "initialization and prompt sampling (the scenes too)")
    device: str = setting("auto", "where to train: auto takes a CUDA GPU when torch sees one", choices=DEVICES)
    pe_init: bool = setting(True, "start the decoder's cross-attentions as matchers of the positional encoding "
                            "(from scratch the decoder otherwise learns one prompt-independent mask and may stay there)")
    pe_gain: float = setting(3.0, "gain of that initialization")
    wide_share: float = setting(0.0, "share of the training scenes from the wider world (any background, size and "
                                "aspect; training/nano/wide.py); validation then also reports wide scenes",
                                parse=fraction)
    init: str = setting("", "start from this SAM 2 checkpoint (Meta's format, with its config beside it as the same "
                        "name .yaml, e.g. `star-export import-sam`'s sam2.pt) instead of a random one; the size "
                        "settings then come from that config")
    mask_outputs: str = setting("all", "train the best of SAM's three masks ('best', SAM's loss) or all three "
                                "('all': the world's prompts are never ambiguous)", choices=("best", "all"))


def pe_attention_init(model, gain: float = 3.0) -> int:
    """Initialise every token<->image cross-attention of SAM's two-way transformer so that its query and
    key projections keep the same sin/cos pairs of the random-Fourier positional encoding (SAM adds that
    encoding to both sides): head h's score then sums cos(2 pi b_f . (p - q)) over its frequencies f, a
    kernel peaked where an image position and a prompt coincide. Values, outputs and MLPs keep their
    random init. Returns how many attention modules were set."""
    import torch

    transformer = model.sam_mask_decoder.transformer
    modules = [m for layer in transformer.layers for m in (layer.cross_attn_token_to_image, layer.cross_attn_image_to_token)]
    modules.append(transformer.final_attn_token_to_image)
    d = transformer.embedding_dim  # PE layout: [sin of d/2 frequencies, cos of the same]
    for attn in modules:
        inner, heads = attn.q_proj.out_features, attn.num_heads
        per_head = inner // heads // 2  # frequencies per head (sin + cos each)
        w = torch.zeros(inner, d)
        f = 0
        for h in range(heads):
            base = h * 2 * per_head
            for j in range(per_head):
                w[base + j, f] = gain             # sin of frequency f
                w[base + per_head + j, d // 2 + f] = gain  # its cos
                f = (f + 1) % (d // 2)
        with torch.no_grad():
            for proj in (attn.q_proj, attn.k_proj):
                proj.weight.copy_(w)
                proj.bias.zero_()
    return len(modules)


@dataclass
class Prompt:
    box: np.ndarray | None    # [4] x1, y1, x2, y2 (pixels)
    point: np.ndarray | None  # [2] x, y


def jittered_box(box, rng: np.random.Generator, jitter: float, size: tuple[int, int]) -> np.ndarray:
    """`box` with each edge shifted by N(0, jitter x the box side), kept inside an image of size (width, height)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    shift = rng.normal(0, jitter, 4) * np.array([w, h, w, h])
    out = np.array([x1, y1, x2, y2]) + shift
    out = np.clip(out, 0, np.array(size * 2, np.float64) - 1)
    return np.array([min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3])], np.float32)


def sample_prompt(mask: np.ndarray, target: dict, rng: np.random.Generator, jitter: float) -> Prompt:
    """Box + click (70 %), box only (15 %) or click only (15 %); the click is the object's most inner
    pixel (what the reward's GT uses) or, half the time, any pixel of it."""
    u = rng.random()
    box = jittered_box(target["bbox_2d"], rng, jitter, mask.shape[::-1]) if u < 0.85 else None
    point = None
    if u < 0.7 or u >= 0.85:
        if rng.random() < 0.5:
            point = np.array(target["point_2d"], np.float32)
        else:
            ys, xs = np.nonzero(mask)
            i = int(rng.integers(len(xs)))
            point = np.array([xs[i], ys[i]], np.float32)
    return Prompt(box, point)


def prompt_tensors(prompts: list[Prompt], orig_hw: tuple[int, int], image_size: int):
    """Prompts of mixed kinds -> one decoder batch: padded with SAM's "not a point" label (-1)."""
    from engine.segment.transforms import prompts_to_model

    rows = [prompts_to_model(None if p.box is None else p.box[None], None if p.point is None else p.point[None],
                             orig_hw, image_size) for p in prompts]
    width = max(c.shape[1] for c, _ in rows)
    coords = np.zeros((len(rows), width, 2), np.float32)
    labels = np.full((len(rows), width), -1, np.int32)
    for i, (c, lab) in enumerate(rows):
        coords[i, :c.shape[1]] = c[0]
        labels[i, :lab.shape[1]] = lab[0]
    return coords, labels


def sam_losses(low_logits, iou_pred, gt, kind: str = "bce+dice", outputs: str = "best"):
    """low_logits [K, 3, h, w], iou_pred [K, 3], gt bool [K, H, W] -> dict of scalar tensors."""
    import torch
    import torch.nn.functional as F

    up = F.interpolate(low_logits, gt.shape[-2:], mode="bilinear", align_corners=False)
    target = gt[:, None].float().expand_as(up)
    prob = up.sigmoid()
    ce = F.binary_cross_entropy_with_logits(up, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = ((0.25 * target + 0.75 * (1 - target)) * ce * (1 - p_t) ** 2).flatten(2).mean(-1)
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    if kind == "sam":
        per_output = 20 * focal + dice                   # [K, 3]
    elif kind == "bce+dice":
        per_output = ce.flatten(2).mean(-1) + dice
    else:
        raise ValueError(f"unknown SAM loss {kind!r}; use 'sam' or 'bce+dice'")
    best = per_output.argmin(dim=1)
    rows = torch.arange(len(best), device=best.device)
    if outputs not in ("best", "all"):
        raise ValueError(f"mask_outputs is 'best' or 'all', not {outputs!r}")
    mask_loss = per_output[rows, best].mean() if outputs == "best" else per_output.mean()
    with torch.no_grad():
        hard = up > 0
        true_iou = (hard & (target > 0)).flatten(2).sum(-1) / (hard | (target > 0)).flatten(2).sum(-1).clamp(min=1)
    return {"mask": mask_loss, "iou_head": F.mse_loss(iou_pred, true_iou),
            "train_iou": true_iou[rows, best].mean()}


def _init_config(checkpoint: Path) -> Path:
    """The config beside an --init checkpoint (same name, .yaml)."""
    from engine.errors import ModelFileError

    if not checkpoint.is_file():
        raise ModelFileError(f"--init {checkpoint}: no such checkpoint")
    config = checkpoint.with_suffix(".yaml")
    if not config.is_file():
        raise ModelFileError(f"--init {checkpoint}: its config {config.name} is not beside it")
    return config


class SamTrainer:
    def __init__(self, config: SamTrainConfig):
        import torch

        from engine.devices import resolve_torch_device
        from engine.segment.sam2_graph import build_graphs
        from engine.segment.shrunk import write_shrunk_config
        from engine.segment.torch_backend import build_model

        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.config = config
        self.device = resolve_torch_device(config.device)
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        latest = self.out / "checkpoint"
        resume = (latest / "state.pt").is_file()
        self.config_path = self.out / "sam2_nano.yaml"
        start = latest / "sam2_nano.pt" if resume else None
        if not resume and config.init:
            start = Path(config.init)
            shutil.copy(_init_config(start), self.config_path)
        elif not resume:
            write_shrunk_config(self.config_path, image_size=config.image_size, embed_dim=config.embed_dim,
                                d_model=config.d_model)
        self.model = build_model(self.config_path, start, "cpu").train()
        self.image_size = int(self.model.image_size)  # with --init, the checkpoint's input size
        if config.pe_init and start is None:
            pe_attention_init(self.model, config.pe_gain)
        self.model.to(self.device)
        self.encoder, self.decoder = build_graphs(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        if resume:
            state = torch.load(latest / "state.pt", weights_only=True, map_location="cpu")  # moved to the params' device
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
        self.log_path = self.out / "log.jsonl"
        trim_log(self.log_path, self.step)

    def scene(self, stream: str, index: int, *, wide: bool | None = None):
        """Scene `index` of a stream: classic (224 px square), or with probability wide_share (or when `wide`)
        one of the wider world at its own size and aspect."""
        rng = np.random.default_rng([STREAMS[stream], self.config.seed, index])
        if wide is None:
            wide = self.config.wide_share > 0 and rng.random() < self.config.wide_share
        if not wide:
            return make_scene(rng, SCENE_SIZE), rng
        from .wide import SPECS, wide_scene

        return wide_scene(rng, SPECS["wide"]), rng

    def scene_loss(self, scene, rng) -> dict:
        import torch

        from engine.segment.transforms import preprocess

        masks = [o.mask for o in scene.objects]
        prompts = [sample_prompt(m, t, rng, self.config.box_jitter) for m, t in zip(masks, gt_targets_from_masks(masks))]
        coords, labels = prompt_tensors(prompts, scene.image.shape[:2], self.image_size)
        def on(array):
            return torch.from_numpy(array).to(self.device)

        feats = self.encoder(on(preprocess(scene.image, self.image_size)))
        low, iou = self.decoder(*feats, on(coords), on(labels))
        return sam_losses(low, iou, on(np.stack(masks)), self.config.loss, self.config.mask_outputs)

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.config.warmup_steps)
        return self.config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.config.steps)))

    def evaluate(self) -> dict:
        """Mask IoU through the engine's own inference path (numpy pre/post-processing, best-of-3 by
        the IoU head) on fixed val scenes: exact box + click, and a jittered box alone; classic scenes, and
        wide ones too when the run trains on them."""
        from engine.segment.torch_backend import TorchSegmenter

        self.model.eval()
        seg = TorchSegmenter(self.model, self.device, bf16=False)  # fp32 everywhere: val numbers comparable across devices
        out = {}
        for prefix, wide in (("val", False),) + ((("val_wide", True),) if self.config.wide_share > 0 else ()):
            exact, jittered = [], []
            for i in range(self.config.eval_scenes):
                scene, rng = self.scene("val", i, wide=wide)
                masks = np.stack([o.mask for o in scene.objects])
                targets = gt_targets_from_masks(list(masks))
                emb = seg.embed(scene.image)
                boxes = np.array([t["bbox_2d"] for t in targets], np.float32)
                points = np.array([t["point_2d"] for t in targets], np.float32)
                size = scene.image.shape[1::-1]  # (width, height)
                for store, kwargs in ((exact, {"boxes": boxes, "points": points}),
                                      (jittered, {"boxes": np.stack([jittered_box(b, rng, self.config.box_jitter, size)
                                                                     for b in boxes])})):
                    pred = seg.segment(emb, **kwargs).masks
                    inter = (pred & masks).sum((1, 2))
                    union = (pred | masks).sum((1, 2))
                    store.extend((inter / np.maximum(union, 1)).tolist())
            out |= {f"{prefix}_miou_box_point": float(np.mean(exact)), f"{prefix}_miou_jittered_box": float(np.mean(jittered))}
        self.model.train()
        return out

    def save(self) -> Path:
        import torch

        tmp = fresh_dir(self.out / "checkpoint.tmp")
        torch.save({"model": self.model.state_dict()}, tmp / "sam2_nano.pt")
        shutil.copy(self.config_path, tmp / "sam2_nano.yaml")
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step}, tmp / "state.pt")
        (tmp / "train.json").write_text(json.dumps(asdict(self.config), indent=2))
        return replace_dir(tmp, self.out / "checkpoint")

    def run(self, *, progress: bool = True) -> Path:
        import torch

        cfg = self.config
        t0 = time.perf_counter()
        while self.step < cfg.steps:
            parts = [self.scene_loss(*self.scene("train", self.step * cfg.batch + i)) for i in range(cfg.batch)]
            losses = {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]}
            total = losses["mask"] + losses["iou_head"]
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            record = {"step": self.step, "loss": total.item(), "grad_norm": norm.item(),
                      "s_per_step": time.perf_counter() - t0, **{k: v.item() for k, v in losses.items()}}
            t0 = time.perf_counter()
            finish_step(self, record, progress=progress)
        return self.out / "checkpoint"

"""`star-train nano-sam-video`: SAM 2's memory trained on the nano world in motion, so a nano SAM tracks.

What a video needs and an image never trains is learnt here: the memory encoder, the memory attention, the
object pointers and the no-object embeddings. The image path (Hiera, FPN, the no-memory embedding that the
image graphs add to the features, prompt encoder, mask decoder) stays as the given checkpoint has it (the
shipped nano SAM, brought back from its ONNX graphs by `star-export import-sam`), unless `--train
memory+decoder`: then the mask decoder learns too, to answer from memory on frames nobody prompted (the
image graphs' decoder only ever had a prompt), while a distillation loss on the prompted frame holds its
prompted answers (all three masks and their IoU scores, for a box and for a point) to the starting decoder's.
Each step is one clip (`training/nano/clips.py`) of `frames` frames: the first frame prompted with a
target's box (as `star track` prompts the policy's answer), every later frame segmented from memory alone,
as sam2's own training unrolls it (`SAM2Base._track_step` with the memory encoder run on each output). The
loss is SAM 2's: 20 x focal + dice on the masks where the object is in view, and a binary cross-entropy on
the object score (is the object in this frame?).
"""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path

import numpy as np

from ..config_cli import COUNT, setting

# no_mem_embed is not here: SAM 2's image predictor adds it to every image's features, so the image graphs hold it.
MEMORY_MODULES = ("memory_attention", "memory_encoder", "obj_ptr_proj", "obj_ptr_tpos_proj", "maskmem_tpos_enc",
                  "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial", "mask_downsample",
                  "sam_mask_decoder.pred_obj_score_head")
DECODER = "sam_mask_decoder"
# The object score head is no part of the image graphs, so an imported SAM has it at initialization, where it
# scores every object absent and SAM 2 then paints every mask out (-1024): it starts saying "present" instead.
PRESENT_BIAS = 5.0
IMAGE_MEAN = np.array((0.485, 0.456, 0.406), np.float32)
IMAGE_STD = np.array((0.229, 0.224, 0.225), np.float32)


@dataclass
class SamVideoConfig:
    """What `star-train nano-sam-video` does: every field is one of its options."""
    sam: str = setting(MISSING, "the SAM 2 to start from, CONFIG.yaml:CHECKPOINT.pt (e.g. star-export import-sam of "
                             "the shipped bundle's graphs)", metavar="CONFIG:CHECKPOINT")
    out: str = setting(MISSING, "the run folder: sam2.pt (every weight, the memory trained) and sam2.yaml")
    steps: int = setting(1000, "clips to train on (one a step)", parse=COUNT)
    frames: int = setting(8, "frames per training clip", parse=COUNT)
    lr: float = setting(1e-4, "AdamW learning rate of the memory modules")
    seed: int = setting(0, "random seed (training clips are drawn from index 1,000,000 x (seed + 1) on, never the test split's)")
    log_every: int = setting(50, "steps between log lines", parse=COUNT)
    init: str = setting("as-is", "how the memory starts: as the checkpoint has it, or (for a SAM imported from image "
                        "graphs, whose memory was never trained) as a pass-through of the image features",
                        choices=("as-is", "pass-through"))
    train: str = setting("memory", "what learns: the memory modules alone (the image path stays, so the result can go "
                         "beside a bundle's graphs with star-export sam2 --keep-graphs), or the mask decoder too (its "
                         "prompted answers held to the start's; the bundle's image graphs are then exported again)",
                         choices=("memory", "memory+decoder"))
    decoder_lr: float = setting(1e-4, "AdamW learning rate of the mask decoder (with --train memory+decoder)")


def _frames_tensor(frames: list[np.ndarray], size: int):
    import torch
    from PIL import Image

    out = []
    for rgb in frames:
        resized = np.asarray(Image.fromarray(rgb).resize((size, size)), np.float32) / 255.0
        out.append((resized - IMAGE_MEAN) / IMAGE_STD)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def mask_prompt(mask: np.ndarray, size: int, *, box: bool):
    """SAM 2's point prompt for a target mask, in the model's input pixels (the engine's own conversion,
    `prompts_to_model`): its tight box (corners labelled 2 and 3), as `star track` prompts an answer, or one
    click (label 1) at the point deepest inside it."""
    import torch

    from engine.mask_prompts import box_and_deep_point
    from engine.segment.transforms import prompts_to_model

    corners, point = box_and_deep_point(mask)
    coords, labels = prompts_to_model(np.array([corners]) if box else None, None if box else np.array([point]),
                                      mask.shape, size)
    return {"point_coords": torch.from_numpy(coords), "point_labels": torch.from_numpy(labels)}


def pass_through_init(model, images) -> float:
    """Start the memory attention as a pass-through: each layer's attention and MLP output projections at zero
    (a layer adds nothing yet, while its gradient is not zero) and the final LayerNorm's per-channel scale and
    shift fitted (least squares over `images`' features) so that what it gives the mask decoder is what the
    decoder was trained on, the image features plus the no-memory embedding. A memory attention at random
    values gives the decoder features it has never seen, so its first answers on unprompted frames are not
    masks of the image at all. Returns the fit's R^2 (1 = the decoder sees its own features exactly)."""
    import torch

    attention = model.memory_attention
    with torch.no_grad():
        for layer in attention.layers:
            for projection in (layer.self_attn.out_proj, layer.cross_attn_image.out_proj, layer.linear2):
                projection.weight.zero_()
                projection.bias.zero_()
        inputs, targets = [], []
        for t in range(len(images)):
            _, feats, pos, _ = model._prepare_backbone_features(model.forward_image(images[t:t + 1]))
            x = feats[-1] + (0.1 * pos[-1] if attention.pos_enc_at_input else 0)
            inputs.append(torch.nn.functional.layer_norm(x, x.shape[-1:]).reshape(-1, x.shape[-1]))
            targets.append((feats[-1] + model.no_mem_embed).reshape(-1, x.shape[-1]))
        x, y = torch.cat(inputs), torch.cat(targets)
        dx, dy = x - x.mean(0), y - y.mean(0)
        scale = (dx * dy).mean(0) / dx.pow(2).mean(0).clamp_min(1e-8)
        shift = y.mean(0) - scale * x.mean(0)
        attention.norm.weight.copy_(scale)
        attention.norm.bias.copy_(shift)
        residual = (y - (x * scale + shift)).pow(2).sum()
        return float(1 - residual / dy.pow(2).sum())


def prompted_distillation(model, teacher, pix_feat, high_res_features, prompts):
    """How far the mask decoder's prompted answers (all three masks' logits and their IoU scores) have moved
    from `teacher`'s (the starting decoder) on the same features: the mean squared difference per prompt."""
    import torch
    import torch.nn.functional as F

    student_decoder, loss = model.sam_mask_decoder, torch.zeros(())
    for prompt in prompts:
        student = model._forward_sam_heads(pix_feat, prompt, None, high_res_features, multimask_output=True)
        with torch.no_grad():
            model.sam_mask_decoder = teacher
            try:
                reference = model._forward_sam_heads(pix_feat, prompt, None, high_res_features, multimask_output=True)
            finally:
                model.sam_mask_decoder = student_decoder
        # Clamped as the object score's paint-out (-1024) would otherwise swamp every other term.
        loss = loss + F.mse_loss(student[0].clamp(-32, 32), reference[0].clamp(-32, 32)) + F.mse_loss(student[2], reference[2])
    return loss / len(prompts)


def clip_loss(model, frames, masks: list[np.ndarray], teacher=None):
    """Unroll SAM 2 over a clip (frame 0 prompted with the target's box, the rest from memory) and return the
    loss: per frame 20 x focal + dice on the high-resolution mask where the target is in view, and the
    object score's binary cross-entropy on every frame; with a `teacher` decoder, the prompted frame's
    distillation to it as well."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    size = model.image_size
    images = _frames_tensor(frames, size)
    with torch.no_grad():  # the image encoder is not trained: its features once per frame
        features = [model._prepare_backbone_features(model.forward_image(images[t:t + 1])) for t in range(len(frames))]
    output = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    loss = torch.zeros(())
    for t, (_, vision_feats, vision_pos, feat_sizes) in enumerate(features):
        prompt = mask_prompt(masks[0], size, box=True) if t == 0 else None
        current, sam_outputs, high_res_features, pix_feat = model._track_step(
            t, t == 0, vision_feats, vision_pos, feat_sizes, prompt, None, output, len(frames), False, None)
        _, _, _, low_res, high_res, obj_ptr, object_score = sam_outputs
        current.update(pred_masks=low_res, pred_masks_high_res=high_res, obj_ptr=obj_ptr)
        model._encode_memory_in_output(vision_feats, feat_sizes, prompt, True, high_res, object_score, current)
        output["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = current
        if t == 0 and teacher is not None:
            loss = loss + prompted_distillation(model, teacher, pix_feat, high_res_features,
                                                [prompt, mask_prompt(masks[0], size, box=False)])
        resized = Image.fromarray(masks[t].astype(np.uint8) * 255).resize((size, size))
        target = torch.from_numpy(np.asarray(resized) > 127).float()[None, None]
        present = torch.tensor([[1.0 if masks[t].any() else 0.0]])
        loss = loss + F.binary_cross_entropy_with_logits(object_score, present)
        if t > 0 and masks[t].any():
            logits = high_res
            p = torch.sigmoid(logits)
            ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            pt = p * target + (1 - p) * (1 - target)
            focal = (0.25 * target + 0.75 * (1 - target)) * ce * (1 - pt) ** 2
            dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
            loss = loss + 20 * focal.mean() + dice
    return loss / len(frames)


def train_memory(config: SamVideoConfig, *, progress: bool = True, log=print) -> Path:
    """Train the memory modules; writes `out/sam2.pt` and `out/sam2.yaml` (resuming from `out/state.pt`)."""
    import shutil

    import torch
    from tqdm import tqdm

    from engine.segment.torch_backend import build_model

    from .clips import TRAIN_CLIPS_FROM, make_clip

    config_path, _, checkpoint = config.sam.partition(":")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = build_model(config_path, checkpoint, "cpu")
    # Trained in eval mode, as `star track` runs it. In train mode SAM 2's decoder answers a box with its
    # single-mask token where inference falls back to the best of its three masks when that one is unstable
    # (dynamic_multimask_via_stability); the nano decoder's single-mask answer covered most of the image, so
    # the memory learnt from prompted masks inference never makes and answered nothing at inference.
    model.eval()
    def memory(name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in MEMORY_MODULES)

    def decoder(name: str) -> bool:
        return config.train == "memory+decoder" and name.startswith(DECODER + ".") and not memory(name)

    groups = [{"params": [p for n, p in model.named_parameters() if memory(n)], "lr": config.lr},
              {"params": [p for n, p in model.named_parameters() if decoder(n)], "lr": config.decoder_lr}]
    groups = [g for g in groups if g["params"]]
    trained = [p for g in groups for p in g["params"]]
    for name, param in model.named_parameters():
        param.requires_grad_(memory(name) or decoder(name))
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(PRESENT_BIAS)
    teacher = None
    if config.train == "memory+decoder":  # a copy after the bias: SAM 2 paints out masks of objects scored absent
        import copy

        teacher = copy.deepcopy(model.sam_mask_decoder).requires_grad_(False)
    state_path, start = out / "state.pt", 0
    if config.init == "pass-through" and not state_path.is_file():
        sample = [make_clip(TRAIN_CLIPS_FROM * (config.seed + 1) + i, frames=2).frames[0] for i in range(8)]
        fit = pass_through_init(model, _frames_tensor(sample, model.image_size))
        log(f"memory attention set to pass the image features through (fit R^2 {fit:.3f})")
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    rng = np.random.default_rng(config.seed)
    losses, t0 = [], time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, desc="nano-sam-video", unit="clip", disable=not progress)
    try:
        for step in range(start, config.steps):
            clip = make_clip(TRAIN_CLIPS_FROM * (config.seed + 1) + step, frames=config.frames)
            target = clip.targets[int(rng.integers(len(clip.targets)))]
            loss = clip_loss(model, clip.frames, [m[target] for m in clip.masks], teacher)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            if (step + 1) % config.log_every == 0:
                log(f"step {step + 1}: loss {np.mean(losses[-config.log_every:]):.4f} "
                    f"({(time.perf_counter() - t0) / len(losses):.2f} s a clip)")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1},
                           state_path)
    finally:
        bar.close()
    torch.save({"model": model.state_dict()}, out / "sam2.pt")
    shutil.copy(config_path, out / "sam2.yaml")
    (out / "train.json").write_text(json.dumps({**asdict(config), "final_loss": float(np.mean(losses[-50:]))
                                                if losses else None}, indent=1))
    return out / "sam2.pt"

"""A supervised warm start for `star-train adapt`, for a world where the starting policy misses most
answers: GRPO learns from the spread of its rollouts' rewards, which is thin when nearly every rollout
misses, while the user's masks say outright where the objects are.

The answers are derived from the user's masks, in the prompt's own form: per object the box is the mask's
tight box and the point the centre of its largest inscribed circle (the same targets StAR's rewards score
against, `training.rewards.gt_targets_from_masks`: a point deep inside the object, where SAM's click is
least ambiguous), labelled with the object's label, written as the prompt's example writes an answer; the
reasoning is two plain sentences ("The query asks for a red ball. I see a red ball."), so the model keeps
the think-then-answer form without being taught reasons nobody wrote. What it costs: the model learns to
read the query, the answer format and where the objects are, not how to reason about them (GRPO does
that afterwards, from the reward); a few hundred steps of cross-entropy on the completion tokens, every
weight of a small policy or a LoRA on a real one's language model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

END_OF_TURN = "<|im_end|>"
BATCH = 4  # rows a warm-start step trains on


def mask_answer(query: str, label: str, instances: list[np.ndarray], frame: str) -> str:
    """The completion a policy answering in `frame` should write for these objects (masks in the image):
    the prompt's own form (`<think> ... </think> <answer>[...]</answer>`, the answer list written as the
    prompt's example writes it, `engine.protocol.format_answer`), a plain sentence of reasoning."""
    from engine.protocol import format_answer, get_frame

    from .grpo_data import GRID_TRAINING_SIDE, frame_masks
    from .rewards import gt_targets_from_masks

    spec = get_frame(frame)
    side = spec.size if spec.kind == "pixels" else GRID_TRAINING_SIDE
    targets = gt_targets_from_masks(frame_masks(instances, (side, side)))
    scale = 1000 / GRID_TRAINING_SIDE if spec.kind == "grid" else 1.0
    objects = [{"label": label, "bbox_2d": [round(v * scale) for v in t["bbox_2d"]],
                "point_2d": [round(v * scale) for v in t["point_2d"]]} for t in targets]
    named = _with_article(label)
    seen = named if len(objects) == 1 else f"{len(objects)} of them"
    return f"<think> The query asks for {named}. I see {seen}. </think> <answer>{format_answer(objects)}</answer>"


def _with_article(label: str) -> str:
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


@dataclass(frozen=True)
class AnswerRow:
    """One supervised row: a sample, whether its image is mirrored left to right, and the completion."""
    sample: object
    mirrored: bool
    completion: str

    def image(self) -> np.ndarray:
        rgb = np.asarray(self.sample.load_image())
        return np.ascontiguousarray(rgb[:, ::-1]) if self.mirrored else rgb


def mirror_safe(sample) -> bool:
    """Whether a sample means the same mirrored: a query made from the shapes' labels names a kind of thing,
    never a side; a person's own description ("the cup on the left") may."""
    return sample.meta.get("query_source") == "label"


def answer_rows(samples: list, frame: str, *, mirror: bool = True) -> list[AnswerRow]:
    """The rows of every sample with an object, and (with `mirror`) of its mirror image where that means the
    same: twice the positions to learn from for a query made from labels."""
    rows = []
    for sample in samples:
        instances = sample.load_instances()
        if not instances:
            continue
        label = sample.meta.get("label") or "object"
        rows.append(AnswerRow(sample, False, mask_answer(sample.query, label, instances, frame) + END_OF_TURN))
        if mirror and mirror_safe(sample):
            flipped = [np.ascontiguousarray(m[:, ::-1]) for m in instances]
            rows.append(AnswerRow(sample, True, mask_answer(sample.query, label, flipped, frame) + END_OF_TURN))
    return rows


@dataclass(frozen=True)
class ReplaySample:
    """A row of the world the policy already knows, with its own answer (rehearsal against forgetting)."""
    image: np.ndarray
    query: str

    def load_image(self) -> np.ndarray:
        return self.image


def replay_rows(examples) -> list[AnswerRow]:
    """(image, query, completion) triples as warm-start rows."""
    return [AnswerRow(ReplaySample(image, query), False, completion + END_OF_TURN) for image, query, completion in examples]


def warm_start(base: Path, samples: list, out: Path | None, *, frame: str, family: str, steps: int, batch: int = BATCH,
               lr: float = 1e-4, lora_r: int | None = 16, seed: int = 0, mirror: bool = True,
               replay: list[AnswerRow] = (), replay_share: float = 0.5,
               on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train on (image, query, mask-derived answer) rows for `steps` steps of `batch` rows, cycling through
    `samples` (engine Samples with instances; with `mirror`, their mirror images too where that means the
    same, `answer_rows`), in a new order at each pass: a LoRA of rank `lora_r` on the language model (the PEFT
    adapter is written to `out`), or every weight when `lora_r` is None (a whole model folder is written to
    `out`, the base's tokenizer and processor files beside it; `out` None: nothing is written, a timing run).
    `replay`: rows of the world the policy already knows, `replay_share` of each batch (rehearsal, so that
    learning the new world costs less of the old). Returns `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from engine.offline import from_local
    from engine.policy.hf_inputs import encode_batch

    from .grpo import LM_LINEAR

    torch.manual_seed(seed)
    model = from_local(AutoModelForImageTextToText, base, "the base policy", dtype=torch.float32)
    if lora_r is not None:
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_r, target_modules=LM_LINEAR,
                                                 task_type="CAUSAL_LM"))
    tokenizer = from_local(AutoTokenizer, base, "the base policy")
    processor = from_local(AutoProcessor, base, "the base policy").image_processor
    rows = answer_rows(samples, frame, mirror=mirror)
    if not rows:
        raise ValueError("no sample with an object to answer: nothing to warm-start on")
    rng = np.random.default_rng(seed)
    replay = list(replay)
    old = int(round(batch * replay_share)) if replay else 0
    order: list[int] = []
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        while len(order) < batch - old:  # a new shuffle at each pass over the rows
            order += rng.permutation(len(rows)).tolist()
        chosen, order = [rows[i] for i in order[:batch - old]], order[batch - old:]
        chosen += [replay[int(i)] for i in rng.integers(len(replay), size=old)] if old else []
        enc = encode_batch(tokenizer, processor, [row.image() for row in chosen], [row.sample.query for row in chosen],
                           frame=frame, family=family, completions=[row.completion for row in chosen], training=True)
        loss = model(**enc).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, loss.item())
    if out is not None:
        model.save_pretrained(out)
        if lora_r is None:
            copy_model_files(base, out)
    return out


def copy_model_files(base: Path, out: Path) -> None:
    """The base folder's files other than its weights and config (tokenizer, processor, chat template)."""
    import shutil

    for path in Path(base).iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in ("config.json", "model.safetensors.index.json") \
                and not (out / path.name).exists():
            shutil.copy2(path, out / path.name)

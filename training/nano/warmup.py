"""The nano policy's supervised warm-up (the role the base model's pre-training plays for StAR): teacher-
forced reasoning traces + answers on scenes streamed from the world, with a curriculum (one kind of
query and few objects first) and training-only dense losses on the image tokens (aux_targets.py).

Every `eval_every` steps it logs the diagnostic of docs/nano.md ("The real-vs-blank diagnostic"): the loss on the answer's
coordinate digits with the real image minus with a blank image. Zero means the image is ignored.
Runs resume from the last checkpoint; the data stream is a function of the step, so a resumed run
sees exactly the examples an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import MISSING, asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from engine.devices import DEVICES
from engine.offline import from_local
from engine.policy.hf_inputs import IGNORE_INDEX, blank_like, encode_batch

from ..config_cli import setting
from .aux_targets import COLOUR_IDS, KIND_IDS, cell_targets, label_mentions, object_cells
from .dataset import LISTING_STEPS, TRACES, NanoConfig, make_scene_example
from .policy_model import coordinate_token_ids
from .queries import REASONING_TYPES, REFERRING
from .steps import finish_step, fresh_dir, replace_dir, trim_log

END_OF_TURN = "<|im_end|>"


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
    steps: int = setting(20000, "training steps")
    batch: int = setting(16, "scenes per step")
    lr: float = setting(1e-3, "learning rate after the linear ramp")
    warmup_steps: int = setting(200, "steps of the linear learning-rate ramp")
    decay_from: int | None = setting(
        None, "from this step the lr follows a cosine down to final_lr (None: constant; a run that plateaued "
        "at a constant lr is noise-limited, and decaying it lowers that floor)", metavar="STEP")
    final_lr: float = setting(5e-5, "where the cosine ends")
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
    eval_every: int = setting(100, "steps between validations (and the real-vs-blank diagnostic)")
    eval_rows: int = setting(32, "validation scenes")
    save_every: int = setting(200, "steps between checkpoints")
    threads: int = setting(1, "torch threads")
    empty_rate: float = setting(0.1, "share of queries with no target")
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
    workers: int = setting(0, "processes that make the coming steps' batches (the same batches; 0: the trainer)")


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


class AuxHeads:
    """Linear read-outs on the model's width (vision tokens; LM layer `aux_layer`; the final state at answer
    coordinates); training only."""

    def __init__(self, hidden: int, grid: int):
        import torch

        self.grid = grid
        self.heads = torch.nn.ModuleDict({
            "vision": torch.nn.Linear(hidden, 1 + len(KIND_IDS) + len(COLOUR_IDS) + 4),
            "lm": torch.nn.Linear(hidden, 2 * grid + 4)})
        self.vision, self.lm = self.heads["vision"], self.heads["lm"]
        self.answer = torch.nn.Linear(hidden, 1)  # its own module: checkpoints from before it still load

    def parameters(self):
        return list(self.heads.parameters())

    def to(self, device) -> AuxHeads:
        self.heads.to(device)
        self.answer.to(device)
        return self

    def state_dict(self):
        return {**self.heads.state_dict(), **{f"answer.{k}": v for k, v in self.answer.state_dict().items()}}

    def load_state_dict(self, state):
        self.heads.load_state_dict({k: v for k, v in state.items() if not k.startswith("answer.")})
        answer = {k[len("answer."):]: v for k, v in state.items() if k.startswith("answer.")}
        if answer:
            self.answer.load_state_dict(answer)

    def vision_losses(self, vision_states, targets) -> dict:
        """The read-out of the vision tokens alone (objectness, kind, colour, box edges): [B*T, H] states."""
        import torch.nn.functional as F

        k, c = len(KIND_IDS), len(COLOUR_IDS)
        v = self.vision(vision_states)
        present = targets["objectness"] > 0
        losses = {"aux_obj": F.binary_cross_entropy_with_logits(v[:, 0], targets["objectness"]),
                  "aux_kind": F.cross_entropy(v[:, 1:1 + k], targets["kind"], ignore_index=IGNORE_INDEX),
                  "aux_colour": F.cross_entropy(v[:, 1 + k:1 + k + c], targets["colour"], ignore_index=IGNORE_INDEX)}
        if bool(present.any()):
            losses["aux_ltrb"] = F.l1_loss(v[present, -4:], targets["ltrb"][present]) * 10
        return losses

    def loss(self, vision_states, lm_states, targets) -> dict:
        """vision_states / lm_states: [B*T, H] image-token states; targets: stacked CellTargets tensors."""
        import torch.nn.functional as F

        losses = self.vision_losses(vision_states, targets)
        present = targets["objectness"] > 0
        g = self.grid
        m = self.lm(lm_states)
        losses["aux_row"] = F.cross_entropy(m[:, :g], targets["row"])
        losses["aux_col"] = F.cross_entropy(m[:, g:2 * g], targets["col"])
        if bool(present.any()):
            losses["aux_box"] = F.l1_loss(m[present, -4:], targets["box"][present]) * 10
        return losses


def _digit_ids(tokenizer) -> set[int]:
    """Tokens that spell numbers: single digits (Qwen's split) or whole coordinates (coordinate tokens)."""
    return {i for token, i in tokenizer.get_vocab().items()
            if tokenizer.convert_tokens_to_string([token]).strip().isdigit()}


class CoordinateTargets:
    """The answer's coordinates when every value of the frame is one token (coordinate tokens)."""

    def __init__(self, tokenizer, frame_size: int):
        import torch

        ids = coordinate_token_ids(tokenizer, frame_size)
        self.available = len(ids) == frame_size
        self.ids = torch.tensor(sorted(ids, key=ids.get))  # position i holds the token of value i
        self.value = torch.full((len(tokenizer),), -1)
        self.value[self.ids] = torch.arange(len(ids))
        # a coordinate follows "[" or "," in the answer's lists; the "2" of "bbox_2d" follows "_"
        self.opens_number = torch.tensor([tokenizer.convert_tokens_to_string([t]).strip().endswith(("[", ","))
                                          for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])

    def to(self, device) -> CoordinateTargets:
        self.ids, self.value, self.opens_number = (t.to(device) for t in (self.ids, self.value, self.opens_number))
        return self

    def answer_positions(self, inputs, gold):
        """[B, T] bool: positions whose gold token is a coordinate in an answer list."""
        is_coord = (gold >= 0) & (self.value[gold.clamp(min=0)] >= 0)
        return is_coord & self.opens_number[inputs]

    def metrics(self, logits, gold) -> dict:
        """Exact-token cross-entropy and |argmax value - gold value| in pixels, over coordinate tokens only."""
        import torch.nn.functional as F

        coord_logits = logits[:, self.ids]
        target = self.value[gold]
        return {"coord": F.cross_entropy(coord_logits, target),
                "coord_mae": (coord_logits.argmax(-1) - target).abs().float().mean()}

    def soft_loss(self, logits, gold, sigma: float):
        """Cross-entropy (over the whole vocabulary) against a Gaussian on the coordinate tokens."""
        import torch

        values = torch.arange(len(self.ids), dtype=torch.float32, device=logits.device)
        target = torch.exp(-0.5 * ((values[None] - self.value[gold][:, None].float()) / sigma) ** 2)
        target = target / target.sum(-1, keepdim=True)
        logp = torch.log_softmax(logits, -1)[:, self.ids]
        return -(target * logp).sum(-1)


def _mass_nll(attentions, heads, pointed: list[tuple[int, object, object]]):
    """-log of the attention mass that each pointed query position puts on its key positions, per (layer,
    head), concatenated (the supervised-attention losses' common term). `pointed`: (example, query rows,
    key columns) triples, rows never repeated. One dense mask and one multiply per head: indexing the
    attention maps once per object made the backward pass write a full [B, H, T, T] gradient per object
    (steps 1.4-2.2x faster with the shipped legs' losses, 5x on a listed trace: docs/benchmarks.md)."""
    import torch

    batch, _, length, _ = attentions[heads[0][0]].shape
    device = attentions[heads[0][0]].device
    mask = torch.zeros(batch, length, length, dtype=torch.bool, device=device)
    chosen = torch.zeros(batch, length, dtype=torch.bool, device=device)
    for b, rows, cols in pointed:
        rows = torch.as_tensor(rows, device=device)
        mask[b, rows[:, None], torch.as_tensor(cols, device=device)[None, :]] = True
        chosen[b, rows] = True
    return torch.cat([-(attentions[layer][:, head] * mask).sum(-1)[chosen].clamp_min(1e-6).log() for layer, head in heads])


class WarmupData:
    """The warm-up's batches: scenes streamed from the world, encoded as rows with their completions, and the
    targets of the training-only losses. Built in the trainer and, with `workers`, in each prefetch worker
    (from the same folder and config). Called with a step, it gives the training stream's batch at that step."""

    def __init__(self, source: str | Path, config: WarmupConfig):
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        self.config = config
        self.tokenizer = from_local(AutoTokenizer, source, "model folder")
        self.processor = from_local(Qwen2VLImageProcessorPil, source, "model folder")
        self.frame_size = int(math.isqrt(int(self.processor.size["longest_edge"])))
        self.frame = f"pixels-{self.frame_size}"

    def __call__(self, step: int):
        """The training batch of `step` as NumPy arrays (what prefetch workers send back)."""
        cfg = self.config
        examples = self.examples(cfg.stream, step * cfg.batch, cfg.batch, self.data_config(phase_at(cfg.curriculum, step)))
        return tuple({k: v.numpy() if hasattr(v, "numpy") else v for k, v in part.items()} for part in self.batch(examples))

    def data_config(self, phase: Phase) -> NanoConfig:
        return NanoConfig(image_size=self.frame_size, frame=self.frame, types=phase.types, max_objects=phase.max_objects,
                          empty_rate=self.config.empty_rate, trace=self.config.trace)

    def examples(self, split: str, start: int, count: int, config: NanoConfig):
        return [make_scene_example(split, start + i, config) for i in range(count)]

    def batch(self, examples, *, blank: bool = False):
        import torch

        images = [ex.scene.image for ex in examples]
        enc = encode_batch(self.tokenizer, self.processor, blank_like(images) if blank else images,
                           [ex.query.text for ex in examples], frame=self.frame,
                           # ChatML ends the assistant turn with <|im_end|> (the EOS): a policy that never
                           # learnt it runs every rollout to max_completion_length in GRPO.
                           completions=[ex.completion + END_OF_TURN for ex in examples])
        cells = [cell_targets(ex.scene, self.frame_size) for ex in examples]
        targets = {name: torch.from_numpy(np.concatenate([getattr(c, name) for c in cells]))
                   for name in ("objectness", "kind", "colour", "ltrb", "box", "row", "col")}
        # per example, per coordinate the completion writes (listed boxes, then the answer's box + point per
        # target): the image tokens of the object it belongs to
        targets["pointers"] = [self.coordinate_owners(ex) for ex in examples]
        if self.config.label_weight > 0:
            targets["namings"] = [self.namings(ex, enc["labels"][b]) for b, ex in enumerate(examples)]
        return enc, targets

    def coordinate_owners(self, example) -> list[np.ndarray]:
        """For each coordinate of the completion, in order, the image tokens of its object: 4 per listed
        object (its box), 6 per answer target (box, then point)."""
        owners = {o.id: o for o in example.listed + example.targets}  # each object's cells computed once
        cells = {i: object_cells(o.mask, self.frame_size) for i, o in owners.items()}
        return [cells[o.id] for o in example.listed for _ in range(4)] + [cells[t.id] for t in example.targets for _ in range(6)]

    def namings(self, example, labels) -> list[tuple[list[int], np.ndarray]]:
        """(positions that predict a token of an object's name, that object's image tokens) for every
        mention label_mentions finds; position t predicts token t + 1, as in attention_loss."""
        text = example.completion + END_OF_TURN
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        start = int((labels != IGNORE_INDEX).nonzero()[0])  # the completion's first token in the row
        if labels[start:start + len(enc.input_ids)].tolist() != enc.input_ids:
            raise RuntimeError("the completion tokenized differently alone than in its row")
        out = []
        listed = [o.id for o in example.listed]
        for m in label_mentions(example.completion, example.scene, example.query.targets, listed, LISTING_STEPS):
            tokens = [j for j, (a, b) in enumerate(enc.offset_mapping) if a < m.end and b > m.start]
            rows = [start + j - 1 for j in tokens]
            out.append((rows, object_cells(example.scene.objects[m.object_index].mask, self.frame_size)))
        return out


class Warmup:
    def __init__(self, config: WarmupConfig):
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        from engine.devices import resolve_torch_device

        torch.set_num_threads(config.threads)
        self.config = config
        self.device = torch.device(resolve_torch_device(config.device))
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        latest = self.out / "checkpoint"
        self.source = latest if (latest / "state.pt").exists() else Path(config.model_dir)
        self.data = WarmupData(self.source, config)
        self.tokenizer, self.processor = self.data.tokenizer, self.data.processor
        self.frame_size, self.frame = self.data.frame_size, self.data.frame
        # Supervising attention needs its probabilities: the eager kernel returns them (SDPA does not).
        attn = {"attn_implementation": "eager"} if config.attn_heads or config.name_heads else {}
        self.model = from_local(Qwen2_5_VLForConditionalGeneration, self.source, "model folder",
                                dtype=torch.float32, **attn)
        self.model.to(self.device)
        torch.manual_seed(config.seed)  # a fresh run's heads; a resumed one loads them below
        self.aux = AuxHeads(self.model.config.text_config.hidden_size, self.frame_size // 28).to(self.device)
        params = list(self.model.parameters()) + self.aux.parameters()
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        answer_group = {"params": list(self.aux.answer.parameters())}
        self.step = 0
        if self.source == latest:
            # on the CPU first: a checkpoint written on a GPU resumes on a CPU and back (the optimiser's
            # load_state_dict moves its state to each parameter's device)
            state = torch.load(latest / "state.pt", weights_only=True, map_location="cpu")
            self.aux.load_state_dict(state["aux"])
            if len(state["optimizer"]["param_groups"]) == 1:  # saved before the answer read-out existed
                self.optimizer.load_state_dict(state["optimizer"])
                self.optimizer.add_param_group(answer_group)
            else:
                self.optimizer.add_param_group(answer_group)
                self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
        else:
            self.optimizer.add_param_group(answer_group)
        self.digit_ids = torch.tensor(sorted(_digit_ids(self.tokenizer)), device=self.device)
        self.coords = CoordinateTargets(self.tokenizer, self.frame_size).to(self.device)
        if (config.coord_sigma > 0 or config.attn_heads) and not self.coords.available:
            raise ValueError("coord_sigma and attn_heads need coordinate tokens (a policy built with split='gpt-2')")
        if (config.label_weight > 0) != bool(config.name_heads):
            raise ValueError("label_weight > 0 and name_heads go together (the heads that learn where a named object is)")
        self.image_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.log_path = self.out / "log.jsonl"
        trim_log(self.log_path, self.step)

    # ---- data (WarmupData's, made here or by prefetch workers) -----------------------------------------
    def data_config(self, phase: Phase) -> NanoConfig:
        return self.data.data_config(phase)

    def examples(self, split: str, start: int, count: int, config: NanoConfig):
        return self.data.examples(split, start, count, config)

    def batch(self, examples, *, blank: bool = False):
        """(encoded rows, targets) of these examples, on the training device."""
        return self.to_device(*self.data.batch(examples, blank=blank))

    def to_device(self, enc, targets):
        """A batch's tensors and NumPy arrays onto the training device (per-example lists stay on the host)."""
        import torch

        def move(value):
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            return value.to(self.device) if torch.is_tensor(value) else value

        return {k: move(v) for k, v in enc.items()}, {k: move(v) for k, v in targets.items()}

    # ---- one pass ------------------------------------------------------------------------------------
    def losses(self, enc, targets, *, with_aux: bool = True) -> dict:
        import torch
        import torch.nn.functional as F

        tensors = dict(enc)
        labels = tensors.pop("labels")
        attend = with_aux and bool(self.config.attn_heads or self.config.name_heads)
        out = self.model(**tensors, output_hidden_states=with_aux, output_attentions=attend, use_cache=False)
        logits = out.logits[:, :-1]
        gold = labels[:, 1:]
        per_token = F.cross_entropy(logits.transpose(1, 2), gold, ignore_index=IGNORE_INDEX, reduction="none")
        losses = {}
        if attend and "namings" in targets:  # names are words: this needs no coordinate tokens
            losses |= self.naming_loss(out.attentions, tensors["input_ids"], targets["namings"])
        if self.coords.available:
            at = self.coords.answer_positions(tensors["input_ids"][:, :-1], gold)
            if attend and self.config.attn_heads:
                losses |= self.attention_loss(out.attentions, tensors["input_ids"], at, targets["pointers"])
            if with_aux and self.config.answer_weight > 0 and bool(at.any()):
                value = self.aux.answer(out.hidden_states[-1][:, :-1][at]).squeeze(-1)
                gold_value = (self.coords.value[gold[at]].float() + 0.5) / self.frame_size
                losses["aux_answer"] = self.config.answer_weight * F.l1_loss(value, gold_value) * 10
            if bool(at.any()):
                losses |= self.coords.metrics(logits[at], gold[at])
                if self.config.coord_sigma > 0:
                    per_token = per_token.clone()
                    per_token[at] = self.coords.soft_loss(logits[at], gold[at], self.config.coord_sigma)
        losses["lm"] = per_token.sum() / (gold != IGNORE_INDEX).sum().clamp(min=1)
        keep = torch.isin(gold, self.digit_ids)
        digit = torch.where(keep, gold, IGNORE_INDEX)
        if bool(keep.any()):
            losses["digits"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), digit.reshape(-1),
                                               ignore_index=IGNORE_INDEX)
        if with_aux:
            is_image = tensors["input_ids"] == self.image_id
            aux = self.aux.loss(out.hidden_states[0][is_image], out.hidden_states[self.config.aux_layer][is_image],
                                targets)
            aux["aux_kind"] = self.config.kind_weight * aux["aux_kind"]
            losses |= aux
        return losses

    def attention_loss(self, attentions, input_ids, at, pointers) -> dict:
        """-log(attention mass on the object's image tokens), from each coordinate the completion writes (a
        listed object's box; an answer target's box, then point), for every supervised (layer, head);
        'aux_attn' joins the aux sum."""
        import torch

        pointed = []
        for b, owners in enumerate(pointers):
            rows = torch.nonzero(at[b]).flatten()  # position t predicts token t + 1
            images = torch.nonzero(input_ids[b] == self.image_id).flatten()
            if not owners or len(rows) != len(owners):
                continue  # a completion whose coordinates are not the ones its objects spell (none in the world)
            pointed += [(b, rows[k:k + 1], images[torch.as_tensor(cells, device=images.device)])
                        for k, cells in enumerate(owners)]
        if not pointed:
            return {}
        return {"aux_attn": self.config.attn_weight * _mass_nll(attentions, self.config.attn_heads, pointed).mean()}

    def naming_loss(self, attentions, input_ids, namings) -> dict:
        """-log(attention mass on the named object's image tokens) from each position that predicts a
        token of its name, for every supervised (layer, head); 'aux_name' joins the aux sum."""
        import torch

        pointed = []
        for b, mentions in enumerate(namings):
            images = torch.nonzero(input_ids[b] == self.image_id).flatten()
            pointed += [(b, rows, images[torch.as_tensor(cells, device=images.device)]) for rows, cells in mentions]
        if not pointed:
            return {}
        return {"aux_name": self.config.label_weight * _mass_nll(attentions, self.config.name_heads, pointed).mean()}

    def lr_at(self, step: int) -> float:
        return learning_rate(self.config, step)

    def evaluate(self) -> dict:
        """Coordinate-digit loss with the real image vs a blank one, on fixed val scenes (full world)."""
        import torch

        final = self.config.curriculum[-1]
        examples = self.examples("val", 0, self.config.eval_rows, self.data_config(final))
        self.model.eval()
        with torch.no_grad():
            real = self.losses(*self.batch(examples), with_aux=False)
            blank = self.losses(*self.batch(examples, blank=True), with_aux=False)
        self.model.train()
        record = {"val_lm": float(real["lm"]), "val_digits": float(real["digits"]),
                  "val_digits_blank": float(blank["digits"]),
                  "image_gain": float(blank["digits"] - real["digits"])}
        if "coord" in real:  # the same on answer coordinates only, and the argmax's error in pixels
            record |= {"val_coord": float(real["coord"]), "val_coord_blank": float(blank["coord"]),
                       "coord_gain": float(blank["coord"] - real["coord"]),
                       "val_coord_mae": float(real["coord_mae"]), "val_coord_mae_blank": float(blank["coord_mae"])}
        return record

    def save(self) -> None:
        import torch

        tmp = fresh_dir(self.out / "checkpoint.tmp")
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        self.processor.save_pretrained(tmp)
        torch.save({"aux": self.aux.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step},
                   tmp / "state.pt")
        (tmp / "warmup.json").write_text(json.dumps(asdict(self.config), indent=2, default=list))
        replace_dir(tmp, self.out / "checkpoint")

    def run(self, *, progress: bool = True) -> Path:
        cfg = self.config
        self.model.train()
        prefetch = None
        if cfg.workers > 0 and self.step < cfg.steps:
            from .prefetch import Prefetcher

            prefetch = Prefetcher(partial(WarmupData, self.source, cfg), workers=cfg.workers, stop=cfg.steps)
        try:
            self._train(prefetch or self.data, progress=progress)
        finally:
            if prefetch is not None:
                prefetch.close()
        return self.out / "checkpoint"

    def _train(self, batches, *, progress: bool) -> None:
        """Steps until config.steps; `batches(step)` gives each step's batch as NumPy arrays."""
        import torch

        cfg = self.config
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        t0 = time.perf_counter()
        while self.step < cfg.steps:
            made = time.perf_counter()
            enc, targets = self.to_device(*batches(self.step))
            waited = time.perf_counter() - made
            losses = self.losses(enc, targets)
            total = losses["lm"] + cfg.aux_weight * sum(v for k, v in losses.items() if k.startswith("aux_"))
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            record = {"step": self.step, "loss": total.item(), "grad_norm": norm.item(),
                      "s_per_step": (time.perf_counter() - t0), "s_data": waited,
                      **{k: v.item() for k, v in losses.items()}}
            t0 = time.perf_counter()
            finish_step(self, record, progress=progress)


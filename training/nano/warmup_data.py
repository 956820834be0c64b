"""The warm-up's batches: scenes streamed from the nano world as a function of the step, encoded with
their completions and the targets of the training-only losses (in the trainer or in prefetch workers)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from engine.offline import from_local
from engine.policy.hf_inputs import IGNORE_INDEX, blank_like, encode_batch

from .aux_targets import cell_targets, label_mentions, object_cells
from .dataset import LISTING_STEPS, NanoConfig, make_scene_example
from .warmup_config import Phase, WarmupConfig, phase_at

END_OF_TURN = "<|im_end|>"


def _coin(index: int) -> float:
    """A fixed number in [0, 1) per row index."""
    return float(np.random.default_rng([index, 0x57A7]).random())


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
        examples = self.examples(cfg.stream, step * cfg.batch, cfg.batch, self.data_config(phase_at(cfg.curriculum, step)),
                                 wide_share=cfg.wide_share)
        return tuple({k: v.numpy() if hasattr(v, "numpy") else v for k, v in part.items()} for part in self.batch(examples))

    def data_config(self, phase: Phase) -> NanoConfig:
        return NanoConfig(image_size=self.frame_size, frame=self.frame, types=phase.types, max_objects=phase.max_objects,
                          empty_rate=self.config.empty_rate, trace=self.config.trace)

    def examples(self, split: str, start: int, count: int, config: NanoConfig, *, wide_share: float = 0.0):
        """Rows start.. of `split`; each is drawn from the wider world with probability `wide_share` (decided
        by its index alone, so a resumed run and a prefetch worker draw the same rows)."""
        wide = dataclasses.replace(config, world="wide")
        return [make_scene_example(split, i, wide if wide_share and _coin(i) < wide_share else config)
                for i in range(start, start + count)]

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

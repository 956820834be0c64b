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
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from engine.offline import from_local
from engine.policy.hf_inputs import IGNORE_INDEX

from .dataset import NanoConfig
from .steps import finish_step, fresh_dir, replace_dir, trim_log
from .warmup_config import (
    DEFAULT_CURRICULUM,
    PHASE_ENDS,
    Phase,
    WarmupConfig,
    curriculum_until,
    learning_rate,
    phase_at,
)
from .warmup_data import END_OF_TURN, WarmupData
from .warmup_losses import AuxHeads, CoordinateTargets, _digit_ids, _mass_nll

__all__ = ["DEFAULT_CURRICULUM", "END_OF_TURN", "PHASE_ENDS", "AuxHeads", "CoordinateTargets", "Phase", "Warmup",
           "WarmupConfig", "WarmupData", "curriculum_until", "learning_rate", "phase_at"]


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

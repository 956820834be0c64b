"""The warm-up's training-only losses: the dense image-token read-outs (AuxHeads), the coordinate-token
targets, and the supervised-attention term. None of it is exported with the policy."""

from __future__ import annotations

from engine.policy.hf_inputs import IGNORE_INDEX

from .aux_targets import COLOUR_IDS, KIND_IDS
from .policy_model import coordinate_token_ids


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

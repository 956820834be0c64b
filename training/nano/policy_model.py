"""The nano policy: the real Qwen2.5-VL architecture with a tiny config and a byte-level BPE tokenizer
trained on the nano world's prompts and answers, with Qwen's special tokens and the split regex of a
llama.cpp pre-tokenizer, so llama.cpp tokenizes exactly as transformers does.

Coordinate tokens: by default the split is GPT-2's (digit runs stay together) and every coordinate of
the frame is one token, so the policy answers a coordinate with one 224-way choice read off the image
features instead of three digits whose tens and units are non-monotonic functions of position (Qwen's
own split, one digit per token, is kept as the option `split="qwen2"`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.protocol import build_prompt, chatml_prompt
from export.bpe_tokenizer import QWEN_SPECIALS, world_bpe_tokenizer


@dataclass(frozen=True)
class NanoPolicyConfig:
    image_size: int = 224  # square model input = the answer frame pixels-<image_size>
    vocab_size: int = 1024
    hidden: int = 192
    layers: int = 4
    heads: int = 6  # head_dim 32; mrope_section must sum to head_dim / 2
    kv_heads: int = 2
    intermediate: int = 512
    # Qwen2.5-VL gives M-RoPE's width section the LOWEST frequencies: with head_dim 32 and theta 1e4 a
    # column step turns them by < 0.004 rad and a probe learnt rows but never columns. theta 10 puts
    # the width section at 0.12-0.24 rad per column (heights 0.27-0.56, text 0.65-1).
    rope_theta: float = 10.0
    vision_depth: int = 4  # llama.cpp's converter needs >= 4 blocks
    vision_hidden: int = 128
    vision_heads: int = 4
    vision_intermediate: int = 256
    corpus_rows: int = 3000
    split: str = "gpt-2"  # engine.policy.splits.KNOWN_SPLITS; "gpt-2" gives coordinate tokens
    # "quadratic": the LM head scores coordinate v as a Gaussian around a value the state holds LINEARLY
    # (quadratic_coordinate_code), so the answer can copy the scalar box the image tokens learn to hold;
    # "bumps": coordinate tokens' input and output embeddings start as Gaussian bumps (coordinate_code),
    # so neighbouring values share gradient; "random": plain initialisation (every value on its own).
    coord_init: str = "quadratic"
    coord_code_width: int = 32
    # quadratic code: the output rows' scale and the final norm's gain on the code's dimensions. Their
    # product bounds how sharp a coordinate's distribution can get (precision ~ scale * gain * |state|).
    coord_scale: float = 40.0
    coord_gain: float = 4.0
    seed: int = 0


def _corpus(config: NanoPolicyConfig) -> list[str]:
    from .dataset import NanoConfig, make_scene_example
    from .queries import REASONING_TYPES, REFERRING

    data = NanoConfig(image_size=config.image_size, frame=f"pixels-{config.image_size}",
                      types=REASONING_TYPES + (REFERRING,))
    texts = []
    for i in range(config.corpus_rows):
        ex = make_scene_example("tokenizer", i, data)
        texts.append(chatml_prompt(build_prompt(ex.query.text), "") + ex.completion)
    return texts




def build_tokenizer(config: NanoPolicyConfig = NanoPolicyConfig()):
    numbers = range(config.image_size) if config.split == "gpt-2" else None
    return world_bpe_tokenizer(_corpus(config), config.vocab_size, config.split, numbers)


def coordinate_token_ids(tokenizer, frame_size: int) -> dict[int, int]:
    """token id -> the coordinate it spells, for the values 0..frame_size-1 that are one token each."""
    ids = {}
    for value in range(frame_size):
        enc = tokenizer.encode(str(value), add_special_tokens=False)
        if len(enc) == 1:
            ids[enc[0]] = value
    return ids


def coordinate_code(values, frame_size: int, width: int):
    """Unit-norm Gaussian bumps at `width` evenly spaced centres (spacing = sigma = frame / width): values
    a few pixels apart get nearly the same code, so a state that learnt "about x = 100" scores every token
    near 100 at once instead of one value among frame_size unrelated ones."""
    import torch

    values = torch.as_tensor(values, dtype=torch.float32)[:, None]
    spacing = frame_size / width
    centres = (torch.arange(width, dtype=torch.float32) + 0.5) * spacing
    code = torch.exp(-0.5 * ((values - centres) / spacing) ** 2)
    return code / code.norm(dim=1, keepdim=True)


def structure_coordinate_embeddings(model, tokenizer, frame_size: int, width: int) -> int:
    """Write coordinate_code into the first `width` dimensions of the coordinate tokens' input embedding
    and output head rows (the other dimensions keep their random init). Returns how many tokens."""
    import torch

    ids = coordinate_token_ids(tokenizer, frame_size)
    if len(ids) != frame_size:
        raise ValueError(f"only {len(ids)} of {frame_size} coordinates are single tokens: no coordinate tokens to "
                         "structure (use split='gpt-2' or coord_init='random')")
    rows = torch.tensor(list(ids))
    code = coordinate_code(list(ids.values()), frame_size, width)
    with torch.no_grad():
        for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            scale = matrix.norm(dim=1).mean()  # keep these rows as large as the rest of the table
            matrix[rows, :width] = code * scale
    return len(ids)


QUADRATIC_DIMS = 3  # residual dimensions 0..2: value * k, k, coordinate-ness


def quadratic_coordinate_code(values, frame_size: int):
    """[len(values), 3] output rows that score value v by  s*u - u^2/2 + c  (u = (v + 0.5) / frame_size) for a
    state holding (s*k, k, c) in dimensions 0..2: a Gaussian in u centred on s whose precision grows with k.
    So the scalar s, a LINEAR read-out of the right image tokens' states, picks the coordinate token."""
    import torch

    u = (torch.as_tensor(values, dtype=torch.float32) + 0.5) / frame_size
    return torch.stack([u, -0.5 * u * u, torch.ones_like(u)], dim=1)


def structure_quadratic_coordinates(model, tokenizer, frame_size: int, scale: float, gain: float) -> int:
    """Give dimensions 0..2 of the LM's residual stream to the quadratic code: coordinate tokens' output
    rows hold it (scaled), every other output row and every writer into those dimensions (embeddings, attention and MLP
    outputs, the vision merger) starts at zero, so
    at initialisation the code is silent (all coordinates score 0) and training turns it on. A coordinate
    token's input embedding holds (u, 1, 1), so later tokens can read earlier coordinates linearly."""
    import torch

    ids = coordinate_token_ids(tokenizer, frame_size)
    if len(ids) != frame_size:
        raise ValueError(f"only {len(ids)} of {frame_size} coordinates are single tokens: no coordinate tokens to "
                         "structure (use split='gpt-2' or coord_init='random')")
    rows = torch.tensor(list(ids))
    code = quadratic_coordinate_code(list(ids.values()), frame_size)
    d = QUADRATIC_DIMS
    lm = model.model.language_model
    with torch.no_grad():
        out = model.get_output_embeddings().weight
        out[:, :d] = 0
        out[rows] = 0  # a coordinate's score comes from the code alone
        out[rows, :d] = code * scale
        emb = model.get_input_embeddings().weight
        emb[:, :d] = 0
        size = float(emb.norm(dim=1).mean())  # as loud as a typical embedding row
        emb[rows, d:d + 2] = code[:, [0, 2]] * size
        for layer in lm.layers:  # the residual writers start silent on the code's dimensions
            layer.self_attn.o_proj.weight[:d] = 0
            layer.mlp.down_proj.weight[:d] = 0
        merger_out = model.model.visual.merger.mlp[-1]  # image tokens enter the stream here
        merger_out.weight[:d] = 0
        merger_out.bias[:d] = 0
        lm.norm.weight[:d] = gain
    return len(ids)


def build_nano_policy(out_dir: str | Path, config: NanoPolicyConfig = NanoPolicyConfig()) -> Path:
    """Write a freshly initialised nano policy (model, tokenizer, image processor) as an HF folder."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tokenizer = build_tokenizer(config)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    head_dim = config.hidden // config.heads
    t_sec = head_dim // 2 - 2 * (3 * head_dim // 16)
    mrope = [t_sec, 3 * head_dim // 16, 3 * head_dim // 16]  # Qwen's 16/24/24 split of 64, scaled
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=config.hidden, intermediate_size=config.intermediate,
                         num_hidden_layers=config.layers, num_attention_heads=config.heads,
                         num_key_value_heads=config.kv_heads, max_position_embeddings=4096, bos_token_id=None,
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta, "mrope_section": mrope},
                         tie_word_embeddings=False),
        vision_config=dict(depth=config.vision_depth, hidden_size=config.vision_hidden,
                           intermediate_size=config.vision_intermediate, num_heads=config.vision_heads,
                           out_hidden_size=config.hidden, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=112, fullatt_block_indexes=[1, 3]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], tie_word_embeddings=False)
    torch.manual_seed(config.seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    if config.coord_init not in ("quadratic", "bumps", "random"):
        raise ValueError(f"coord_init must be 'quadratic', 'bumps' or 'random', not {config.coord_init!r}")
    if config.split == "gpt-2":  # Qwen's digit split has no coordinate tokens to structure
        if config.coord_init == "bumps":
            structure_coordinate_embeddings(model, tokenizer, config.image_size, config.coord_code_width)
        elif config.coord_init == "quadratic":
            structure_quadratic_coordinates(model, tokenizer, config.image_size, config.coord_scale, config.coord_gain)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    px = config.image_size * config.image_size
    Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px, patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(out)
    return out

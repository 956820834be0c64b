"""Shrunk SAM 2.1 configs: the real architecture (Hiera + FPN + SAM heads) at a size that runs in
milliseconds on one CPU thread. Used by the tests, the benchmarks and the nano bundle's segmenter.

A config is the upstream `sam2.1_hiera_t.yaml` with the overrides below applied, written out as a
self-contained YAML that `torch_backend.build_model` (and `star-export sam2`) read like any other.
"""

from __future__ import annotations

from pathlib import Path


def shrunk_overrides(image_size: int = 256, embed_dim: int = 16, d_model: int = 64) -> list[str]:
    """Hydra-style `key=value` overrides of sam2.1_hiera_t.yaml (prefix them with `++` for hydra)."""
    s16 = image_size // 16
    chans = [embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim]
    return [
        f"model.image_size={image_size}",
        f"model.image_encoder.trunk.embed_dim={embed_dim}",
        "model.image_encoder.trunk.num_heads=1",
        # Stage depths 1,1,2,1; the global-attention block is the second of stage 3 (a global block
        # first in a stage divides by zero in Hiera's window logic).
        "model.image_encoder.trunk.stages=[1,1,2,1]",
        "model.image_encoder.trunk.global_att_blocks=[3]",
        "model.image_encoder.trunk.window_spec=[8,4,8,4]",
        f"model.image_encoder.neck.backbone_channel_list=[{','.join(map(str, chans))}]",
        f"model.image_encoder.neck.d_model={d_model}",
        f"model.image_encoder.neck.position_encoding.num_pos_feats={d_model}",
        # The memory modules serve video only, but they are part of the checkpoint: shrink them too.
        f"model.memory_attention.d_model={d_model}",
        "model.memory_attention.num_layers=1",
        f"model.memory_attention.layer.d_model={d_model}",
        f"model.memory_attention.layer.dim_feedforward={2 * d_model}",
        f"model.memory_attention.layer.self_attention.embedding_dim={d_model}",
        f"model.memory_attention.layer.self_attention.feat_sizes=[{s16},{s16}]",
        f"model.memory_attention.layer.cross_attention.embedding_dim={d_model}",
        f"model.memory_attention.layer.cross_attention.feat_sizes=[{s16},{s16}]",
        f"model.memory_attention.layer.cross_attention.kv_in_dim={d_model // 2}",
        f"model.memory_encoder.out_dim={d_model // 2}",
        f"model.memory_encoder.in_dim={d_model}",
        f"model.memory_encoder.position_encoding.num_pos_feats={d_model // 2}",
        f"model.memory_encoder.mask_downsampler.embed_dim={d_model}",
        f"model.memory_encoder.fuser.layer.dim={d_model}",
    ]


def write_shrunk_config(path: str | Path, **kwargs) -> Path:
    """Write a self-contained shrunk SAM 2.1 config YAML (needs the sam2 package for the base config)."""
    from omegaconf import OmegaConf

    from .torch_backend import resolve_config

    base = OmegaConf.load(resolve_config("configs/sam2.1/sam2.1_hiera_t.yaml"))
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(shrunk_overrides(**kwargs)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
    return path


def write_random_checkpoint(config: str | Path, path: str | Path, seed: int = 0) -> Path:
    """A checkpoint of random weights in Meta's format ({"model": state_dict}). SAM 2's own init leaves
    some parameters at zero (e.g. no_mem_embed); perturb every tensor so parity tests see them all."""
    import torch

    from .torch_backend import build_model

    torch.manual_seed(seed)
    model = build_model(config, None, "cpu")
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(seed + 1)
    for value in sd.values():
        if value.is_floating_point():
            value.add_(0.02 * torch.randn(value.shape, generator=gen))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd}, path)
    return path

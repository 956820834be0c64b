"""The published shapes of the models StAR Desktop runs at full size: one place for these facts.

Values are those of the released `config.json` / `preprocessor_config.json` of Qwen2.5-VL-3B-Instruct,
Qwen2.5-VL-7B-Instruct (the base of StAR-7B and VisionReasoner-7B) and Qwen3-VL-8B-Instruct (StAR-8B),
and of StAR's LoRA (r 64, alpha 64 on every linear layer of the language model, docs/protocol.md).
`export.random_checkpoint` builds architecture-exact checkpoints with random weights from them, so
that export cost, inference cost and parity at real shapes can be measured without the real weights
(`star-export scale`). SAM 2.1 shapes are the sam2 package's own configs, named here.

`RealShape.vision_layout` is what a CI-sized model keeps when its widths shrink (tests: the real patch,
merge and window sizes and the full-attention / DeepStack block pattern at the real frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_QWEN25_IDS = dict(bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652,
                   vision_end_token_id=151653, vision_token_id=151654, image_token_id=151655, video_token_id=151656)


@dataclass(frozen=True)
class LoraShape:
    rank: int
    alpha: int
    target_modules: tuple[str, ...]


STAR_LORA = LoraShape(64, 64, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))


@dataclass(frozen=True)
class RealShape:
    name: str
    model_type: str           # qwen2_5_vl | qwen3_vl
    text: dict                # text_config as published
    vision: dict              # vision_config as published
    processor: dict           # the image processor's pixel budget and patch layout
    tie_word_embeddings: bool
    frame: str                # the protocol's answer frame for this family
    lora: LoraShape | None = None   # the adapter a StAR checkpoint adds on top (None: the base alone)
    ids: dict = field(default_factory=lambda: dict(_QWEN25_IDS))

    @property
    def vision_layout(self) -> dict:
        """The vision settings that fix the token count and the attention pattern (not the widths)."""
        keys = ("patch_size", "spatial_merge_size", "temporal_patch_size", "window_size", "fullatt_block_indexes",
                "depth", "deepstack_visual_indexes", "num_position_embeddings")
        return {k: self.vision[k] for k in keys if k in self.vision}

    def shrunk(self) -> RealShape:
        """The same architecture with tiny widths and the real vision layout (patch, merge and window
        sizes, depth with its full-attention / DeepStack blocks, position table) and vocabulary size:
        the CI model that runs windowed attention on the real 60 x 60 grid in seconds."""
        text = {**self.text, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 8192}
        text["num_hidden_layers"] = 4 if "deepstack_visual_indexes" in self.vision else 2
        mrope = [2, 3, 3]  # head_dim 16: the sections sum to 8, in Qwen's 2 : 3 : 3 ratio
        if "head_dim" in text:
            text["head_dim"] = 16
        text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": mrope}
        vision = {**self.vision, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
        return RealShape(f"{self.name}-shrunk", self.model_type, text, vision, self.processor,
                         self.tie_word_embeddings, self.frame, self.lora and LoraShape(4, 8, self.lora.target_modules),
                         dict(self.ids))

    def parameter_count(self) -> int:
        """Parameters of the full checkpoint (language model, vision tower, merger), by hand from the shapes."""
        t, v = self.text, self.vision
        h, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
        head_dim = t.get("head_dim", h // t["num_attention_heads"])
        q, kv = t["num_attention_heads"] * head_dim, t["num_key_value_heads"] * head_dim
        qwen25 = self.model_type == "qwen2_5_vl"
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if qwen25 else 2 * head_dim)  # q/k/v bias or q/k norm
        per_layer = attn + 3 * h * inter + 2 * h
        lm = layers * per_layer + h + t["vocab_size"] * h * (1 if self.tie_word_embeddings else 2)
        vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
        merged = vh * v["spatial_merge_size"] ** 2
        patch = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * vh
        if qwen25:  # RMSNorm blocks, gated MLP with biases, no patch-embed bias
            block = 2 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + 3 * vh * vi + 2 * vi + vh
            merger = vh + merged * merged + merged + merged * v["out_hidden_size"] + v["out_hidden_size"]
            return lm + patch + depth * block + merger
        # Qwen3-VL: LayerNorm blocks, plain GELU MLP, learned position table, DeepStack mergers
        block = 4 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + 2 * vh * vi + vi + vh
        merger = 2 * vh + merged * merged + merged + merged * v["out_hidden_size"] + v["out_hidden_size"]
        deep = len(v["deepstack_visual_indexes"]) * (2 * merged + merged * merged + merged
                                                      + merged * v["out_hidden_size"] + v["out_hidden_size"])
        return lm + patch + vh + v["num_position_embeddings"] * vh + depth * block + merger + deep


_QWEN25_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, hidden_act="silu",
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
_QWEN25_PROCESSOR = dict(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2, temporal_patch_size=2)
_QWEN25_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}

SHAPES: dict[str, RealShape] = {
    "qwen2.5-vl-3b": RealShape(
        "qwen2.5-vl-3b", "qwen2_5_vl",
        text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                  num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
                  hidden_act="silu", rope_parameters=_QWEN25_ROPE),
        vision={**_QWEN25_VISION, "out_hidden_size": 2048},
        processor=_QWEN25_PROCESSOR, tie_word_embeddings=True, frame="qwen2.5-840"),
    "qwen2.5-vl-7b": RealShape(
        "qwen2.5-vl-7b", "qwen2_5_vl",
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
                  hidden_act="silu", rope_parameters=_QWEN25_ROPE),
        vision={**_QWEN25_VISION, "out_hidden_size": 3584},
        processor=_QWEN25_PROCESSOR, tie_word_embeddings=False, frame="qwen2.5-840", lora=STAR_LORA),
    "qwen3-vl-8b": RealShape(
        "qwen3-vl-8b", "qwen3_vl",
        text=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                  rms_norm_eps=1e-6, hidden_act="silu",
                  rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                   "mrope_interleaved": True}),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, in_channels=3,
                    hidden_act="gelu_pytorch_tanh", patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                    out_hidden_size=4096, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]),
        processor=dict(min_pixels=65536, max_pixels=16777216, patch_size=16, merge_size=2, temporal_patch_size=2),
        tie_word_embeddings=False, frame="qwen3-1000", lora=STAR_LORA),
}

# SAM 2.1 at full size: the sam2 package's own model configs (read as data by engine.segment.sam2_config).
SAM2_SHAPES = {
    "sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def get_shape(name: str) -> RealShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown model shape {name!r}; choose one of {', '.join(SHAPES)}") from None

"""Does a bundle fit this machine, or a GPU of a given memory, at N samples? (`star doctor --bundle`)

The memory a query holds, term by term (each one a formula of the bundle's own files and GGUF header):
- policy weights: the model GGUF's size (llama.cpp maps it; every byte is read at each decode step);
- vision projector: the mmproj GGUF's size;
- KV cache: layers x context x KV heads x (key + value dims) x 2 bytes (F16), for the context the engine
  allocates at N samples: PROMPT_RESERVE + N x max_new_tokens positions (`context_positions`);
- vision attention: the encoder's full-attention score matrix, heads x patches^2 x 4 bytes (f32), for
  the image at the frame (the largest single buffer of the vision tower at the 840 frame);
- decode logits: N x vocabulary x 4 bytes (one row per sample per step);
- segmenter: the SAM 2 files the device runs (ONNX encoder + decoder, or the TensorRT engines).
A GPU also pays its CUDA context (CUDA_CONTEXT_BYTES). What is left out (allocator slack, Python) is
why `fits` asks for HEADROOM of the memory, not all of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROMPT_RESERVE = 4096            # positions the engine keeps for system + image + query (engine.pipeline)
CUDA_CONTEXT_BYTES = 512 * 2**20  # a CUDA context with cuBLAS loaded, about
HEADROOM = 0.9                    # use at most this share of the memory
PATCH_PIXELS = {"qwen2.5-vl": 14, "qwen3-vl": 16}
MERGE = 2
GiB = 2**30


def context_positions(samples: int, max_new_tokens: int) -> int:
    """The KV-cache positions the engine allocates for N samples (all sequences share them)."""
    return PROMPT_RESERVE + samples * max_new_tokens


def parse_size(text: str) -> int:
    """'24G', '24GiB', '16000M', '8e9' -> bytes (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"expected a size such as 24G or 16000M, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs from the policy's GGUF header."""
    layers: int
    kv_heads: int
    key_dim: int
    value_dim: int
    vocab: int
    vision_heads: int


def model_shape(model_gguf: Path, mmproj_gguf: Path) -> ModelShape:
    from .errors import ModelFileError
    from .gguf_reader import read_gguf  # the header only: tensors stay on disk

    meta = read_gguf(model_gguf).metadata
    arch = meta.get("general.architecture")
    vision = read_gguf(mmproj_gguf).metadata
    if arch == "clip" or f"{arch}.attention.head_count" not in meta:
        raise ModelFileError(f"{model_gguf} is not a language model (architecture {arch!r}); is it the vision "
                             "projector? the bundle's policy model and mmproj may be swapped")
    if vision.get("general.architecture") != "clip":
        raise ModelFileError(f"{mmproj_gguf} is not a vision projector (architecture "
                             f"{vision.get('general.architecture')!r}); the bundle's policy model and mmproj may be swapped")
    heads = int(meta[f"{arch}.attention.head_count"])
    kv = meta.get(f"{arch}.attention.head_count_kv", heads)
    kv = int(kv[0] if isinstance(kv, list) else kv)
    head_dim = int(meta[f"{arch}.embedding_length"]) // heads
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    return ModelShape(int(meta[f"{arch}.block_count"]), kv, int(meta.get(f"{arch}.attention.key_length", head_dim)),
                      int(meta.get(f"{arch}.attention.value_length", head_dim)), int(vocab),
                      int(vision.get("clip.vision.attention.head_count", 16)))


def image_patches(family: str, frame: str, image_wh: tuple[int, int]) -> int:
    """Vision-encoder patches for an image: the frame's square for pixel frames, else the image
    rounded to whole merged patches (Qwen3-VL's native resolution)."""
    from .protocol import get_frame

    patch = PATCH_PIXELS.get(family, 14)
    f = get_frame(frame)
    w, h = (f.size, f.size) if f.kind == "pixels" else image_wh
    unit = patch * MERGE
    return (max(unit, round(w / unit) * unit) // patch) * (max(unit, round(h / unit) * unit) // patch)


@dataclass
class FitTerms:
    weights: int
    mmproj: int
    kv_cache: int
    vision_attention: int
    logits: int
    segmenter: int
    cuda_context: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.mmproj + self.kv_cache + self.vision_attention + self.logits + self.segmenter
                + self.cuda_context)


def terms(shape: ModelShape, files: dict[str, int], patches: int, samples: int, max_new_tokens: int,
          gpu: bool) -> FitTerms:
    ctx = context_positions(samples, max_new_tokens)
    return FitTerms(weights=files["model"], mmproj=files["mmproj"],
                    kv_cache=shape.layers * ctx * shape.kv_heads * (shape.key_dim + shape.value_dim) * 2,
                    vision_attention=shape.vision_heads * patches * patches * 4,
                    logits=samples * shape.vocab * 4, segmenter=files["segmenter"],
                    cuda_context=CUDA_CONTEXT_BYTES if gpu else 0)


def largest_fitting(shape: ModelShape, files: dict[str, int], patches: int, max_new_tokens: int, memory: int,
                    gpu: bool, limit: int) -> int:
    """The largest N in 1..limit whose total stays within HEADROOM x memory (0: not even one)."""
    best = 0
    for n in range(1, limit + 1):
        if terms(shape, files, patches, n, max_new_tokens, gpu).total > HEADROOM * memory:
            break
        best = n
    return best


def bundle_files(bundle, gpu: bool) -> dict[str, int]:
    spec, seg = bundle.manifest.policy, bundle.manifest.segmenter
    size = lambda rel: bundle.path(rel).stat().st_size if rel else 0
    if seg is None:
        segmenter = 0
    elif gpu and seg.encoder_engine:
        segmenter = size(seg.encoder_engine) + size(seg.decoder_engine)
    else:
        segmenter = size(seg.encoder_onnx) + size(seg.decoder_onnx)
    return {"model": size(spec.model), "mmproj": size(spec.mmproj), "segmenter": segmenter}


def fit_report(root, *, samples: list[int], max_new_tokens: int, gpu_mem: int | None,
               image_wh: tuple[int, int] = (1280, 960)) -> dict:
    """For this machine's memory (MemAvailable now, and MemTotal) and, with gpu_mem, a GPU of that size:
    the terms at each N in `samples`, whether they fit, and the largest N that fits."""
    from .bundle import load_bundle
    from .memory import available_memory, meminfo_bytes
    from .policy.types import MAX_SAMPLES

    bundle = load_bundle(root, verify="quick")
    spec = bundle.manifest.policy
    shape = model_shape(bundle.path(spec.model), bundle.path(spec.mmproj))
    patches = image_patches(spec.family, spec.frame, image_wh)
    targets = [("this machine (available now)", available_memory(), False),
               ("this machine (total)", meminfo_bytes("MemTotal"), False)]
    if gpu_mem:
        targets.append((f"GPU with {gpu_mem / GiB:.0f} GiB", gpu_mem, True))
    out = {"bundle": str(bundle.root), "family": spec.family, "frame": spec.frame, "quant": spec.quant,
           "image": f"{image_wh[0]}x{image_wh[1]}", "vision_patches": patches, "max_new_tokens": max_new_tokens,
           "headroom": HEADROOM, "targets": []}
    for name, memory, gpu in targets:
        if memory is None:
            continue
        files = bundle_files(bundle, gpu)
        rows = []
        for n in samples:
            t = terms(shape, files, patches, n, max_new_tokens, gpu)
            rows.append({"n": n, **{k: getattr(t, k) for k in FitTerms.__dataclass_fields__}, "total": t.total,
                         "fits": t.total <= HEADROOM * memory})
        out["targets"].append({"target": name, "memory": memory, "gpu": gpu, "rows": rows,
                               "largest_n": largest_fitting(shape, files, patches, max_new_tokens, memory, gpu,
                                                            MAX_SAMPLES)})
    return out


def _human(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def format_fit(report: dict) -> str:
    from .policy.types import MAX_SAMPLES

    lines = [f"fit of {report['bundle']} ({report['family']}, {report['quant']}, frame {report['frame']}, "
             f"{report['vision_patches']} vision patches, up to {report['max_new_tokens']} new tokens per sample; "
             f"fits = total <= {report['headroom']:.0%} of the memory)"]
    for target in report["targets"]:
        largest = target["largest_n"]
        note = " (the engine's limit)" if largest == MAX_SAMPLES else " (not even one sample)" if largest == 0 else ""
        lines.append(f"  {target['target']}: {_human(target['memory'])}; largest N that fits: {largest}{note}")
        for r in target["rows"]:
            parts = ", ".join(f"{k.replace('_', ' ')} {_human(r[k])}" for k in FitTerms.__dataclass_fields__ if r[k])
            lines.append(f"    N={r['n']}: {_human(r['total'])} ({parts}) -> {'fits' if r['fits'] else 'does not fit'}")
    return "\n".join(lines)

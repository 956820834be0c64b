"""The transformers side of `star-export scale`: the reference pipeline's cost (generate + SAM 2 in
PyTorch, the way StAR's own evaluation runs) and teacher-forced parity of the GGUF against it."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np


def _dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def load_reference(hf_dir: Path, dtype: str, device: str = "cpu"):
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from engine.offline import from_local

    model = from_local(AutoModelForImageTextToText, hf_dir, "checkpoint", dtype=_dtype(dtype)).eval().to(device)
    tokenizer = from_local(AutoTokenizer, hf_dir, "checkpoint")
    processor = from_local(AutoProcessor, hf_dir, "checkpoint").image_processor
    return model, tokenizer, processor


def reference_generate(model, tokenizer, processor, image, query: str, *, frame: str, tokens: int,
                       greedy: bool = False) -> dict:
    """One sample of exactly `tokens` tokens (stops ignored), timed: the input preparation (resize +
    processor + tokenizer) and generate (vision tower, prefill, decode)."""
    import torch

    from engine.policy.hf_inputs import encode_batch

    t0 = time.perf_counter()
    enc = {k: v.to(model.device) for k, v in encode_batch(tokenizer, processor, [image], [query], frame=frame).items()}
    t1 = time.perf_counter()
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=not greedy,
                         temperature=None if greedy else 1.0, top_p=None if greedy else 0.9, top_k=None,
                         eos_token_id=[], pad_token_id=tokenizer.pad_token_id or 0)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    n_in = enc["input_ids"].shape[1]
    grid = [int(v) for v in enc["image_grid_thw"][0]]
    return {"inputs_ms": (t1 - t0) * 1e3, "generate_ms": (t2 - t1) * 1e3, "prompt_tokens": n_in,
            "image_grid_thw": grid, "image_tokens": grid[0] * grid[1] * grid[2] // 4,
            "new_tokens": int(out.shape[1] - n_in), "tokens": out[0, n_in:].tolist(), "encoded": enc}


def reference_parity_logits(hf_dir: Path, image, query: str, *, frame: str, steps: int,
                            adapter: Path | None = None) -> dict:
    """transformers fp32 (+ the LoRA adapter merged by PEFT, as `star-export verify` does): greedy tokens,
    then the teacher-forced logits over them. The model is freed before returning (a 3B fp32 model and a
    GGUF do not share 24 GB comfortably)."""
    from engine.policy.hf_inputs import teacher_forced_logits

    model, tokenizer, processor = load_reference(hf_dir, "fp32")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), local_files_only=True).merge_and_unload().eval()
    try:
        run = reference_generate(model, tokenizer, processor, image, query, frame=frame, tokens=steps, greedy=True)
        t0 = time.perf_counter()
        logits = teacher_forced_logits(model, run.pop("encoded"), run["tokens"])
        run["forced_ms"] = (time.perf_counter() - t0) * 1e3
        run["logits"] = logits
        return run
    finally:
        del model
        gc.collect()


def logit_errors(ours: np.ndarray, ref: np.ndarray, tolerance: float) -> dict:
    """The parity tests' measure: per position, max |ours - ref| / max |ref|; and greedy agreement where
    the reference's top two are further apart than twice the tolerance."""
    rel = np.abs(ours - ref).max(axis=1) / np.abs(ref).max(axis=1)
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) / np.abs(ref).max(axis=1) > 2 * tolerance
    agree = (ours.argmax(1) == ref.argmax(1))[decided]
    return {"max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean()), "positions": int(len(rel)),
            "decided": int(decided.sum()), "agreement": float(agree.mean()) if agree.size else None,
            "tolerance": tolerance, "ok": bool(rel.max() <= tolerance)}


def reference_segment_ms(checkpoint: Path, config: str, image, threads: int, device: str = "cpu") -> dict:
    """SAM 2 in PyTorch (the reference segmenter; bf16 autocast on CUDA as StAR runs it, fp32 on CPU):
    encoder and one box prompt."""
    import torch

    from engine.bench.report import time_ms
    from engine.segment import transforms
    from engine.segment.torch_backend import TorchSegmenter, build_model

    torch.set_num_threads(threads)
    seg = TorchSegmenter(build_model(config, checkpoint, device), device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    h, w = image.shape[:2]
    box = np.array([[w * 0.3, h * 0.3, w * 0.6, h * 0.7]])
    # Preprocessing + the encoder itself: `embed` would answer repeats from its cache.
    enc = time_ms(lambda: (seg._encode(transforms.preprocess(image, seg.image_size)), sync()), repeat=2, warmup=1,
                  budget_s=120)["median_ms"]
    emb = seg.embed(image)
    dec = time_ms(lambda: (seg.segment(emb, box, box[:, :2] + 10), sync()), repeat=3)["median_ms"]
    dtype = "bf16" if seg.bf16 else "fp32"
    return {"encoder_ms": enc, "decoder_1_ms": dec, "dtype": dtype}

"""`star bench segment`: SAM 2 encoder latency and decoder throughput per backend, batched prompts vs
one call per prompt. Random weights (timing does not depend on weight values)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .report import print_table, time_ms, write_bench_json

MODELS = {
    "shrunk": None,                                   # engine.segment.shrunk at 256 px
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def _model(name: str, workdir: Path):
    from ..segment.shrunk import write_shrunk_config
    from ..segment.torch_backend import build_model

    config = write_shrunk_config(workdir / "shrunk.yaml") if MODELS[name] is None else MODELS[name]
    return build_model(config, None, "cpu")


def _segmenters(model, backends: list[str], workdir: Path, device: str, threads: int) -> dict:
    from ..segment.torch_backend import TorchSegmenter

    out = {}
    if "torch" in backends:
        out["torch fp32"] = TorchSegmenter(model, device, bf16=False)
        if device == "cuda":
            out["torch bf16"] = TorchSegmenter(model, device, bf16=True)
    if "onnx" in backends:
        from ..segment.onnx_backend import OnnxSegmenter
        from ..segment.onnx_export import export_sam2_onnx

        exported = export_sam2_onnx(model, workdir / "onnx")
        out["onnx"] = OnnxSegmenter(exported.encoder, exported.decoder, threads=threads)
        model.to(device)
    return out


def _sync(device: str):
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def measure(seg, counts: list[int], repeat: int, device: str, rng) -> dict:
    from ..segment import transforms

    img = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    pixels = transforms.preprocess(img, seg.image_size)
    row = {"backend": seg.name, **seg.describe()}
    row["preprocess_ms"] = time_ms(lambda: transforms.preprocess(img, seg.image_size), repeat=repeat)["median_ms"]
    row["encoder_ms"] = time_ms(lambda: (seg._encode(pixels), _sync(device)), repeat=repeat, budget_s=60)["median_ms"]
    emb = seg.embed(img)
    for k in counts:
        x1, y1 = rng.uniform(0, 700, k), rng.uniform(0, 500, k)
        boxes = np.stack([x1, y1, x1 + rng.uniform(20, 300, k), y1 + rng.uniform(20, 260, k)], 1)
        points = boxes[:, :2] + 10
        batched = time_ms(lambda: seg.segment(emb, boxes, points, chunk=k), repeat=repeat)["median_ms"]
        row[f"decode_{k}_default_ms"] = time_ms(lambda: seg.segment(emb, boxes, points), repeat=repeat)["median_ms"]
        one = time_ms(lambda: seg.segment(emb, boxes[:1], points[:1]), repeat=repeat)["median_ms"]
        row[f"decode_{k}_batched_ms"] = batched
        row[f"decode_{k}_sequential_ms"] = one * k
        row[f"decode_{k}_speedup"] = one * k / batched
        row[f"decode_{k}_vs_8_calls"] = batched / (8 * one)
        out = seg.segment(emb, boxes, points)
        row[f"masks_{k}_ms"] = time_ms(lambda: transforms.logits_to_masks(out.logits, emb.orig_hw), repeat=repeat)["median_ms"]
    return row


def main(args) -> int:
    import torch

    threads = args.threads or 1
    torch.set_num_threads(threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    counts = list(args.prompts)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            work = Path(tmp) / name
            work.mkdir()
            model = _model(name, work)
            params = sum(p.numel() for p in model.parameters())
            for label, seg in _segmenters(model, backends, work, device, threads).items():
                row = measure(seg, counts, args.repeat, device, rng)
                rows.append({"model": name, "params_m": params / 1e6, "variant": label, **row})
    cols = ["model", "params M", "backend", "S", "encoder ms"]
    for k in counts:
        cols += [f"dec {k} one call", f"dec {k} 1-by-1", f"x{k}", f"dec {k} default"]
    cols += [f"{counts[-1]} vs 8 calls"]
    table = []
    for r in rows:
        line = [r["model"], r["params_m"], r["variant"], r["image_size"], r["encoder_ms"]]
        for k in counts:
            line += [r[f"decode_{k}_batched_ms"], r[f"decode_{k}_sequential_ms"], r[f"decode_{k}_speedup"],
                     r[f"decode_{k}_default_ms"]]
        line += [r[f"decode_{counts[-1]}_vs_8_calls"]]
        table.append(line)
    text = print_table(f"SAM 2 on {device} ({threads} thread(s)); ms, median; 'x' = one-by-one / batched", cols, table)
    path = write_bench_json(args.json, {"benchmark": "segment", "device": device, "rows": rows, "table": text})
    print(f"\nwrote {path}")
    return 0

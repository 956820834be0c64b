"""`star-export scale`: a real model shape end to end on this machine, with random weights.

For a named shape (`export.shapes`: qwen2.5-vl-3b, qwen2.5-vl-7b, qwen3-vl-8b; SAM 2.1 from the sam2
package's configs) it builds the architecture-exact random checkpoint once (cached, bf16 safetensors,
with StAR's LoRA on top where the shape has one), runs the real exporter on it (merge, F16 GGUF,
Q4_K_M, Q8_0, f16 mmproj, SAM 2 ONNX) measuring wall time, peak RSS and disk per stage, then the
engine on a photo-sized image at the protocol's frame: vision encoder, prefill, N samples decoded
together vs one by one, SAM 2.1 (ONNX Runtime and PyTorch), the vote, KV-cache bytes per N. The
obvious alternative runs in the same command: the transformers pipeline (bf16 / fp32 generate +
SAM 2 in PyTorch) on the same checkpoint and image. `--parity` adds teacher-forced logits of the F16
and Q8_0 GGUF (`--parity-quants`, F32 with an f32 mmproj too) against transformers fp32 at the real
frame; `--parity-only` skips the cost measurements.

With random weights the policy writes no usable boxes, so the end-to-end cost per query is composed
from the measured parts: policy(N) + SAM encoder + SAM decoder over N prompts + vote(N).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import time
from pathlib import Path

import numpy as np

from engine.bench.report import check_json_path, print_table, time_ms, write_bench_json
from engine.bench.resources import ResourceMonitor

QUERY = "the thing that keeps food cold"
PARITY_QUANTS = ("F32", "F16", "Q8_0")  # the GGUF forms `--parity` can compare (F32 with an f32 mmproj)
GiB = 2**30


def photo_like(width: int = 1280, height: int = 960, seed: int = 0) -> np.ndarray:
    """A photograph-sized RGB image with smooth regions, edges and sensor-like noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = Image.fromarray(low).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(30, 200))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r // 2, x + r, y + r // 2], fill=fill)
    arr = np.asarray(base).astype(np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _stage_for(line: str) -> str | None:
    """The exporter's log line that starts each stage -> the stage's name in the table."""
    for prefix, name in (("merging the LoRA", "merge LoRA"), ("converting to GGUF", "convert to GGUF"),
                         ("quantizing to", "quantize"), ("writing the vision projector", "mmproj"),
                         ("exporting SAM 2 to ONNX", "SAM 2 ONNX")):
        if line.startswith(prefix):
            return name + (" " + line.split()[-1] if prefix == "quantizing to" else "")
    return None


def build_inputs(shape, sam_config: str, work: Path, monitor: ResourceMonitor, log,
                 with_sam: bool = True) -> tuple[Path, Path | None, Path | None]:
    from engine.segment.shrunk import write_random_checkpoint as write_random_sam

    from .random_checkpoint import write_random_checkpoint, write_random_lora

    with monitor.stage("random checkpoint"):
        log(f"random {shape.name} checkpoint (bf16) in {work / 'hf'}")
        hf = write_random_checkpoint(shape, work / "hf")
        adapter = write_random_lora(shape, hf, work / "lora") if shape.lora else None
    if not with_sam:
        return hf, adapter, None
    sam = work / "sam2" / (Path(sam_config).stem + "-random.pt")
    if not sam.is_file():
        with monitor.stage("random SAM 2.1"):
            write_random_sam(sam_config, sam)
    return hf, adapter, sam


def export(hf: Path, adapter: Path | None, sam: Path, sam_config: str, bundle: Path, monitor: ResourceMonitor,
           log, *, sam_onnx: bool = True, q8: bool = True) -> None:
    """The bundle: Q4_K_M policy (F16 kept), mmproj, SAM 2 ONNX (`sam_onnx`), and a Q8_0 policy beside it (`q8`)."""
    from .api import PolicyOptions, SegmenterOptions, make_bundle
    from .quantize import quantize_model

    def stage_log(line: str) -> None:
        name = _stage_for(line)
        if name:
            monitor.begin(name)
        log(line)

    make_bundle(bundle, policy=PolicyOptions(hf, adapter=adapter, quant="Q4_K_M", keep_f16=True),
                segmenter=SegmenterOptions(sam, sam_config) if sam_onnx else None, name=f"scale-{hf.parent.name}",
                verify=False, log=stage_log)
    monitor.end()
    q8_path = bundle / "policy" / "model-q8_0.gguf"
    if q8 and not q8_path.is_file():
        with monitor.stage("quantize Q8_0"):
            quantize_model(bundle / "policy" / "model-f16.gguf", q8_path, "Q8_0")
    gguf_road(bundle, monitor, log)


def gguf_road(bundle: Path, monitor: ResourceMonitor, log) -> None:
    """What the same policy costs from a GGUF pair a user already has (the Q4_K_M + mmproj just written):
    `star-export policy --gguf --mmproj`, copied and hard-linked, into bundles removed afterwards."""
    from .api import GgufPolicyOptions, make_bundle

    pair = GgufPolicyOptions(bundle / "policy" / "model-q4_k_m.gguf", bundle / "policy" / "mmproj-f16.gguf")
    for how in ("copied", "linked"):
        target = bundle.parent / f"gguf-{how}"
        shutil.rmtree(target, ignore_errors=True)
        with monitor.stage(f"GGUF pair -> bundle ({how})"):
            make_bundle(target, policy=pair, link=how == "linked", verify=False, log=log)
        shutil.rmtree(target)


def export_f32(hf: Path, adapter: Path | None, bundle: Path, monitor: ResourceMonitor, log) -> None:
    """A policy-only bundle at F32 with an f32 mmproj: the parity run that separates llama.cpp's f16 rounding
    from any real difference."""
    from .api import PolicyOptions, make_bundle

    with monitor.stage("F32 GGUF + f32 mmproj"):
        make_bundle(bundle, policy=PolicyOptions(hf, adapter=adapter, quant="F32", mmproj_quant="f32"),
                    name=f"scale-{hf.parent.name}-f32", verify=False, log=log)


def _open_policy(bundle, model_rel: str, n_ctx: int, max_samples: int, threads: int, device: str = "cpu",
                 flash_attn: bool | str | None = None):
    from engine.policy.llama_backend import LlamaPolicy

    spec = bundle.manifest.policy
    return LlamaPolicy(bundle.path(model_rel), bundle.path(spec.mmproj), family=spec.family, frame=spec.frame,
                       prompt_family=spec.prompt_family, max_samples=max_samples, n_ctx=n_ctx, threads=threads,
                       n_gpu_layers=-1 if device == "cuda" else 0, reuse_prefix=False, flash_attn=flash_attn)


SAMPLINGS = {  # the decode's sampler chain, per row: StAR's, the same after a top-k cut, and greedy
    "top-k-40": dict(top_k=40),
    "greedy": dict(temperature=0.0, top_p=1.0),
}


def measure_policy(bundle, image, counts: list[int], tokens: int, threads: int, monitor: ResourceMonitor,
                   device: str = "cpu", samplings: tuple[str, ...] = ()) -> list[dict]:
    """Each N once (a 7B prefill takes minutes): every run pays vision + prefill, so N together vs
    N x (one sample) compares equal work. `samplings` (names in SAMPLINGS) decode each N again with another
    sampler chain, to show what sampling over the vocabulary costs per step (on a GPU it runs on the host)."""
    from engine.fit import context_positions
    from engine.policy.types import SamplingParams

    sampling = SamplingParams(temperature=1.0, top_p=0.9, seed=0, max_new_tokens=tokens, ignore_stop=True)
    policy = _open_policy(bundle, bundle.manifest.policy.model, context_positions(max(counts), tokens), max(counts),
                          threads, device)
    rows = []
    try:
        for n in sorted(set(counts)):
            with monitor.stage(f"policy N={n}") as usage:
                t0 = time.perf_counter()
                policy.sample(image, QUERY, n, sampling)
                wall = (time.perf_counter() - t0) * 1e3
            t = policy.timings
            row = {"n": n, "wall_ms": wall, "vision_ms": t.vision_ms, "prefill_ms": t.prefill_ms,
                   "prefill_tokens": t.prefill_tokens, "decode_ms": t.decode_ms, "decode_tokens": t.decode_tokens,
                   "tokens_per_s": t.decode_tokens / (t.decode_ms / 1e3),
                   "kv_bytes": policy.kv_cache_bytes(t.prefill_tokens + n * tokens),
                   "context_kv_bytes": policy.kv_cache_bytes(policy.n_ctx), "peak_rss_bytes": usage["peak_rss_bytes"]}
            for name in samplings:
                policy.sample(image, QUERY, n, dataclasses.replace(sampling, **SAMPLINGS[name]))
                row[f"decode_ms_{name}"] = policy.timings.decode_ms
            rows.append(row)
    finally:
        policy.close()
    one = rows[0]["wall_ms"]
    for r in rows:
        r["one_by_one_ms"] = one * r["n"]
        r["speedup"] = r["one_by_one_ms"] / r["wall_ms"]
    return rows


def _sync(device: str):
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _prompts(k: int, h: int, w: int, rng) -> np.ndarray:
    x1, y1 = rng.uniform(0, w * 0.6, k), rng.uniform(0, h * 0.6, k)
    return np.stack([x1, y1, x1 + rng.uniform(40, w * 0.3, k), y1 + rng.uniform(40, h * 0.3, k)], 1)


def _open_segmenter(backend: str, bundle, checkpoint: Path, config: str, threads: int, device: str):
    """The engine's segmenter for the end-to-end row: the bundle's ONNX graphs under ONNX Runtime, or the
    random checkpoint under PyTorch (bf16 autocast on CUDA, as the product runs it there)."""
    if backend == "torch":
        from engine.segment.torch_backend import load_torch_segmenter

        return load_torch_segmenter(config, checkpoint, device)
    from engine.segment.onnx_backend import OnnxSegmenter

    spec = bundle.manifest.segmenter
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return OnnxSegmenter(bundle.path(spec.encoder_onnx), bundle.path(spec.decoder_onnx), threads=threads,
                         providers=providers)


def measure_segment(bundle, checkpoint: Path, config: str, image, counts: list[int], threads: int,
                    device: str = "cpu", backend: str = "onnx") -> dict:
    """The engine's segmenter (`backend`): encoder, and the decoder over k box prompts for each N (masks left
    on the device where the backend keeps them there, as the product path does); then the reference, SAM 2
    in PyTorch through sam2's own model, encoder and one prompt."""
    from engine.segment import transforms

    from .scale_reference import reference_segment_ms

    seg = _open_segmenter(backend, bundle, checkpoint, config, threads, device)
    sync = _sync(device)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    # Preprocessing + the encoder itself: `embed` would answer repeats from its cache.
    encode = lambda: (seg._encode(transforms.preprocess(image, seg.image_size)), sync())
    label = f"torch {'bf16' if seg.bf16 else 'fp32'}" if backend == "torch" else "onnxruntime"
    out = {"backend": label, "encoder_ms": time_ms(encode, repeat=2, warmup=1, budget_s=120)["median_ms"]}
    emb = seg.embed(image)
    decode = seg.device_segment if seg.device_outputs else seg.segment
    for k in counts:
        boxes = _prompts(k, h, w, rng)
        out[f"decoder_{k}_ms"] = time_ms(lambda b=boxes: (decode(emb, b, b[:, :2] + 10), sync()), repeat=3)["median_ms"]
    if backend == "onnx":
        out["onnx_providers"] = seg.providers
    torch_ms = reference_segment_ms(checkpoint, config, image, threads, device)
    out.update({"torch_encoder_ms": torch_ms["encoder_ms"], "torch_decoder_1_ms": torch_ms["decoder_1_ms"],
                "torch_dtype": torch_ms["dtype"]})
    return out


def measure_vote(counts: list[int], height: int, width: int, device: str = "cpu") -> dict:
    """The vote over N masks at the image's size; on cuda the masks live on the GPU (as the product
    path keeps them) and the CUDA kernel votes."""
    from engine.bench.voting import make_samples
    from engine.voting import majority_vote

    out = {}
    for n in counts:
        samples = [[(m[:height, :width], s, label) for m, s, label in sample]
                   for sample in make_samples(n, max(height, width))]
        if device == "cuda":
            import cupy

            samples = [[(cupy.asarray(m), s, label) for m, s, label in sample] for sample in samples]
        out[n] = time_ms(lambda s=samples: majority_vote(s, shape=(height, width)), repeat=3)["median_ms"]
    return out


def measure_reference(hf: Path, dtype: str, image, frame: str, tokens: int, monitor: ResourceMonitor,
                      device: str = "cpu") -> dict:
    from .scale_reference import load_reference, reference_generate

    with monitor.stage(f"transformers {dtype}") as usage:
        t0 = time.perf_counter()
        model, tokenizer, processor = load_reference(hf, dtype, device)
        load_s = time.perf_counter() - t0
        run = reference_generate(model, tokenizer, processor, image, QUERY, frame=frame, tokens=tokens)
        del model
        gc.collect()
    run.pop("encoded")
    run.pop("tokens")
    return {"dtype": dtype, "load_s": load_s, **run, "peak_rss_bytes": usage["peak_rss_bytes"]}


def measure_parity(hf: Path, adapter: Path | None, sources: dict, image, frame: str, steps: int, threads: int,
                   monitor: ResourceMonitor) -> dict:
    """Teacher-forced logits of each GGUF in `sources` ({quant: (bundle, model file)}) against transformers fp32,
    twice: with llama.cpp's flash attention off (the export's own error, judged against the tolerance) and
    as llama.cpp chooses by default (on the CPU its flash-attention kernel works at f16 inside, which at a
    real depth and length moves the logits more than the weights' rounding does)."""
    from .quant_types import QUANTS
    from .scale_reference import logit_errors, reference_parity_logits

    with monitor.stage("parity: transformers fp32"):
        ref = reference_parity_logits(hf, image, QUERY, frame=frame, steps=steps, adapter=adapter)
    out = {"steps": steps, "transformers": {k: ref[k] for k in ("prompt_tokens", "image_tokens", "image_grid_thw",
                                                                 "generate_ms", "forced_ms")}}
    for quant, (bundle, rel) in sources.items():
        runs = {}
        for flash in (False, "auto"):
            with monitor.stage(f"parity: GGUF {quant}, flash attention {'off' if flash is False else 'auto'}"):
                policy = _open_policy(bundle, rel, 4096, 1, threads, flash_attn=flash)
                try:
                    t0 = time.perf_counter()
                    ours = policy.forced_logits(image, QUERY, ref["tokens"])
                    runs[flash] = (ours, (time.perf_counter() - t0) * 1e3, policy.timings.prefill_tokens)
                finally:
                    policy.close()
        (off, off_ms, prompt_tokens), (auto, auto_ms, _) = runs[False], runs["auto"]
        auto_errors = logit_errors(auto, ref["logits"], QUANTS[quant].logit_tolerance)
        out[quant] = {**logit_errors(off, ref["logits"], QUANTS[quant].logit_tolerance), "forced_ms": off_ms,
                      "prompt_tokens": prompt_tokens, "prompt_tokens_agree": prompt_tokens == ref["prompt_tokens"],
                      "mmproj": bundle.manifest.policy.mmproj,
                      "flash_attention_auto": {k: auto_errors[k] for k in ("max_rel_error", "mean_rel_error", "agreement")}
                      | {"forced_ms": auto_ms}}
    return out


def end_to_end(policy_rows: list[dict], seg: dict, vote: dict, reference: list[dict]) -> list[dict]:
    """Per query: ours = policy(N) + the engine's SAM encoder + decoder(N prompts) + vote(N); the reference = N runs of
    transformers generate + SAM 2 in PyTorch (encoder once, one prompt per run)."""
    rows = []
    for r in policy_rows:
        n = r["n"]
        ours = r["wall_ms"] + seg["encoder_ms"] + seg[f"decoder_{n}_ms"] + (vote.get(n, 0.0) if n > 1 else 0.0)
        row = {"n": n, "ours_ms": ours}
        for ref in reference:
            theirs = n * (ref["inputs_ms"] + ref["generate_ms"] + seg["torch_decoder_1_ms"]) + seg["torch_encoder_ms"]
            row[f"reference_{ref['dtype']}_ms"] = theirs
            row[f"speedup_vs_{ref['dtype']}"] = theirs / ours
        rows.append(row)
    return rows


def _gib(v) -> float:
    return v / GiB


def report(result: dict) -> str:
    ex = result["export"]
    text = print_table(
        f"{result['shape']} + {result['sam']} on {result['device']}: export with {result['threads']} thread(s) "
        "(peak RSS: this process and its children; disk: growth since the start, intermediates included)",
        ["stage", "wall s", "peak RSS GiB", "peak disk GiB", "disk after GiB"],
        [[name, s["wall_s"], _gib(s["peak_rss_bytes"]), _gib(s["peak_disk_bytes"]), _gib(s.get("disk_after_bytes", 0))]
         for name, s in ex.items()])
    text += "\n" + print_table("bundle files", ["file", "GiB"],
                               [[k, _gib(v)] for k, v in result["files"].items()])
    if result.get("policy"):
        text += _cost_tables(result)
    if result.get("parity"):
        p = result["parity"]
        quants = [q for q in PARITY_QUANTS if q in p]
        text += "\n" + print_table(
            f"parity at the real frame: teacher-forced logits vs transformers fp32 over {p['steps']} greedy tokens "
            f"(image grid {p['transformers']['image_grid_thw']}, {p['transformers']['image_tokens']} image tokens); "
            "llama.cpp with flash attention off, and as it chooses ('auto': on for these models on the CPU)",
            ["GGUF", "mmproj", "max rel err", "mean rel err", "tolerance", "agreement", "prompt tokens (ours / ref)",
             "ok", "max rel err auto", "mean rel err auto", "forced ms off", "forced ms auto"],
            [[q, Path(p[q].get("mmproj", "")).name, p[q]["max_rel_error"], p[q]["mean_rel_error"], p[q]["tolerance"],
              p[q]["agreement"], f"{p[q]['prompt_tokens']} / {p['transformers']['prompt_tokens']}", p[q]["ok"],
              p[q]["flash_attention_auto"]["max_rel_error"], p[q]["flash_attention_auto"]["mean_rel_error"],
              p[q]["forced_ms"], p[q]["flash_attention_auto"]["forced_ms"]]
             for q in quants])
    return text


def _cost_tables(result: dict) -> str:
    text = "\n" + print_table(
        f"policy Q4_K_M, image {result['image']} at frame {result['frame']}, {result['tokens']} tokens per sample "
        "(stops ignored); 'x' = N one-by-one / N together",
        ["N", "vision ms", "prefill ms", "prompt tok", "decode ms", "tok/s (all N)", "N together ms", "one-by-one ms",
         "x", "KV GiB", "peak RSS GiB"],
        [[r["n"], r["vision_ms"], r["prefill_ms"], r["prefill_tokens"], r["decode_ms"], r["tokens_per_s"], r["wall_ms"],
          r["one_by_one_ms"], r["speedup"], _gib(r["kv_bytes"]), _gib(r["peak_rss_bytes"])] for r in result["policy"]])
    extra = [k for k in SAMPLINGS if f"decode_ms_{k}" in result["policy"][0]]
    if extra:
        text += "\n" + print_table(
            "decode ms by sampler chain (the same N and tokens; StAR's = temperature 1, top-p 0.9)",
            ["N", "StAR's", *extra], [[r["n"], r["decode_ms"], *[r[f"decode_ms_{k}"] for k in extra]]
                                       for r in result["policy"]])
    seg = result["segment"]
    counts = [r["n"] for r in result["policy"]]
    text += "\n" + print_table(
        f"{result['sam']} on the image (ms): the engine's, and sam2's own model as StAR runs it", ["backend", "encoder", *[f"decoder {k} prompts" for k in counts]],
        [[seg["backend"], seg["encoder_ms"], *[seg[f"decoder_{k}_ms"] for k in counts]],
         [f"reference: sam2 {seg['torch_dtype']}", seg["torch_encoder_ms"], seg["torch_decoder_1_ms"],
          *[None] * (len(counts) - 1)]])
    text += "\n" + print_table("vote (ms)", ["N", "vote ms"], [[n, v] for n, v in result["vote"].items()])
    if result["reference"]:
        text += "\n" + print_table(
            "transformers reference (generate of one sample, same image and token count)",
            ["dtype", "load s", "inputs ms", "generate ms", "prompt tok", "peak RSS GiB"],
            [[r["dtype"], r["load_s"], r["inputs_ms"], r["generate_ms"], r["prompt_tokens"], _gib(r["peak_rss_bytes"])]
             for r in result["reference"]])
        refs = [r["dtype"] for r in result["reference"]]
        text += "\n" + print_table(
            f"end to end per query (ms): ours = policy(N) + SAM 2 ({seg['backend']}) + vote; reference = N x (generate + "
            "SAM 2 torch decoder) + one encoder; 'x' = reference / ours",
            ["N", "ours", *[f"ref {d}" for d in refs], *[f"x vs {d}" for d in refs]],
            [[r["n"], r["ours_ms"], *[r[f"reference_{d}_ms"] for d in refs], *[r[f"speedup_vs_{d}"] for d in refs]]
             for r in result["end_to_end"]])
    return text


def run_scale(shape, sam_name: str, sam_config: str, work: Path, *, counts: list[int], tokens: int,
              image_wh: tuple[int, int] = (1280, 960), reference: list[str] = ("bf16",), parity: bool = False,
              parity_steps: int = 16, parity_quants: tuple[str, ...] = ("F16", "Q8_0"), parity_only: bool = False,
              threads: int = 1, device: str = "cpu", segmenter: str = "onnx", samplings: tuple[str, ...] = (),
              log=print) -> dict:
    """Every measurement of one shape; `shape` an `export.shapes.RealShape` (a published one, or its
    `shrunk()` CI form), `sam_config` a sam2 package config or a YAML file. `parity_only`: the export stages
    the parity needs and the parity, no cost measurements. `segmenter`: the engine's SAM 2 in the end-to-end
    rows, "onnx" (exported into the bundle) or "torch" (the checkpoint itself; no ONNX export). The Q8_0
    policy is written where the parity compares it, and on the CPU, where the export's cost is measured."""
    from engine.bundle import load_bundle

    counts = sorted(set(counts))
    width, height = image_wh
    image = photo_like(width, height)
    monitor = ResourceMonitor(work)
    parity = parity or parity_only
    policy = seg = vote = None
    refs, sources, files = [], {}, {}
    try:
        main_bundle = not parity_only or bool({"F16", "Q8_0"} & set(parity_quants))
        hf, adapter, sam = build_inputs(shape, sam_config, work, monitor, log, with_sam=main_bundle)
        bundle_dir = work / "bundle"
        if main_bundle:
            export(hf, adapter, sam, sam_config, bundle_dir, monitor, log, sam_onnx=segmenter == "onnx",
                   q8=device == "cpu" or (parity and "Q8_0" in parity_quants))
            bundle = load_bundle(bundle_dir, verify=False)
            files = {p.relative_to(bundle_dir).as_posix(): p.stat().st_size
                     for p in sorted(bundle_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")}
            sources = {q: (bundle, rel) for q, rel in (("F16", "policy/model-f16.gguf"), ("Q8_0", "policy/model-q8_0.gguf"))
                       if q in parity_quants}
        if parity and "F32" in parity_quants:
            export_f32(hf, adapter, work / "bundle-f32", monitor, log)
            f32 = load_bundle(work / "bundle-f32", verify=False)
            sources = {"F32": (f32, f32.manifest.policy.model), **sources}
            files.update({f"bundle-f32/{p.relative_to(f32.root).as_posix()}": p.stat().st_size
                          for p in sorted(f32.root.rglob("*.gguf"))})
        export_stages = dict(monitor.stages)
        if not parity_only:
            log("policy: N samples together")
            policy = measure_policy(bundle, image, counts, tokens, threads, monitor, device, samplings)
            log(f"SAM 2.1: the engine's ({segmenter}) and the reference (PyTorch)")
            seg = measure_segment(bundle, sam, sam_config, image, counts, threads, device, segmenter)
            vote = measure_vote([n for n in counts if n > 1], height, width, device)
            refs = [measure_reference(hf, d, image, shape.frame, tokens, monitor, device) for d in reference]
        parity_result = measure_parity(hf, adapter, sources, image, shape.frame, parity_steps, threads,
                                       monitor) if parity else None
    finally:
        monitor.close()
    return {"shape": shape.name, "sam": sam_name, "frame": shape.frame, "image": f"{width}x{height}",
            "device": device, "segmenter": segmenter, "threads": threads, "tokens": tokens, "parameters": shape.parameter_count(),
            "export": export_stages, "files": files, "policy": policy, "segment": seg, "vote": vote,
            "reference": refs, "end_to_end": end_to_end(policy, seg, vote, refs) if policy else None,
            "parity": parity_result}


def main(args) -> int:
    import torch

    from engine.fileio import cache_dir

    from .shapes import SAM2_SHAPES, get_shape

    check_json_path(args.json)  # before hours of work, not after
    shape = get_shape(args.shape)
    shape = shape.shrunk() if args.shrunk else shape
    if args.no_lora:
        shape = dataclasses.replace(shape, lora=None)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    work = Path(args.work) if args.work else cache_dir() / "scale" / shape.name
    sam_name, sam_config = args.sam, SAM2_SHAPES[args.sam]
    if args.shrunk:
        from engine.segment.shrunk import write_shrunk_config

        sam_name, sam_config = "sam2.1-hiera-shrunk", str(write_shrunk_config(work / "sam2.1_hiera_shrunk.yaml"))
    result = run_scale(shape, sam_name, sam_config, work, counts=args.counts, tokens=args.tokens,
                       image_wh=args.image, reference=args.reference, parity=args.parity,
                       parity_steps=args.parity_steps, parity_quants=tuple(args.parity_quants),
                       parity_only=args.parity_only, threads=threads, device=args.device, segmenter=args.segmenter,
                       samplings=tuple(args.samplings),
                       log=lambda line: print(line, flush=True))
    text = report(result)
    path = write_bench_json(args.json, {"benchmark": "scale", **result, "table": text})
    print(f"\nwrote {path}")
    if args.clean:
        shutil.rmtree(work, ignore_errors=True)
        print(f"removed {work}")
    return 0

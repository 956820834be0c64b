"""`star bench policy`: the llama.cpp policy of a bundle: vision encoder, prompt prefill and decoding of
N samples together (one shared prefill, one batch per step), against the obvious alternative, N separate
one-sample runs. Every sample decodes exactly --tokens tokens (stops ignored), so the work is equal."""

from __future__ import annotations

from ..samples import sample_scene
from .report import print_table, time_ms, write_json


def measure(policy, image, query: str, counts: list[int], tokens: int, repeat: int) -> list[dict]:
    from ..policy.types import SamplingParams

    sampling = SamplingParams(temperature=1.0, top_p=0.9, seed=0, max_new_tokens=tokens, ignore_stop=True)
    last = {}

    def run(n):
        policy.sample(image, query, n, sampling)
        last["t"] = policy.timings

    timed = {}
    for n in sorted({1, *counts}):  # N = 1 is also the one-by-one baseline: measured once
        timed[n] = (time_ms(lambda: run(n), repeat=repeat, budget_s=120)["median_ms"], last["t"])
    one_ms, one_t = timed[1]
    rows = []
    for n in counts:
        batched_ms, t = timed[n]
        rows.append({"n": n, "vision_ms": t.vision_ms, "prefill_ms": t.prefill_ms, "prefill_tokens": t.prefill_tokens,
                     "decode_ms": t.decode_ms, "decode_tokens": t.decode_tokens,
                     "tokens_per_s": t.decode_tokens / (t.decode_ms / 1e3), "batched_ms": batched_ms,
                     "sequential_ms": one_ms * n, "one_sample_tokens_per_s": one_t.decode_tokens / (one_t.decode_ms / 1e3),
                     "speedup": one_ms * n / batched_ms})
    return rows


def main(args) -> int:
    from ..bundle import load_bundle
    from ..devices import resolve_device
    from ..pipeline import bundle_root
    from ..policy.llama_backend import LlamaPolicy

    counts = sorted({int(k) for k in args.counts.split(",")})
    b = load_bundle(bundle_root(args.bundle))
    spec = b.manifest.policy
    device = resolve_device(args.device)
    threads = args.threads or 1
    image, query = sample_scene()
    policy = LlamaPolicy(b.path(spec.model), b.path(spec.mmproj), family=spec.family, frame=spec.frame,
                         prompt_family=spec.prompt_family, max_samples=max(counts),
                         n_ctx=2048 + max(counts) * args.tokens, n_gpu_layers=-1 if device == "cuda" else 0,
                         threads=threads)
    try:
        rows = measure(policy, image, query, counts, args.tokens, args.repeat)
    finally:
        policy.close()
    cols = ["N", "vision ms", "prefill ms", "decode ms", "tok/s (all N)", "N together ms", "N one-by-one ms", "x"]
    table = [[r["n"], r["vision_ms"], r["prefill_ms"], r["decode_ms"], r["tokens_per_s"], r["batched_ms"], r["sequential_ms"],
              r["speedup"]] for r in rows]
    text = print_table(f"policy {b.manifest.name} ({spec.quant}, {spec.family}) on {device}, {threads} thread(s), "
                       f"{args.tokens} tokens per sample; 'x' = one-by-one / together", cols, table)
    path = write_json(args.json, {"benchmark": "policy", "bundle": b.identity(), "device": device, "tokens": args.tokens,
                                  "rows": rows, "table": text})
    print(f"\nwrote {path}")
    return 0


"""`star bench policy`: the llama.cpp policy of a bundle: vision encoder, prompt prefill and decoding of
N samples together (one shared prefill, one batch per step), against the obvious alternative, N separate
one-sample runs. Every sample decodes exactly --tokens tokens (stops ignored), so the work is equal.
Two more comparisons: a follow-up query on the same image with the system + image prefix reused vs
prefilled again, and grammar-constrained vs free decoding (speed, and how many samples parse)."""

from __future__ import annotations

from ..samples import sample_scene
from .report import print_table, time_ms, write_bench_json


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


FOLLOW_UPS = ("the largest object", "something you could eat", "everything left of the tree")


def measure_prefix(policy, image, queries: tuple[str, ...] = FOLLOW_UPS) -> list[dict]:
    """Time to the first token of a follow-up query on one image: prefix reused (hit) vs prefilled (miss)."""
    from ..policy.types import SamplingParams

    first = SamplingParams.greedy(1)
    rows = []
    for case in ("miss", "hit"):
        runs = []
        for q in queries:
            if case == "miss":
                policy.forget_prefix()
            else:
                policy.sample(image, "warm the prefix", 1, first)
            ms = time_ms(lambda: policy.sample(image, q, 1, first), repeat=1, warmup=0)["median_ms"]
            t = policy.timings
            assert t.prefix_hit == (case == "hit"), "prefix reuse did not behave as the benchmark expects"
            runs.append((ms, t.vision_ms, t.prefill_ms))
        k = len(runs)
        rows.append({"case": case, "first_token_ms": sum(r[0] for r in runs) / k,
                     "vision_ms": sum(r[1] for r in runs) / k, "prefill_ms": sum(r[2] for r in runs) / k})
    rows[1]["speedup"] = rows[0]["first_token_ms"] / rows[1]["first_token_ms"]
    return rows


def measure_grammar(policy, image, query: str, n: int, tokens: int, frame: str) -> list[dict]:
    """N samples decoded freely vs under the answer grammar (stops honoured: the grammar ends the answer)."""
    from ..policy.types import SamplingParams
    from ..protocol import parse_answer

    rows = []
    h, w = image.shape[:2]
    for constrained in (False, True):
        sampling = SamplingParams(seed=0, max_new_tokens=tokens, constrained=constrained)
        out = policy.sample(image, query, n, sampling)
        t = policy.timings
        answered = [c for c in out if "</answer>" in c.text]
        parsed = [c for c in answered if parse_answer(c.text, image_size=(w, h), frame=frame).status != "failed"]
        rows.append({"constrained": constrained, "n": n, "decode_ms": t.decode_ms, "decode_tokens": t.decode_tokens,
                     "tokens_per_s": t.decode_tokens / max(t.decode_ms / 1e3, 1e-9),
                     "answered": len(answered), "parsed": len(parsed)})
    return rows


def main(args) -> int:
    from ..bundle import load_bundle
    from ..devices import resolve_device
    from ..pipeline import bundle_root
    from ..policy.llama_backend import LlamaPolicy

    counts = sorted(set(args.counts))
    b = load_bundle(bundle_root(args.bundle), verify=getattr(args, "verify", True))
    spec = b.manifest.policy
    device = resolve_device(args.device)
    threads = args.threads or 1
    image, query = sample_scene()
    policy = LlamaPolicy(b.path(spec.model), b.path(spec.mmproj), family=spec.family, frame=spec.frame,
                         prompt_family=spec.prompt_family, max_samples=max(counts),
                         n_ctx=2048 + max(counts) * args.tokens, n_gpu_layers=-1 if device == "cuda" else 0,
                         threads=threads, reuse_prefix=False)  # every run pays its prefill: equal work
    try:
        rows = measure(policy, image, query, counts, args.tokens, args.repeat)
        policy.reuse_prefix = True
        prefix = measure_prefix(policy, image)
        grammar = measure_grammar(policy, image, query, min(8, max(counts)), args.tokens, spec.frame)
    finally:
        policy.close()
    cols = ["N", "vision ms", "prefill ms", "decode ms", "tok/s (all N)", "N together ms", "N one-by-one ms", "x"]
    table = [[r["n"], r["vision_ms"], r["prefill_ms"], r["decode_ms"], r["tokens_per_s"], r["batched_ms"], r["sequential_ms"],
              r["speedup"]] for r in rows]
    text = print_table(f"policy {b.manifest.name} ({spec.quant}, {spec.family}) on {device}, {threads} thread(s), "
                       f"{args.tokens} tokens per sample; 'x' = one-by-one / together", cols, table)
    text += "\n" + print_table(
        "follow-up query on the same image, time to its first token (mean of 3 queries); 'x' = miss / hit",
        ["prefix", "first token ms", "vision ms", "prefill ms", "x"],
        [[r["case"], r["first_token_ms"], r["vision_ms"], r["prefill_ms"], r.get("speedup", 1.0)] for r in prefix])
    text += "\n" + print_table(
        f"answer grammar: N = {grammar[0]['n']}, up to {args.tokens} tokens per sample; answered = wrote </answer>, "
        "parsed = the parser read it",
        ["decoding", "decode ms", "tokens", "tok/s", "answered", "parsed"],
        [["constrained" if r["constrained"] else "free", r["decode_ms"], r["decode_tokens"], r["tokens_per_s"],
          f"{r['answered']}/{r['n']}", f"{r['parsed']}/{r['n']}"] for r in grammar])
    path = write_bench_json(args.json, {"benchmark": "policy", "bundle": b.identity(), "device": device, "tokens": args.tokens,
                                  "rows": rows, "prefix_reuse": prefix, "grammar": grammar, "table": text})
    print(f"\nwrote {path}")
    return 0


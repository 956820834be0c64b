"""`star bench pipeline`: one query end to end (policy, parse, SAM encode + decode, vote) for N in
{1, 8, 32}, per stage, on the bundled sample scene; the ratio column is what N samples cost against
StAR's direct prediction (N = 1), i.e. the price of test-time scaling on this machine."""

from __future__ import annotations

import statistics
from dataclasses import asdict

from ..samples import sample_scene
from .report import print_table, write_bench_json

STAGES = ("vision_ms", "prefill_ms", "decode_ms", "parse_ms", "sam_encode_ms", "sam_decode_ms", "vote_ms", "total_ms")


def measure(reasoner, image, query: str, counts: list[int], repeat: int, max_new_tokens: int) -> list[dict]:
    from ..pipeline import sampling_for

    rows = []
    cache = getattr(reasoner.segmenter, "cache", None)
    for n in counts:
        runs = []
        for r in range(repeat + 1):  # the first run warms the runtime (allocations, kernels) and is dropped
            # Every run re-asks the same image: without this the SAM encoder would be an embedding-cache hit
            # after the first run and report ~0 ms (`bench segment` measures the encoder on its own).
            hits = cache.hits if cache is not None else 0
            if cache is not None:
                cache.clear()
            result = reasoner.run(image, query, n, sampling=sampling_for(n, seed=r, max_new_tokens=max_new_tokens))
            runs.append(asdict(result.timings) | {"objects": len(result.object_masks),
                                                  "ok": sum(s.status == "ok" for s in result.samples),
                                                  "sam_cache_hits": (cache.hits if cache is not None else 0) - hits})
        runs = runs[1:]
        row = {"n": n, **{k: statistics.median(run[k] for run in runs)
                          for k in (*STAGES, "decode_tokens", "objects", "ok", "sam_cache_hits")}}
        rows.append(row)
    base = rows[0]["total_ms"] if rows and rows[0]["n"] == 1 else None
    for row in rows:
        row["vs_n1"] = row["total_ms"] / base if base else None
    return rows


def main(args) -> int:
    from ..pipeline import load_reasoner

    counts = sorted(set(args.counts))
    image, query = sample_scene()
    if args.query:
        query = args.query
    reasoner = load_reasoner(args.bundle, device=args.device, threads=args.threads or 1, max_samples=max(counts),
                             max_new_tokens=args.max_new_tokens, verify=getattr(args, "verify", True))
    # Each run re-asks the same query: without this every run after the first would reuse the image
    # prefix and report no vision encoder time (`bench policy` measures reuse on its own).
    if hasattr(reasoner.policy, "reuse_prefix"):
        reasoner.policy.reuse_prefix = False
    try:
        rows = measure(reasoner, image, query, counts, args.repeat, args.max_new_tokens)
    finally:
        reasoner.close()
    cols = ["N", "vision", "prefill", "decode", "tokens", "parse", "SAM enc", "SAM dec", "objects", "vote", "total", "x N=1"]
    table = [[r["n"], r["vision_ms"], r["prefill_ms"], r["decode_ms"], r["decode_tokens"], r["parse_ms"], r["sam_encode_ms"],
              r["sam_decode_ms"], r["objects"], r["vote_ms"], r["total_ms"], r["vs_n1"]] for r in rows]
    bundle = reasoner.bundle
    text = print_table(f"pipeline, bundle {bundle.get('name')}, query {query!r}; ms, median of {args.repeat}", cols, table)
    path = write_bench_json(args.json, {"benchmark": "pipeline", "bundle": bundle, "query": query, "rows": rows, "table": text})
    print(f"\nwrote {path}")
    return 0

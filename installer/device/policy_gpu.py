"""llama.cpp's CUDA offload on the nano bundle (run by installer/device/check.sh).

1. The greedy answer to the sample scene through the whole product path (`load_reasoner`, `device="cuda"`:
   every layer and the vision projector on the GPU) against the same on the CPU, in a child process that
   sees no GPU (CUDA_VISIBLE_DEVICES empty), so the CPU side is llama.cpp's CPU backend alone: the answer's
   text, its token ids and the final mask must be identical.
2. N = 1 / 8 / 32 on both devices (`star bench policy`'s measurement: exactly --tokens tokens per sample,
   stops ignored, all N decoded together after one prefill): vision, prefill, decode, tokens/s, and the
   GPU's speed-up over the CPU row.
Prints a table and writes JSON. Without a GPU (the dry run) the GPU rows are skipped and said so.

    python installer/device/policy_gpu.py --json OUT/policy-nano.json [--counts 1,8,32] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

QUERY = "what coffee is served in"


def greedy_answer(device: str) -> dict:
    """The sample scene's greedy answer through the whole product path on `device`, and the policy's token
    ids for the same greedy decode."""
    import hashlib

    from engine.pipeline import load_reasoner
    from engine.policy.types import SamplingParams
    from engine.samples import sample_scene

    image, _ = sample_scene()
    reasoner = load_reasoner(device=device, max_samples=1)
    try:
        result = reasoner.run(image, QUERY, n=1)
        sample = result.samples[0]
        tokens = reasoner.policy.sample(image, QUERY, 1, SamplingParams.greedy(1024))[0].token_ids
        tm = result.timings
        return {"device": device, "text": sample.text, "token_ids": tokens, "status": sample.status,
                "labels": [target.label for target in sample.targets], "mask_pixels": int(result.mask.sum()),
                "mask_sha256": hashlib.sha256(result.mask.tobytes()).hexdigest(),
                "timings_ms": {"vision": tm.vision_ms, "prefill": tm.prefill_ms, "decode": tm.decode_ms,
                               "sam_encode": tm.sam_encode_ms, "sam_decode": tm.sam_decode_ms, "total": tm.total_ms}}
    finally:
        reasoner.close()


def cpu_answer_in_child() -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, __file__, "--child-cpu-answer"], env=env, capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"the CPU child failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timings(device: str, counts: list[int], tokens: int, repeat: int) -> list[dict]:
    from engine.bench.policy import measure
    from engine.bundle import load_bundle
    from engine.fit import context_positions
    from engine.pipeline import bundle_root
    from engine.policy.llama_backend import LlamaPolicy
    from engine.samples import sample_scene

    bundle = load_bundle(bundle_root(None))
    spec = bundle.manifest.policy
    policy = LlamaPolicy(bundle.path(spec.model), bundle.path(spec.mmproj), family=spec.family, frame=spec.frame,
                         prompt_family=spec.prompt_family, max_samples=max(counts),
                         n_ctx=context_positions(max(counts), tokens), n_gpu_layers=-1 if device == "cuda" else 0,
                         reuse_prefix=False)
    try:
        rows = measure(policy, sample_scene()[0], QUERY, counts, tokens, repeat)
    finally:
        policy.close()
    return [{"device": device, **r} for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--counts", default="1,8,32")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child-cpu-answer", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_cpu_answer:
        print(json.dumps(greedy_answer("cpu")))
        return 0

    from engine.devices import llama_gpu_offload

    gpu = llama_gpu_offload()
    print(f"llama.cpp GPU offload: {gpu}", flush=True)
    cpu = cpu_answer_in_child()
    answers = {"cpu": cpu}
    same = first_difference = None
    if gpu:
        answers["cuda"] = cuda = greedy_answer("cuda")
        same = all(cuda[k] == cpu[k] for k in ("text", "token_ids", "mask_sha256"))
        pairs = list(zip(cpu["token_ids"], cuda["token_ids"]))
        first_difference = next((i for i, (a, b) in enumerate(pairs) if a != b),
                                None if len(cpu["token_ids"]) == len(cuda["token_ids"]) else len(pairs))
    counts = [int(c) for c in args.counts.split(",")]
    rows = timings("cpu", counts, args.tokens, args.repeat)
    if gpu:
        rows += timings("cuda", counts, args.tokens, args.repeat)
    cpu_ms = {r["n"]: r["batched_ms"] for r in rows if r["device"] == "cpu"}
    for r in rows:
        r["x_vs_cpu"] = cpu_ms[r["n"]] / r["batched_ms"]

    print(f"nano bundle, greedy answer to '{QUERY}' on the sample scene:")
    for device, a in answers.items():
        print(f"  {device:>4}: {a['status']}, labels {a['labels']}, mask {a['mask_pixels']} px, {a['text']!r}")
    print(f"  identical text, tokens and mask on cuda and cpu: {same if gpu else 'not run (no GPU offload)'}"
          + (f" (first different token: {first_difference} of {len(cpu['token_ids'])})" if same is False else ""))
    print(f"N samples together, {args.tokens} tokens each (stops ignored), median of {args.repeat}:")
    print(f"{'device':>6} {'N':>3} {'vision ms':>9} {'prefill ms':>10} {'decode ms':>9} {'tok/s':>8} {'total ms':>9} "
          f"{'x N=1 one by one':>16} {'x cpu':>6}")
    for r in rows:
        print(f"{r['device']:>6} {r['n']:>3} {r['vision_ms']:>9.1f} {r['prefill_ms']:>10.1f} {r['decode_ms']:>9.1f} "
              f"{r['tokens_per_s']:>8.0f} {r['batched_ms']:>9.1f} {r['speedup']:>16.2f} {r['x_vs_cpu']:>6.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"benchmark": "policy-nano-gpu", "gpu_offload": gpu, "answers": answers,
                                               "identical": same, "first_different_token": first_difference,
                                               "tokens": args.tokens, "rows": rows}, indent=1))
    return 0 if same in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The product path's vote on a GPU, checked against the CPU path (run by installer/device/check.sh).

One query through the real `Reasoner` with SAM 2 on CUDA (a random shrunk SAM 2.1 built from the sam2
package's config, so no download) and N scripted answers in front of it (the lent machine has no
llama.cpp build): the masks stay on the GPU and the CUDA kernel votes (`timings.vote_backend`). The same
masks, copied to the host, are voted again on the CPU: `best` must give the same final mask bit for bit,
`consensus` the same within the documented tolerance (float32 weights summed in another order can differ
exactly at the pixel threshold). Prints a table and writes JSON. Without a GPU it runs the CPU rows only
(the dry run).

    python installer/device/product_path.py --json OUT/product-path.json [--size 1024] [--counts 8,32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CONSENSUS_MAX_DIFFERING = 1e-4  # share of pixels a consensus mask may differ by between CPU and GPU sums


def completions(n: int, width: int, height: int, frame: int, seed: int = 0) -> list[str]:
    """N answers about two objects, jittered per sample the way sampled answers scatter."""
    rng = np.random.default_rng(seed)
    objects = [("red square", (0.10, 0.10, 0.35, 0.30)), ("blue circle", (0.45, 0.40, 0.80, 0.85))]
    texts = []
    for i in range(n):
        parts = []
        for label, (x1, y1, x2, y2) in objects[: 1 + (i % 3 == 0)]:
            box = np.clip(np.array([x1, y1, x2, y2]) + rng.normal(0, 0.02, 4), 0, 1) * frame
            x1, y1, x2, y2 = (int(v) for v in box)
            parts.append(f'{{"label": "{label}", "bbox_2d": [{x1},{y1},{x2},{y2}], '
                         f'"point_2d": [{(x1 + x2) // 2},{(y1 + y2) // 2}]}}')
        texts.append(f"<think> looking </think> <answer>[{', '.join(parts)}]</answer>")
    return texts


def build_segmenter(device: str, image_size: int, work: Path):
    from engine.segment.shrunk import write_random_checkpoint, write_shrunk_config
    from engine.segment.torch_backend import load_torch_segmenter

    config = write_shrunk_config(work / "sam2_shrunk.yaml", image_size=image_size)
    checkpoint = write_random_checkpoint(config, work / "sam2_shrunk.pt")
    # fp32 on both devices, so the two runs' masks come from the same arithmetic as far as cuDNN allows
    return load_torch_segmenter(config, checkpoint, device, bf16=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--size", type=int, default=1024, help="the scene's side in pixels")
    p.add_argument("--counts", default="8,32")
    p.add_argument("--sam-size", type=int, default=256, help="the shrunk SAM's input size")
    args = p.parse_args(argv)

    import tempfile

    import torch

    from engine.host import to_host
    from engine.pipeline import LocalReasoner, decide
    from engine.voting import VoteConfig
    from tests.scripted import ReplayPolicy

    frame = 112
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        segmenters = {d: build_segmenter(d, args.sam_size, Path(tmp)) for d in devices}
        for n in [int(c) for c in args.counts.split(",")]:
            texts = completions(n, args.size, args.size, frame)
            for device in devices:
                for mode in ("best", "consensus"):
                    reasoner = LocalReasoner(ReplayPolicy(texts), segmenters[device], frame=f"pixels-{frame}",
                                        vote=VoteConfig(mode=mode))
                    reasoner.run(image, "warm-up", n)  # CUDA start-up and the embedding cache
                    t0 = time.perf_counter()
                    result = reasoner.run(image, "the red square and the blue circle", n)
                    total_ms = (time.perf_counter() - t0) * 1e3
                    host = np.stack([to_host(result.object_masks[i]) for i in range(len(result.object_masks))])
                    cpu_final = decide(result.samples, host, result.object_scores(), result.mask.shape,
                                       VoteConfig(mode=mode))[0]
                    differing = float((cpu_final != result.mask).mean())
                    same = bool(np.array_equal(cpu_final, result.mask))
                    rows.append({"n": n, "device": device, "mode": mode, "vote_backend": result.timings.vote_backend,
                                 "vote_ms": result.timings.vote_ms, "sam_decode_ms": result.timings.sam_decode_ms,
                                 "total_ms": total_ms, "final_pixels": int(result.mask.sum()),
                                 "identical_to_cpu_vote": same, "differing_share": differing,
                                 "ok": same if mode == "best" else differing <= CONSENSUS_MAX_DIFFERING})
    print("product path: N scripted answers -> SAM 2 (shrunk, random) -> vote; the GPU's vote vs the CPU's")
    print(f"{'N':>3} {'device':>6} {'mode':>9} {'vote on':>7} {'vote ms':>8} {'SAM dec ms':>10} {'total ms':>9} "
          f"{'== cpu':>6} {'ok':>4}")
    for r in rows:
        print(f"{r['n']:>3} {r['device']:>6} {r['mode']:>9} {r['vote_backend']:>7} {r['vote_ms']:>8.2f} "
              f"{r['sam_decode_ms']:>10.1f} {r['total_ms']:>9.1f} {str(r['identical_to_cpu_vote']):>6} {str(r['ok']):>4}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"benchmark": "product-path", "size": args.size, "rows": rows}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

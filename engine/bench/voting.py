"""`star bench voting`: the IoU matrix and the whole vote, ours vs pycocotools vs a float matmul.

Workload: N samples with one mask each at S x S, clustered as sampled answers are: most samples
find object A (jittered boundaries), some object B, a few stray blobs; irregular outlines so RLEs
are not trivially short.
"""

from __future__ import annotations

import numpy as np

from ..kernels import cpu_iou
from ..voting import CpuBitEngine, VoteConfig, iou_from_counts, majority_vote, pairwise_iou
from .report import print_table, time_ms, write_bench_json


def _blob(rng, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """An irregular closed shape (radius modulated by a few random harmonics), drawn in its box only."""
    mask = np.zeros((size, size), dtype=bool)
    pad = int(r * 1.6) + 2
    y0, y1 = max(0, int(cy) - pad), min(size, int(cy) + pad)
    x0, x1 = max(0, int(cx) - pad), min(size, int(cx) + pad)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    theta = np.arctan2(yy - cy, xx - cx)
    radius = r * (1 + sum(rng.uniform(0.02, 0.12) * np.sin(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5, 9)))
    mask[y0:y1, x0:x1] = np.hypot(yy - cy, xx - cx) <= radius
    return mask


def make_samples(n: int, size: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    objects = [(0.45 * size, 0.40 * size, 0.18 * size), (0.70 * size, 0.72 * size, 0.10 * size)]
    samples = []
    for _ in range(n):
        u = rng.random()
        if u < 0.6:
            cy, cx, r = objects[0]
        elif u < 0.85:
            cy, cx, r = objects[1]
        else:
            cy, cx, r = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(0.03, 0.12)]
            cy, cx, r = cy * size, cx * size, r * size
        jitter = 0.01 * size
        mask = _blob(rng, size, cy + rng.normal(0, jitter), cx + rng.normal(0, jitter), r * rng.uniform(0.97, 1.03))
        samples.append([(mask, float(rng.uniform(0.6, 0.99)), "object")])
    return samples


def _coco_iou(masks: np.ndarray):
    from pycocotools import mask as coco_mask

    rles = [coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    return coco_mask.iou(rles, rles, [0] * len(rles))


def _matmul_iou(masks: np.ndarray):
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    inter = flat @ flat.T
    areas = np.diag(inter)
    union = areas[:, None] + areas[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _numpy_pairs_iou(masks: np.ndarray):
    """Our engine without its compiled kernel: numpy AND + popcount per crop pair."""
    engine = CpuBitEngine(masks, use_kernel=False)
    return iou_from_counts(engine.intersection_matrix(), engine.areas[:, None], engine.areas[None, :])


def run_cpu(sizes, counts, repeat: int) -> list[dict]:
    from pycocotools import mask as coco_mask

    rows = []
    for size in sizes:
        for n in counts:
            samples = make_samples(n, size, seed=n + size)
            masks = np.stack([s[0][0] for s in samples])
            rles = [coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
            ours = time_ms(lambda: pairwise_iou(masks), repeat=repeat)
            numpy_pairs = time_ms(lambda: _numpy_pairs_iou(masks), repeat=repeat)
            coco = time_ms(lambda: _coco_iou(masks), repeat=repeat)
            coco_pre = time_ms(lambda: coco_mask.iou(rles, rles, [0] * n), repeat=repeat)
            matmul = time_ms(lambda: _matmul_iou(masks), repeat=max(1, repeat // 2))
            vote = time_ms(lambda: majority_vote(samples, VoteConfig(), backend="cpu"), repeat=repeat)
            vote_cons = time_ms(lambda: majority_vote(samples, VoteConfig(mode="consensus"), backend="cpu"), repeat=repeat)
            check = np.abs(pairwise_iou(masks) - _coco_iou(masks)).max()
            rows.append({
                "size": size, "n": n,
                "ours_iou_ms": ours["median_ms"], "ours_numpy_pairs_iou_ms": numpy_pairs["median_ms"],
                "cpu_kernel": "c" if not cpu_iou.unavailable_reason() else "numpy", "pycocotools_iou_ms": coco["median_ms"],
                "pycocotools_preencoded_iou_ms": coco_pre["median_ms"], "numpy_matmul_iou_ms": matmul["median_ms"],
                "vote_best_ms": vote["median_ms"], "vote_consensus_ms": vote_cons["median_ms"],
                "speedup_vs_pycocotools": coco["median_ms"] / ours["median_ms"],
                "speedup_vs_matmul": matmul["median_ms"] / ours["median_ms"],
                "speedup_vs_numpy_pairs": numpy_pairs["median_ms"] / ours["median_ms"],
                "max_abs_diff_vs_pycocotools": float(check),
            })
    return rows


def theoretical_bandwidth(props: dict) -> float | None:
    """Bytes/s from the device properties (DDR: 2 x clock x bus width), or None where the runtime no longer
    reports the memory clock (CUDA 13 dropped `memoryClockRate` from cudaDeviceProp)."""
    clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8


def measured_bandwidth(cp, megabytes: int = 256, repeat: int = 5) -> float:
    """Bytes/s of a device-to-device copy (each byte read once and written once): the bound a kernel that
    reads masks can actually reach, and a source that exists on every CUDA version."""
    src = cp.ones(megabytes << 20, dtype=cp.uint8)
    dst = cp.empty_like(src)
    dst[...] = src  # warm-up
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        dst[...] = src
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return 2.0 * src.nbytes / float(np.median(times))


def memory_bandwidth(cp) -> tuple[float, str]:
    """The bandwidth bound of the GPU bench and where it came from: a measured copy (always), reported next
    to the datasheet figure where the runtime still gives one."""
    measured = measured_bandwidth(cp)
    theoretical = theoretical_bandwidth(cp.cuda.runtime.getDeviceProperties(0))
    note = f"measured device-to-device copy; properties: {theoretical / 1e9:.0f} GB/s" if theoretical else \
        "measured device-to-device copy (the runtime reports no memory clock)"
    return measured, note


def run_gpu(sizes, counts, repeat: int) -> list[dict]:
    """Our kernel vs torch fp16 M @ M.T vs the bandwidth bound (masks read once)."""
    import cupy as cp

    from ..kernels.cuda_voting import CudaVoteEngine

    peak_bytes_s, bandwidth_source = memory_bandwidth(cp)
    try:
        import torch

        has_torch = torch.cuda.is_available()
    except Exception:
        has_torch = False

    def gpu_time(fn):
        fn()
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
        return float(np.median(times))

    rows = []
    for size in sizes:
        for n in counts:
            samples = make_samples(n, size, seed=n + size)
            host = np.stack([s[0][0] for s in samples])
            dev = cp.asarray(host)
            dev_list = [dev[i] for i in range(n)]
            kernel_ms = gpu_time(lambda: CudaVoteEngine(dev_list))
            dev_samples = [[(dev[i], s[0][1], s[0][2])] for i, s in enumerate(samples)]
            vote_ms = gpu_time(lambda: majority_vote(dev_samples, VoteConfig(), backend="cuda"))
            row = {"size": size, "n": n, "kernel_iou_ms": kernel_ms, "vote_best_ms": vote_ms,
                   "bound_ms": host.nbytes / peak_bytes_s * 1e3, "peak_gb_s": peak_bytes_s / 1e9,
                   "bandwidth_source": bandwidth_source}
            if has_torch:
                t = torch.as_tensor(dev, device="cuda")

                def torch_matmul():
                    f = t.reshape(n, -1).half()
                    return f @ f.T

                row["torch_fp16_matmul_ms"] = gpu_time(torch_matmul)
            engine = CudaVoteEngine(dev_list)
            cpu_iou = pairwise_iou(host)
            gpu_iou = iou_from_counts(engine.inter, engine.areas[:, None], engine.areas[None, :])
            row["identical_to_cpu"] = bool(np.array_equal(cpu_iou, gpu_iou))
            row["ratio_to_bound"] = kernel_ms / row["bound_ms"]
            rows.append(row)
    return rows


def main(args) -> int:
    sizes, counts = list(args.sizes), list(args.counts)
    cpu_rows = run_cpu(sizes, counts, args.repeat)
    text = print_table(
        "Voting on CPU (ms, median): IoU matrix and whole vote",
        ["size", "N", "ours", "ours numpy pairs", "pycoco", "pycoco pre-enc", "np matmul", "x vs pycoco", "x vs matmul",
         "vote best", "vote cons"],
        [[r["size"], r["n"], r["ours_iou_ms"], r["ours_numpy_pairs_iou_ms"], r["pycocotools_iou_ms"], r["pycocotools_preencoded_iou_ms"], r["numpy_matmul_iou_ms"],
          r["speedup_vs_pycocotools"], r["speedup_vs_matmul"], r["vote_best_ms"], r["vote_consensus_ms"]] for r in cpu_rows],
    )
    kernel_reason = cpu_iou.unavailable_reason()
    print(f"CPU IoU kernel: {'compiled C' if not kernel_reason else 'numpy (' + kernel_reason + ')'}")
    payload = {"benchmark": "voting", "cpu": cpu_rows, "gpu": None}
    from ..kernels.cuda_voting import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"\nGPU: not measured ({reason})")
        payload["gpu_unavailable"] = reason
    else:
        gpu_rows = run_gpu(sizes, counts, args.repeat)
        payload["gpu"] = gpu_rows
        print()
        print_table(
            "Voting on GPU (ms, median)",
            ["size", "N", "kernel", "torch fp16 mm", "bound", "x bound", "vote best", "== cpu"],
            [[r["size"], r["n"], r["kernel_iou_ms"], r.get("torch_fp16_matmul_ms"), r["bound_ms"], r["ratio_to_bound"], r["vote_best_ms"],
              r["identical_to_cpu"]] for r in gpu_rows],
        )
    path = write_bench_json(args.json, {**payload, "table": text})
    print(f"\nwrote {path}")
    return 0

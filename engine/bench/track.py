"""`star bench track`: SAM 2's video memory following one object through a generated clip, frames per second
and memory (host RSS; on a GPU its peak allocation too), against the obvious alternative, sam2's own
`init_state`, which decodes the whole clip before the first frame is tracked (into host memory: sam2's
`offload_video_to_cpu` is off by default, so on a GPU into device memory). Random weights at the published architectures (timing and memory do not
depend on weight values). Each model runs in a child process of its own, so its peak memory is its own."""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from .report import print_table, write_bench_json
from .segment import MODELS


def write_clip(folder: Path, frames: int, width: int, height: int) -> Path:
    """A textured background with a bright square crossing it, as JPEG frames named as sam2 reads them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    side = max(8, min(width, height) // 6)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        rgb = background.copy()
        x = int((width - side) * i / max(1, frames - 1))
        y = (height - side) // 2
        rgb[y:y + side, x:x + side] = (230, 200, 40)
        Image.fromarray(rgb).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _build(name: str, workdir: Path, device: str):
    from ..segment.shrunk import write_shrunk_config
    from ..segment.torch_backend import build_model

    config = write_shrunk_config(workdir / f"{name}.yaml") if MODELS[name] is None else MODELS[name]
    return build_model(config, None, device, video=True)


def _gpu_peak_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def _ours(name: str, folder: str, frames: int, threads: int, device: str, queue) -> None:
    import torch

    from ..frames import FrameSource
    from ..track.sam2_video import VideoMemoryTracker

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = _build(name, Path(tmp), device)
    source = FrameSource(folder, max_frames=frames)
    h, w = source.frame(0).rgb.shape[:2]
    side = max(8, min(w, h) // 6)
    base = _rss_mb()
    t0 = time.perf_counter()
    tracker = VideoMemoryTracker(predictor, source)
    tracker.prompt(0, 1, box=(0, (h - side) // 2, side, (h + side) // 2))
    times, rss = [], {}
    last = time.perf_counter()
    for frame, _ in tracker.propagate(0):
        now = time.perf_counter()
        times.append(now - last)
        last = now
        if device == "cuda":
            torch.cuda.synchronize()
        if frame in (min(10, len(source) - 1), len(source) // 2, len(source) - 1):
            rss[frame] = _rss_mb() - base
    queue.put({"params_m": sum(p.numel() for p in predictor.parameters()) / 1e6, "frames": len(times),
               "image_size": predictor.image_size, "seconds": time.perf_counter() - t0,
               "fps": (len(times) - 1) / sum(times[1:]) if len(times) > 1 else None,
               "rss_growth_mb": {str(k): round(v, 1) for k, v in rss.items()}, "peak_mb": _peak_mb(),
               "gpu_peak_mb": _gpu_peak_mb(device)})


def _init_state(name: str, folder: str, threads: int, device: str, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = _build(name, Path(tmp), device)
    base = _rss_mb()
    t0 = time.perf_counter()
    with torch.inference_mode():
        predictor.init_state(folder)
    queue.put({"seconds": time.perf_counter() - t0, "rss_growth_mb": _rss_mb() - base, "peak_mb": _peak_mb(),
               "gpu_peak_mb": _gpu_peak_mb(device)})


def _child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(args) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    frame_counts = list(args.frames)
    if len(frame_counts) == 1:
        frame_counts *= len(models)
    if len(frame_counts) != len(models):
        raise SystemExit("--frames: one count, or one per model")
    threads = args.threads or 1
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_clip(Path(tmp) / "clip", max(frame_counts), args.width, args.height)
        for name, frames in zip(models, frame_counts):
            ours = _child(_ours, name, str(folder), frames, threads, device)
            row = {"model": name, **ours}
            if args.init_state:
                # sam2 decodes every frame of the folder up front: the same clip length as the run above
                part = Path(tmp) / f"clip-{frames}"
                if not part.exists():
                    part.mkdir()
                    for i in range(frames):
                        (part / f"{i:05d}.jpg").symlink_to(folder / f"{i:05d}.jpg")
                row["init_state"] = _child(_init_state, name, str(part), threads, device)
            rows.append(row)
    cols = ["model", "params M", "S", "frames", "frames/s", "RSS +MB @10", "RSS +MB @end", "peak MB", "GPU peak MB",
            "init_state s", "init_state +MB", "memory x"]
    table = []
    for r in rows:
        growth = r["rss_growth_mb"]
        end = growth[max(growth, key=int)]
        alt = r.get("init_state", {})
        table.append([r["model"], r["params_m"], r["image_size"], r["frames"], r["fps"],
                      growth.get(str(min(10, r["frames"] - 1))), end, r["peak_mb"], r["gpu_peak_mb"], alt.get("seconds"),
                      alt.get("rss_growth_mb"), alt["rss_growth_mb"] / end if alt and end > 0 else None])
    text = print_table(f"star track's SAM 2 memory on a {args.width}x{args.height} clip, {device} ({threads} thread(s)); "
                       "'memory x' = init_state's growth / ours at the end", cols, table)
    path = write_bench_json(args.json, {"benchmark": "track", "device": device, "width": args.width,
                                        "height": args.height, "rows": rows, "table": text})
    print(f"\nwrote {path}")
    return 0

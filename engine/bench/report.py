"""Shared benchmark plumbing: timing, the machine's description, the table, the JSON file."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import OutputError
from ..fileio import write_json_atomically


def time_ms(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, budget_s: float = 20.0) -> dict:
    """Median and min wall time of `fn` in milliseconds (fewer repeats when a call is slow)."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > budget_s:
            break
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "runs": len(samples)}


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["threads"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if os.environ.get(k)}
    try:
        from ..kernels.cuda_voting import unavailable_reason

        if unavailable_reason() == "":
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception:
        pass
    return info


def print_table(title: str, columns: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return "-" if v is None else str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.rjust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def check_json_path(path: str | Path) -> None:
    """Refuse a --json path that cannot be written before a benchmark spends minutes measuring."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--json {path} is a folder; name a file (e.g. {path / 'bench.json'})")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OutputError(f"--json {path}: {parent} is not writable; choose another place")


def write_bench_json(path: str | Path, payload: dict) -> Path:
    """The benchmark's JSON (with the machine it ran on), written atomically; --json naming a folder or a
    read-only place is an OutputError, not a traceback."""
    path = Path(path)
    payload = {"machine": machine(), **payload}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, payload, indent=2)
    except OSError as exc:
        raise OutputError(f"could not write the benchmark JSON to {path}: {exc.strerror or exc}") from None
    return path

"""`star bench serve`: requests/s and latency percentiles of `star serve` under 1, 4 and 16 concurrent
clients (the real server on loopback, the stdlib client `star label --server` uses), against the obvious
alternative: the same requests run in-process one after another (no HTTP, no queue)."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..policy.types import DEFAULT_MAX_NEW_TOKENS
from .report import print_table, write_bench_json


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(args) -> int:
    from .. import samples
    from ..images import load_image
    from ..pipeline import sampling_for
    from ..serve.app import ServeSettings, create_app
    from ..serve.client import ServeClient
    from ..serve.server import BackgroundServer
    from ..serve.setup import load_workers

    image = (Path(samples.__file__).parent / "scene.png").read_bytes()
    query = "the red cup"
    params = {"n": args.n}
    workers = load_workers([args.bundle] if args.bundle else [], device=args.device, threads=args.threads,
                           max_samples=args.n, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, queue_size=max(args.concurrency) * 2,
                           verify="quick")
    name = next(iter(workers))
    reasoner = workers[name].reasoner
    rows = []
    try:
        # The alternative first: the same work in this process, one request after another.
        rgb = load_image(image)
        sampling = sampling_for(args.n, constrained=reasoner.grammar(None), temperature=reasoner.temperature(None))
        reasoner.run(rgb, query, args.n, sampling=sampling)  # warm-up
        lat = []
        start = time.perf_counter()
        for _ in range(args.requests):
            t0 = time.perf_counter()
            reasoner.run(rgb, query, args.n, sampling=sampling)
            lat.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - start
        baseline = args.requests / wall
        rows.append({"clients": "in-process", "requests": args.requests, "requests_per_s": baseline,
                     "p50_ms": statistics.median(lat), "p95_ms": _percentile(lat, 0.95), "errors": 0, "vs_in_process": 1.0})
        with BackgroundServer(create_app(workers, ServeSettings())) as url:
            client = ServeClient(url, model=name)
            client.predict(image, query, params)  # warm-up through HTTP
            for c in args.concurrency:
                lat, errors = [], 0

                def one(_):
                    t0 = time.perf_counter()
                    try:
                        client.predict(image, query, params)
                        return (time.perf_counter() - t0) * 1e3, None
                    except Exception as exc:
                        return None, exc

                start = time.perf_counter()
                with ThreadPoolExecutor(c) as pool:
                    for ms, exc in pool.map(one, range(args.requests)):
                        if exc is None:
                            lat.append(ms)
                        else:
                            errors += 1
                wall = time.perf_counter() - start
                rps = len(lat) / wall
                rows.append({"clients": c, "requests": args.requests, "requests_per_s": rps,
                             "p50_ms": statistics.median(lat) if lat else None,
                             "p95_ms": _percentile(lat, 0.95) if lat else None, "errors": errors,
                             "vs_in_process": rps / baseline})
    finally:
        for w in workers.values():
            w.shutdown()
    text = print_table(
        f"star serve, model {name}, n = {args.n}, {args.requests} requests per row ('the red cup' on the sample "
        "scene); one model worker: clients queue; 'x' = requests/s vs in-process",
        ["clients", "requests/s", "p50 ms", "p95 ms", "errors", "x"],
        [[r["clients"], r["requests_per_s"], r["p50_ms"], r["p95_ms"], r["errors"], r["vs_in_process"]] for r in rows])
    path = write_bench_json(args.json, {"benchmark": "serve", "model": name, "n": args.n, "rows": rows, "table": text})
    print(f"\nwrote {path}")
    return 0

"""Batches made ahead in worker processes while the trainer steps.

The nano trainers' data (scenes drawn, rasterised, tokenized, their cell targets) is a function of the
step alone, so workers can make the batches of the coming steps in any order and the trainer still sees
exactly the batches it would have made itself. On a CPU this mostly moves work off the training thread;
on a GPU a warm-up step of 16 scenes spends ~0.2 s making its batch (this 2-core VM) against tens of ms on
the model, so without workers the GPU would wait on the data most of the time.

Workers are spawned, not forked: the trainer may already hold a CUDA context and OpenMP thread pools,
which a forked child must not inherit. Each worker builds its own batch maker once (`factory()`) and
answers `maker(step)`; results come back as NumPy arrays (plain pickles, no shared-memory handles).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

_MAKER = None


def _start_worker(factory: Callable[[], Callable[[int], object]]) -> None:
    global _MAKER
    import torch

    torch.set_num_threads(1)  # one core per worker: the pool, not each worker, is the parallelism
    _MAKER = factory()


def _make(step: int):
    return _MAKER(step)


class Prefetcher:
    """`get(step)` for consecutive steps (a trainer's); up to `depth` later steps are being made meanwhile."""

    def __init__(self, factory: Callable[[], Callable[[int], object]], *, workers: int, stop: int, depth: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.stop = stop
        self.depth = depth or 2 * workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_worker, initargs=(factory,))
        self.pending: dict[int, Future] = {}

    def get(self, step: int):
        for ahead in range(step, min(self.stop, step + self.depth)):
            if ahead not in self.pending:
                self.pending[ahead] = self.pool.submit(_make, ahead)
        future = self.pending.pop(step, None) or self.pool.submit(_make, step)
        return future.result()

    __call__ = get  # a Prefetcher stands in for the maker it runs

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""One loaded model served safely: a single worker thread owns the reasoner (a llama.cpp context is not
thread-safe), requests wait in a bounded queue, each job can be cancelled (a client that went away, a
time limit) and streams its events to whoever listens.

Shutdown stops taking work, lets the running job finish (or cancels it after a grace period) and
rejects whatever is still queued with a clear error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..policy.types import CancelToken


def return_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim). A large request (a 64 MP upload
    decodes to 192 MB, its masks to more) leaves the pages it freed in the allocator, and a server's resident
    size would stay at its largest request's peak. False where the C library has no malloc_trim."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _LIBC = False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is None:
        return False
    trim(0)
    return True


_LIBC = None
SETTLE_TRIMS, SETTLE_S = 3, 1.0  # after a job the idle worker trims at once and twice more, a second apart


class QueueFull(Exception):
    """The model's queue holds as many requests as it may; the client should retry later."""


class ShuttingDown(Exception):
    """The server is stopping and took no new work (or dropped this queued job)."""


class TimedOut(Exception):
    """The job ran past the per-request time limit and was stopped."""


@dataclass
class Job:
    """One request for the worker: `run(reasoner, emit, cancel)` returns the value the caller awaits."""
    run: Callable
    timeout_s: float | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    future: Future = field(default_factory=Future)
    listeners: list[Callable] = field(default_factory=list)  # called with each pipeline Event, on the worker
    timed_out: bool = False

    def emit(self, event) -> None:
        for listener in list(self.listeners):
            listener(event)


class ModelWorker:
    """`submit(job)` queues a job (QueueFull when `queue_size` jobs already wait); the worker thread runs
    jobs one at a time with `reasoner` and settles each job's future. `cancel(job)` frees a waiting
    job's slot at once, or stops a running one between decoding steps."""

    def __init__(self, name: str, reasoner, *, queue_size: int = 8, info: dict | None = None):
        self.name = name
        self.reasoner = reasoner
        self.info = info or {}
        self.queue_size = queue_size
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._accepting = True
        self._closing = False
        self._current: Job | None = None
        self._settle = 0  # memory trims still due since the last job
        self._thread = threading.Thread(target=self._loop, name=f"star-serve-{name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._jobs)

    def submit(self, job: Job) -> Job:
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"model {self.name!r} has {self.queue_size} requests waiting; retry later")
            self._jobs.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        job.cancel.cancel()
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                job.future.cancel()

    def _next(self) -> Job | None:
        with self._cond:
            while not self._jobs and not self._closing:
                if self._settle:  # idle after a job: its memory back to the system, now and once its reply is sent
                    self._settle -= 1
                    return_freed_memory()
                    self._cond.wait(timeout=SETTLE_S)
                else:
                    self._cond.wait()
            if not self._jobs:
                return None
            job = self._jobs.popleft()
            self._current = job
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            if job.cancel.cancelled or not job.future.set_running_or_notify_cancel():
                self._current = None
                continue
            timer = None
            if job.timeout_s:
                def expire(j=job):
                    j.timed_out = True
                    j.cancel.cancel()
                timer = threading.Timer(job.timeout_s, expire)
                timer.daemon = True
                timer.start()
            try:
                value = job.run(self.reasoner, job.emit, job.cancel)
                if job.timed_out:
                    raise TimedOut(f"the request ran past its limit of {job.timeout_s:g} s and was stopped")
                job.future.set_result(value)
            except BaseException as exc:  # settled on the future; the worker keeps serving
                if job.timed_out and not isinstance(exc, TimedOut):
                    exc = TimedOut(f"the request ran past its limit of {job.timeout_s:g} s and was stopped")
                job.future.set_exception(exc)
            finally:
                if timer is not None:
                    timer.cancel()
                self._current = None
                del job  # its image and masks go now, not when the next job arrives
                self._settle = SETTLE_TRIMS

    def stop_accepting(self) -> int:
        """Take no new work and reject every queued job (the running one continues); returns how many."""
        with self._cond:
            self._accepting = False
            waiting = list(self._jobs)
            self._jobs.clear()
        rejected = 0
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ShuttingDown("the server is shutting down; the request was not run"))
                rejected += 1
        return rejected

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Take no new work, reject what waits, let the running job finish within `grace_s` (then cancel
        it), stop the thread and free the model."""
        self.stop_accepting()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(grace_s)
        current = self._current
        if self._thread.is_alive() and current is not None:
            current.cancel.cancel()
            self._thread.join(10)
        if not self._thread.is_alive():
            self.reasoner.close()

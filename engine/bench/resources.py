"""Peak memory and disk per stage of a long job, sampled from /proc (Linux) by a background thread.

Resident memory is summed over this process and all its descendants (the GGUF converter runs as a
child), so a stage's peak is what the machine had to hold. Disk is the growth of the used bytes on
the file system of a watched folder since the monitor started (intermediates included)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss(pid: int | None = None) -> int:
    """Resident bytes of a process and every descendant."""
    todo, total, seen = [pid or os.getpid()], 0, set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss(p)
        todo += _children(p)
    return total


class ResourceMonitor:
    """`with monitor.stage("convert"): ...` records that stage's wall time, peak RSS and peak disk growth."""

    def __init__(self, folder: str | Path, interval_s: float = 0.2):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.interval_s = interval_s
        self.base_disk = shutil.disk_usage(self.folder).used
        self.stages: dict[str, dict] = {}
        self._current: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _sample(self, entry: dict) -> None:
        entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], tree_rss())
        disk = shutil.disk_usage(self.folder).used - self.base_disk
        entry["peak_disk_bytes"] = max(entry["peak_disk_bytes"], disk)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            entry = self._current
            if entry is not None:
                self._sample(entry)

    def begin(self, name: str) -> dict:
        """Start stage `name` (ending the one in progress): for stages announced by a log line."""
        self.end()
        entry = {"wall_s": 0.0, "peak_rss_bytes": 0, "peak_disk_bytes": 0, "_start": time.perf_counter()}
        self._sample(entry)
        self._current = entry
        self.stages[name] = entry
        return entry

    def end(self) -> None:
        entry, self._current = self._current, None
        if entry is None:
            return
        self._sample(entry)
        entry["wall_s"] = time.perf_counter() - entry.pop("_start")
        entry["disk_after_bytes"] = shutil.disk_usage(self.folder).used - self.base_disk

    @contextmanager
    def stage(self, name: str):
        entry = self.begin(name)
        try:
            yield entry
        finally:
            self.end()

    def close(self) -> None:
        self.end()
        self._stop.set()
        self._thread.join(timeout=2)

"""What makes `star-export` safe on multi-GB files: a free-space check before writing, and a record of
finished stages (inputs fingerprint -> outputs with SHA-256) so a re-run skips what is still valid
and redoes what is missing, changed or was interrupted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from engine.bundle import sha256_file
from engine.errors import StarError
from engine.fileio import write_json_atomically

STATE = ".star-export.json"


class DiskSpaceError(StarError):
    pass


def tree_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_free_space(folder: Path, needed: int, what: str) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(f"{what} needs about {needed / 2**30:.1f} GiB in {folder}, but only "
                             f"{free / 2**30:.1f} GiB is free")


def place_file(source: Path, target: Path, *, link: bool = False) -> str:
    """Put `source` at `target` (through a `.partial` name, so an interrupted copy is never taken for the
    file): hard-linked with `link` where the file system allows it, else copied. Returns "linked" or
    "copied". A hard link is one file under two names: the data stays when the original is moved or
    deleted, and an edit through either name changes both (which the bundle's checksums then refuse)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    how = "copied"
    try:
        if not link:
            raise OSError("a copy was asked for")
        os.link(source, partial)
        how = "linked"
    except OSError:  # another file system, or no hard links there: a copy
        check_free_space(target.parent, source.stat().st_size, f"copying {source.name}")
        shutil.copyfile(source, partial)
    partial.replace(target)
    return how


def provenance(path: str | Path, bundle: str | Path) -> str:
    """How a manifest names an input it was made from, without one machine's folders: relative to the
    bundle's parent folder (a run folder, as `star-train nano` lays out) when the input lies in
    it, else the input's own name (a released checkpoint's folder name says which it is)."""
    path, run = Path(path).resolve(), Path(bundle).resolve().parent
    if run in path.parents:
        return Path(os.path.relpath(path, Path(bundle).resolve())).as_posix()
    return path.name


def fingerprint(*items) -> str:
    """A hash of option values and of files / folders (by relative path, size and mtime)."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, Path):
            paths = [item] if item.is_file() else sorted(p for p in item.rglob("*") if p.is_file())
            for p in paths:
                st = p.stat()
                h.update(f"{p.relative_to(item) if p != item else p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        else:
            h.update(json.dumps(item, sort_keys=True, default=str).encode() + b"\n")
    return h.hexdigest()


class StageLog:
    """`<bundle>/.star-export.json`: {stage: {"inputs": fingerprint, "outputs": {relative path: sha256}}}."""

    def __init__(self, bundle: Path):
        self.bundle = Path(bundle)
        self.path = self.bundle / STATE
        try:
            self.state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.state = {}

    def done(self, stage: str, inputs: str) -> bool:
        entry = self.state.get(stage)
        if not entry or entry.get("inputs") != inputs:
            return False
        for rel, digest in entry["outputs"].items():
            p = self.bundle / rel
            if not p.is_file() or sha256_file(p) != digest:
                return False
        return True

    def record(self, stage: str, inputs: str, outputs: list[str]) -> None:
        self.state[stage] = {"inputs": inputs, "outputs": {rel: sha256_file(self.bundle / rel) for rel in outputs}}
        self.bundle.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.path, self.state, indent=2)

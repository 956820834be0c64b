"""What the nano trainers (warm-up, SAM) share around their optimiser step: the eval / log / save
cadence, the JSONL log, and the atomic checkpoint swap that makes every re-run resume cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (a half-written one from an interrupted save is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written `tmp` into place as `final`; a crash at any point leaves one complete copy."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def trim_log(path: Path, step: int) -> None:
    """Keep the log's records up to `step` (the checkpoint a run resumes from): the steps taken after it by
    an interrupted run are taken again, and must not be logged twice. A torn last line goes too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def finish_step(trainer, record: dict, *, progress: bool) -> None:
    """After `trainer.step` was taken: evaluate and print on `eval_every`, log, save on `save_every`
    (both also on the last step). `trainer` has `step`, `config` (steps, eval_every, save_every),
    `log_path`, `evaluate()` and `save()`."""
    cfg = trainer.config
    last = trainer.step == cfg.steps
    if trainer.step % cfg.eval_every == 0 or last:
        record |= trainer.evaluate()
        if progress:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    append_jsonl(trainer.log_path, record)
    if trainer.step % cfg.save_every == 0 or last:
        trainer.save()

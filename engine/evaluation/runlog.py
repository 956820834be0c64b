"""An eval run's folder: `run.json` (the settings that decide its predictions) and `results.jsonl` (one
line per finished item, appended and fsync'ed as it finishes), so an interrupted run loses nothing
and a re-run of the same command resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import StarError
from ..fileio import write_json_atomically

RUN_FORMAT = "star-eval/1"
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"

# Settings that change what the model predicts: a resume must match them exactly.
PREDICTION_KEYS = ("data", "data_options", "n", "seed", "max_new_tokens", "constrained", "temperature", "vote", "sweep",
                   "policy_sha256", "segmenter_sha256", "mask_guard")
# What a key meant in a run.json written before the key existed. A run recorded before its segmenter was
# (segmenter_sha256 absent) cannot say which SAM it used, and is not resumed.
KEY_DEFAULTS = {"constrained": False, "temperature": 1.0, "data_options": {},
                "mask_guard": {"max_share": 0.9, "min_contrast": 0.0}}


class EvalRunError(StarError):
    """An eval folder holds a different run, or its files are damaged beyond the last line."""


class RunLog:
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.run_path = self.dir / RUN_FILE
        self.results_path = self.dir / RESULTS_FILE

    def open(self, settings: dict) -> list[dict]:
        """Start a run or resume the one in the folder; returns the records already finished."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.run_path.exists():
            previous = self.read_settings()
            then, now = ({k: d.get(k, KEY_DEFAULTS.get(k)) for k in PREDICTION_KEYS} for d in (previous, settings))
            diffs = [f"{k}: {then[k]!r} there, {now[k]!r} now" for k in PREDICTION_KEYS if then[k] != now[k]]
            if diffs:
                raise EvalRunError(f"{self.dir} holds a run with other settings ({'; '.join(diffs)}); "
                                   "choose another --out, or delete that folder to start over")
        elif self.results_path.exists():
            raise EvalRunError(f"{self.results_path} exists without {RUN_FILE}; move it away or choose another --out")
        else:
            write_json_atomically(self.run_path, {"format": RUN_FORMAT, **settings}, indent=1)
        return self.read_records(repair=True)

    def read_settings(self) -> dict:
        try:
            settings = json.loads(self.run_path.read_text())
        except (OSError, ValueError) as exc:
            raise EvalRunError(f"{self.run_path} is unreadable ({exc}); delete the folder to start over") from None
        if settings.get("format") != RUN_FORMAT:
            raise EvalRunError(f"{self.run_path} is not a {RUN_FORMAT} run description")
        return settings

    def read_records(self, *, repair: bool = False) -> list[dict]:
        """Every complete line. A torn last line (the process died mid-write) is dropped, and with
        repair=True cut off the file so that appends continue on a clean line; a damaged line
        anywhere else is an error, never silently skipped."""
        if not self.results_path.exists():
            return []
        data = self.results_path.read_bytes()
        records, offset = [], 0
        for line in data.splitlines(keepends=True):
            complete = line.endswith(b"\n")
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if record is None or not complete:
                if offset + len(line) == len(data):  # the last line: torn by an interruption
                    if repair:
                        with open(self.results_path, "r+b") as f:
                            f.truncate(offset)
                    break
                raise EvalRunError(f"{self.results_path} line {len(records) + 1} is damaged; fix or delete it")
            records.append(record)
            offset += len(line)
        return records

    def latest_records(self) -> list[dict]:
        """One record per item, the newest: an item that failed and succeeded on a later resume counts as
        its success; one that only failed stays an error (reported, not scored)."""
        latest: dict = {}
        for record in self.read_records():
            latest.pop(record["id"], None)
            latest[record["id"]] = record
        return list(latest.values())

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.results_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

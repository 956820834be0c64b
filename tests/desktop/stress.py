"""The desktop stress run: the whole annotator's session of tests/desktop/stress_session.py, RUNS times in
fresh processes under Python's development mode and faulthandler, quitting in turn while idle and mid-run
while reasoning, segmenting and voting, with the shipped nano bundle on a 6000 x 4000 image. A run passes
when the process exits 0, stderr holds no "Fatal Python error" and no traceback, and the process has ended
within 2 s of the window's close. Prints a table and writes JSON.

    python -m tests.desktop.stress [--runs 30] [--json stress.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ["idle", "reasoning", "segmenting", "voting"]
EXIT_LIMIT_S = 2.0


def make_folder(root: Path) -> Path:
    from PIL import Image

    from engine.bundle import default_bundle_dir

    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    scene = Image.open(default_bundle_dir().parent.parent / "samples" / "scene.png").convert("RGB")
    scene.resize((6000, 4000), Image.NEAREST).save(folder / "a-large.png", compress_level=1)
    scene.save(folder / "b-scene.png")
    return folder


def session(folder: Path, home: Path, mode: str, samples: int = 32, timeout: float = 600,
            display: str | None = None) -> dict:
    """One session in a fresh process, offscreen, or on the X server `display` (Qt's xcb plugin)."""
    env = {**os.environ, "STAR_DESKTOP_HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "PYTHONDEVMODE": "1"}
    if display is not None:
        env = {k: v for k, v in env.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
        env["DISPLAY"] = display
    started = time.time()
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "tests.desktop.stress_session", str(folder),
                           "--quit", mode, "--samples", str(samples)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[2])
    ended = time.time()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    exit_s = ended - report["closed_at"] if "closed_at" in report else None
    crashed = "Fatal Python error" in proc.stderr or proc.returncode < 0
    problems = [p for p in (
        f"exit code {proc.returncode}" if proc.returncode else "",
        "crash" if crashed else "",
        "traceback" if "Traceback" in proc.stderr else "",
        f"stuck at {report['stuck']}" if report.get("stuck") else "",
        f"ended {exit_s:.1f} s after the close" if exit_s is not None and exit_s > EXIT_LIMIT_S else "",
        "no report" if not report else "",
    ) if p]
    return {"mode": mode, "steps": len(report.get("steps", [])), "close_s": report.get("close_s"),
            "exit_s": exit_s, "total_s": ended - started, "problems": problems,
            "stderr_tail": proc.stderr[-2000:] if problems else ""}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp))
        rows = []
        for i in range(args.runs):
            row = session(folder, Path(tmp) / "home", MODES[i % len(MODES)], args.samples)
            rows.append(row)
            print(f"{i + 1:3d}  quit {row['mode']:<10}  steps {row['steps']}  close {row['close_s'] or 0:5.2f} s  "
                  f"exit {row['exit_s'] or 0:5.2f} s  total {row['total_s']:5.1f} s  "
                  f"{'; '.join(row['problems']) or 'ok'}", flush=True)
    failed = [r for r in rows if r["problems"]]
    summary = {"runs": len(rows), "failed": len(failed), "crashes": sum("crash" in r["problems"] for r in rows),
               "max_close_s": max((r["close_s"] or 0) for r in rows),
               "max_exit_s": max((r["exit_s"] or 0) for r in rows), "rows": rows}
    print(f"{len(rows)} sessions, {len(failed)} failed, {summary['crashes']} crashes; longest close "
          f"{summary['max_close_s']:.2f} s, longest exit after close {summary['max_exit_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

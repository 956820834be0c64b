"""One whole annotator's session in its own process, the sequence that once ended in a crash at exit
(`bool_dealloc`): open a folder, an N = 32 run on a 6000 x 4000 image, move to the next image mid-run, run
again, Stop during reasoning, Stop during segmentation, refine with clicks, then quit: while idle, or
mid-run at the stage named by --quit (reasoning, segmenting, voting). Prints one JSON line (the steps
done, how long the close took, when it ended); the caller (tests/desktop/stress.py) checks the exit code,
stderr and how long the process took to end after the close.

    python -m tests.desktop.stress_session FOLDER [--quit idle|reasoning|segmenting|voting] [--samples 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

QUERY = "what coffee is served in"  # the sample scene's query: most samples answer, so SAM and the vote run


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--quit", default="idle", choices=["idle", "reasoning", "segmenting", "voting"])
    p.add_argument("--samples", type=int, default=32)
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    window.show()
    report: dict = {"steps": []}
    steps: list = []

    def step(name):
        report["steps"].append(name)

    def when(condition, then, timeout_s=300.0):
        """Poll every 5 ms until `condition()` holds, then call `then` (a stuck step ends the session)."""
        deadline = time.monotonic() + timeout_s

        def poll():
            if condition():
                then()
            elif time.monotonic() > deadline:
                report["stuck"] = report["steps"][-1] if report["steps"] else "start"
                quit_now()
            else:
                QTimer.singleShot(5, poll)
        poll()

    def run(n=None):
        window.set_samples(n or args.samples)
        window.query.setCurrentText(QUERY)
        assert window.run_query()

    def stage_has(word):
        return lambda: window.running and word in window.stage.text().lower()

    def idle():
        return not window.running and window.loading_path is None and window.refine_pending is None

    def quit_now():
        report["stage"] = window.stage.text()
        t0 = time.perf_counter()
        window.close()
        report["close_s"] = time.perf_counter() - t0
        report["closed_at"] = time.time()
        app.quit()

    def next_step():
        if steps:
            steps.pop(0)()

    def s_open():
        step("open folder")
        window.open_folder(args.folder)  # its first image: the 6000 x 4000 one
        run()
        when(stage_has("reasoning"), lambda: QTimer.singleShot(1000, next_step))  # tokens streaming

    def s_switch():
        step("next image mid-run")
        window.step_folder(1)
        when(idle, next_step)

    def s_stop_reasoning():
        step("stop while reasoning")
        run()
        when(stage_has("reasoning"), lambda: (window.cancel(), when(idle, next_step)))

    def s_stop_segmenting():
        step("stop while segmenting")
        run()
        when(stage_has("segmenting"), lambda: (window.cancel(), when(idle, next_step)))

    def s_complete():
        step("a complete run")
        run(8)
        when(idle, next_step)

    def s_refine():
        step("refine with clicks")
        window.set_tool("click")
        h, w = window.image.shape[:2]
        if not window.annotation.objects:  # nothing to refine (a new object would open the label dialog)
            next_step()
            return
        window.annotation.select(0)
        window.on_canvas_click(w * 0.5, h * 0.5, True)
        when(idle, lambda: (window.on_canvas_click(w * 0.3, h * 0.3, False) if window.annotation.selected is not None
                            else None, when(idle, next_step)))

    def s_back():
        step("back to the large image")
        window.step_folder(-1)
        when(idle, next_step)

    def s_quit():
        step(f"quit ({args.quit})")
        if args.quit == "idle":
            quit_now()
            return
        run()
        when(stage_has(args.quit), quit_now)

    steps += [s_switch, s_stop_reasoning, s_stop_segmenting, s_complete, s_refine, s_back, s_quit]
    QTimer.singleShot(0, s_open)
    app.exec()
    report["ended_at"] = time.time()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

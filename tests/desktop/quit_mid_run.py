"""One user session for the quit tests, in its own process: start the app on a bundle, open an image, run a
query with N samples, and quit (the window's close, as Ctrl+Q or the title bar's X do) `--after` seconds
into the run, or as soon as the run reaches `--stage`. Prints one JSON line: how long the close took, the
stage the run was in, and the process's own view of the run; the caller checks the exit code and stderr.

    python -m tests.desktop.quit_mid_run BUNDLE IMAGE [--samples 32] [--after 1.5 | --stage segmenting]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("image")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--after", type=float, default=None, help="seconds after the run starts")
    p.add_argument("--stage", default=None, help="quit when the status line names this stage")
    p.add_argument("--query", default="the red square")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(bundle=args.bundle)
    window.show()
    if not window.open_image(args.image):
        print(json.dumps({"error": window.last_message.text}))
        return 2
    report: dict = {}

    def quit_now() -> None:
        report["stage"] = window.stage.text()
        report["running"] = window.running
        t0 = time.perf_counter()
        window.close()
        report["close_s"] = time.perf_counter() - t0
        app.quit()

    def watch() -> None:
        if not window.running:  # finished before the quit point: quit anyway (the caller sees running=False)
            quit_now()
        elif args.stage and args.stage.lower() in window.stage.text().lower():
            quit_now()
        else:
            QTimer.singleShot(5, watch)

    def start() -> None:
        window.set_samples(args.samples)
        window.query.setCurrentText(args.query)
        report["started"] = window.run_query()
        if args.after is not None:
            QTimer.singleShot(int(args.after * 1000), quit_now)
        if args.stage:
            watch()

    QTimer.singleShot(0, start)
    app.exec()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`star-desktop [IMAGE | FOLDER | VIDEO] [--bundle DIR | --server URL]`: start the app."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="star-desktop", description="StAR Desktop: reasoning segmentation, offline.")
    p.add_argument("path", nargs="?", help="an image, a folder of images or a video to open")
    p.add_argument("--bundle", default=None, help="a model bundle folder (default: the remembered one, else nano)")
    p.add_argument("--server", default=None, metavar="URL",
                   help="use a `star serve` server (e.g. a workstation's GPU) instead of a local bundle")
    p.add_argument("--model", default=None, help="with --server: the model ID (default: the server's only model)")
    p.add_argument("--api-key-file", default=None, metavar="FILE", help="with --server: the file holding its API key")
    p.add_argument("--query", default=None, help="a query to run at start-up")
    p.add_argument("--samples", type=int, choices=[1, 8, 16, 32], default=None, help="samples for --query")
    p.add_argument("--screenshot", default=None, help=argparse.SUPPRESS)  # for docs: save a PNG when done, quit
    return p


def system_problem(environ=None) -> str | None:
    """Why Qt could not open a window here, in one line (None when it can): Qt's own messages for these
    cases name no library and abort the process."""
    import os

    from engine.qt_libs import missing_xcb_libraries, uses_xcb, xcb_problem

    environ = os.environ if environ is None else environ
    platform = environ.get("QT_QPA_PLATFORM", "")
    if sys.platform.startswith("linux") and not platform and not environ.get("DISPLAY") \
            and not environ.get("WAYLAND_DISPLAY"):
        return ("no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set); start it from a "
                "desktop session, or with QT_QPA_PLATFORM=offscreen for a headless run")
    return xcb_problem(missing_xcb_libraries()) if uses_xcb(environ) else None


def main(argv: list[str] | None = None) -> int:
    from engine.offline import enforce_offline

    enforce_offline()  # the project never downloads (engine/offline.py)
    args = build_parser().parse_args(argv)
    problem = system_problem()
    if problem:
        print(f"star-desktop: {problem}", file=sys.stderr)
        return 2
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from .store import app_home
    from .window import MainWindow

    home = app_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "star-desktop.log"
    logging.basicConfig(filename=log_path, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("StAR Desktop")
    from engine.qt_libs import emit_problem

    problem = emit_problem()
    if problem:  # the app works, but Python may abort when it quits: said once, at the start
        print(f"star-desktop: warning: {problem}", file=sys.stderr)
    extra = {}
    if args.server:
        from engine.serve.setup import read_api_key

        from .worker import server_loader

        try:
            extra["loader"] = server_loader(args.server, read_api_key(args.api_key_file), args.model)
        except Exception as exc:  # noqa: BLE001 - a bad key file is one line, not a traceback
            print(f"star-desktop: {exc}", file=sys.stderr)
            return 2
    window = MainWindow(bundle=args.bundle, log_path=str(log_path), **extra)
    window.show()
    if args.path:
        target = Path(args.path)
        from engine.frames import VIDEO_SUFFIXES

        if target.is_dir():
            window.open_folder(target)
        elif target.suffix.lower() in VIDEO_SUFFIXES:
            window.open_video_window(target)
        else:
            window.open_image(target)
    elif window.settings.first_run:
        window.first_run()
    window.preload()
    if args.samples:
        window.set_samples(args.samples)
    if args.query:
        window.query.setCurrentText(args.query)
        window.run_query()
    if args.screenshot:
        def snap():
            if window.running:
                QTimer.singleShot(200, snap)
                return
            window.grab().save(args.screenshot)
            window.close()
        QTimer.singleShot(500, snap)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())

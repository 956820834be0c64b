"""The app's save dialog under a real display, with "/proc/" typed into its file name and /proc opened:
prints one JSON line with the longest gap between two ticks of a 20 ms timer (how long the app froze).

    DISPLAY=:N python -m tests.desktop.dialog_probe
"""

from __future__ import annotations

import json
import time


def main() -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QLineEdit

    from desktop.dialogs import file_dialog

    app = QApplication([])
    dialog = file_dialog(None, "Export mask", "/tmp/result_mask.png", save=True)
    dialog.show()
    gaps, last = [], [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)

    def type_proc() -> None:
        edit = dialog.findChild(QLineEdit, "fileNameEdit")
        for ch in "/proc/":
            edit.insert(ch)
            app.processEvents()

    QTimer.singleShot(300, type_proc)
    QTimer.singleShot(1500, lambda: dialog.setDirectory("/proc"))
    QTimer.singleShot(2500, lambda: dialog.setDirectory("/dev"))
    QTimer.singleShot(5000, app.quit)
    app.exec()
    print(json.dumps({"max_gap_s": max(gaps), "ticks": len(gaps)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

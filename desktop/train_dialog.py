"""Run > Train on this folder: `star-train adapt` on the open folder's labelme files, in a subprocess (the
training holds the CPU for minutes to hours; the app stays responsive and can be closed), with its output
as it comes, Stop (Ctrl-C to it: its finished stages are kept, and starting again resumes), and "Use the
new bundle" once it has written and verified one."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)


def adapt_command(folder: Path, bundle: str | None, out: Path, extra: list[str] = ()) -> list[str]:
    """The arguments of `python -m training.cli adapt` for this folder and bundle (None: the nano one)."""
    from engine.bundle import default_bundle_dir

    return ["-m", "training.cli", "adapt", "--data", f"labelme:{folder}", "--bundle", bundle or str(default_bundle_dir()),
            "--out", str(out), *extra]


def default_output(folder: Path, bundle: str | None) -> Path:
    """Beside the folder: <bundle>-<folder>, numbered when taken."""
    name = Path(bundle).name if bundle else "nano"
    out = folder.parent / f"{name}-{folder.name}"
    n = 2
    while out.exists():
        out, n = folder.parent / f"{name}-{folder.name}-{n}", n + 1
    return out


class TrainDialog(QDialog):
    use_bundle = Signal(str)  # the new bundle's folder, when the user chooses to use it

    def __init__(self, parent, folder: Path, bundle: str | None, *, extra: list[str] = ()):
        super().__init__(parent)
        self.setWindowTitle("Train on this folder")
        self.folder, self.bundle, self.extra = Path(folder), bundle, list(extra)
        self.stopping = False
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(
            f"Trains the model bundle on the labelled images in {self.folder} (their labelme files), measures it "
            "before and after on the images it keeps out of training, and writes a new bundle. This takes from "
            "minutes to hours; Stop keeps what is done, and Start again goes on from there."))
        row = QHBoxLayout()
        row.addWidget(QLabel("New bundle:"))
        self.out = QLineEdit(str(default_output(self.folder, bundle)))
        row.addWidget(self.out)
        layout.addLayout(row)
        self.status = QLabel("")
        layout.addWidget(self.status)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(2000)
        layout.addWidget(self.log)
        buttons = QDialogButtonBox()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.use_button = QPushButton("Use the new bundle")
        self.close_button = QPushButton("Close")
        for button in (self.start_button, self.stop_button, self.use_button, self.close_button):
            buttons.addButton(button, QDialogButtonBox.ButtonRole.ActionRole)
        layout.addWidget(buttons)
        self.stop_button.setEnabled(False)
        self.use_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.use_button.clicked.connect(self._use)
        self.close_button.clicked.connect(self.close)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.resize(760, 420)

    def start(self) -> None:
        self.stopping = False
        self.out.setEnabled(False)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self.status.setText("training…")
        env = self.process.processEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(env)
        self.process.start(sys.executable, adapt_command(self.folder, self.bundle, Path(self.out.text()), self.extra))

    def stop(self) -> None:
        """Ctrl-C to the run: it stops between steps and keeps its finished stages."""
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.stopping = True
            self.status.setText("stopping…")
            os.kill(int(self.process.processId()), signal.SIGINT)

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode(errors="replace")
        for line in text.replace("\r", "\n").splitlines():
            line = line.strip()
            if not line:
                continue
            if "|" in line and ("%" in line or "it/s" in line or "s/it" in line):  # a progress bar's refresh
                self.status.setText(line[-120:])
            else:
                self.log.appendPlainText(line)

    def _finished(self, code: int, _status) -> None:
        self.stop_button.setEnabled(False)
        self.start_button.setEnabled(True)
        self.out.setEnabled(True)
        if code == 0:
            self.status.setText(f"done: {self.out.text()}")
            self.use_button.setEnabled(True)
            self.start_button.setEnabled(False)
        elif self.stopping:
            self.status.setText("stopped: Start goes on from where it stopped")
        else:
            self.status.setText(f"failed (exit status {code}): see the output above")

    def _use(self) -> None:
        self.use_bundle.emit(self.out.text())
        self.close()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.stop()
            self.process.waitForFinished(30000)
        super().closeEvent(event)

"""Run > Train on this folder: the real `star-train adapt` in a subprocess on a labelled folder of nano
scenes, its output in the dialog, and "Use the new bundle" handing the new folder to the window; Stop
sends Ctrl-C and the next Start goes on from the finished stages."""

import pytest

from tests.models import require
from tests.training.test_grpo import _labelled_folder

FAST = ["--steps", "1", "--warm-steps", "3", "--replay", "none", "--max-new-tokens", "64", "--max-completion-length", "64", "--data-options",
        "{holdout: 0.25, queries: labels}", "--threads", "2"]


@pytest.mark.timeout(900)
def test_train_on_a_folder_then_use_the_new_bundle(qtbot, home, tmp_path):
    require("trl")
    require("llama_cpp")
    from desktop.train_dialog import TrainDialog

    folder = _labelled_folder(tmp_path / "tiles", count=10)
    dialog = TrainDialog(None, folder, None, extra=FAST)
    qtbot.addWidget(dialog)
    assert dialog.out.text() == str(tmp_path / "nano-tiles")
    dialog.start()
    qtbot.waitUntil(lambda: "star-train adapt:" in dialog.log.toPlainText(), timeout=300_000)
    dialog.stop()  # Ctrl-C: the finished stages are kept
    qtbot.waitUntil(lambda: dialog.start_button.isEnabled(), timeout=120_000)
    assert dialog.status.text().startswith("stopped") and not (tmp_path / "nano-tiles").exists()
    dialog.log.clear()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.use_button.isEnabled() or "failed" in dialog.status.text(), timeout=600_000)
    assert dialog.use_button.isEnabled(), dialog.log.toPlainText()[-2000:]
    assert "done before, kept" in dialog.log.toPlainText()  # resumed, not redone
    assert (tmp_path / "nano-tiles" / "bundle.json").is_file()
    with qtbot.waitSignal(dialog.use_bundle) as used:
        dialog.use_button.click()
    assert used.args == [str(tmp_path / "nano-tiles")]


def test_the_window_asks_for_a_folder_first(qtbot, home):
    from desktop.window import MainWindow

    w = MainWindow(home=home)
    qtbot.addWidget(w)
    w.train_on_folder()
    assert w.last_message is not None and w.last_message.title == "No folder open"

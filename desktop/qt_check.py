"""A check for one PySide6 defect the app cannot work around: in PySide6 6.12.0 `SignalInstance.emit`
returns `True` without taking a reference to it. Every emit whose result is dropped (every one: callers
ignore it) takes one reference from `True`; the app emits a signal per streamed token batch, sample and
prompt, so after a few thousand the count reaches zero while the interpreter frees its objects at exit, and
Python aborts with "Fatal Python error: bool_dealloc: deallocating True or False". PySide6 6.11.3 and
earlier keep the reference; pyproject.toml holds the desktop extra below 6.12. `star doctor` and the app's
start call this check (no Qt application or display is needed)."""

from __future__ import annotations

import sys

FIX = "pip install 'PySide6-Essentials>=6.7,<6.12' 'shiboken6<6.12'"


def signal_emit_keeps_references(trials: int = 64) -> bool:
    """Whether emitting a signal leaves the reference count of True as it was (it must)."""
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        fired = Signal()

    probe = Probe()
    before = sys.getrefcount(True)
    for _ in range(trials):
        probe.fired.emit()
    # Another thread may take or drop a few references meanwhile; the defect drops exactly one per emit.
    return sys.getrefcount(True) > before - trials // 2


def emit_problem() -> str | None:
    """One line naming the defect and the fix, or None when the installed PySide6 is sound."""
    if signal_emit_keeps_references():
        return None
    import PySide6

    return (f"PySide6 {PySide6.__version__} drops a reference to True on every signal emit, which crashes Python "
            f"when the app quits (bool_dealloc); install a sound version: {FIX}")

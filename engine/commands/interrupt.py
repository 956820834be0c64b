"""Ctrl-C for the long-running commands (`star eval`, `star label`): the first press asks the run to stop
cleanly, the second stops at once.

The first press must not raise: a KeyboardInterrupt raised while llama.cpp is inside a ctypes callback
(its log hook) is printed and swallowed by ctypes, so the run would go on as if nothing had been pressed.
The handler only sets a cancel token; the command's loop and the engine's decode loop look at it.
"""

from __future__ import annotations

import signal
import sys


class StopOnCtrlC:
    """Context manager: while inside, SIGINT cancels `cancel` (a CancelToken) and prints one line; a second
    SIGINT raises KeyboardInterrupt."""

    def __init__(self, cancel, message: str):
        self.cancel = cancel
        self.message = message
        self.previous = None

    def __enter__(self):
        def handler(signum, frame):
            if self.cancel.cancelled:
                raise KeyboardInterrupt
            self.cancel.cancel()
            print(f"\n{self.message} (Ctrl-C again to stop at once)", file=sys.stderr)
        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False

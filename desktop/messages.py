"""Errors as the app shows them: what went wrong and what to do, never a traceback (the traceback goes
to the log file named in the message, for a bug report)."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from engine.errors import (
    BackendUnavailableError,
    ContextOverflowError,
    ImageError,
    InvalidQueryError,
    MemoryBudgetError,
    ModelFileError,
    StarError,
)

log = logging.getLogger("star_desktop")


@dataclass(frozen=True)
class UserMessage:
    title: str
    text: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.title}: {self.text}\n{self.remedy}"


REMEDIES = [
    (ImageError, "Image problem", "Open a PNG, JPEG, BMP, TIFF or WebP image (File > Open, or drop one on the window)."),
    (InvalidQueryError, "Query problem", "Type what to find in the query box and press Enter."),
    (ModelFileError, "Model bundle problem",
     "Choose another bundle (Ctrl+B), or rebuild this one with star-export bundle; clear the bundle choice to "
     "use the bundled nano model."),
    (BackendUnavailableError, "Runtime missing", "Install the runtime it names (installer/setup.sh --with ...) "
                                                 "or choose the CPU device."),
    (ContextOverflowError, "Too many samples", "Use fewer samples or a bundle with a larger context."),
    (MemoryBudgetError, "Not enough memory", "Use fewer samples, or a smaller image."),
]


def user_message(exc: BaseException, log_path: str | None = None) -> UserMessage:
    for kind, title, remedy in REMEDIES:
        if isinstance(exc, kind):
            return UserMessage(title, str(exc), remedy)
    if isinstance(exc, StarError):
        return UserMessage("Problem", str(exc), "See the message above; nothing was changed.")
    if isinstance(exc, MemoryError):
        return UserMessage("Out of memory", "the computer ran out of memory for this image and sample count.",
                           "Use fewer samples or a smaller image.")
    log.error("unexpected error\n%s", "".join(traceback.format_exception(exc)))
    where = f" The details were written to {log_path}." if log_path else ""
    return UserMessage("Unexpected error", f"{type(exc).__name__}: {exc}",
                       f"This is a bug in StAR Desktop; please report it.{where} Your work so far is saved.")


class ShowsMessages:
    """A window with a `banner` (panels.Banner) showing its problems; `last_message` is the one shown (None:
    none)."""
    last_message: UserMessage | None = None

    def show_message(self, message: UserMessage) -> None:
        self.last_message = message
        self.banner.show_message(message)

    def clear_message(self) -> None:
        self.last_message = None
        self.banner.setVisible(False)

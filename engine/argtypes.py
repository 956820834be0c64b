"""argparse types shared by the command lines: a bad value is an argument error (exit 2) whose message
names the accepted range and why, never a traceback from deep inside a run."""

from __future__ import annotations

import argparse
import math


def bounded_int(low: int, high: int, why: str):
    """An argparse type: a whole number in [low, high]; outside it the error names the range and why."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high} ({why}), got {value}")
        return value
    return parse


def int_list(low: int, high: int, what: str):
    """An argparse type: comma-separated whole numbers, each in [low, high]."""
    one = bounded_int(low, high, what)

    def parse(text: str) -> list[int]:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
        return values
    return parse


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def megapixels(text: str) -> float:
    """An argparse type: an image size limit in megapixels, at least one pixel (0.000001)."""
    value = _float(text)
    if not (math.isfinite(value) and value * 1e6 >= 1):
        raise argparse.ArgumentTypeError(f"must be at least 0.000001 megapixels (one pixel), got {text}")
    return value


def grey_levels(text: str) -> float:
    """An argparse type: a number of grey levels in [0, 255]."""
    value = _float(text)
    if not (math.isfinite(value) and 0 <= value <= 255):
        raise argparse.ArgumentTypeError(f"must be a number of grey levels in [0, 255], got {text}")
    return value


def temperature(text: str) -> float:
    """An argparse type: a sampling temperature in (0, 10]."""
    value = positive_float(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"must be in (0, 10] (StAR samples at 1.0), got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def answer_frame(text: str) -> str:
    """An argparse type: an answer frame name (engine.protocol.get_frame)."""
    from .protocol import get_frame

    try:
        get_frame(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def image_size(text: str) -> tuple[int, int]:
    """An argparse type: WIDTHxHEIGHT in pixels, each side 16..16384."""
    side = bounded_int(16, 16384, "pixels per side")
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x960, got {text!r}")
    return side(parts[0]), side(parts[1])


def memory_size(text: str) -> int:
    """An argparse type: a memory size such as 24G, 24GiB or 16000M, in bytes (K/M/G/T are powers of 1024)."""
    from .fit import parse_size

    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than zero, got {text!r}")
    return value

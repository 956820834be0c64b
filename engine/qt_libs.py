"""Can Qt's X11 platform plugin load here? The PySide6 wheel bundles Qt but not the X11/xcb system
libraries its `xcb` plugin links against; where one is missing Qt prints "Could not load the Qt platform
plugin xcb ... Reinstalling the application may fix this problem", which names no library. This module
finds the missing ones with `ldd` (no Qt import, so `star doctor` can ask without starting Qt) and names
the Debian / Ubuntu packages that provide them.

`python -m engine.qt_libs` prints those packages, one per line (the test command installs them).

It also checks one PySide6 defect the app cannot work around: in PySide6 6.12.0 `SignalInstance.emit`
returns `True` without taking a reference to it, so every emit takes one reference from `True`; the app
emits a signal per streamed token batch, sample and prompt, and after a few thousand Python aborts at exit
("Fatal Python error: bool_dealloc"). 6.11.3 and earlier keep the reference; pyproject.toml holds the
desktop extra below 6.12. The check imports QtCore only (no application, no display).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Shared libraries Qt 6's xcb plugin (and libQt6XcbQpa) link against -> the Debian / Ubuntu package.
DEBIAN_PACKAGES = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)


def missing_from_ldd(output: str) -> list[str]:
    """The libraries an `ldd` listing reports as "not found", each once, in order."""
    return list(dict.fromkeys(_NOT_FOUND.findall(output)))


def packages_for(libraries: list[str]) -> list[str]:
    """Debian / Ubuntu packages providing `libraries` (a library not in the table is named as itself)."""
    return list(dict.fromkeys(DEBIAN_PACKAGES.get(lib, lib) for lib in libraries))


def xcb_plugin_files() -> list[Path]:
    """The installed PySide6's xcb platform plugin and the Qt library behind it (empty without PySide6)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return []
    qt = Path(next(iter(spec.submodule_search_locations))) / "Qt"
    return [p for p in (qt / "plugins" / "platforms" / "libqxcb.so", qt / "lib" / "libQt6XcbQpa.so.6") if p.is_file()]


def missing_xcb_libraries() -> list[str] | None:
    """System libraries the xcb plugin needs and cannot find; None where this cannot be told (not Linux,
    no PySide6, no ldd)."""
    files = xcb_plugin_files()
    if not sys.platform.startswith("linux") or not files or shutil.which("ldd") is None:
        return None
    missing: list[str] = []
    for path in files:
        try:
            out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        missing += missing_from_ldd(out)
    return list(dict.fromkeys(missing))


def xcb_problem(missing: list[str] | None) -> str | None:
    """One line for a user whose X11 display Qt cannot use, or None when nothing is missing."""
    if not missing:
        return None
    return (f"Qt's X11 (xcb) platform plugin cannot load: {', '.join(missing)} not found; install "
            f"them with: sudo apt-get install {' '.join(packages_for(missing))}")


def uses_xcb(environ=os.environ) -> bool:
    """Whether Qt would choose its xcb plugin in this environment (Linux, an X display, no other choice)."""
    platform = environ.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb"
    return sys.platform.startswith("linux") and bool(environ.get("DISPLAY")) and not environ.get("WAYLAND_DISPLAY")


SIGNAL_FIX = "pip install 'PySide6-Essentials>=6.7,<6.12' 'shiboken6<6.12'"


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
            f"when the app quits (bool_dealloc); install a sound version: {SIGNAL_FIX}")


if __name__ == "__main__":
    print("\n".join(packages_for(missing_xcb_libraries() or [])))

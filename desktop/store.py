"""What the app remembers on disk, written atomically so a crash never leaves half a file:

- settings.json: the bundle, samples N, temperature, overlay opacity and colour, the last folder, the
  window's size, place and panel split;
- per image (keyed by the SHA-256 of its bytes, so a moved or renamed file still finds its work):
  history.json (the queries asked, newest first) and results/<time>.json (every result, in the engine's
  JSON form with every sample's masks) and annotation.json (the objects as edited, after every edit), so
  closing the app or a crash loses nothing.

The home folder is $STAR_DESKTOP_HOME, else $XDG_DATA_HOME/star-desktop, else ~/.local/share/star-desktop.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from engine.fileio import write_text_atomically

HISTORY_LIMIT = 50
BUNDLE_TEMPERATURE = 0.0  # Settings.temperature's "the bundle's recommendation"


def app_home() -> Path:
    if os.environ.get("STAR_DESKTOP_HOME"):
        return Path(os.environ["STAR_DESKTOP_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "star-desktop"


@dataclass
class Settings:
    bundle: str = ""  # "" = the nano bundle shipped with the package
    samples: int = 1
    temperature: float = 0.0  # voting temperature; 0 = the bundle's recommendation (BUNDLE_TEMPERATURE)
    opacity: float = 0.5
    colour: str = "#00d0ff"  # cyan: far from the reds, browns and greens of everyday objects (and the sample cup)
    last_dir: str = ""
    keep_query: bool = True  # a new image keeps the query box's text (one query over a folder)
    first_run: bool = True
    geometry: str = ""  # the window's size and place (QWidget.saveGeometry, base64)
    splitter: str = ""  # the canvas / side panel split (QSplitter.saveState, base64)
    labels: list = field(default_factory=list)  # labels given to objects, newest first (the label dialog)

    @classmethod
    def load(cls, home: Path | None = None) -> Settings:
        path = (home or app_home()) / "settings.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()  # missing or unreadable: defaults (a broken settings file must not stop the app)
        defaults = cls()
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in (raw.items() if isinstance(raw, dict) else ())
                  if key in known and isinstance(value, type(getattr(defaults, key)))}  # wrong types: the default
        if "labels" in values:
            values["labels"] = [x for x in values["labels"] if isinstance(x, str)]
        return cls(**values)

    def save(self, home: Path | None = None) -> Path:
        root = home or app_home()
        root.mkdir(parents=True, exist_ok=True)
        return write_text_atomically(root / "settings.json", json.dumps(asdict(self), indent=1))


def content_key(data: bytes) -> str:
    """The key of an image's records: the SHA-256 of its file's bytes (of a pasted image's pixels), so a
    renamed copy finds them."""
    return hashlib.sha256(data).hexdigest()[:32]


class ImageRecord:
    """The saved queries and results of one image."""

    def __init__(self, key: str, home: Path | None = None):
        self.root = (home or app_home()) / "images" / key
        self.key = key

    def history(self) -> list[str]:
        try:
            items = json.loads((self.root / "history.json").read_text())
            return [q for q in items if isinstance(q, str)]
        except (OSError, ValueError):
            return []

    def add_query(self, query: str) -> list[str]:
        items = [query] + [q for q in self.history() if q != query]
        items = items[:HISTORY_LIMIT]
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.root / "history.json", json.dumps(items, indent=1))
        return items

    def save_result(self, data: dict, image_name: str) -> Path:
        results = self.root / "results"
        results.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10 ** 9:09d}"
        return write_text_atomically(results / f"{stamp}.json", json.dumps({"image": image_name, "result": data}))

    def latest_result(self) -> dict | None:
        """The newest readable result (a damaged file is skipped, not fatal)."""
        for path in sorted((self.root / "results").glob("*.json"), reverse=True):
            try:
                saved = json.loads(path.read_text())
                if isinstance(saved, dict) and isinstance(saved.get("result"), dict):
                    return saved["result"]
            except (OSError, ValueError):
                continue
        return None

    def save_annotation(self, data: dict) -> Path:
        """The image's edited objects (desktop.annotation's autosave form), replaced whole on every edit."""
        self.root.mkdir(parents=True, exist_ok=True)
        return write_text_atomically(self.root / "annotation.json", json.dumps(data))

    def annotation(self) -> dict | None:
        """The autosaved objects, or None (never saved, or unreadable: a damaged file is not fatal)."""
        try:
            data = json.loads((self.root / "annotation.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("objects"), list) else None

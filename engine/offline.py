"""No network, ever: every Hugging Face load in the project goes through `from_local`.

transformers, PEFT and huggingface_hub take any string that is not an existing folder as a Hub repo id and
download it. This project runs offline and must never do that behind a user's back, so the Hub is set
offline for the whole process (`enforce_offline`, called by every command's main and by `from_local`; not
at import, so a program that imports `engine` keeps its environment) and every load first checks that the
path is a local folder: a typo is "not found", never a download.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ModelFileError

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def enforce_offline() -> None:
    """Set the Hugging Face libraries offline in this process, including ones already imported."""
    for name in _OFFLINE_VARIABLES:
        os.environ[name] = "1"
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:  # imported before us: its constant was read from the environment already
        hub.HF_HUB_OFFLINE = True


def local_folder(path: str | Path, what: str) -> Path:
    """`path` as an existing local folder, or a ModelFileError that says it is not one."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"{what} {str(path)!r} not found: expected a local folder (this project never "
                             "downloads models; fetch it yourself, then pass the folder)")
    return folder


def from_local(factory, path: str | Path, what: str, *args, **kwargs):
    """`factory.from_pretrained(path, ...)` for a local folder only, with downloads switched off."""
    enforce_offline()
    folder = local_folder(path, what)
    return factory.from_pretrained(str(folder), *args, local_files_only=True, **kwargs)

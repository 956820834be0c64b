"""A LoRA adapter folder as the project reads it, for the transformers policy (attached unmerged) and for
`star-export` (merged): the same checks in one place."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelFileError
from ..offline import local_folder

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def read_lora_folder(adapter_dir: str | Path) -> tuple[dict, Path]:
    """(adapter_config.json as a dict, the safetensors weights' path) of a LoRA adapter folder. Refused:
    a folder that is not local, a missing file, `.bin` weights (they would be unpickled), an unreadable
    config, and adapters that are not LoRA."""
    root = local_folder(adapter_dir, "LoRA adapter")
    config_path, weights = root / CONFIG, root / WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        raise ModelFileError(f"{root} is not a LoRA adapter folder (needs {CONFIG} and {WEIGHTS}; .bin adapters "
                             "are refused: they would be unpickled)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{config_path} is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_path} is not an adapter configuration (a JSON object)")
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelFileError(f"{root}: only LoRA adapters are supported, this one is {config.get('peft_type')}")
    return config, weights

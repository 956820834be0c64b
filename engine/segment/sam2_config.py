"""SAM 2 configs read as data, never as code.

A SAM 2 YAML names the classes to build (`_target_`). Hydra's `instantiate` would import and call
whatever a file names, and a bundle's YAML comes from whoever made the bundle, so the project builds the
model itself: the YAML is parsed as plain data (no interpolation, no hydra directives), every `_target_`
must be one of the sam2 classes the published configs use, and every other value must be a number,
string, boolean, null, list or mapping of those. Anything else is refused with the field that broke the
rule, before any class is imported.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import ModelFileError

# Every class the sam2 package's own model configs (sam2 and sam2.1, hiera t / s / b+ / l) instantiate.
# tests/engine/test_segment.py checks this list against the installed package's configs.
ALLOWED_TARGETS = frozenset({
    "sam2.modeling.sam2_base.SAM2Base",
    "sam2.modeling.backbones.image_encoder.ImageEncoder",
    "sam2.modeling.backbones.image_encoder.FpnNeck",
    "sam2.modeling.backbones.hieradet.Hiera",
    "sam2.modeling.position_encoding.PositionEmbeddingSine",
    "sam2.modeling.memory_attention.MemoryAttention",
    "sam2.modeling.memory_attention.MemoryAttentionLayer",
    "sam2.modeling.sam.transformer.RoPEAttention",
    "sam2.modeling.memory_encoder.MemoryEncoder",
    "sam2.modeling.memory_encoder.MaskDownSampler",
    "sam2.modeling.memory_encoder.Fuser",
    "sam2.modeling.memory_encoder.CXBlock",
    "sam2.sam2_video_predictor.SAM2VideoPredictor",  # never in a file's root: the engine builds it for video
})
_SCALARS = (str, int, float, bool, type(None))


def _problems(node: Any, where: str, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                out.append(f"{where}: key {key!r} is not a string")
                continue
            if key.startswith("_") and key != "_target_":
                out.append(f"{where}.{key}: hydra directives are not allowed in a SAM 2 model config")
                continue
            if key == "_target_":
                if value not in ALLOWED_TARGETS:
                    out.append(f"{where}._target_: {value!r} is not a SAM 2 model class "
                               f"(allowed: the sam2.modeling classes of the published configs)")
                continue
            _problems(value, f"{where}.{key}", out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _problems(value, f"{where}[{i}]", out)
    elif isinstance(node, str):
        if "${" in node:
            out.append(f"{where}: interpolation {node!r:.60} is not allowed (write the value itself)")
    elif not isinstance(node, _SCALARS):
        out.append(f"{where}: a {type(node).__name__} is not a plain value")


MAX_CONFIG_BYTES = 1 << 20  # the published SAM 2 configs are under 8 KB


def _check_yaml_shape(path: Path) -> None:
    """Refuse, before anything is built, a config that is too large or uses YAML anchors / aliases: the
    published configs use neither, and aliases nested in aliases ("billion laughs") make a few hundred
    bytes expand to gigabytes when OmegaConf copies the tree (an hour-long hang at 1.3 GB was seen)."""
    import yaml

    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"SAM 2 config {path} is {size} bytes; a SAM 2 config is a few KB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"SAM 2 config {path} could not be read: {exc}") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ModelFileError(f"SAM 2 config {path} uses YAML anchors or aliases, which SAM 2 configs never "
                                     "need; write the values out")
    except yaml.YAMLError as exc:
        raise ModelFileError(f"SAM 2 config {path} is not valid YAML ({exc.__class__.__name__})") from None


def read_model_config(path: str | Path) -> dict:
    """The `model` section of a SAM 2 YAML as plain, checked data (raises ModelFileError naming every
    field that breaks the rules)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    _check_yaml_shape(path)
    try:
        # OmegaConf's loader is PyYAML's SafeLoader (plus YAML 1.2 floats): it builds no objects. Values
        # are taken unresolved, so an interpolation stays a string and is refused below.
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, ValueError, OmegaConfBaseException) as exc:
        raise ModelFileError(f"SAM 2 config {path} could not be read: {str(exc).splitlines()[0][:200]}") from None
    except Exception as exc:  # PyYAML's parser errors are not ValueErrors
        raise ModelFileError(f"SAM 2 config {path} is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelFileError(f"{path} is not a SAM 2 model config (no top-level `model` mapping)")
    model = data["model"]
    problems: list[str] = []
    if model.get("_target_") != "sam2.modeling.sam2_base.SAM2Base":
        problems.append("model._target_: expected sam2.modeling.sam2_base.SAM2Base")
    _problems(model, "model", problems)
    if problems:
        raise ModelFileError(f"SAM 2 config {path} is refused:\n  " + "\n  ".join(problems))
    return model


def _resolve_class(target: str):
    if target not in ALLOWED_TARGETS:  # read_model_config already refused it; kept as the last guard
        raise ModelFileError(f"{target!r} is not a SAM 2 model class")
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_from_config(node: Any) -> Any:
    """Build the objects a checked config describes (children first, as hydra's recursive mode does)."""
    if isinstance(node, dict):
        built = {k: build_from_config(v) for k, v in node.items() if k != "_target_"}
        if "_target_" in node:
            return _resolve_class(node["_target_"])(**built)
        return built
    if isinstance(node, list):
        return [build_from_config(v) for v in node]
    return node


def merge(base: dict, overrides: dict) -> dict:
    """`overrides` (dotted keys) written into a copy of `base`."""
    import copy

    out = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(value)
    return out

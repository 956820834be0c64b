"""The one `key=value` override parser of the training commands, and the one way a dataclass of settings
(a GRPO recipe, the nano recipe, a warm-up leg) takes untyped values from YAML or the command line."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def parse_overrides(items) -> dict[str, Any]:
    """`key=value` strings -> {key: value}, each value read as a YAML scalar or collection."""
    import yaml

    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not key=value")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"override {item!r}: the value is not valid YAML") from None
    return values


def _number(kind: str, name: str, value: Any, what: str) -> Any:
    """YAML 1.1 reads `1e-5` as a string: a setting declared int or float is converted by its type."""
    if value is None or isinstance(value, bool):
        return value
    try:
        if kind.startswith("float") and isinstance(value, (int, str)):
            return float(value)
        if kind.startswith("int") and isinstance(value, (str, float)):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
    except (TypeError, ValueError):
        raise ValueError(f"{what} setting {name}={value!r} is not a {kind.split(' ')[0]}") from None
    return value


def typed_settings(cls, values: dict[str, Any], *, what: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`values` checked against the dataclass `cls`: unknown keys are errors (a typo never silently trains
    the default), numbers follow the fields' declared types. Keys in `extra` pass through untouched."""
    kinds = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(values) - set(kinds) - set(extra))
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(kinds))}")
    return {k: v if k in extra else _number(kinds[k], k, v, what) for k, v in values.items()}

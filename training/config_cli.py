"""Command-line options generated from a settings dataclass, as TRL's dataclass arguments are: the
dataclass is the one source of every default and help text, and the command line cannot disagree with it.

A field's `metadata` may carry `help`, `flag` (another option name, e.g. `--model` for `model_dir`),
`parse` (an argparse type for one value), `nargs`, `metavar`, `choices`, and for a field whose command-line
form differs from its value, `cli_default` (the default as typed) and `build` (typed -> value); a field
whose default is MISSING is required, and `cli: False` keeps a field off the command line.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any

from engine.argtypes import bounded_int

# A count of steps, scenes or threads on the command line: a whole number >= 1 (0 steps would train nothing,
# a 0-step ramp would divide by zero).
COUNT = bounded_int(1, 10**9, "a count")


def _flag(f: Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _plain_type(f: Field):
    kind = str(f.type).replace(" | None", "")
    return {"int": int, "float": float, "str": str}.get(kind)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """One option per field of `cls` (but `skip`), typed, with the field's default and help."""
    for f in fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        default = f.metadata.get("cli_default", default)
        options: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", "")}
        if default is MISSING:
            options["required"] = True
        else:
            options["default"] = default
            if default is not None or "default:" not in options["help"]:  # a None the help explains is not shown
                options["help"] += f" (default: {_show(default)})" if options["help"] else f"default: {_show(default)}"
        if str(f.type) == "bool":
            options["action"] = argparse.BooleanOptionalAction
        else:
            parse = f.metadata.get("parse") or _plain_type(f)
            if parse is None:
                raise TypeError(f"{cls.__name__}.{f.name}: give metadata['parse'] for type {f.type}")
            options["type"] = parse
            if "nargs" in f.metadata:
                options["nargs"] = f.metadata["nargs"]
            if "choices" in f.metadata:
                options["choices"] = f.metadata["choices"]
            if "metavar" in f.metadata:
                options["metavar"] = f.metadata["metavar"]
        parser.add_argument(_flag(f), **options)


def dataclass_from_args(cls, args: argparse.Namespace, **fixed):
    """An instance of `cls` from the parsed options (`fixed` values win); a field's metadata `build` turns
    the command-line form (e.g. two phase ends) into the field's value."""
    values = {}
    for f in fields(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            build = f.metadata.get("build")
            values[f.name] = build(value) if build is not None and value is not None else value
    return cls(**values)


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value) or "none"
    return str(value)


def setting(default, help: str, **metadata) -> Any:
    """A dataclass field with its help and command-line metadata (`default` MISSING: a required setting)."""
    if default is MISSING:
        return field(metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})

"""The schema of `bundle.json`, checked before any field is used.

A manifest comes from whoever made the bundle, so it is read as untrusted data: every field is checked
for its type and range, every path for staying inside the bundle folder, and each problem is reported
as one line naming the field and what was expected. `engine.bundle.read_manifest` raises them together.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from .segmenter_forms import SEGMENTER_PATHS

FAMILIES = ("qwen2.5-vl", "qwen3-vl")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MANIFEST_KEYS = {"format", "name", "policy", "segmenter", "files", "tools", "verification"}
_POLICY_KEYS = {"family", "frame", "prompt_family", "model", "mmproj", "quant", "source", "answer_grammar",
                "vote_temperature"}
_POLICY_PATHS = ("model", "mmproj")
_SEGMENTER_KEYS = {*SEGMENTER_PATHS, "image_size", "source", "engine_precision"}
ENGINE_PRECISIONS = ("fp32", "fp16")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def path_problem(rel: Any) -> str | None:
    """Why `rel` is not a safe bundle-relative path (None when it is): a relative path of plain names,
    never absolute, never `..`, never a drive or backslash trick."""
    if not isinstance(rel, str) or not rel:
        return f"expected a bundle-relative path (a non-empty string), got {_kind(rel)}"
    if "\x00" in rel or "\\" in rel:
        return f"{rel!r} has a NUL or backslash; use forward slashes"
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        return f"{rel!r} is absolute; bundle files are named relative to the bundle folder"
    if ".." in PurePosixPath(rel).parts:
        return f"{rel!r} leaves the bundle folder (..)"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unknown_keys(section: str, data: dict, allowed: set[str], problems: list[str]) -> None:
    for key in sorted(set(data) - allowed):
        problems.append(f"{section}.{key}: unknown field (expected one of {', '.join(sorted(allowed))})")


def _check_policy(policy: Any, problems: list[str]) -> None:
    from .protocol import PROMPT_FAMILIES, get_frame

    if not isinstance(policy, dict):
        problems.append(f"policy: expected an object or null, got {_kind(policy)}")
        return
    _unknown_keys("policy", policy, _POLICY_KEYS, problems)
    for key in ("family", "frame", "prompt_family", "model", "mmproj"):
        if key not in policy:
            problems.append(f"policy.{key}: missing")
    family = policy.get("family")
    if "family" in policy and family not in FAMILIES:
        problems.append(f"policy.family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    if "frame" in policy:
        try:
            if not isinstance(policy["frame"], str):
                raise ValueError
            get_frame(policy["frame"])
        except ValueError:
            problems.append(f"policy.frame: expected 'qwen2.5-840', 'qwen3-1000' or 'pixels-<S>', got {policy['frame']!r}")
    if "prompt_family" in policy and policy["prompt_family"] not in PROMPT_FAMILIES:
        problems.append(f"policy.prompt_family: expected one of {', '.join(PROMPT_FAMILIES)}, "
                        f"got {policy['prompt_family']!r}")
    for key in _POLICY_PATHS:
        if key in policy and (why := path_problem(policy[key])):
            problems.append(f"policy.{key}: {why}")
    if not isinstance(policy.get("quant", ""), str):
        problems.append(f"policy.quant: expected a string, got {_kind(policy['quant'])}")
    if not isinstance(policy.get("source", {}), dict):
        problems.append(f"policy.source: expected an object, got {_kind(policy['source'])}")
    if not isinstance(policy.get("answer_grammar", False), bool):
        problems.append(f"policy.answer_grammar: expected true or false, got {policy['answer_grammar']!r}")
    temperature = policy.get("vote_temperature", 1.0)
    if not (_is_number(temperature) and 0 < temperature <= 10):
        problems.append(f"policy.vote_temperature: expected a number in (0, 10], got {temperature!r}")


def _check_segmenter(segmenter: Any, problems: list[str]) -> None:
    if not isinstance(segmenter, dict):
        problems.append(f"segmenter: expected an object or null, got {_kind(segmenter)}")
        return
    _unknown_keys("segmenter", segmenter, _SEGMENTER_KEYS, problems)
    for key in SEGMENTER_PATHS:
        value = segmenter.get(key)
        if value is not None and (why := path_problem(value)):
            problems.append(f"segmenter.{key}: {why}")
    if segmenter.get("engine_precision") not in (None, *ENGINE_PRECISIONS):
        problems.append(f"segmenter.engine_precision: expected one of {', '.join(ENGINE_PRECISIONS)} or null, got "
                        f"{segmenter['engine_precision']!r}")
    size = segmenter.get("image_size", 1024)
    if not (_is_int(size) and 16 <= size <= 8192 and size % 16 == 0):
        problems.append(f"segmenter.image_size: expected a multiple of 16 in [16, 8192], got {size!r}")
    if not isinstance(segmenter.get("source", {}), dict):
        problems.append(f"segmenter.source: expected an object, got {_kind(segmenter['source'])}")
    pairs = (("encoder_onnx", "decoder_onnx"), ("encoder_engine", "decoder_engine"),
             ("encoder_onnx_fp16", "decoder_onnx_fp16"), ("config", "checkpoint"))
    for a, b in pairs:
        if (segmenter.get(a) is None) != (segmenter.get(b) is None):
            problems.append(f"segmenter.{a} / segmenter.{b}: expected both or neither")


def _check_files(files: Any, problems: list[str]) -> None:
    if not isinstance(files, dict):
        problems.append(f"files: expected an object of path -> {{sha256, bytes}}, got {_kind(files)}")
        return
    for rel, entry in files.items():
        if why := path_problem(rel):
            problems.append(f"files[{rel!r}]: {why}")
        if not isinstance(entry, dict) or set(entry) != {"sha256", "bytes"}:
            problems.append(f"files[{rel!r}]: expected {{\"sha256\": ..., \"bytes\": ...}}, got {entry!r:.80}")
            continue
        if not (isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])):
            problems.append(f"files[{rel!r}].sha256: expected 64 lowercase hex digits, got {entry['sha256']!r:.80}")
        if not (_is_int(entry["bytes"]) and entry["bytes"] >= 0):
            problems.append(f"files[{rel!r}].bytes: expected a whole number >= 0, got {entry['bytes']!r:.80}")


def manifest_problems(data: Any, fmt: str) -> list[str]:
    """Every problem of a parsed bundle.json, one line each (empty when it is well-formed)."""
    if not isinstance(data, dict):
        return [f"the manifest must be a JSON object, got {_kind(data)}"]
    problems: list[str] = []
    if data.get("format") != fmt:
        return [f"format: unsupported bundle format {data.get('format')!r} (this version reads {fmt})"]
    _unknown_keys("manifest", data, _MANIFEST_KEYS, problems)
    if not (isinstance(data.get("name"), str) and data["name"].strip()):
        problems.append(f"name: expected a non-empty string, got {data.get('name')!r:.80}")
    if data.get("policy") is not None:
        _check_policy(data["policy"], problems)
    if data.get("segmenter") is not None:
        _check_segmenter(data["segmenter"], problems)
    if data.get("policy") is None and data.get("segmenter") is None:
        problems.append("policy / segmenter: the bundle holds neither (expected at least one)")
    _check_files(data.get("files", {}), problems)
    tools = data.get("tools", {})
    if not (isinstance(tools, dict) and all(isinstance(v, str) for v in tools.values())):
        problems.append("tools: expected an object of name -> version string")
    if not isinstance(data.get("verification", {}), dict):
        problems.append(f"verification: expected an object, got {_kind(data['verification'])}")
    if not problems:
        files = data.get("files", {})
        named = [data["policy"][k] for k in _POLICY_PATHS] if data.get("policy") else []
        named += [v for k in SEGMENTER_PATHS if (v := (data.get("segmenter") or {}).get(k))]
        problems += [f"{rel}: named by the manifest but listed under files with no checksum"
                     for rel in named if rel not in files]
    return problems

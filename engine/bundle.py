"""Model bundles: one folder, one manifest (`bundle.json`) that names every file with its SHA-256 and
size, the policy's family / answer frame / prompt family, and the tools that made it. `star-export`
writes bundles; the engine and the app open them through `load_bundle`; nothing else guesses names.

Hashing a multi-GB GGUF on every start would cost seconds, so a successful full check is remembered
in a small per-user stamp file keyed by (path, inode, size, mtime, ctime): a file that is edited in place
and has its mtime put back still changes its ctime, so it is hashed again. `verify="full"` ignores the
stamps and hashes every file.

A manifest is untrusted data: `engine.bundle_schema` checks every field before use, and every file it
names must stay inside the bundle folder (no absolute paths, no `..`, no symlink leading out).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bundle_schema import manifest_problems
from .errors import ModelFileError
from .fileio import cache_dir, write_json_atomically, write_text_atomically
from .segmenter_forms import SegmenterForms

MANIFEST = "bundle.json"
FORMAT = "star-bundle/1"
_STAMP_LOCK = threading.Lock()


@dataclass
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class PolicySpec:
    family: str  # qwen2.5-vl | qwen3-vl
    frame: str  # answer frame: qwen2.5-840, qwen3-1000, pixels-<S>
    prompt_family: str  # star | star-stage1 | star-stage2 | visionreasoner
    model: str  # bundle-relative GGUF path
    mmproj: str
    quant: str = ""
    source: dict = field(default_factory=dict)  # base model, adapter, ... as given to star-export
    # The maker's measured choice of decoding: True = under the answer grammar (engine/policy/grammar.py).
    # The CLI and the app follow it unless told otherwise; released StAR checkpoints decode freely.
    answer_grammar: bool = False
    # The maker's measured voting temperature for N > 1 (StAR's 1.0 unless the key says otherwise): a small
    # model whose coordinate distributions are broad votes better cooler (docs/nano.md, "The shipped bundle").
    vote_temperature: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.vote_temperature, (int, float)) and self.vote_temperature > 0):
            raise ValueError(f"policy.vote_temperature must be a number > 0, got {self.vote_temperature!r}")


@dataclass
class SegmenterSpec(SegmenterForms[str]):
    """The manifest's segmenter section: its forms as bundle-relative paths (`SegmenterForms`), and what
    they were made at."""
    engine_precision: str | None = None  # what the TensorRT engines were built to compute in: fp32 | fp16
    image_size: int = 1024
    source: dict = field(default_factory=dict)


@dataclass
class Manifest:
    name: str
    policy: PolicySpec | None = None
    segmenter: SegmenterSpec | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    def named_files(self) -> list[str]:
        """Every file the policy and segmenter sections name (bundle-relative)."""
        named = [self.policy.model, self.policy.mmproj] if self.policy else []
        return named + (list(self.segmenter.named().values()) if self.segmenter else [])

    @classmethod
    def from_dict(cls, data: dict, where: str = MANIFEST) -> Manifest:
        problems = manifest_problems(data, FORMAT)
        if problems:
            raise ModelFileError(f"{where} is not a valid bundle manifest:\n  " + "\n  ".join(problems))
        try:
            return cls(name=str(data["name"]),
                       policy=PolicySpec(**data["policy"]) if data.get("policy") else None,
                       segmenter=SegmenterSpec(**data["segmenter"]) if data.get("segmenter") else None,
                       files={k: FileEntry(**v) for k, v in data.get("files", {}).items()},
                       tools=dict(data.get("tools", {})), verification=dict(data.get("verification", {})))
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"bundle manifest is malformed: {exc}") from None


@dataclass
class Bundle:
    root: Path
    manifest: Manifest

    def path(self, relative: str | None) -> Path | None:
        return None if relative is None else self.root / relative

    @property
    def name(self) -> str:
        return self.manifest.name

    def identity(self) -> dict:
        """What a result records about the models that produced it."""
        m = self.manifest
        segmenter_files = [] if m.segmenter is None else sorted(
            f"{p} {m.files[p].sha256}" for p in m.segmenter.named().values() if p in m.files)
        return {"name": m.name, "root": str(self.root),
                "policy": None if m.policy is None else {"family": m.policy.family, "frame": m.policy.frame,
                                                          "quant": m.policy.quant,
                                                          "sha256": m.files.get(m.policy.model, FileEntry("", 0)).sha256,
                                                          # star-train adapt's before / after, where it made it
                                                          **({"adapted": m.policy.source["adapted"]}
                                                             if isinstance(m.policy.source.get("adapted"), dict) else {})},
                # one hash over the segmenter's files: a run resumed on another SAM would mix two models
                "segmenter": None if m.segmenter is None else {
                    "image_size": m.segmenter.image_size,
                    "sha256": hashlib.sha256("\n".join(segmenter_files).encode()).hexdigest()}}

    def segmenter_files(self):
        from .segment import SegmenterFiles

        s = self.manifest.segmenter
        if s is None:
            raise ModelFileError(f"bundle {self.root} has no segmenter")
        return SegmenterFiles(**{name: self.path(rel) for name, rel in s.named().items()})


# This process's own hashes by (path, size, mtime): star-export hashes a stage's outputs when the stage ends
# and again for the manifest; a multi-GB GGUF should be read once. Checks meant to catch tampering
# (check_files with full=True) pass remember=False and always read the file.
_HASHED: dict[str, str] = {}


def sha256_file(path: Path, chunk: int = 1 << 22, *, remember: bool = True) -> str:
    key = _stamp_key(Path(path))
    if remember and key in _HASHED:
        return _HASHED[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256_file(path), path.stat().st_size)


def _stamp_path() -> Path:
    return cache_dir() / "verified-files.json"


def _stamp_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _read_stamps() -> dict:
    try:
        return json.loads(_stamp_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(verified: dict[str, str]) -> None:
    with _STAMP_LOCK:
        stamps = _read_stamps() | verified
        path = _stamp_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(path, stamps, indent=None)
        except OSError:
            pass  # a read-only home only costs a re-hash next time


def check_files(bundle: Bundle, *, full: bool = False, use_stamps: bool = True) -> list[str]:
    """Problems with the bundle's files (empty when intact). Sizes always; SHA-256 when `full`, or when a
    file has no remembered good hash for its current (size, mtime)."""
    problems = []
    stamps = _read_stamps() if use_stamps else {}
    good = {}
    for rel, entry in bundle.manifest.files.items():
        path = bundle.root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != entry.bytes:
            problems.append(f"{rel}: {size} bytes, the manifest says {entry.bytes}")
            continue
        key = _stamp_key(path)
        if not full and stamps.get(key) == entry.sha256:
            continue
        digest = sha256_file(path, remember=not full)
        if digest != entry.sha256:
            problems.append(f"{rel}: SHA-256 does not match the manifest (modified or corrupt)")
        else:
            good[key] = digest
    if good and use_stamps:
        _remember(good)
    return problems


def read_manifest(root: str | Path) -> Bundle:
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise ModelFileError(f"{root} is a file, not a bundle folder; give the folder star-export made")
        raise ModelFileError(f"bundle folder {root} does not exist")
    path = root / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{root} is not a bundle: it has no {MANIFEST} (make one with star-export)")
    try:
        data = json.loads(path.read_text())
    except RecursionError:  # nesting a manifest never has
        raise ModelFileError(f"{path} is nested too deeply to be a bundle manifest") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from None
    manifest = Manifest.from_dict(data, str(path))
    inside = root.resolve()
    for rel in manifest.files:
        target = (root / rel).resolve()
        if target != inside and inside not in target.parents:
            raise ModelFileError(f"bundle file {rel!r} leads outside the bundle folder {root} "
                                 f"(a symlink to {target}); a bundle must hold its own files")
    return Bundle(root, manifest)


VERIFY_MODES = ("quick", "full")


def load_bundle(root: str | Path, *, verify: bool | str = True) -> Bundle:
    """Open a bundle; with `verify`, refuse it if any file is missing, resized or modified. True or
    "quick" trusts a remembered hash of an unchanged file (inode, size, mtime, ctime); "full" re-hashes."""
    if verify not in (True, False, *VERIFY_MODES):
        raise ValueError(f"verify must be one of {VERIFY_MODES} or a bool, got {verify!r}")
    bundle = read_manifest(root)
    if verify:
        problems = check_files(bundle, full=verify == "full")
        if problems:
            raise ModelFileError(f"bundle {bundle.root} is damaged: " + "; ".join(problems)
                                 + ". Re-export it with star-export or restore the files.")
    return bundle


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Hash every file the manifest names (already in `manifest.files` or not) and write bundle.json
    atomically: a bundle without a manifest is not a bundle, so the manifest is written last."""
    root = Path(root)
    rels = set(manifest.files) | set(manifest.named_files())
    manifest.files = {rel: file_entry(root / rel) for rel in sorted(rels)}
    return save_manifest(root, manifest)


def save_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Write bundle.json as it is (no hashing): for records such as verification results."""
    return write_text_atomically(Path(root) / MANIFEST, manifest.to_json())


def default_bundle_dir() -> Path:
    """The nano bundle shipped inside the package (the embedded default)."""
    return Path(__file__).resolve().parent / "models" / "nano"

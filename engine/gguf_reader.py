"""A GGUF file's metadata and tensors as NumPy arrays (dequantized), in plain Python.

Only the tensor types `star-export` writes are read: F32, F16, BF16 and Q8_0 (a GGUF at another type
gets a clear error naming it). Used to bring a bundle's policy back into Hugging Face form
(`export.gguf_import`) and, header only, for the memory arithmetic of `star doctor --bundle`
(`engine.fit`); the format is llama.cpp's `docs/gguf.md`, version 2 and 3.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import StarError

GGUF_MAGIC = b"GGUF"
# Metadata value types: struct formats of the scalars; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml tensor types this reader dequantizes: name, elements per block, bytes per block.
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 8: ("Q8_0", 32, 34)}


class GgufError(StarError):
    """Not a GGUF file, a truncated one, or a tensor type this reader does not dequantize."""


@dataclass
class GgufTensorInfo:
    name: str
    shape: tuple[int, ...]   # NumPy order (ggml's ne reversed: the last axis varies fastest)
    ggml_type: int
    offset: int              # from the start of the data section


@dataclass
class GgufFile:
    path: Path
    version: int
    metadata: dict
    tensors: dict[str, GgufTensorInfo] = field(default_factory=dict)
    data_start: int = 0

    def type_name(self, name: str) -> str:
        t = self.tensors[name].ggml_type
        return GGML_TYPES[t][0] if t in GGML_TYPES else f"ggml type {t}"

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 (Q8_0 blocks dequantized: scale x int8)."""
        info = self.tensors[name]
        if info.ggml_type not in GGML_TYPES:
            raise GgufError(f"{self.path.name}: tensor {name} is {self.type_name(name)}; only F32, F16, BF16 and "
                            "Q8_0 are read (re-export the bundle at one of them)")
        kind, block, block_bytes = GGML_TYPES[info.ggml_type]
        count = int(np.prod(info.shape))
        if count % block:
            raise GgufError(f"{self.path.name}: tensor {name} has {count} values, not whole {kind} blocks")
        nbytes = count // block * block_bytes
        with open(self.path, "rb") as f:
            f.seek(self.data_start + info.offset)
            raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise GgufError(f"{self.path.name} is truncated: tensor {name} needs {nbytes} bytes, found {len(raw)}")
        if kind == "F32":
            values = np.frombuffer(raw, "<f4")
        elif kind == "F16":
            values = np.frombuffer(raw, "<f2")
        elif kind == "BF16":  # the high half of a float32
            values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4")
        else:  # Q8_0: per block of 32, one f16 scale then 32 int8 quants
            blocks = np.frombuffer(raw, np.uint8).reshape(-1, block_bytes)
            scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
            values = blocks[:, 2:].copy().view(np.int8).astype(np.float32) * scale
        return values.astype(np.float32).reshape(info.shape)


class _HeaderCut(GgufError):
    """The bytes read so far end inside the header: read more of the file (or it is truncated)."""


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise _HeaderCut(f"{self.path.name} is truncated in its header")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > len(self.data):
            raise _HeaderCut(f"{self.path.name} is truncated in its header")
        s = self.data[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.take("<I"), self.take("<Q")
            return [self.value(item) for _ in range(n)]
        raise GgufError(f"{self.path.name}: unknown metadata value type {kind}")


def read_gguf(path: str | Path) -> GgufFile:
    """Parse the header (metadata, tensor table); tensors are read on demand with `GgufFile.read`."""
    path = Path(path)
    if not path.is_file():
        raise GgufError(f"no GGUF file at {path}")
    # The header holds the whole vocabulary as metadata: read generously, then again if it runs past.
    size = path.stat().st_size
    chunk = min(size, 1 << 22)
    while True:
        with open(path, "rb") as f:
            data = f.read(chunk)
        try:
            return _parse(data, path, size)
        except _HeaderCut:
            if chunk >= size:
                raise
            chunk = min(size, chunk * 4)


def _parse(data: bytes, path: Path, size: int) -> GgufFile:
    if data[:4] != GGUF_MAGIC:
        raise GgufError(f"{path} is not a GGUF file (magic {data[:4]!r})")
    cur = _Cursor(data, path)
    cur.pos = 4
    version = cur.take("<I")
    if version not in (2, 3):
        raise GgufError(f"{path.name}: GGUF version {version} (this reader knows 2 and 3)")
    n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
    metadata = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.take("<I"))
    tensors = {}
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
        ggml_type, offset = cur.take("<I"), cur.take("<Q")
        tensors[name] = GgufTensorInfo(name, tuple(reversed(dims)), ggml_type, offset)
    align = int(metadata.get("general.alignment", 32))
    start = -(-cur.pos // align) * align
    out = GgufFile(path, version, metadata, tensors, start)
    for info in tensors.values():  # a file cut short is caught here, before any tensor is trusted
        if info.ggml_type in GGML_TYPES:
            _, block, block_bytes = GGML_TYPES[info.ggml_type]
            end = start + info.offset + int(np.prod(info.shape)) // block * block_bytes
            if end > size:
                raise GgufError(f"{path.name} is truncated: tensor {info.name} ends at byte {end} of {size}")
    return out

"""A GGUF file's metadata and tensors as NumPy arrays (dequantized), in plain Python.

The header of a GGUF of any tensor type is read (every ggml type's block size is known, so a file cut
short is caught whatever it holds); tensor values are dequantized for the types `star-export` writes,
F32, F16, BF16 and Q8_0 (another type gets a clear error naming it). Used to bring a bundle's policy back
into Hugging Face form (`export.gguf_import`), to check a user's GGUF pair before it becomes a bundle
(`export.gguf_pair`) and, header only, for the memory arithmetic of `star doctor --bundle` (`engine.fit`);
the format is llama.cpp's `docs/gguf.md`, version 2 and 3.
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
# Every ggml tensor type: id -> (name, elements per block, bytes per block), as ggml.h numbers them.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18),
}
# The types `GgufFile.read` dequantizes.
READABLE_TYPES = ("F32", "F16", "BF16", "Q8_0")
# `general.file_type`: how llama.cpp names a whole model's quantization (llama.h's LLAMA_FTYPE_*).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}


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
        if self.type_name(name) not in READABLE_TYPES:
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
        if info.ggml_type not in GGML_TYPES:
            raise GgufError(f"{path.name}: tensor {info.name} has ggml type {info.ggml_type}, which this version "
                            "does not know (a newer llama.cpp's file?)")
        _, block, block_bytes = GGML_TYPES[info.ggml_type]
        end = start + info.offset + int(np.prod(info.shape)) // block * block_bytes
        if end > size:
            raise GgufError(f"{path.name} is truncated: tensor {info.name} ends at byte {end} of {size}")
    return out

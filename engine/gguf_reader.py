"""A GGUF file's metadata and tensors as NumPy arrays, read by llama.cpp's own gguf-py (the `gguf`
package: `GGUFReader`, every quantization type's dequantization in `gguf.quants`, the type tables in
`gguf.constants`), behind the project's errors.

Used to bring a bundle's policy back into Hugging Face form (`export.gguf_import`, from any quantization
a user's bundle holds), to check a user's GGUF pair before it becomes a bundle (`export.gguf_pair`) and,
header only, for the memory arithmetic of `star doctor --bundle` (`engine.fit`). The file is memory-mapped:
a tensor's bytes are read when it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import StarError

GGUF_MAGIC = b"GGUF"


class GgufError(StarError):
    """Not a GGUF file, a truncated or damaged one, or a tensor gguf-py cannot dequantize."""


def type_name(ggml_type: int) -> str:
    """gguf-py's name of a ggml tensor type (F32, Q8_0, Q4_K, ...)."""
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"ggml type {ggml_type}"


def file_type_name(file_type: int) -> str | None:
    """llama.cpp's name of a whole model's quantization (`general.file_type`: Q4_K_M, Q8_0, F16, ...)."""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return None
    return {"ALL_F32": "F32", "GUESSED": None}.get(name, name.removeprefix("MOSTLY_"))


@dataclass
class GgufTensorInfo:
    name: str
    shape: tuple[int, ...]   # NumPy order (ggml's ne reversed: the last axis varies fastest)
    ggml_type: int
    offset: int              # of its bytes, from the start of the file


@dataclass
class GgufFile:
    path: Path
    version: int
    metadata: dict
    tensors: dict[str, GgufTensorInfo] = field(default_factory=dict)
    _reader: object = field(default=None, repr=False)

    def type_name(self, name: str) -> str:
        return type_name(self.tensors[name].ggml_type)

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 in NumPy order, dequantized whatever its type."""
        from gguf.quants import dequantize

        info = self.tensors[name]
        tensor = next(t for t in self._reader.tensors if t.name == name)
        try:
            values = dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except (NotImplementedError, ValueError) as exc:
            raise GgufError(f"{self.path.name}: tensor {name} is {self.type_name(name)}, which gguf-py cannot "
                            f"dequantize ({exc})") from None
        return np.asarray(values, dtype=np.float32).reshape(info.shape)


def read_gguf(path: str | Path) -> GgufFile:
    """Parse the header (metadata, tensor table); tensors are read on demand with `GgufFile.read`.
    GgufError for a missing, foreign, truncated or damaged file."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise GgufError(f"no GGUF file at {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GgufError(f"{path} is not a GGUF file (magic {magic!r})")
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OverflowError, TypeError) as exc:
        # gguf-py builds every tensor's view at once: a file cut short fails there (a reshape), as does a
        # header cut or damaged (a value past the end, an unknown type).
        raise GgufError(f"{path.name} is truncated or damaged ({exc})") from None
    metadata = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    version = int(reader.fields["GGUF.version"].contents())
    tensors = {t.name: GgufTensorInfo(t.name, tuple(int(v) for v in reversed(t.shape.tolist())), int(t.tensor_type),
                                      int(t.data_offset)) for t in reader.tensors}
    return GgufFile(path, version, metadata, tensors, reader)

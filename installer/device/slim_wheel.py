"""A llama-cpp-python wheel cut to what `import llama_cpp` loads, for the device call's 64 MiB carry limit.

scikit-build's wheel holds every library three times (zip has no symlinks: libX.so, libX.so.0 and
libX.so.0.N.M are copies) and twice over (llama_cpp/lib/ and a top-level lib/ with headers, CMake and
pkg-config files no Python import reads): 103 MB for the CUDA build. Kept: the package and its dist-info;
in llama_cpp/lib, libX.so (what Python and ggml's backend loader open by name) and libX.so.N (the soname
another library names), stripped of symbols no loader reads. The RECORD is rewritten.

The CUDA library's kernels are there twice too: as sm_90 machine code and as compute_90 PTX, the form
a newer GPU would compile at start (19.7 of its 37 MB of compressed kernels). The wheel is for sm_90
alone, so `strip_ptx` removes the PTX entries from each embedded fatbin in place (the fatbin rewritten at
the same address, the bytes after it zeroed: no address in the library moves, and zeros cost nothing in
the zip); the runtime loads the sm_90 entries, which are kept byte for byte.

    python installer/device/slim_wheel.py WHEEL OUT_DIR
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FULL_VERSION = re.compile(r"lib.+\.so\.\d+\.\d+\.\d+")
FATBIN_MAGIC = 0xBA55ED50
PTX, ELF = 1, 2  # a fatbin entry's kind


def _section(path: Path, name: str) -> tuple[int, int] | None:
    """(file offset, size) of an ELF section, from readelf (binutils, as strip)."""
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split("]", 1)[-1].split()
        if fields and fields[0] == name:
            return int(fields[3], 16), int(fields[4], 16)
    return None


def strip_ptx(path: Path) -> dict:
    """Drop the PTX entries of every fatbin in the library's .nv_fatbin section, in place. Returns counts."""
    section = _section(path, ".nv_fatbin")
    if section is None:
        return {"fatbins": 0, "ptx_bytes": 0}
    start, size = section
    data = bytearray(path.read_bytes())
    pos, fatbins, removed = start, 0, 0
    while pos + 16 <= start + size:
        magic, version, header, payload = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:  # alignment padding between fatbins
            pos += 8
            continue
        end = pos + header + payload
        kept, entry = [], pos + header
        while entry < end:
            kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, entry)
            whole = bytes(data[entry:entry + entry_header + entry_size])
            if kind == PTX:
                removed += len(whole)
            else:
                kept.append(whole)
            entry += entry_header + entry_size
        if not any(struct.unpack_from("<H", e)[0] == ELF for e in kept):
            raise ValueError(f"{path}: a fatbin without machine code; its PTX is all there is, keep it")
        body = b"".join(kept)
        rewritten = struct.pack("<IHHQ", magic, version, header, len(body)) + data[pos + 16:pos + header] + body
        data[pos:end] = rewritten + bytes(end - pos - len(rewritten))
        fatbins += 1
        pos = end
    path.write_bytes(data)
    return {"fatbins": fatbins, "ptx_bytes": removed}


def _record_line(root: Path, path: Path) -> str:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(root).as_posix()},sha256={digest},{len(data)}"


def slim(wheel: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(root)
        for top in list(root.iterdir()):
            if top.name != "llama_cpp" and not top.name.endswith(".dist-info"):
                shutil.rmtree(top) if top.is_dir() else top.unlink()
        lib = root / "llama_cpp" / "lib"
        for f in sorted(lib.iterdir()):
            if FULL_VERSION.fullmatch(f.name):
                f.unlink()
                continue
            subprocess.run(["strip", "--strip-unneeded", str(f)], check=True)
            if f.name.startswith("libggml-cuda"):
                counts = strip_ptx(f)
                print(f"{f.name}: PTX removed from {counts['fatbins']} fatbins ({counts['ptx_bytes'] / 2**20:.1f} MiB)")
        dist = next(root.glob("*.dist-info"))
        record = dist / "RECORD"
        lines = [_record_line(root, f) for f in sorted(root.rglob("*")) if f.is_file() and f != record]
        record.write_text("\n".join(lines + [f"{dist.name}/RECORD,,"]) + "\n")
        out = out_dir / wheel.name
        partial = out.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(root).as_posix())
        partial.replace(out)
    return out


if __name__ == "__main__":
    out = slim(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")

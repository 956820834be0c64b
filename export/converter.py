"""llama.cpp's HF -> GGUF converter, from the source distribution of the installed llama-cpp-python.

The converter is not on PyPI as a package and is never copied into this repository: the installer
(`installer/setup.sh --with export`) unpacks `convert_hf_to_gguf.py`, its `conversion/` package and
`gguf-py/` from the sdist of the exact llama-cpp-python version the engine runs, into
the project's cache folder (`engine.fileio.cache_dir`: $STAR_CACHE_DIR, else ~/.cache/star-desktop), as
llama-converter-<version>/. Conversion runs in a subprocess (`_launch`), so the
converter's own `gguf` package never mixes with ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StarError
from engine.fileio import cache_dir

from .progress import stage_bar, tensor_count


class ConverterError(StarError):
    """The converter is missing or failed; the message carries its last output lines."""


def llama_cpp_version() -> str:
    try:
        from importlib.metadata import version
        return version("llama-cpp-python")
    except Exception:
        raise ConverterError("llama-cpp-python is not installed: `bash installer/setup.sh --with llama,export`") from None


def converter_dir(version: str | None = None) -> Path:
    version = version or llama_cpp_version()
    root = Path(os.environ.get("STAR_CONVERTER_DIR") or cache_dir() / f"llama-converter-{version}")
    if not (root / "convert_hf_to_gguf.py").is_file():
        raise ConverterError(
            f"llama.cpp's converter for llama-cpp-python {version} is not at {root}: run "
            "`bash installer/setup.sh --with export` (it unpacks it from the matching source distribution)")
    return root


@dataclass
class ConversionResult:
    path: Path
    log_tail: str


def convert(model_dir: str | Path, outfile: str | Path, *, outtype: str = "f32", mmproj: bool = False,
            declare_pre: str | None = None, timeout: float = 3600, progress: bool = False) -> ConversionResult:
    """Run convert_hf_to_gguf.py on a Hugging Face folder. `mmproj=True` writes the vision projector.
    `declare_pre` names the pre-tokenizer for a tokenizer the converter's hash table does not know
    (only honoured when its split regex is exactly that pre-tokenizer's, see `_launch`)."""
    outfile = Path(outfile)
    outfile.parent.mkdir(parents=True, exist_ok=True)
    partial = outfile.with_name(outfile.name + ".partial")
    cmd = [sys.executable, "-m", "export._launch", str(converter_dir()), str(declare_pre or ""), "--",
           str(model_dir), "--outfile", str(partial), "--outtype", outtype]
    if mmproj:
        cmd.append("--mmproj")
    # The repo first (export._launch), then whatever the caller's path holds (packages installed with --target).
    python_path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
    returncode, lines = _run_counting(cmd, env, timeout, "mmproj" if mmproj else f"GGUF {outtype}",
                                      tensor_count(model_dir, vision=mmproj), progress)
    tail = "\n".join(lines[-15:])
    if returncode != 0:
        partial.unlink(missing_ok=True)
        raise ConverterError(f"converting {model_dir} failed:\n{tail}")
    if not partial.exists():
        raise ConverterError(f"the converter reported success but wrote no {partial}:\n{tail}")
    partial.replace(outfile)
    return ConversionResult(outfile, tail)


def _run_counting(cmd: list[str], env: dict, timeout: float, desc: str, total: int | None,
                  progress: bool) -> tuple[int, list[str]]:
    """Run the converter, one bar tick per tensor line it logs (`name, dtype --> TYPE, shape = ...`);
    returns its exit code and output lines (kept for the error message).

    The output is read on a daemon thread while this one waits with the timeout (which also stops a
    converter that hangs without printing). Whatever ends the wait early (Ctrl-C included) kills the
    converter first: it must not go on writing after we have gone, and no thread of ours may hold the
    interpreter's exit."""
    import threading

    lines: list[str] = []

    def read(stream, bar) -> None:
        try:
            for line in stream:
                lines.append(line.rstrip("\n"))
                if " --> " in line:
                    bar.update(1)
        except (OSError, ValueError):  # the pipe closed under us: the converter was stopped
            pass

    with stage_bar(f"converting to {desc}", total, enabled=progress) as bar, \
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        reader = threading.Thread(target=read, args=(proc.stdout, bar), name="converter-output", daemon=True)

        def stop() -> None:
            proc.kill()
            proc.wait()
            if reader.is_alive():
                reader.join(timeout=5)

        try:
            reader.start()
            code = proc.wait(timeout=timeout)
            reader.join()  # the pipe ends with the converter
        except subprocess.TimeoutExpired:
            stop()
            raise ConverterError(f"the converter took longer than {timeout:.0f} s and was stopped") from None
        except BaseException:
            stop()
            raise
        return code, lines

"""llama-cpp-python, imported with ggml's backends loaded, whichever way the build keeps them.

A build with ggml's backends linked in (installer/setup.sh's) registers them by itself. A build with
GGML_BACKEND_DL (the CUDA wheel of installer/device/llama_cuda_wheel.sh) ships them as separate libraries,
libggml-cpu and libggml-cuda beside libllama, and registers none: ggml looks for them beside the Python
executable and in the working directory, never in the package. `llama_modules()` loads them from the
package's own lib folder once, before llama.cpp is initialised. A backend whose libraries cannot load
(CUDA where no driver or cuBLAS is) is skipped, so the same wheel runs on the CPU, and
`llama_supports_gpu_offload()` then answers False.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from ..errors import BackendUnavailableError, unavailable

INSTALL_HINT = "the llama.cpp policy needs llama-cpp-python: `bash installer/setup.sh --with llama`"

_state: dict = {}


def _silent(level, text, user_data):
    return None


def llama_modules():
    """(llama_cpp, mtmd_cpp) with every loadable ggml backend registered and llama.cpp's logging silenced
    (it logs every prompt and image slice to stderr; the CLI and app show their own)."""
    try:
        import llama_cpp
        from llama_cpp import mtmd_cpp
    except ImportError as exc:
        raise unavailable("llama_cpp", exc, INSTALL_HINT) from None
    if "silent" not in _state:
        # Kept referenced here: llama.cpp calls it for as long as the process lives.
        _state["silent"] = llama_cpp.llama_log_callback(_silent)
        llama_cpp.llama_log_set(_state["silent"], ctypes.c_void_p())
        _load_backends(llama_cpp)
    return llama_cpp, mtmd_cpp


def silent_callback():
    """The log callback that drops llama.cpp's and mtmd's lines (set by `llama_modules`)."""
    llama_modules()
    return _state["silent"]


def loaded_ggml(llama_cpp):
    """The ggml library libllama is linked against, as loaded in this process (one backend registry).
    A wheel holds copies, not links (libggml.so, libggml.so.0, ...): opening libggml.so by its path would
    load a second copy with an empty registry of its own, so on Linux the one already loaded is found by
    the soname libllama names."""
    from llama_cpp._ctypes_extensions import load_shared_library

    lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
    if sys.platform.startswith("linux"):
        for path in sorted(lib_dir.glob("libggml.so.*"), key=lambda p: len(p.name)):
            try:
                ggml = ctypes.CDLL(path.name, mode=os.RTLD_NOLOAD)
                break
            except OSError:
                continue
        else:
            ggml = load_shared_library("ggml", lib_dir)
    else:
        ggml = load_shared_library("ggml", lib_dir)
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    return ggml


def _load_backends(llama_cpp) -> None:
    ggml = loaded_ggml(llama_cpp)
    if ggml.ggml_backend_reg_count() == 0:  # a GGML_BACKEND_DL build: nothing registered yet
        lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
        ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
    _state["backends"] = int(ggml.ggml_backend_reg_count())


def registered_backends() -> int:
    """How many ggml backends llama.cpp can use in this process (CPU, CUDA, ...)."""
    llama_modules()
    return _state["backends"]


def gpu_offload() -> bool:
    """Whether this llama.cpp build, on this machine, can put layers on a GPU (False where llama-cpp-python
    is missing)."""
    try:
        llama_cpp, _ = llama_modules()
    except BackendUnavailableError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())

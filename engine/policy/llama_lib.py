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
from pathlib import Path

from ..errors import BackendUnavailableError

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
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
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


def _load_backends(llama_cpp) -> None:
    from llama_cpp._ctypes_extensions import load_shared_library

    lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
    ggml = load_shared_library("ggml", lib_dir)  # the handle libllama already holds: one registry
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    if ggml.ggml_backend_reg_count() == 0:  # a GGML_BACKEND_DL build: nothing registered yet
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
    _state["backends"] = int(ggml.ggml_backend_reg_count())


def gpu_offload() -> bool:
    """Whether this llama.cpp build, on this machine, can put layers on a GPU (False where llama-cpp-python
    is missing)."""
    try:
        llama_cpp, _ = llama_modules()
    except BackendUnavailableError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())

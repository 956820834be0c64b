"""Which device a run uses: `auto` picks CUDA when the installed llama.cpp build can offload to a GPU
(the policy is where the time goes), else the CPU. Asking for CUDA where there is none is an error
that says so, never a silent fall-back."""

from __future__ import annotations

from .errors import BackendUnavailableError

DEVICES = ("auto", "cpu", "cuda")


def llama_gpu_offload() -> bool:
    from .policy.llama_lib import gpu_offload

    return gpu_offload()


def resolve_device(device: str = "auto") -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    gpu = llama_gpu_offload()
    if device == "cuda" and not gpu:
        raise BackendUnavailableError("device 'cuda' was asked for, but this llama.cpp build cannot offload to a GPU "
                                      "(install with: bash installer/setup.sh --with gpu) or no GPU is visible")
    return "cuda" if gpu else "cpu"


def resolve_torch_device(device: str = "auto") -> str:
    """The device a PyTorch trainer runs on: `auto` is CUDA when torch sees a GPU, else the CPU; `cuda`
    without one is an error (a run planned for minutes on a GPU must not silently take hours on a CPU)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    import torch

    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise BackendUnavailableError("device 'cuda' was asked for, but torch sees no CUDA GPU "
                                      f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    return "cpu"

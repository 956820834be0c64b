"""Custom GPU kernels. CUDA C sources live beside their Python launchers and compile at run time (NVRTC)."""

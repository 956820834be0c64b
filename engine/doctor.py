"""`star doctor`: what this machine offers for StAR Desktop, checked by really loading each runtime."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _version(module: str) -> tuple[object | None, str]:
    try:
        mod = importlib.import_module(module)
        return mod, str(getattr(mod, "__version__", "installed"))
    except Exception as exc:  # ImportError, or a native library that fails to load
        return None, f"not available ({exc.__class__.__name__})"


def collect() -> dict:
    report: dict[str, object] = {}
    gpus = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]) if shutil.which("nvidia-smi") else None
    report["gpu"] = gpus.splitlines() if gpus else "none (nvidia-smi found no GPU)"
    nvcc = _run(["nvcc", "--version"]) if shutil.which("nvcc") else None
    report["cuda_toolkit"] = nvcc.splitlines()[-1] if nvcc else "none"

    from .kernels.cuda_voting import unavailable_reason

    reason = unavailable_reason()
    report["voting_backend"] = "cuda (CuPy kernel)" if not reason else f"cpu ({reason})"
    from .kernels import cpu_iou

    cpu_reason = cpu_iou.unavailable_reason()
    report["voting_cpu_kernel"] = "compiled C (iou_cpu.c)" if not cpu_reason else f"numpy ({cpu_reason})"

    torch, version = _version("torch")
    if torch is not None:
        version += f"; device: {'cuda' if torch.cuda.is_available() else 'cpu'}"
    report["torch"] = version
    report["sam2"] = _version("sam2")[1]

    llama, version = _version("llama_cpp")
    if llama is not None:
        try:
            from .policy.llama_lib import gpu_offload

            version += f"; gpu offload: {gpu_offload()}"
        except Exception:
            pass
    report["llama_cpp"] = version

    ort, version = _version("onnxruntime")
    if ort is not None:
        version += f"; providers: {', '.join(ort.get_available_providers())}"
    report["onnxruntime"] = version
    report["tensorrt"] = _version("tensorrt")[1]
    conflict = onnxruntime_conflict(installed_versions(("onnxruntime", "onnxruntime-gpu")))
    if conflict:
        report["onnxruntime_warning"] = conflict
    report["pyside6"] = _version("PySide6")[1]
    report["desktop_x11"] = _x11_status()
    report["desktop_signals"] = _signal_status()
    return report


def installed_versions(names) -> dict[str, str]:
    """Installed versions of these distributions (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def onnxruntime_conflict(installed: dict[str, str]) -> str | None:
    """The warning for an environment holding both ONNX Runtime builds (they write the same `onnxruntime`
    module, so whichever was installed last wins and the GPU may sit idle), or None."""
    if "onnxruntime" in installed and "onnxruntime-gpu" in installed:
        return (f"both onnxruntime {installed['onnxruntime']} and onnxruntime-gpu {installed['onnxruntime-gpu']} "
                "are installed and share one module; fix: pip uninstall -y onnxruntime onnxruntime-gpu && "
                "pip install onnxruntime-gpu (installer/setup.sh does this on a GPU machine)")
    return None


def _x11_status() -> str:
    """Whether the app can open a window on an X11 display (Qt's xcb plugin finds its system libraries)."""
    from .qt_libs import missing_xcb_libraries, xcb_problem

    missing = missing_xcb_libraries()
    if missing is None:
        return "not checked (needs Linux, PySide6 and ldd)"
    return xcb_problem(missing) or "ok (Qt's xcb plugin finds every library it needs)"


def _signal_status() -> str:
    """Whether the installed PySide6 keeps its references when a signal is emitted (6.12.0 does not, and the
    app then crashes at exit; engine/qt_libs.py)."""
    if importlib.util.find_spec("PySide6") is None:
        return "not checked (PySide6 is not installed)"
    from .qt_libs import emit_problem

    return emit_problem() or "ok (a signal emit keeps its references)"


def bundle_report(root) -> tuple[bool, dict]:
    """Whether a bundle is complete and intact (every file hashed now, no remembered stamps)."""
    from .bundle import check_files, read_manifest
    from .errors import ModelFileError

    try:
        bundle = read_manifest(root)
    except ModelFileError as exc:
        return False, {"bundle": str(root), "problem": str(exc)}
    problems = check_files(bundle, full=True, use_stamps=False)
    m = bundle.manifest
    return not problems, {"bundle": str(bundle.root), "name": m.name,
                          "policy": f"{m.policy.family}, {m.policy.frame}, {m.policy.quant}" if m.policy else "none",
                          "segmenter": ", ".join(k for k in ("encoder_onnx", "checkpoint", "encoder_engine")
                                                 if m.segmenter and getattr(m.segmenter, k)) or "none",
                          "files": "intact" if not problems else "; ".join(problems),
                          "shared": shared_files(bundle),
                          "video": can_track(m)}


def can_track(manifest) -> str:
    """Whether `star track` can follow answers through a video with this bundle's segmenter: it needs SAM 2's
    memory modules, which live in the PyTorch checkpoint (the ONNX graphs are the image path only)."""
    seg = manifest.segmenter
    if seg is not None and seg.config and seg.checkpoint:
        return "can track (a PyTorch SAM 2 checkpoint with its memory modules)"
    return ("cannot track: the segmenter is the image graphs only; star track --sam2 CONFIG.yaml:CHECKPOINT.pt "
            "gives it a SAM 2 with memory")


def shared_files(bundle) -> str:
    """What a bundle shares with other bundles and folders: parts taken as they are (another bundle's
    segmenter, a user's GGUF pair) and files hard-linked, stored once on disk for all their names."""
    m = bundle.manifest
    parts = []
    if m.segmenter and m.segmenter.source.get("taken_from"):
        parts.append(f"segmenter taken from bundle {m.segmenter.source['taken_from']!r}")
    if m.policy and m.policy.source.get("gguf"):
        parts.append(f"policy taken from the GGUF pair {m.policy.source['gguf']} + {m.policy.source.get('mmproj')}")
    linked = []
    for rel in m.named_files():
        try:
            if bundle.path(rel).stat().st_nlink > 1:
                linked.append(rel)
        except OSError:  # a missing file is reported under "files"
            pass
    if linked:
        parts.append(f"hard-linked (one copy on disk for every name): {', '.join(linked)}")
    return "; ".join(parts) or "nothing"


def main(args) -> int:
    report = collect()
    ok = True
    fit = None
    if getattr(args, "bundle", None):
        ok, report["bundle"] = bundle_report(args.bundle)
        if ok and _has_policy(args.bundle):
            from .fit import fit_report

            fit = fit_report(args.bundle, samples=args.samples, max_new_tokens=args.max_new_tokens,
                             gpu_mem=args.gpu_mem)
    if getattr(args, "json", False):
        print(json.dumps({**report, **({"fit": fit} if fit else {})}, indent=2))
        return 0 if ok else 1
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, list):
            value = "; ".join(value)
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        print(f"{key.ljust(width)}  {value}")
    if fit:
        from .fit import format_fit

        print(format_fit(fit))
    return 0 if ok else 1


def _has_policy(root) -> bool:
    from .bundle import read_manifest

    return read_manifest(root).manifest.policy is not None

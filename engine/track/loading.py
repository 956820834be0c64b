"""The SAM 2 a video is followed with: one with its memory modules, from `--sam2` or a bundle."""

from __future__ import annotations

from ..errors import ModelFileError

CLI_HINT = "give --sam2 CONFIG.yaml:CHECKPOINT.pt (star doctor says whether a bundle can track)"


def video_segmenter(sam2: str | None, bundle_root: str | None, *, device: str = "auto", verify: str = "quick",
                    hint: str = CLI_HINT):
    """SAM 2 with its memory modules (sam2's SAM2VideoPredictor): `sam2` as CONFIG.yaml:CHECKPOINT.pt, else the
    bundle's PyTorch segmenter; a bundle without one is a ModelFileError ending in `hint` (what to do instead:
    the command line names --sam2)."""
    from ..bundle import default_bundle_dir, load_bundle
    from ..devices import resolve_device
    from ..segment.torch_backend import build_model

    if sam2:
        config, sep, checkpoint = sam2.partition(":")
        if not sep or not checkpoint:
            raise ModelFileError(f"--sam2 {sam2}: give CONFIG.yaml:CHECKPOINT.pt")
        return build_model(config, checkpoint, device=resolve_device(device), video=True)
    files = load_bundle(bundle_root or default_bundle_dir(), verify=verify).segmenter_files()
    if files.config is None or files.checkpoint is None:
        raise ModelFileError(f"the bundle {bundle_root or 'nano'} cannot track: its segmenter has no PyTorch SAM 2 "
                             f"checkpoint with the memory modules video needs; {hint}")
    return build_model(files.config, files.checkpoint, device=resolve_device(device), video=True)


"""ONNX -> TensorRT engines for SAM 2 (`star-export sam2 --tensorrt`).

NEVER EXECUTED: TensorRT could not be installed on any machine the project has run on (docs/export.md, "TensorRT").
Written against the documented Python API of TensorRT 10 and 11: Builder -> network -> OnnxParser ->
builder config (workspace, one optimization profile for the decoder's dynamic prompt/point counts) ->
`build_serialized_network`. TensorRT 11 networks are strongly typed (no FP16 builder flag): FP16 there
comes from an FP16 ONNX graph; on 10.x the FP16 flag is set when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max of one dynamic input."""
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def decoder_profiles(max_prompts: int = 256, opt_prompts: int = 32, max_points: int = 8) -> list[ShapeProfile]:
    """The decoder's dynamic dims: K prompts (one query with N samples x objects) and P points per prompt
    (a box is 2 points, plus the click: opt 3)."""
    if not 1 <= opt_prompts <= max_prompts:
        raise ValueError(f"need 1 <= opt_prompts ({opt_prompts}) <= max_prompts ({max_prompts})")
    if max_points < 3:
        raise ValueError("max_points must be at least 3 (box corners + click)")
    return [
        ShapeProfile("point_coords", (1, 1, 2), (opt_prompts, 3, 2), (max_prompts, max_points, 2)),
        ShapeProfile("point_labels", (1, 1), (opt_prompts, 3), (max_prompts, max_points)),
    ]


def fp16_flag_supported(trt) -> bool:
    """TensorRT 10.x has BuilderFlag.FP16; 11.x removed it (strongly typed networks)."""
    return hasattr(trt.BuilderFlag, "FP16")


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, profiles: list[ShapeProfile] = (),
                 fp16: bool = False, workspace_gb: float = 4.0) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):   # deprecated no-op in 10, gone in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors[:5]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and fp16_flag_supported(trt):
        config.set_flag(trt.BuilderFlag.FP16)
    if profiles:
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path = Path(engine_path)
    tmp = engine_path.with_name(engine_path.name + ".partial")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    return engine_path

"""ONNX -> TensorRT engines for SAM 2 (`star-export sam2 --tensorrt`).

NEVER EXECUTED: TensorRT could not be installed on any machine the project has run on (docs/export.md, "TensorRT").
Written against the documented Python API of TensorRT 10 and 11: Builder -> network -> OnnxParser ->
builder config (workspace, one optimization profile for the decoder's dynamic prompt/point counts) ->
`build_serialized_network`. TensorRT 11 networks are strongly typed (no FP16 builder flag): FP16 there
comes from an FP16 ONNX graph, so `--fp16` engines are built from the FP16 graphs on every version, with
the FP16 flag as well where it exists (10.x). `plan_engine` makes that choice as a plain function (tested),
and the manifest records the precision built; `engine_precision` reads it back from an engine.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class EnginePlan:
    """How one engine is built: from which ONNX graph, with or without the FP16 builder flag, and the
    precision the engine then computes in (what the manifest records)."""
    onnx: str            # "fp32" | "fp16": the graph the engine is built from
    fp16_flag: bool
    precision: str       # "fp32" | "fp16"


def plan_engine(fp16: bool, fp16_flag_available: bool) -> EnginePlan:
    """FP16 engines come from the FP16 graph (the only way on TensorRT 11, whose networks are strongly
    typed), plus the builder flag where it still exists (10.x); FP32 engines from the FP32 graph."""
    if not fp16:
        return EnginePlan("fp32", False, "fp32")
    return EnginePlan("fp16", fp16_flag_available, "fp16")


def fp16_flag_supported(trt) -> bool:
    """TensorRT 10.x has BuilderFlag.FP16; 11.x removed it (strongly typed networks)."""
    return hasattr(trt.BuilderFlag, "FP16")


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, profiles: list[ShapeProfile] = (),
                 fp16_flag: bool = False, workspace_gb: float = 4.0) -> Path:
    """Build one engine from an ONNX graph (`fp16_flag` only where `fp16_flag_supported`)."""
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
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    # Layer precisions stay readable from the engine (engine_precision, star-export verify).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
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


def precision_from_layers(info: dict) -> str:
    """"fp16" when any layer of an engine's inspector JSON computes in half precision, else "fp32"."""
    for layer in info.get("Layers", []):
        text = json.dumps(layer) if isinstance(layer, dict) else str(layer)
        if "Half" in text or "FP16" in text:
            return "fp16"
    return "fp32"


def engine_precision(engine_path: str | Path) -> str:
    """The precision an engine file was built with, from TensorRT's engine inspector."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not load {engine_path}")
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    return precision_from_layers(json.loads(info))

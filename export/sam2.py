"""`star-export sam2`: a SAM 2 / 2.1 checkpoint + config -> ONNX encoder and decoder in a bundle
(optionally the PyTorch files too, and TensorRT engines where TensorRT is installed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.bundle import SegmenterSpec
from engine.errors import BackendUnavailableError, ModelFileError

from .stages import StageLog, check_free_space, fingerprint, place_file, provenance


def export_sam2(checkpoint: str | Path, config: str | Path, bundle: str | Path, *, with_torch: bool = False,
                tensorrt: bool = False, fp16: bool = False, log: Callable[[str], None] = print) -> SegmenterSpec:
    from engine.segment.onnx_export import export_sam2_onnx
    from engine.segment.torch_backend import build_model, resolve_config

    checkpoint, bundle = Path(checkpoint), Path(bundle)
    if not checkpoint.is_file():
        raise ModelFileError(f"SAM 2 checkpoint {checkpoint} does not exist")
    config_path = resolve_config(config)
    if tensorrt:
        try:
            import tensorrt as _trt  # noqa: F401
        except ImportError:
            raise BackendUnavailableError("--tensorrt needs TensorRT (`pip install tensorrt` on a machine with an "
                                          "NVIDIA GPU); the ONNX files work without it") from None
    stages = StageLog(bundle)
    inputs = fingerprint(checkpoint, config_path)
    enc_rel, dec_rel = "sam2/sam2_encoder.onnx", "sam2/sam2_decoder.onnx"
    spec = SegmenterSpec(encoder_onnx=enc_rel, decoder_onnx=dec_rel,
                         source={"checkpoint": provenance(checkpoint, bundle), "config": provenance(config_path, bundle)})
    check_free_space(bundle, 3 * checkpoint.stat().st_size, "exporting SAM 2")
    model = None
    if stages.done("sam2-onnx", inputs):
        log(f"{enc_rel}, {dec_rel}: up to date, skipped")
    else:
        log(f"exporting SAM 2 to ONNX ({checkpoint.name})")
        model = build_model(config_path, checkpoint)
        result = export_sam2_onnx(model, bundle / "sam2")
        log(f"  {result.seconds:.1f} s, image size {result.image_size}")
        stages.record("sam2-onnx", inputs, [enc_rel, dec_rel])
    if model is None:
        import onnx

        spec.image_size = _onnx_image_size(onnx, bundle / enc_rel)
    else:
        spec.image_size = int(model.image_size)
    if fp16:
        spec.encoder_onnx_fp16, spec.decoder_onnx_fp16 = "sam2/sam2_encoder.fp16.onnx", "sam2/sam2_decoder.fp16.onnx"
        if stages.done("sam2-onnx-fp16", inputs):
            log(f"{spec.encoder_onnx_fp16}, {spec.decoder_onnx_fp16}: up to date, skipped")
        else:
            log("converting the ONNX graphs to float16 (inputs and outputs stay float32)")
            for src, dst in ((enc_rel, spec.encoder_onnx_fp16), (dec_rel, spec.decoder_onnx_fp16)):
                _to_fp16(bundle / src, bundle / dst)
            stages.record("sam2-onnx-fp16", inputs, [spec.encoder_onnx_fp16, spec.decoder_onnx_fp16])
    if with_torch:
        spec.config, spec.checkpoint = "sam2/" + config_path.name, "sam2/" + checkpoint.name
        _place_pair(config_path, checkpoint, bundle, spec)
    if tensorrt:
        import tensorrt as trt

        from .tensorrt import build_engine, decoder_profiles, fp16_flag_supported, plan_engine

        plan = plan_engine(fp16, fp16_flag_supported(trt))
        sources = (spec.encoder_onnx_fp16, spec.decoder_onnx_fp16) if plan.onnx == "fp16" else (enc_rel, dec_rel)
        spec.encoder_engine, spec.decoder_engine = "sam2/sam2_encoder.engine", "sam2/sam2_decoder.engine"
        spec.engine_precision = plan.precision
        if stages.done("sam2-tensorrt", inputs + str(plan)):
            log("TensorRT engines: up to date, skipped")
        else:
            log(f"building {plan.precision} TensorRT engines from the {plan.onnx} graphs (minutes)")
            build_engine(bundle / sources[0], bundle / spec.encoder_engine, fp16_flag=plan.fp16_flag)
            build_engine(bundle / sources[1], bundle / spec.decoder_engine, profiles=decoder_profiles(),
                         fp16_flag=plan.fp16_flag)
            stages.record("sam2-tensorrt", inputs + str(plan), [spec.encoder_engine, spec.decoder_engine])
    return spec


GRAPH_MATCH = 1e-4  # largest relative output difference a checkpoint may have to the graphs it is placed beside


def add_checkpoint_beside_graphs(spec: SegmenterSpec | None, checkpoint: str | Path, config: str | Path,
                                 bundle: str | Path, *, log: Callable[[str], None] = print) -> SegmenterSpec:
    """The bundle's segmenter as it is, plus a PyTorch config + checkpoint beside its ONNX graphs (what star
    track follows objects with). The checkpoint's image path must give the graphs' outputs (image features,
    mask logits, IoU scores on a seeded probe) to GRAPH_MATCH, so images segment the same whichever form
    runs; otherwise it is refused and nothing is written."""
    from engine.segment.torch_backend import build_model, resolve_config

    from .sam_import import compare_to_graphs

    bundle, checkpoint = Path(bundle), Path(checkpoint)
    if spec is None or spec.encoder_onnx is None or not (bundle / spec.encoder_onnx).is_file():
        raise ModelFileError(f"--keep-graphs: the bundle {bundle} has no SAM 2 ONNX graphs to keep; export the "
                             "segmenter without --keep-graphs")
    if not checkpoint.is_file():
        raise ModelFileError(f"SAM 2 checkpoint {checkpoint} does not exist")
    config_path = resolve_config(config)
    model = build_model(config_path, checkpoint)
    difference = compare_to_graphs(model, bundle / spec.encoder_onnx, bundle / spec.decoder_onnx, spec.image_size)
    if difference > GRAPH_MATCH:
        raise ModelFileError(f"--keep-graphs: {checkpoint.name}'s image path differs from the bundle's graphs by "
                             f"{difference:.1e} (relative; at most {GRAPH_MATCH:g}): it is another SAM; export it "
                             "in full without --keep-graphs")
    log(f"{checkpoint.name}: its image path gives the bundle's graphs' outputs to {difference:.1e}; placed beside them")
    spec.config, spec.checkpoint = "sam2/" + config_path.name, "sam2/" + checkpoint.name
    _place_pair(config_path, checkpoint, bundle, spec)
    spec.source = {**(spec.source or {}), "video_checkpoint": provenance(checkpoint, bundle)}
    return spec


def _place_pair(config_path: Path, checkpoint: Path, bundle: Path, spec: SegmenterSpec) -> None:
    for src, rel in ((config_path, spec.config), (checkpoint, spec.checkpoint)):
        dst = bundle / rel
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            place_file(src, dst)


def _to_fp16(src: Path, dst: Path) -> None:
    """onnxruntime's own float16 converter (shipped with onnxruntime): weights and activations in float16,
    graph inputs and outputs kept float32 so the engine's pre/post-processing does not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    tmp = dst.with_name(dst.name + ".partial")
    onnx.save(half, str(tmp))
    tmp.replace(dst)


def _onnx_image_size(onnx, path: Path) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)

"""`star-export import-sam`: a bundle's SAM 2 ONNX graphs back into a PyTorch checkpoint, to train on.

A shipped bundle may be the only copy of a trained segmenter (the nano recipe keeps the exported graphs,
not the checkpoint); fine-tuning needs the PyTorch weights. As `star-export import` does for the policy,
the importer does not hand-write the exporter's renamings and transposes: it asks the exporter. A model
of the same config is exported once with every value set to its own global index (1, 2, 3, ... over all
tensors in name order from 2**20, exact in float32 below 2**24), so each value of the probe graph's initializers
names the checkpoint value it came from, and the real graph's value at the same place is put back there.

Constants the exporter computes from the weights instead of moving them are handled in two ways. Hiera's
background position embedding is folded into its bicubic interpolation to the feature grid: it is solved
back by least squares (the interpolation of a 7 x 7 grid to a larger one is injective). Others (the
decoder's positional encoding of the image grid) are functions of weights that are moved elsewhere. The
parameters no image graph uses (video memory, mask prompts, the object-score head) keep a seeded
initialization. The result is checked end to end: the imported model's encoder and decoder run on an
image and prompts against ONNX Runtime on the bundle's own graphs, and a mismatch is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError

# Float32 holds every integer up to 2**24 exactly: the most checkpoint values one probe can name. The
# indices start high so that the graphs' own small constants (1.0, 2.0, 64.0, ...) never read as indices.
FIRST_INDEX = 1 << 20
MAX_PROBE_VALUES = (1 << 24) - FIRST_INDEX
POS_EMBED = "image_encoder.trunk.pos_embed"
# The largest difference accepted between the imported model and the bundle's graphs, relative to the
# largest output value (float32 arithmetic in different orders, nothing more).
MAX_RELATIVE_DIFFERENCE = 1e-4


@dataclass
class SamImportResult:
    checkpoint: Path       # Meta's format, {"model": state_dict}
    config: Path           # the SAM 2 YAML it fits
    moved: int             # checkpoint tensors whose values were moved from the graphs
    solved: int            # tensors solved back from a constant the exporter computed (Hiera's position embedding)
    kept_initial: int      # tensors no image graph uses, left at the seeded initialization
    max_difference: float  # largest output difference to the bundle's graphs, relative to the output scale


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a file that is not a model
        raise ModelFileError(f"{path} is not an ONNX model ({type(exc).__name__})") from exc
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _encoder_input_size(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    size = dims[-1].dim_value if dims else 0
    if not size:
        raise ModelFileError(f"{path}: the encoder's input has no fixed size; give --config")
    return int(size)


def shrunk_dims(encoder: Path, encoder_inits: dict[str, np.ndarray]) -> dict:
    """The shrunk SAM 2.1 config's three sizes (engine.segment.shrunk) read from an encoder graph."""
    patch = encoder_inits.get("model.image_encoder.trunk.patch_embed.proj.weight")
    no_mem = encoder_inits.get("model.no_mem_embed")
    if patch is None or no_mem is None:
        raise ModelFileError(f"{encoder} does not name the SAM 2 weights the shrunk config has; give --config")
    return {"image_size": _encoder_input_size(encoder), "embed_dim": int(patch.shape[0]), "d_model": int(no_mem.shape[-1])}


def _probe(model) -> tuple[list[str], np.ndarray]:
    """Set every floating value of `model` to its global index (from FIRST_INDEX); returns the names in that
    order and each tensor's first index."""
    import torch

    state = model.state_dict()
    names = sorted(n for n, t in state.items() if t.is_floating_point())
    starts, index = [], FIRST_INDEX
    for name in names:
        starts.append(index)
        index += state[name].numel()
    if index - FIRST_INDEX > MAX_PROBE_VALUES:
        raise ModelFileError(f"the config has {index - FIRST_INDEX:,} weights, more than one probe can name: the importer "
                             "is made for small segmenters such as the nano one")
    with torch.no_grad():
        for name, start in zip(names, starts):
            t = state[name]
            t.copy_(torch.arange(start, start + t.numel(), dtype=torch.float64).float().reshape(t.shape))
    return names, np.asarray(starts, np.int64)


def _interpolation_matrix(grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """The bicubic interpolation of `grid` to `size` (as Hiera does it) as a [H*W, h*w] matrix."""
    import torch
    import torch.nn.functional as F

    h, w = grid
    basis = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    return F.interpolate(basis, size=size, mode="bicubic").reshape(h * w, -1).T.numpy()


def _solve_pos_embed(folded: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Hiera's pos_embed [1, C, h, w] from its interpolation [1, C, H, W] (least squares, float64)."""
    a = _interpolation_matrix(shape[2:], folded.shape[2:])
    y = folded.reshape(folded.shape[1], -1).T.astype(np.float64)
    x, *_ = np.linalg.lstsq(a, y, rcond=None)
    return x.T.reshape(shape).astype(np.float32)


def _place(name: str, probe: np.ndarray, real: np.ndarray, starts: np.ndarray, names: list[str], weights: dict) -> bool:
    """Scatter a real initializer to the checkpoint positions its probe names; False when the probe is not a
    pure move of checkpoint values (a constant, or one the exporter computed)."""
    flat = probe.ravel().astype(np.float64)
    if probe.dtype.kind != "f" or flat.size == 0 or not (np.all(flat == np.round(flat)) and flat.min() >= starts[0]
                                                         and flat.max() < starts[-1] + weights[names[-1]].size):
        return False
    if real.shape != probe.shape:
        raise ModelFileError(f"initializer {name} has shape {real.shape}, the config gives {probe.shape}: "
                             "the graphs do not come from this config")
    index = flat.astype(np.int64)
    tensor = np.searchsorted(starts, index, side="right") - 1
    values = real.ravel()
    for t in np.unique(tensor):
        here = tensor == t
        weights[names[t]][index[here] - starts[t]] = values[here]
    return True


def compare_to_graphs(model, encoder: Path, decoder: Path, image_size: int, seed: int = 0) -> float:
    """Largest output difference of the imported model to ONNX Runtime on the bundle's graphs, relative to
    the largest output magnitude: image features, mask logits and IoU scores for boxes and clicks (infinite
    when the shapes differ: another architecture)."""
    import onnxruntime as ort
    import torch

    from engine.segment.sam2_graph import build_graphs

    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    coords = (rng.random((3, 3, 2)) * image_size).astype(np.float32)
    labels = np.array([[2, 3, 1], [1, 0, -1], [1, -1, -1]], np.int32)  # a box + click, two clicks, one click
    enc_graph, dec_graph = build_graphs(model.eval())
    with torch.no_grad():
        feats = enc_graph(torch.from_numpy(pixels))
        ours = [f.numpy() for f in feats] + [t.numpy() for t in dec_graph(*feats, torch.from_numpy(coords),
                                                                            torch.from_numpy(labels))]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    enc = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decoder), options, providers=["CPUExecutionProvider"])
    theirs = enc.run(None, {enc.get_inputs()[0].name: pixels})
    theirs += dec.run(None, dict(zip([i.name for i in dec.get_inputs()], [*theirs, coords, labels])))
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs)):
        return float("inf")  # another architecture: not the graphs' model at all
    return max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)) for a, b in zip(ours, theirs))


def import_segmenter(encoder_onnx: str | Path, decoder_onnx: str | Path, out_dir: str | Path, *,
                     config: str | Path | None = None, seed: int = 0) -> SamImportResult:
    """Write `out_dir`/sam2.pt and sam2.yaml: the PyTorch checkpoint the two graphs were exported from.
    `config` is the SAM 2 YAML; by default the shrunk SAM 2.1 config is rebuilt from the graphs' shapes.
    Nothing is left behind when the graphs are refused."""
    encoder, decoder, out_dir = Path(encoder_onnx), Path(decoder_onnx), Path(out_dir)
    real = {"encoder": _initializers(encoder), "decoder": _initializers(decoder)}
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = _import_into(tmp, encoder, decoder, real, config, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return SamImportResult(out_dir / "sam2.pt", out_dir / "sam2.yaml", *result)


def _import_into(tmp: Path, encoder: Path, decoder: Path, real: dict, config, seed: int) -> tuple:
    import torch

    from engine.segment.onnx_export import export_sam2_onnx
    from engine.segment.shrunk import write_shrunk_config
    from engine.segment.torch_backend import build_model, resolve_config

    config_path = tmp / "sam2.yaml"
    if config is None:
        write_shrunk_config(config_path, **shrunk_dims(encoder, real["encoder"]))
    else:
        shutil.copy(resolve_config(config), config_path)
    torch.manual_seed(seed)
    initial = build_model(config_path, None, "cpu")
    image_size = int(initial.image_size)
    state = {n: t.clone() for n, t in initial.state_dict().items()}
    names, starts = _probe(initial)
    weights = {n: np.full(state[n].numel(), np.nan, np.float32) for n in names}
    folded = []
    with tempfile.TemporaryDirectory(prefix="star-import-sam-") as work:
        export_sam2_onnx(initial, work)
        for part in ("encoder", "decoder"):
            probe = _initializers(Path(work) / f"sam2_{part}.onnx")
            if set(probe) != set(real[part]):
                odd = sorted(set(probe) ^ set(real[part]))
                raise ModelFileError(f"the bundle's {part} graph and one exported from the config differ in "
                                     f"{odd[0]} (and {len(odd) - 1} more): not a segmenter of this config")
            for name, values in probe.items():
                if not _place(name, values, real[part][name], starts, names, weights):
                    folded.append((values, real[part][name]))
    solved = 0
    if POS_EMBED in weights and np.isnan(weights[POS_EMBED]).all():
        first = int(starts[names.index(POS_EMBED)])
        solved = _solve_folded_pos_embed(folded, first, tuple(state[POS_EMBED].shape), weights)
    moved = sum(1 for w in weights.values() if not np.isnan(w).any()) - solved
    partial = [n for n, w in weights.items() if np.isnan(w).any() and not np.isnan(w).all()]
    if partial:
        raise ModelFileError(f"the graphs hold only part of {partial[0]}: not a segmenter of this config")
    kept = 0
    for name, w in weights.items():
        if np.isnan(w).all():
            w = state[name].numpy().ravel()  # no image graph uses it: the seeded initialization stays
            kept += 1
        state[name] = torch.from_numpy(w.reshape(tuple(state[name].shape)).copy())
    model = build_model(config_path, None, "cpu")
    model.load_state_dict(state)
    difference = compare_to_graphs(model, encoder, decoder, image_size, seed)
    if not difference <= MAX_RELATIVE_DIFFERENCE:
        raise ModelFileError(f"the imported segmenter differs from the bundle's graphs by {difference:.2g} (relative): "
                             "the graphs compute something from the weights that the importer cannot invert")
    torch.save({"model": model.state_dict()}, tmp / "sam2.pt")
    (tmp / "imported.json").write_text(json.dumps(
        {"encoder": encoder.name, "decoder": decoder.name, "moved": moved, "solved": solved, "kept_initial": kept,
         "max_relative_difference": difference, "seed": seed}, indent=2))
    return moved, solved, kept, difference


def _solve_folded_pos_embed(folded: list, first: int, shape: tuple[int, ...], weights: dict) -> int:
    """Find the constant that is Hiera's pos_embed interpolated (its probe equals the probe's interpolation)
    and solve pos_embed back from the real one; 1 when found."""
    import torch
    import torch.nn.functional as F

    probe_pos = torch.arange(first, first + int(np.prod(shape)), dtype=torch.float64).reshape(shape)
    for probe_value, real_value in folded:
        if probe_value.ndim == 4 and probe_value.shape[:2] == shape[:2]:
            expected = F.interpolate(probe_pos, size=probe_value.shape[2:], mode="bicubic").numpy()
            if np.allclose(probe_value, expected, rtol=1e-5):
                weights[POS_EMBED] = _solve_pos_embed(real_value, shape).ravel()
                return 1
    return 0

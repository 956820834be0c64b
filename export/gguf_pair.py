"""A user's GGUF pair (language model + vision projector, as the llama.cpp world ships them) read, not
trusted, before it becomes a bundle's policy.

Every check reads the two headers only (seconds for a 7B): the model's architecture and the projector's
type name the family (Qwen2.5-VL or Qwen3-VL; anything else is refused naming what it is), the two must be
of one family and one width (the projector's output is the model's embedding), the vocabulary must hold
the tokens the engine's prompt is made of, a chat template, where the file has one, must be Qwen's ChatML
(the engine writes that prompt itself, so a file without a template loses nothing), and the answer frame
follows the family unless `--frame` names another that the projector's patch grid allows. A forward pass
through both files comes after, when `star-export verify` loads the bundle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelFileError
from engine.gguf_reader import GgufError, GgufFile, file_type_name, read_gguf
from engine.policy.llama_backend import ARCHITECTURES
from engine.protocol import get_frame

# general.architecture of the language model -> family (the engine's table, read the other way); the
# projector types of each family.
MODEL_ARCHITECTURES = {arch: family for family, arch in ARCHITECTURES.items()}
PROJECTOR_TYPES = {"qwen2.5vl_merger": "qwen2.5-vl", "qwen3vl_merger": "qwen3-vl"}
# What a projector of another kind is, for the refusal (llama.cpp's names).
KNOWN_OTHERS = {"qwen2vl_merger": "Qwen2-VL", "qwen3vlmoe": "Qwen3-VL MoE", "llama": "Llama", "qwen2": "Qwen2 (text only)", "qwen3": "Qwen3 (text only)", "gemma3": "Gemma 3",
                "mllama": "Llama 3.2 Vision", "llava": "LLaVA"}
# The family's own answer frame (what the released checkpoints of it answer in: docs/protocol.md).
DEFAULT_FRAMES = {"qwen2.5-vl": "qwen2.5-840", "qwen3-vl": "qwen3-1000"}
# Tokens the engine's prompt and the image placement are made of: a vocabulary without one of them is not
# Qwen's, whatever its header says.
REQUIRED_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
SPATIAL_MERGE = 2  # Qwen2.5-VL and Qwen3-VL merge 2 x 2 patches into one image token


@dataclass
class GgufPair:
    """What the two headers say, checked."""
    model: Path
    mmproj: Path
    family: str            # qwen2.5-vl | qwen3-vl
    frame: str             # the answer frame the bundle will record
    quant: str             # the model's quantization (llama.cpp's file type name, e.g. Q4_K_M)
    mmproj_type: str       # the projector's (F16, Q8_0, F32, BF16)
    width: int             # the model's embedding width = the projector's output
    vocab_size: int
    chat_template: bool    # whether the model file carries one (ChatML: checked)
    name: str              # general.name of the model, "" when unnamed

    def describe(self) -> str:
        return (f"{self.family} ({self.name or 'unnamed'}), {self.quant} model + {self.mmproj_type} projector, "
                f"width {self.width}, {self.vocab_size} tokens, frame {self.frame}")


def _read(path: str | Path, option: str) -> GgufFile:
    try:
        return read_gguf(path)
    except GgufError as exc:
        raise ModelFileError(f"{option} {path}: {exc}") from None


def _kind(arch: str) -> str:
    return KNOWN_OTHERS.get(arch, arch or "unnamed")


def model_family(model: GgufFile, option: str = "--gguf") -> str:
    arch = str(model.metadata.get("general.architecture", ""))
    if arch == "clip" or model.metadata.get("general.type") == "mmproj":
        raise ModelFileError(f"{option} {model.path.name} is a vision projector (mmproj); give it as --mmproj and the "
                             "language model as --gguf")
    if arch not in MODEL_ARCHITECTURES:
        raise ModelFileError(f"{option} {model.path.name} is a {_kind(arch)} model ({arch!r}); a StAR bundle takes "
                             "Qwen2.5-VL ('qwen2vl') or Qwen3-VL ('qwen3vl')")
    return MODEL_ARCHITECTURES[arch]


def projector_family(mmproj: GgufFile) -> str:
    meta = mmproj.metadata
    if meta.get("general.architecture") != "clip":
        raise ModelFileError(f"--mmproj {mmproj.path.name} is not a vision projector (its architecture is "
                             f"{meta.get('general.architecture')!r}, an mmproj file says 'clip')")
    kind = str(meta.get("clip.vision.projector_type") or meta.get("clip.projector_type") or "")
    if kind not in PROJECTOR_TYPES:
        raise ModelFileError(f"--mmproj {mmproj.path.name} is a {_kind(kind)} projector ({kind!r}); a StAR bundle "
                             "takes Qwen2.5-VL's ('qwen2.5vl_merger') or Qwen3-VL's ('qwen3vl_merger')")
    return PROJECTOR_TYPES[kind]


def _quant(gguf: GgufFile) -> str:
    """llama.cpp's name for the file's quantization; from the tensors when the header does not say."""
    file_type = gguf.metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type_name(file_type):
        return file_type_name(file_type)
    # The type most of the matrices have (norms and biases stay F32 in every quantization).
    counts = Counter(gguf.type_name(n) for n, t in gguf.tensors.items() if len(t.shape) >= 2)
    return counts.most_common(1)[0][0] if counts else "F32"


def _check_vocabulary(model: GgufFile) -> int:
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelFileError(f"--gguf {model.path.name} carries no vocabulary (tokenizer.ggml.tokens)")
    missing = [t for t in REQUIRED_TOKENS if t not in set(tokens)]
    if missing:
        raise ModelFileError(f"--gguf {model.path.name}: its vocabulary lacks {', '.join(missing)}: not Qwen's "
                             "tokenizer, so the engine's prompt cannot be written for it")
    embedding = model.tensors.get("token_embd.weight")
    if embedding is not None and embedding.shape[0] < len(tokens):
        raise ModelFileError(f"--gguf {model.path.name}: {len(tokens)} tokens but an embedding of "
                             f"{embedding.shape[0]} rows (a damaged or mismatched file)")
    return len(tokens)


def _check_template(model: GgufFile) -> bool:
    template = model.metadata.get("tokenizer.chat_template")
    if template is None:
        return False
    if not isinstance(template, str) or "<|im_start|>" not in template:
        raise ModelFileError(f"--gguf {model.path.name}: its chat template is not Qwen's ChatML (no <|im_start|>): "
                             "the model was tuned to another prompt format than the engine writes")
    return True


def _check_width(model: GgufFile, mmproj: GgufFile) -> int:
    arch = model.metadata["general.architecture"]
    width = model.metadata.get(f"{arch}.embedding_length")
    projected = mmproj.metadata.get("clip.vision.projection_dim")
    if not isinstance(width, int) or not isinstance(projected, int):
        raise ModelFileError(f"{model.path.name} / {mmproj.path.name}: the header lacks the embedding width "
                             f"({arch}.embedding_length / clip.vision.projection_dim)")
    if width != projected:
        raise ModelFileError(f"--mmproj {mmproj.path.name} does not belong to --gguf {model.path.name}: the projector "
                             f"writes {projected}-wide image embeddings, the model reads {width}-wide ones")
    deepstack = mmproj.metadata.get("clip.vision.is_deepstack_layers")
    wanted = model.metadata.get(f"{arch}.n_deepstack_layers")
    if isinstance(deepstack, list) and isinstance(wanted, int) and sum(map(bool, deepstack)) != wanted:
        raise ModelFileError(f"--mmproj {mmproj.path.name} does not belong to --gguf {model.path.name}: the projector "
                             f"taps {sum(map(bool, deepstack))} DeepStack layers, the model takes {wanted}")
    return width


def check_frame(frame: str | None, family: str, mmproj: GgufFile) -> str:
    """The answer frame to record: the family's own, or `frame` when the projector's grid allows it."""
    if frame is None:
        return DEFAULT_FRAMES[family]
    try:
        spec = get_frame(frame)
    except ValueError as exc:
        raise ModelFileError(f"--frame: {exc}") from None
    own = DEFAULT_FRAMES[family]
    if spec.name in DEFAULT_FRAMES.values() and spec.name != own:
        raise ModelFileError(f"--frame {frame} is the other family's frame; a {family} model answers in {own} or in "
                             "the pixels of a square input it was trained at (pixels-<S>)")
    if spec.kind == "pixels" and spec.name != own:
        patch = mmproj.metadata.get("clip.vision.patch_size")
        step = int(patch) * SPATIAL_MERGE if isinstance(patch, int) else 0
        if step and spec.size % step:
            raise ModelFileError(f"--frame {frame}: {spec.size} is not a multiple of {step} (patch {patch} x merge "
                                 f"{SPATIAL_MERGE}); the projector would resize such an input again")
    return spec.name


def inspect_pair(model_path: str | Path, mmproj_path: str | Path, frame: str | None = None) -> GgufPair:
    """Read and check a GGUF model + mmproj pair; ModelFileError (one line) for anything that is not a
    Qwen2.5-VL / Qwen3-VL pair that belongs together."""
    model, mmproj = _read(model_path, "--gguf"), _read(mmproj_path, "--mmproj")
    family = model_family(model)
    projector = projector_family(mmproj)
    if projector != family:
        raise ModelFileError(f"--mmproj {mmproj.path.name} is a {projector} projector, --gguf {model.path.name} a "
                             f"{family} model: give the projector published with the model")
    width = _check_width(model, mmproj)
    vocab = _check_vocabulary(model)
    template = _check_template(model)
    return GgufPair(model.path, mmproj.path, family, check_frame(frame, family, mmproj), _quant(model), _quant(mmproj),
                    width, vocab, template, str(model.metadata.get("general.name", "")))

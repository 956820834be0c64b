"""The segmenter seam: one image embedding, then every box + point prompt of a query in one batch.

Backends (PyTorch `sam2`, ONNX Runtime, TensorRT) only implement `_encode` (normalised pixels ->
features) and `_decode` (features + model-frame prompts -> multimask logits and scores). Everything
else — image loading, preprocessing, prompt transforms, top-score selection, upsampling, the embedding
cache — is here once, so that backends cannot drift apart.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidPromptError, ModelFileError
from ..images import ImageSource, load_image
from . import transforms


def pixels_key(image: np.ndarray) -> str:
    """Content hash of an RGB array: the same pixels give the same key, whatever file they came from."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@dataclass
class Embedding:
    """SAM 2 image features for one image. `features` is backend-native (torch tensors, NumPy arrays)."""
    key: str
    orig_hw: tuple[int, int]
    features: dict[str, Any]
    nbytes: int
    encode_ms: float = 0.0


@dataclass
class SegmentOutput:
    """One mask per prompt: the top-scoring of SAM's three, kept as low-resolution logits.

    Full-resolution masks are made on demand (`masks`), because at 12000 x 9000 each one is 108 MB.
    """
    logits: np.ndarray                  # float32 [K, h, w], the chosen mask's low-res logits
    scores: np.ndarray                  # float32 [K], SAM's predicted IoU of the chosen mask
    chosen: np.ndarray                  # int [K], which of the multimask outputs was chosen
    orig_hw: tuple[int, int]
    all_scores: np.ndarray              # float32 [K, 3]
    decode_ms: float = 0.0
    mask_threshold: float = 0.0
    _masks: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def masks(self) -> np.ndarray:
        """bool [K, H, W] at the original image size (computed once)."""
        if self._masks is None:
            self._masks = transforms.logits_to_masks(self.logits, self.orig_hw, self.mask_threshold)
        return self._masks

    def mask(self, i: int) -> np.ndarray:
        if self._masks is not None:
            return self._masks[i]
        return transforms.logits_to_masks(self.logits[i:i + 1], self.orig_hw, self.mask_threshold)[0]


@dataclass
class Refinement:
    """One interactive prompt's answer: the mask at the original size, SAM's predicted IoU, the low-res logits."""
    mask: np.ndarray
    score: float
    logits: np.ndarray
    decode_ms: float = 0.0


class EmbeddingCache:
    """Least-recently-used image embeddings, bounded in bytes (a second query on an image costs only the
    decoder). Thread-safe: the desktop app embeds on a worker thread."""

    def __init__(self, max_bytes: int = 512 << 20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Embedding | None:
        with self._lock:
            emb = self._items.get(key)
            if emb is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return emb

    def put(self, emb: Embedding) -> None:
        with self._lock:
            self._items[emb.key] = emb
            self._items.move_to_end(emb.key)
            while len(self._items) > 1 and sum(e.nbytes for e in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _check_prompts(boxes, points) -> tuple[np.ndarray | None, np.ndarray | None]:
    def as_array(x, width, name):
        if x is None:
            return None
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidPromptError(f"{name} must be numbers, shape [K, {width}]: {exc}") from None
        if arr.ndim == 1 and arr.size == width:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != width:
            raise InvalidPromptError(f"{name} must have shape [K, {width}], got {list(arr.shape)}")
        if not np.isfinite(arr).all():
            raise InvalidPromptError(f"{name} contain NaN or infinite coordinates")
        return arr
    boxes = as_array(boxes, 4, "boxes")
    points = as_array(points, 2, "points")
    if boxes is None and points is None:
        raise InvalidPromptError("give boxes, points, or both")
    if boxes is not None and points is not None and len(boxes) != len(points):
        raise InvalidPromptError(f"{len(boxes)} boxes but {len(points)} points: give one point per box")
    return boxes, points


NON_FINITE = ("the segmenter computes non-finite mask logits or scores (NaN or Inf): its weights are damaged; "
              "`star-export verify` checks the bundle, and re-exporting SAM 2 replaces them")


def check_finite(logits: np.ndarray, scores: np.ndarray) -> None:
    """Refuse non-finite SAM outputs: a NaN logit thresholds to an empty mask, which the engine would
    otherwise report as "no object" (a silent wrong answer). One sum each: any NaN or Inf makes it non-finite."""
    if not (np.isfinite(logits.sum(dtype=np.float64)) and np.isfinite(scores.sum(dtype=np.float64))):
        raise ModelFileError(NON_FINITE)


class Segmenter:
    """SAM 2 behind one interface. Subclasses set `image_size`, `name` and implement the two hooks."""

    name = "abstract"
    image_size: int = 1024
    mask_threshold: float = 0.0
    max_points: int | None = None  # prompt points one decoder call takes (a TensorRT profile's limit); None: any

    def __init__(self, cache: EmbeddingCache | None = None):
        self.cache = cache if cache is not None else EmbeddingCache()

    # -- backend hooks ---------------------------------------------------------------------------
    def _encode(self, pixels: np.ndarray) -> tuple[dict[str, Any], int]:
        """float32 [1, 3, S, S] -> (features, their size in bytes)."""
        raise NotImplementedError

    def _decode(self, features: dict[str, Any], coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """coords [K, P, 2] (model frame), labels [K, P] -> (logits [K, 3, h, w], scores [K, 3]) as NumPy."""
        raise NotImplementedError

    # -- the seam --------------------------------------------------------------------------------
    def embed(self, image: ImageSource) -> Embedding:
        """Image features, from the cache when these pixels were embedded before."""
        rgb = load_image(image)
        key = pixels_key(rgb)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        pixels = transforms.preprocess(rgb, self.image_size)
        features, nbytes = self._encode(pixels)
        emb = Embedding(key=key, orig_hw=(rgb.shape[0], rgb.shape[1]), features=features, nbytes=nbytes,
                        encode_ms=(time.perf_counter() - t0) * 1e3)
        self.cache.put(emb)
        return emb

    @property
    def on_gpu(self) -> bool:
        return False

    def default_chunk(self) -> int:
        """Prompts per decoder call. The decoder repeats the image embedding per prompt, so on a CPU a
        big batch only adds memory traffic: at 1024 px (4096 image tokens) one thread measured 76 ms per
        prompt in calls of 1-4 and 132 ms in calls of 32 (`star bench segment`). A GPU wants them all."""
        if self.on_gpu:
            return 256
        tokens = (self.image_size // 16) ** 2
        return max(1, 16384 // tokens)

    def segment(self, embedding: Embedding, boxes=None, points=None, *, chunk: int | None = None) -> SegmentOutput:
        """One mask per prompt for all the prompts of a query.

        Args:
            embedding: `embed(image)`'s features of the image the prompts point into.
            boxes: float [K, 4] (x1, y1, x2, y2), or None; points: float [K, 2] (x, y), or None. Both in the
                ORIGINAL image's pixels (what `parse_answer` returns); given together, row k of each is one
                prompt (the box and its point).
            chunk: prompts per decoder call (default: one call on a GPU; on a CPU `default_chunk()`, see
                there why).
        Returns:
            SegmentOutput with K rows: the best of SAM's three masks per prompt as low-resolution logits,
            its predicted IoU, and `masks` (bool [K, H, W] at the original size, made on demand).
        """
        chunk = chunk or self.default_chunk()
        boxes, points = _check_prompts(boxes, points)
        coords, labels = transforms.prompts_to_model(boxes, points, embedding.orig_hw, self.image_size)
        t0 = time.perf_counter()
        parts = [self._decode(embedding.features, coords[i:i + chunk], labels[i:i + chunk])
                 for i in range(0, len(coords), chunk)] if len(coords) else []
        if parts:
            logits = np.concatenate([p[0] for p in parts])
            all_scores = np.concatenate([p[1] for p in parts])
        else:
            s = self.image_size // 4
            logits, all_scores = np.zeros((0, 3, s, s), np.float32), np.zeros((0, 3), np.float32)
        check_finite(logits, all_scores)
        best, scores, chosen = transforms.select_best(logits, all_scores)
        return SegmentOutput(logits=np.ascontiguousarray(best, dtype=np.float32), scores=scores.astype(np.float32),
                             chosen=chosen, orig_hw=embedding.orig_hw, all_scores=all_scores.astype(np.float32),
                             decode_ms=(time.perf_counter() - t0) * 1e3, mask_threshold=self.mask_threshold)

    def refine(self, embedding: Embedding, points=None, labels=None, box=None) -> Refinement:
        """An annotator's prompt on an embedded image: clicks [P, 2] (original pixels) with labels [P]
        (1 adds the spot, 0 removes it) and/or one box. Same embedding, one decoder call, SAM's
        top-scoring mask of three (what SAM2ImagePredictor.predict(..., multimask_output=True) gives)."""
        try:
            coords, kinds = transforms.interactive_prompt_to_model(points, labels, box, embedding.orig_hw,
                                                                   self.image_size)
        except ValueError as exc:
            raise InvalidPromptError(str(exc)) from None
        if self.max_points is not None and kinds.shape[1] > self.max_points:
            raise InvalidPromptError(f"this segmenter takes at most {self.max_points} prompt points (a box counts "
                                     f"as two); remove a click or start a new object")
        t0 = time.perf_counter()
        logits, scores = self._decode(embedding.features, coords, kinds)
        check_finite(logits, scores)
        best, score, chosen = transforms.select_best(logits, scores)
        mask = transforms.logits_to_masks(best[:1], embedding.orig_hw, self.mask_threshold)[0]
        return Refinement(mask=mask, score=float(score[0]), logits=np.ascontiguousarray(best[0], np.float32),
                          decode_ms=(time.perf_counter() - t0) * 1e3)

    def describe(self) -> dict:
        return {"backend": self.name, "image_size": self.image_size}

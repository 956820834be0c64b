"""The product policy: a GGUF Qwen2.5-VL / Qwen3-VL with its mmproj on llama.cpp (low-level API).

One prefill of system + image + query on sequence 0, `llama_memory_seq_cp` to N sequences (metadata
only with a unified KV cache), then one batch per step holding one token per live sequence, each with
its own sampler chain and seed (docs/engine.md, "Runtime facts").
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ContextOverflowError, ImageError, InvalidQueryError, ModelFileError
from ..images import load_image
from ..memory import available_memory
from ..protocol import build_prompt, chatml_prompt, get_frame, normalize_query, resize_for_model
from .llama_handles import LlamaContext, LlamaModel, SamplerChain, TokenBatch, VisionProjector
from .llama_lib import llama_modules, silent_callback
from .types import MAX_SAMPLES, STOP_TEXT, CancelToken, Completion, PolicyTimings, SamplingParams, TokenCallback

# general.architecture of the text GGUF per model family.
ARCHITECTURES = {"qwen2.5-vl": "qwen2vl", "qwen3-vl": "qwen3vl"}


def default_flash_attn(n_gpu_layers: int) -> bool | str:
    """The engine's flash-attention choice: off on the CPU, llama.cpp's own ("auto") on a GPU. On the CPU
    llama.cpp's flash-attention kernel works at f16 inside: on a random Qwen2.5-VL-3B at the 840 frame it
    moves the logits 5 % from transformers (0.4 % without it), and without it decoding is 20-25 % faster
    at N = 8 and 32, prefill within 5 %, memory the same (docs/benchmarks.md). On CUDA llama.cpp's choice
    was measured only as chosen (docs/benchmarks.md, GPU runs)."""
    return False if n_gpu_layers == 0 else "auto"


def _check_gguf(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelFileError(f"{what} {path} does not exist")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFileError(f"{what} {path} is not a GGUF file")


@dataclass(frozen=True)
class _Prefix:
    """What sequence 0 of the KV cache holds up to the end of the image: the part of the prompt that does
    not depend on the query (system turn + image), so a follow-up query on the same image starts there."""
    key: str  # the resized image's bytes + the prompt text before the query
    n_past: int  # the next position after the image
    chunks: int  # how many leading mtmd chunks it covers


class LlamaPolicy:
    """The policy on llama.cpp: the model, its context and its vision projector (each owned by its handle
    class, `llama_handles`), and what is the policy's own: the prompt, its prefill with the image, the reuse
    of a remembered system + image prefix, and N samples decoded together."""
    name = "llama.cpp"

    def __init__(self, model_path: str | Path, mmproj_path: str | Path, *, family: str = "qwen2.5-vl",
                 frame: str = "qwen2.5-840", prompt_family: str = "star", n_ctx: int = 8192, max_samples: int = 32,
                 n_gpu_layers: int = 0, threads: int | None = None, flash_attn: bool | str | None = None,
                 n_batch: int = 512, image_max_tokens: int = 0, reuse_prefix: bool = True):
        """flash_attn: True, False, "auto" (llama.cpp decides), or None (default_flash_attn: off on the CPU)."""
        L, M = self.L, self.M = llama_modules()
        model_path, mmproj_path = Path(model_path), Path(mmproj_path)
        _check_gguf(model_path, "policy model")
        _check_gguf(mmproj_path, "vision projector (mmproj)")
        if not 1 <= max_samples <= MAX_SAMPLES:
            raise ContextOverflowError(f"{max_samples} samples asked for; llama.cpp decodes 1 to {MAX_SAMPLES} "
                                       "sequences at once")
        self.frame = get_frame(frame)
        self.prompt_family = prompt_family
        self.max_samples = max_samples
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers  # 0: CPU only (what the app shows as the device)
        self.model_path = model_path
        self.reuse_prefix = reuse_prefix
        self._prefix: _Prefix | None = None
        self.timings = PolicyTimings()
        self.model = self.context = self.projector = None
        L.llama_backend_init()
        # llama.cpp and mtmd log every prompt and image slice to stderr; the CLI and app show their own.
        silent = silent_callback()
        L.llama_log_set(silent, ctypes.c_void_p())
        M.mtmd_log_set(silent, ctypes.c_void_p())
        M.mtmd_helper_log_set(silent, ctypes.c_void_p())
        self.model = LlamaModel(model_path, n_gpu_layers=n_gpu_layers)
        self.architecture = self.model.architecture
        if family in ARCHITECTURES and self.architecture != ARCHITECTURES[family]:
            raise ModelFileError(f"{model_path} is a {self.architecture!r} model, but the bundle says {family} "
                                 f"(expected {ARCHITECTURES[family]!r})")
        if flash_attn is None:
            flash_attn = default_flash_attn(n_gpu_layers)
        kv_bytes, available = self.kv_cache_bytes(n_ctx), available_memory()
        scores = 0 if flash_attn is True else self.model.attention_buffer_bytes(n_ctx, n_batch)
        if n_gpu_layers == 0 and available is not None and kv_bytes + scores > available:
            raise ContextOverflowError(
                f"a context of {n_ctx} positions ({max_samples} samples) needs {kv_bytes / 2**30:.1f} GiB of KV cache "
                f"and {scores / 2**30:.1f} GiB of attention buffers, more than the {available / 2**30:.1f} GiB of memory "
                "available; lower -n or --max-new-tokens")
        self.context = LlamaContext(self.model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=max_samples, threads=threads,
                                    flash_attn=flash_attn, offload=n_gpu_layers != 0)
        self.n_ctx = self.context.n_ctx
        self.projector = VisionProjector(mmproj_path, self.model, use_gpu=n_gpu_layers != 0, threads=threads,
                                         image_max_tokens=image_max_tokens)
        self.marker = self.projector.marker
        self.n_vocab = self.model.n_vocab

    # -- helpers ----------------------------------------------------------------------------------
    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an F16 KV cache of `n_ctx` positions for this model (keys and values, every layer)."""
        return self.model.kv_cache_bytes(n_ctx)

    def prompt_text(self, query: str) -> str:
        return chatml_prompt(build_prompt(query, self.prompt_family), image_placeholder=self.marker)

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Text-only tokenization, control tokens parsed unless `special` is False (for parity tests,
        budgeting, and telling user text from control text)."""
        return self.model.tokenize(text, special=special)

    def check_query_text(self, query: str) -> None:
        """Refuse a query that would not reach the model as plain text. The prompt is tokenized in one piece
        with control tokens parsed (the template's own <|im_start|> etc. must be), so control text inside the
        query (e.g. "<|im_end|><|im_start|>assistant") would end the user's turn; the image marker would
        become an image slot. The prompt of every other query stays byte for byte what it was."""
        text = normalize_query(query)  # what the prompt holds (lower-cased: <|IM_END|> would become a control)
        if self.marker in text:
            raise InvalidQueryError(f"the query contains {self.marker}, the image placeholder; remove it")
        with_control, plain_ids = self.tokenize(text), self.tokenize(text, special=False)
        if with_control != plain_ids:
            plain = set(plain_ids)
            names = sorted({self.model.piece(t, special=True).decode(errors="replace") for t in with_control
                            if t not in plain})
            raise InvalidQueryError(f"the query contains the model's control text {', '.join(names)}; remove it "
                                    "(user text is never read as control tokens)")

    def _check_logits(self, rows: int) -> None:
        """Stop before sampling from non-finite logits: damaged weights (NaN / Inf) would otherwise reach
        llama.cpp's grammar sampler, which aborts the process. One sum over the rows is enough: any NaN
        or Inf makes it non-finite."""
        if not self.context.logits_finite(rows):
            self._prefix = None
            raise ModelFileError(f"the policy {self.model_path} computes non-finite logits (NaN or Inf): its "
                                 "weights are damaged; restore or re-export the bundle (`star-export verify` "
                                 "checks it)")

    def forget_prefix(self) -> None:
        """Drop the remembered system + image prefix (the next query prefills from scratch)."""
        self._prefix = None

    def _prefill(self, image: np.ndarray, query: str) -> int:
        L, M = self.L, self.M
        self.check_query_text(query)
        mem = self.context.memory()
        rgb = np.ascontiguousarray(np.asarray(resize_for_model(image, self.frame)), dtype=np.uint8)
        h, w = rgb.shape[:2]
        prompt_text = self.prompt_text(query)
        # The key covers everything before the query: the pixels the encoder sees and the text up to the image.
        key = hashlib.sha256(f"{w}x{h}|{prompt_text.split(self.marker)[0]}|".encode() + rgb.tobytes()).hexdigest()
        data = (ctypes.c_uint8 * rgb.size).from_buffer_copy(rgb.tobytes())
        bitmap = M.mtmd_bitmap_init(w, h, data)
        text = M.mtmd_input_text()
        prompt = prompt_text.encode()
        text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), False, True
        chunks = M.mtmd_input_chunks_init()
        try:
            bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
            rc = M.mtmd_tokenize(self.projector.handle, chunks, ctypes.byref(text), bitmaps, 1)
            if rc != 0:
                raise ImageError(f"llama.cpp could not tokenize the image + prompt (mtmd_tokenize returned {rc})")
            n_tokens = sum(M.mtmd_input_chunk_get_n_tokens(M.mtmd_input_chunks_get(chunks, i))
                           for i in range(M.mtmd_input_chunks_size(chunks)))
            if n_tokens >= self.n_ctx:
                raise ContextOverflowError(f"the prompt alone needs {n_tokens} tokens; the context holds {self.n_ctx}")
            prefix = self._prefix if self.reuse_prefix else None
            if prefix is not None and prefix.key == key and self._trim_to(prefix.n_past):
                self.timings.prefix_hit = True
                n_past = self._eval_chunks(chunks, start=prefix.chunks, n_past=prefix.n_past)
            else:
                self._prefix = None
                L.llama_memory_clear(mem, True)
                n_past = self._eval_chunks(chunks, key=key)
            self.timings.prefill_tokens = n_tokens
            return n_past
        except BaseException:
            self._prefix = None  # the cache may hold half a prompt: never reuse it
            raise
        finally:
            M.mtmd_input_chunks_free(chunks)
            M.mtmd_bitmap_free(bitmap)

    def _trim_to(self, n_past: int) -> bool:
        """Keep only sequence 0's cells before `n_past` (the remembered prefix); False if llama.cpp cannot."""
        L = self.L
        mem = self.context.memory()
        for s in range(1, self.max_samples):
            L.llama_memory_seq_rm(mem, s, -1, -1)
        return bool(L.llama_memory_seq_rm(mem, 0, n_past, -1))

    def _eval_chunks(self, chunks, *, start: int = 0, n_past: int = 0, key: str | None = None) -> int:
        """Chunk by chunk from chunk `start` at position `n_past` (what mtmd_helper_eval_chunks does in one
        call), so that the vision encoder and the LLM prefill are timed apart. With `key`, the state after
        the image chunk is remembered as the reusable prefix. Returns the next position."""
        L, M = self.L, self.M
        count = M.mtmd_input_chunks_size(chunks)
        for i in range(start, count):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            # Start at n_past: the text path ADDS its token count to *new_n_past (as mtmd_helper_eval_chunks
            # relies on), the image path sets it.
            new_n_past = L.llama_pos(n_past)
            if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                t0 = time.perf_counter()
                if M.mtmd_encode_chunk(self.projector.handle, chunk) != 0:
                    raise ImageError("llama.cpp's vision encoder failed on this image (mtmd_encode_chunk)")
                t1 = time.perf_counter()
                self.timings.vision_ms += (t1 - t0) * 1e3
                rc = M.mtmd_helper_decode_image_chunk(self.projector.handle, self.context.handle, chunk,
                                                      M.mtmd_get_output_embd(self.projector.handle),
                                                      n_past, 0, self.n_batch, ctypes.byref(new_n_past),
                                                      M.mtmd_helper_post_decode_callback(), None)
                self.timings.prefill_ms += (time.perf_counter() - t1) * 1e3
            else:
                t0 = time.perf_counter()
                rc = M.mtmd_helper_eval_chunk_single(self.projector.handle, self.context.handle, chunk, n_past, 0,
                                                     self.n_batch, i == count - 1,
                                                     ctypes.byref(new_n_past))
                self.timings.prefill_ms += (time.perf_counter() - t0) * 1e3
            if rc != 0:
                raise RuntimeError(f"llama.cpp failed to evaluate prompt chunk {i} of {count} (returned {rc})")
            n_past = int(new_n_past.value)
            if key is not None and M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                self._prefix = _Prefix(key, n_past, i + 1)
        return n_past

    def prompt_logits(self, image, query: str) -> np.ndarray:
        """Logits after the prompt's last token (float32 [vocab]); the parity tests' probe."""
        self.timings = PolicyTimings()
        self._prefill(load_image(image), query)
        return self.context.logits_row(-1)

    def forced_logits(self, image, query: str, tokens: list[int]) -> np.ndarray:
        """Teacher-forced logits: [len(tokens) + 1, vocab], row t predicting the token after tokens[:t].
        `star-export verify` and the parity tests compare these with transformers."""
        self.timings = PolicyTimings()
        n_past = self._prefill(load_image(image), query)
        rows = [self.context.logits_row(-1)]
        if tokens:
            if n_past + len(tokens) > self.n_ctx:
                raise ContextOverflowError(f"{len(tokens)} forced tokens do not fit the context of {self.n_ctx}")
            with TokenBatch(len(tokens)) as batch:
                if self.context.decode(batch.fill([(tok, n_past + j, 0) for j, tok in enumerate(tokens)])) != 0:
                    raise RuntimeError("llama_decode failed on the forced tokens")
                rows += [self.context.logits_row(j) for j in range(len(tokens))]
        return np.stack(rows)

    # -- the seam ---------------------------------------------------------------------------------
    def sample(self, image, query: str, n: int = 1, sampling: SamplingParams = SamplingParams(), *,
               on_token: TokenCallback | None = None, cancel: CancelToken | None = None) -> list[Completion]:
        """N completions of the query about the image: one prefill, then the N sequences decoded together
        (one batch per step). `sampling` sets temperature, top-p / top-k, seed (sample i draws from its own
        stream), max_new_tokens and the answer grammar; `on_token(i, text)` streams; `cancel` stops within
        one step (finish_reason "cancelled"). Raises InvalidQueryError for control text in the query,
        ContextOverflowError when prompt + N x max_new_tokens exceed the context, ModelFileError for
        non-finite logits (damaged weights)."""
        L = self.L
        if not 1 <= n <= self.max_samples:
            raise ValueError(f"n must be between 1 and {self.max_samples} (this policy's max_samples), got {n}")
        rgb = load_image(image)
        self.timings = PolicyTimings()
        n_past = self._prefill(rgb, query)
        if n_past + n * sampling.max_new_tokens > self.n_ctx:
            # With a unified KV cache all sequences share the n_ctx cells.
            raise ContextOverflowError(
                f"{n} samples x {sampling.max_new_tokens} new tokens + {n_past} prompt positions exceed the "
                f"context of {self.n_ctx}; lower n or max_new_tokens, or load the policy with a larger n_ctx")
        self._check_logits(1)
        mem = self.context.memory()
        for s in range(1, n):
            L.llama_memory_seq_cp(mem, 0, s, -1, -1)
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(n)]
        texts, ids = [""] * n, [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        with ExitStack() as owned:
            samplers = [owned.enter_context(SamplerChain(self.model, sampling, i)) for i in range(n)]
            batch = owned.enter_context(TokenBatch(n))
            t1 = time.perf_counter()
            # The first token of every sample comes from the prompt's last logits.
            pending = {i: samplers[i].sample(self.context, -1) for i in range(n)}
            step = 0
            while pending:
                live = []
                for i, tok in pending.items():
                    if cancel is not None and cancel.cancelled:
                        finish[i] = "cancelled"
                        continue
                    if self.model.ends_generation(tok) and not sampling.ignore_stop:
                        finish[i] = "eos"
                        continue
                    ids[i].append(tok)
                    delta = decoders[i].decode(self.model.piece(tok))
                    texts[i] += delta
                    if delta and on_token is not None:
                        on_token(i, delta)
                    if STOP_TEXT in texts[i][-len(STOP_TEXT) - len(delta):] and not sampling.ignore_stop:
                        finish[i] = "stop"
                    elif len(ids[i]) >= sampling.max_new_tokens:
                        finish[i] = "length"
                    else:
                        live.append((i, tok))
                if not live:
                    break
                rc = self.context.decode(batch.fill([(tok, n_past + step, i) for i, tok in live]))
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed ({rc}) at step {step}")
                self.timings.decode_tokens += len(live)
                self._check_logits(len(live))
                pending = {i: samplers[i].sample(self.context, j) for j, (i, _) in enumerate(live)}
                step += 1
        self.timings.decode_ms = (time.perf_counter() - t1) * 1e3
        return [Completion(i, texts[i], ids[i], finish[i] or "length") for i in range(n)]

    def close(self) -> None:
        """Free the vision projector, the context and the model, in that order, each once."""
        for name in ("projector", "context", "model"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

"""llama.cpp's native handles, each owned by one small class that frees it once (`close()`, a `with`
block, or the garbage collector, whichever comes first): the model and its vocabulary, the context, the
vision projector, a token batch, a sampler chain. `LlamaPolicy` composes them and keeps only prefill,
sampling and prefix reuse.

Each `close()` lets go of its handle before freeing it: a Ctrl-C that lands between a free and the line
after it would otherwise leave a freed handle for `__del__` to free again (a double free).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .llama_lib import llama_modules
from .types import SamplingParams


class _Owned:
    """A native handle freed once by `_free(handle)`."""
    handle = None

    def _free(self, handle) -> None:
        raise NotImplementedError

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle:
            self._free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class LlamaModel(_Owned):
    """A GGUF text model (`llama_model*`) with its vocabulary: metadata, tokens, and what a context of it costs."""

    def __init__(self, path: Path, *, n_gpu_layers: int = 0):
        self.L = L = llama_modules()[0]
        self.path = Path(path)
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.handle = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.handle:
            raise ModelFileError(f"llama.cpp could not load {path} (corrupt or unsupported GGUF)")
        self.vocab = L.llama_model_get_vocab(self.handle)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.architecture = self.meta("general.architecture")

    def _free(self, handle) -> None:
        self.L.llama_model_free(handle)

    def meta(self, key: str) -> str:
        """A metadata value as text ("" when the file has none)."""
        buf = ctypes.create_string_buffer(256)
        n = self.L.llama_model_meta_val_str(self.handle, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else ""

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an F16 KV cache of `n_ctx` positions for this model (keys and values, every layer)."""
        L, h = self.L, self.handle
        n_head, n_head_kv = L.llama_model_n_head(h), L.llama_model_n_head_kv(h)
        fallback = L.llama_model_n_embd(h) // max(n_head, 1)
        key_dim = int(self.meta(f"{self.architecture}.attention.key_length") or fallback)
        value_dim = int(self.meta(f"{self.architecture}.attention.value_length") or fallback)
        return L.llama_model_n_layer(h) * n_ctx * n_head_kv * (key_dim + value_dim) * 2

    def attention_buffer_bytes(self, n_ctx: int, n_batch: int) -> int:
        """Bytes llama.cpp reserves for a prefill batch's attention without flash attention: each head's
        f32 scores over the whole context plus the mask, (heads + 1) x batch x context x 4 (llama.cpp asked for
        30.1 GB for the 6-head nano at 2,101,248 positions and a batch of 512: this formula to 0.1 %)."""
        return (self.L.llama_model_n_head(self.handle) + 1) * n_batch * n_ctx * 4

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Text-only tokenization, control tokens parsed unless `special` is False."""
        raw = text.encode()
        buf = (self.L.llama_token * (len(raw) + 8))()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, special)
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """A token's bytes (a piece of a UTF-8 character possibly)."""
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def ends_generation(self, token: int) -> bool:
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))


class LlamaContext(_Owned):
    """A context (`llama_context*`: the KV cache shared by up to `n_seq_max` sequences) of a model."""

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_batch: int, n_seq_max: int, threads: int | None,
                 flash_attn: bool | str, offload: bool):
        self.L = L = model.L
        self.n_vocab = model.n_vocab
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.kv_unified = True
        # With a GPU build, llama.cpp would still send large batches of a CPU-only model to the GPU: no layer
        # on the GPU means the CPU alone (what the app shows as the device).
        params.op_offload = offload
        if threads:
            params.n_threads = params.n_threads_batch = threads
        if flash_attn != "auto":
            params.flash_attn_type = 1 if flash_attn else 0
        self.handle = L.llama_init_from_model(model.handle, params)
        if not self.handle:
            raise ModelFileError(f"llama.cpp could not create a context for {model.path} (n_ctx={n_ctx})")
        self.n_ctx = L.llama_n_ctx(self.handle)

    def _free(self, handle) -> None:
        self.L.llama_free(handle)

    def memory(self):
        return self.L.llama_get_memory(self.handle)

    def logits_row(self, index: int) -> np.ndarray:
        """A copy of the logits of output row `index` (-1: the last), float32 [vocab]."""
        return np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.handle, index), shape=(self.n_vocab,)).copy()

    def logits_finite(self, rows: int) -> bool:
        """Whether the last decode's `rows` output rows hold only finite logits (one sum: any NaN or Inf makes
        it non-finite; a read of rows x vocab floats)."""
        ptr = self.L.llama_get_logits(self.handle) if rows > 1 else self.L.llama_get_logits_ith(self.handle, -1)
        return bool(np.isfinite(np.ctypeslib.as_array(ptr, shape=(rows * self.n_vocab,)).sum(dtype=np.float64)))

    def decode(self, batch: TokenBatch) -> int:
        return self.L.llama_decode(self.handle, batch.handle)


class VisionProjector(_Owned):
    """The mmproj (`mtmd_context*`) that turns an image into the model's embeddings."""

    def __init__(self, path: Path, model: LlamaModel, *, use_gpu: bool, threads: int | None, image_max_tokens: int):
        self.M = M = llama_modules()[1]
        params = M.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.warmup = False  # the warm-up encodes a 1288x1288 dummy image (docs/engine.md, "Runtime facts")
        if threads:
            params.n_threads = threads
        if image_max_tokens:
            params.image_max_tokens = image_max_tokens
        self.handle = M.mtmd_init_from_file(str(path).encode(), model.handle, params)
        if not self.handle:
            raise ModelFileError(f"llama.cpp could not load the vision projector {path}")
        self.marker = M.mtmd_default_marker().decode()  # where the prompt's image goes

    def _free(self, handle) -> None:
        self.M.mtmd_free(handle)


class TokenBatch(_Owned):
    """A `llama_batch` of up to `capacity` tokens, each on one sequence."""

    def __init__(self, capacity: int):
        self.L = llama_modules()[0]
        self.capacity = capacity
        self.batch = self.L.llama_batch_init(capacity, 0, 1)
        self.handle = self.batch

    def _free(self, handle) -> None:
        self.L.llama_batch_free(handle)

    def fill(self, rows: list[tuple[int, int, int]], *, logits: bool = True) -> TokenBatch:
        """(token, position, sequence) per row; every row's logits kept unless `logits` is False."""
        if len(rows) > self.capacity:
            raise ValueError(f"{len(rows)} tokens do not fit a batch of {self.capacity}")
        b = self.batch
        b.n_tokens = len(rows)
        for j, (token, pos, seq) in enumerate(rows):
            b.token[j], b.pos[j], b.n_seq_id[j] = token, pos, 1
            b.seq_id[j][0] = seq
            b.logits[j] = logits
        return self


class SamplerChain(_Owned):
    """One sample's sampler chain: the answer grammar first when constrained (every later stage only sees
    tokens it allows), then greedy, or top-k / top-p / temperature and a random draw from the sample's own
    stream (the same (seed, index) reproduces the same completion)."""

    def __init__(self, model: LlamaModel, sampling: SamplingParams, index: int):
        self.L = L = model.L
        self.handle = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.constrained:
            from .grammar import ANSWER_GRAMMAR

            grammar = L.llama_sampler_init_grammar(model.vocab, ANSWER_GRAMMAR.encode(), b"root")
            if not grammar:
                self.close()
                raise RuntimeError("llama.cpp rejected the answer grammar (engine/policy/grammar.py)")
            self._add(grammar)
        if sampling.temperature == 0:
            self._add(L.llama_sampler_init_greedy())
            return
        if sampling.top_k:
            self._add(L.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1:
            self._add(L.llama_sampler_init_top_p(sampling.top_p, 1))
        self._add(L.llama_sampler_init_temp(sampling.temperature))
        self._add(L.llama_sampler_init_dist((sampling.seed * 1000003 + index) & 0xFFFFFFFF))

    def _add(self, stage) -> None:  # the chain owns its stages from here on
        self.L.llama_sampler_chain_add(self.handle, stage)

    def _free(self, handle) -> None:
        self.L.llama_sampler_free(handle)

    def sample(self, context: LlamaContext, row: int) -> int:
        """The next token from output row `row` of the context's last decode (-1: the last row)."""
        return self.L.llama_sampler_sample(self.handle, context.handle, row)

"""Data that crosses the policy seam: sampling settings in, completions out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# (sample index, text delta) as tokens arrive.
TokenCallback = Callable[[int, str], None]

STOP_TEXT = "</answer>"

# llama.cpp decodes at most 256 sequences in one context (LLAMA_MAX_SEQ); StAR votes over 32.
MAX_SAMPLES = 256
# StAR and VisionReasoner answer in a few hundred tokens and generate with a budget of 1024-2048; 8192 is
# far above any real answer and keeps the KV cache a policy allocates for N samples bounded.
MAX_NEW_TOKENS = 8192
DEFAULT_MAX_NEW_TOKENS = 1024  # tokens a sample may decode unless told otherwise (answers take a few hundred)


@dataclass(frozen=True)
class SamplingParams:
    """Defaults are StAR's voting settings; temperature 0 is greedy (StAR's direct prediction, N=1)."""
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ignore_stop: bool = False   # benchmarks: decode exactly max_new_tokens per sample (no </answer> or EOS stop)
    constrained: bool = False   # llama.cpp: sample only completions in the answer format (policy/grammar.py)

    @classmethod
    def greedy(cls, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> SamplingParams:
        return cls(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)

    def __post_init__(self):
        if (self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0
                or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS):
            raise ValueError(f"invalid sampling parameters: {self}")
        if self.constrained and self.ignore_stop:  # past the grammar's end only EOS is allowed
            raise ValueError("constrained decoding ends at the answer; it cannot also ignore stops")


@dataclass
class Completion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str          # "stop" (</answer>), "eos", "length", "cancelled"


@dataclass
class PolicyTimings:
    vision_ms: float = 0.0      # the vision encoder on the image (once, shared by all samples)
    prefill_ms: float = 0.0     # the LLM over the prompt: text and image embeddings (once, shared)
    prefill_tokens: int = 0
    decode_ms: float = 0.0
    decode_tokens: int = 0
    prefix_hit: bool = False    # the system + image prefix was reused from the previous query on this image


@dataclass
class CancelToken:
    """Set from another thread (the app's Stop button); decoding stops within one step."""
    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Policy(Protocol):
    def sample(self, image, query: str, n: int = 1, sampling: SamplingParams = SamplingParams(), *,
               on_token: TokenCallback | None = None, cancel: CancelToken | None = None) -> list[Completion]: ...

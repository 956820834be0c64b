"""The reference policy: the transformers Qwen2.5-VL / Qwen3-VL classes (optionally with a PEFT LoRA
adapter), behind the same `sample` seam as the llama.cpp product path. It builds its inputs with
`hf_inputs.encode_batch` (the prompt, image resize and tokens training uses), decodes N samples with
`generate(num_return_sequences=N)` as StAR's evaluation does, streams each row's text as it grows and
stops a row at `</answer>`. It is the oracle for parity checks and the class training fine-tunes.

Sampling note: one torch generator drives all N rows (seeded by `SamplingParams.seed`), so a fixed
(seed, N) reproduces, but row i is not the same stream as llama.cpp's sample i.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import BackendUnavailableError, ModelFileError
from ..images import load_image
from ..offline import from_local, local_folder
from .adapters import read_lora_folder
from .hf_inputs import checkpoint_frame, encode_batch
from .types import STOP_TEXT, CancelToken, Completion, PolicyTimings, SamplingParams, TokenCallback

MODEL_CLASSES = {"qwen2_5_vl": ("qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration"),
                 "qwen3_vl": ("qwen3-vl", "Qwen3VLForConditionalGeneration")}


def _model_type(root: Path) -> str:
    cfg = root / "config.json"
    if not cfg.is_file():
        raise ModelFileError(f"{root} is not a Hugging Face model folder (no config.json)")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type", "")
    except ValueError as e:
        raise ModelFileError(f"{cfg} is not valid JSON: {e}") from None
    if model_type not in MODEL_CLASSES:
        raise ModelFileError(f"{root} is a {model_type or 'unknown'!r} model; the transformers policy runs "
                             f"{', '.join(MODEL_CLASSES)}")
    return model_type


def attach_adapter(model, adapter_dir: str | Path):
    """A PEFT LoRA adapter on `model` (unmerged). StAR's released keys (`.lora_A.default.weight`) are
    renamed to PEFT's saved form first; .bin adapters are refused (they would be unpickled)."""
    try:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    except ImportError:
        raise BackendUnavailableError("an adapter needs peft: `bash installer/setup.sh --with train`") from None
    from safetensors.torch import load_file

    config, weights = read_lora_folder(adapter_dir)
    root = weights.parent
    known = set(LoraConfig.__dataclass_fields__)
    lora = LoraConfig(**{k: v for k, v in config.items() if k in known and k not in ("peft_type", "task_type")})
    state = {k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): v
             for k, v in load_file(str(weights)).items()}
    peft_model = get_peft_model(model, lora)
    result = set_peft_model_state_dict(peft_model, state)
    missing_lora = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing_lora or getattr(result, "unexpected_keys", None):
        raise ModelFileError(f"{root} does not fit this model: {len(missing_lora)} LoRA weights missing, "
                             f"{len(result.unexpected_keys)} unexpected (e.g. {(missing_lora or result.unexpected_keys)[:2]})")
    return peft_model.eval()


class _RowWatcher:
    """A StoppingCriteria: after every generated token, streams each live row's new text, marks rows that
    wrote `</answer>` or EOS, and stops every row on cancel."""

    def __init__(self, tokenizer, prompt_len: int, n: int, eos_ids: set[int], on_token, cancel, ignore_stop):
        self.tokenizer, self.prompt_len, self.eos_ids = tokenizer, prompt_len, eos_ids
        self.on_token, self.cancel, self.ignore_stop = on_token, cancel, ignore_stop
        self.texts = [""] * n
        self.finish: list[str | None] = [None] * n
        self.lengths = [0] * n  # tokens that belong to each completion

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        cancelled = self.cancel is not None and self.cancel.cancelled
        for i in range(input_ids.shape[0]):
            if self.finish[i] is not None:
                continue
            if cancelled:
                self.finish[i] = "cancelled"
                continue
            new = input_ids[i, self.prompt_len:]
            if int(new[-1]) in self.eos_ids and not self.ignore_stop:
                self.finish[i] = "eos"
                continue
            self.lengths[i] = len(new)
            text = self.tokenizer.decode(new, skip_special_tokens=False)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            delta, self.texts[i] = text[len(self.texts[i]):], text
            if delta and self.on_token is not None:
                self.on_token(i, delta)
            if STOP_TEXT in text[-len(STOP_TEXT) - len(delta):] and not self.ignore_stop:
                self.finish[i] = "stop"
        return torch.tensor([f is not None for f in self.finish])


class TransformersPolicy:
    name = "transformers"

    def __init__(self, model_dir: str | Path, *, adapter: str | Path | None = None, frame: str | None = None,
                 prompt_family: str = "star", device: str = "cpu", dtype: str = "float32"):
        try:
            import torch
            import transformers
        except ImportError:
            raise BackendUnavailableError("the transformers policy needs torch and transformers: "
                                          "`bash installer/setup.sh --with train`") from None
        root = local_folder(model_dir, "model folder")
        model_type = _model_type(root)
        self.family, class_name = MODEL_CLASSES[model_type]
        self.frame = frame or checkpoint_frame(root, self.family)
        self.prompt_family = prompt_family
        self.device = device
        self.tokenizer = from_local(transformers.AutoTokenizer, root, "model folder")
        # The PIL processor, as training and the parity tests use (the fast one resizes slightly differently).
        self.processor = from_local(transformers.Qwen2VLImageProcessorPil, root, "model folder")
        model = from_local(getattr(transformers, class_name), root, "model folder", dtype=getattr(torch, dtype))
        model = model.to(device).eval()
        self.model = attach_adapter(model, adapter) if adapter else model
        # Qwen3-VL keeps eos_token_id on its text config only
        eos = getattr(self.model.config, "eos_token_id", None)
        if eos is None:
            eos = getattr(self.model.config.get_text_config(), "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.timings = PolicyTimings()

    def inputs(self, image, query: str) -> dict:
        tensors = encode_batch(self.tokenizer, self.processor, [load_image(image)], [query], frame=self.frame,
                               family=self.prompt_family)
        return {k: v.to(self.device) for k, v in tensors.items()}

    def sample(self, image, query: str, n: int = 1, sampling: SamplingParams = SamplingParams(), *,
               on_token: TokenCallback | None = None, cancel: CancelToken | None = None) -> list[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if sampling.constrained:
            raise ValueError("constrained (grammar) decoding is a llama.cpp option; the transformers reference "
                             "decodes freely")
        tensors = self.inputs(image, query)
        prompt_len = tensors["input_ids"].shape[1]
        self.timings = PolicyTimings(prefill_tokens=prompt_len)
        greedy = sampling.temperature == 0
        rows = 1 if greedy else n  # greedy rows are identical (and generate refuses N > 1): decode one, fan out
        stream = on_token
        if greedy and on_token is not None and n > 1:
            def stream(i, delta):
                for j in range(n):
                    on_token(j, delta)
        watcher = _RowWatcher(self.tokenizer, prompt_len, rows, self.eos_ids, stream, cancel, sampling.ignore_stop)
        options = dict(do_sample=False) if greedy else dict(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)  # 0: off
        torch.manual_seed(sampling.seed)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**tensors, **options, max_new_tokens=sampling.max_new_tokens,
                                      num_return_sequences=rows, stopping_criteria=StoppingCriteriaList([watcher]),
                                      eos_token_id=[] if sampling.ignore_stop else sorted(self.eos_ids),
                                      pad_token_id=self.tokenizer.pad_token_id)
        self.timings.decode_ms = (time.perf_counter() - t0) * 1e3
        for r in range(rows):  # text held back at a half character when the row ended
            final = self.tokenizer.decode(out[r, prompt_len:prompt_len + watcher.lengths[r]], skip_special_tokens=False)
            if stream is not None and len(final) > len(watcher.texts[r]):
                stream(r, final[len(watcher.texts[r]):])
        completions = []
        for i in range(n):
            r = 0 if greedy else i
            ids = out[r, prompt_len:prompt_len + watcher.lengths[r]].tolist()
            self.timings.decode_tokens += len(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            completions.append(Completion(i, text, ids, watcher.finish[r] or "length"))
        return completions

    def close(self) -> None:
        self.model = None

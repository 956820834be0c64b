"""A byte-level BPE with Qwen's special tokens, trained on a corpus: the tokenizer of the random
full-size checkpoints (export/random_checkpoint.py), of the tests' tiny models and of the nano world
(training/nano). It lives here, below training, so the exporter never imports the trainer."""

from __future__ import annotations

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


def world_bpe_tokenizer(corpus: list[str], vocab_size: int, split: str = "qwen2", numbers: range | None = None):
    """A byte-level BPE trained on `corpus` with Qwen's special tokens and a llama.cpp split regex
    (engine.policy.splits.KNOWN_SPLITS). `numbers`: integers that must each encode as one token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from engine.policy.splits import KNOWN_SPLITS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(KNOWN_SPLITS[split]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if numbers is not None:
        # Every number ten times per corpus row (more often than any prompt-template pair): BPE merges
        # each coordinate first, then spends the rest of the vocabulary on words.
        corpus = [*corpus, *[",".join(map(str, numbers))] * (10 * len(corpus))]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if numbers is not None:
        split_up = [n for n in numbers if len(fast.encode(str(n), add_special_tokens=False)) != 1]
        if split_up:
            raise ValueError(f"vocabulary {vocab_size} is too small: {len(split_up)} coordinates take several tokens "
                             f"(e.g. {split_up[:5]}); raise vocab_size")
    return fast

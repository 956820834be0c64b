"""BPE split regexes of llama.cpp's pre-tokenizers (tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex).

A tokenizer made for the nano world uses exactly one of them, so llama.cpp splits text as transformers
does; llama.cpp's converter recognizes released tokenizers only by a hash of their vocabulary, so
`star-export` declares the pre-tokenizer of a home-made one by its regex. "qwen2": Qwen's split (every
digit its own piece). "gpt-2": digit runs stay together, so a tokenizer can spell a coordinate as one token.
"""

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
KNOWN_SPLITS = {"qwen2": QWEN2_SPLIT, "gpt-2": GPT2_SPLIT}

"""Subprocess entry: run llama.cpp's converter from its unpacked folder (see export.converter).

argv: <converter dir> <declared pre-tokenizer or ""> -- <converter arguments>
"""

import json
import runpy
import sys
from pathlib import Path


def _declare(pre: str) -> None:
    from conversion import base

    from engine.policy.splits import KNOWN_SPLITS as known

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            spec = json.loads((Path(self.dir_model) / "tokenizer.json").read_text())["pre_tokenizer"]
            parts = spec.get("pretokenizers", [spec])
            pattern = parts[0].get("pattern", {}).get("Regex") if parts else None
            if pattern != known.get(pre):
                raise NotImplementedError(f"tokenizer's split regex is not {pre}'s; cannot declare it") from None
            return pre

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre


def main() -> None:
    conv_dir, pre, sep, *args = sys.argv[1:]
    assert sep == "--"
    sys.path[:0] = [conv_dir, str(Path(conv_dir) / "gguf-py")]
    if pre:
        _declare(pre)
    script = str(Path(conv_dir) / "convert_hf_to_gguf.py")
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

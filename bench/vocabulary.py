"""The shipped CLIP vocabulary written out as a diffusers `tokenizer/` folder, which transformers'
`CLIPTokenizer` (the reference side of the benchmarks) reads."""

from __future__ import annotations

import json
from pathlib import Path

from plugins.clip_text.tokenizer import SHIPPED_VOCAB, read_bpe_gz


def write_vocab_folder(folder: Path) -> Path:
    """Write vocab.json (49 408 tokens) + merges.txt (one "a b" merge a line) into `folder`; returns `folder`."""
    vocab, merges = read_bpe_gz(SHIPPED_VOCAB)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = [" ".join(merge) for merge in merges]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return folder

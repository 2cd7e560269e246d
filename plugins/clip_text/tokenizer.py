"""CLIP's byte-level BPE tokenizer — Radford et al. (2021), "Learning Transferable Visual Models From Natural
Language Supervision" (reference: openai/CLIP `simple_tokenizer.py`), built on the `tokenizers` library and
matching transformers' `CLIPTokenizer` id for id.

    text → NFC, lower-case
         → pieces: words (\\p{L}+), single digits, punctuation runs, the contractions 's 't 're 've 'm 'll 'd;
           whitespace only separates pieces and is dropped (OpenAI's whitespace clean-up)
         → bytes written as printable characters (GPT-2's byte-level alphabet)
         → BPE, "</w>" marking the last token of each piece
    prompt → [BOS] tokens… [EOS] [PAD]…   exactly `max_length` ids; longer prompts keep their first
                                          `max_length - 2` tokens and the cut is reported with a warning.

Vocabularies: a diffusers `tokenizer/` folder (vocab.json + merges.txt, or tokenizer.json; special tokens from
special_tokens_map.json or tokenizer_config.json), or OpenAI's `bpe_simple_vocab_16e6.txt.gz`, of which
`vocab/` ships one copy (MIT, see vocab/LICENSE).

Only BOS and EOS written literally in a prompt are read as special tokens. transformers also splits out the
pad token, which changes the ids of "!" under SD 2.x tokenizers (pad "!"); OpenCLIP, which SD 2.x was
trained with, does not, and neither do we.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path
from typing import cast

import torch
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE

from core.errors import InputError, WeightsError

SHIPPED_VOCAB = Path(__file__).parent / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# openai/CLIP simple_tokenizer.py: special tokens, contractions, letter runs, single digits, punctuation runs
PIECES = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""
# OpenAI's vocabulary keeps the first 48 894 merges of the .gz file:
# 49 408 tokens = 256 bytes + 256 bytes+"</w>" + 48 894 merges + BOS + EOS.
GZ_MERGES = 49152 - 256 - 2


def byte_alphabet() -> list[str]:
    """The 256 printable characters standing for bytes 0..255 (GPT-2's `bytes_to_unicode`), in vocab order.

    Printable Latin-1 bytes stand for themselves; the other 68 map to U+0100 onwards, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [chars[b] for b in printable + others]


def read_bpe_gz(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI's `bpe_simple_vocab_16e6.txt.gz` → (vocab, merges). Line 0 is a header; one merge per line."""
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable gzip'd CLIP BPE vocabulary ({exc})") from None
    merges = [tuple(line.split()) for line in lines[1 : GZ_MERGES + 1]]
    if len(merges) != GZ_MERGES or any(len(m) != 2 for m in merges):
        raise WeightsError(
            f"{path}: expected {GZ_MERGES} merges ('a b' per line) after the header line",
            hint="use OpenAI's bpe_simple_vocab_16e6.txt.gz, or a folder with vocab.json + merges.txt",
        )
    alphabet = byte_alphabet()
    tokens = alphabet + [c + END_OF_WORD for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, cast(list[tuple[str, str]], merges)  # pairs, checked above


def read_folder(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, str]]:
    """A diffusers/transformers tokenizer folder → (vocab, merges, special tokens by role).

    Reads vocab.json + merges.txt, or else the BPE model inside tokenizer.json (transformers ≥ 5 saves only
    that one).
    """
    if (folder / "vocab.json").is_file():
        vocab, merges = read_vocab_and_merges(folder)
    else:
        vocab, merges = read_tokenizer_json(folder / "tokenizer.json")
    specials = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the latter wins, as in transformers
        if (folder / name).is_file():
            try:
                entries = json.loads((folder / name).read_text(encoding="utf-8"))
            except (ValueError, RecursionError) as exc:
                raise WeightsError(f"{folder / name}: not valid JSON ({str(exc)[:200]})") from None
            if not isinstance(entries, dict):
                raise WeightsError(f"{folder / name}: holds a JSON {type(entries).__name__}, not an object")
            for role in ("bos", "eos", "pad"):
                entry = entries.get(f"{role}_token")
                token = entry.get("content") if isinstance(entry, dict) else entry  # a string, or an AddedToken dict
                if entry is not None and not isinstance(token, str):
                    raise WeightsError(f"{folder / name}: {role}_token must be a string or {{content: string}}")
                if token is not None:
                    specials[role] = token
    return vocab, merges, specials


def read_vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json + merges.txt ("#version" header and blank lines skipped, one "a b" merge per line)."""
    try:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merge_lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{folder}: cannot read vocab.json + merges.txt ({exc})") from None
    merges = []
    for number, line in enumerate(merge_lines, start=1):
        if not line.strip() or line.startswith("#version"):
            continue
        merge = tuple(line.split())
        if len(merge) != 2:
            raise WeightsError(f"{folder / 'merges.txt'} line {number}: expected 'a b', found {line!r}")
        merges.append(merge)
    return vocab, merges


def read_tokenizer_json(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocab and merges of a `tokenizers` tokenizer.json (merges as "a b" strings or [a, b] pairs)."""
    try:
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
        vocab, entries = model["vocab"], model["merges"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: not a readable BPE tokenizer.json ({type(exc).__name__}: {exc})") from None
    merges = [tuple(entry.split()) if isinstance(entry, str) else tuple(entry) for entry in entries]
    bad = next((m for m in merges if len(m) != 2), None)
    if model.get("type") != "BPE" or bad is not None:
        raise WeightsError(f"{path}: expected a BPE model with 'a b' merges", hint="use a CLIP tokenizer folder")
    return vocab, cast(list[tuple[str, str]], merges)  # pairs, checked above


def locate_vocabulary(source: str | Path | None) -> Path:
    """The .gz file or folder holding the vocabulary; None → the shipped copy. Raises WeightsError."""
    if source is None:
        return SHIPPED_VOCAB
    path = Path(source).expanduser()
    hint = (
        "point `tokenizer` at a diffusers tokenizer/ folder (vocab.json + merges.txt), a folder containing "
        "one, or a bpe_simple_vocab_16e6.txt.gz — or leave it unset for the bundled CLIP vocabulary"
    )
    if path.is_file() and path.name.endswith(".gz"):
        return path
    for folder in (path, path / "tokenizer"):
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return folder
        if (folder / "tokenizer.json").is_file():
            return folder
    found = (
        "no such file or folder"
        if not path.exists()
        else "no vocab.json + merges.txt, no tokenizer.json, and not a .gz file"
    )
    raise WeightsError(f"CLIP tokenizer vocabulary {path}: {found}", hint=hint)


class CLIPTokenizer:
    """Prompts → token ids (B, max_length), int64, framed as [BOS] tokens… [EOS] [PAD]….

    source: None (the shipped OpenAI vocabulary), a `bpe_simple_vocab_16e6.txt.gz`, or a folder with
    vocab.json + merges.txt. The pad token is `pad_token` when given, else the folder's (SD 2.x tokenizers
    pad with "!"), else EOS.
    """

    def __init__(self, source: str | Path | None = None, *, max_length: int = 77, pad_token: str | None = None) -> None:
        if max_length < 2:
            raise InputError(f"CLIP tokenizer max_length must be ≥ 2 (room for BOS and EOS), got {max_length}")
        self.max_length = max_length
        self.source = locate_vocabulary(source)
        if self.source.is_dir():
            vocab, merges, specials = read_folder(self.source)
        else:
            (vocab, merges), specials = read_bpe_gz(self.source), {}
        roles = {"bos": BOS, "eos": EOS} | specials
        if pad_token is not None:
            roles["pad"] = pad_token
        roles.setdefault("pad", roles["eos"])
        missing = [f"{role} {token!r}" for role, token in roles.items() if token not in vocab]
        if missing:
            raise WeightsError(f"{self.source}: special tokens not in the vocabulary: {', '.join(missing)}")
        self.bos_id, self.eos_id, self.pad_id = (vocab[roles[role]] for role in ("bos", "eos", "pad"))
        self.vocab_size = max(vocab.values()) + 1

        try:
            bpe = BPE(vocab=vocab, merges=merges, end_of_word_suffix=END_OF_WORD, unk_token=roles["eos"])
        except Exception as exc:  # tokenizers raises a bare Exception for merges that do not fit the vocab
            raise WeightsError(f"{self.source}: vocabulary and merges do not fit together ({exc})") from None
        self._tokenizer = Tokenizer(bpe)
        self._tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
        # The byte-level step also applies GPT-2's split inside each piece; that only matters for a special
        # token written in upper case ("<|ENDOFTEXT|>"), and keeps us id-for-id with transformers.
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PIECES), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        # BOS/EOS written in a prompt (exactly, before lower-casing) become their ids.
        self._tokenizer.add_special_tokens(
            [AddedToken(roles[role], special=True, normalized=False) for role in ("bos", "eos")]
        )

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """prompts: B strings → (B, max_length) int64 ids. Over-long prompts are truncated with a warning."""
        room = self.max_length - 2
        rows = []
        for i, prompt in enumerate(prompts):
            # one prompt at a time: encode_batch starts a thread pool, which breaks in forked data loaders
            encoding = self._tokenizer.encode(prompt, add_special_tokens=False)
            ids = encoding.ids
            if len(ids) > room:
                dropped = prompt[encoding.offsets[room][0] :]
                warnings.warn(
                    f"CLIP prompt {i} has {len(ids)} tokens, more than the {room} that fit in {self.max_length} "
                    f"(with BOS and EOS); truncated, dropping: {dropped!r}",
                    stacklevel=2,
                )
            body = ids[:room]
            rows.append([self.bos_id, *body, self.eos_id] + [self.pad_id] * (room - len(body)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(prompts), self.max_length)

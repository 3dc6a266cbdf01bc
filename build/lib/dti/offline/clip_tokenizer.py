"""The real 49 408-token CLIP tokenizer, built offline from the BPE file that open_clip_torch ships.

The hub is not reachable in tests or the demo, and a tokenizer loaded from an unreachable hub id silently
degrades into a 3-token toy: build the real vocabulary from `bpe_simple_vocab_16e6.txt.gz` instead. The file is
found with `importlib.util.find_spec`, which locates the package without running its `__init__` (open_clip's
import needs torchvision, which is broken on CPU-only machines).
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = CLIP_VOCAB_SIZE - 256 * 2 - 2  # byte tokens, byte tokens + '</w>', two specials


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip_torch is not installed; it ships the CLIP BPE file " + BPE_FILE)
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the open_clip_torch installation")
    return path


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable-character map, in CLIP's vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = [], 0
    for b in range(256):
        if b in printable:
            codes.append(b)
        else:
            codes.append(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [chr(codes[b]) for b in order]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """CLIP's tokenizer; SDXL's second tokenizer pads with "!" instead of <|endoftext|>."""
    vocab, merges = _vocab_and_merges()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)
    if len(tok) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"built CLIP tokenizer has {len(tok)} tokens, expected {CLIP_VOCAB_SIZE}")
    return tok

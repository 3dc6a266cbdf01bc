"""Small offline tokenizers with the real tokenizers' structure, for the tiny SANA (Gemma-style byte-fallback
BPE) and Wan (T5-style Unigram) backbones. The real Gemma and UMT5 vocabularies are not available offline; only
token ids reach the model, so a few hundred word pieces exercise the same code. With `size`, unused filler tokens
pad the vocabulary to the real one's length (the random-weight benchmarks of dti.offline.random_weights: the
magnitude m* and the embedding table then have the real sizes)."""

from __future__ import annotations

import string

from dti.train.templates import TEMPLATES

_EXTRA_WORDS = """toy dog cat backpack bowl can candle clock sneaker boot glasses cartoon teapot vase stuffed animal
watercolor painting wearing santa hat on the beach in snow jungle red blue green purple shiny wet cube shaped
photo picture image of a an my with and""".split()
_CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation


def vocabulary_words() -> list[str]:
    words = {w.strip(string.punctuation) for t in sum(TEMPLATES.values(), []) for w in t.split()} | set(_EXTRA_WORDS)
    return sorted(w for w in words if w)


def gemma_style_tokenizer(size: int | None = None):
    """GemmaTokenizer (BPE, byte fallback, "▁" for spaces): specials 0-4 as Gemma's, 256 byte tokens,
    single characters, then merge chains that make each listed word (and "▁word") one token; `size`: filler
    tokens (never produced from text: no merge makes them) up to that many."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({f"<0x{b:02X}>": len(vocab) + b for b in range(256)})
    for ch in "▁" + _CHARACTERS + string.ascii_uppercase:
        vocab.setdefault(ch, len(vocab))
    # BPE applies the lowest-ranked merge first: longer words' chains rank first so a shorter word's merge
    # cannot split them, and "▁" joins a finished word last
    words = sorted(vocabulary_words(), key=lambda w: (-len(w), w))
    merges = []
    for word in words:
        current = word[0]
        for ch in word[1:]:
            if (current, ch) not in merges:
                merges.append((current, ch))
            current += ch
            vocab.setdefault(current, len(vocab))
    for word in words:
        merges.append(("▁", word))
        vocab.setdefault("▁" + word, len(vocab))
    vocab.update({f"<unused{i}>": i for i in range(len(vocab), size or 0)})
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tok.padding_side = "right"
    return tok


def t5_style_tokenizer(size: int | None = None):
    """T5Tokenizer (Unigram, "▁" word prefix): <pad>=0, </s>=1, <unk>=2, whole words, then single characters;
    `size`: filler pieces (scored too low to ever win) up to that many."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -5.0 - 0.01 * i) for i, w in enumerate(vocabulary_words())]
    pieces += [(ch, -10.0) for ch in _CHARACTERS] + [("▁" + ch, -9.0) for ch in _CHARACTERS]
    pieces += [(f"<unused{i}>", -1000.0) for i in range(len(pieces), size or 0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)

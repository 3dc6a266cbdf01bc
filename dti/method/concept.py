"""The concept's token table: a few fp32 rows beside each text encoder's frozen vocabulary.

Adding a concept adds n placeholder tokens (`<dog>`, `<dog>_1`, …, diffusers' multi-vector convention) to every
tokenizer of the backbone and wraps each encoder's input-embedding lookup: ids of the new tokens read
`magnitude · direction` from a small trainable table (cast to the encoder's dtype), every other id reads the
frozen vocabulary, which never receives a gradient and is never written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dti.core.errors import InputError
from dti.method.crossinit import encoder_output_rows
from dti.method.magnitude import Magnitude
from dti.method.slots import TextEncoderSlot


class ConceptTable(nn.Module):
    """Trainable rows of one encoder, always fp32.

    With a fixed magnitude (DTI) `weight` holds unit directions v and the embedding is m*·v; with no magnitude
    (plain TI) `weight` is the embedding itself. `prior` is μ, the normalised initializer embedding of each row.
    """

    def __init__(self, init: torch.Tensor, magnitude: torch.Tensor | None, prior: torch.Tensor | None = None):
        super().__init__()
        init = init.detach().float()
        self.fixed_norm = magnitude is not None
        self.weight = nn.Parameter(F.normalize(init, dim=-1) if self.fixed_norm else init.clone())
        # μ: the initializer's direction; the rows start there too unless they start from a file (`prior` given)
        self.register_buffer("prior", F.normalize((init if prior is None else prior).detach().float(), dim=-1))
        self.register_buffer("magnitude", magnitude.float() if magnitude is not None else init.norm(dim=-1))
        self.register_buffer("initial", self.embeddings().detach().clone())  # E₀, for an anchor penalty

    def embeddings(self) -> torch.Tensor:
        return self.magnitude[:, None] * self.weight if self.fixed_norm else self.weight

    @torch.no_grad()
    def set_embeddings(self, rows: torch.Tensor) -> None:
        """Make `embeddings()` return `rows` (e.g. saved ones): with a fixed norm, as m*·v with m* = ‖row‖."""
        rows = rows.to(self.weight.device, torch.float32)
        if self.fixed_norm:
            self.magnitude.copy_(rows.norm(dim=-1))
            self.weight.copy_(rows / self.magnitude[:, None])
        else:
            self.weight.copy_(rows)

    @torch.no_grad()
    def stats(self) -> dict[str, torch.Tensor]:
        """‖e‖ and cos(v, μ), averaged over rows (tensors: no host sync here)."""
        e = self.embeddings()
        return {"norm": e.norm(dim=-1).mean(), "cos_prior": F.cosine_similarity(e, self.prior, dim=-1).mean()}

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """‖g_data‖ of the current gradient, averaged over rows."""
        return self.weight.grad.norm(dim=-1).mean()


class ConceptEmbedding(nn.Module):
    """Drop-in replacement for an encoder's `nn.Embedding`: ids >= `first_id` come from the concept table."""

    def __init__(self, frozen: nn.Embedding, first_id: int, table: ConceptTable):
        super().__init__()
        self.frozen = frozen
        self.first_id = first_id
        # Not registered as a submodule, on purpose: encoder-wide .to(bf16) or .requires_grad_(False) must not
        # reach the fp32 trainable table.
        object.__setattr__(self, "table", table)

    @property
    def weight(self) -> torch.Tensor:  # some library code inspects the embedding's weight (dtype, device)
        return self.frozen.weight

    @property
    def embed_scale(self) -> torch.Tensor | None:
        """The output scale of the innermost lookup, through any concepts wrapped before this one."""
        return getattr(self.frozen, "embed_scale", None)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        frozen = self.frozen(ids.clamp(max=self.first_id - 1))
        rows = self.table.embeddings().to(frozen.dtype)
        # Some lookups scale their output (transformers' Gemma-2 multiplies by sqrt(hidden) inside the embedding
        # module): scale the concept rows the same way. m* is a norm of the *table* rows, before this scale.
        scale = self.embed_scale
        if scale is not None:
            rows = rows * scale.to(rows.dtype)
        is_new = ids >= self.first_id
        new = rows[(ids - self.first_id).clamp(0, rows.shape[0] - 1)]
        return torch.where(is_new.unsqueeze(-1), new, frozen)


def word_ids(slot: TextEncoderSlot, word: str) -> list[int]:
    """The word's ids as they appear inside a prompt ("a <word>"), after the pipeline's preprocessing. For
    SentencePiece-style vocabularies (Gemma) a word after a space is a different row ("▁dog") than the same word
    alone ("dog"); prompts use the former."""
    def ids(text: str) -> list[int]:
        return slot.tokenizer(slot.preprocess(text), add_special_tokens=False).input_ids

    prefix, full = ids("a"), ids(f"a {word}")
    return full[len(prefix):] if full[: len(prefix)] == prefix else ids(word)


def _check_placeholder(slot: TextEncoderSlot, token: str) -> None:
    if not token or any(c.isspace() for c in token):
        raise InputError("placeholder", token, "must be one word without spaces")
    if slot.preprocess(token) != token:
        raise InputError("placeholder", token, f"is changed by the {slot.key} pipeline's prompt preprocessing "
                         f"(to {slot.preprocess(token)!r}); use that form")
    pieces = slot.tokenizer.tokenize(token)
    in_vocab = token in slot.tokenizer.get_vocab() or (
        len(pieces) == 1 and slot.tokenizer.convert_tokens_to_ids(pieces[0]) != slot.tokenizer.unk_token_id
    )
    if in_vocab:
        raise InputError("placeholder", token, f"already in the {slot.key} vocabulary; pick a new token like <{token}>")


MAGNITUDE_FACTOR = 1e3  # a fixed norm this many times above or below the vocabulary's mean is refused


def _check_in_distribution(key: str, magnitude: torch.Tensor, vocab: torch.Tensor) -> None:
    """A norm far outside the vocabulary's (1e30 overflows fp32 in the text encoder, 1e-40 underflows to zero
    rows) is refused with the range that makes sense; Table 3's out-of-distribution 5.0 is about 13x CLIP's."""
    mean = vocab.float().norm(dim=-1).mean().item()
    value = magnitude.float().max().item() if magnitude.numel() else 0.0
    low, high = mean / MAGNITUDE_FACTOR, mean * MAGNITUDE_FACTOR
    smallest = magnitude.float().min().item() if magnitude.numel() else 0.0
    if not (torch.isfinite(magnitude).all() and low <= smallest and value <= high):
        bad = value if value > high or not torch.isfinite(magnitude).all() else smallest
        raise InputError("magnitude.value", bad, f"is {bad / mean:.3g} times the {key} vocabulary's mean norm "
                         f"{mean:.4g}; choose a norm in [{low:.3g}, {high:.3g}]")


def check_fits(concept: Concept, encoders: list[TextEncoderSlot], templates: list[str], field: str) -> None:
    """Every prompt of `templates` with the concept in it fits each encoder's context: a longer one would be cut
    silently (an 80-vector concept in CLIP's 77 tokens)."""
    for slot in encoders:
        for template in templates:
            text = slot.preprocess(concept.prompt(template))
            length = len(slot.tokenizer(text, add_special_tokens=True, truncation=False).input_ids)
            if length > slot.max_length:
                raise InputError(field, template, f"with the concept's {len(concept.tokens)} vector(s) is "
                                 f"{length} tokens, more than the {slot.key} encoder's {slot.max_length}; use a "
                                 "shorter initializer, fewer num_vectors or a shorter prompt")


@dataclass
class Concept:
    """A placeholder and its tables, one per text encoder of the backbone."""

    placeholder: str
    tokens: list[str]  # its token names, as exports and checkpoints call them (diffusers' convention)
    tables: dict[str, ConceptTable]  # by encoder key
    initializer: str
    # the tokens as added to the tokenizers: `tokens`, unless packed training gave this concept stand-ins because
    # another concept of the same batch uses the same placeholder (dti.run.packing)
    added: list[str] = field(default_factory=list)
    # how to take the concept out again: each slot's tokenizer and embedding module before it was added
    _originals: list = field(default_factory=list, repr=False)

    def remove(self) -> None:
        """Restore every text encoder and tokenizer as they were before `add_concept`."""
        for slot, tokenizer, embedding in reversed(self._originals):
            slot.tokenizer = tokenizer
            slot.set_input_embeddings(embedding)
        self._originals.clear()

    def prompt(self, template: str) -> str:
        """Fill a "{}" template with the placeholder expanded to all its tokens (what diffusers does at load)."""
        return template.format(" ".join(self.added or self.tokens))

    def param_groups(self) -> list[dict]:
        return [{"params": [t.weight], "prior": t.prior, "name": key} for key, t in self.tables.items()]

    def embeddings(self) -> dict[str, torch.Tensor]:
        """Final fp32 rows (m*·v for DTI) per encoder key, detached, on the CPU."""
        return {key: t.embeddings().detach().float().cpu().contiguous() for key, t in self.tables.items()}


def add_concept(
    encoders: list[TextEncoderSlot], placeholder: str, initializer: str, magnitude: Magnitude,
    num_vectors: int | None = None, stand_in: str | None = None, init: str = "word",
    start: dict[str, torch.Tensor] | None = None,
) -> Concept:
    """Add `placeholder` to every tokenizer of a backbone's `encoders` and wrap each lookup with a new table.

    `stand_in`: add this token instead, under the concept's own name (`placeholder`) for everything it writes;
    packed training uses it when two concepts of one batch share a placeholder (e.g. two kappas of one subject).
    `init`: where the rows start (dti.method.method): the word's vocabulary rows, or CrossInit's encoder output.
    `start`: rows to start from instead ({encoder key: [n, d]}, `concept.init_from`): their count is the concept's;
    a fixed magnitude keeps their direction at the m* it gives without them, no magnitude keeps them as they are.
    The initializer's rows stay the prior μ either way.
    """
    if num_vectors is not None and (not isinstance(num_vectors, int) or isinstance(num_vectors, bool)
                                    or num_vectors < 1):
        raise InputError("num_vectors", num_vectors, "must be a positive integer or null")
    init_ids = {}
    for slot in encoders:
        # a stand-in's concept shares its placeholder with one added before it, which that one's check covered
        _check_placeholder(slot, stand_in or placeholder)
        ids = word_ids(slot, initializer)
        if not ids:
            raise InputError("initializer", initializer, f"tokenizes to nothing with the {slot.key} tokenizer")
        init_ids[slot.key] = ids
    # One count for all encoders (the placeholder string is shared): the start rows', else the first tokenizer's.
    n = num_vectors or len(init_ids[encoders[0].key])
    if start is not None:
        n = next(iter(start.values())).shape[0]
        if num_vectors is not None and num_vectors != n:
            raise InputError("num_vectors", num_vectors, f"but concept.init_from holds {n} vector(s): drop "
                             "num_vectors (the file decides) or start from another file")
    def names(token: str) -> list[str]:
        return [token] + [f"{token}_{i}" for i in range(1, n)]

    tokens, added = names(placeholder), names(stand_in or placeholder)
    tables, originals = {}, []
    try:
        _add_to_encoders(encoders, stand_in or placeholder, added, n, init_ids, magnitude, tables, originals,
                         initializer if init == "encoder_output" else None, start)
    except BaseException:
        Concept(placeholder, tokens, tables, initializer, added, originals).remove()  # leave the backbone as is
        raise
    return Concept(placeholder, tokens, tables, initializer, added, originals)


def _add_to_encoders(encoders, placeholder, tokens, n, init_ids, magnitude, tables, originals,
                     encode_word: str | None, start: dict | None = None) -> None:
    for slot in encoders:
        # extra vectors start from the last initializer token; a forced smaller count keeps the first ones
        ids = (init_ids[slot.key] + [init_ids[slot.key][-1]] * n)[:n]
        frozen = slot.input_embeddings()
        originals.append((slot, slot.tokenizer, frozen))
        slot.tokenizer = copy.deepcopy(slot.tokenizer)  # the tokens go into a copy: remove() restores the original
        first_id = len(slot.tokenizer)
        added = slot.tokenizer.add_tokens(tokens)
        new_ids = slot.tokenizer.convert_tokens_to_ids(tokens)
        if added != n or new_ids != list(range(first_id, first_id + n)):
            raise InputError("placeholder", placeholder,
                             f"could not be added to the {slot.key} tokenizer as new tokens")
        check = slot.tokenizer(slot.preprocess(" ".join(tokens)), add_special_tokens=False).input_ids
        # some vocabularies keep the space between the tokens as a piece of its own (Gemma's "▁"): that is what
        # inference sees too, so only the concept's own ids must come out whole and in order
        between = [i for i in check if i < first_id]
        if [i for i in check if i >= first_id] != new_ids or any(
                slot.tokenizer.convert_ids_to_tokens(i).strip("▁ ") for i in between):
            raise InputError("placeholder", placeholder, f"does not tokenize to its own ids in {slot.key}: {check}")
        if encode_word is None:
            init = frozen.weight[torch.tensor(ids, device=frozen.weight.device)].detach().float()
        else:  # before the lookup is wrapped: the encoder sees the frozen vocabulary only
            init = encoder_output_rows(slot, encode_word, n).to(frozen.weight.device)
        vocab = frozen.weight[: slot.num_vocab_rows]
        m = magnitude(vocab, init, slot.tokenizer.all_special_ids)
        if m is not None:
            _check_in_distribution(slot.key, m, vocab)
        if start is None:
            table = ConceptTable(init, m)
        else:  # m* as without the file (from the initializer), the file's rows, the word's direction as μ
            table = ConceptTable(start[slot.key].to(frozen.weight.device), m, prior=init)
        table = table.to(frozen.weight.device)
        slot.set_input_embeddings(ConceptEmbedding(frozen, first_id, table))
        tables[slot.key] = table

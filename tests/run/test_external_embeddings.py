"""Embeddings made elsewhere: training from one (`concept.init_from`) and scoring one as a run of its own
(`stage=[sample,evaluate] embeddings=FILE`), on the tiny SDXL."""

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import FAST, cli, compose_cfg, error_lines
from omegaconf import OmegaConf

from dti.core import io
from dti.core.errors import InputError
from dti.run import job
from dti.run.build import build_concept, build_subject
from dti.run.identity import concept_settings, run_name
from dti.sweep.report import write_report

@functools.cache
def fast_cfg():
    return compose_cfg(FAST)


def with_values(**values):
    """FAST's config with some values set (composing again for each would take a second apiece)."""
    cfg = fast_cfg().copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return cfg


def encoder_widths():
    backbone, concept = build_concept(fast_cfg(), build_subject(fast_cfg()))
    concept.remove()
    return {slot.key: (slot.diffusers_file, slot.input_embeddings().weight.shape[-1]) for slot in backbone.encoders}


def made_elsewhere(folder, n=3, seed=0, scale=3.0):
    """A folder of diffusers files with `n` random rows per encoder (norms far from the vocabulary's)."""
    generator = torch.Generator().manual_seed(seed)
    rows = {}
    for key, (name, width) in encoder_widths().items():
        rows[key] = scale * torch.randn(n, width, generator=generator)
        io.save_safetensors(folder / name, {"<other>": rows[key]}, {"modelspec.title": "Elsewhere"})
    return rows


def vocabulary_mean(slot):
    return slot.input_embeddings().frozen.weight[: slot.num_vocab_rows].float().norm(dim=-1).mean()


def word_row(slot, word):
    ids = slot.tokenizer(f"a {word}", add_special_tokens=False).input_ids[1:]
    return slot.input_embeddings().frozen.weight[ids[-1]].float()


def test_init_from_keeps_the_files_direction_at_m_star_or_its_rows_for_ti(tmp_path):
    rows = made_elsewhere(tmp_path)
    cfg = with_values(concept__init_from=str(tmp_path))
    subject = build_subject(cfg)
    backbone, concept = build_concept(cfg, subject)
    try:
        assert len(concept.tokens) == 3  # the file's count, not the one-token initializer's
        for slot in backbone.encoders:
            table = concept.tables[slot.key]
            start = table.embeddings().detach().cpu()
            m_star = vocabulary_mean(slot).cpu()
            assert torch.allclose(start.norm(dim=-1), m_star.expand(3), rtol=1e-5)
            assert torch.allclose(F.cosine_similarity(start, rows[slot.key], dim=-1), torch.ones(3), atol=1e-6)
            assert torch.equal(table.initial.cpu(), start)  # E₀ is where training starts
            # the initializer word still anchors the prior: μ is its direction, not the file's
            mu = F.normalize(word_row(slot, subject.initializer), dim=-1).cpu()
            assert torch.allclose(table.prior.cpu(), mu.expand(3, -1), atol=1e-6)
    finally:
        concept.remove()
    ti = compose_cfg([*FAST, "method=ti", f"concept.init_from={tmp_path}"])  # TI: its own optimizer and magnitude
    backbone, concept = build_concept(ti, subject)
    try:
        for key, table in concept.tables.items():
            assert torch.equal(table.embeddings().detach().cpu(), rows[key])
    finally:
        concept.remove()
    with pytest.raises(InputError, match="num_vectors=2: but concept.init_from holds 3"):
        build_concept(with_values(num_vectors=2, concept__init_from=str(tmp_path)), subject)


def test_the_run_identity_follows_the_files_contents(tmp_path):
    first, moved = tmp_path / "one" / "dog", tmp_path / "two" / "dog"
    made_elsewhere(first)
    moved.mkdir(parents=True)
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):  # the same bytes, moved
        (moved / name).write_bytes((first / name).read_bytes())
    name = run_name([f"concept.init_from={first}", "model=tiny_sdxl"])
    assert name.startswith("concept.init_from=dog~") and name.endswith(",model=tiny_sdxl")
    assert run_name([f"concept.init_from={moved}", "model=tiny_sdxl"]) == name
    settings = concept_settings(with_values(concept__init_from=str(first)))
    assert settings["concept.init_from"].startswith("sha256:")
    assert concept_settings(with_values(concept__init_from=str(moved))) == settings
    made_elsewhere(moved, seed=1)  # edited in place: another input, another run
    assert run_name([f"concept.init_from={moved}", "model=tiny_sdxl"]) != name
    assert concept_settings(with_values(concept__init_from=str(moved))) != settings

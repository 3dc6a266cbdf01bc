"""Embeddings made elsewhere: training from one (`concept.init_from`) and scoring one as a run of its own
(`stage=[sample,evaluate] embeddings=FILE`), on the tiny SDXL."""

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FAST, cli, compose_cfg, error_lines
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

from dti.core import io
from dti.core.errors import InputError
from dti.method.external import ExternalEmbedding
from dti.run import job
from dti.run.build import build_concept, build_subject
from dti.run.external import scored_config
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
    assert not {"concept.init_from", "embeddings"} & set(concept_settings(fast_cfg()))  # earlier runs: unchanged
    assert concept_settings(with_values(concept__init_from=str(moved))) == settings
    made_elsewhere(moved, seed=1)  # edited in place: another input, another run
    assert run_name([f"concept.init_from={moved}", "model=tiny_sdxl"]) != name
    assert concept_settings(with_values(concept__init_from=str(moved))) != settings


SCORE = ["model=tiny_sdxl", "data=synthetic", "prompts=file", "evaluator=tiny", "sampler.seeds=[0]",
         "sampler.batch_size=2"]


def test_an_external_embedding_scores_as_the_same_rows_trained_in_project(tmp_path):
    (tmp_path / "prompts.txt").write_text("a photo of a {}\na {} on the beach\n")
    score = [*SCORE, f"prompts.path={tmp_path / 'prompts.txt'}"]
    trained = tmp_path / "outputs" / "trained" / "toy"
    job.run(compose_cfg([*FAST, *score, "train.steps=1", "stage=[train,sample,evaluate]"]), trained)
    embeddings = trained / "embeddings"  # its SDXL file for other tools ({clip_l, clip_g}), as a user would pass it
    code, _, err = cli(*score, "stage=[sample,evaluate]", f"embeddings='{embeddings / 'toy-dti.safetensors'}'",
                       cwd=tmp_path)
    assert code == 0, err[-2000:]
    external = [p.parent for p in (tmp_path / "outputs").glob("embeddings=*/toy/source.json")]
    assert len(external) == 1 and external[0].parent.name.startswith("embeddings=toy-dti~")
    source = json.loads((external[0] / "source.json").read_text())
    assert source["label"] == "dti" and source["num_vectors"] == 1  # the trained file says what made it
    assert source["format"] == "sdxl_keys"
    # its file for other tools is named after the default trigger of an external embedding, not of a method
    assert (external[0] / "embeddings" / "toy-external.safetensors").is_file()
    ours, theirs = (json.loads((run / "samples" / "prompts" / "metrics.json").read_text())
                    for run in (trained, external[0]))
    assert theirs["num_images"] == ours["num_images"] == 2
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):  # the very same rows
        assert torch.equal(load_file(embeddings / name)["<toy>"], load_file(external[0] / "embeddings" / name)["<toy>"])
    # the trained run samples from its rows in memory (m*·v), the external one from the file (‖e‖·e/‖e‖): equal
    # up to float rounding, which may move a pixel by one level
    for ours_png in sorted((trained / "samples").rglob("*.png")):
        theirs_png = external[0] / ours_png.relative_to(trained)
        diff = np.abs(np.asarray(Image.open(ours_png), dtype=int) - np.asarray(Image.open(theirs_png), dtype=int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    for key in ("image_sim", "text_sim", "text_sim_official"):
        assert theirs[key] == pytest.approx(ours[key], abs=1e-4), key
    assert [(r["prompt_index"], r["seed"]) for r in theirs["per_image"]] == [
        (r["prompt_index"], r["seed"]) for r in ours["per_image"]]
    assert theirs["config"]["sampler"] == ours["config"]["sampler"]
    write_report(tmp_path / "outputs")
    report = (tmp_path / "outputs" / "report.md").read_text()
    external_rows = [line for line in report.splitlines() if "`external [embeddings=toy-dti~" in line]
    assert len(external_rows) == 1 and external_rows[0].startswith("| dti | ")
    assert any(line.startswith("| DTI | `dti") for line in report.splitlines())  # the in-project row beside it


def wrong_width(folder):
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        io.save_safetensors(folder / name, {"<x>": torch.ones(1, 7)})
    io.save_safetensors(folder / "sdxl.safetensors", {"clip_l": torch.ones(1, 7), "clip_g": torch.ones(1, 7)})
    (folder / "torn.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    return folder


BAD = {  # id: (overrides given the folder of 7-dim rows, the start of the one line)
    "missing_file": (lambda f: ["stage=[sample,evaluate]", f"embeddings={f}/none.safetensors"], "embeddings="),
    "embeddings_with_train": (lambda f: [f"embeddings={f}"], "embeddings="),
    "external_wrong_dims": (lambda f: ["stage=[sample,evaluate]", f"embeddings={f}"], "embeddings="),
    "external_file_wrong_dims": (lambda f: ["stage=[sample,evaluate]", f"embeddings={f}/sdxl.safetensors"],
                                 "embeddings="),
    "external_num_vectors": (lambda f: ["stage=[sample,evaluate]", "num_vectors=2", f"embeddings={f}/good"],
                             "num_vectors=2"),
    "init_from_num_vectors": (lambda f: ["stage=[train]", "num_vectors=2", f"concept.init_from={f}/good"],
                              "num_vectors=2"),
    "external_unreadable": (lambda f: ["stage=[sample,evaluate]", f"embeddings={f}/torn.safetensors"],
                            "embeddings="),
    "init_from_wrong_dims": (lambda f: ["stage=[train]", f"concept.init_from={f}"], "concept.init_from="),
    "init_from_with_crossinit": (lambda f: ["stage=[train]", "method=crossinit", f"concept.init_from={f}"],
                                 "concept.init_from="),
    "external_saved_steps": (lambda f: ["stage=[sample,evaluate]", "sampler.steps=all", f"embeddings={f}"],
                             "sampler.steps="),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_embedding_inputs_stop_in_one_line_before_any_stage(tmp_path, case):
    overrides, field = BAD[case]
    folder = wrong_width(tmp_path / "in")
    made_elsewhere(folder / "good")  # three vectors of the right widths
    (tmp_path / "prompts.txt").write_text("a photo of a {}\n")
    code, _, err = cli(*SCORE, f"prompts.path={tmp_path / 'prompts.txt'}", "train.steps=1", *overrides(folder),
                       cwd=tmp_path)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {field}"), err[-2000:]
    assert not (tmp_path / "outputs").exists()


def test_the_label_comes_from_the_file_unless_given(tmp_path):
    rows = {"clip_l": torch.ones(1, 4)}

    def label(path, fmt="diffusers", token=None, **metadata):
        return ExternalEmbedding(path, rows, fmt, token, metadata).label()

    file = tmp_path / "civitai_dog_v2.safetensors"
    file.write_bytes(b"")
    assert label(file, **{"dti.method": "DTI", "modelspec.title": "Dog"}) == "DTI"
    assert label(file, **{"modelspec.title": "Dog"}) == "Dog"
    assert label(file, "a1111_pt", token="sks-dog") == "sks-dog"
    assert label(file, token="<dog>") == "civitai_dog_v2"  # a diffusers token is a placeholder, not a name
    assert label(tmp_path / "runs" / "dog" / "embeddings") == "dog"
    cfg = with_values(embeddings=str(file))
    io.write_json(tmp_path / "source.json", {"label": "Dog"})
    assert scored_config(cfg, tmp_path)["label"] == "Dog"
    assert scored_config(with_values(embeddings=str(file), label="mine"), tmp_path)["label"] == "mine"
    assert scored_config(cfg, tmp_path / "nothing")["label"] == "civitai_dog_v2"

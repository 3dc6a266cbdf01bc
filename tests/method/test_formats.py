"""Embedding layouts: each written as its tool writes it is detected and read back as rows per encoder; every
layout dti writes round-trips exactly; mismatched widths, missing rows and non-finite values are refused."""

import pytest
import torch
from safetensors.torch import save_file

from dti.core.errors import InputError
from dti.method.formats import read_embedding
from dti.method.slots import TextEncoderSlot


def slots(*keys_dims, files=("learned_embeds.safetensors", "learned_embeds_2.safetensors")):
    return [TextEncoderSlot(key, None, None, files[i], 0, dim=dim) for i, (key, dim) in enumerate(keys_dims)]


SDXL = slots(("clip_l", 768), ("clip_g", 1280))
SD15, SD21 = slots(("clip_l", 768)), slots(("clip_h", 1024))
SANA, WAN = slots(("gemma2", 2304)), slots(("umt5xxl", 4096))


def rows(n, *dims):
    g = torch.Generator().manual_seed(sum(dims) + n)
    return [torch.randn(n, d, generator=g) for d in dims]


# (name, encoders, what the tool writes: rows -> the dict it saves, file suffix, detected layout)
EXTERNAL = [
    ("A1111 .pt", SD15, lambda r: {"string_to_token": {"*": 265}, "string_to_param": {"*": r[0]}, "name": "cat",
                                   "step": 100, "sd_checkpoint": "abc", "sd_checkpoint_name": "v1-5"},
     ".pt", "a1111_pt"),
    ("diffusers .bin", SD21, lambda r: {"<cat>": r[0]}, ".bin", "diffusers"),
    ("diffusers safetensors", SD15, lambda r: {"<cat>": r[0]}, ".safetensors", "diffusers"),
    ("kohya emb_params", SD21, lambda r: {"emb_params": r[0]}, ".safetensors", "kohya_emb_params"),
    ("A1111/ComfyUI SDXL", SDXL, lambda r: {"clip_g": r[1], "clip_l": r[0]}, ".safetensors", "sdxl_keys"),
    ("OneTrainer SDXL ckpt", SDXL, lambda r: {"clip_l": r[0], "clip_g": r[1]}, ".pt", "sdxl_keys"),
    ("OneTrainer SANA", SANA, lambda r: {"gemma": r[0]}, ".safetensors", "onetrainer"),
    ("OneTrainer SD1.5", SD15, lambda r: {"emp_params": r[0]}, ".safetensors", "onetrainer"),
    ("dti Wan", WAN, lambda r: {"umt5xxl": r[0]}, ".safetensors", "encoder_keys"),
]


@pytest.mark.parametrize("name,encoders,write,suffix,layout", EXTERNAL, ids=[e[0] for e in EXTERNAL])
def test_each_external_layout_is_detected_and_read_as_rows_per_encoder(tmp_path, name, encoders, write, suffix,
                                                                         layout):
    expected = rows(3, *(s.dim for s in encoders))
    path = tmp_path / f"anything{suffix}"  # the name says nothing: the layout comes from the contents
    state = write(expected)
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    read = read_embedding(path, encoders)
    assert read.format == layout
    assert list(read.rows) == [s.key for s in encoders]
    for slot, want in zip(encoders, expected):
        assert read.rows[slot.key].dtype == torch.float32 and torch.equal(read.rows[slot.key], want)
    if layout in ("a1111_pt", "diffusers"):
        assert read.token == ("cat" if layout == "a1111_pt" else "<cat>")
    if layout == "a1111_pt":
        assert read.metadata == {"name": "cat", "step": "100", "sd_checkpoint": "abc", "sd_checkpoint_name": "v1-5"}


def test_an_old_diffusers_bin_with_one_vector_reads_as_one_row(tmp_path):
    vector = torch.randn(768)
    torch.save({"<cat>": vector}, tmp_path / "learned_embeds.bin")
    read = read_embedding(tmp_path / "learned_embeds.bin", SD15)
    assert read.rows["clip_l"].shape == (1, 768) and torch.equal(read.rows["clip_l"][0], vector)


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_width_that_fits_no_encoder_names_the_file_and_both_widths(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"<cat>": torch.randn(2, 1024)}, str(path))
    with pytest.raises(InputError) as err:
        read_embedding(path, SD15)
    text = one_line(err)
    assert str(path) in text and "(2, 1024)" in text and "clip_l 768" in text


def test_an_encoder_left_without_rows_is_refused(tmp_path):
    path = tmp_path / "learned_embeds.safetensors"  # one SDXL encoder's diffusers file alone
    save_file({"<cat>": torch.randn(2, 768)}, str(path))
    with pytest.raises(InputError, match="no rows for clip_g"):
        read_embedding(path, SDXL)


def test_keyed_rows_of_the_wrong_width_are_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1024)}, str(path))
    with pytest.raises(InputError, match=r"clip_g \(1, 1024\).*clip_g 1280"):
        read_embedding(path, SDXL)


def test_non_finite_rows_and_unknown_layouts_are_refused(tmp_path):
    bad = torch.randn(2, 768)
    bad[1, 3] = float("nan")
    save_file({"<cat>": bad}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(InputError, match="not finite"):
        read_embedding(tmp_path / "nan.safetensors", SD15)
    save_file({"a": torch.randn(1, 768), "b": torch.randn(1, 768)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(InputError, match="no known embedding layout"):
        read_embedding(tmp_path / "two.safetensors", SD15)
    save_file({"gemma": torch.randn(1, 2304), "gemma_out": torch.randn(1, 2304)}, str(tmp_path / "ot.safetensors"))
    with pytest.raises(InputError, match="gemma_out"):
        read_embedding(tmp_path / "ot.safetensors", SANA)


def test_a_run_folder_reads_the_diffusers_file_of_each_encoder(tmp_path):
    (tmp_path / "embeddings").mkdir()
    a, b = rows(2, 768, 1280)
    save_file({"<cat>": a}, str(tmp_path / "embeddings" / "learned_embeds.safetensors"), {"dti.step": "7"})
    save_file({"<cat>": b}, str(tmp_path / "embeddings" / "learned_embeds_2.safetensors"))
    for path in (tmp_path, tmp_path / "embeddings"):
        read = read_embedding(path, SDXL)
        assert read.format == "diffusers" and read.token == "<cat>" and read.metadata == {"dti.step": "7"}
        assert torch.equal(read.rows["clip_l"], a) and torch.equal(read.rows["clip_g"], b)
    with pytest.raises(InputError, match="has no other.safetensors"):
        read_embedding(tmp_path, slots(("clip_l", 768), files=("other.safetensors",)))


# (layout written, encoders, layout detected: SDXL's clip_l/clip_g file is the same for A1111, ComfyUI, OneTrainer)
WRITTEN = [("diffusers", SDXL, "diffusers"), ("diffusers", SANA, "diffusers"), ("a1111_pt", SD15, "a1111_pt"),
           ("a1111_pt", SD21, "a1111_pt"), ("sdxl_keys", SDXL, "sdxl_keys"), ("encoder_keys", WAN, "encoder_keys"),
           ("encoder_keys", SDXL, "sdxl_keys"), ("kohya_emb_params", SD15, "kohya_emb_params"),
           ("kohya_emb_params", SD21, "kohya_emb_params"), ("onetrainer", SDXL, "sdxl_keys"),
           ("onetrainer", SANA, "onetrainer"), ("onetrainer", SD21, "onetrainer")]


@pytest.mark.parametrize("layout,encoders,detected", WRITTEN, ids=[f"{a}-{b[-1].key}" for a, b, _ in WRITTEN])
def test_every_written_layout_round_trips_exactly(tmp_path, layout, encoders, detected):
    from dti.method.formats.writing import write_embedding

    want = dict(zip([s.key for s in encoders], rows(2, *(s.dim for s in encoders))))
    out = tmp_path / ("out" if layout == "diffusers" else f"cat-dti{'.pt' if layout == 'a1111_pt' else '.safetensors'}")
    files = write_embedding(out, layout, want, "<cat>", encoders, {"dti.step": "5"})
    read = read_embedding(out, encoders)
    assert read.format == detected
    assert all(torch.equal(read.rows[k], want[k]) for k in want) and list(read.rows) == list(want)
    assert read.metadata["dti.step"] == "5" and all(f.is_file() for f in files)
    assert read.token == "<cat>"  # in the file, or its dti.placeholder metadata


def test_sana_files_carry_onetrainers_gemma_key(tmp_path):
    from dti.method.formats.writing import write_embedding

    write_embedding(tmp_path / "x.safetensors", "onetrainer", {"gemma2": torch.ones(1, 2304)}, "<cat>", SANA, {})
    from safetensors.torch import load_file

    assert list(load_file(tmp_path / "x.safetensors")) == ["gemma"]
    with pytest.raises(ValueError, match="OneTrainer has no embedding key for the umt5xxl"):
        write_embedding(tmp_path / "w.safetensors", "onetrainer", {"umt5xxl": torch.ones(1, 4096)}, "<c>", WAN, {})


def test_convert_round_trip_and_a_width_mismatch_fails_in_one_line(tmp_path, capsys):
    from dti.tools.convert import main

    a, b = rows(2, 768, 1280)
    save_file({"clip_l": a, "clip_g": b}, str(tmp_path / "dog-dti.safetensors"), {"dti.kappa": "0.0001"})
    assert main([str(tmp_path / "dog-dti.safetensors"), str(tmp_path / "diffusers"), "--to", "diffusers",
                 "--model", "sdxl"]) == 0
    assert main([str(tmp_path / "diffusers"), str(tmp_path / "back.safetensors"), "--to", "sdxl_keys",
                 "--model", "sdxl"]) == 0
    back = read_embedding(tmp_path / "back.safetensors", SDXL)
    assert torch.equal(back.rows["clip_l"], a) and torch.equal(back.rows["clip_g"], b)
    assert back.token == "<diffusers>" and back.metadata["dti.kappa"] == "0.0001"  # metadata travels along
    capsys.readouterr()
    assert main([str(tmp_path / "dog-dti.safetensors"), str(tmp_path / "x.pt"), "--to", "a1111_pt",
                 "--model", "sd21_base"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dog-dti.safetensors" in err and "clip_h 1024" in err and "(2, 768)" in err
    assert not (tmp_path / "x.pt").exists()
    assert main([str(tmp_path / "dog-dti.safetensors"), str(tmp_path / "x.pt"), "--to", "a1111_pt",
                 "--model", "nosuch"]) == 2
    assert "--model='nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["tiny_sdxl", "tiny_sd15"])
def test_a_stock_pipeline_loads_each_diffusers_file_and_every_file_reads_back(tmp_path, model):
    from diffusers import DiffusionPipeline
    from helpers import FAST, compose_cfg

    from dti.method.formats import save_embeddings
    from dti.offline.tiny import tiny_path
    from dti.run.build import build_backbone, embedding_encoders

    cfg = compose_cfg([*FAST, f"model={model}"])
    backbone = build_backbone(cfg)
    # the layout the converter uses without weights matches the loaded backbone's encoders
    shapes = embedding_encoders(cfg)
    assert [(s.key, s.dim, s.diffusers_file) for s in shapes] == [
        (s.key, s.width(), s.diffusers_file) for s in backbone.encoders]
    want = dict(zip([s.key for s in shapes], rows(2, *(s.dim for s in shapes))))
    files = save_embeddings(want, "<cat>", backbone.encoders, tmp_path, "cat-dti", {}, backbone.tool_files)
    for file in files:  # the diffusers files and each tool file (A1111 .pt, emb_params / clip_l+clip_g)
        read = read_embedding(file, shapes) if file.name.startswith("cat-dti") else None
        if read is not None:
            assert all(torch.equal(read.rows[k], want[k]) for k in want), file.name
    pipe = DiffusionPipeline.from_pretrained(tiny_path(model))
    encoders = [(pipe.tokenizer, pipe.text_encoder)] + ([(pipe.tokenizer_2, pipe.text_encoder_2)]
                                                        if hasattr(pipe, "tokenizer_2") else [])
    for slot, (tokenizer, encoder) in zip(shapes, encoders):
        pipe.load_textual_inversion(str(tmp_path / slot.diffusers_file), tokenizer=tokenizer, text_encoder=encoder)
        ids = tokenizer.convert_tokens_to_ids(["<cat>", "<cat>_1"])
        assert torch.equal(encoder.get_input_embeddings().weight[ids], want[slot.key])


@pytest.mark.parametrize("model,architecture", [("tiny_sdxl", "stable-diffusion-xl-v1-base"),
                                                ("tiny_sd15", "stable-diffusion-v1")])
def test_every_file_carries_the_runs_real_metadata(tmp_path, model, architecture):
    import json

    from helpers import FAST, compose_cfg

    from dti.method.formats import file_metadata
    from dti.run.build import build_concept, build_subject, build_trainer

    cfg = compose_cfg([*FAST, f"model={model}", "kappa=0.002", "train.steps=7", "trigger=plushie-v2"])
    subject = build_subject(cfg)
    backbone, concept = build_concept(cfg, subject)
    try:
        trainer = build_trainer(cfg, tmp_path / "run", backbone, concept, subject)
        trainer.step = 3
        files = trainer.save_embeddings(tmp_path / "out")
    finally:
        concept.remove()
    names = sorted(f.name for f in files)
    assert all(n.startswith(("learned_embeds", "plushie-v2.")) for n in names) and len(names) == 3
    for file in files:
        meta = file_metadata(file) if file.suffix == ".safetensors" else torch.load(file, weights_only=True)["dti"]
        assert meta["format"] == "pt" and meta["modelspec.sai_model_spec"] == "1.0.0"
        assert meta["modelspec.architecture"] == f"{architecture}/textual-inversion"
        assert meta["modelspec.trigger_phrase"] == "plushie-v2" and meta["dti.method"] == "dti"
        assert json.loads(meta["dti.kappa"]) == 0.002 and (meta["dti.step"], meta["dti.steps"]) == ("3", "7")
        assert meta["dti.placeholder"] == "<toy>" and meta["dti.initializer"] == concept.initializer
        assert meta["dti.base_model"] == model and meta["dti.version"] == __import__("dti").__version__
        magnitudes = json.loads(meta["dti.magnitude"])
        for key, table in concept.tables.items():
            assert magnitudes[key] == pytest.approx(table.magnitude.tolist(), rel=1e-6)
            assert magnitudes[key] == pytest.approx(concept.embeddings()[key].norm(dim=-1).tolist(), rel=1e-5)
        assert all(isinstance(v, str) for v in meta.values())


def test_a_trigger_must_be_a_safe_file_stem_and_defaults_to_subject_dash_method():
    from helpers import FAST, compose_cfg

    from dti.run.build import build_subject, concept_trigger
    from dti.run.validate import check_concept

    cfg = compose_cfg([*FAST, "method=ti"])
    assert concept_trigger(cfg, build_subject(cfg)) == "toy-ti"
    check_concept(compose_cfg([*FAST, "trigger=my_toy-2.0"]))
    for bad in ("'../x'", "'two words'", "-x", "'a/b'"):
        with pytest.raises(InputError, match="trigger="):
            check_concept(compose_cfg([*FAST, f"trigger={bad}"]))

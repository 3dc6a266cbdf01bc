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

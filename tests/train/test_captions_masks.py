"""Per-image captions (data.captions=sidecar) and loss masks (data.masks): what the text encoder gets, which
side files are refused, the masked MSE against an independent computation, and masks that follow the latents'
crop and mirror."""

import contextlib
import math

import numpy as np
import pytest
import torch
from helpers import FAST, cli, compose_cfg, error_lines
from PIL import Image

from dti.backbones.base import Backbone
from dti.backbones.latents import mask_on_grid, masks_to_encode
from dti.backbones.objectives import mse
from dti.backbones.sdxl import time_ids
from dti.core.errors import InputError
from dti.method.method import ConceptMethod
from dti.offline.tiny import load_tiny_sdxl
from dti.run.build import build_concept, build_subject, build_trainer
from dti.run.identity import fingerprint, run_name
from dti.train.annotations import caption_template
from dti.train.data import folder_subject


def photos(folder, count=2, size=(32, 32), captions=None, alpha=None):
    """`count` photos, RGBA with `alpha` (the photo's index -> an (h, w) uint8 array), and their side files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        rgba = rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
        if alpha:
            rgba[..., 3] = alpha(i)
        Image.fromarray(rgba if alpha else rgba[..., :3], "RGBA" if alpha else "RGB").save(folder / f"{i:02d}.png")
        if captions:
            (folder / f"{i:02d}.txt").write_text(captions[i], encoding="utf-8")
    return folder


def left_half(i, size=(32, 32)):
    a = np.zeros((size[1], size[0]), np.uint8)
    a[:, : size[0] // 2] = 255
    return a


@pytest.mark.parametrize("text,expected", [
    ("a Toy on the grass", "a {0} on the grass"),  # the class word, any case, whole words only
    ("toys and a toy", "toys and a {0}"),
    ("{} beside {}, {x}", "{0} beside {0}, {{x}}"),  # every marker; other braces stay text
    ("a stuffed animal", "a stuffed animal"),
])
def test_a_caption_marks_the_concept_by_braces_or_the_class_word(text, expected):
    if expected == text:  # class word "toy" is not in it
        with pytest.raises(InputError, match=r"data\.captions='where.txt': names neither"):
            caption_template(text, "toy", "where.txt")
    else:
        assert caption_template(text, "toy", "where.txt") == expected
    assert caption_template("my stuffed  animal", "stuffed  animal", "x") == "my {0}"


def test_captions_reach_the_text_encoder_per_image(tmp_path, monkeypatch):
    folder = photos(tmp_path / "toy", captions=["a Toy on the grass\nsecond line", "\ufeff{} with braces {x}"])
    cfg = compose_cfg([*FAST, "data=folder", f"data.path={folder}", "data.class_word=toy", "data.captions=sidecar",
                       "train.random_flip=true", "train.batch_size=8"])
    subject = build_subject(cfg)
    backbone, concept = build_concept(cfg, subject, load_tiny_sdxl())
    try:
        trainer = build_trainer(cfg, tmp_path / "run", backbone, concept, subject)
        seen, real = [], type(backbone).tokenize
        monkeypatch.setattr(type(backbone), "tokenize", lambda self, p, **k: seen.append(list(p)) or real(self, p))
        prepared = trainer.prepare()
        expected = ["a <toy> on the grass", "<toy> with braces {x}"]
        assert seen == [expected]
        draw = trainer.draw(prepared)
        images = (draw["samples"] // 2).tolist()  # random_flip: samples 2i, 2i+1 are photo i and its mirror
        assert set(images) == {0, 1}
        wanted = real(backbone, [expected[i] for i in images])
        assert all(torch.equal(got, want) for got, want in zip(draw["ids"], wanted))
    finally:
        concept.remove()


def test_captions_are_part_of_the_run_identity(tmp_path):
    folder = photos(tmp_path / "toy", captions=["a toy", "a {}"])
    overrides = [*FAST, "data=folder", f"data.path={folder}", "data.class_word=toy", "data.captions=sidecar"]
    before = fingerprint(compose_cfg(overrides), build_subject(compose_cfg(overrides)))
    (folder / "01.txt").write_text("a {} in the snow")
    after = fingerprint(compose_cfg(overrides), build_subject(compose_cfg(overrides)))
    assert before["captions"] != after["captions"] and before["images"] == after["images"]
    assert "captions" not in fingerprint(compose_cfg(FAST), build_subject(compose_cfg(FAST)))  # templates
    assert run_name(["data.captions=sidecar", f"data.masks={folder}"]) == "data.captions=sidecar"


@pytest.mark.parametrize("problem,captions", [("missing", None), ("unmarked", ["a toy", "a cat"]),
                                              ("empty", ["a toy", "\n"])])
def test_a_bad_caption_file_is_one_line_naming_it(tmp_path, problem, captions):
    folder = photos(tmp_path / "photos" / "toy", captions=captions)
    if problem == "missing":
        (folder / "00.txt").write_text("a toy")  # 01.txt is missing
    code, _, err = cli("model=tiny_sdxl", "data=folder", f"data.path={folder}", "data.class_word=toy",
                       "data.captions=sidecar", "stage=[train]", cwd=tmp_path)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith(f"error: data.captions='{folder / '01.txt'}'"), lines
    assert not (tmp_path / "outputs").exists()


def test_alpha_and_folder_masks_give_the_same_mask(tmp_path):
    def blob(i):
        a = np.zeros((48, 32), np.uint8)
        a[5 + i:30, 3:20] = 255
        a[30:40, 10:12] = 128  # a soft edge
        return a

    folder = photos(tmp_path / "toy", size=(32, 48), alpha=blob)
    masks = tmp_path / "masks" / "toy"  # <masks>/<subject>/ for a folder of many subjects
    masks.mkdir(parents=True)
    Image.fromarray(blob(0)).save(masks / "00.png")
    Image.fromarray(blob(1)).resize((16, 24), Image.Resampling.NEAREST).resize((32, 48)).save(masks / "01.jpg")
    by_alpha = folder_subject(str(folder), "toy", masks="alpha").masks
    by_folder = folder_subject(str(folder), "toy", masks=str(tmp_path / "masks")).masks
    assert np.array_equal(np.asarray(by_alpha[0]), np.asarray(by_folder[0]))
    on_grid = [[mask_on_grid(m, torch.zeros(1, 4, 6, 4)) for m in masks_to_encode(ms, 32, True, "random", 8)]
               for ms in (by_alpha[:1], by_folder[:1])]
    assert all(torch.equal(a, b) for a, b in zip(*on_grid)) and on_grid[0][0].shape == (1, 1, 6, 4)
    Image.fromarray(blob(0)).resize((16, 24)).save(masks / "00.png")  # half size: resized to its photo
    assert np.abs(np.asarray(folder_subject(str(folder), "toy", masks=str(masks)).masks[0], float)
                  - blob(0)).mean() < 20
    for name, make, problem in [("00.png", lambda: Image.new("L", (32, 32), 255), "another shape"),
                                ("00.png", lambda: Image.new("L", (32, 48), 0), "black everywhere"),
                                ("01.jpg", None, "no mask for this photo")]:
        (masks / name).unlink()
        if make:
            make().save(masks / name)
        with pytest.raises(InputError, match=problem):
            folder_subject(str(folder), "toy", masks=str(masks))
        Image.fromarray(blob(0)).save(masks / name)
    opaque = photos(tmp_path / "opaque")
    with pytest.raises(InputError, match=r"data\.masks=.*00\.png.*no alpha channel"):
        folder_subject(str(opaque), "toy", masks="alpha")


def test_unknown_caption_sources_and_mask_settings_are_refused(tmp_path):
    folder = photos(tmp_path / "toy")
    with pytest.raises(InputError, match=r"data\.captions='kohya': choose one of templates, sidecar"):
        folder_subject(str(folder), "toy", captions="kohya", load=False)
    for masks in ("", "no/such/masks"):
        with pytest.raises(InputError, match=r"data\.masks=.*neither null, alpha nor an existing folder"):
            folder_subject(str(folder), "toy", masks=masks, load=False)


class PoolingBackbone(Backbone):
    """A stand-in whose 'VAE' averages 8x8 pixel blocks: its latents are the pixels on the latent grid."""

    device, latent_factor = torch.device("cpu"), 8

    def encode_pixels(self, pixels):
        return torch.nn.functional.avg_pool2d(pixels, 8), None


def test_masks_follow_the_latents_under_random_crop_and_flip():
    rng = np.random.default_rng(1)
    masks = []
    for w, h in ((96, 64), (64, 80)):
        a = np.zeros((h, w), np.uint8)
        for _ in range(3):  # an uneven blob: every crop and mirror shows it differently
            top, left = rng.integers(0, h - 16), rng.integers(0, w - 16)
            a[top:top + rng.integers(8, 16), left:left + rng.integers(8, 24)] = 255
        masks.append(Image.fromarray(a))
    photos_of_masks = [m.convert("RGB") for m in masks]  # each photo shows its own mask: the latents are the mask
    cache = PoolingBackbone().cache_latents(photos_of_masks, 32, flip=True, crop="random", masks=masks)
    generator, windows = torch.Generator().manual_seed(0), set()
    for _ in range(30):
        x0, extras = cache.draw(torch.arange(4), generator)
        assert torch.allclose(extras["loss_mask"][:, 0], (x0[:, 0] + 1) / 2, atol=1e-6)
        windows |= {(i, *c) for i, c in enumerate(extras["crop_top_left"].long().tolist())}
    assert len(windows) == 3 + 3 + 2 + 2  # every window of each photo and mirror (latents 4x6 and 5x4, window 4)


@pytest.fixture
def masked_draw():
    """The tiny SDXL, a text conditioning, and draw(masks): the (noisy, t, target, extras) of two 32-pixel photos
    (not resized) cached with `masks`, from one fixed seed."""
    backbone = load_tiny_sdxl()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8))
              for i in range(2)]
    cond = backbone.encode_text(backbone.tokenize(["a photo of a toy"] * 2))

    def draw(masks):
        cache = backbone.cache_latents(images, 32, flip=False, masks=masks)
        generator = torch.Generator().manual_seed(3)
        x0, extras = cache.draw(torch.tensor([0, 1]), generator)
        return (*backbone.objective(x0, generator), extras)

    return backbone, cond, draw


def test_an_all_ones_mask_is_exactly_the_unmasked_loss(masked_draw):
    backbone, cond, draw = masked_draw
    plain, ones = draw(None), draw([Image.new("L", (32, 32), 255)] * 2)
    assert torch.equal(ones[3]["loss_mask"], torch.ones(2, 1, 16, 16))
    with torch.no_grad():
        assert torch.equal(backbone.loss(*plain[:3], cond, plain[3]), backbone.loss(*ones[:3], cond, ones[3]))
    prediction, target = torch.randn(2, 2, 4, 1, 6, 5, generator=torch.Generator().manual_seed(0))  # Wan's frames
    for per_sample in (False, True):
        assert torch.equal(mse(prediction, target, per_sample), mse(prediction, target, per_sample,
                                                                    torch.ones(2, 1, 1, 6, 5)))


def test_a_half_mask_is_the_mean_error_over_the_masked_latents(masked_draw):
    backbone, cond, draw = masked_draw
    noisy, t, target, extras = draw([Image.fromarray(left_half(0))] * 2)
    expected_mask = torch.zeros(2, 1, 16, 16)
    expected_mask[..., :8] = 1  # the left half of the latent grid (2 pixels per latent)
    assert torch.equal(extras["loss_mask"], expected_mask)
    with torch.no_grad():
        prediction = backbone.unet(noisy, t, encoder_hidden_states=cond["prompt_embeds"], added_cond_kwargs={
            "text_embeds": cond["pooled"], "time_ids": time_ids(extras)}).sample
        masked = backbone.loss(noisy, t, target, cond, extras)
    error = (prediction.double() - target.double()).square()
    assert masked.item() == pytest.approx(error[..., :8].mean().item(), rel=1e-5)  # the left half only
    assert masked.item() != pytest.approx(error.mean().item(), rel=1e-3)
    soft = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))  # a soft mask weights its pixels
    weighted = (error * soft.double()).sum(dim=(1, 2, 3)) / (soft.double().sum(dim=(1, 2, 3)) * error.shape[1])
    assert mse(prediction, target, True, soft).double() == pytest.approx(weighted, rel=1e-5)


class NoAdapter:
    """Stands in for a LoRA at B = 0 (the model is its own reference), without building one."""

    def disabled(self):
        return contextlib.nullcontext()


def test_dco_compares_the_masked_losses_of_model_and_reference(tmp_path, monkeypatch):
    folder = photos(tmp_path / "toy", alpha=left_half)
    cfg = compose_cfg([*FAST, "data=folder", f"data.path={folder}", "data.class_word=toy", "data.masks=alpha"])
    subject, backbone = build_subject(cfg), load_tiny_sdxl()
    concept = build_concept(cfg, subject, backbone)[1]
    try:
        trainer = build_trainer(cfg, tmp_path / "run", backbone, concept, subject)
        trainer.method, trainer.adapter = ConceptMethod(objective="dco"), NoAdapter()
        draw = trainer.draw(trainer.prepare())
        mask = draw["extras"]["loss_mask"]  # the trainer caches the photos' alpha and draws it
        assert mask.shape == (2, 1, 16, 16) and torch.equal(mask[..., :8], torch.ones(2, 1, 16, 8))
        assert not mask[..., 8:].any()
        masks_seen, real = [], type(backbone).loss
        monkeypatch.setattr(type(backbone), "loss", lambda self, *a, **k: masks_seen.append(a[4].get(
            "loss_mask")) or real(self, *a, **k))
        dco = trainer.micro_loss((draw["noisy"], draw["t"], draw["target"]), backbone.encode_text(draw["ids"]),
                                 draw["extras"])
        assert len(masks_seen) == 2 and all(m is mask for m in masks_seen)  # the reference pass too
        assert dco.item() == pytest.approx(math.log(2), abs=1e-6)  # −log σ(−β·(L − L_ref)) at L = L_ref
    finally:
        concept.remove()

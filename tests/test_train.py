"""End-to-end training of the tiny SDXL in-process: outputs, frozen weights, magnitudes, resume, accumulation."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests_helpers import frozen_state

from dti.backbones.tiny import tiny_sdxl_path
from dti.trainer import Trainer

pytestmark = pytest.mark.slow


def check_outputs(run_dir, n_vectors=1, subject="toy"):
    emb = run_dir / "embeddings"
    clip_l, clip_g = load_file(emb / "learned_embeds.safetensors"), load_file(emb / "learned_embeds_2.safetensors")
    assert list(clip_l) == list(clip_g) == [f"<{subject}>"]
    assert clip_l[f"<{subject}>"].shape == (n_vectors, 32) and clip_l[f"<{subject}>"].dtype == torch.float32
    a1111 = load_file(emb / f"{subject}.safetensors")
    assert sorted(a1111) == ["clip_g", "clip_l"]
    assert torch.equal(a1111["clip_l"], clip_l[f"<{subject}>"])
    assert torch.equal(a1111["clip_g"], clip_g[f"<{subject}>"])
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"loss", "clip_l/norm", "clip_l/cos_prior", "clip_l/grad_norm", "clip_g/norm"} <= set(log[0])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000002.pt", "step_000004.pt"]
    assert json.loads((run_dir / "done.json").read_text())["step"] == 4
    return clip_l, clip_g, log


@pytest.mark.parametrize("optimizer,magnitude", [("rsgd", "mean"), ("adamw_proj", "mean"), ("adamw", "none")])
def test_each_optimizer_trains_only_the_concept_rows(train_run, optimizer, magnitude):
    from dti.backbones.tiny import load_tiny_sdxl

    reference = frozen_state(load_tiny_sdxl())
    done, trainer, run_dir = train_run(f"optimizer={optimizer}", f"magnitude={magnitude}")
    clip_l, _, log = check_outputs(run_dir)
    after = frozen_state(trainer.backbone)
    assert after.keys() == reference.keys()
    assert all(torch.equal(after[k], reference[k]) for k in reference)  # frozen weights bit-identical
    table = trainer.concept.tables["clip_l"]
    assert not torch.allclose(table.weight, table.prior)  # the concept moved
    if magnitude == "mean":
        vocab = next(v for k, v in reference.items() if k.startswith("clip_l") and "token_embedding" in k)
        assert torch.allclose(clip_l["<toy>"].norm(dim=-1), vocab.norm(dim=-1).mean(), rtol=1e-5)
        assert all(abs(r["clip_l/norm"] - vocab.norm(dim=-1).mean().item()) < 1e-5 for r in log)


@pytest.mark.parametrize("magnitude,extra", [("min", []), ("max", []), ("float", ["magnitude.value=2.5"]),
                                              ("init", [])])
def test_each_magnitude_fixes_the_norm(train_run, magnitude, extra):
    _, trainer, run_dir = train_run(f"magnitude={magnitude}", *extra)
    _, clip_g, _ = check_outputs(run_dir)
    vocab = trainer.backbone.encoders[1].input_embeddings().frozen.weight.detach()
    toy = trainer.backbone.tokenizer_2("toy", add_special_tokens=False).input_ids
    expected = {"min": vocab.norm(dim=-1).min(), "max": vocab.norm(dim=-1).max(), "float": torch.tensor(2.5),
                "init": vocab[toy].norm(dim=-1)[0]}[magnitude]
    assert torch.allclose(clip_g["<toy>"].norm(dim=-1), expected, rtol=1e-5)


def test_resume_after_interruption_is_bit_identical(train_run, tmp_path, monkeypatch):
    _, _, straight = train_run("train.steps=6", "optimizer.beta=0.9", run_dir=tmp_path / "straight")
    original = Trainer.validate

    def crash_at_step_5(self):  # interrupt after the step-4 checkpoint, mid-way to the end
        if self.step == 5:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "validate", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_run("train.steps=6", "optimizer.beta=0.9", "train.validation.every=1", "train.validation.enabled=true",
                  run_dir=tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "done.json").exists()
    monkeypatch.setattr(Trainer, "validate", original)
    _, trainer, resumed = train_run("train.steps=6", "optimizer.beta=0.9", run_dir=tmp_path / "resumed")
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        a, b = load_file(straight / "embeddings" / name), load_file(resumed / "embeddings" / name)
        assert torch.equal(a["<toy>"], b["<toy>"])
    steps = [json.loads(x)["step"] for x in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the interrupted run's step-5 line was dropped on resume


def test_completed_run_is_not_trained_again(train_run, tmp_path):
    done, _, run_dir = train_run()
    stamp = (run_dir / "embeddings" / "toy.safetensors").stat().st_mtime_ns
    again, trainer, _ = train_run(run_dir=run_dir)
    assert again == done and trainer.step == 4
    assert (run_dir / "embeddings" / "toy.safetensors").stat().st_mtime_ns == stamp


def test_gradient_accumulation_matches_one_big_batch(train_run, tmp_path):
    _, big, _ = train_run("train.batch_size=4", "train.grad_accum=1", run_dir=tmp_path / "big")
    _, acc, _ = train_run("train.batch_size=2", "train.grad_accum=2", run_dir=tmp_path / "acc")
    for key in ("clip_l", "clip_g"):
        assert torch.allclose(big.concept.tables[key].weight, acc.concept.tables[key].weight, atol=1e-5)


def test_validation_uses_loaded_components_without_reloading(train_run, monkeypatch):
    import diffusers
    import transformers

    _, trainer, run_dir = train_run("train.validation.enabled=true", "train.validation.every=2",
                                    "train.validation.seeds=[0,1]", "train.validation.prompts=['a photo of a {}']")
    grids = sorted(p.name for p in (run_dir / "validation").iterdir())
    assert grids == ["step_000002.png", "step_000004.png"]
    from PIL import Image
    assert Image.open(run_dir / "validation" / "step_000004.png").size == (64, 32)  # 2 seeds x 32 px

    def no_reload(*args, **kwargs):
        raise AssertionError("validation reloaded a component from disk")

    for cls in (diffusers.UNet2DConditionModel, diffusers.AutoencoderKL, diffusers.StableDiffusionXLPipeline,
                transformers.CLIPTextModel, transformers.CLIPTextModelWithProjection, transformers.CLIPTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", no_reload)
    first = trainer.validate()
    assert first.exists()
    assert tiny_sdxl_path().exists()

"""End-to-end training of the tiny SDXL in-process: outputs, frozen weights, magnitudes, resume, accumulation."""

import json

import pytest
import torch
from helpers import frozen_state
from safetensors.torch import load_file

from dti.offline.tiny import tiny_sdxl_path
from dti.train.trainer import Trainer

pytestmark = pytest.mark.slow


def check_outputs(run_dir, n_vectors=1, subject="toy"):
    emb = run_dir / "embeddings"
    clip_l, clip_g = load_file(emb / "learned_embeds.safetensors"), load_file(emb / "learned_embeds_2.safetensors")
    assert list(clip_l) == list(clip_g) == [f"<{subject}>"]
    assert clip_l[f"<{subject}>"].shape == (n_vectors, 32) and clip_l[f"<{subject}>"].dtype == torch.float32
    a1111 = load_file(emb / f"{subject}-dti.safetensors")  # named after the trigger, <subject>-<method>
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
    from dti.offline.tiny import load_tiny_sdxl

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
    stamp = (run_dir / "embeddings" / "toy-dti.safetensors").stat().st_mtime_ns
    again, trainer, _ = train_run(run_dir=run_dir)
    assert again == done and trainer.step == 4
    assert (run_dir / "embeddings" / "toy-dti.safetensors").stat().st_mtime_ns == stamp


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


def test_resume_keeps_this_runs_hyper_parameters_and_live_priors(train_run, tmp_path):
    import torch

    from dti.train.checkpoint import list_checkpoints

    train_run("train.steps=2", "kappa=5e-4", run_dir=tmp_path / "r")
    (tmp_path / "r" / "done.json").unlink()
    path = list_checkpoints(tmp_path / "r" / "checkpoints")[-1][1]
    state = torch.load(path, weights_only=True)
    for group in state["optimizer"]["param_groups"]:  # a checkpoint whose saved values differ from the config's
        group.update(lr=99.0, kappa=99.0)
    torch.save(state, path)
    _, trainer, _ = train_run("train.steps=4", "kappa=5e-4", run_dir=tmp_path / "r")
    for group, table in zip(trainer.optimizer.param_groups, trainer.concept.tables.values()):
        assert group["prior"] is table.prior  # not the checkpoint's CPU copy (a device mismatch on CUDA)
        assert (group["lr"], group["kappa"]) == (0.04, 5e-4)


def test_a_run_made_from_other_inputs_is_not_reused(train_run, tmp_path):
    from dti.core.errors import InputError

    train_run(run_dir=tmp_path / "r")
    with pytest.raises(InputError, match="train.resume.*other inputs.*images"):
        train_run("data.num_images=3", run_dir=tmp_path / "r")  # same directory, different photos
    with pytest.raises(InputError, match="train.resume.*other inputs.*optimizer.lr"):
        train_run("optimizer.lr=0.02", run_dir=tmp_path / "r")  # same directory, another learning rate
    with pytest.raises(InputError, match="train.resume.*other inputs.*initializer"):
        train_run("data.initializer=ball", run_dir=tmp_path / "r")


def test_resume_never_starts_over_and_logs_never_repeat(train_run, tmp_path):
    run = tmp_path / "r"
    train_run("train.steps=6", "train.checkpoint_every=3", run_dir=run)
    _, trainer, _ = train_run("train.steps=2", "train.checkpoint_every=100", "train.resume=never", run_dir=run)
    assert trainer.step == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002.pt"]
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_a_crash_before_the_first_checkpoint_leaves_no_duplicate_log_lines(train_run, tmp_path, monkeypatch):
    original = Trainer._log

    def crash_after_logging_step_3(self, *args):
        original(self, *args)
        if self.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_log", crash_after_logging_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_run("train.checkpoint_every=100", run_dir=tmp_path / "r")
    monkeypatch.setattr(Trainer, "_log", original)
    train_run("train.checkpoint_every=100", run_dir=tmp_path / "r")
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_unreadable_checkpoint_is_bad_input(train_run, tmp_path):
    from dti.core.errors import InputError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="train.resume"):
        train_run(f"train.resume={bad}")


def test_logged_norm_is_the_direction_after_the_step(train_run):
    _, trainer, run_dir = train_run("magnitude=init")
    last = json.loads((run_dir / "train_log.jsonl").read_text().splitlines()[-1])
    final = trainer.concept.tables["clip_l"]
    cos = torch.nn.functional.cosine_similarity(final.embeddings(), final.prior, dim=-1).mean().item()
    assert last["clip_l/cos_prior"] == pytest.approx(cos, abs=1e-6)

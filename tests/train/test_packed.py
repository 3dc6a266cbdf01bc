"""Packed training: concepts trained in one batch end where their separate runs end, each exactly its own steps."""

import json

import pytest
from helpers import FAST, compose_cfg


def test_packed_training_matches_separate_runs(tmp_path):
    """Two concepts trained in one batch end where their separate runs end (same draws, float tolerance)."""
    import torch
    from safetensors.torch import load_file

    from dti.run import job

    common = [*FAST, "train.steps=3", "train.checkpoint_every=2", "optimizer.beta=0.9", "optimizer.schedule=linear",
              "optimizer.warmup_steps=1"]  # each packed concept follows the curve of its own run
    for name in ("toy", "ball"):
        job.run(compose_cfg([*common, f"data.subject={name}"]), tmp_path / "separate" / name)
    packed = job.run(compose_cfg([*common, "data.subject=all", "pack=2"]), tmp_path / "packed" / "all")
    assert set(packed) == {"toy", "ball"}
    for name in ("toy", "ball"):
        for file in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
            a = load_file(tmp_path / "separate" / name / "embeddings" / file)[f"<{name}>"]
            b = load_file(tmp_path / "packed" / name / "embeddings" / file)[f"<{name}>"]
            assert torch.allclose(a, b, atol=1e-5), (name, file, (a - b).abs().max())
        separate = [json.loads(x) for x in (tmp_path / "separate" / name / "train_log.jsonl").read_text().splitlines()]
        together = [json.loads(x) for x in (tmp_path / "packed" / name / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in together] == [1, 2, 3]
        assert [r["lr"] for r in together] == [r["lr"] for r in separate] == pytest.approx([0.0, 0.04, 0.02])
        assert [r["loss"] for r in together] == pytest.approx([r["loss"] for r in separate], abs=1e-5)
        assert (tmp_path / "packed" / name / "checkpoints" / "step_000003.pt").is_file()


def test_packed_training_trains_each_concept_exactly_its_steps(tmp_path, monkeypatch):
    from dti.run import job
    from dti.train.trainer import Trainer

    steps = []
    original = Trainer.after_step
    monkeypatch.setattr(Trainer, "after_step",
                        lambda self, *a, **k: steps.append(self.subject) or original(self, *a, **k))
    common = [*FAST, "data.subject=all", "pack=2", "train.steps=3", "train.checkpoint_every=3"]
    job.run(compose_cfg([*common, "train.resume=never"]), tmp_path / "all")
    assert sorted(steps) == ["ball"] * 3 + ["toy"] * 3  # packed once; not cleared and retrained one by one
    steps.clear()
    (tmp_path / "toy" / "done.json").unlink()  # e.g. a crash after the last checkpoint, before done.json
    job.run(compose_cfg(common), tmp_path / "all")
    assert steps == []
    done = json.loads((tmp_path / "toy" / "done.json").read_text())
    logged = [json.loads(x)["step"] for x in (tmp_path / "toy" / "train_log.jsonl").read_text().splitlines()]
    assert done["step"] == 3 and logged == [1, 2, 3]


def test_packed_sana_matches_separate_runs(tmp_path):
    import torch
    from safetensors.torch import load_file

    from dti.run import job

    common = [*FAST, "model=tiny_sana", "train.steps=2"]
    for name in ("toy", "ball"):
        job.run(compose_cfg([*common, f"data.subject={name}"]), tmp_path / "separate" / name)
    job.run(compose_cfg([*common, "data.subject=all", "pack=2"]), tmp_path / "packed" / "all")
    for name in ("toy", "ball"):
        a = load_file(tmp_path / "separate" / name / "embeddings" / "learned_embeds.safetensors")[f"<{name}>"]
        b = load_file(tmp_path / "packed" / name / "embeddings" / "learned_embeds.safetensors")[f"<{name}>"]
        assert torch.allclose(a, b, atol=1e-5), name


COMMON = [*FAST, "train.steps=3", "train.checkpoint_every=3"]


def test_packed_concepts_validate_together_with_the_images_of_their_own_runs(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from dti.backbones.sdxl import SDXLBackbone
    from dti.run import job

    common = [*COMMON, "train.validation.enabled=true", "train.validation.every=2", "train.validation.resolution=32",
              "train.validation.prompts=['a photo of a {}']", "train.validation.seeds=[0,1]"]
    for name in ("toy", "ball"):
        job.run(compose_cfg([*common, f"data.subject={name}"]), tmp_path / "separate" / name)
    calls = []
    real = SDXLBackbone.generate
    monkeypatch.setattr(SDXLBackbone, "generate", lambda self, prompts, *a, **k: calls.append(len(prompts)) or
                        real(self, prompts, *a, **k))
    job.run(compose_cfg([*common, "data.subject=all", "pack=2"]), tmp_path / "packed" / "all")
    assert calls == [4, 4]  # steps 2 and 3 (final): both concepts' 2 images in one call each time
    for name in ("toy", "ball"):
        for step in (2, 3):
            file = f"validation/step_{step:06d}.png"
            a, b = (np.asarray(Image.open(tmp_path / run / name / file), dtype=int) for run in ("separate", "packed"))
            assert np.abs(a - b).max() <= 2, (name, step)  # the same images, up to rounding in a larger batch

"""Packing across a sweep: K configurations of one subject (and other subjects) train in one batch through one
loaded model, end where their separate runs end, and their jobs then only sample and score."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import FAST, ROOT, compose_cfg
from safetensors.torch import load_file

JOBS = {  # job directory name: overrides; two share the subject (and so the placeholder <toy>)
    "kappa0": ["data.subject=toy", "kappa=0"],
    "kappa1e-3": ["data.subject=toy", "kappa=1e-3", "optimizer.beta=0.9"],
    "ball": ["data.subject=ball", "train.steps=2"],
}


COMMON = [*FAST, "train.steps=3", "train.checkpoint_every=3"]


def embeddings(run_dir, placeholder):
    return [load_file(run_dir / "embeddings" / f)[placeholder]
            for f in ("learned_embeds.safetensors", "learned_embeds_2.safetensors")]


def test_a_sweep_packed_across_jobs_matches_separate_runs_with_one_model_load(tmp_path, monkeypatch):
    from dti.run import build, job
    from dti.run.job import JobContext
    from dti.sweep.packing import pack_sweep
    from dti.train.trainer import Trainer

    for name, overrides in JOBS.items():  # the reference: each job alone, no sharing, no packing
        job.run(compose_cfg([*COMMON, *overrides]), tmp_path / "separate" / name)

    loads, steps = [], []
    real_load = build._load_backbone
    monkeypatch.setattr(build, "_load_backbone", lambda cfg: loads.append(cfg.model.name) or real_load(cfg))
    real_after_step = Trainer.after_step
    monkeypatch.setattr(Trainer, "after_step", lambda self, *a, **k: steps.append(self.subject) or
                        real_after_step(self, *a, **k))
    jobs = [(compose_cfg([*COMMON, *overrides, "train.resume=never"]), tmp_path / "packed" / name)
            for name, overrides in JOBS.items()]
    context = JobContext(backbones=build.BackboneCache())
    pack_sweep(jobs, 3, context.backbones, context.launch_id)
    assert sorted(steps) == ["ball"] * 2 + ["toy"] * 6  # one pack: each concept exactly its own steps
    results = [job.run(cfg, run_dir, context) for cfg, run_dir in jobs]
    assert loads == ["tiny_sdxl"]  # one model load for the packing and all three jobs
    assert len(steps) == 8  # the jobs found their training complete: not retrained, even with resume=never
    assert all(r == {"trained_packed": True} for r in results)

    for name in JOBS:
        placeholder = "<ball>" if name == "ball" else "<toy>"
        separate, packed = tmp_path / "separate" / name, tmp_path / "packed" / name
        for a, b in zip(embeddings(separate, placeholder), embeddings(packed, placeholder)):
            assert torch.allclose(a, b, atol=1e-5), (name, (a - b).abs().max())
        done = json.loads((packed / "done.json").read_text())
        assert done["tokens"] == [placeholder]  # its own name, not the stand-in it trained under
        assert json.loads((packed / "status.json").read_text())["trained_packed"] is True
        separate_log = [json.loads(x)["loss"] for x in (separate / "train_log.jsonl").read_text().splitlines()]
        packed_log = [json.loads(x)["loss"] for x in (packed / "train_log.jsonl").read_text().splitlines()]
        assert packed_log == pytest.approx(separate_log, abs=1e-5)
    # the two toy runs differ (kappa and beta), so the packed result is not one concept written twice
    a, b = (embeddings(tmp_path / "packed" / n, "<toy>")[0] for n in ("kappa0", "kappa1e-3"))
    assert not torch.allclose(a, b)

    # a packed checkpoint resumes in a later, ordinary run: its token names are the concept's own
    cfg = compose_cfg([*COMMON, *JOBS["kappa1e-3"], "train.steps=5", "train.checkpoint_every=5"])
    steps.clear()
    assert job.run(cfg, tmp_path / "packed" / "kappa1e-3")["train"]["step"] == 5 and len(steps) == 2


def test_a_shared_backbone_refuses_a_leftover_concept(monkeypatch):
    import dti.offline.tiny as tiny
    from dti.run import build

    monkeypatch.setattr(tiny, "load_tiny", getattr(tiny.load_tiny, "__wrapped__", tiny.load_tiny))  # no test reuse

    cfg = compose_cfg(FAST)
    cache = build.BackboneCache()
    backbone = build.build_backbone(cfg, cache)
    concept = build.build_concept(cfg, build.build_subject(cfg), backbone)[1]
    with pytest.raises(RuntimeError, match="still carries a concept"):
        build.build_backbone(cfg, cache)
    concept.remove()
    assert build.build_backbone(cfg, cache) is backbone  # the same loaded model again, once it is clean
    assert build.build_backbone(cfg) is not backbone  # without the cache every call loads its own


def test_packing_skips_what_cannot_be_packed(tmp_path):
    from dti.run import build, job
    from dti.sweep.packing import pack_sweep

    bad = compose_cfg([*COMMON, "data.subject=nosuch"])  # bad input: left to its job, which reports it
    alone = compose_cfg([*COMMON, "data.subject=toy", "train.resolution=64"])  # its own batch shape: unpacked
    good = [compose_cfg([*COMMON, "data.subject=toy", f"kappa={k}"]) for k in (0, 1e-4)]
    jobs = [(bad, tmp_path / "bad"), (alone, tmp_path / "alone"), (good[0], tmp_path / "a"), (good[1], tmp_path / "b")]
    pack_sweep(jobs, 4, build.BackboneCache(), "launch")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "alone").exists()
    assert (tmp_path / "a" / "done.json").is_file() and (tmp_path / "b" / "done.json").is_file()
    with pytest.raises(Exception, match="nosuch"):
        job.run(bad, tmp_path / "bad")


@pytest.mark.slow
def test_launcher_packs_a_sweep_per_model_then_samples_and_scores_each_job(tmp_path):
    prompts = tmp_path / "one.txt"
    prompts.write_text("a photo of a {}\n")
    # Hydra varies the last value fastest (sdxl, sana, sdxl, sana): the launcher still loads each model once;
    # the run directories are named by job number, which the packing pass must know before the jobs run
    args = ["-m", "kappa=0,1e-4", "model=tiny_sdxl,tiny_sana", "data=synthetic", f"data.cache_dir={tmp_path / 'im'}",
            "data.subject=toy", "train.steps=2", "train.batch_size=1", "train.validation.enabled=false",
            "prompts=file", f"prompts.path={prompts}", "evaluator=tiny", "sampler.seeds=[0]", "pack=2",
            "sweep_name=t3", "hydra.sweep.subdir=job${hydra.job.num}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert log.count("training 2 concepts packed") == 2, log[-3000:]
    assert log.count("loading tiny_sdxl") == 1 and log.count("loading tiny_sana") == 1, log[-3000:]
    root = tmp_path / "multirun" / "t3"
    for number, model in enumerate(["tiny_sdxl", "tiny_sana", "tiny_sdxl", "tiny_sana"]):
        job = root / f"job{number}"
        assert f"model={model}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert json.loads((job / "done.json").read_text())["step"] == 2
        assert json.loads((job / "samples" / "one" / "metrics.json").read_text())["num_images"] == 1
        assert json.loads((job / "status.json").read_text())["trained_packed"] is True
    assert (root / "report.md").is_file()


def test_packing_plans_each_run_directory_once_and_survives_bad_jobs_and_items(tmp_path, monkeypatch):
    from dti.run import build, job
    from dti.sweep.packing import pack_sweep
    from dti.train.trainer import Trainer

    steps = []
    real_after_step = Trainer.after_step
    monkeypatch.setattr(Trainer, "after_step", lambda self, *a, **k: steps.append(self.run_dir.name) or
                        real_after_step(self, *a, **k))
    shared = tmp_path / "shared"  # two jobs whose settings differ only outside the directory name
    broken = tmp_path / "broken"  # its only checkpoint is unreadable: it starts over, packed with the others
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "step_000002.pt").write_bytes(b"not a checkpoint")
    jobs = [(compose_cfg([*COMMON, "data.subject=toy", "train.checkpoint_every=1"]), shared),
            (compose_cfg([*COMMON, "data.subject=toy", "train.checkpoint_every=3"]), shared),
            (compose_cfg([*COMMON, "data.subject=toy", "prompts=file", "prompts.path=/no/such/file",
                          "stage=[train,sample]"]), tmp_path / "bad"),
            (compose_cfg([*COMMON, "data.subject=toy", "kappa=0"]), broken),
            (compose_cfg([*COMMON, "data.subject=ball"]), tmp_path / "ball")]
    pack_sweep(jobs, 4, build.BackboneCache(), "launch")
    assert sorted(steps) == ["ball"] * 3 + ["broken"] * 3 + ["shared"] * 3  # trained once each; "bad" left out
    assert not (tmp_path / "bad").exists() and (broken / "done.json").exists()
    with pytest.raises(Exception, match="no/such/file"):  # the bad job reports its own error when it runs
        job.run(jobs[2][0], tmp_path / "bad")


@pytest.mark.slow
def test_packed_concepts_log_to_their_own_wandb_runs(tmp_path, monkeypatch):
    from dti.run import job

    monkeypatch.setenv("WANDB_MODE", "offline")
    job.run(compose_cfg([*COMMON, "data.subject=all", "pack=2", "logger=wandb"]), tmp_path / "all")
    from helpers import read_wandb_records

    ids = {}
    for name in ("toy", "ball"):  # each concept's training history in a run of its own
        records = [r for f in (tmp_path / name / "wandb").glob("offline-run-*/*.wandb") for r in read_wandb_records(f)]
        ids[name] = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
        losses = [i for r in records if r.WhichOneof("record_type") == "history" for i in r.history.item
                  if (i.key or "/".join(i.nested_key)) == "train/loss"]
        assert len(ids[name]) == 1 and len(losses) == 3, (name, ids[name], len(losses))
    assert ids["toy"] != ids["ball"]

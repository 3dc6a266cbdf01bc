"""Sweeps: GPU claiming, a real joblib sweep on CPU (failure injection, skip-done), the report, experiment configs."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import FAST, ROOT, compose_cfg
from omegaconf import OmegaConf


def test_gpu_claims_are_exclusive_and_released_on_exit(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from dti.gpu_pool import claim_gpu
        try:
            gpu = claim_gpu(["0", "1"], Path({str(tmp_path)!r}), timeout=float(sys.argv[1]), poll=0.05)
        except TimeoutError:
            print("timeout", flush=True); sys.exit(0)
        print(gpu, os.environ["CUDA_VISIBLE_DEVICES"], claim_gpu() == gpu, flush=True)
        time.sleep(float(sys.argv[2]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holders = [subprocess.Popen([sys.executable, "-c", script, "5", "30"], stdout=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    claims = sorted(h.stdout.readline().split() for h in holders)
    assert claims == [["0", "0", "True"], ["1", "1", "True"]]  # distinct GPUs, env set, claimed once
    third = subprocess.run([sys.executable, "-c", script, "0.3", "0"], capture_output=True, text=True, env=env)
    assert third.stdout.strip() == "timeout"  # both busy
    holders[1].kill()
    holders[1].wait()
    freed = subprocess.run([sys.executable, "-c", script, "5", "0"], capture_output=True, text=True, env=env)
    assert freed.stdout.split()[0] in ("0", "1")  # the killed holder's lock was released by the OS
    holders[0].kill()


def test_no_gpu_means_no_claim(tmp_path, monkeypatch):
    from dti import gpu_pool

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_pool.visible_gpus() == [] and gpu_pool.num_gpus() == 1
    assert gpu_pool.claim_gpu(locks=tmp_path) is None


def launch(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_joblib_sweep_injected_failure_skip_done_and_report(tmp_path):
    prompts = tmp_path / "two.txt"
    prompts.write_text("a photo of a {}\na {} on the beach\n")
    images = tmp_path / "images"
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=tiny_sdxl", "data=synthetic",
             f"data.cache_dir={images}", "data.subject=toy,ball", "optimizer=rsgd,adamw_proj", "kappa=0,1e-4",
             "prompts=file", f"prompts.path={prompts}", "evaluator=tiny", "sampler.seeds=[0,1]", "train.steps=2",
             "train.batch_size=1", "train.validation.enabled=false", "sweep_name=grid"]
    # inject a failure: one of ball's photos is corrupt, so its 4 jobs fail and the toy jobs go on
    from dti.demo import synthetic_subject
    synthetic_subject(subject="ball", subjects={"ball": {"class_word": "ball"}}, cache_dir=str(images))
    corrupt = images / "synthetic_ball_4" / "02.png"
    corrupt.write_bytes(b"\x89PNG broken")
    first = launch(*sweep, cwd=tmp_path)
    assert first.returncode != 0 and "4 job(s) failed" in first.stderr, first.stderr[-3000:]
    root = tmp_path / "multirun" / "grid"
    status = {p.parent.relative_to(root).as_posix(): json.loads(p.read_text())["status"]
              for p in root.rglob("status.json")}
    assert sorted(status.values()) == ["done"] * 4 + ["failed"] * 4
    assert all(v == "failed" for k, v in status.items() if k.endswith("/ball"))
    toy_metrics = {p: p.stat().st_mtime_ns for p in root.rglob("toy/samples/two/metrics.json")}
    assert len(toy_metrics) == 4

    corrupt.unlink()  # repaired (regenerated on the next run): the same command redoes only the failed jobs
    second = launch(*sweep, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in toy_metrics} == toy_metrics
    assert len(list(root.rglob("samples/two/metrics.json"))) == 8

    all_metrics = {p: p.stat().st_mtime_ns for p in root.rglob("samples/two/metrics.json")}
    third = launch(*sweep, cwd=tmp_path)  # everything complete: every job is skipped
    assert third.returncode == 0 and {p: p.stat().st_mtime_ns for p in all_metrics} == all_metrics

    # the report: one row per optimizer x kappa, mean over the two subjects, no paper values for these rows
    rows = {r["method"]: r for r in csv.DictReader((root / "report.csv").open())}
    assert len(rows) == 4 and (root / "report.png").is_file()
    label = next(r for r in rows if "kappa=0.0001" in r and "optimizer=rsgd" in r)  # a row per job's overrides
    assert "model=" not in label  # the backbone is the column
    runs = [json.loads(p.read_text()) for p in root.glob("kappa=0.0001,*optimizer=rsgd*/*/samples/two/metrics.json")]
    assert len(runs) == 2
    assert float(rows[label]["tiny_sdxl/image"]) == pytest.approx(sum(r["image_sim"] for r in runs) / 2)
    assert float(rows[label]["tiny_sdxl/text"]) == pytest.approx(sum(r["text_sim_official"] for r in runs) / 2)
    assert rows[label]["tiny_sdxl/subjects"] == "2" and rows[label]["tiny_sdxl/image_paper"] == ""
    md = (root / "report.md").read_text()
    assert "—" in md and "| toy |" in md.replace(" toy ", " toy ")


def test_several_subjects_share_one_model_load_and_fail_independently(tmp_path, monkeypatch):
    from dti import train
    from dti.train import SubjectsFailed

    loads = []
    real = train.build_backbone
    monkeypatch.setattr(train, "build_backbone", lambda cfg: loads.append(1) or real(cfg))
    cfg = compose_cfg([*FAST, "data.subject=all"])
    result = train.run(cfg, tmp_path / "all")
    assert len(loads) == 1 and set(result) == {"toy", "ball"}
    for name in ("toy", "ball"):
        assert json.loads((tmp_path / name / "status.json").read_text())["status"] == "done"
        assert (tmp_path / name / "embeddings" / f"{name}.safetensors").is_file()
    again = train.run(cfg, tmp_path / "all")  # complete: skipped without loading anything
    assert again == {"toy": {"skipped": True}, "ball": {"skipped": True}} and len(loads) == 1

    original = train.Job.run_subject

    def fail_on_ball(self, subject, *args):
        if subject.name == "ball":
            raise RuntimeError("injected")
        return original(self, subject, *args)

    monkeypatch.setattr(train.Job, "run_subject", fail_on_ball)
    with pytest.raises(SubjectsFailed, match="1 of 2 subjects failed: ball"):
        train.run(compose_cfg([*FAST, "data.subject=all", "train.steps=5"]), tmp_path / "b" / "all")
    assert json.loads((tmp_path / "b" / "ball" / "status.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "b" / "toy" / "status.json").read_text())["status"] == "done"


GOLDEN = {  # method: (optimizer, magnitude, m* value or None, kappa used by the optimizer, lr, weight decay)
    "dti": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
    "ti": ("AdamW", "Free", None, 0.0, 0.02, 0.01),
    "t3_adamw_proj": ("ProjectedAdamW", "VocabNorm:mean", None, 1e-4, 2e-3, 0.0),
    "t3_rsgd_min": ("RiemannianSGD", "VocabNorm:min", None, 1e-4, 0.04, None),
    "t3_rsgd_float5": ("RiemannianSGD", "Fixed", 5.0, 1e-4, 0.04, None),
    "t3_rsgd_kappa0": ("RiemannianSGD", "VocabNorm:mean", None, 0.0, 0.04, None),
    "t3_rsgd_kappa5e-4": ("RiemannianSGD", "VocabNorm:mean", None, 5e-4, 0.04, None),
    "t3_rsgd_mean": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
    "fig16_init": ("RiemannianSGD", "InitializerNorm", None, 1e-4, 0.04, None),
    "fig16_mean": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
}


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_method_rows_match_the_paper_hyper_parameters(method):
    cfg = compose_cfg([f"+method={method}", "model=sdxl"])
    o, m = cfg.optimizer, cfg.magnitude
    magnitude = m._target_.rsplit(".", 1)[-1] + (f":{m.statistic}" if "statistic" in m else "")
    got = (o._target_.rsplit(".", 1)[-1], magnitude, m.get("value"), o.kappa, o.lr, o.get("weight_decay"))
    assert got == GOLDEN[method]
    assert cfg.method and (cfg.train.steps, cfg.train.batch_size, cfg.train.resolution) == (400, 4, 768)


def test_table_experiments_compose_with_their_sweeps():
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    expected = {
        "table2": {"+method": "ti,dti", "model": "sdxl,sana_1.6b,sana_4.8b"},
        "table3": {"+method": "t3_adamw_proj,t3_rsgd_min,t3_rsgd_float5,t3_rsgd_kappa0,t3_rsgd_kappa5e-4,"
                              "t3_rsgd_mean"},
        "fig16": {"+method": "fig16_init,fig16_mean"},
        "table6": {"+method": "table6_recommended,dti"},
    }
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name, params in expected.items():
            cfg = compose("launch", overrides=[f"+experiment={name}"], return_hydra_config=True)
            assert OmegaConf.to_container(cfg.hydra.sweeper.params) == params
            assert cfg.sweep_name == name and cfg.data.subject == "all" and cfg.prompts._target_.endswith(
                "dreambooth_prompts")
        for launcher, target in (("gpu_pool", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                                 ("submitit_local", "LocalLauncher")):
            cfg = compose("launch", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        slurm = compose("launch", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
        assert (slurm.gpus_per_node, slurm.array_parallelism, slurm.timeout_min, slurm.max_num_timeout) == \
            (1, 16, 720, 10)


def test_paper_numbers_are_data_with_citations():
    from dti.report import load_paper

    paper = load_paper()
    assert paper[("DTI", "sdxl")]["image"] == 0.450 and paper[("DTI", "sdxl")]["cite"] == "Table 2, DTI"
    assert paper[("RSGD / mean / 5e-4", "sdxl")]["text"] == 0.688
    labels = {compose_cfg([f"+method={m}"]).method for m in GOLDEN}
    assert {row for row, _ in paper} <= labels | {"TI-rescaled", "CrossInit"}


def test_report_cli_on_an_empty_folder(tmp_path):
    from dti.report import main

    assert main([str(tmp_path)]) == 0 and (tmp_path / "report.md").is_file()
    assert main([str(tmp_path / "missing")]) == 2


def test_packed_training_matches_separate_runs(tmp_path):
    """Two concepts trained in one batch end where their separate runs end (same draws, float tolerance)."""
    import torch
    from safetensors.torch import load_file

    from dti import train

    common = [*FAST, "train.steps=3", "train.checkpoint_every=2", "optimizer.beta=0.9"]
    for name in ("toy", "ball"):
        train.run(compose_cfg([*common, f"data.subject={name}"]), tmp_path / "separate" / name)
    packed = train.run(compose_cfg([*common, "data.subject=all", "train.pack=2"]), tmp_path / "packed" / "all")
    assert set(packed) == {"toy", "ball"}
    for name in ("toy", "ball"):
        for file in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
            a = load_file(tmp_path / "separate" / name / "embeddings" / file)[f"<{name}>"]
            b = load_file(tmp_path / "packed" / name / "embeddings" / file)[f"<{name}>"]
            assert torch.allclose(a, b, atol=1e-5), (name, file, (a - b).abs().max())
        separate = [json.loads(x) for x in (tmp_path / "separate" / name / "train_log.jsonl").read_text().splitlines()]
        together = [json.loads(x) for x in (tmp_path / "packed" / name / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in together] == [1, 2, 3]
        assert [r["loss"] for r in together] == pytest.approx([r["loss"] for r in separate], abs=1e-5)
        assert (tmp_path / "packed" / name / "checkpoints" / "step_000003.pt").is_file()


def test_report_keeps_prompt_sets_apart_and_averages_per_subject(tmp_path):
    from dti.report import write_report

    def metrics(job, subject, prompt_set, image, text):
        path = tmp_path / job / subject / "samples" / prompt_set / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"subject": subject, "image_sim": image, "text_sim": 0.1,
                                    "text_sim_official": text, "seeds": [0, 1, 2, 3],
                                    "config": {"method": "DTI", "model": {"name": "sdxl"},
                                               "sampler": {"rescale": "none"}}}))

    metrics("a", "dog", "dreambooth", 0.40, 0.5)
    metrics("a", "dog", "complex", 0.30, 0.5)
    metrics("a", "cat", "dreambooth", 0.60, 0.5)
    metrics("b", "cat", "dreambooth", 0.80, 0.5)  # cat scored by a second run: averaged once, and warned of
    summary = write_report(tmp_path)
    dreambooth = summary["cells"][("DTI [dreambooth]", "sdxl")]
    assert dreambooth["image"] == pytest.approx((0.40 + (0.60 + 0.80) / 2) / 2) and dreambooth["subjects"] == 2
    assert summary["cells"][("DTI [complex]", "sdxl")]["image"] == pytest.approx(0.30)
    assert len(summary["warnings"]) == 1 and "cat" in summary["warnings"][0]
    md = (tmp_path / "report.md").read_text()
    assert "| DTI [dreambooth] | 0.550 (0.450, +0.100) [2×4]" in md  # the paper's value only beside DreamBooth
    assert "| DTI [complex] | 0.300 (—, —) [1×4]" in md


def test_table6_baseline_row_keeps_the_class_word(tmp_path):
    words = tmp_path / "words.json"
    words.write_text('{"dog": "puppy"}')
    recommended = compose_cfg(["+method=table6_recommended", f"++recommended_words={words}"])
    baseline = compose_cfg(["+method=dti", f"++recommended_words={words}"])
    assert recommended.data.initializer_map == str(words) and baseline.data.initializer_map is None


def test_image_sizes_are_checked_for_the_whole_job_before_any_subject(tmp_path):
    from dti import train
    from dti.errors import InputError

    with pytest.raises(InputError, match="sampler.height"):
        train.run(compose_cfg([*FAST, "data.subject=all", "stage=[train,sample]", "prompts=complex",
                               "sampler.height=35"]), tmp_path / "all")
    assert not any((tmp_path / name).exists() for name in ("toy", "ball"))


def test_a_failed_add_concept_leaves_the_backbone_untouched():
    from dti.backbones.tiny import load_tiny_sdxl
    from dti.concept import add_concept
    from dti.magnitude import VocabNorm

    backbone = load_tiny_sdxl()
    before = [(s.tokenizer, s.input_embeddings()) for s in backbone.encoders]
    calls = []

    def failing_on_second_encoder(vocab, init, special):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return VocabNorm()(vocab, init, special)

    with pytest.raises(RuntimeError):
        add_concept(backbone, "<toy>", "toy", failing_on_second_encoder)
    assert [(s.tokenizer, s.input_embeddings()) for s in backbone.encoders] == before
    assert len(backbone.encoders[0].tokenizer) == 49408


def test_resume_never_retrains_a_complete_run(tmp_path):
    from dti import train

    run = tmp_path / "toy"
    train.run(compose_cfg(FAST), run)
    stamp = (run / "done.json").stat().st_mtime_ns
    again = train.run(compose_cfg([*FAST, "train.resume=never"]), run)
    assert "train" in again and (run / "done.json").stat().st_mtime_ns != stamp


def test_nested_concepts_keep_gemmas_embedding_scale():
    import torch

    from dti.backbones.tiny import load_tiny
    from dti.concept import add_concept
    from dti.magnitude import Fixed

    backbone = load_tiny("dti.backbones.sana.SanaBackbone", "tiny_sana")
    scale = backbone.encoders[0].input_embeddings().embed_scale
    assert scale is not None and float(scale) > 1  # Gemma-2 scales its lookup by sqrt(hidden) in transformers 5
    first = add_concept(backbone, "<a>", "toy", Fixed(2.0))
    second = add_concept(backbone, "<b>", "ball", Fixed(2.0))
    lookup = backbone.encoders[0].input_embeddings()
    ids = torch.tensor([[first_id(backbone, "<a>"), first_id(backbone, "<b>")]])
    rows = lookup(ids)[0]
    assert torch.allclose(rows.norm(dim=-1), torch.full((2,), 2.0 * float(scale)), rtol=1e-5)
    second.remove()
    first.remove()
    assert type(backbone.encoders[0].input_embeddings()).__name__ != "ConceptEmbedding"


def first_id(backbone, token):
    return backbone.encoders[0].tokenizer.convert_tokens_to_ids(token)


def test_packed_training_trains_each_concept_exactly_its_steps(tmp_path, monkeypatch):
    from dti import train
    from dti.trainer import Trainer

    steps = []
    original = Trainer.after_step
    monkeypatch.setattr(Trainer, "after_step",
                        lambda self, *a, **k: steps.append(self.subject) or original(self, *a, **k))
    common = [*FAST, "data.subject=all", "train.pack=2", "train.steps=3", "train.checkpoint_every=3"]
    train.run(compose_cfg([*common, "train.resume=never"]), tmp_path / "all")
    assert sorted(steps) == ["ball"] * 3 + ["toy"] * 3  # packed once; not cleared and retrained one by one
    steps.clear()
    (tmp_path / "toy" / "done.json").unlink()  # e.g. a crash after the last checkpoint, before done.json
    train.run(compose_cfg(common), tmp_path / "all")
    assert steps == []
    done = json.loads((tmp_path / "toy" / "done.json").read_text())
    logged = [json.loads(x)["step"] for x in (tmp_path / "toy" / "train_log.jsonl").read_text().splitlines()]
    assert done["step"] == 3 and logged == [1, 2, 3]


def test_packed_sana_matches_separate_runs(tmp_path):
    import torch
    from safetensors.torch import load_file

    from dti import train

    common = [*FAST, "model=tiny_sana", "train.steps=2"]
    for name in ("toy", "ball"):
        train.run(compose_cfg([*common, f"data.subject={name}"]), tmp_path / "separate" / name)
    train.run(compose_cfg([*common, "data.subject=all", "train.pack=2"]), tmp_path / "packed" / "all")
    for name in ("toy", "ball"):
        a = load_file(tmp_path / "separate" / name / "embeddings" / "learned_embeds.safetensors")[f"<{name}>"]
        b = load_file(tmp_path / "packed" / name / "embeddings" / "learned_embeds.safetensors")[f"<{name}>"]
        assert torch.allclose(a, b, atol=1e-5), name

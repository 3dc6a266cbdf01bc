"""A job in-process: several subjects with one model load, failures per subject, checks before any subject runs."""

import json

import pytest
from helpers import FAST, compose_cfg


def test_several_subjects_share_one_model_load_and_fail_independently(tmp_path, monkeypatch):
    from dti.run import job
    from dti.run.job import SubjectsFailed

    loads = []
    real = job.build_backbone
    monkeypatch.setattr(job, "build_backbone", lambda cfg, cache=None: loads.append(1) or real(cfg, cache))
    cfg = compose_cfg([*FAST, "data.subject=all"])
    result = job.run(cfg, tmp_path / "all")
    assert len(loads) == 1 and set(result) == {"toy", "ball"}
    for name in ("toy", "ball"):
        assert json.loads((tmp_path / name / "status.json").read_text())["status"] == "done"
        assert (tmp_path / name / "embeddings" / f"{name}-dti.safetensors").is_file()
    again = job.run(cfg, tmp_path / "all")  # complete: skipped without loading anything
    assert again == {"toy": {"skipped": True}, "ball": {"skipped": True}} and len(loads) == 1

    original = job.Job.run_subject

    def fail_on_ball(self, subject, *args):
        if subject.name == "ball":
            raise RuntimeError("injected")
        return original(self, subject, *args)

    monkeypatch.setattr(job.Job, "run_subject", fail_on_ball)
    with pytest.raises(SubjectsFailed, match="1 of 2 subjects failed: ball"):
        job.run(compose_cfg([*FAST, "data.subject=all", "train.steps=5"]), tmp_path / "b" / "all")
    assert json.loads((tmp_path / "b" / "ball" / "status.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "b" / "toy" / "status.json").read_text())["status"] == "done"


def test_image_sizes_are_checked_for_the_whole_job_before_any_subject(tmp_path):
    from dti.core.errors import InputError
    from dti.run import job

    with pytest.raises(InputError, match="sampler.height"):
        job.run(compose_cfg([*FAST, "data.subject=all", "stage=[train,sample]", "prompts=complex",
                               "sampler.height=35"]), tmp_path / "all")
    assert not any((tmp_path / name).exists() for name in ("toy", "ball"))


def test_resume_never_retrains_a_complete_run(tmp_path):
    from dti.run import job

    run = tmp_path / "toy"
    job.run(compose_cfg(FAST), run)
    stamp = (run / "done.json").stat().st_mtime_ns
    again = job.run(compose_cfg([*FAST, "train.resume=never"]), run)
    assert "train" in again and (run / "done.json").stat().st_mtime_ns != stamp

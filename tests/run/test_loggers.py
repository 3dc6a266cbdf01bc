"""logger=wandb offline: the run, its tags, scalars, validation grids and evaluation table, read back from the
.wandb file."""

import pytest
from helpers import FAST, compose_cfg, read_wandb_records


@pytest.mark.slow
def test_wandb_logger_runs_offline_and_records_scalars(tmp_path, monkeypatch):
    from dti.run import job

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no key configured -> offline by itself
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run_dir = tmp_path / "outputs" / "model=tiny_sdxl" / "toy"
    done = job.run(compose_cfg([*FAST, "logger=wandb", "logger.project=dti-test", "sweep_name=grid",
                                  "stage=[train,sample,evaluate]", "prompts=complex", "evaluator=tiny",
                                  "sampler.seeds=[0]", "train.validation.enabled=true"]), run_dir)
    assert done["train"]["step"] == 4
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = read_wandb_records(next(runs[0].glob("*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "dti-test" and run.display_name == "outputs/model=tiny_sdxl/toy"
    assert run.job_type == "train+sample+evaluate" and run.run_group == "grid"
    assert list(run.tags) == ["model=tiny_sdxl", "method=dti", "optimizer=RiemannianSGD", "magnitude=mean",
                              "kappa=0.0001"]
    config_keys = {item.key for item in run.config.update} | {
        item.key for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert {"model", "optimizer", "magnitude", "kappa", "train"} <= config_keys
    history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert {"train/loss", "train/clip_l/norm", "train/clip_g/cos_prior"} <= set(history[0])
    logged = {k: v for h in history for k, v in h.items()}
    assert logged["validation/_type"] == '"image-file"'  # the validation grid
    assert logged["evaluation/samples/_type"] == '"table-file"' and logged["evaluation/samples/nrows"] == "22"
    summary = {i.key or "/".join(i.nested_key) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert {"eval/image_sim", "eval/text_sim", "eval/text_sim_official"} <= summary
    assert "exit" in kinds  # wandb.finish() ran


def test_tensorboard_logger_writes_the_scalars_the_run_logged(tmp_path):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dti.run import job

    run_dir = tmp_path / "run"
    job.run(compose_cfg([*FAST, "logger=tensorboard", "optimizer.schedule=linear", "optimizer.warmup_steps=2",
                         "train.validation.enabled=true", "train.validation.every=2"]), run_dir)
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for key in ("loss", "lr", "clip_l/norm", "clip_g/grad_norm"):
        got = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert got == [(r["step"], pytest.approx(r[key], rel=1e-6, abs=1e-12)) for r in logged], key
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([0.0, 0.02, 0.04, 0.02])
    assert [e.step for e in events.Images("validation")] == [2, 4]  # the grids of step 2 and the final one


def test_tensorboard_missing_is_one_line_before_anything_runs(monkeypatch):
    import sys

    from dti.core.errors import InputError
    from dti.run.validate import validate_config

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: find_spec gives None
    with pytest.raises(InputError, match="logger='tensorboard'.*pip install tensorboard"):
        validate_config(compose_cfg([*FAST, "logger=tensorboard"]))

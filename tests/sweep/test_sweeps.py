"""A real sweep on CPU: joblib workers, an injected failure, skip-done, and the report at the end."""

import csv
import json
import os

import pytest
from helpers import cli


@pytest.mark.slow
def test_joblib_sweep_injected_failure_skip_done_and_report(tmp_path):
    prompts = tmp_path / "two.txt"
    prompts.write_text("a photo of a {}\na {} on the beach\n")
    images = tmp_path / "images"
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=tiny_sdxl", "data=synthetic",
             f"data.cache_dir={images}", "data.subject=toy,ball", "kappa=1e-4", "prompts=file",
             f"prompts.path={prompts}", "evaluator=tiny", "sampler.seeds=[0]", "train.steps=2", "train.batch_size=1",
             "train.validation.enabled=false", "sweep_name=grid"]
    # inject a failure: one of ball's photos is corrupt, so its job fails and the toy job goes on in the other worker
    from dti.offline.synthetic import synthetic_subject
    synthetic_subject(subject="ball", subjects={"ball": {"class_word": "ball"}}, cache_dir=str(images))
    corrupt = images / "synthetic_ball_4" / "02.png"
    corrupt.write_bytes(b"\x89PNG broken")
    code, _, err = cli(*sweep, cwd=tmp_path)  # this process; the jobs run in joblib's worker processes
    assert code == 1 and "1 job(s) failed" in err, err[-3000:]
    root = tmp_path / "multirun" / "grid"
    status = {p.parent.relative_to(root).as_posix(): json.loads(p.read_text())["status"]
              for p in root.rglob("status.json")}
    assert sorted(status.values()) == ["done", "failed"]
    assert [v for k, v in status.items() if k.endswith("/ball")] == ["failed"]
    toy_metrics = {p: p.stat().st_mtime_ns for p in root.rglob("toy/samples/two/metrics.json")}
    assert len(toy_metrics) == 1
    (toy_lock,) = root.glob("*/toy/.dti.lock")  # the job trained in a worker process, not in this one
    assert toy_lock.read_text().startswith("process ") and f"process {os.getpid()} " not in toy_lock.read_text()

    corrupt.unlink()  # repaired (regenerated on the next run): the same command redoes only the failed job
    code, _, err = cli(*sweep, cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert {p: p.stat().st_mtime_ns for p in toy_metrics} == toy_metrics
    assert len(list(root.rglob("samples/two/metrics.json"))) == 2

    # the report: one row (the sweep's common settings do not name it), the mean over the two subjects, and no
    # paper values for tiny_sdxl; row keys of swept values are tests/sweep/test_report.py's
    rows = {r["key"]: r for r in csv.DictReader((root / "report.csv").open())}
    assert sorted(rows) == ["dti"] and (root / "report.png").is_file()
    assert rows["dti"]["method"] == "DTI"  # the method's label, the backbone is the column
    runs = [json.loads(p.read_text()) for p in root.glob("*/*/samples/two/metrics.json")]
    assert len(runs) == 2
    assert float(rows["dti"]["tiny_sdxl/image"]) == pytest.approx(sum(r["image_sim"] for r in runs) / 2)
    assert float(rows["dti"]["tiny_sdxl/text"]) == pytest.approx(sum(r["text_sim_official"] for r in runs) / 2)
    assert rows["dti"]["tiny_sdxl/subjects"] == "2" and rows["dti"]["tiny_sdxl/image_paper"] == ""
    md = (root / "report.md").read_text()
    assert "—" in md and md.count("| tiny_sdxl | toy |") == 1 and md.count("| tiny_sdxl | ball |") == 1

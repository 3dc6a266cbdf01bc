"""Faults: a non-finite loss stops the run and writes no NaN, torn or truncated files heal, a full disk fails in
one line and a re-run completes, two processes never work in one run directory, files respect the umask, and a
run killed with SIGKILL resumes to the same embeddings."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, cli, error_lines
from safetensors.torch import load_file

BASE = ["model=tiny_sdxl", "data=synthetic", "prompts=complex", "evaluator=tiny", "train.steps=4",
        "train.batch_size=1", "train.checkpoint_every=2", "train.log_every=1", "train.validation.enabled=false",
        "sampler.seeds=[0]"]


def run_dir(root):
    (found,) = root.glob("outputs/*/toy")
    return found


def strict_json(line):
    def refuse(constant):
        raise ValueError(f"bare {constant} in JSON")
    return json.loads(line, parse_constant=refuse)


def test_a_non_finite_loss_stops_the_run_keeps_the_last_good_checkpoint_and_writes_no_nan(tmp_path, monkeypatch):
    from dti.backbones.sdxl import SDXLBackbone

    real, calls = SDXLBackbone.loss, []

    def nan_from_the_third_step(self, *args, **kwargs):
        calls.append(1)
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(SDXLBackbone, "loss", nan_from_the_third_step)
    code, _, err = cli(*BASE, "stage=[train]", cwd=tmp_path)
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: step 3: the loss is not finite"), err
    run = run_dir(tmp_path)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002.pt"]  # the last good one
    assert not (run / "embeddings" / "toy-dti.safetensors").exists() and not (run / "done.json").exists()
    assert sorted(p.name for p in (run / "embeddings" / "steps").iterdir()) == ["000002"]  # the good step's
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    logged = [strict_json(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2]
    for path in run.rglob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(path).values())


def test_torn_and_truncated_files_heal_and_resume_exactly(tmp_path):
    straight, faulty = tmp_path / "straight", tmp_path / "faulty"
    straight.mkdir(), faulty.mkdir()
    assert cli(*BASE, "stage=[train]", "train.steps=6", cwd=straight)[0] == 0
    assert cli(*BASE, "stage=[train]", "train.steps=6", cwd=faulty)[0] == 0
    run = run_dir(faulty)
    # a kill after step 4's checkpoint: the latest checkpoint torn, done.json empty, a torn last log line
    (run / "done.json").write_text("")
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors", "toy-dti.safetensors"):
        (run / "embeddings" / name).unlink()
    latest = run / "checkpoints" / "step_000006.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with open(run / "train_log.jsonl", "a") as log:
        log.write('{"step": 7, "lo')
    code, _, err = cli(*BASE, "stage=[train]", "train.steps=6", cwd=faulty)
    assert code == 0, err[-2000:]
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        assert torch.equal(load_file(run_dir(straight) / "embeddings" / name)["<toy>"],
                           load_file(run / "embeddings" / name)["<toy>"])
    assert [strict_json(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "done.json").read_text())["step"] == 6


def test_a_torn_cache_and_a_torn_sample_are_made_again(tmp_path):
    assert cli(*BASE, cwd=tmp_path)[0] == 0
    run = run_dir(tmp_path)
    samples = run / "samples" / "complex"
    metrics = json.loads((samples / "metrics.json").read_text())
    victim = sorted(samples.rglob("*.png"))[3]
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 3])
    (cache,) = (run / "eval_cache").glob("dinov2_*.safetensors")
    cache.write_bytes(cache.read_bytes()[:50])
    code, _, err = cli(*BASE, "stage=[sample,evaluate]", "evaluator.batch_size=5", cwd=tmp_path)
    assert code == 0, err[-2000:]
    assert victim.read_bytes() == original  # made again from its own generator
    again = json.loads((samples / "metrics.json").read_text())
    assert again["image_sim"] == pytest.approx(metrics["image_sim"]) and again["num_images"] == 22
    assert len(load_file(cache)) == 4  # the reference features, computed again


def test_a_full_disk_fails_in_one_line_and_a_rerun_after_freeing_space_completes(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True
                      ).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (400 * 1024 - 150 * 1024))  # ~150 KiB left: training fits, sampling does not
        run = f"hydra.run.dir={disk}/run"
        code, _, err = cli(*BASE, run, cwd=tmp_path)
        lines = error_lines(err)
        assert code == 1 and len(lines) == 1 and "[Errno 28]" in lines[0] and str(disk) in lines[0], err[-2000:]
        assert (disk / "run" / "embeddings" / "toy-dti.safetensors").is_file()  # the training it finished stays
        filler.unlink()
        code, _, err = cli(*BASE, run, cwd=tmp_path)
        assert code == 0, err[-2000:]
        assert json.loads((disk / "run" / "samples" / "complex" / "metrics.json").read_text())["num_images"] == 22
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_second_process_is_refused_or_waits(tmp_path):
    assert cli(*BASE, "stage=[train]", cwd=tmp_path)[0] == 0
    run = run_dir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from dti.run.locks import hold\n"
        f"with hold(Path({str(run)!r})):\n    print('held', flush=True); time.sleep(float(sys.argv[1]))"), "3"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    stamp = (run / "done.json").stat().st_mtime_ns
    code, _, err = cli(*BASE, "stage=[train]", "train.resume=never", cwd=tmp_path)  # would train again
    assert code == 2 and f"is in use by process {holder.pid}" in err and len(error_lines(err)) == 1, err
    assert (run / "done.json").stat().st_mtime_ns == stamp  # untouched
    started = time.monotonic()
    code, _, err = cli(*BASE, "stage=[train]", "train.resume=never", "wait_for_lock=true", cwd=tmp_path)
    assert code == 0 and time.monotonic() - started > 0.5, err[-2000:]  # waited for the holder, then trained
    assert (run / "done.json").stat().st_mtime_ns != stamp
    holder.wait()


def test_a_sweep_job_refused_by_a_held_run_directory_fails_the_sweep(tmp_path):
    from helpers import compose_cfg
    from omegaconf import OmegaConf

    sweep = ["-m", *BASE, "stage=[train]", "sweep_name=held"]
    where = OmegaConf.to_container(compose_cfg(sweep[1:], hydra=True).hydra.sweep, resolve=True)
    run = tmp_path / where["dir"] / where["subdir"]  # the job's run directory, held before the sweep starts
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from dti.run.locks import hold\n"
        f"with hold(Path({str(run)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = cli(*sweep, cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # the job wrote nothing into the held directory, and the sweep does not pass for done
    assert code == 1 and "1 job(s) failed" in err and f"is in use by process {holder.pid}" in err, err[-2000:]
    assert "RunInUse" in (tmp_path / "multirun" / "held" / "report.md").read_text()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        assert cli(*BASE, "stage=[train]", cwd=tmp_path)[0] == 0
    finally:
        os.umask(previous)
    run = run_dir(tmp_path)
    for name in ("embeddings/toy-dti.safetensors", "done.json", "checkpoints/step_000002.pt", "train_curves.png"):
        assert (run / name).stat().st_mode & 0o777 == mode, name


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_to_the_same_embeddings(tmp_path):
    overrides = [*BASE, "stage=[train]", "train.steps=120", "train.checkpoint_every=10", "train.log_every=10"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert cli(*overrides, cwd=straight)[0] == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *overrides], cwd=killed, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(killed.glob("outputs/*/toy/checkpoints/step_000020.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run = run_dir(killed)
    assert not (run / "done.json").exists()  # killed before the end
    code, _, err = cli(*overrides, cwd=killed)
    assert code == 0, err[-2000:]
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        assert torch.equal(load_file(run_dir(straight) / "embeddings" / name)["<toy>"],
                           load_file(run / "embeddings" / name)["<toy>"])

"""Bad input, as a user types it on the command line: exit 2, exactly one `error:` line that names the field, no
traceback, and no new files. Runs launch.py's main() in this process (tests/helpers.cli)."""

import json

import numpy as np
import pytest
from helpers import cli, error_lines
from PIL import Image

BASE = ["model=tiny_sdxl", "data=synthetic", "prompts=complex", "evaluator=tiny", "train.steps=2",
        "train.batch_size=1", "train.validation.enabled=false", "sampler.seeds=[0]"]


def folder_with(tmp_path, name, write):
    folder = tmp_path / "photos" / name
    folder.mkdir(parents=True)
    write(folder)
    return folder


def corrupt(folder):
    Image.new("RGB", (40, 40), "red").save(folder / "00.png")
    (folder / "01.jpg").write_bytes(b"\xff\xd8\xff\xe0" + (folder / "00.png").read_bytes()[:40])


def tiny(folder):
    Image.new("RGB", (8, 8), "red").save(folder / "00.png")


def float_image(folder):
    Image.fromarray(np.full((40, 40), 0.5, dtype=np.float32), mode="F").save(folder / "00.tiff")
    (folder / "00.tiff").rename(folder / "00.png")


CASES = {  # id: (overrides, the field the one line must name)
    # numbers
    "kappa_negative": (["kappa=-1e-4"], "kappa=-0.0001"),
    "kappa_inf": (["kappa=inf"], "kappa=inf"),
    "kappa_nan": (["kappa=nan"], "kappa=nan"),
    "lr_zero": (["optimizer.lr=0"], "optimizer.lr=0"),
    "lr_inf": (["optimizer.lr=inf"], "optimizer.lr=inf"),
    "lr_huge": (["optimizer.lr=1e30"], "optimizer.lr="),
    "ti_lr_huge": (["method=ti", "optimizer.lr=1e10"], "optimizer.lr="),
    "magnitude_negative": (["magnitude=float", "magnitude.value=-5"], "magnitude.value="),
    "magnitude_overflow": (["magnitude=float", "magnitude.value=1e30"], "magnitude.value="),
    "magnitude_fp32_overflow": (["magnitude=float", "magnitude.value=1e19"], "magnitude.value="),
    "magnitude_underflow": (["magnitude=float", "magnitude.value=1e-40"], "magnitude.value="),
    "seed_text": (["seed=abc"], "seed='abc'"),
    "seed_float": (["seed=1.5"], "seed='1.5'"),
    "seed_negative": (["seed=-1"], "seed=-1"),
    "steps_zero": (["train.steps=0"], "train.steps=0"),
    "batch_zero": (["train.batch_size=0"], "train.batch_size=0"),
    "resolution_text": (["train.resolution=abc"], "train.resolution="),
    "resolution_not_multiple": (["model=tiny_wan", "train.resolution=40"], "train.resolution=40"),
    "rsgd_beta": (["optimizer.beta=1.5"], "optimizer.beta=1.5"),
    "adamw_betas": (["method=ti", "optimizer.betas=[0.9,1.5]"], "optimizer.betas="),
    "adamw_weight_decay": (["method=ti", "optimizer.weight_decay=-1"], "optimizer.weight_decay=-1"),
    "adamw_eps": (["method=ti", "optimizer.eps=-1"], "optimizer.eps=-1"),
    "schedule": (["optimizer.schedule=step"], "optimizer.schedule='step'"),
    "warmup_over_steps": (["optimizer.warmup_steps=5"], "optimizer.warmup_steps=5"),
    "guidance_nan": (["sampler.guidance_scale=nan"], "sampler.guidance_scale=nan"),
    "seeds_text": (["sampler.seeds=[a,b]"], "sampler.seeds="),
    "seeds_scalar": (["sampler.seeds=5"], "sampler.seeds="),
    "seeds_empty": (["sampler.seeds=[]"], "sampler.seeds=[]"),
    "sampler_height": (["sampler.height=0"], "sampler.height=0"),
    "num_vectors_many": (["num_vectors=80"], "num_vectors=80"),
    "num_vectors_float": (["num_vectors=1.5"], "num_vectors="),
    "validation_size": (["train.validation.enabled=true", "train.validation.resolution=[32]"],
                        "train.validation.resolution="),
    "pack_zero": (["pack=0"], "pack=0"),
    "shift_zero": (["model=tiny_sana", "model.train_shift=0"], "model.train_shift=0"),
    # groups and keys
    "unknown_option": (["magnitude=huge"], "magnitude='huge'"),
    "unknown_sweep_option": (["-m", "optimizer=rsgd,sgd"], "optimizer='sgd'"),
    "unknown_added_key": (["+kapa=0"], "kapa="),
    "unknown_key": (["train.stepz=3"], "train.stepz="),
    "moved_key": (["train.pack=2"], "train.pack="),
    "key_of_another_optimizer": (["optimizer.betas=[0.9,0.99]"], "optimizer.betas="),
    "unknown_stage": (["stage=[paint]"], "stage="),
    "unparsable": (["kappa"], "override="),
    "no_cuda": (["model.device=cuda"], "model.device='cuda'"),
    "dtype": (["model.dtype=fp8"], "model.dtype='fp8'"),
    "rsgd_free_norm": (["magnitude=none"], "magnitude="),
    "adamw_fixed_norm": (["optimizer=adamw"], "optimizer="),
    "random_init_unknown": (["model=tiny_sdxl", "+model.random_init=true"], "model.random_init"),
    # data
    "unknown_subject": (["data.subject=dogz"], "data.subject='dogz'"),
    "no_folder": (["data=folder", "data.path=/no/such/folder", "data.class_word=cat"], "data.path="),
    "folder_missing": (["data=folder", "data.class_word=cat"], "data.path="),
    "dreambooth_root": (["data=dreambooth", "data.root=/no/such/root"], "data.root="),
    "blank_initializer": (["data.initializer=' '"], "data.initializer="),
    "placeholder_in_vocabulary": (["placeholder=dog"], "placeholder='dog'"),
    "placeholder_spaces": (["placeholder='a b'"], "placeholder='a b'"),
    "unknown_words": (["data.words=nonsense"], "data.words='nonsense'"),
    "missing_words_file": (["data.words=/no/such/words.json"], "data.words="),
    "concept_too_long": (["data.initializer='" + " ".join(["toy"] * 80) + "'"], "train.templates="),
    "images_per_subject": (["data.num_images=0"], "data.num_images=0"),
    # prompts
    "prompts_path_missing": (["prompts=file"], "prompts.path="),
    "prompts_file_missing": (["prompts=file", "prompts.path=/no/such.txt"], "prompts.path="),
    "rescale": (["sampler.rescale=huge"], "sampler.rescale='huge'"),
    "scheduler": (["sampler.scheduler=NoSuchScheduler"], "sampler.scheduler="),
    "single_file_on_sana": (["model=sana_1.6b", "model.pretrained=/ckpt/sana.safetensors"],
                            "which this backbone does not read"),
    # resume
    "resume_missing": (["train.resume=/no/such.pt"], "train.resume="),
    # evaluator
    "evaluator_batch": (["evaluator.batch_size=0"], "evaluator.batch_size=0"),
    "evaluator_dtype": (["evaluator.dtype=float17"], "evaluator.dtype='float17'"),
    "evaluator_device": (["evaluator.device=cuda"], "evaluator.device='cuda'"),
    "evaluator_model": (["evaluator=default", "evaluator.dinov2=/no/such/model"], "evaluator.dinov2="),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, case):
    overrides, field = CASES[case]
    code, _, err = cli(*BASE, *overrides, cwd=tmp_path)
    lines = [line for line in error_lines(err) if "warn" not in line.lower()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written: no outputs/, no multirun/


@pytest.mark.parametrize("case,write", [("corrupt", corrupt), ("tiny", tiny), ("float32", float_image),
                                        ("empty", lambda folder: None)])
def test_bad_photos_are_named_in_one_line(tmp_path, case, write):
    folder = folder_with(tmp_path, case, write)
    code, _, err = cli(*BASE, "data=folder", f"data.path={folder}", "data.class_word=cat", cwd=tmp_path)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: data.path="), err[-2000:]
    assert not (tmp_path / "outputs").exists()


def test_bad_output_folders_are_named_before_hydra_writes(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = cli(*BASE, f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert code == 2 and err.startswith("error: hydra.run.dir=") and "Not a directory" in err, err[-2000:]


def test_a_read_only_mount_is_named(tmp_path):
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        code, _, err = cli(*BASE, f"hydra.run.dir={mount}/run", cwd=tmp_path)
        assert code == 2 and "Read-only file system" in err and err.count("\n") == 1, err[-2000:]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_an_unreadable_checkpoint_is_bad_input(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = cli(*BASE, f"train.resume={bad}", cwd=tmp_path)
    assert code == 2 and err.startswith("error: train.resume=") and err.count("\n") == 1, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_a_late_error_keeps_the_finished_work_and_says_what_failed(tmp_path):
    code, _, err = cli(*BASE, cwd=tmp_path)
    assert code == 0, err[-2000:]
    (run,) = tmp_path.glob("outputs/*/toy")
    files = lambda: sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())  # noqa: E731
    before = files()
    # another placeholder is another concept, so another run directory: nothing trained there, nothing left there
    code, _, err = cli(*BASE, "stage=[sample,evaluate]", "placeholder='<sks>'", cwd=tmp_path)
    assert code == 2 and err.startswith("error: stage=") and "no trained run" in err and err.count("\n") == 1
    assert files() == before
    # an evaluation model that cannot be loaded fails after sampling: the samples stay, status.json says why
    broken = tmp_path / "broken_dinov2"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    from dti.offline.cache import TINY_VERSION, cache_root

    siglip = cache_root() / f"tiny_siglip-v{TINY_VERSION}"  # built by the first run's evaluator=tiny
    code, _, err = cli(*BASE, "stage=[sample,evaluate]", "sampler.tag=again", "evaluator=default",
                       f"evaluator.dinov2={broken}", f"evaluator.siglip={siglip}", cwd=tmp_path)
    assert code == 2 and err.startswith("error: evaluator.dinov2=") and err.count("\n") == 1, err[-2000:]
    assert set(before) <= set(files()) and len(list((run / "samples" / "again").rglob("*.png"))) == 22
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "evaluator.dinov2" in status["error"]

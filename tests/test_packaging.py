"""What ships: every importable folder is listed in pyproject.toml, and a non-editable install (no source tree on
the path) composes the config from its package data and runs the demo."""

import os
import shutil
import subprocess
import sys

import pytest
import tomllib
from helpers import ROOT


def shipped_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_importable_folder_ships():
    code = {".".join(p.relative_to(ROOT).parts) for p in [ROOT / "dti", *(ROOT / "dti").rglob("*")]
            if p.is_dir() and (any(p.glob("*.py")) or any(p.glob("*.json")))}
    conf = {"dti.conf" + "".join("." + part for part in p.relative_to(ROOT / "conf").parts)
            for p in [ROOT / "conf", *(ROOT / "conf").rglob("*")] if p.is_dir() and p.name != "__pycache__"}
    plugins = {"hydra_plugins", "hydra_plugins.dti_launcher"}
    assert shipped_packages() == code | conf | plugins


@pytest.mark.slow
def test_a_non_editable_install_runs_the_demo(tmp_path):
    target, source = tmp_path / "site", tmp_path / "source"
    # setuptools writes build/ next to the sources, so the install reads a copy and leaves the checkout clean
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "outputs", "multirun", "*.egg-info",
                                                                  "__pycache__", "benchmarks", "notebooks"))
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(source)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import dti, dti.run.conftree as c; print(dti.__file__); "
                            "print(c.conf_dir())"], capture_output=True, text=True, env=env, cwd=tmp_path)
    module, conf = where.stdout.split()
    assert module.startswith(str(target)) and conf.startswith(str(target)), where.stdout  # not the source tree
    run = subprocess.run([sys.executable, "-m", "dti", "+experiment=demo", "train.steps=4", "train.checkpoint_every=2",
                          "train.validation.enabled=false", "sampler.seeds=[0]"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (demo,) = (tmp_path / "outputs").glob("+experiment=demo,train.steps=4/toy")
    assert (demo / "embeddings" / "toy-dti.safetensors").is_file()
    assert (demo / "samples" / "complex" / "metrics.json").is_file()

"""Offline, CPU, tiny models: every test loads random-weight models that were saved to disk and read back."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub id must never silently resolve in tests
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker (and its subprocesses): no oversubscription
    os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import FAST, compose_cfg  # noqa: E402

import dti.run  # noqa: E402,F401  (registers the config resolvers)


@pytest.fixture(scope="session", autouse=True)
def dti_cache(tmp_path_factory):
    if not os.environ.get("DTI_CACHE"):
        os.environ["DTI_CACHE"] = str(tmp_path_factory.mktemp("dti_cache"))
    return Path(os.environ["DTI_CACHE"])


@pytest.fixture
def train_run(tmp_path):
    """Build and run a training job in-process; returns (done, trainer, run_dir)."""
    from dti.run.build import build_concept, build_subject, build_trainer

    def _run(*overrides, run_dir=None):
        run_dir = Path(run_dir or tmp_path / "run")
        cfg = compose_cfg([*FAST, *overrides])
        subject = build_subject(cfg)
        trainer = build_trainer(cfg, run_dir, *build_concept(cfg, subject), subject)
        trainer.resume()
        return trainer.fit(), trainer, run_dir

    return _run

"""Offline, CPU, tiny models: every test loads random-weight models that were saved to disk and read back."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub id must never silently resolve in tests
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import dti  # noqa: E402,F401  (registers resolvers)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# a few steps of the tiny SDXL on the generated subject; validation off unless a test turns it on
FAST = [
    "model=tiny_sdxl", "data=synthetic", "stage=[train]", "train.steps=4", "train.batch_size=2", "train.log_every=1",
    "train.checkpoint_every=2", "train.validation.enabled=false", "train.validation.seeds=[0]",
    "train.validation.num_inference_steps=2",
]


@pytest.fixture(scope="session", autouse=True)
def dti_cache(tmp_path_factory):
    if not os.environ.get("DTI_CACHE"):
        os.environ["DTI_CACHE"] = str(tmp_path_factory.mktemp("dti_cache"))
    return Path(os.environ["DTI_CACHE"])


def compose_cfg(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("launch", overrides=list(overrides))


@pytest.fixture
def train_run(tmp_path):
    """Build and run a training job in-process; returns (done, trainer, run_dir)."""
    from dti.build import build_concept, build_subject, build_trainer

    def _run(*overrides, run_dir=None):
        run_dir = Path(run_dir or tmp_path / "run")
        cfg = compose_cfg([*FAST, *overrides])
        subject = build_subject(cfg)
        trainer = build_trainer(cfg, run_dir, *build_concept(cfg, subject), subject)
        trainer.resume()
        return trainer.fit(), trainer, run_dir

    return _run

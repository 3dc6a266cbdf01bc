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


@pytest.fixture(scope="session", autouse=True)
def reuse_tiny_backbones():
    """Each worker loads a tiny backbone once per settings and hands the same one to every test that asks again
    (the first load goes through from_pretrained like any other). One that a test left with a concept or an
    adapter in it is loaded afresh instead."""
    import dti.offline.tiny as tiny
    from dti.method.concept import ConceptEmbedding

    real, loaded = tiny.load_tiny, {}

    def clean(backbone):
        adapters = any(k in n for n, _ in backbone.denoiser.named_parameters() for k in ("lora_", "oft_", "base_layer"))
        return not adapters and not any(isinstance(s.input_embeddings(), ConceptEmbedding) for s in backbone.encoders)

    def load(adapter, tiny_name, cache_dir=None, **kwargs):
        key = (adapter, tiny_name, cache_dir, tuple(sorted(kwargs.items(), key=str)))
        if key not in loaded or not clean(loaded[key]):
            loaded[key] = real(adapter, tiny_name, cache_dir, **kwargs)
        return loaded[key]

    load.__wrapped__ = real  # for the tests of the backbone cache itself
    tiny.load_tiny = load
    yield
    tiny.load_tiny = real


@pytest.fixture
def train_run(tmp_path):
    """Build and run a training job in-process; returns (done, trainer, run_dir)."""
    from dti.run.build import build_adapter, build_concept, build_subject, build_trainer

    def _run(*overrides, run_dir=None):
        run_dir = Path(run_dir or tmp_path / "run")
        cfg = compose_cfg([*FAST, *overrides])
        subject = build_subject(cfg)
        backbone, concept = build_concept(cfg, subject)
        trainer = build_trainer(cfg, run_dir, backbone, concept, subject, adapter=build_adapter(cfg, backbone))
        trainer.resume()
        return trainer.fit(), trainer, run_dir

    return _run

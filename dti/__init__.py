"""Directional Textual Inversion: learn a concept token's direction on the unit sphere at a fixed, in-distribution
norm. The command line is `launch.py` (dti.run.cli); this module is the Python API for using the results."""

from dti.core.version import __version__  # noqa: F401  (the package's version, re-exported)


def load_embeddings(pipe, path, token=None):
    """Add a trained concept (a run directory or its embeddings/ folder) to a stock diffusers pipeline, with the
    run's adapter (LoRA, OFT) on the denoiser when it has one; returns the concept's tokens."""
    from pathlib import Path

    from dti.backbones import adapter_for
    from dti.backbones import load_embeddings as _load
    from dti.train.adapters import load_adapter

    tokens = _load(pipe, path, token)
    run = Path(path).parent if Path(path).name == "embeddings" else Path(path)
    if (run / "adapter").is_dir():
        load_adapter(pipe, run / "adapter", adapter_for(pipe).denoiser_name)
    return tokens


def slerp(a, b, t):
    """Spherical interpolation of two embeddings (rows of the last dimension) at ratio t in [0, 1]: t=0 gives a,
    t=1 gives b; two DTI concepts (one norm m*) keep that norm all the way (dti.analyze.spherical)."""
    from dti.analyze.spherical import slerp as _slerp

    return _slerp(a, b, t)

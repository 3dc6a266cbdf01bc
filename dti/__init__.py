"""Directional Textual Inversion: learn a concept token's direction on the unit sphere at a fixed, in-distribution
norm. The command line is `launch.py` (dti.run.cli); this module is the Python API for using the results."""

__version__ = "0.2.0"


def load_embeddings(pipe, path, token=None):
    """Add a trained concept (a run directory or its embeddings/ folder) to a stock diffusers pipeline; returns
    the concept's tokens."""
    from dti.backbones import load_embeddings as _load

    return _load(pipe, path, token)


def slerp(a, b, t):
    """Spherical interpolation of two embeddings (rows of the last dimension) at ratio t in [0, 1]: t=0 gives a,
    t=1 gives b; two DTI concepts (one norm m*) keep that norm all the way (dti.analyze.spherical)."""
    from dti.analyze.spherical import slerp as _slerp

    return _slerp(a, b, t)

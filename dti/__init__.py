"""Directional Textual Inversion: learn a concept token's direction on the unit sphere at a fixed, in-distribution
norm. See README.md; the training recipe is `dti.train`, the CLI `launch.py`."""

from dti.config import register_resolvers

register_resolvers()

__version__ = "0.1.0"


def load_embeddings(pipe, path, token=None):
    """Add a trained concept (a run directory or its embeddings/ folder) to a stock diffusers pipeline."""
    from dti.export import load_embeddings as _load

    return _load(pipe, path, token)

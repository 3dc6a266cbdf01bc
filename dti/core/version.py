"""dti's version, in one place below every package that records it (the embedding files' metadata); the same as
pyproject.toml's."""

__version__ = "0.2.0"

"""OmegaConf resolvers used by conf/ (registered on import of `dti`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def _dirname(override_dirname: str) -> str:
    """Run-directory name from Hydra's override dirname; "default" when nothing was overridden."""
    return override_dirname or "default"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("dti.dirname", _dirname, replace=True)
    OmegaConf.register_new_resolver("dti.basename", lambda p: Path(str(p)).name if p else "folder", replace=True)

"""Where the config tree is (conf/, shipped as the package data `dti.conf`) and composing it outside launch.py
(benchmarks, analyses, tests)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import DictConfig

CONF_MODULE = "dti.conf"


def conf_dir() -> Path:
    """The config tree's folder, wherever the package is installed."""
    return Path(str(importlib.resources.files(CONF_MODULE)))


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "launch",
            return_hydra_config: bool = False) -> DictConfig:
    """The config `launch.py` would compose from these overrides (without running anything)."""
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)

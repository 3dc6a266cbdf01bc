"""OmegaConf resolvers used by conf/ (registered when dti.run is imported)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import OmegaConf

from dti.core.runtime import visible_gpus
from dti.run.identity import run_name


def _subject_label(subject) -> str:
    """The last part of a job's directory: the subject, or for several subjects in one process "all" or a short
    name (each subject's own run directory is then a sibling: <job dir>/../<subject>)."""
    if isinstance(subject, (list, tuple)) or OmegaConf.is_list(subject):
        names = [str(s) for s in subject]
        if len(names) == 1:
            return names[0]
        if len(names) <= 3:
            return "+".join(names)
        return f"{len(names)}_subjects_{hashlib.sha1(','.join(names).encode()).hexdigest()[:8]}"
    return str(subject)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("dti.run_name", lambda overrides: run_name(list(overrides)), replace=True)
    OmegaConf.register_new_resolver("dti.subject_label", _subject_label, replace=True)
    # the pool size of hydra/launcher=gpu_pool: the number of GPUs, at least 1 (a CPU-only box runs one job at a time)
    OmegaConf.register_new_resolver("dti.num_gpus", lambda: max(1, len(visible_gpus())), replace=True)
    OmegaConf.register_new_resolver("dti.basename", lambda p: Path(str(p)).name if p else "folder", replace=True)

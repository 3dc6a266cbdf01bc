"""What the notebooks (notebooks/*.ipynb) start from, read from the environment so that one notebook serves the
tiny offline models and real checkpoints unchanged:

    DTI_MODEL=sdxl DTI_RUNS=outputs/default/dog:outputs/method=ti/dog jupyter lab notebooks/

- DTI_MODEL: the model= choice (default tiny_sdxl).
- DTI_RUNS: the run directories, separated by the OS path separator (':'): a DTI run, a TI run (the methods
  compared), optionally a second DTI concept (the one interpolation blends into). Unset on a tiny model: DTI and
  TI runs of the synthetic toy and a DTI run of the synthetic ball are trained (seconds) into DTI_NOTEBOOK_RUNS
  (default notebook_runs/), once.
- DTI_ANALYZE_OVERRIDES: extra overrides for every analysis, split on spaces (e.g. sampler.seeds=[0]).
- DTI_ANALYSIS_OUT: where the analyses write (default analysis/), one folder per analysis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dti.core.errors import InputError
from dti.run.build import BackboneCache
from dti.run.conftree import compose
from dti.run.job import JobContext
from dti.run.job import run as run_job

TINY_TRAINING = ["data=synthetic", "stage=[train]", "train.steps=4", "train.batch_size=2", "train.checkpoint_every=2",
                 "train.validation.enabled=false", "logger=none"]


def tiny_runs(root: str | Path, model: str = "tiny_sdxl", backbones: BackboneCache | None = None) -> list[Path]:
    """DTI and TI runs of the synthetic toy and a DTI run of the synthetic ball on a tiny model (4 steps,
    embeddings saved every 2); runs already complete there are kept."""
    if not model.startswith("tiny_"):
        raise InputError("DTI_RUNS", "", f"is needed for model={model}: give the run directories to analyse")
    context = JobContext(backbones=backbones or BackboneCache())
    folders = []
    for method, subject in (("dti", "toy"), ("ti", "toy"), ("dti", "ball")):
        folder = Path(root) / model / method / subject
        run_job(compose([f"model={model}", f"method={method}", f"data.subject={subject}", *TINY_TRAINING]), folder,
                context)
        folders.append(folder)
    return folders


@dataclass
class NotebookSetup:
    model: str
    runs: list[Path]
    out: Path
    extra: list[str]
    backbones: BackboneCache = field(default_factory=BackboneCache)  # one model load for the notebook's analyses

    def overrides(self, name: str, *more: str) -> list[str]:
        """model=, the analysis's own output folder, the environment's extra overrides, then `more`."""
        return [f"model={self.model}", f"analyze.out={self.out / name}", *self.extra, *more]


def notebook_setup() -> NotebookSetup:
    model = os.environ.get("DTI_MODEL", "tiny_sdxl")
    backbones = BackboneCache()
    listed = [p for p in os.environ.get("DTI_RUNS", "").split(os.pathsep) if p.strip()]
    runs = [Path(p) for p in listed] or tiny_runs(os.environ.get("DTI_NOTEBOOK_RUNS", "notebook_runs"), model,
                                                  backbones)
    return NotebookSetup(model, runs, Path(os.environ.get("DTI_ANALYSIS_OUT", "analysis")),
                         os.environ.get("DTI_ANALYZE_OVERRIDES", "").split(), backbones)

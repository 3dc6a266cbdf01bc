"""The training recipe: config in, run directory out. `launch.py` calls `run`; tests call it in-process.

    python launch.py model=sdxl data.subject=dog data.root=/path/to/dreambooth
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dti.build import build_logger, build_trainer


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train (or resume, or skip if complete) the concept described by `cfg` into `run_dir`; returns done.json."""
    run_dir = Path(run_dir)
    trainer, _, _ = build_trainer(cfg, run_dir)  # every input check happens here, before anything is written
    trainer.resume()
    trainer.logger = build_logger(cfg, run_dir)
    failed = True
    try:
        done = trainer.fit()
        failed = False
    finally:
        trainer.logger.finish(failed=failed)  # always: sequential jobs must never share a logger run
    return done

"""The `logger=` group. `train_log.jsonl` is always written by the trainer; these mirror it elsewhere."""

from __future__ import annotations

import hashlib
import netrc
import os
from pathlib import Path


class NullLogger:
    def __init__(self, **_):
        pass

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_image(self, key: str, path: Path, step: int, caption: str | None = None) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


def wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbLogger(NullLogger):
    """A W&B run initialised with the resolved config. Offline (synced later with `wandb sync`) unless an API key
    is configured or WANDB_MODE says otherwise. The run id is derived from the run directory, so a resumed job
    continues its own run."""

    def __init__(self, run_dir: str, run_config: dict, project: str = "dti", entity: str | None = None,
                 mode: str | None = None, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, job_type: str = "train"):
        import wandb

        self._wandb = wandb
        mode = mode or os.environ.get("WANDB_MODE") or ("online" if wandb_key_configured() else "offline")
        run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=project, entity=entity, mode=mode, dir=str(run_dir), config=run_config,
                              name=name or "/".join(Path(run_dir).parts[-3:]), group=group, tags=list(tags or []),
                              job_type=job_type, id=run_id, resume="allow")

    def log(self, metrics, step):
        self.run.log(metrics, step=step)

    def log_image(self, key, path, step, caption=None):
        self.run.log({key: self._wandb.Image(str(path), caption=caption)}, step=step)

    def finish(self, failed: bool = False):
        self.run.finish(exit_code=1 if failed else 0)

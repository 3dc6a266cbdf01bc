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

    def log_evaluation(self, metrics: dict, samples: Path) -> None:
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
                 tags: list[str] | None = None, job_type: str = "train", default_tags: list[str] | None = None):
        import wandb

        self._wandb = wandb
        mode = mode or os.environ.get("WANDB_MODE") or ("online" if wandb_key_configured() else "offline")
        tags = list(tags or []) + list(default_tags or [])
        # one run per (run directory, stages): a resumed job continues its run, a re-score gets its own
        run_id = hashlib.sha1(f"{Path(run_dir).resolve()}|{job_type}".encode()).hexdigest()[:16]
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, entity=entity, mode=mode, dir=str(run_dir), config=run_config,
                              name=name or "/".join(Path(run_dir).parts[-3:]), group=group, tags=list(tags or []),
                              job_type=job_type, id=run_id, resume="allow",
                              reinit="create_new")  # packed concepts: one run each, open at the same time

    def log(self, metrics, step):
        self.run.log(metrics, step=step)

    def log_image(self, key, path, step, caption=None):
        self.run.log({key: self._wandb.Image(str(path), caption=caption)}, step=step)

    def log_evaluation(self, metrics, samples):
        """The per-image scores as a table (prompt, seed, image, scores) and the headline means as summary."""
        first = metrics["per_image"][0]
        scores = [k for k in ("dinov2", "siglip", "siglip_official", "clip_i", "clip_t") if k in first]
        prompts = {p["prompt_index"]: p["prompt"] for p in metrics["per_prompt"]}
        table = self._wandb.Table(columns=["prompt", "seed", "image", *scores])
        for row in metrics["per_image"]:
            table.add_data(prompts[row["prompt_index"]], row["seed"],
                           self._wandb.Image(str(Path(samples) / row["path"])), *(row[k] for k in scores))
        self.run.log({"evaluation/samples": table})
        self.run.summary.update({f"eval/{k}": metrics[k] for k in ("image_sim", "text_sim", "text_sim_official")
                                 if metrics.get(k) is not None})

    def finish(self, failed: bool = False):
        self.run.finish(exit_code=1 if failed else 0)

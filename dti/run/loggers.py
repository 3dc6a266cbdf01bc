"""The `logger=` group. `train_log.jsonl` is always written by the trainer; these mirror it elsewhere."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import netrc
import os
from pathlib import Path

from dti.core.errors import InputError

HEADLINE_SCORES = ("image_sim", "text_sim", "text_sim_official")


class NullLogger:
    def __init__(self, **_):
        pass

    @classmethod
    def check_available(cls) -> None:
        """Raise InputError when what this logger needs is not installed (checked before any stage runs)."""

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
        self.run.summary.update({f"eval/{k}": metrics[k] for k in HEADLINE_SCORES if metrics.get(k) is not None})

    def finish(self, failed: bool = False):
        self.run.finish(exit_code=1 if failed else 0)


class TensorBoardLogger(NullLogger):
    """TensorBoard event files (torch.utils.tensorboard.SummaryWriter) in `log_dir`, by default
    `<run directory>/tensorboard/<stages>`: every scalar the trainer logs (loss, lr, norms, gradient norms), the
    validation grids, the evaluation's headline means, and the resolved config as text. The writer opens at the
    first record, with `purge_step` the first training step it logs: records an interrupted run wrote after the
    checkpoint a resumed run starts from are hidden, as they are dropped from train_log.jsonl."""

    def __init__(self, run_dir: str, run_config: dict, log_dir: str | None = None, flush_secs: int = 30,
                 job_type: str = "train", default_tags: list[str] | None = None):
        self.check_available()
        self.log_dir = Path(log_dir) if log_dir else Path(run_dir) / "tensorboard" / job_type
        self.run_config, self.flush_secs, self.writer = run_config, flush_secs, None

    @classmethod
    def check_available(cls) -> None:
        # torch.utils.tensorboard writes through the tensorboard package, an optional extra: looked for, not imported
        if importlib.util.find_spec("tensorboard") is None:
            raise InputError("logger", "tensorboard", "needs the tensorboard package: pip install tensorboard "
                             "(or the project's [tensorboard] extra)")

    def _writer(self, purge_step: int | None, step: int = 0):
        """The writer, opened on first use; `purge_step`: the first training step this process logs."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=self.flush_secs)
            self.writer.add_text("config", "```\n" + json.dumps(self.run_config, indent=2, default=str) + "\n```",
                                 global_step=step)
        return self.writer

    def log(self, metrics, step):
        writer = self._writer(step, step)
        for key, value in metrics.items():
            if value is not None:  # a non-finite value is logged as None (train_log.jsonl's null)
                writer.add_scalar(key, value, global_step=step)

    def log_image(self, key, path, step, caption=None):
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self._writer(None, step).add_image(key, pixels, global_step=step, dataformats="HWC")

    def log_evaluation(self, metrics, samples):
        step = metrics.get("step") or 0  # the scored step (None: the final embeddings)
        writer = self._writer(None, step)
        for key in HEADLINE_SCORES:
            if metrics.get(key) is not None:
                writer.add_scalar(f"eval/{key}", metrics[key], global_step=step)

    def finish(self, failed: bool = False):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

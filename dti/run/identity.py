"""What a run directory is, and when its outputs are complete.

A trained concept is identified by its run directory's name (the overrides that change it) and, inside, by the
fingerprint recorded in `done.json` and every checkpoint: the checkpoint it starts from, the subject's images and
the initializer. Samples are identified by the settings each image depends on and the embeddings' checksum
(`sampler.json`); scores by the evaluator settings (`metrics.json`). `status.json` says how the last attempt
ended.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dti.backbones.images import image_key
from dti.core import io
from dti.train.data import Subject

# model settings that say how a run is executed, not what it trains: left out of the fingerprint
_HOW_IT_RUNS = ("device", "dtype", "vae_dtype", "compile", "batch_cfg", "cache_dir", "name")


def fingerprint(cfg: DictConfig, subject: Subject) -> dict:
    """What a training run's outputs depend on beyond its directory name: the checkpoint it starts from (not how
    it is run: device, dtype, compile, batching), the subject's images and the initializer."""
    model = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in _HOW_IT_RUNS}
    return {"model": model, "images": [image_key(im) for im in subject.images], "initializer": subject.initializer}


def read_json(path: Path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def is_complete(directory: Path, stages: list[str], tag: str | None, expected_images: int, fingerprint: dict,
                sampler: dict | None, evaluator: dict | None, steps: int) -> bool:
    """Are the outputs of the requested stages there, complete, and made from these inputs and settings?"""
    done = read_json(directory / "done.json")
    if "train" in stages and (done is None or done.get("fingerprint") != fingerprint or done.get("step", 0) < steps):
        return False
    samples = directory / "samples" / str(tag)
    if "sample" in stages or "evaluate" in stages:
        made_with = read_json(samples / "sampler.json") or {}
        if any(made_with.get(k) != v for k, v in (sampler or {}).items()):
            return False
        if len(list(samples.glob("*/*.png"))) != expected_images:
            return False
    if "evaluate" in stages:
        metrics = read_json(samples / "metrics.json")
        if metrics is None or metrics.get("num_images") != expected_images:
            return False
        if (metrics.get("config") or {}).get("evaluator") != evaluator:
            return False
    return True


def write_status(directory: Path, status: str, stages: list[str], error: BaseException | None = None,
                 **extra) -> None:
    record = {"status": status, "stages": stages, **extra}
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exception(type(error), error, error.__traceback__)[-6:]
    io.write_json(Path(directory) / "status.json", json.loads(json.dumps(record, default=str)))

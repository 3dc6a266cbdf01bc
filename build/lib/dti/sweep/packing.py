"""Packing a whole sweep (`-m ... pack=K` under the packed launcher): before the jobs run, train the
concepts they will need, K at a time across jobs, so that each job finds its training complete. Anything that
fails here is left to its job, which trains or reports it as usual: packing only ever saves time."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dti.core.errors import InputError
from dti.run.build import BackboneCache, build_backbone, check_resolutions
from dti.run.job import Job, subject_dir
from dti.run.packing import PackItem, pack_key, train_packs
from dti.train.data import Subject

log = logging.getLogger(__name__)


def pack_sweep(jobs: list[tuple[DictConfig, Path]], pack: int, backbones: BackboneCache, launch_id: str) -> None:
    """Train the concepts of `jobs` ((config, run directory) each) `pack` at a time, on backbones from the
    launcher's `backbones` cache; each concept trained here records `launch_id` in its done.json."""
    groups: dict[str, list[PackItem]] = {}
    planned: set[Path] = set()
    subjects: dict[tuple, Subject] = {}  # one copy of a subject's images for all the jobs that train it
    for cfg, run_dir in jobs:
        try:
            items = _plan(cfg, run_dir)
        except Exception as err:  # noqa: BLE001  (bad input: the job reports it when it runs)
            log.info("%s: not packed (%s)", run_dir, err)
            continue
        source = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True, default=str)
        for item in items:
            if item.directory.resolve() in planned:
                continue  # jobs that share a run directory: the first trains it, the others find it complete
            planned.add(item.directory.resolve())
            item.subject = subjects.setdefault((source, item.subject.name), item.subject)
            groups.setdefault(pack_key(cfg), []).append(item)
    for items in groups.values():
        if len(items) < 2:
            continue  # nothing to share a batch with: its job trains it as usual
        try:
            backbone = build_backbone(items[0].cfg, backbones)
        except Exception as err:  # noqa: BLE001
            log.info("not packed: %s", err)
            continue
        train_packs([i for i in items if _fits(i, backbone)], backbone, pack, launch_id)


def _plan(cfg: DictConfig, run_dir: Path) -> list[PackItem]:
    """The concepts of one job that still need training."""
    job = Job(cfg, run_dir)
    if "train" not in job.stages:
        return []
    return [PackItem(cfg, s, subject_dir(run_dir, s.name, job.many))
            for s in job.subjects if not job.subject_complete(s, ["train"])]


def _fits(item: PackItem, backbone) -> bool:
    try:
        check_resolutions(item.cfg, backbone, ["train"])
        return True
    except InputError as err:
        log.info("%s: not packed (%s)", item.directory, err)
        return False

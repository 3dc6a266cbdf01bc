"""Packing concepts into shared batches (`pack=K`): which concepts can share a batch, and training them K
at a time on one loaded backbone with `dti.train.packed.PackedTrainer`.

The same code serves a job's subjects (`data.subject=all pack=4`, dti.run.job) and a whole sweep's
concepts (dti.sweep.packing). Two concepts with one placeholder (one subject, two kappas) train under stand-in
tokens and are written under their own name. Packing only saves time: whatever cannot be packed, or fails while
packed, is left to its job, which trains it (resuming from any checkpoint written here) or reports its error.
A concept trained here records the packing pass's `launch_id` in its done.json, so that its job, which runs with
the same id, knows it was trained just now (and does not train it again even with train.resume=never).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from dti.core.errors import RunInUse
from dti.core.io import read_json
from dti.run.build import build_concept, build_logger, build_trainer, concept_placeholder, model_key
from dti.run.locks import hold
from dti.train.data import Subject
from dti.train.packed import PackedTrainer

log = logging.getLogger(__name__)


@dataclass
class PackItem:
    """One concept to train: a job's config, one of its subjects, and that subject's run directory."""

    cfg: DictConfig
    subject: Subject
    directory: Path


def pack_key(cfg: DictConfig) -> str:
    """Concepts can share a batch when they share the loaded backbone and the batch shape (a loss mask is part of
    the batch: masked and unmasked concepts do not share one)."""
    return json.dumps([model_key(cfg), cfg.train.batch_size, cfg.train.grad_accum, cfg.train.resolution,
                       cfg.data.get("masks") is not None])


def trained_in(directory: Path, launch_id: str) -> bool:
    """Did the packing pass of launch `launch_id` complete this run directory's training?"""
    return (read_json(Path(directory) / "done.json") or {}).get("trained_packed") == launch_id


def train_packs(items: list[PackItem], backbone, pack: int, launch_id: str, lock: bool = True) -> set[Path]:
    """Train `items` `pack` at a time (in order) on the loaded `backbone`; returns the run directories trained.
    Whatever fails here is only logged: the item is not trained, so its job trains it on its own. With `lock`,
    each run directory is held while it trains, and one another process holds is left out."""
    trained: set[Path] = set()
    alone = [i for i in items if i.cfg.adapter.kind != "none"]
    if alone:  # an adapter belongs to one concept: those concepts train on their own, in their jobs
        log.info("not packed (an adapter trains per concept): %s", ", ".join(str(i.directory) for i in alone))
        items = [i for i in items if i.cfg.adapter.kind == "none"]
    for start in range(0, len(items), pack):
        group = items[start:start + pack]
        try:
            with contextlib.ExitStack() as locks, packed_trainers(_locked(group, locks) if lock else group,
                                                                  backbone) as (trainers, failed):
                for item, err in failed:
                    log.warning("%s: not packed (%s: %s)", item.directory, type(err).__name__, err)
                if trainers:
                    log.info("training %d concepts packed: %s", len(trainers),
                             ", ".join(str(t.run_dir) for t in trainers))
                    for t in trainers:
                        t.done_record = {"trained_packed": launch_id}
                    PackedTrainer(trainers).fit()
                    trained |= {t.run_dir for t in trainers}
        except Exception:  # noqa: BLE001
            log.exception("packed training of %s failed; each will train on its own",
                          ", ".join(str(i.directory) for i in group))
    return trained


def _locked(group: list[PackItem], locks: contextlib.ExitStack) -> list[PackItem]:
    kept = []
    for item in group:
        try:
            locks.enter_context(hold(item.directory))
            kept.append(item)
        except RunInUse as err:
            log.warning("%s: not packed (%s)", item.directory, err.problem)
    return kept


@contextlib.contextmanager
def packed_trainers(group: list[PackItem], backbone):
    """(trainers, failed): a trainer per item, resumed, its concept added to the shared `backbone` (a stand-in
    token where an earlier item has the same placeholder); items whose concept, trainer or checkpoint cannot be
    set up are left out, with the error, in `failed`. On leaving, the loggers finish and the concepts come out."""
    concepts, trainers, failed, ok = [], [], [], False
    try:
        placeholders = set()
        for k, item in enumerate(group):
            concept = trainer = None
            try:
                placeholder = concept_placeholder(item.cfg, item.subject)
                stand_in = f"<dti-pack{k}>" if placeholder in placeholders else None
                concept = build_concept(item.cfg, item.subject, backbone, stand_in)[1]
                trainer = build_trainer(item.cfg, item.directory, backbone, concept, item.subject,
                                        build_logger(item.cfg, item.directory, ["train"], item.subject.name))
                trainer.resume()
            except Exception as err:  # noqa: BLE001
                if trainer is not None:
                    trainer.logger.finish(failed=True)
                if concept is not None:
                    concept.remove()  # the innermost lookup so far: safe to take out alone
                failed.append((item, err))
                continue
            placeholders.add(placeholder)
            concepts.append(concept)
            trainers.append(trainer)
        yield trainers, failed
        ok = True
    finally:
        for trainer in trainers:
            trainer.logger.finish(failed=not ok)
        for concept in reversed(concepts):  # the lookups nest: take them out in reverse order
            concept.remove()

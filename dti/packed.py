"""Packed multi-concept training (`train.pack=K`): K concepts share the frozen backbone and one batch per step.

Each concept keeps everything of its own: placeholder tokens and table (the lookups nest, one wrapper per
concept), optimizer and its state, prior, random stream (a generator seeded as its separate run would be), run
directory, checkpoints, log, validation and exports: each is a `Trainer`. Per step every concept draws its own
images, templates, timesteps and noise exactly as its separate run would; the K batches are concatenated for one
text-encoder + denoiser pass, and the summed per-concept loss gives each table the gradient of its own batch only
(no other concept's tokens appear in its prompts). RSGD's per-row normalisation then makes each concept's step
independent of the others, so a packed concept ends where its separate run ends (up to float rounding of the
larger batch).

What is packed: a job's subjects (`data.subject=all train.pack=4`, Job.train_packed) or a whole sweep's concepts,
e.g. Table 3's rows for each subject (`-m ... train.pack=4`, which hydra/launcher=packed runs through
`pack_sweep`). Concepts pack together when they share the model settings and the batch shape. Two concepts with
one placeholder (one subject, two kappas) train under stand-in tokens and are written under their own name.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from dti.data import Subject
from dti.trainer import Trainer

log = logging.getLogger(__name__)

VALIDATION_BATCH = 16  # images per generate call when packed concepts validate together
_trained: set[Path] = set()  # run directories trained packed in this process, not yet taken by their job


@dataclass
class PackItem:
    """One concept to train: a job's config, one of its subjects, and that subject's run directory."""

    cfg: DictConfig
    subject: Subject
    directory: Path


def pack_key(cfg: DictConfig) -> str:
    """Concepts can share a batch when they share the loaded backbone and the batch shape."""
    from dti.build import model_key

    return json.dumps([model_key(cfg), cfg.train.batch_size, cfg.train.grad_accum, cfg.train.resolution])


def take_trained(directory: Path) -> bool:
    """True once for a run directory that packed training completed in this process: its job must not train it
    again, even with train.resume=never (which asked for this very training)."""
    directory = Path(directory).resolve()
    found = directory in _trained
    _trained.discard(directory)
    return found


def train_packs(items: list[PackItem], backbone, pack: int) -> None:
    """Train `items` `pack` at a time (in order) on the loaded `backbone`. Whatever fails here is only logged:
    the item is not marked trained, so its job trains it on its own (resuming from any checkpoint this wrote)
    and reports its error there if there is one."""
    for start in range(0, len(items), pack):
        group = items[start:start + pack]
        try:
            with packed_trainers(group, backbone) as (trainers, failed):
                for item, err in failed:
                    log.warning("%s: not packed (%s: %s)", item.directory, type(err).__name__, err)
                if trainers:
                    log.info("training %d concepts packed: %s", len(trainers),
                             ", ".join(str(t.run_dir) for t in trainers))
                    PackedTrainer(trainers).fit()
                    _trained.update(t.run_dir.resolve() for t in trainers)
        except Exception:  # noqa: BLE001
            log.exception("packed training of %s failed; each will train on its own",
                          ", ".join(str(i.directory) for i in group))


@contextlib.contextmanager
def packed_trainers(group: list[PackItem], backbone):
    """(trainers, failed): a trainer per item, resumed, its concept added to the shared `backbone` (a stand-in
    token where an earlier item has the same placeholder); items whose concept, trainer or checkpoint cannot be
    set up are left out, with the error, in `failed`. On leaving, the loggers finish and the concepts come out."""
    from dti.build import build_concept, build_logger, build_trainer, concept_placeholder

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


def pack_sweep(jobs: list[tuple[DictConfig, Path]], pack: int) -> None:
    """Before a sweep's jobs run: train the concepts they will need, `pack` at a time across jobs, so that each
    job finds its training complete. Anything that fails here is left to its job, which trains or reports it as
    usual: packing only ever saves time."""
    from dti.build import build_backbone

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
    backbone = None
    for items in groups.values():
        if len(items) < 2:
            continue  # nothing to share a batch with: its job trains it as usual
        backbone = None  # the previous group's model goes before the next one loads
        try:
            backbone = build_backbone(items[0].cfg)
        except Exception as err:  # noqa: BLE001
            log.info("not packed: %s", err)
            continue
        train_packs([i for i in items if _fits(i, backbone)], backbone, pack)


def _plan(cfg: DictConfig, run_dir: Path) -> list[PackItem]:
    """The concepts of one job that still need training."""
    from dti.train import Job, subject_dir

    job = Job(cfg, run_dir)
    if "train" not in job.stages:
        return []
    return [PackItem(cfg, s, subject_dir(run_dir, s.name, job.many))
            for s in job.subjects if not job.subject_complete(s, ["train"])]


def _fits(item: PackItem, backbone) -> bool:
    from dti.build import check_resolutions
    from dti.errors import InputError

    try:
        check_resolutions(item.cfg, backbone, ["train"])
        return True
    except InputError as err:
        log.info("%s: not packed (%s)", item.directory, err)
        return False


class PackedTrainer:
    def __init__(self, trainers: list[Trainer]):
        if len({t.backbone for t in trainers}) != 1:
            raise ValueError("packed concepts must share one backbone")
        settings = {(t.settings.batch_size, t.settings.grad_accum, t.settings.resolution) for t in trainers}
        if len(settings) != 1:
            raise ValueError("packed concepts need the same batch size, accumulation and resolution")
        self.trainers, self.backbone = trainers, trainers[0].backbone

    def fit(self) -> dict[str, dict]:
        active = [t for t in self.trainers if not t.complete()]
        for t in active:
            t.run_dir.mkdir(parents=True, exist_ok=True)
        prepared = {id(t): t.prepare() for t in active}
        steps = max((t.settings.steps for t in active), default=0)
        bar = tqdm(total=steps, initial=min((t.step for t in active), default=0),
                   desc=f"train {len(active)} packed", dynamic_ncols=True)
        while active:
            finished = [t for t in active if t.step >= t.settings.steps]  # or resumed at its last checkpoint
            self.validate([t for t in finished if t.validation.enabled])
            for t in finished:
                t.finish(validated=True)
                active.remove(t)
            if not active:
                break
            self.step(active, prepared)
            bar.update(1)
            for t in active:
                t.after_step(validate=False)
            self.validate([t for t in active if t.validation_due()])
        bar.close()
        return {t.subject: t.done() for t in self.trainers}

    def validate(self, trainers: list[Trainer]) -> None:
        """The validation grids of `trainers`, with the images of all concepts that share validation settings made
        together, VALIDATION_BATCH at a time. Each image has its own generator seeded by its seed alone, so it is
        the image its concept's own validation would make (up to float rounding of the larger batch)."""
        groups: dict[tuple, list[Trainer]] = {}
        for t in trainers:
            v = t.validation
            groups.setdefault((v.size(), v.num_inference_steps, v.guidance_scale), []).append(t)
        for (size, steps, guidance), group in groups.items():
            requests = [t.validation_prompts() for t in group]
            prompts = [p for ps, _ in requests for p in ps]
            seeds = [seed for _, ss in requests for seed in ss]
            images = []
            for start in range(0, len(prompts), VALIDATION_BATCH):
                chunk = slice(start, start + VALIDATION_BATCH)
                images += self.backbone.generate(prompts[chunk], seeds[chunk], *size, steps, guidance)
            for t, (ps, _) in zip(group, requests):
                t.validate(images[:len(ps)])
                images = images[len(ps):]

    def step(self, trainers: list[Trainer], prepared: dict) -> None:
        """One optimizer step of every concept in `trainers`, through one pass of the shared backbone."""
        s, device = trainers[0].settings, self.backbone.device
        batch = s.batch_size * s.grad_accum
        draws = []
        for t in trainers:  # each concept's draws, in the order and from the stream of its separate run
            t.step += 1
            draws.append(t.draw(prepared[id(t)]))
        losses = torch.zeros(len(trainers), device=device)
        for part in torch.arange(batch, device=device).split(s.batch_size):
            b = _concat(draws, part)  # concept 0's slice, then concept 1's, ...
            cond = self.backbone.encode_text(b["ids"], b["augment"])
            per_sample = self.backbone.loss(b["noisy"], b["t"], b["target"], cond, b["extras"], per_sample=True)
            # each concept's mean over its own samples; the sum keeps their gradients apart
            part_losses = per_sample.view(len(trainers), -1).mean(dim=1) * (len(part) / batch)
            part_losses.sum().backward()
            losses += part_losses.detach()
        for k, t in enumerate(trainers):
            t.last_loss = losses[k]
            t.last_grads = t.apply_update(t.logging_due())


def _concat(draws: list[dict], part: torch.Tensor) -> dict:
    """The micro-batch `part` of every concept's draws, concatenated concept after concept."""
    def cat(tensors):
        return torch.cat([x[part] for x in tensors])

    first = draws[0]
    return {
        "ids": [cat([d["ids"][e] for d in draws]) for e in range(len(first["ids"]))],
        **{key: cat([d[key] for d in draws]) for key in ("noisy", "t", "target")},
        **{group: {k: cat([d[group][k] for d in draws]) for k in first[group]} for group in ("extras", "augment")},
    }

"""One job: config in, run directories out. For each subject: train, sample the prompt set, score the samples.

    python launch.py model=sdxl data.subject=dog data.root=/path/to/dreambooth
    python launch.py model=sdxl data.subject=dog "stage=[sample,evaluate]"     # re-score, no retraining
    python launch.py model=sdxl data.subject=all                               # 30 subjects, one model load

`launch.py` calls `run` (through dti.run.cli); tests call it in-process. Every check of the user's input that
needs no model happens before the first model is loaded and before anything is written. With several subjects,
each gets its own run directory beside the job's (`<job dir>/../<subject>`); a subject whose requested outputs are
already complete is skipped without loading anything; a subject that fails writes `status.json` with the error
and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dti.core.errors import InputError
from dti.evaluate.sampler import Sampler, embeddings_checksum, image_settings, load_trained_embeddings, sample_steps
from dti.method.concept import check_fits
from dti.run.build import (
    BackboneCache,
    build_adapter,
    build_backbone,
    build_concept,
    build_evaluator,
    build_external_embedding,
    build_logger,
    build_prompt_set,
    build_sampler_settings,
    build_subjects,
    build_trainer,
    check_embedding_files,
    check_resolutions,
    concept_trigger,
)
from dti.run.external import import_external, scored_config
from dti.run.identity import fingerprint, is_complete, read_json, write_status
from dti.run.locks import LOCK_FILE, hold
from dti.run.packing import PackItem, train_packs, trained_in
from dti.run.validate import validate_config
from dti.train.trainer import step_folder

log = logging.getLogger(__name__)


class SubjectsFailed(RuntimeError):
    """Some subjects of a multi-subject job failed; each has a status.json with its error."""


def subject_dir(run_dir: Path, name: str, many: bool) -> Path:
    return run_dir.parent / name if many else run_dir


@dataclass
class JobContext:
    """What the launcher hands to the jobs it runs one after another in one process: the loaded backbone they
    share, and the id of this launch (a concept trained by this launch's packing pass records it in done.json)."""

    backbones: BackboneCache | None = None
    launch_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Job:
    """One launch: the stages for one or more subjects, sharing one backbone and one evaluator."""

    def __init__(self, cfg: DictConfig, run_dir: Path, context: JobContext | None = None):
        self.cfg, self.run_dir, self.context = cfg, Path(run_dir), context or JobContext()
        self.stages = validate_config(cfg)  # every stage's settings, before anything is loaded or written
        self.sampler_settings = build_sampler_settings(cfg) if {"sample", "evaluate"} & set(self.stages) else None
        self.subjects = build_subjects(cfg)  # reads and checks every image before the (slow) model load
        self.many = len(self.subjects) > 1
        self.prompt_sets = {s.name: build_prompt_set(cfg, s) for s in self.subjects} if self.sampler_settings else {}
        if "train" in self.stages:
            warn_small_images(self.subjects, cfg.train.resolution)
        self.backbone = self.evaluator = None
        self.packed: set[str] = set()

    def run(self) -> dict:
        """Every stage for every subject that needs it, holding each subject's run directory (and samples folder)
        against other processes for the whole job. A folder this job created for its lock and left empty (it
        failed before writing anything there) is removed again."""
        created: list[Path] = []
        with contextlib.ExitStack() as locks:
            try:
                return self.run_locked(self.plan(locks, created))
            except BaseException:
                for folder in created:
                    if all(p.is_dir() or p.name == LOCK_FILE for p in folder.rglob("*")):
                        shutil.rmtree(folder, ignore_errors=True)
                raise

    def plan(self, locks: contextlib.ExitStack, created: list[Path]) -> list:
        """The subjects whose requested outputs are missing, their folders locked (another process working on
        one stops this job with one line) and their inputs for the stages present."""
        # subjects trained packed by this launch (the sweep's packing pass before this job, or train_packed
        # below): their stages only resume from that training, even with train.resume=never
        self.packed = {s.name for s in self.subjects
                       if trained_in(subject_dir(self.run_dir, s.name, self.many), self.context.launch_id)}
        todo = [s for s in self.subjects if not self.subject_complete(s)]
        wait, train = bool(self.cfg.wait_for_lock), "train" in self.stages
        for subject in todo:
            directory = subject_dir(self.run_dir, subject.name, self.many)
            _, targets, _ = self.sampling_plan(subject)
            if not train:
                check_trained(directory, self.stages, targets, external=self.cfg.embeddings is not None)
            if not directory.exists():
                created.append(directory)
            # an external embedding's run writes its rows into the directory when it samples
            writes = train or (self.cfg.embeddings is not None and "sample" in self.stages)
            locks.enter_context(hold(directory, exclusive=writes, wait=wait))
            for tag, _ in targets:
                locks.enter_context(hold(directory / "samples" / tag, exclusive=True, wait=wait))
        (self.run_dir / "status.json").unlink(missing_ok=True)  # a previous attempt's verdict: this one writes its own
        return todo

    def run_locked(self, todo: list) -> dict:
        results, failed = {}, []
        if todo and {"train", "sample"} & set(self.stages):
            self.load_backbone()  # job-level: a failure here (checkpoint, image sizes) fails the job, not a subject
        if "train" in self.stages and self.many and self.cfg.pack > 1:
            self.train_packed(int(self.cfg.pack))
        for subject in self.subjects:
            directory = subject_dir(self.run_dir, subject.name, self.many)
            prompt_set, targets, _ = self.sampling_plan(subject)
            if subject not in todo:
                how = {"trained_packed": True} if subject.name in self.packed else {"skipped": True}
                log.info("%s: complete, %s", directory, "trained packed" if subject.name in self.packed else "skipped")
                write_status(directory, "done", self.stages, **how)
                results[subject.name] = how
                continue
            if not self.many:  # one subject: errors propagate (one-line bad input, no partial output)
                results[subject.name] = self.run_subject(subject, directory, prompt_set, targets)
                continue
            try:
                results[subject.name] = self.run_subject(subject, directory, prompt_set, targets)
            except Exception as err:  # noqa: BLE001  (one subject's failure must not stop the others)
                write_status(directory, "failed", self.stages, error=err)
                log.error("%s failed: %s", subject.name, err)
                failed.append(f"{subject.name} ({type(err).__name__}: {err})")
        if failed:
            raise SubjectsFailed(f"{len(failed)} of {len(self.subjects)} subjects failed: {'; '.join(failed)}")
        return results if self.many else next(iter(results.values()))

    def directories(self) -> list[Path]:
        """The run directory of each subject of this job."""
        return [subject_dir(self.run_dir, s.name, self.many) for s in self.subjects]

    def sampling_plan(self, subject):
        """(prompt set, [(samples tag, training step or None for the final one)], expected images per tag) of a
        subject; (None, [], 0) without sampling."""
        if not self.sampler_settings:
            return None, [], 0
        prompt_set = self.prompt_sets[subject.name]
        steps = sample_steps(self.sampler_settings, self.cfg.train.steps, self.cfg.train.checkpoint_every)
        targets = [(Sampler.tag_for(self.sampler_settings, prompt_set, step), step) for step in steps]
        return prompt_set, targets, len(prompt_set.templates) * len(self.sampler_settings.seeds)

    def subject_complete(self, subject, stages: list[str] | None = None) -> bool:
        stages = stages or self.stages
        if "train" in stages and str(self.cfg.train.resume) != "auto" and subject.name not in self.packed:
            return False  # resume=never (or a given checkpoint) asks for training to run
        _, targets, expected = self.sampling_plan(subject)
        return all(is_complete(subject_dir(self.run_dir, subject.name, self.many), stages, tag, expected,
                               fingerprint(self.cfg, subject), self.sampler_record(step),
                               OmegaConf.to_container(self.cfg.evaluator, resolve=True), self.cfg.train.steps)
                   for tag, step in targets or [(None, None)])

    def train_packed(self, pack: int) -> None:
        """Train the subjects that need it `pack` at a time in shared batches (dti.run.packing). The per-subject
        stages that follow find training complete and go on to sampling; a subject that could not be packed
        trains (or fails) there on its own."""
        todo = [s for s in self.subjects if s.name not in self.packed and not self.subject_complete(s, ["train"])]
        items = [PackItem(self.cfg, s, subject_dir(self.run_dir, s.name, True)) for s in todo]
        trained = train_packs(items, self.backbone, pack, self.context.launch_id, lock=False)  # held by run()
        self.packed |= {item.subject.name for item in items if item.directory in trained}

    def sampler_record(self, step: int | None = None) -> dict | None:
        return {**image_settings(self.sampler_settings), "step": step} if self.sampler_settings else None

    def load_backbone(self) -> None:
        """The one model load of this process, and the checks that need the model, before any subject runs."""
        if self.backbone is None:
            self.backbone = build_backbone(self.cfg, self.context.backbones)
            check_resolutions(self.cfg, self.backbone, self.stages)
            check_embedding_files(self.cfg, self.backbone, self.stages)

    def run_subject(self, subject, directory: Path, prompt_set, targets) -> dict:
        started, cfg, stages, result = time.perf_counter(), self.cfg, self.stages, {}
        concept = logger = adapter = None
        failed = True
        try:
            if "train" in stages or "sample" in stages:
                concept = build_concept(cfg, subject, self.backbone)[1]
                adapter = build_adapter(cfg, self.backbone)
            logger = build_logger(cfg, directory, stages, subject.name)
            if "train" in stages:
                trainer = build_trainer(cfg, directory, self.backbone, concept, subject, logger, adapter)
                if subject.name in self.packed:
                    trainer.settings.resume = "auto"  # trained just now, packed: never clear that again
                trainer.resume()
                result["train"] = trainer.fit()
            if cfg.embeddings is not None and "sample" in stages:  # sampled below as a trained run's would be
                import_external(build_external_embedding(cfg, self.backbone), self.backbone, concept, directory,
                                concept_trigger(cfg, subject))
            for tag, step in targets:  # the final embeddings, or each saved step's (sampler.steps)
                self.sample_and_score(subject, directory, prompt_set, tag, step, concept, adapter, logger, result)
            failed = False
        finally:
            if logger is not None:
                logger.finish(failed=failed)  # always: sequential jobs must never share a logger run
            if adapter is not None:
                adapter.remove()
            if concept is not None:
                concept.remove()  # the next subject starts from the untouched backbone
        packed = {"trained_packed": True} if subject.name in self.packed else {}
        write_status(directory, "done", stages, seconds=time.perf_counter() - started, result=result, **packed)
        return result


    def sample_and_score(self, subject, directory: Path, prompt_set, tag: str, step: int | None, concept,
                         adapter, logger, result: dict) -> None:
        stages, key = self.stages, "" if step is None else f"@{step}"
        if "sample" in stages:
            embeddings = directory / "embeddings" if step is None else step_folder(directory, step)
            if "train" not in stages or step is not None:
                load_trained_embeddings(concept, self.backbone, embeddings)
                if adapter is not None:
                    adapter.load_saved(directory / "adapter" if step is None else embeddings / "adapter",
                                       self.backbone.denoiser_name)
            check_fits(concept, self.backbone.encoders, prompt_set.templates, "prompts")
            sampler = Sampler(self.backbone, concept, self.sampler_settings, subject.class_word)
            adapter_folder = (directory / "adapter" if step is None else embeddings / "adapter") if adapter else None
            checksum = embeddings_checksum(self.backbone, embeddings, adapter_folder)
            result["samples" + key] = str(sampler.run(prompt_set, directory / "samples", checksum, tag, step))
        if "evaluate" in stages:
            self.evaluator = self.evaluator or build_evaluator(self.cfg)
            metrics = self.evaluator.evaluate(directory / "samples" / tag, subject.images, subject.name,
                                              directory / "eval_cache", config=scored_config(self.cfg, directory),
                                              step=step, reference_names=subject.image_names)
            logger.log_evaluation(metrics, directory / "samples" / tag)
            result["metrics" + key] = {k: metrics[k] for k in ("image_sim", "text_sim", "text_sim_official",
                                                               "num_images")}


def warn_small_images(subjects, resolution: int) -> None:
    for subject in subjects:
        small = [f"{im.size[0]}x{im.size[1]}" for im in subject.images if min(im.size) < resolution / 2]
        if small:
            log.warning("%s: %d photo(s) smaller than half of train.resolution=%d (%s) are upscaled more than 2x",
                        subject.name, len(small), resolution, ", ".join(small[:4]))


def check_trained(directory: Path, stages: list[str], targets: list, external: bool = False) -> None:
    """Sampling or scoring without the train stage needs a trained run there (or `external` rows, which the
    sample stage imports), with the saved steps asked for (and scoring, its samples)."""
    if "sample" in stages and not external and read_json(directory / "done.json") is None:
        raise InputError("stage", stages, f"no trained run at {directory} (no done.json); include the train stage")
    for tag, step in targets:
        if "sample" in stages and step is not None and not step_folder(directory, step).is_dir():
            raise InputError("sampler.steps", step, f"no embeddings were saved at that step in {directory} "
                             "(train.checkpoint_every decides which are)")
        if stages == ["evaluate"] and not (directory / "samples" / tag / "prompts.json").is_file():
            raise InputError("stage", stages, f"no samples at {directory / 'samples' / tag}; include the sample "
                             "stage")


def run(cfg: DictConfig, run_dir: str | Path, context: JobContext | None = None) -> dict:
    """Run the configured stages for the configured subject(s); returns what each stage produced."""
    return Job(cfg, Path(run_dir), context).run()

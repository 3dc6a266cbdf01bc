"""`hydra/launcher=packed`, launch.py's default: a sweep's jobs run one after another in this process, as with
Hydra's basic launcher (same job numbers, directories and callbacks), with three differences:

- jobs with the same model settings run one after another and share one loaded backbone (a `BackboneCache` this
  launcher creates and hands to each job): a sweep over methods x models loads each model once;
- with `pack=K` > 1, before a model's jobs run, one pass trains the concepts of all of them K at a time in
  shared batches (dti.sweep.packing); each job then finds its training complete and goes on to sampling and
  evaluation. That pass runs outside the jobs: their `hydra.job.env_set` and job callbacks do not apply to it,
  and its log lines go to the console, not to the jobs' log files;
- the results come back in the sweep's order, whatever order the jobs ran in.

Hydra instantiates launchers defined in its plugin namespace only: hydra_plugins/dti_launcher subclasses this one.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from dti.run.build import BackboneCache, model_key
from dti.run.job import JobContext
from dti.sweep.packing import pack_sweep

log = logging.getLogger(__name__)


@dataclass
class PlannedJob:
    number: int
    overrides: Sequence[str]
    group: str  # the model settings (jobs with equal ones share a backbone), or a key of its own
    sweep_config: DictConfig | None = None  # the job's whole config, for run_job; None if planning failed
    config: DictConfig | None = None  # what the task function will get
    output_dir: Path | None = None


class PackedSweepLauncher(Launcher):
    def __init__(self, pack: int = 1) -> None:
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
            raise ValueError(f"pack={pack!r}: must be an integer >= 1")
        self.pack = pack
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs locally%s", len(job_overrides),
                 f", concepts packed {self.pack} per batch" if self.pack > 1 else "")
        groups: dict[str, list[PlannedJob]] = {}
        for i, overrides in enumerate(job_overrides):
            job = self.plan(initial_job_idx + i, overrides)
            groups.setdefault(job.group, []).append(job)
        runs, context = {}, JobContext(backbones=BackboneCache())
        for jobs in groups.values():
            if self.pack > 1:
                pack_sweep([(j.config, j.output_dir) for j in jobs if j.config is not None], self.pack,
                           context.backbones, context.launch_id)
            for job in jobs:
                runs[job.number] = self.run(job, context)
        return [runs[initial_job_idx + i] for i in range(len(job_overrides))]

    def sweep_config(self, number: int, overrides: Sequence[str]) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = number
            config.hydra.job.num = number
        return config

    def plan(self, number: int, overrides: Sequence[str]) -> PlannedJob:
        """The job's task config, output directory (as run_job makes them) and model group; a job that cannot
        be planned runs where it is, alone, and reports its own error."""
        try:
            config = self.sweep_config(number, overrides)
            HydraConfig.instance().set_config(config)
            output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            task_config = copy.deepcopy(config)
            with read_write(task_config), open_dict(task_config):
                del task_config["hydra"]
            return PlannedJob(number, overrides, model_key(task_config), config, task_config, output_dir)
        except Exception as err:  # noqa: BLE001
            log.info("job #%d: not planned (%s)", number, err)
            return PlannedJob(number, overrides, f"#{number}")

    def run(self, job: PlannedJob, context: JobContext) -> JobReturn:
        log.info("\t#%d : %s", job.number, " ".join(filter_overrides(job.overrides)))
        config = job.sweep_config if job.sweep_config is not None else self.sweep_config(job.number, job.overrides)
        task = functools.partial(self.task_function, context=context)  # dti.run.cli's task takes the context
        result = run_job(hydra_context=self.hydra_context, task_function=task, config=config,
                         job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return result

"""`hydra/launcher=packed`, launch.py's default: a sweep's jobs run one after another in this process, as with
Hydra's basic launcher, with two additions:

- with `train.pack=K` > 1, one pass first trains the concepts of all the sweep's jobs K at a time in shared
  batches (dti.packed.pack_sweep: e.g. Table 3's six rows of one subject in two batches); each job then finds
  its training complete and goes on to sampling and evaluation;
- jobs with the same model settings share one loaded backbone (dti.build.share_backbones).

This module lives in Hydra's plugin namespace because Hydra only instantiates launchers found there; the work is
done in the dti package.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from omegaconf import open_dict, read_write

log = logging.getLogger(__name__)


class PackedLauncher(BasicLauncher):
    def __init__(self, pack: int = 1) -> None:
        super().__init__()
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
            raise ValueError(f"train.pack={pack!r}: must be an integer >= 1")
        self.pack = pack

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from dti.build import share_backbones
        from dti.packed import pack_sweep

        with share_backbones():
            if self.pack > 1:
                log.info("packing the concepts of %d jobs, %d per batch", len(job_overrides), self.pack)
                pack_sweep([self.job_config(o) for o in job_overrides], self.pack)
            return super().launch(job_overrides, initial_job_idx)

    def job_config(self, overrides: Sequence[str]):
        """(the config the job's task function will get, the job's output directory), as run_job makes them."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        HydraConfig.instance().set_config(config)
        output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        task_config = copy.deepcopy(config)
        with read_write(task_config), open_dict(task_config):
            del task_config["hydra"]
        return task_config, output_dir

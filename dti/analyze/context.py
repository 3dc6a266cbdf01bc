"""What an analysis gets: the composed config, its settings, its output folder, and the backbone (loaded on first
use, so an analysis refuses bad settings before the slow load)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from omegaconf import DictConfig, OmegaConf

from dti.analyze.outputs import AnalysisOutput
from dti.analyze.runs import LearnedRun, check_paths, load_runs
from dti.analyze.settings import AnalyzeSettings
from dti.backbones.base import Backbone
from dti.run.build import BackboneCache, build_backbone, build_sampler_settings
from dti.run.conftree import conf_dir


def paper_section2() -> dict:
    """The paper's and the official notebooks' values (conf/paper/section2.yaml)."""
    return OmegaConf.to_container(OmegaConf.load(conf_dir() / "paper" / "section2.yaml"), resolve=True)


@dataclass
class Context:
    name: str
    cfg: DictConfig
    settings: AnalyzeSettings
    out: AnalysisOutput
    backbones: BackboneCache | None = field(default=None, repr=False)

    @cached_property
    def backbone(self) -> Backbone:
        return build_backbone(self.cfg, self.backbones)

    @property
    def model(self) -> str:
        return str(self.cfg.model.name)

    def runs(self, with_steps: bool = False, minimum: int = 0, exactly: int | None = None) -> list[LearnedRun]:
        """The runs of `runs=[...]`: their number and folders checked before the backbone is loaded."""
        check_paths(list(self.cfg.runs), minimum, exactly, self.name)
        return load_runs(list(self.cfg.runs), self.backbone, with_steps, minimum, exactly, self.name)

    def sampler(self):
        return build_sampler_settings(self.cfg)

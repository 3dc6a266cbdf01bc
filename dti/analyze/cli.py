"""The analyses as commands and as a Python API:

    python -m dti.analyze norms model=sdxl "runs=['outputs/method=ti/dog','outputs/default/dog']"
    dti.analyze.analyze("norms", ["model=sdxl"], runs=["outputs/method=ti/dog"])      # the same, in Python

Overrides as for launch.py (model=, sampler.*, seed), plus `runs=[...]` and the `analyze:` node (conf/analyze.yaml,
dti.analyze.settings). Each analysis writes its figure, its numbers (CSV/JSON) and summary.md into analyze.out
(default analysis/<name>/). Bad input: one line, exit 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dti.analyze.context import Context
from dti.analyze.outputs import AnalysisOutput
from dti.analyze.settings import AnalyzeConfig, AnalyzeSettings, ProbeSettings
from dti.core.errors import InputError
from dti.run.build import BackboneCache
from dti.run.cli import check_group_choices, quiet_libraries
from dti.run.conftree import compose
from dti.run.schema import register_schema

# command -> module of dti.analyze with run(ctx)
ANALYSES = {"norms": "norms", "neighbours": "neighbours", "drift": "drift", "probe": "probe", "angles": "angles",
            "interpolate": "interpolate", "magnitude": "magnitudes", "compose": "compose"}


def quote(path: str | Path) -> str:
    """A path as a Hydra list element (run folders have '=' and ',' in their names)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def compose_analysis(overrides: list[str]):
    register_schema(AnalyzeConfig)
    try:
        return compose(overrides, config_name="analyze")
    finally:
        register_schema()  # launch.yaml's own schema again, for whatever composes next in this process


def settings_of(cfg) -> AnalyzeSettings:
    values = OmegaConf.to_container(cfg.analyze, resolve=True)
    return AnalyzeSettings(**{**values, "probe": ProbeSettings(**values["probe"])})


def analyze(name: str, overrides: list[str] | tuple[str, ...] = (), runs: list | None = None,
            backbones: BackboneCache | None = None) -> dict:
    """Run one analysis in this process; returns {folder, files, summary, ...its numbers}. `runs` are paths (quoted
    for Hydra here); `backbones` shares one loaded model between calls (a notebook's analyses)."""
    if name not in ANALYSES:
        raise InputError("analysis", name, f"choose from {', '.join(ANALYSES)}")
    overrides = list(overrides) + ([f"runs=[{','.join(quote(p) for p in runs)}]"] if runs is not None else [])
    cfg = compose_analysis(overrides)
    settings = settings_of(cfg)
    out = AnalysisOutput(settings.out or Path("analysis") / name)
    module = importlib.import_module(f"dti.analyze.{ANALYSES[name]}")
    return module.run(Context(name, cfg, settings, out, backbones))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ANALYSES:
        print(f"usage: python -m dti.analyze {{{','.join(ANALYSES)}}} [overrides...]", file=sys.stderr)
        return 2
    quiet_libraries()
    try:
        check_group_choices(argv[1:])
        result = analyze(argv[0], argv[1:])
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as err:  # a typo'd key, a value of the wrong type
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(result["summary"])
    print(f"written: {result['folder']} ({len(result['files'])} files)")
    return 0

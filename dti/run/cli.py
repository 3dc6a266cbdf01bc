"""The command line (`launch.py`, `python -m dti`, `dti`): Hydra around the job, one-line errors, a non-zero exit,
and no partial output."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from pathlib import Path

import hydra

from dti.core.errors import InputError
from dti.run.conftree import CONF_MODULE, conf_dir
from dti.run.identity import write_status
from dti.run.job import JobContext, SubjectsFailed
from dti.run.job import run as run_stages

HYDRA_FILES = {".hydra", "launch.log"}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_environment() -> None:
    """A torchvision that cannot be imported (the CUDA wheel next to a CPU torch) breaks transformers' imports."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # noqa: BLE001
        fail(f"torchvision is installed but cannot be imported ({type(err).__name__}: {err}); "
             "run `pip uninstall -y torchvision` or install the build that matches your torch")


def check_group_choices(args: list[str], conf: Path | None = None) -> None:
    """`magnitude=foo` -> one line naming the group and its options, before Hydra's multi-line report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001  (syntax errors: Hydra reports them itself)
        return
    for override in parsed:
        folder = (conf or conf_dir()) / override.key_or_group
        # hydra/* groups get options from plugins too (joblib, submitit_slurm, ...): Hydra checks those itself
        if override.package or override.is_delete() or not folder.is_dir() or override.key_or_group.startswith(
                "hydra"):
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            if value is not None and str(value) not in options:
                fail(f"{override.key_or_group}={value!r}: unknown {override.key_or_group} "
                     f"(choose from: {', '.join(options)})")


def _remove_fresh_run_dir(run_dir: Path, stop_at: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while parent != stop_at and stop_at in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def quiet_libraries() -> None:
    """Our own progress bar and log lines are the interesting ones; silence per-file loading bars and notices."""
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def run_job(cfg, context: JobContext | None = None) -> dict | None:
    """One Hydra job: the stages of dti.run.job, with the errors the command line promises."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    quiet_libraries()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    (run_dir / "status.json").unlink(missing_ok=True)  # a previous attempt's verdict; this attempt writes its own
    fresh = {p.name for p in run_dir.iterdir()} <= HYDRA_FILES  # only what Hydra itself just wrote
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return run_stages(cfg, run_dir, context)
    except InputError as err:
        if fresh and not multirun:
            _remove_fresh_run_dir(run_dir, Path(hydra_cfg.runtime.cwd))
        if multirun:  # the sweep goes on; its status.json says why this job failed
            write_status(run_dir, "failed", str(cfg.stage), error=err)
            print(f"error: {run_dir}: {err}", file=sys.stderr)
            return None
        fail(str(err))
    except SubjectsFailed as err:
        if multirun:
            print(f"error: {run_dir}: {err}", file=sys.stderr)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001
        write_status(run_dir, "failed", str(cfg.stage), error=err)
        if multirun:
            logging.getLogger("dti").exception("job failed: %s", run_dir)
            return None
        raise


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="launch")
def _hydra_main(cfg, context: JobContext | None = None):
    return run_job(cfg, context)


def main() -> None:
    """Train, sample and score, e.g. `python launch.py model=sdxl data.subject=dog` (every setting an override)."""
    check_environment()
    check_group_choices(sys.argv[1:])
    _hydra_main()

"""The command line (`launch.py`, `python -m dti`, `dti`): Hydra around the job, one-line errors, a non-zero exit,
and no partial output."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from pathlib import Path

import hydra

from dti.core.errors import InputError, NonFiniteError, RunInUse
from dti.run.conftree import CONF_MODULE, conf_dir
from dti.run.identity import write_refusal, write_status
from dti.run.job import Job, JobContext, SubjectsFailed
from dti.run.locks import LOCK_FILE, hold
from dti.run.precheck import precheck
from dti.run.summary import run_summary

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


def untouched(run_dir: Path) -> bool:
    """Nothing in `run_dir` but what Hydra wrote at start (and empty folders or lock files): no stage's work."""
    for path in run_dir.rglob("*"):
        inside_hydra = path.relative_to(run_dir).parts[0] in HYDRA_FILES
        if path.is_file() and not inside_hydra and path.name != LOCK_FILE:
            return False
    return True


def remove_if_untouched(run_dir: Path, stop_at: Path) -> None:
    """A run that failed before any stage wrote anything leaves no directory behind (taken under the run's lock,
    so a directory another process is working in is never removed)."""
    try:
        with hold(run_dir):
            if not untouched(run_dir):
                return
            shutil.rmtree(run_dir, ignore_errors=True)
    except RunInUse:
        return
    parent = run_dir.parent
    while parent != stop_at and stop_at in parent.parents and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _try_status(run_dir: Path, stages, err: BaseException) -> None:
    """status.json saying what failed, where the disk still allows it (a full disk may not)."""
    try:
        write_status(run_dir, "failed", stages, error=err)
    except OSError:
        pass


def quiet_libraries() -> None:
    """Our own progress bar and log lines are the interesting ones; silence per-file loading bars and notices."""
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def run_job(cfg, context: JobContext | None = None) -> dict | None:
    """One Hydra job: the stages of dti.run.job, with the errors the command line promises. Bad input before any
    stage wrote anything: one line, exit 2, no directory left. Any error after work was done: the work stays,
    status.json says what failed, one line (exit 2 for bad input, 1 otherwise). In a -m sweep the others go on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    quiet_libraries()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    stages = cfg.get("stage")
    try:
        job = Job(cfg, run_dir, context)
        result = job.run()
        if not multirun:
            for directory in job.directories():
                print("\n".join(run_summary(directory)))
        return result
    except RunInUse as err:  # another process's directory: touch nothing of it; the sweep counts it as failed
        if multirun:
            write_refusal(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, run_dir, err)
        return _report(err, run_dir, multirun, code=2, status=False)
    except InputError as err:
        if not multirun:
            remove_if_untouched(run_dir, Path(hydra_cfg.runtime.cwd))
        return _report(err, run_dir, multirun, code=2, stages=stages)
    except (NonFiniteError, SubjectsFailed) as err:
        return _report(err, run_dir, multirun, code=1, stages=stages)
    except OSError as err:  # a full disk, a folder made read-only mid-run: the path and the errno
        where = f"{err.filename}: " if err.filename else ""
        return _report(OSError(f"{where}[Errno {err.errno}] {err.strerror or err}"), run_dir, multirun, code=1,
                       stages=stages)
    except Exception as err:  # noqa: BLE001  (a bug: the traceback is the useful report)
        _try_status(run_dir, stages, err)
        if multirun:
            logging.getLogger("dti").exception("job failed: %s", run_dir)
            return None
        raise


def _report(err: BaseException, run_dir: Path, multirun: bool, code: int, stages=None, status: bool = True):
    if status and run_dir.is_dir() and not isinstance(err, SubjectsFailed):  # subjects wrote their own
        _try_status(run_dir, stages, err)
    if multirun:  # the sweep goes on; status.json says why this job failed
        print(f"error: {run_dir}: {err}", file=sys.stderr)
        return None
    print(f"error: {err}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="launch")
def _hydra_main(cfg, context: JobContext | None = None):
    return run_job(cfg, context)


def main(argv: list[str] | None = None) -> None:
    """Train, sample and score, e.g. `python launch.py model=sdxl data.subject=dog` (every setting an override).
    Every job's settings are checked before Hydra creates anything (dti.run.precheck)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check_environment()
    check_group_choices(argv)
    try:
        precheck(argv)
    except InputError as err:
        fail(str(err))
    sys.argv = [sys.argv[0], *argv]
    _hydra_main()

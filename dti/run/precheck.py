"""The command line's checks before Hydra runs anything: the overrides parse, every job of the command (each
combination of a -m sweep, the experiment's sweep parameters included) composes and passes dti.run.validate, and
its output folder can be written. A problem is one `InputError` line; Hydra's own multi-line reports of the same
problems are never reached."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dti.core.errors import InputError
from dti.run.conftree import compose, conf_dir
from dti.run.validate import validate_config

# Hydra flags that show something and run no job: nothing to check
SHOW_ONLY = ("help", "hydra_help", "cfg", "info", "shell_completion", "version")
_REASONS = (  # OmegaConf's wording -> what the user should do
    (r"could not be converted to Integer", "must be an integer"),
    (r"could not be converted to Float", "must be a number"),
    (r"could not be converted to Boolean", "must be true or false"),
    (r"is not a ListConfig, list or tuple", "must be a list, e.g. [0,1]"),
    (r"Key '.*' not in '(\w+)'", "unknown key"),
    (r"Key '.*' is not in struct", "unknown key"),
    (r"Could not append to config. An item is already at", "is already set: drop the + prefix"),
)


def composition_error(err: Exception, overrides: list[str]) -> InputError:
    """Hydra's or OmegaConf's report of a bad override, as one line naming the key and the value."""
    if isinstance(err, OverrideParseException):
        text = next((o for o in overrides if o in str(err)), str(err).splitlines()[0])
        return InputError("override", text, "cannot be parsed: write key=value, and quote a value with special "
                                            "characters (key='<value>')")
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    text = getattr(cause, "msg", None) or str(cause)
    key = getattr(cause, "full_key", None) or _key_in(str(err))
    item = key is not None and re.search(r"\[\d+\]$", key)
    key = re.sub(r"\[\d+\]$", "", key) if key else key  # sampler.seeds[0] -> sampler.seeds: each item
    value = _value_of(key, overrides)
    for pattern, reason in _REASONS:
        if re.search(pattern, text):
            if reason == "unknown key":
                reason += _known_keys(key, overrides)
            return InputError(key or "override", value, f"each item {reason}" if item else reason)
    return InputError(key or "override", value, text.strip().splitlines()[0])


def _known_keys(key: str | None, overrides: list[str]) -> str:
    """` (known: ...)`: the keys of the node an unknown key was set in, composed without that override."""
    parent = key.rsplit(".", 1)[0] if key and "." in key else None
    if parent is None:
        return ""
    try:
        cfg = compose([o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")])
        node = OmegaConf.select(cfg, parent)
    except Exception:  # noqa: BLE001  (the hint is a courtesy: the error line stands without it)
        return ""
    return f" (known: {', '.join(sorted(str(k) for k in node))})" if node is not None else ""


def _key_in(message: str) -> str | None:
    match = re.search(r"override '?([\w.+/@~-]+)'?", message) or re.search(r"at '([\w./]+)'", message)
    return match.group(1) if match else None


def _value_of(key: str | None, overrides: list[str]):
    for override in overrides:
        name, _, value = override.partition("=")
        if key is not None and name.lstrip("+~") == re.sub(r"\[\d+\]$", "", key):
            return value
    return None


def compose_checked(overrides: list[str], hydra: bool = False, config_name: str = "launch"):
    """`compose`, with a bad override reported as one InputError line naming the key and the value."""
    try:
        return compose(overrides, config_name=config_name, return_hydra_config=hydra)
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        raise composition_error(err, overrides) from None


def check_appends(overrides) -> None:
    """`+key=value` adds a key Hydra's schema check does not see: only config groups may be added (`+experiment=`,
    `+words=`); any other added key is a typo of a known one."""
    for override in overrides:
        key = override.key_or_group
        if override.is_add() and not override.is_force_add() and not (conf_dir() / key).is_dir():
            raise InputError(key, override.value(), "unknown key: only config groups may be added with + "
                             "(e.g. +experiment=demo); drop the + to set an existing key")


def jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of every job the command runs (a -m sweep: each combination, as Hydra's basic sweeper
    expands it, with the experiment's hydra.sweeper.params)."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException as err:
        raise composition_error(err, overrides) from None
    check_appends(parsed)
    if not multirun:
        return [overrides]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose_checked(fixed, hydra=True)
    params = base.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    # the command line wins over the experiment's sweep of the same key (a single value or a sweep of its own)
    given = {o.key_or_group for o in parsed}
    swept = {o.key_or_group: o.input_line for o in parsed if o.is_sweep_override()}
    for key, values in params.items():
        if str(key).lstrip("+~") not in given:
            swept[str(key)] = f"{key}={values}"
    sweep = parser.parse_overrides([*fixed, *swept.values()])
    return [list(batch) for batch in BasicSweeper.split_arguments(sweep, None)[0]]


def check_writable(folder: Path, field: str) -> None:
    """`folder` can be created and written: tried for real (a temporary file, the folders made for it removed
    again), so a file in the way, a read-only mount or missing permissions are named now, not by a traceback."""
    path = Path(folder).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    made = []
    try:
        for part in reversed([path, *path.parents]):
            if not part.exists():
                part.mkdir()
                made.append(part)
        fd, probe = tempfile.mkstemp(prefix=".dti-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        where = err.filename or existing
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise InputError(field, str(folder), f"cannot be written: {where} ([Errno {err.errno}] {reason})") from None
    finally:
        for part in reversed(made):
            part.rmdir()


def precheck(argv: list[str]) -> None:
    """Everything above, for the command line `argv` (launch.py's arguments)."""
    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in SHOW_ONLY):
        return
    for job in jobs(list(args.overrides), bool(args.multirun)):
        cfg = compose_checked(job, hydra=True)
        key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
        check_writable(Path(str(OmegaConf.select(cfg, key))), key)
        validate_config(cfg)

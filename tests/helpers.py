"""Helpers shared by the test modules (importable as `helpers`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dti.run.conftree import compose, conf_dir

ROOT = Path(__file__).resolve().parent.parent
CONF = conf_dir()

# a few steps of the tiny SDXL on the generated subject; validation off unless a test turns it on
FAST = [
    "model=tiny_sdxl", "data=synthetic", "stage=[train]", "train.steps=4", "train.batch_size=2", "train.log_every=1",
    "train.checkpoint_every=2", "train.validation.enabled=false", "train.validation.seeds=[0]",
    "train.validation.num_inference_steps=2",
]


def compose_cfg(overrides=(), hydra=False):
    """The config launch.py composes from these overrides (with the hydra node when `hydra`)."""
    return compose(list(overrides), return_hydra_config=hydra)


def launch(*args, cwd, timeout=600):
    """`python launch.py ARGS` as a user runs it, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def frozen_state(backbone):
    """Every frozen weight of a backbone's text encoders and denoiser, under the checkpoint's names (the wrapped
    lookup keeps the frozen vocabulary as `.frozen`)."""
    modules = [(slot.key, slot.encoder) for slot in backbone.encoders]
    modules.append(("denoiser", getattr(backbone, "unet", None) or backbone.transformer))
    return {f"{name}.{k}".replace(".frozen.weight", ".weight"): v.detach().clone()
            for name, module in modules for k, v in module.state_dict().items()}


def read_wandb_records(path):
    """Records of an offline .wandb file: W&B's LevelDB-style log (7-byte file header, 32 KiB blocks, chunks with a
    7-byte header: crc32 (4), length (2), type (1: full, 2: first, 3: middle, 4: last))."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, records, pending, offset = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while offset + 7 <= len(data):
        if 32768 - offset % 32768 < 7:  # block trailer too small for a header: skip to the next block
            offset += 32768 - offset % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        chunk, offset = data[offset + 7:offset + 7 + length], offset + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def cli(*args, cwd):
    """launch.py's main() in this process (as `python launch.py ARGS` run in `cwd`): (exit code, stdout, stderr).
    Much faster than a subprocess; an exception escaping main() is a traceback the user would have seen."""
    import contextlib
    import io
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    from dti.run.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    previous = os.getcwd()
    GlobalHydra.instance().clear()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous)
        GlobalHydra.instance().clear()
        close_log_files()
    return code, out.getvalue(), err.getvalue()


def close_log_files():
    """Hydra's job log (launch.log) stays open in this process after an in-process run: close it."""
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler):
                handler.close()
                logger.removeHandler(handler)


def error_lines(stderr: str) -> list[str]:
    """What a user reads on stderr, without the progress bars (tqdm redraws its line with carriage returns)."""
    import re

    lines = [part for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line.strip() and not re.search(r"\|\s*\d+/\d+ \[", line)]

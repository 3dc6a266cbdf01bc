"""Atomic writes: every file a run produces appears whole or not at all (temp file in the same folder + rename),
with the permissions an ordinary `open()` would give it (0666 less the umask; mkstemp alone gives 0600)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds, deletes it otherwise.
    A write that fails (a full disk) raises OSError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # the writer may have made a file of its own (0600): as open() would
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_figure(path: str | Path, fig) -> None:
    """A matplotlib figure as a PNG at `path` (atomically), then closed: pyplot keeps open figures alive."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_image(path: str | Path, image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_torch(path: str | Path, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_json(path: str | Path) -> dict | None:
    """A JSON file a run wrote, or None when it is missing or unreadable (torn by a kill, emptied by a full disk):
    such a file is treated as not written, and rebuilt by the stage that writes it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): treated as missing", path, type(err).__name__)
        return None
